#include "core/selection/selector.h"

#include <omp.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <iterator>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/util/random.h"

namespace dots {
namespace {

// Questions per random stream. A block is also the unit of parallel work.
constexpr int64_t kBlockSize = 4096;
// Below this many questions one thread does everything (fork/join would cost more than it saves).
// Only kThompson runs in parallel at all: the other strategies cost a few ns per question and are
// memory-bound, and measured slower on 2 threads than on 1 when the other core is busy.
constexpr int64_t kParallelMinQuestions = 1 << 14;
// Purpose tags mixed into the seed, so that the strategies never share a random stream.
// kPosterior shares kDots's stream: with certain posteriors it draws exactly what kDots draws.
constexpr uint64_t kStreamTag[] = {0x444f5453, 0x554e4946, 0x47524545,
                                   0x42414e44, 0x54484f4d, 0x444f5453};

// The largest Gumbel value -log(-log(u)) that Rng::UniformOpen can produce: u <= 1 - 2^-54 gives
// -log(-log(u)) <= 54 ln 2 = 37.43. Rounded up so that it also bounds the computed value.
constexpr double kMaxGumbel = 37.5;

// One candidate for the top-k. The order is total (index breaks every remaining tie), so the
// selected set and its order do not depend on the order in which candidates arrive.
struct Candidate {
  double primary;  // Larger is better: the Gumbel key, or minus a distance.
  uint64_t tie;    // Larger wins among equal primaries: random bits (monotone in u for kDots).
  int64_t index;
};

inline bool Better(const Candidate& a, const Candidate& b) {
  if (a.primary != b.primary) return a.primary > b.primary;
  if (a.tie != b.tie) return a.tie > b.tie;
  return a.index < b.index;
}

// Keeps the k best candidates seen so far in a buffer of at most max(2k, k + 256) entries:
// when it fills, nth_element trims it back to k, and the k-th best becomes the bar that every
// later candidate must beat to enter. Amortised O(1) per candidate.
class TopKBuffer {
 public:
  explicit TopKBuffer(int64_t k)
      : k_(static_cast<size_t>(k)), capacity_(std::max<size_t>(2 * k_, k_ + 256)) {}

  // Candidates whose primary is below this can never be among the k best.
  double threshold() const {
    return full_ ? kth_best_.primary : -std::numeric_limits<double>::infinity();
  }

  // The common case, a rejection, stays inline in the callers' loops.
  void Push(const Candidate& c) {
    if (full_ && !Better(c, kth_best_)) return;
    Append(c);
  }

  void Merge(const TopKBuffer& other) {
    for (const Candidate& c : other.buffer_) Push(c);
  }

  // The k best, best first.
  std::vector<int64_t> Finish() {
    if (buffer_.size() > k_) Trim();
    std::sort(buffer_.begin(), buffer_.end(), Better);
    std::vector<int64_t> indices;
    indices.reserve(buffer_.size());
    for (const Candidate& c : buffer_) indices.push_back(c.index);
    return indices;
  }

 private:
  [[gnu::noinline]] void Append(const Candidate& c) {
    buffer_.push_back(c);
    if (buffer_.size() >= capacity_) Trim();
  }

  void Trim() {
    std::nth_element(buffer_.begin(), buffer_.begin() + (k_ - 1), buffer_.end(), Better);
    buffer_.resize(k_);
    kth_best_ = buffer_[k_ - 1];
    full_ = true;
  }

  size_t k_;
  size_t capacity_;
  bool full_ = false;     // Whether kth_best_ is set (the buffer has been trimmed to k once).
  Candidate kth_best_{};  // After a trim: the worst of the k best so far.
  std::vector<Candidate> buffer_;
};

// Runs process(begin, end, rng, buffer) over blocks of kBlockSize questions and returns the k best
// candidates in order. Block b always uses the stream Rng(MixSeed(seed, tag, b)), whichever thread
// runs it, so `parallel` (OpenMP over blocks) changes the speed, never the result. Blocks are
// visited in a scrambled order (a golden-ratio stride) so that a pool sorted by difficulty does not
// feed ever-better candidates in sequence and defeat the pruning.
template <typename ProcessBlock>
std::vector<int64_t> SelectTopK(int64_t n, int64_t k, uint64_t seed, uint64_t tag, bool parallel,
                                ProcessBlock process) {
  const int64_t num_blocks = (n + kBlockSize - 1) / kBlockSize;
  int64_t stride = std::max<int64_t>(1, std::llround(0.6180339887498949 * num_blocks));
  while (std::gcd(stride, num_blocks) > 1) ++stride;
  const int num_threads =
      parallel && n >= kParallelMinQuestions ? std::max(1, omp_get_max_threads()) : 1;
  std::vector<TopKBuffer> buffers(num_threads, TopKBuffer(k));
#pragma omp parallel num_threads(num_threads) if (num_threads > 1)
  {
    const int64_t thread = omp_get_thread_num();
    const int64_t threads = omp_get_num_threads();
    const int64_t first = num_blocks * thread / threads;
    const int64_t last = num_blocks * (thread + 1) / threads;
    for (int64_t position = first; position < last; ++position) {
      const int64_t block =
          static_cast<int64_t>(static_cast<unsigned __int128>(position) *
                               static_cast<uint64_t>(stride) % static_cast<uint64_t>(num_blocks));
      const int64_t begin = block * kBlockSize;
      const int64_t end = std::min(n, begin + kBlockSize);
      Rng rng(MixSeed(seed, tag, static_cast<uint64_t>(block)));
      process(begin, end, rng, buffers[thread]);
    }
  }
  for (int t = 1; t < num_threads; ++t) buffers[0].Merge(buffers[t]);
  return buffers[0].Finish();
}

// An upper bound on the Gumbel value -log(-log(u)) from the bits of u alone, used to skip the two
// logarithms for questions that cannot win. -log(u) >= 1 - u, so the Gumbel value is at most
// -log(1 - u); writing 1 - u = m 2^e with m in [1, 2) bounds that by -e ln 2. 1 - u is exact in
// double (u is a multiple of 2^-54), and the small relative margin covers the rounding of the
// computed logarithms.
double GumbelUpperBound(double u) {
  const double one_minus_u = 1.0 - u;
  const int exponent =
      static_cast<int>((std::bit_cast<uint64_t>(one_minus_u) >> 52) & 0x7ff) - 1023;
  return -exponent * 0.6931471805599453 * (1.0 + 1e-12) + 1e-12;
}

// Random bits from u, monotone in u (and so in the Gumbel value).
uint64_t UniformTieBits(double u) { return static_cast<uint64_t>(u * 0x1.0p53); }

// Standard normal variates by Marsaglia's polar method; each accepted pair yields two.
class NormalSource {
 public:
  explicit NormalSource(uint64_t seed) : rng_(seed) {}
  double Uniform() { return rng_.UniformOpen(); }
  uint64_t Bits() { return rng_(); }
  double Normal() {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    while (true) {
      const double x = 2.0 * rng_.UniformOpen() - 1.0;
      const double y = 2.0 * rng_.UniformOpen() - 1.0;
      const double s = x * x + y * y;
      if (s >= 1.0 || s == 0.0) continue;
      const double scale = std::sqrt(-2.0 * std::log(s) / s);
      spare_ = y * scale;
      has_spare_ = true;
      return x * scale;
    }
  }

 private:
  Rng rng_;
  bool has_spare_ = false;
  double spare_ = 0.0;
};

// Gamma(shape, 1) for shape >= 1 by Marsaglia & Tsang (2000). Expected ~1.03 normals per draw.
double SampleGammaAtLeastOne(double shape, NormalSource& source) {
  const double d = shape - 1.0 / 3.0;
  const double c = 1.0 / std::sqrt(9.0 * d);
  while (true) {
    const double x = source.Normal();
    double v = 1.0 + c * x;
    if (v <= 0.0) continue;
    v = v * v * v;
    const double u = source.Uniform();
    const double x2 = x * x;
    if (u < 1.0 - 0.0331 * x2 * x2) return d * v;
    if (std::log(u) < 0.5 * x2 + d * (1.0 - v + std::log(v))) return d * v;
  }
}

// log Gamma(shape, 1) variate, any shape > 0: for shape < 1 uses Gamma(shape) = Gamma(shape + 1)
// U^(1/shape), whose value underflows for tiny shapes, hence the log.
double SampleLogGamma(double shape, NormalSource& source) {
  if (shape >= 1.0) return std::log(SampleGammaAtLeastOne(shape, source));
  const double boosted = std::log(SampleGammaAtLeastOne(shape + 1.0, source));
  return boosted + std::log(source.Uniform()) / shape;
}

// Beta(a, b) as X / (X + Y) with X ~ Gamma(a), Y ~ Gamma(b); in log space when a shape is below
// 1, where X or Y may underflow to 0.
double SampleBeta(double a, double b, NormalSource& source) {
  if (a >= 1.0 && b >= 1.0) {
    const double x = SampleGammaAtLeastOne(a, source);
    const double y = SampleGammaAtLeastOne(b, source);
    return x / (x + y);
  }
  const double log_x = SampleLogGamma(a, source);
  const double log_y = SampleLogGamma(b, source);
  return 1.0 / (1.0 + std::exp(log_y - log_x));
}

// Gumbel-top-k over pi(q) ∝ exp(-distance(q) / tau). The key tau * (logit + G) =
// -distance + tau * G is the logit scaled by tau > 0, which keeps the order, needs no division
// and cannot overflow for small tau. When tau * G vanishes next to the distance (tau -> 0), equal
// distances fall back to comparing G through u. `distance` is evaluated only for eligible
// questions.
template <typename Distance>
std::vector<int64_t> SelectByDistance(int64_t n, int64_t k, uint64_t seed, uint64_t tag, double tau,
                                      const uint8_t* excluded, Distance distance) {
  const double tau_max_gumbel = tau * kMaxGumbel;
  return SelectTopK(n, k, seed, tag, /*parallel=*/false,
                    [&](int64_t begin, int64_t end, Rng& rng, TopKBuffer& buffer) {
                      for (int64_t i = begin; i < end; ++i) {
                        const double u = rng.UniformOpen();  // Drawn even if excluded.
                        if (excluded != nullptr && excluded[i] != 0) continue;
                        const double neg_distance = -distance(i);
                        const double threshold = buffer.threshold();
                        if (neg_distance + tau_max_gumbel < threshold) continue;
                        if (neg_distance + tau * GumbelUpperBound(u) < threshold) continue;
                        const double gumbel = -std::log(-std::log(u));
                        buffer.Push({neg_distance + tau * gumbel, UniformTieBits(u), i});
                      }
                    });
}

absl::Status ValidateInput(const SelectorInput& input, int64_t budget,
                           const SelectorOptions& options) {
  const size_t n = input.p_hat.size();
  const int strategy = static_cast<int>(options.strategy);
  if (strategy < 0 || strategy >= static_cast<int>(std::size(kStreamTag))) {
    return absl::InvalidArgumentError(
        absl::StrCat("SelectQuestions: options.strategy = ", strategy, " is not a strategy"));
  }
  if (budget < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("SelectQuestions: budget is ", budget, "; it must be >= 0"));
  }
  if (!input.excluded.empty() && input.excluded.size() != n) {
    return absl::InvalidArgumentError(absl::StrCat("SelectQuestions: excluded has ",
                                                   input.excluded.size(), " flags but p_hat has ",
                                                   n, " entries; it must be empty or match"));
  }
  if (input.beta_a.size() != input.beta_b.size() ||
      (!input.beta_a.empty() && input.beta_a.size() != n)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "SelectQuestions: beta_a has ", input.beta_a.size(), " entries and beta_b has ",
        input.beta_b.size(), " but p_hat has ", n, "; both must be empty or both match"));
  }
  if (!std::isfinite(options.alpha)) {
    return absl::InvalidArgumentError(
        absl::StrCat("SelectQuestions: options.alpha is ", options.alpha, "; it must be finite"));
  }
  if (!(options.tau > 0.0) || !std::isfinite(options.tau)) {
    return absl::InvalidArgumentError(absl::StrCat("SelectQuestions: options.tau is ", options.tau,
                                                   "; it must be finite and > 0"));
  }
  if (!std::isfinite(options.band_lo) || !std::isfinite(options.band_hi) ||
      options.band_lo > options.band_hi) {
    return absl::InvalidArgumentError(absl::StrCat(
        "SelectQuestions: options.band_lo = ", options.band_lo, " and options.band_hi = ",
        options.band_hi, "; both must be finite with band_lo <= band_hi"));
  }
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(input.p_hat[i])) {
      return absl::InvalidArgumentError(absl::StrCat("SelectQuestions: p_hat[", i, "] is ",
                                                     input.p_hat[i], "; it must be finite"));
    }
  }
  if (options.strategy == SelectorStrategy::kThompson ||
      options.strategy == SelectorStrategy::kPosterior) {
    for (size_t i = 0; i < input.beta_a.size(); ++i) {
      const float a = input.beta_a[i];
      const float b = input.beta_b[i];
      if (!(a > 0.0f) || !(b > 0.0f) || !std::isfinite(a) || !std::isfinite(b)) {
        return absl::InvalidArgumentError(absl::StrCat("SelectQuestions: beta_a[", i, "] = ", a,
                                                       ", beta_b[", i, "] = ", b,
                                                       "; Beta parameters must be finite and > 0"));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<SelectorStrategy> ParseSelectorStrategy(std::string_view name) {
  if (name == "dots") return SelectorStrategy::kDots;
  if (name == "uniform") return SelectorStrategy::kUniform;
  if (name == "greedy") return SelectorStrategy::kGreedy;
  if (name == "band") return SelectorStrategy::kBand;
  if (name == "thompson") return SelectorStrategy::kThompson;
  if (name == "posterior") return SelectorStrategy::kPosterior;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown selector strategy \"", std::string(name),
                   "\"; expected dots, uniform, greedy, band, thompson or posterior"));
}

std::string_view SelectorStrategyName(SelectorStrategy strategy) {
  switch (strategy) {
    case SelectorStrategy::kDots:
      return "dots";
    case SelectorStrategy::kUniform:
      return "uniform";
    case SelectorStrategy::kGreedy:
      return "greedy";
    case SelectorStrategy::kBand:
      return "band";
    case SelectorStrategy::kThompson:
      return "thompson";
    case SelectorStrategy::kPosterior:
      return "posterior";
  }
  return "unknown";
}

absl::StatusOr<std::vector<int64_t>> SelectQuestions(const SelectorInput& input, int64_t budget,
                                                     const SelectorOptions& options,
                                                     uint64_t seed) {
  if (absl::Status status = ValidateInput(input, budget, options); !status.ok()) return status;
  const int64_t n = static_cast<int64_t>(input.p_hat.size());
  const int64_t k = std::min(budget, n);
  if (k == 0) return std::vector<int64_t>();

  const float* p_hat = input.p_hat.data();
  const uint8_t* excluded = input.excluded.empty() ? nullptr : input.excluded.data();
  const double alpha = options.alpha;
  const uint64_t tag = kStreamTag[static_cast<int>(options.strategy)];

  switch (options.strategy) {
    case SelectorStrategy::kDots:
      return SelectByDistance(n, k, seed, tag, options.tau, excluded,
                              [&](int64_t i) { return std::fabs(double{p_hat[i]} - alpha); });
    case SelectorStrategy::kPosterior: {
      if (input.beta_a.empty()) {
        return SelectByDistance(n, k, seed, tag, options.tau, excluded,
                                [&](int64_t i) { return std::fabs(double{p_hat[i]} - alpha); });
      }
      const float* beta_a = input.beta_a.data();
      const float* beta_b = input.beta_b.data();
      return SelectByDistance(n, k, seed, tag, options.tau, excluded, [&](int64_t i) {
        const double m = std::clamp(double{p_hat[i]}, 0.0, 1.0);
        const double kappa = double{beta_a[i]} + double{beta_b[i]};
        return std::sqrt((m - alpha) * (m - alpha) + m * (1.0 - m) / (kappa + 1.0));
      });
    }
    case SelectorStrategy::kUniform:
      // All logits equal: the Gumbel key is monotone in u, so u itself is the key.
      return SelectTopK(n, k, seed, tag, /*parallel=*/false,
                        [&](int64_t begin, int64_t end, Rng& rng, TopKBuffer& buffer) {
                          for (int64_t i = begin; i < end; ++i) {
                            const double u = rng.UniformOpen();
                            if (excluded != nullptr && excluded[i] != 0) continue;
                            buffer.Push({u, 0, i});
                          }
                        });
    case SelectorStrategy::kGreedy:
      return SelectTopK(n, k, seed, tag, /*parallel=*/false,
                        [&](int64_t begin, int64_t end, Rng& rng, TopKBuffer& buffer) {
                          for (int64_t i = begin; i < end; ++i) {
                            const uint64_t tie = rng();
                            if (excluded != nullptr && excluded[i] != 0) continue;
                            buffer.Push({-std::fabs(double{p_hat[i]} - alpha), tie, i});
                          }
                        });
    case SelectorStrategy::kBand: {
      // The bounds are rounded to float, the precision of p_hat, so that p_hat = 0.8f counts as
      // inside a band ending at 0.8 (0.8f is 1.2e-8 above the double 0.8).
      const double lo = static_cast<float>(options.band_lo);
      const double hi = static_cast<float>(options.band_hi);
      return SelectTopK(n, k, seed, tag, /*parallel=*/false,
                        [&](int64_t begin, int64_t end, Rng& rng, TopKBuffer& buffer) {
                          for (int64_t i = begin; i < end; ++i) {
                            const double u = rng.UniformOpen();
                            if (excluded != nullptr && excluded[i] != 0) continue;
                            const double p = p_hat[i];
                            const double outside = std::max(lo - p, p - hi);
                            // In the band the key is u in (0, 1): a uniform order that beats
                            // every out-of-band key (-distance < 0). Folding u into the primary
                            // rather than leaving in-band keys tied keeps the rejection test a
                            // single, predictable comparison (3x faster when measured).
                            const double primary = outside > 0.0 ? -outside : u;
                            buffer.Push({primary, UniformTieBits(u), i});
                          }
                        });
    }
    case SelectorStrategy::kThompson: {
      const bool has_posterior = !input.beta_a.empty();
      const float* beta_a = input.beta_a.data();
      const float* beta_b = input.beta_b.data();
      return SelectTopK(n, k, seed, tag, /*parallel=*/true,
                        [&](int64_t begin, int64_t end, Rng& rng, TopKBuffer& buffer) {
                          const uint64_t block_seed = rng();
                          for (int64_t i = begin; i < end; ++i) {
                            if (excluded != nullptr && excluded[i] != 0) continue;
                            // Own stream per question: the rejection samplers consume a variable
                            // number of draws, which must not shift other questions' draws.
                            NormalSource source(MixSeed(block_seed, static_cast<uint64_t>(i)));
                            double a, b;
                            if (has_posterior) {
                              a = beta_a[i];
                              b = beta_b[i];
                            } else {
                              const double p = std::clamp(double{p_hat[i]}, 0.0, 1.0);
                              a = 1.0 + 8.0 * p;
                              b = 1.0 + 8.0 * (1.0 - p);
                            }
                            const double sample = SampleBeta(a, b, source);
                            buffer.Push({-std::fabs(sample - alpha), source.Bits(), i});
                          }
                        });
    }
  }
  return absl::InternalError("SelectQuestions: unhandled selector strategy");
}

}  // namespace dots

// Deterministic pseudo-random numbers for everything that must replay identically from a seed
// (reference sets, selection draws, tie-breaking). absl::BitGen is deliberately not used: its
// output is allowed to change between Abseil releases, and a run's batches must not.
#ifndef DOTS_CORE_UTIL_RANDOM_H_
#define DOTS_CORE_UTIL_RANDOM_H_

#include <cstdint>
#include <limits>

namespace dots {

// SplitMix64: used to expand one 64-bit seed into independent stream seeds. O(1), no state
// beyond the 64-bit counter.
inline uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// Mixes several integers (seed, round, purpose tag) into one seed, so that each use of
// randomness gets its own stream and adding a new use never shifts the others.
inline uint64_t MixSeed(uint64_t a, uint64_t b, uint64_t c = 0) {
  uint64_t s = a;
  uint64_t x = SplitMix64(s) ^ b;
  x = SplitMix64(x) ^ c;
  return SplitMix64(x);
}

// xoshiro256** 1.0 (Blackman & Vigna): fast, 256-bit state, passes BigCrush. Satisfies the
// UniformRandomBitGenerator concept so it works with <random> distributions, but prefer the
// members below, whose output is fixed by this file rather than by the standard library.
class Rng {
 public:
  using result_type = uint64_t;
  explicit Rng(uint64_t seed) {
    uint64_t s = seed;
    for (uint64_t& w : state_) w = SplitMix64(s);
  }
  static constexpr result_type min() { return 0; }
  static constexpr result_type max() { return std::numeric_limits<result_type>::max(); }

  result_type operator()() {
    const uint64_t result = Rotl(state_[1] * 5, 7) * 9;
    const uint64_t t = state_[1] << 17;
    state_[2] ^= state_[0];
    state_[3] ^= state_[1];
    state_[1] ^= state_[2];
    state_[0] ^= state_[3];
    state_[2] ^= t;
    state_[3] = Rotl(state_[3], 45);
    return result;
  }

  // Uniform double in the open interval (0, 1): never 0, so log() of it is always finite.
  double UniformOpen() { return (static_cast<double>((*this)() >> 11) + 0.5) * 0x1.0p-53; }

  // Uniform integer in [0, n) by Lemire's multiply-shift with rejection (unbiased). n > 0.
  uint64_t Below(uint64_t n) {
    unsigned __int128 m = static_cast<unsigned __int128>((*this)()) * n;
    uint64_t low = static_cast<uint64_t>(m);
    if (low < n) {
      const uint64_t threshold = (0 - n) % n;
      while (low < threshold) {
        m = static_cast<unsigned __int128>((*this)()) * n;
        low = static_cast<uint64_t>(m);
      }
    }
    return static_cast<uint64_t>(m >> 64);
  }

 private:
  static uint64_t Rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t state_[4];
};

}  // namespace dots

#endif  // DOTS_CORE_UTIL_RANDOM_H_

#include "core/estimation/nn_layers.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <unsupported/Eigen/SpecialFunctions>

#include "core/util/random.h"

namespace dots::nn {
namespace {

// Below this many elements an OpenMP loop costs more than it saves.
constexpr int64_t kParallelElements = 1 << 15;

}  // namespace

void Gemm(bool transpose_a, bool transpose_b, int m, int n, int k, const float* a, int lda,
          const float* b, int ldb, float* c, int ldc) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0) {
    for (int r = 0; r < m; ++r) std::fill_n(c + static_cast<int64_t>(r) * ldc, n, 0.0f);
    return;
  }
  const int row_tiles = (m + kGemmTileRows - 1) / kGemmTileRows;
  const int col_tiles = (n + kGemmTileCols - 1) / kGemmTileCols;
  const int tiles = row_tiles * col_tiles;
  // Inside an active parallel region OpenBLAS runs single-threaded; with one thread the region
  // is inactive and OpenBLAS uses omp_get_max_threads() == 1: single-threaded either way.
#pragma omp parallel for schedule(dynamic, 1) if (tiles > 1)
  for (int t = 0; t < tiles; ++t) {
    const int r0 = (t / col_tiles) * kGemmTileRows, c0 = (t % col_tiles) * kGemmTileCols;
    const int rows = std::min(kGemmTileRows, m - r0), cols = std::min(kGemmTileCols, n - c0);
    const float* a_tile = transpose_a ? a + r0 : a + static_cast<int64_t>(r0) * lda;
    const float* b_tile = transpose_b ? b + static_cast<int64_t>(c0) * ldb : b + c0;
    cblas_sgemm(CblasRowMajor, transpose_a ? CblasTrans : CblasNoTrans,
                transpose_b ? CblasTrans : CblasNoTrans, rows, cols, k, 1.0f, a_tile, lda, b_tile,
                ldb, 0.0f, c + static_cast<int64_t>(r0) * ldc + c0, ldc);
  }
}

void LayerNormForward(const float* gamma, const float* beta, Matrix& x, Matrix* x_hat,
                      std::vector<double>* inv_std) {
  const int64_t m = x.rows(), w = x.cols();
  x_hat->resize(m, w);
  inv_std->resize(static_cast<size_t>(m));
  const auto g = Eigen::Map<const Eigen::ArrayXf>(gamma, w).transpose();
  const auto b = Eigen::Map<const Eigen::ArrayXf>(beta, w).transpose();
#pragma omp parallel for schedule(static) if (m * w > kParallelElements)
  for (int64_t r = 0; r < m; ++r) {
    auto row = x.row(r).array();
    const double mean = row.cast<double>().mean();
    const double var = (row.cast<double>() - mean).square().mean();
    const double inv = 1.0 / std::sqrt(var + kLayerNormEps);
    (*inv_std)[static_cast<size_t>(r)] = inv;
    x_hat->row(r).array() = ((row.cast<double>() - mean) * inv).cast<float>();
    row = x_hat->row(r).array() * g + b;
  }
}

void LayerNormBackward(const float* gamma, const Matrix& x_hat, const std::vector<double>& inv_std,
                       const Matrix& d_out, float* d_gamma, float* d_beta, Matrix* d_in) {
  const int64_t m = x_hat.rows(), w = x_hat.cols();
  Eigen::ArrayXd sum_gamma = Eigen::ArrayXd::Zero(w), sum_beta = Eigen::ArrayXd::Zero(w);
  for (int64_t r = 0; r < m; ++r) {  // serial: a fixed summation order
    sum_gamma += (d_out.row(r).array() * x_hat.row(r).array()).cast<double>().transpose();
    sum_beta += d_out.row(r).array().cast<double>().transpose();
  }
  Eigen::Map<Eigen::ArrayXf>(d_gamma, w) = sum_gamma.cast<float>();
  Eigen::Map<Eigen::ArrayXf>(d_beta, w) = sum_beta.cast<float>();
  if (d_in == nullptr) return;
  d_in->resize(m, w);
  const auto g = Eigen::Map<const Eigen::ArrayXf>(gamma, w).transpose().cast<double>();
#pragma omp parallel for schedule(static) if (m * w > kParallelElements)
  for (int64_t r = 0; r < m; ++r) {
    const Eigen::ArrayXXd dx_hat = d_out.row(r).array().cast<double>() * g;
    const Eigen::ArrayXXd xh = x_hat.row(r).array().cast<double>();
    const double mean_d = dx_hat.mean();
    const double mean_dx = (dx_hat * xh).mean();
    d_in->row(r).array() =
        (inv_std[static_cast<size_t>(r)] * (dx_hat - mean_d - xh * mean_dx)).cast<float>();
  }
}

void LinearForward(const float* weight, const float* bias, int out, int in, const Matrix& x,
                   Matrix* y) {
  const int m = static_cast<int>(x.rows());
  y->resize(m, out);
  if (m == 0) return;
  Gemm(false, true, m, out, in, x.data(), in, weight, in, y->data(), out);
  y->rowwise() += Eigen::Map<const Eigen::RowVectorXf>(bias, out);
}

void LinearBackward(const float* weight, int out, int in, const Matrix& x, const Matrix& d_y,
                    float* d_weight, float* d_bias, Matrix* d_x) {
  const int m = static_cast<int>(x.rows());
  if (m == 0) {
    Eigen::Map<Eigen::ArrayXf>(d_weight, int64_t{out} * in).setZero();
    Eigen::Map<Eigen::ArrayXf>(d_bias, out).setZero();
    if (d_x != nullptr) d_x->resize(0, in);
    return;
  }
  Gemm(true, false, out, in, m, d_y.data(), out, x.data(), in, d_weight, in);
  Eigen::ArrayXd sum = Eigen::ArrayXd::Zero(out);
  for (int r = 0; r < m; ++r) sum += d_y.row(r).array().cast<double>().transpose();
  Eigen::Map<Eigen::ArrayXf>(d_bias, out) = sum.cast<float>();
  if (d_x == nullptr) return;
  d_x->resize(m, in);
  Gemm(false, false, m, in, out, d_y.data(), out, weight, in, d_x->data(), in);
}

void GeluForward(const Matrix& pre, Matrix* out) {
  const int64_t m = pre.rows();
  out->resize(m, pre.cols());
#pragma omp parallel for schedule(static) if (pre.size() > kParallelElements)
  for (int64_t r = 0; r < m; ++r) {
    const auto x = pre.row(r).array();
    out->row(r).array() = 0.5f * x * (1.0f + (x * static_cast<float>(M_SQRT1_2)).erf());
  }
}

void GeluBackward(const Matrix& pre, Matrix& d) {
  const int64_t m = pre.rows();
  const float inv_sqrt_2pi = static_cast<float>(0.5 * M_2_SQRTPI * M_SQRT1_2);
#pragma omp parallel for schedule(static) if (pre.size() > kParallelElements)
  for (int64_t r = 0; r < m; ++r) {
    const auto x = pre.row(r).array();
    d.row(r).array() *= 0.5f * (1.0f + (x * static_cast<float>(M_SQRT1_2)).erf()) +
                        x * inv_sqrt_2pi * (-0.5f * x.square()).exp();
  }
}

DropoutMask MakeDropoutMask(int64_t rows, int64_t cols, float p, uint64_t seed, uint64_t stream) {
  DropoutMask mask;
  mask.rows = rows;
  mask.cols = cols;
  mask.keep.assign(static_cast<size_t>(rows * cols), 1);
  if (p <= 0) return mask;
#pragma omp parallel for schedule(static) if (rows * cols > kParallelElements)
  for (int64_t r = 0; r < rows; ++r) {
    Rng rng(MixSeed(seed, stream, static_cast<uint64_t>(r)));
    uint8_t* keep = mask.keep.data() + r * cols;
    for (int64_t c = 0; c < cols; ++c) keep[c] = rng.UniformOpen() >= p ? 1 : 0;
  }
  return mask;
}

void ApplyDropout(const DropoutMask& mask, float p, Matrix& x) {
  if (p <= 0) return;
  const float scale = 1.0f / (1.0f - p);
  const int64_t n = x.size();
  float* data = x.data();
  const uint8_t* keep = mask.keep.data();
  for (int64_t i = 0; i < n; ++i) data[i] = keep[i] ? data[i] * scale : 0.0f;
}

void AdamUpdate(const AdamConfig& config, double learning_rate, int64_t step, const float* grad,
                float* param, float* m, float* v, int64_t size) {
  const float b1 = static_cast<float>(config.beta1), b2 = static_cast<float>(config.beta2);
  const double correction1 = 1.0 - std::pow(config.beta1, static_cast<double>(step));
  const double correction2 = 1.0 - std::pow(config.beta2, static_cast<double>(step));
  const float step_size = static_cast<float>(learning_rate / correction1);
  const float sqrt_correction2 = static_cast<float>(std::sqrt(correction2));
  const float eps = static_cast<float>(config.epsilon);
  for (int64_t i = 0; i < size; ++i) {
    m[i] = b1 * m[i] + (1.0f - b1) * grad[i];
    v[i] = b2 * v[i] + (1.0f - b2) * grad[i] * grad[i];
    param[i] -= step_size * m[i] / (std::sqrt(v[i]) / sqrt_correction2 + eps);
  }
}

}  // namespace dots::nn

// Forward and backward passes of the few layers the paper adapter is made of (LayerNorm, Linear,
// exact GELU, dropout) and the Adam update, on row-major float32 matrices whose rows are
// examples.
//
// Results do not depend on the number of threads: every GEMM goes through Gemm below, which
// cuts the output into tiles of a fixed size and computes each with one single-threaded
// cblas_sgemm (OpenBLAS's own threading changes the last bits of its results with the thread
// count); per-row work runs in OpenMP loops; every reduction over rows (bias and LayerNorm
// parameter gradients) runs serially in row order in double.
//
// Conventions follow PyTorch: Linear weights are out x in, y = x W^T + b; LayerNorm uses the
// biased variance and eps 1e-5; GELU is the erf form; dropout keeps an element with probability
// 1 - p and scales kept elements by 1 / (1 - p).
#ifndef DOTS_CORE_ESTIMATION_NN_LAYERS_H_
#define DOTS_CORE_ESTIMATION_NN_LAYERS_H_

#include <Eigen/Core>
#include <cstdint>
#include <vector>

namespace dots::nn {

using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

inline constexpr double kLayerNormEps = 1e-5;

// C (m x n, row stride ldc) = op(A) op(B) for row-major A and B (op = transpose or not, as
// cblas_sgemm with alpha 1, beta 0). The output is computed in tiles of kGemmTileRows x
// kGemmTileCols, one single-threaded sgemm each, spread over the calling thread's OpenMP
// threads, so the result is the same for every thread count. 2 * m * n * k flops.
inline constexpr int kGemmTileRows = 64;
inline constexpr int kGemmTileCols = 256;
void Gemm(bool transpose_a, bool transpose_b, int m, int n, int k, const float* a, int lda,
          const float* b, int ldb, float* c, int ldc);

// LayerNorm over each row of `x` (m x w), in place. Saves the normalised rows (*x_hat, m x w)
// and each row's 1 / sqrt(var + eps) (*inv_std, m) for the backward pass. Statistics in double.
// O(m * w).
void LayerNormForward(const float* gamma, const float* beta, Matrix& x, Matrix* x_hat,
                      std::vector<double>* inv_std);

// Backward of LayerNormForward given d_out (m x w): writes d_gamma and d_beta (w each,
// overwritten) and, when d_in is not null, the input gradient (m x w). O(m * w).
void LayerNormBackward(const float* gamma, const Matrix& x_hat, const std::vector<double>& inv_std,
                       const Matrix& d_out, float* d_gamma, float* d_beta, Matrix* d_in);

// y = x W^T + b: x is m x in, W is out x in (row-major), y becomes m x out. One sgemm,
// 2 * m * in * out flops.
void LinearForward(const float* weight, const float* bias, int out, int in, const Matrix& x,
                   Matrix* y);

// Backward of LinearForward given d_y (m x out): d_weight (out x in) = d_y^T x, d_bias (out) =
// column sums of d_y (both overwritten) and, when d_x is not null, d_x (m x in) = d_y W.
// 2 * m * in * out flops per GEMM (two with d_x, one without).
void LinearBackward(const float* weight, int out, int in, const Matrix& x, const Matrix& d_y,
                    float* d_weight, float* d_bias, Matrix* d_x);

// out = GELU(pre) elementwise (x/2 * (1 + erf(x / sqrt 2))). O(m * w).
void GeluForward(const Matrix& pre, Matrix* out);
// d *= GELU'(pre) elementwise, with GELU'(x) = (1 + erf(x / sqrt 2)) / 2 + x * phi(x).
void GeluBackward(const Matrix& pre, Matrix& d);

// A dropout mask: keep[r * cols + c] is 1 for kept elements. Row r is drawn from its own
// stream Rng(MixSeed(seed, stream, r)), so masks do not depend on the thread count.
struct DropoutMask {
  int64_t rows = 0, cols = 0;
  std::vector<uint8_t> keep;
};
DropoutMask MakeDropoutMask(int64_t rows, int64_t cols, float p, uint64_t seed, uint64_t stream);
// x *= keep / (1 - p) elementwise (the forward and, on gradients, the backward).
void ApplyDropout(const DropoutMask& mask, float p, Matrix& x);

// Adam (Kingma & Ba; torch.optim.Adam with weight_decay 0, amsgrad off), one tensor:
//   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//   param -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
// with t >= 1 the step count after this update. O(size).
struct AdamConfig {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double epsilon = 1e-8;
};
void AdamUpdate(const AdamConfig& config, double learning_rate, int64_t step, const float* grad,
                float* param, float* m, float* v, int64_t size);

}  // namespace dots::nn

#endif  // DOTS_CORE_ESTIMATION_NN_LAYERS_H_

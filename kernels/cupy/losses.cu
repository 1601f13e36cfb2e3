// Losses: cross-entropy over class indices (one block per row, the one-pass online log-sum-exp of
// softmax.cu), BCE-with-logits and MSE (elementwise), and one deterministic single-block
// reduction for "sum" / "mean" that also counts the non-ignored rows of cross-entropy.
#include "common.cuh"

__device__ __forceinline__ float quiet_nan() { return __int_as_float(0x7fc00000); }

enum Reduction : int { REDUCE_NONE = 0, REDUCE_SUM = 1, REDUCE_MEAN = 2 };

// logits: [rows, cols]; target: [rows] int64; lse: [rows] fp32;
// row_loss: [rows] fp32 (for a reduction) or null; row_out: [rows] T ("none") or null.
// A target outside [0, cols) that is not ignore_index gives NaN (no host check, no sync).
template <class T>
__device__ void cross_entropy_forward_impl(const T* __restrict__ logits,
                                           const long long* __restrict__ target,
                                           float* __restrict__ row_loss, T* __restrict__ row_out,
                                           float* __restrict__ lse, int cols,
                                           long long ignore_index) {
    __shared__ float scratch[2 * MAX_WARPS];
    const long long row = blockIdx.x, base = row * cols;
    MaxSum s{neg_inf(), 0.0f};
    for (int c = threadIdx.x; c < cols; c += blockDim.x)
        s = max_sum_add(s, to_float(logits[base + c]));
    s = block_max_sum(s, scratch);
    if (threadIdx.x != 0) return;
    const float log_sum = logf(s.sum);
    const float row_lse = s.max + log_sum;
    const long long t = target[row];
    float loss = 0.0f;
    // (max - x_t) + log(sum): row_lse - x_t would lose the loss to the rounding of row_lse at
    // 1e4-scale logits
    if (t != ignore_index)
        loss = (t < 0 || t >= cols) ? quiet_nan()
                                    : (s.max - to_float(logits[base + t])) + log_sum;
    loss = to_float(from_float<T>(loss));
    lse[row] = row_lse;
    if (row_loss != nullptr) row_loss[row] = loss;
    if (row_out != nullptr) row_out[row] = from_float<T>(loss);
}

// Single block. values: [n] fp32 or null (sum 0); target: [n] int64 or null (count = n, else
// the rows != ignore_index); out: 0-d T (sum, or sum / count when mean) or null;
// count_out: 0-d fp32 or null. mean over nothing is 0 / 0 = NaN, as torch.
template <class T>
__device__ void reduce_loss_impl(const float* __restrict__ values, long long n,
                                 const long long* __restrict__ target, long long ignore_index,
                                 T* __restrict__ out, float* __restrict__ count_out, int mean) {
    __shared__ float scratch[MAX_WARPS];
    float total = 0.0f, count = 0.0f;
    for (long long i = threadIdx.x; i < n; i += blockDim.x) {
        const bool valid = target == nullptr || target[i] != ignore_index;
        if (values != nullptr) total += values[i];
        count += valid ? 1.0f : 0.0f;
    }
    total = block_sum(total, scratch);
    count = block_sum(count, scratch);
    if (threadIdx.x != 0) return;
    if (out != nullptr) out[0] = from_float<T>(mean ? total / count : total);
    if (count_out != nullptr) count_out[0] = count;
}

// grad_loss: [rows] T ("none") or 0-d T; count: 0-d fp32 (mean) or null; lse: [rows] fp32;
// grad_logits: [rows, cols] = (softmax - onehot(target)) * scale, with scale 0 on ignored rows:
// multiplied, as torch's log_softmax backward, so an ignored row of NaN (or of -inf only) gets
// NaN and any other ignored row 0
template <class T>
__device__ void cross_entropy_backward_impl(const T* __restrict__ grad_loss,
                                            const T* __restrict__ logits,
                                            const long long* __restrict__ target,
                                            const float* __restrict__ lse,
                                            const float* __restrict__ count,
                                            T* __restrict__ grad_logits, int cols,
                                            long long ignore_index, int reduction) {
    const long long row = blockIdx.x, base = row * cols;
    const long long t = target[row];
    const bool valid = t != ignore_index;
    float scale = 0.0f;  // selected, not computed, on ignored rows: mean over no rows is NaN
    if (valid) {
        scale = to_float(grad_loss[reduction == REDUCE_NONE ? row : 0]);
        if (reduction == REDUCE_MEAN) scale /= count[0];
    }
    const float row_lse = lse[row];
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        const float onehot = valid && c == t ? 1.0f : 0.0f;
        const float g = (expf(to_float(logits[base + c]) - row_lse) - onehot) * scale;
        grad_logits[base + c] = from_float<T>(g);
    }
}

enum PointwiseLoss : int { LOSS_BCE_WITH_LOGITS = 0, LOSS_MSE = 1 };

// x, target: [n]; values: [n] fp32 (for a reduction) or null; out: [n] T ("none") or null
template <class T>
__device__ void pointwise_loss_forward_impl(const T* __restrict__ x, const T* __restrict__ target,
                                            float* __restrict__ values, T* __restrict__ out,
                                            long long n, int kind) {
    GRID_STRIDE_LOOP(i, n) {
        const float v = to_float(x[i]), t = to_float(target[i]);
        float loss;
        if (kind == LOSS_BCE_WITH_LOGITS)  // torch's (1 - t) x - log_sigmoid(x) term for term
            // (inf and NaN land where torch's do), log1p added last (tiny losses keep their
            // precision); no overflow for any |x|
            loss = ((1.0f - t) * v - fminf(v, 0.0f)) + log1pf(expf(-fabsf(v)));
        else
            loss = (v - t) * (v - t);
        const T rounded = from_float<T>(loss);
        if (values != nullptr) values[i] = to_float(rounded);
        if (out != nullptr) out[i] = rounded;
    }
}

// grad_loss: [n] T ("none") or 0-d T; grad_x, grad_target: [n] T or null (not needed)
// bce: grad_x = (sigmoid(x) - t) g, grad_target = -x g; mse: grad_x = 2 (x - t) g = -grad_target
template <class T>
__device__ void pointwise_loss_backward_impl(const T* __restrict__ grad_loss,
                                             const T* __restrict__ x,
                                             const T* __restrict__ target,
                                             T* __restrict__ grad_x, T* __restrict__ grad_target,
                                             long long n, int kind, int reduction, float count) {
    GRID_STRIDE_LOOP(i, n) {
        float g = to_float(grad_loss[reduction == REDUCE_NONE ? i : 0]);
        if (reduction == REDUCE_MEAN) g /= count;
        const float v = to_float(x[i]), t = to_float(target[i]);
        float dx, dt;
        if (kind == LOSS_BCE_WITH_LOGITS) {
            dx = (sigmoid_f(v) - t) * g;
            dt = -v * g;
        } else {
            dx = 2.0f * (v - t) * g;
            dt = -dx;
        }
        if (grad_x != nullptr) grad_x[i] = from_float<T>(dx);
        if (grad_target != nullptr) grad_target[i] = from_float<T>(dt);
    }
}

#define DEFINE_LOSS_KERNELS(T, S)                                                              \
    extern "C" __global__ void __launch_bounds__(1024) cross_entropy_forward_##S(                                      \
        const T* logits, const long long* target, float* row_loss, T* row_out, float* lse,     \
        int cols, long long ignore_index) {                                                    \
        cross_entropy_forward_impl<T>(logits, target, row_loss, row_out, lse, cols,            \
                                      ignore_index);                                           \
    }                                                                                          \
    extern "C" __global__ void __launch_bounds__(1024) reduce_loss_##S(const float* values, long long n,               \
                                               const long long* target, long long ignore_index, \
                                               T* out, float* count_out, int mean) {           \
        reduce_loss_impl<T>(values, n, target, ignore_index, out, count_out, mean);            \
    }                                                                                          \
    extern "C" __global__ void __launch_bounds__(1024) cross_entropy_backward_##S(                                     \
        const T* grad_loss, const T* logits, const long long* target, const float* lse,        \
        const float* count, T* grad_logits, int cols, long long ignore_index, int reduction) {  \
        cross_entropy_backward_impl<T>(grad_loss, logits, target, lse, count, grad_logits,     \
                                       cols, ignore_index, reduction);                         \
    }                                                                                          \
    extern "C" __global__ void pointwise_loss_forward_##S(const T* x, const T* target,         \
                                                          float* values, T* out, long long n,  \
                                                          int kind) {                          \
        pointwise_loss_forward_impl<T>(x, target, values, out, n, kind);                       \
    }                                                                                          \
    extern "C" __global__ void pointwise_loss_backward_##S(                                    \
        const T* grad_loss, const T* x, const T* target, T* grad_x, T* grad_target,            \
        long long n, int kind, int reduction, float count) {                                   \
        pointwise_loss_backward_impl<T>(grad_loss, x, target, grad_x, grad_target, n, kind,    \
                                        reduction, count);                                     \
    }
FOR_EACH_STORAGE_TYPE(DEFINE_LOSS_KERNELS)

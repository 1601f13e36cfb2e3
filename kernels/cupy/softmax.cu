// Softmax and log-softmax over the last axis of a contiguous [rows, cols] view (the launcher moves
// `dim` last). One block per row; one pass over x finds the row maximum and the sum of
// exp(x - max) together (online rescaling, warp shuffles then one shared-memory step), a second
// pass writes y. Rows that are all -inf give NaN, as torch.
#include "common.cuh"

// x, y: [rows, cols]; grid (rows,), block: a multiple of 32, at most 1024
template <class T>
__device__ void softmax_forward_impl(const T* __restrict__ x, T* __restrict__ y, int cols,
                                     int log) {
    __shared__ float scratch[2 * MAX_WARPS];
    const long long base = static_cast<long long>(blockIdx.x) * cols;
    MaxSum s{neg_inf(), 0.0f};
    for (int c = threadIdx.x; c < cols; c += blockDim.x) s = max_sum_add(s, to_float(x[base + c]));
    s = block_max_sum(s, scratch);
    const float log_sum = logf(s.sum);
    const float inv_sum = 1.0f / s.sum;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        const float shifted = to_float(x[base + c]) - s.max;
        y[base + c] = from_float<T>(log ? shifted - log_sum : expf(shifted) * inv_sum);
    }
}

// grad_y, y, grad_x: [rows, cols]
// softmax: grad_x = y * (g - sum(g * y)); log_softmax: grad_x = g - exp(y) * sum(g)
template <class T>
__device__ void softmax_backward_impl(const T* __restrict__ grad_y, const T* __restrict__ y,
                                      T* __restrict__ grad_x, int cols, int log) {
    __shared__ float scratch[MAX_WARPS];
    const long long base = static_cast<long long>(blockIdx.x) * cols;
    float acc = 0.0f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        const float g = to_float(grad_y[base + c]);
        acc += log ? g : g * to_float(y[base + c]);
    }
    const float total = block_sum(acc, scratch);
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        const float g = to_float(grad_y[base + c]), v = to_float(y[base + c]);
        grad_x[base + c] = from_float<T>(log ? g - expf(v) * total : v * (g - total));
    }
}

#define DEFINE_SOFTMAX_KERNELS(T, S)                                                           \
    extern "C" __global__ void __launch_bounds__(1024) softmax_forward_##S(const T* x, T* y, int cols, int log) {      \
        softmax_forward_impl<T>(x, y, cols, log);                                              \
    }                                                                                          \
    extern "C" __global__ void __launch_bounds__(1024) softmax_backward_##S(const T* grad_y, const T* y, T* grad_x,    \
                                                    int cols, int log) {                       \
        softmax_backward_impl<T>(grad_y, y, grad_x, cols, log);                                \
    }
FOR_EACH_STORAGE_TYPE(DEFINE_SOFTMAX_KERNELS)

// The fused epilogue of the dense layer around a cuBLAS GEMM (z = x @ weight.T, called from the
// launcher): forward adds the bias and applies the activation; backward multiplies by the
// activation's derivative and reduces the bias gradient over rows (two deterministic passes).
#include "common.cuh"

// z: [rows, cols] GEMM output (row-major); bias: [cols] or null; y: [rows, cols], may be z.
// y != z: z receives the pre-activation (z + bias) and y the activation; y == z: z receives y.
template <class T>
__device__ void bias_activation_forward_impl(T* z, const T* __restrict__ bias, T* y,
                                             long long rows, int cols, int code, float param) {
    const long long n = rows * cols;
    GRID_STRIDE_LOOP(i, n) {
        float v = to_float(z[i]);
        if (bias != nullptr) v = to_float(from_float<T>(v + to_float(bias[i % cols])));
        if (y != z) z[i] = from_float<T>(v);
        y[i] = from_float<T>(activation_value(code, v, param));
    }
}

constexpr int TILE_COLS = 32;  // blockDim.x: one column per thread, coalesced rows
constexpr int TILE_ROWS = 8;   // blockDim.y

// grad_y, saved: [rows, cols]; grad_z: [rows, cols] or null (not needed when code == 0);
// partial: [gridDim.y, cols] fp32 column sums of grad_z over this block's rows, or null.
// Grid (ceil(cols / 32), row_blocks), block (32, 8); rows_per_block rows per grid row.
template <class T>
__device__ void activation_grad_bias_impl(const T* __restrict__ grad_y,
                                          const T* __restrict__ saved, T* __restrict__ grad_z,
                                          float* __restrict__ partial, long long rows, int cols,
                                          long long rows_per_block, int code, float param) {
    __shared__ float tile[TILE_ROWS][TILE_COLS + 1];
    const int col = blockIdx.x * TILE_COLS + threadIdx.x;
    const long long first = blockIdx.y * rows_per_block;
    long long last = first + rows_per_block;
    if (last > rows) last = rows;
    float acc = 0.0f;
    if (col < cols) {
        for (long long r = first + threadIdx.y; r < last; r += TILE_ROWS) {
            const long long i = r * cols + col;
            float g = to_float(grad_y[i]);
            if (code != ACT_IDENTITY) {
                g = activation_grad(code, g, to_float(saved[i]), param);
                g = to_float(from_float<T>(g));  // the bias gradient sums what grad_z holds
                if (grad_z != nullptr) grad_z[i] = from_float<T>(g);
            }
            acc += g;
        }
    }
    if (partial == nullptr) return;  // uniform across the block: no barrier is skipped unevenly
    tile[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && col < cols) {
        float total = 0.0f;
        for (int k = 0; k < TILE_ROWS; ++k) total += tile[k][threadIdx.x];
        partial[static_cast<long long>(blockIdx.y) * cols + col] = total;
    }
}

// partial: [parts, cols] fp32 -> out: [cols] (sum over parts, in a fixed order)
template <class T>
__device__ void column_sum_impl(const float* __restrict__ partial, T* __restrict__ out,
                                int parts, int cols) {
    const int col = blockIdx.x * blockDim.x + threadIdx.x;
    if (col >= cols) return;
    float total = 0.0f;
    for (int p = 0; p < parts; ++p) total += partial[static_cast<long long>(p) * cols + col];
    out[col] = from_float<T>(total);
}

#define DEFINE_DENSE_KERNELS(T, S)                                                             \
    extern "C" __global__ void bias_activation_forward_##S(T* z, const T* bias, T* y,          \
                                                           long long rows, int cols, int code, \
                                                           float param) {                      \
        bias_activation_forward_impl<T>(z, bias, y, rows, cols, code, param);                  \
    }                                                                                          \
    extern "C" __global__ void activation_grad_bias_##S(                                       \
        const T* grad_y, const T* saved, T* grad_z, float* partial, long long rows, int cols,  \
        long long rows_per_block, int code, float param) {                                     \
        activation_grad_bias_impl<T>(grad_y, saved, grad_z, partial, rows, cols,               \
                                     rows_per_block, code, param);                             \
    }                                                                                          \
    extern "C" __global__ void column_sum_##S(const float* partial, T* out, int parts,         \
                                              int cols) {                                      \
        column_sum_impl<T>(partial, out, parts, cols);                                         \
    }
FOR_EACH_STORAGE_TYPE(DEFINE_DENSE_KERNELS)

// The LSTM recurrence as a persistent kernel: each block owns `units` hidden units and keeps its
// slice of W_hh in shared memory (fp32) for every time step of the launch; a grid-wide barrier
// separates the steps. Forward slice: the 4*units rows of W_hh feeding the block's units (gate
// rows i, f, g, o). Backward slice: the `units` columns of W_hh (dh = grad_pre @ W_hh needs
// them). The same code runs one step per launch (the per-step fallback, no barrier) when the
// slice of a grid that fits on the GPU at once would not fit in shared memory (lstm.py decides).
//
// The input projection x @ W_ih^T of all steps is one cuBLAS GEMM before the loop, the weight
// gradients one GEMM after it (lstm.py). Gate order i, f, g, o (torch's). States c, the saved
// gates (post-nonlinearity) and cells, and the pre-activation gradients are fp32.
//
// Barrier: a software grid barrier (arrival counter + generation word, __threadfence) instead of
// cooperative_groups::grid.sync(): CuPy compiles a grid.sync() kernel only as relocatable device
// code linked against libcudadevrt.a of a full CUDA toolkit (absent from pip-only installs), and
// this file stays header-free like common.cuh. Co-residency, which any grid barrier needs, is
// still the driver's guarantee: lstm.py sizes the grid from the occupancy API (grid <= SM count
// * resident blocks per SM, else the per-step path) and launches it with
// cuLaunchCooperativeKernel, which refuses a grid that cannot be resident at once.
#include "common.cuh"

// barrier: [2] zero-initialized words (arrivals, generation); all blocks of the grid resident.
__device__ void grid_barrier(unsigned int* barrier) {
    __syncthreads();
    if (threadIdx.x == 0) {
        volatile unsigned int* generation = barrier + 1;
        const unsigned int seen = *generation;
        __threadfence();  // this block's writes are visible before it arrives
        if (atomicAdd(barrier, 1u) == gridDim.x - 1) {
            atomicExch(barrier, 0u);
            __threadfence();
            atomicAdd(barrier + 1, 1u);
        } else {
            while (*generation == seen) __nanosleep(64);
        }
        __threadfence();
    }
    __syncthreads();
}

// Loads of data written by other blocks during this launch bypass L1 (which is not coherent
// across SMs): .cg loads.
__device__ __forceinline__ float load_cg(const float* p) { return __ldcg(p); }
__device__ __forceinline__ float load_cg(const f16* p) {
    return to_float(f16{__ldcg(reinterpret_cast<const unsigned short*>(p))});
}
__device__ __forceinline__ float load_cg(const bf16* p) {
    return to_float(bf16{__ldcg(reinterpret_cast<const unsigned short*>(p))});
}

// out_s[bl * rows + row] = sum_k in_s[bl * stride + k] * w_s[row * stride + k] for row < rows,
// bl < bb; stride = k_len + 1. Register tiles: a warp computes MATVEC_ROWS x MATVEC_BATCH
// outputs at once, its lanes splitting k (contiguous, conflict-free shared loads; 8 loads feed 16
// FMAs), then one warp reduction per output. Tiles past the edge compute clamped duplicates and
// store nothing.
constexpr int MATVEC_ROWS = 4, MATVEC_BATCH = 4;

__device__ void block_matvec(const float* w_s, const float* in_s, float* out_s, int rows, int bb,
                             int k_len) {
    const int stride = k_len + 1;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    const int row_tiles = (rows + MATVEC_ROWS - 1) / MATVEC_ROWS;
    const int tiles = row_tiles * ((bb + MATVEC_BATCH - 1) / MATVEC_BATCH);
    for (int tile = warp; tile < tiles; tile += warps) {  // uniform per warp: shuffles are safe
        const int row0 = (tile % row_tiles) * MATVEC_ROWS;
        const int bl0 = (tile / row_tiles) * MATVEC_BATCH;
        const float* w_rows[MATVEC_ROWS];
        const float* in_rows[MATVEC_BATCH];
#pragma unroll
        for (int r = 0; r < MATVEC_ROWS; ++r) w_rows[r] = w_s + min(row0 + r, rows - 1) * stride;
#pragma unroll
        for (int b = 0; b < MATVEC_BATCH; ++b) in_rows[b] = in_s + min(bl0 + b, bb - 1) * stride;
        float acc[MATVEC_ROWS][MATVEC_BATCH] = {};
        for (int k = lane; k < k_len; k += 32) {
            float wv[MATVEC_ROWS], xv[MATVEC_BATCH];
#pragma unroll
            for (int r = 0; r < MATVEC_ROWS; ++r) wv[r] = w_rows[r][k];
#pragma unroll
            for (int b = 0; b < MATVEC_BATCH; ++b) xv[b] = in_rows[b][k];
#pragma unroll
            for (int r = 0; r < MATVEC_ROWS; ++r)
#pragma unroll
                for (int b = 0; b < MATVEC_BATCH; ++b) acc[r][b] += wv[r] * xv[b];
        }
#pragma unroll
        for (int r = 0; r < MATVEC_ROWS; ++r)
#pragma unroll
            for (int b = 0; b < MATVEC_BATCH; ++b) {
                const float total = warp_sum(acc[r][b]);
                if (lane == 0 && row0 + r < rows && bl0 + b < bb)
                    out_s[(bl0 + b) * rows + row0 + r] = total;
            }
    }
}

// in_s[bl * (k_len + 1) + k] = src[(b0 + bl) * k_len + k] for bl < bb (src written by any block)
template <class S>
__device__ void stage_rows(const S* src, float* in_s, int b0, int bb, int k_len) {
    for (int idx = threadIdx.x; idx < bb * k_len; idx += blockDim.x) {
        const int bl = idx / k_len, k = idx % k_len;
        in_s[bl * (k_len + 1) + k] = load_cg(src + static_cast<long long>(b0 + bl) * k_len + k);
    }
}

__device__ __forceinline__ int position(int s, int steps, int reverse) {
    return reverse ? steps - 1 - s : s;
}

// Forward steps s in [s_begin, s_end) (position t = s, or steps-1-s when reverse).
// x_proj: [steps, batch, 4H] = x @ W_ih^T; b_ih, b_hh: [4H] or null; h0, c0: [batch, H];
// w_hh: [4H, H]; y: [steps, batch, H]; c_state: [batch, H] fp32 scratch; gates: [steps, batch,
// 4H] fp32 or null; cells: [steps, batch, H] fp32 or null; h_n, c_n: [batch, H];
// barrier: [2] (null when the launch runs one step). Grid ceil(H / units), dynamic shared memory
// 4 * ((4*units + batch_chunk) * (H + 1) + batch_chunk * 4*units) bytes.
template <class T>
__device__ void lstm_forward_impl(const T* __restrict__ x_proj, const T* __restrict__ b_ih,
                                  const T* __restrict__ b_hh, const T* __restrict__ h0,
                                  const T* __restrict__ c0, const T* __restrict__ w_hh, T* y,
                                  float* __restrict__ c_state, float* __restrict__ gates,
                                  float* __restrict__ cells, T* __restrict__ h_n,
                                  T* __restrict__ c_n, unsigned int* barrier, int steps,
                                  int batch, int hidden, int units, int batch_chunk, int s_begin,
                                  int s_end, int reverse) {
    extern __shared__ float smem[];
    const int rows = 4 * units, stride = hidden + 1;
    float* w_s = smem;                              // [rows][stride]
    float* in_s = w_s + rows * stride;              // [batch_chunk][stride]
    float* out_s = in_s + batch_chunk * stride;     // [batch_chunk][rows]
    const int unit0 = blockIdx.x * units;
    for (int idx = threadIdx.x; idx < rows * hidden; idx += blockDim.x) {
        const int row = idx / hidden, k = idx % hidden;
        const int unit = unit0 + row % units, gate = row / units;
        w_s[row * stride + k] =
            unit < hidden ? to_float(w_hh[(static_cast<long long>(gate) * hidden + unit) * hidden
                                          + k]) : 0.0f;
    }
    for (int s = s_begin; s < s_end; ++s) {
        if (s > s_begin) grid_barrier(barrier);  // h of the previous step is complete
        const int t = position(s, steps, reverse);
        const T* h_prev = s == 0 ? h0
                                 : y + static_cast<long long>(position(s - 1, steps, reverse)) *
                                           batch * hidden;
        for (int b0 = 0; b0 < batch; b0 += batch_chunk) {
            const int bb = min(batch_chunk, batch - b0);
            __syncthreads();  // w_s staged; the previous chunk is done with in_s / out_s
            stage_rows(h_prev, in_s, b0, bb, hidden);
            __syncthreads();
            block_matvec(w_s, in_s, out_s, rows, bb, hidden);
            __syncthreads();
            for (int idx = threadIdx.x; idx < bb * units; idx += blockDim.x) {
                const int bl = idx / units, u = idx % units, unit = unit0 + u;
                if (unit >= hidden) continue;
                const int b = b0 + bl;
                const long long row4 = (static_cast<long long>(t) * batch + b) * 4 * hidden;
                float a[4];
                for (int gate = 0; gate < 4; ++gate) {
                    const int col = gate * hidden + unit;
                    a[gate] = out_s[bl * rows + gate * units + u] + to_float(x_proj[row4 + col]);
                    if (b_ih != nullptr) a[gate] += to_float(b_ih[col]);
                    if (b_hh != nullptr) a[gate] += to_float(b_hh[col]);
                }
                const float i = sigmoid_f(a[0]), f = sigmoid_f(a[1]), g = tanhf(a[2]),
                            o = sigmoid_f(a[3]);
                const long long state = static_cast<long long>(b) * hidden + unit;
                const float c_prev = s == 0 ? to_float(c0[state]) : c_state[state];
                const float c = f * c_prev + i * g;
                const float h = o * tanhf(c);
                c_state[state] = c;
                const long long row1 = (static_cast<long long>(t) * batch + b) * hidden + unit;
                y[row1] = from_float<T>(h);
                if (gates != nullptr) {
                    gates[row4 + unit] = i;
                    gates[row4 + hidden + unit] = f;
                    gates[row4 + 2 * hidden + unit] = g;
                    gates[row4 + 3 * hidden + unit] = o;
                }
                if (cells != nullptr) cells[row1] = c;
                if (s == steps - 1) {
                    h_n[state] = from_float<T>(h);
                    c_n[state] = from_float<T>(c);
                }
            }
        }
    }
}

// Backward steps s = s_end-1 down to s_begin (the forward's order reversed), then, when
// grad_h0 is given, grad_h0 = grad_pre[position 0] @ W_hh.
// grad_y: [steps, batch, H]; grad_h_n, grad_c_n: [batch, H] or null (zero); gates, cells: the
// forward's fp32 saves; c0: [batch, H]; w_hh: [4H, H]; grad_pre: [steps, batch, 4H] fp32 out;
// dc_state: [batch, H] fp32 scratch; grad_h0, grad_c0: [batch, H] or null; barrier as forward.
// Grid ceil(H / units), dynamic shared memory 4 * ((units + batch_chunk) * (4H + 1) +
// batch_chunk * units) bytes.
template <class T>
__device__ void lstm_backward_impl(const T* __restrict__ grad_y, const T* __restrict__ grad_h_n,
                                   const T* __restrict__ grad_c_n,
                                   const float* __restrict__ gates,
                                   const float* __restrict__ cells, const T* __restrict__ c0,
                                   const T* __restrict__ w_hh, float* grad_pre,
                                   float* __restrict__ dc_state, T* __restrict__ grad_h0,
                                   T* __restrict__ grad_c0, unsigned int* barrier, int steps,
                                   int batch, int hidden, int units, int batch_chunk,
                                   int s_begin, int s_end, int reverse) {
    extern __shared__ float smem[];
    const int k_len = 4 * hidden, stride = k_len + 1;
    float* w_s = smem;                              // [units][stride]: W_hh[:, unit0 + u]
    float* in_s = w_s + units * stride;             // [batch_chunk][stride]
    float* out_s = in_s + batch_chunk * stride;     // [batch_chunk][units]
    const int unit0 = blockIdx.x * units;
    for (int idx = threadIdx.x; idx < units * k_len; idx += blockDim.x) {
        const int u = idx % units, r = idx / units, unit = unit0 + u;
        w_s[u * stride + r] =
            unit < hidden ? to_float(w_hh[static_cast<long long>(r) * hidden + unit]) : 0.0f;
    }
    for (int s = s_end - 1; s >= s_begin; --s) {
        if (s < s_end - 1) grid_barrier(barrier);  // grad_pre of the later step is complete
        const int t = position(s, steps, reverse);
        const bool last = s == steps - 1;
        for (int b0 = 0; b0 < batch; b0 += batch_chunk) {
            const int bb = min(batch_chunk, batch - b0);
            __syncthreads();
            if (!last) {  // dh from the later step: grad_pre[t_next] @ W_hh[:, units]
                stage_rows(grad_pre + static_cast<long long>(position(s + 1, steps, reverse)) *
                                          batch * k_len,
                           in_s, b0, bb, k_len);
                __syncthreads();
                block_matvec(w_s, in_s, out_s, units, bb, k_len);
                __syncthreads();
            }
            for (int idx = threadIdx.x; idx < bb * units; idx += blockDim.x) {
                const int bl = idx / units, u = idx % units, unit = unit0 + u;
                if (unit >= hidden) continue;
                const int b = b0 + bl;
                const long long state = static_cast<long long>(b) * hidden + unit;
                const long long row1 = (static_cast<long long>(t) * batch + b) * hidden + unit;
                const long long row4 = (static_cast<long long>(t) * batch + b) * k_len;
                float dh = to_float(grad_y[row1]);
                float dc = 0.0f;
                if (last) {
                    if (grad_h_n != nullptr) dh += to_float(grad_h_n[state]);
                    if (grad_c_n != nullptr) dc = to_float(grad_c_n[state]);
                } else {
                    dh += out_s[bl * units + u];
                    dc = dc_state[state];
                }
                const float i = gates[row4 + unit], f = gates[row4 + hidden + unit],
                            g = gates[row4 + 2 * hidden + unit],
                            o = gates[row4 + 3 * hidden + unit];
                const float c = cells[row1];
                const float c_prev =
                    s == 0 ? to_float(c0[state])
                           : cells[(static_cast<long long>(position(s - 1, steps, reverse)) *
                                        batch + b) * hidden + unit];
                const float tanh_c = tanhf(c);
                dc += dh * o * (1.0f - tanh_c * tanh_c);
                grad_pre[row4 + unit] = dc * g * i * (1.0f - i);
                grad_pre[row4 + hidden + unit] = dc * c_prev * f * (1.0f - f);
                grad_pre[row4 + 2 * hidden + unit] = dc * i * (1.0f - g * g);
                grad_pre[row4 + 3 * hidden + unit] = dh * tanh_c * o * (1.0f - o);
                dc_state[state] = dc * f;
                if (s == 0 && grad_c0 != nullptr) grad_c0[state] = from_float<T>(dc * f);
            }
        }
    }
    // grad_h0 in a persistent launch that reached s = 0, or in its own launch (s_begin == s_end
    // == 0) after the per-step launches; conditions uniform across the grid
    if (grad_h0 == nullptr || s_begin != 0 || (s_end > s_begin && barrier == nullptr)) return;
    if (s_end > s_begin) grid_barrier(barrier);  // grad_pre of position 0 is complete
    const float* first = grad_pre + static_cast<long long>(position(0, steps, reverse)) *
                                        batch * k_len;
    for (int b0 = 0; b0 < batch; b0 += batch_chunk) {
        const int bb = min(batch_chunk, batch - b0);
        __syncthreads();
        stage_rows(first, in_s, b0, bb, k_len);
        __syncthreads();
        block_matvec(w_s, in_s, out_s, units, bb, k_len);
        __syncthreads();
        for (int idx = threadIdx.x; idx < bb * units; idx += blockDim.x) {
            const int bl = idx / units, unit = unit0 + idx % units;
            if (unit < hidden)
                grad_h0[static_cast<long long>(b0 + bl) * hidden + unit] =
                    from_float<T>(out_s[bl * units + idx % units]);
        }
    }
}

#define DEFINE_LSTM_KERNELS(T, S)                                                              \
    extern "C" __global__ void lstm_forward_steps_##S(                                         \
        const T* x_proj, const T* b_ih, const T* b_hh, const T* h0, const T* c0,               \
        const T* w_hh, T* y, float* c_state, float* gates, float* cells, T* h_n, T* c_n,       \
        unsigned int* barrier, int steps, int batch, int hidden, int units, int batch_chunk,   \
        int s_begin, int s_end, int reverse) {                                                 \
        lstm_forward_impl<T>(x_proj, b_ih, b_hh, h0, c0, w_hh, y, c_state, gates, cells, h_n,  \
                             c_n, barrier, steps, batch, hidden, units, batch_chunk, s_begin,  \
                             s_end, reverse);                                                  \
    }                                                                                          \
    extern "C" __global__ void lstm_backward_steps_##S(                                        \
        const T* grad_y, const T* grad_h_n, const T* grad_c_n, const float* gates,             \
        const float* cells, const T* c0, const T* w_hh, float* grad_pre, float* dc_state,      \
        T* grad_h0, T* grad_c0, unsigned int* barrier, int steps, int batch, int hidden,       \
        int units, int batch_chunk, int s_begin, int s_end, int reverse) {                     \
        lstm_backward_impl<T>(grad_y, grad_h_n, grad_c_n, gates, cells, c0, w_hh, grad_pre,    \
                              dc_state, grad_h0, grad_c0, barrier, steps, batch, hidden,       \
                              units, batch_chunk, s_begin, s_end, reverse);                    \
    }
FOR_EACH_STORAGE_TYPE(DEFINE_LSTM_KERNELS)

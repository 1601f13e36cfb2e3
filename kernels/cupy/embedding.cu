// Embedding lookup: a gather forward (a bit-exact copy of weight rows; a NaN row for an id
// outside [0, V), never an out-of-bounds read) and a deterministic gather backward: the launcher
// sorts the ids (kernels/segments.py), and one thread per grad_weight element sums its row's
// segment of grad_y rows in id-position order. No atomics; every element written once.
#include "common.cuh"

// weight [V, D], y [N, D] contiguous; ids [N] int64
template <class T>
__device__ void embedding_forward_impl(const T* __restrict__ weight,
                                       const long long* __restrict__ ids, T* __restrict__ y,
                                       long long n, long long num_weights, int dim) {
    GRID_STRIDE_LOOP(i, n * dim) {
        const long long id = ids[i / dim];
        const int col = static_cast<int>(i % dim);
        y[i] = (id >= 0 && id < num_weights) ? weight[id * dim + col]
                                             : from_float<T>(__int_as_float(0x7fc00000));
    }
}

// grad_y [N, D], grad_weight [V, D] contiguous; order [N], bounds [V + 1] int64: row v's
// positions are order[bounds[v]:bounds[v + 1]]; padding_idx: -1 for none
template <class T>
__device__ void embedding_backward_impl(const T* __restrict__ grad_y,
                                        const long long* __restrict__ order,
                                        const long long* __restrict__ bounds,
                                        T* __restrict__ grad_weight, long long num_weights,
                                        int dim, long long padding_idx,
                                        int scale_grad_by_freq) {
    GRID_STRIDE_LOOP(i, num_weights * dim) {
        const long long row = i / dim;
        const int col = static_cast<int>(i % dim);
        const long long start = bounds[row], end = bounds[row + 1];
        float acc = 0.0f;
        for (long long j = start; j < end; ++j) acc += to_float(grad_y[order[j] * dim + col]);
        if (scale_grad_by_freq && end > start) acc /= static_cast<float>(end - start);
        grad_weight[i] = from_float<T>(row == padding_idx ? 0.0f : acc);
    }
}

#define DEFINE_EMBEDDING_KERNELS(T, S)                                                         \
    extern "C" __global__ void embedding_forward_##S(const T* weight, const long long* ids,    \
                                                     T* y, long long n, long long num_weights, \
                                                     int dim) {                                \
        embedding_forward_impl<T>(weight, ids, y, n, num_weights, dim);                        \
    }                                                                                          \
    extern "C" __global__ void embedding_backward_##S(                                         \
        const T* grad_y, const long long* order, const long long* bounds, T* grad_weight,      \
        long long num_weights, int dim, long long padding_idx, int scale_grad_by_freq) {       \
        embedding_backward_impl<T>(grad_y, order, bounds, grad_weight, num_weights, dim,       \
                                   padding_idx, scale_grad_by_freq);                           \
    }
FOR_EACH_STORAGE_TYPE(DEFINE_EMBEDDING_KERNELS)

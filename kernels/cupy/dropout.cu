// Dropout with the Philox4x32-10 stream of Triton's tl.rand(seed, offset + i) and
// gpudnn/reference/philox.py, bit for bit: element i (row-major) is kept iff u_i >= float32(p),
// kept elements are multiplied by `scale` (float32(1 / (1 - p)) rounded to T by the launcher),
// dropped ones by 0: torch's x * mask / (1 - p), so a dropped NaN / inf gives NaN. Feature
// dropout (dropout1d / dropout2d) draws once per (sample, channel): u_{i / inner}.
// No mask is stored: backward regenerates it from (seed, offset).
#include "common.cuh"
#include "philox.cuh"

// x, y: [n] contiguous (row-major = logical order); seed: the Philox key; offset: the counter
// of element 0 (64-bit: c0 = low word, c1 = high word, as tl.rand with int64 offsets); inner:
// elements per draw (1 for dropout; one channel's for feature dropout, counter n * C + c)
template <class T>
__device__ void dropout_impl(const T* __restrict__ x, T* __restrict__ y, long long n,
                             unsigned long long seed, long long offset, long long inner,
                             float p, float scale) {
    GRID_STRIDE_LOOP(i, n) {
        const bool keep = philox_uniform(seed, offset + i / inner) >= p;
        y[i] = from_float<T>(to_float(x[i]) * (keep ? scale : 0.0f));
    }
}

#define DEFINE_DROPOUT_KERNELS(T, S)                                                           \
    extern "C" __global__ void dropout_##S(const T* x, T* y, long long n,                      \
                                           unsigned long long seed, long long offset,          \
                                           long long inner, float p, float scale) {            \
        dropout_impl<T>(x, y, n, seed, offset, inner, p, scale);                               \
    }
FOR_EACH_STORAGE_TYPE(DEFINE_DROPOUT_KERNELS)

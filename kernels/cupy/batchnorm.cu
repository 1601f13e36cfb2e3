// Batch normalization over x [N, C, S] (S = the product of the spatial sizes) stored contiguous
// either as NCHW (element (n, c, s) at (n * C + c) * S + s) or channels_last (at (n * S + s) * C
// + c); `channels_last` says which. Per-channel vectors (weight, bias, running stats, mean,
// invstd, partial sums) are fp32 [C] (the launcher converts other dtypes).
//
// Statistics are split across blocks: grid (C, splits), each block runs Welford over its slice
// of the channel's N * S elements and writes (count, mean, M2); a finalize kernel merges the
// splits in a fixed order (Chan et al.), so results are deterministic. The activation is fused
// into the normalization, and backward recomputes the pre-activation from x.
#include "common.cuh"

struct Welford {
    float count, mean, m2;
};

__device__ __forceinline__ Welford welford_combine(Welford a, Welford b) {
    const float n = a.count + b.count;
    if (n == 0.0f) return a;
    const float delta = b.mean - a.mean, wb = b.count / n;
    return {n, a.mean + delta * wb, a.m2 + b.m2 + delta * delta * a.count * wb};
}

__device__ __forceinline__ Welford block_welford(Welford w, float* scratch /* 3 * MAX_WARPS */) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    for (int lane_mask = 16; lane_mask > 0; lane_mask >>= 1) {
        Welford other{__shfl_xor_sync(FULL_MASK, w.count, lane_mask),
                      __shfl_xor_sync(FULL_MASK, w.mean, lane_mask),
                      __shfl_xor_sync(FULL_MASK, w.m2, lane_mask)};
        w = welford_combine(w, other);
    }
    __syncthreads();
    if (lane == 0) {
        scratch[warp] = w.count;
        scratch[MAX_WARPS + warp] = w.mean;
        scratch[2 * MAX_WARPS + warp] = w.m2;
    }
    __syncthreads();
    w = lane < warps
            ? Welford{scratch[lane], scratch[MAX_WARPS + lane], scratch[2 * MAX_WARPS + lane]}
            : Welford{0.0f, 0.0f, 0.0f};
    for (int lane_mask = 16; lane_mask > 0; lane_mask >>= 1) {
        Welford other{__shfl_xor_sync(FULL_MASK, w.count, lane_mask),
                      __shfl_xor_sync(FULL_MASK, w.mean, lane_mask),
                      __shfl_xor_sync(FULL_MASK, w.m2, lane_mask)};
        w = welford_combine(w, other);
    }
    return w;
}

// Address of the j-th element (j < N * S, n-major) of channel c.
__device__ __forceinline__ long long channel_element(long long j, int c, int channels,
                                                     long long spatial, int channels_last) {
    const long long n = j / spatial, s = j - n * spatial;
    return channels_last ? (n * spatial + s) * channels + c
                         : (n * channels + c) * spatial + s;
}

// Channel of the element at storage index i.
__device__ __forceinline__ int channel_of(long long i, int channels, long long spatial,
                                          int channels_last) {
    return channels_last ? static_cast<int>(i % channels)
                         : static_cast<int>((i / spatial) % channels);
}

// x: [N, C, S]; partial: [C, splits, 3] fp32 (count, mean, M2); grid (C, splits)
template <class T>
__device__ void batch_norm_stats_impl(const T* __restrict__ x, float* __restrict__ partial,
                                      long long batch, int channels, long long spatial,
                                      int channels_last) {
    __shared__ float scratch[3 * MAX_WARPS];
    const int c = blockIdx.x, split = blockIdx.y, splits = gridDim.y;
    const long long total = batch * spatial;
    const long long chunk = (total + splits - 1) / splits;
    const long long first = split * chunk;
    const long long last = first + chunk < total ? first + chunk : total;
    Welford w{0.0f, 0.0f, 0.0f};
    for (long long j = first + threadIdx.x; j < last; j += blockDim.x) {
        const float v = to_float(x[channel_element(j, c, channels, spatial, channels_last)]);
        w = welford_combine(w, Welford{1.0f, v, 0.0f});
    }
    w = block_welford(w, scratch);
    if (threadIdx.x == 0) {
        float* out = partial + (static_cast<long long>(c) * splits + split) * 3;
        out[0] = w.count;
        out[1] = w.mean;
        out[2] = w.m2;
    }
}

// One thread per channel: merge the splits (training) or read the running statistics (eval);
// mean, invstd: [C] out; running_mean / running_var: [C] or null, updated in training with the
// unbiased variance and `momentum` (an empty batch leaves them untouched, as torch).
extern "C" __global__ void batch_norm_finalize(const float* __restrict__ partial, int splits,
                                               int channels, int training, float momentum,
                                               float eps, float* __restrict__ running_mean,
                                               float* __restrict__ running_var,
                                               float* __restrict__ mean,
                                               float* __restrict__ invstd) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= channels) return;
    float m, var;
    if (training) {
        Welford w{0.0f, 0.0f, 0.0f};
        for (int s = 0; s < splits; ++s) {
            const float* p = partial + (static_cast<long long>(c) * splits + s) * 3;
            w = welford_combine(w, Welford{p[0], p[1], p[2]});
        }
        m = w.count > 0.0f ? w.mean : 0.0f;
        var = w.count > 0.0f ? w.m2 / w.count : 0.0f;
        if (w.count > 0.0f) {
            const float unbiased = var * (w.count / fmaxf(w.count - 1.0f, 1.0f));
            if (running_mean != nullptr)
                running_mean[c] = (1.0f - momentum) * running_mean[c] + momentum * m;
            if (running_var != nullptr)
                running_var[c] = (1.0f - momentum) * running_var[c] + momentum * unbiased;
        }
    } else {
        m = running_mean[c];
        var = running_var[c];
    }
    mean[c] = m;
    invstd[c] = 1.0f / sqrtf(var + eps);
}

// x, y: [N, C, S] in one layout, n = N * C * S; weight, bias: [C] fp32 or null
template <class T>
__device__ void batch_norm_apply_impl(const T* __restrict__ x, T* __restrict__ y, long long n,
                                      int channels, long long spatial, int channels_last,
                                      const float* __restrict__ mean,
                                      const float* __restrict__ invstd,
                                      const float* __restrict__ weight,
                                      const float* __restrict__ bias, int code, float param) {
    GRID_STRIDE_LOOP(i, n) {
        const int c = channel_of(i, channels, spatial, channels_last);
        float z = (to_float(x[i]) - mean[c]) * invstd[c];
        if (weight != nullptr) z *= weight[c];
        if (bias != nullptr) z += bias[c];
        y[i] = from_float<T>(activation_value(code, z, param));
    }
}

// dL/dz at one element: the pre-activation z = xhat * w + b is recomputed from x
__device__ __forceinline__ float batch_norm_grad_z(float grad_y, float xhat, int c,
                                                   const float* weight, const float* bias,
                                                   int code, float param, int from_output) {
    if (code == ACT_IDENTITY) return grad_y;
    float z = xhat;
    if (weight != nullptr) z *= weight[c];
    if (bias != nullptr) z += bias[c];
    const float saved = from_output ? activation_value(code, z, param) : z;
    return activation_grad(code, grad_y, saved, param);
}

// partial: [C, splits, 2] fp32 (sum dz, sum dz * xhat) over this block's slice; grid (C, splits)
template <class T>
__device__ void batch_norm_backward_reduce_impl(
    const T* __restrict__ grad_y, const T* __restrict__ x, float* __restrict__ partial,
    long long batch, int channels, long long spatial, int channels_last,
    const float* __restrict__ mean, const float* __restrict__ invstd,
    const float* __restrict__ weight, const float* __restrict__ bias, int code, float param,
    int from_output) {
    __shared__ float scratch[MAX_WARPS];
    const int c = blockIdx.x, split = blockIdx.y, splits = gridDim.y;
    const long long total = batch * spatial;
    const long long chunk = (total + splits - 1) / splits;
    const long long first = split * chunk;
    const long long last = first + chunk < total ? first + chunk : total;
    float sum_dz = 0.0f, sum_dz_xhat = 0.0f;
    for (long long j = first + threadIdx.x; j < last; j += blockDim.x) {
        const long long i = channel_element(j, c, channels, spatial, channels_last);
        const float xhat = (to_float(x[i]) - mean[c]) * invstd[c];
        const float dz = batch_norm_grad_z(to_float(grad_y[i]), xhat, c, weight, bias, code,
                                           param, from_output);
        sum_dz += dz;
        sum_dz_xhat += dz * xhat;
    }
    sum_dz = block_sum(sum_dz, scratch);
    sum_dz_xhat = block_sum(sum_dz_xhat, scratch);
    if (threadIdx.x == 0) {
        float* out = partial + (static_cast<long long>(c) * splits + split) * 2;
        out[0] = sum_dz;
        out[1] = sum_dz_xhat;
    }
}

// One thread per channel: sums: [C, 2] fp32 (sum dz, sum dz * xhat) merged over the splits
extern "C" __global__ void batch_norm_backward_finalize(const float* __restrict__ partial,
                                                        int splits, int channels,
                                                        float* __restrict__ sums) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= channels) return;
    float sum_dz = 0.0f, sum_dz_xhat = 0.0f;
    for (int s = 0; s < splits; ++s) {
        sum_dz += partial[(static_cast<long long>(c) * splits + s) * 2];
        sum_dz_xhat += partial[(static_cast<long long>(c) * splits + s) * 2 + 1];
    }
    sums[2 * c] = sum_dz;
    sums[2 * c + 1] = sum_dz_xhat;
}

// grad_x: [N, C, S] like x. training: w * invstd * (dz - mean(dz) - xhat * mean(dz * xhat));
// eval: w * invstd * dz. sums: [C, 2] from batch_norm_backward_finalize (training only).
template <class T>
__device__ void batch_norm_backward_input_impl(
    const T* __restrict__ grad_y, const T* __restrict__ x, T* __restrict__ grad_x, long long n,
    long long per_channel, int channels, long long spatial, int channels_last,
    const float* __restrict__ mean, const float* __restrict__ invstd,
    const float* __restrict__ weight, const float* __restrict__ bias,
    const float* __restrict__ sums, int training, int code, float param, int from_output) {
    GRID_STRIDE_LOOP(i, n) {
        const int c = channel_of(i, channels, spatial, channels_last);
        const float xhat = (to_float(x[i]) - mean[c]) * invstd[c];
        float dz = batch_norm_grad_z(to_float(grad_y[i]), xhat, c, weight, bias, code, param,
                                     from_output);
        if (training) {
            const float inv_count = 1.0f / static_cast<float>(per_channel);
            dz = dz - sums[2 * c] * inv_count - xhat * sums[2 * c + 1] * inv_count;
        }
        const float w = weight != nullptr ? weight[c] : 1.0f;
        grad_x[i] = from_float<T>(w * invstd[c] * dz);
    }
}

#define DEFINE_BATCHNORM_KERNELS(T, S)                                                         \
    extern "C" __global__ void batch_norm_stats_##S(const T* x, float* partial,                \
                                                    long long batch, int channels,             \
                                                    long long spatial, int channels_last) {    \
        batch_norm_stats_impl<T>(x, partial, batch, channels, spatial, channels_last);         \
    }                                                                                          \
    extern "C" __global__ void batch_norm_apply_##S(                                           \
        const T* x, T* y, long long n, int channels, long long spatial, int channels_last,     \
        const float* mean, const float* invstd, const float* weight, const float* bias,        \
        int code, float param) {                                                               \
        batch_norm_apply_impl<T>(x, y, n, channels, spatial, channels_last, mean, invstd,      \
                                 weight, bias, code, param);                                   \
    }                                                                                          \
    extern "C" __global__ void batch_norm_backward_reduce_##S(                                 \
        const T* grad_y, const T* x, float* partial, long long batch, int channels,            \
        long long spatial, int channels_last, const float* mean, const float* invstd,          \
        const float* weight, const float* bias, int code, float param, int from_output) {      \
        batch_norm_backward_reduce_impl<T>(grad_y, x, partial, batch, channels, spatial,       \
                                           channels_last, mean, invstd, weight, bias, code,    \
                                           param, from_output);                                \
    }                                                                                          \
    extern "C" __global__ void batch_norm_backward_input_##S(                                  \
        const T* grad_y, const T* x, T* grad_x, long long n, long long per_channel,            \
        int channels, long long spatial, int channels_last, const float* mean,                 \
        const float* invstd, const float* weight, const float* bias, const float* sums,        \
        int training, int code, float param, int from_output) {                                \
        batch_norm_backward_input_impl<T>(grad_y, x, grad_x, n, per_channel, channels,         \
                                          spatial, channels_last, mean, invstd, weight, bias,  \
                                          sums, training, code, param, from_output);           \
    }
FOR_EACH_STORAGE_TYPE(DEFINE_BATCHNORM_KERNELS)

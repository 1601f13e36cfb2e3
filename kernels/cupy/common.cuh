// Shared device code of the CuPy backend: storage types, fp32 loads/stores, warp and block
// reductions, and the activation registry (the CUDA C twin of kernels/triton/activations.py and
// gpudnn/reference/activations.py; codes are kernels.activations.Activation.code).
//
// Header-free on purpose: it compiles the same under nvcc (kernels/cupy/build.py) and NVRTC
// (cupy.RawModule), so fp16/bf16 are plain 16-bit storage structs converted with PTX cvt.
#pragma once

struct f16 { unsigned short bits; };
struct bf16 { unsigned short bits; };

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(f16 v) {
    float out;
    asm("cvt.f32.f16 %0, %1;" : "=f"(out) : "h"(v.bits));
    return out;
}
__device__ __forceinline__ float to_float(bf16 v) {
    return __uint_as_float(static_cast<unsigned int>(v.bits) << 16);
}

template <class T> __device__ __forceinline__ T from_float(float v);
template <> __device__ __forceinline__ float from_float<float>(float v) { return v; }
template <> __device__ __forceinline__ f16 from_float<f16>(float v) {
    f16 out;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(out.bits) : "f"(v));
    return out;
}
template <> __device__ __forceinline__ bf16 from_float<bf16>(float v) {
    bf16 out;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(out.bits) : "f"(v));
    return out;
}

// -inf without math.h (NVRTC has no INFINITY macro)
__device__ __forceinline__ float neg_inf() { return __int_as_float(0xff800000); }

// --- reductions --------------------------------------------------------------------------------

constexpr unsigned FULL_MASK = 0xffffffffu;
constexpr int MAX_WARPS = 32;  // blocks have at most 1024 threads

__device__ __forceinline__ float warp_sum(float v) {
    for (int lane_mask = 16; lane_mask > 0; lane_mask >>= 1)
        v += __shfl_xor_sync(FULL_MASK, v, lane_mask);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int lane_mask = 16; lane_mask > 0; lane_mask >>= 1)
        v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, lane_mask));
    return v;
}

// Sum over the whole block (blockDim.x a multiple of 32); every thread gets the result.
// `scratch` holds MAX_WARPS floats of shared memory; callers may reuse it after return.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();  // scratch may still be read by a previous reduction
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : 0.0f;
    return warp_sum(v);
}

// Online (max, sum of exp(x - max)) pairs: the one-pass log-sum-exp of softmax and cross-entropy.
struct MaxSum {
    float max;
    float sum;
};

__device__ __forceinline__ MaxSum max_sum_combine(MaxSum a, MaxSum b) {
    const float m = fmaxf(a.max, b.max);
    // A side that saw only -inf (or nothing) has sum exactly 0 and contributes 0, not
    // exp(-inf - -inf) = NaN. Test the sum, not the max: a NaN seen before any finite value
    // leaves max at -inf but sum NaN, and that NaN must survive (torch's row is all NaN).
    const float sa = a.sum == 0.0f ? 0.0f : a.sum * expf(a.max - m);
    const float sb = b.sum == 0.0f ? 0.0f : b.sum * expf(b.max - m);
    return {m, sa + sb};
}

__device__ __forceinline__ MaxSum max_sum_add(MaxSum s, float x) {
    if (x > s.max) {  // also handles the first finite element after -inf
        const float scaled = s.sum == 0.0f ? 0.0f : s.sum * expf(s.max - x);  // NaN survives
        // exp(x - x): 1, or NaN for x = +inf, where torch's exp(x - max) is NaN as well
        return {x, scaled + expf(x - x)};
    }
    if (x == neg_inf()) return s;
    return {s.max, s.sum + expf(x - s.max)};  // NaN x makes the sum NaN, as torch's result
}

__device__ __forceinline__ MaxSum warp_max_sum(MaxSum s) {
    for (int lane_mask = 16; lane_mask > 0; lane_mask >>= 1) {
        MaxSum other{__shfl_xor_sync(FULL_MASK, s.max, lane_mask),
                     __shfl_xor_sync(FULL_MASK, s.sum, lane_mask)};
        s = max_sum_combine(s, other);
    }
    return s;
}

// Block-wide MaxSum; `scratch` holds 2 * MAX_WARPS floats of shared memory.
__device__ __forceinline__ MaxSum block_max_sum(MaxSum s, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    s = warp_max_sum(s);
    __syncthreads();
    if (lane == 0) {
        scratch[warp] = s.max;
        scratch[MAX_WARPS + warp] = s.sum;
    }
    __syncthreads();
    MaxSum mine = lane < warps ? MaxSum{scratch[lane], scratch[MAX_WARPS + lane]}
                               : MaxSum{neg_inf(), 0.0f};
    return warp_max_sum(mine);
}

// --- activations (codes: 0 identity, then kernels.activations.NAMES order) -----------------------

enum ActivationCode : int {
    ACT_IDENTITY = 0, ACT_RELU = 1, ACT_LEAKY_RELU = 2, ACT_SIGMOID = 3, ACT_TANH = 4,
    ACT_GELU = 5, ACT_GELU_TANH = 6, ACT_SILU = 7,
};

__device__ __forceinline__ float sigmoid_f(float z) {
    const float e = expf(-fabsf(z));  // exp of -|z| only: no overflow
    return z >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
}

__device__ __forceinline__ float gelu_tanh_inner(float z) {
    return 0.7978845608028654f * (z + 0.044715f * z * z * z);
}

// y = f(z); NaN in, NaN out, as torch (comparisons with NaN are false)
__device__ __forceinline__ float activation_value(int code, float z, float param) {
    switch (code) {
        case ACT_RELU: return z < 0.0f ? 0.0f : z;  // torch's clamp_min: keeps NaN and -0.0
        case ACT_LEAKY_RELU: return z > 0.0f ? z : z * param;
        case ACT_SIGMOID: return sigmoid_f(z);
        case ACT_TANH: return tanhf(z);
        case ACT_GELU: return 0.5f * z * (1.0f + erff(z * 0.7071067811865476f));
        case ACT_GELU_TANH: return 0.5f * z * (1.0f + tanhf(gelu_tanh_inner(z)));
        case ACT_SILU: return z * sigmoid_f(z);
        default: return z;
    }
}

// f'(z), from `saved` = y for relu, leaky_relu (slope > 0), sigmoid, tanh, and z otherwise
// (Activation.from_output decides on the host; the kernels get the matching tensor).
__device__ __forceinline__ float activation_derivative(int code, float saved, float param) {
    switch (code) {
        case ACT_RELU: return saved <= 0.0f ? 0.0f : 1.0f;  // 1 at NaN, as torch
        case ACT_LEAKY_RELU: return saved > 0.0f ? 1.0f : param;  // the slope at NaN, as torch
        case ACT_SIGMOID: return saved * (1.0f - saved);
        case ACT_TANH: return 1.0f - saved * saved;
        case ACT_GELU: {
            const float cdf = 0.5f * (1.0f + erff(saved * 0.7071067811865476f));
            return cdf + saved * 0.3989422804014327f * expf(-0.5f * saved * saved);
        }
        case ACT_GELU_TANH: {
            const float t = tanhf(gelu_tanh_inner(saved));
            const float inner = 0.7978845608028654f * (1.0f + 3.0f * 0.044715f * saved * saved);
            return 0.5f * (1.0f + t) + 0.5f * saved * (1.0f - t * t) * inner;
        }
        case ACT_SILU: {
            const float s = sigmoid_f(saved);
            return s * (1.0f + saved * (1.0f - s));
        }
        default: return 1.0f;
    }
}

// grad_y * f'(z) as torch computes it: relu selects (torch's threshold_backward: 0 where
// y <= 0 even for a NaN / inf grad_y, grad_y where y is NaN); the others multiply.
__device__ __forceinline__ float activation_grad(int code, float grad_y, float saved,
                                                 float param) {
    if (code == ACT_RELU) return saved <= 0.0f ? 0.0f : grad_y;
    return grad_y * activation_derivative(code, saved, param);
}

// One extern "C" entry point per storage type: FOR_EACH_STORAGE_TYPE(X) expands X(float, f32),
// X(f16, f16), X(bf16, bf16); the Python launchers pick `<name>_<suffix>`.
// Every thread walks [0, n) in steps of the whole grid, in 64 bits: a bounded grid covers any n
// (the launchers cap the block count), and no index product overflows.
#define GRID_STRIDE_LOOP(i, n)                                                                 \
    for (long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); \
         i += static_cast<long long>(gridDim.x) * blockDim.x)

#define FOR_EACH_STORAGE_TYPE(X) X(float, f32) X(f16, f16) X(bf16, bf16)

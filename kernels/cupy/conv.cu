// 2-D convolution as im2col + cuBLAS GEMM (called from conv.py) with our own data movement and
// fused epilogues around the GEMM. Layouts:
//   "canonical" activations: [C, N, L] contiguous (L = H*W), the GEMM's natural output/input;
//   columns: [G, Kg, N*L] contiguous, Kg = (C/G)*kh*kw, row k = (c_in_group*kh + i)*kw + j, so
//   over all groups the row is (c*kh + i)*kw + j.
// Output tensors y / z are written dense in NCHW or, with channels_last != 0, NHWC order.
// Every activation code is kernels.activations.Activation.code (the switch in common.cuh).
#include "common.cuh"

struct ConvGeometry {
    int kh, kw, stride_h, stride_w, pad_top, pad_left, dil_h, dil_w;
};

// x: [N, C, H, W] with element strides (sn, sc, sh, sw) -> cols: [C*kh*kw, N*Ho*Wo] (= [G, Kg,
// N*L]); zeros where a tap falls into the padding.
template <class T>
__device__ void im2col_impl(const T* __restrict__ x, T* __restrict__ cols, int n, int c, int h,
                            int w, long long sn, long long sc, long long sh, long long sw,
                            ConvGeometry g, int ho, int wo) {
    const long long spatial = static_cast<long long>(ho) * wo;
    const long long columns = n * spatial;
    const long long total = static_cast<long long>(c) * g.kh * g.kw * columns;
    GRID_STRIDE_LOOP(idx, total) {
        const long long col = idx % columns;
        const long long row = idx / columns;
        const int j = static_cast<int>(row % g.kw);
        const int i = static_cast<int>((row / g.kw) % g.kh);
        const int ch = static_cast<int>(row / (static_cast<long long>(g.kw) * g.kh));
        const int b = static_cast<int>(col / spatial);
        const long long p = col % spatial;
        const int ih = static_cast<int>(p / wo) * g.stride_h - g.pad_top + i * g.dil_h;
        const int iw = static_cast<int>(p % wo) * g.stride_w - g.pad_left + j * g.dil_w;
        float v = 0.0f;
        if (ih >= 0 && ih < h && iw >= 0 && iw < w)
            v = to_float(x[b * sn + ch * sc + ih * sh + iw * sw]);
        cols[idx] = from_float<T>(v);
    }
}

// (n, channel, spatial position) of element `out` of a dense [N, C, L] tensor stored NCHW or
// NHWC: decoding in storage order keeps the writes coalesced.
__device__ __forceinline__ void decode_dense(long long out, int c, long long spatial,
                                             int channels_last, int& b, int& ch, long long& p) {
    if (channels_last) {
        ch = static_cast<int>(out % c);
        p = (out / c) % spatial;
        b = static_cast<int>(out / (c * spatial));
    } else {
        p = out % spatial;
        ch = static_cast<int>((out / spatial) % c);
        b = static_cast<int>(out / (spatial * c));
    }
}

// The fused epilogue on one pre-bias value v of element `out` (channel ch): z = v + bias[ch]
// rounded to T, y = act(z); z is stored only when z_saved is given (the backward needs it).
template <class T>
__device__ __forceinline__ void store_biased_activation(float v, const T* __restrict__ bias,
                                                        int ch, T* __restrict__ y,
                                                        T* __restrict__ z_saved, long long out,
                                                        int code, float param) {
    if (bias != nullptr) v += to_float(bias[ch]);
    v = to_float(from_float<T>(v));
    if (z_saved != nullptr) z_saved[out] = from_float<T>(v);
    y[out] = from_float<T>(activation_value(code, v, param));
}

// z: [C, N, L] canonical GEMM output -> y: [N, C, L] (NCHW or NHWC), y = act(z + bias);
// bias: [C] or null; z_saved: like y or null.
template <class T>
__device__ void bias_activation_impl(const T* __restrict__ z, const T* __restrict__ bias,
                                     T* __restrict__ y, T* __restrict__ z_saved, int n, int c,
                                     long long spatial, int channels_last, int code,
                                     float param) {
    const long long total = static_cast<long long>(n) * c * spatial;
    GRID_STRIDE_LOOP(out, total) {
        int b, ch;
        long long p;
        decode_dense(out, c, spatial, channels_last, b, ch, p);
        const float v = to_float(z[(static_cast<long long>(ch) * n + b) * spatial + p]);
        store_biased_activation<T>(v, bias, ch, y, z_saved, out, code, param);
    }
}

// col2im as a gather (each output element sums its own taps: deterministic, no atomics):
// cols: [C*kh*kw, N*Ho*Wo] -> y: [N, C, H, W] (NCHW or NHWC), then the fused bias/activation
// epilogue (bias null and code 0 for a plain input gradient). z_saved: like y or null.
template <class T>
__device__ void col2im_impl(const T* __restrict__ cols, const T* __restrict__ bias,
                            T* __restrict__ y, T* __restrict__ z_saved, int n, int c, int h,
                            int w, ConvGeometry g, int ho, int wo, int channels_last, int code,
                            float param) {
    const long long spatial = static_cast<long long>(h) * w;
    const long long out_spatial = static_cast<long long>(ho) * wo;
    const long long columns = n * out_spatial;
    const long long total = static_cast<long long>(n) * c * spatial;
    GRID_STRIDE_LOOP(out, total) {
        int b, ch;
        long long p;
        decode_dense(out, c, spatial, channels_last, b, ch, p);
        const int ih = static_cast<int>(p / w), iw = static_cast<int>(p % w);
        float acc = 0.0f;
        for (int i = 0; i < g.kh; ++i) {
            const int th = ih + g.pad_top - i * g.dil_h;  // = oh * stride_h for a hit
            if (th < 0 || th % g.stride_h != 0) continue;
            const int oh = th / g.stride_h;
            if (oh >= ho) continue;
            for (int j = 0; j < g.kw; ++j) {
                const int tw = iw + g.pad_left - j * g.dil_w;
                if (tw < 0 || tw % g.stride_w != 0) continue;
                const int ow = tw / g.stride_w;
                if (ow >= wo) continue;
                const long long row = (static_cast<long long>(ch) * g.kh + i) * g.kw + j;
                acc += to_float(cols[row * columns + b * out_spatial +
                                     static_cast<long long>(oh) * wo + ow]);
            }
        }
        store_biased_activation<T>(acc, bias, ch, y, z_saved, out, code, param);
    }
}

// grad_y, saved: [N, C, H, W] with element strides (g*, s*) (saved null when code == 0) ->
// grad_z: [C, N, H*W] canonical, grad_z = grad_y * act'(saved) rounded to T (what the GEMMs and
// the bias gradient then use). With code 0 this is the plain repack into the canonical layout.
template <class T>
__device__ void activation_grad_canonical_impl(const T* __restrict__ grad_y,
                                               const T* __restrict__ saved,
                                               T* __restrict__ grad_z, int n, int c, int h, int w,
                                               long long gn, long long gc, long long gh,
                                               long long gw, long long sn, long long sc,
                                               long long sh, long long sw, int code,
                                               float param) {
    const long long spatial = static_cast<long long>(h) * w;
    const long long total = static_cast<long long>(n) * c * spatial;
    GRID_STRIDE_LOOP(idx, total) {
        const long long p = idx % spatial;
        const int b = static_cast<int>((idx / spatial) % n);
        const int ch = static_cast<int>(idx / (spatial * n));
        const long long ih = p / w, iw = p % w;
        float g = to_float(grad_y[b * gn + ch * gc + ih * gh + iw * gw]);
        if (code != ACT_IDENTITY)
            g = activation_grad(code, g, to_float(saved[b * sn + ch * sc + ih * sh + iw * sw]),
                                param);
        grad_z[idx] = from_float<T>(g);
    }
}

// grad_z: [C, M] canonical -> grad_bias: [C], one block per channel, a fixed-order block sum
// (deterministic). Grid (C), block 256.
template <class T>
__device__ void channel_sum_impl(const T* __restrict__ grad_z, T* __restrict__ grad_bias,
                                 long long m) {
    __shared__ float scratch[MAX_WARPS];
    const T* row = grad_z + static_cast<long long>(blockIdx.x) * m;
    float acc = 0.0f;
    for (long long i = threadIdx.x; i < m; i += blockDim.x) acc += to_float(row[i]);
    acc = block_sum(acc, scratch);
    if (threadIdx.x == 0) grad_bias[blockIdx.x] = from_float<T>(acc);
}

#define CONV_GEOMETRY_PARAMS                                                                    \
    int kh, int kw, int stride_h, int stride_w, int pad_top, int pad_left, int dil_h, int dil_w
#define CONV_GEOMETRY ConvGeometry{kh, kw, stride_h, stride_w, pad_top, pad_left, dil_h, dil_w}

#define DEFINE_CONV_KERNELS(T, S)                                                              \
    extern "C" __global__ void im2col_##S(const T* x, T* cols, int n, int c, int h, int w,     \
                                          long long sn, long long sc, long long sh,            \
                                          long long sw, CONV_GEOMETRY_PARAMS, int ho,          \
                                          int wo) {                                            \
        im2col_impl<T>(x, cols, n, c, h, w, sn, sc, sh, sw, CONV_GEOMETRY, ho, wo);            \
    }                                                                                          \
    extern "C" __global__ void bias_activation_##S(const T* z, const T* bias, T* y, T* z_saved,\
                                                   int n, int c, long long spatial,            \
                                                   int channels_last, int code, float param) { \
        bias_activation_impl<T>(z, bias, y, z_saved, n, c, spatial, channels_last, code,       \
                                param);                                                        \
    }                                                                                          \
    extern "C" __global__ void col2im_##S(const T* cols, const T* bias, T* y, T* z_saved,      \
                                          int n, int c, int h, int w, CONV_GEOMETRY_PARAMS,    \
                                          int ho, int wo, int channels_last, int code,         \
                                          float param) {                                       \
        col2im_impl<T>(cols, bias, y, z_saved, n, c, h, w, CONV_GEOMETRY, ho, wo,              \
                       channels_last, code, param);                                            \
    }                                                                                          \
    extern "C" __global__ void activation_grad_canonical_##S(                                  \
        const T* grad_y, const T* saved, T* grad_z, int n, int c, int h, int w, long long gn,  \
        long long gc, long long gh, long long gw, long long sn, long long sc, long long sh,    \
        long long sw, int code, float param) {                                                 \
        activation_grad_canonical_impl<T>(grad_y, saved, grad_z, n, c, h, w, gn, gc, gh, gw,   \
                                          sn, sc, sh, sw, code, param);                        \
    }                                                                                          \
    extern "C" __global__ void channel_sum_##S(const T* grad_z, T* grad_bias, long long m) {   \
        channel_sum_impl<T>(grad_z, grad_bias, m);                                             \
    }
FOR_EACH_STORAGE_TYPE(DEFINE_CONV_KERNELS)

// 2-D max, average and adaptive average pooling over contiguous NCHW planes (the launcher
// converts channels_last).
// One thread per output element forward; backward is a gather (one thread per input element,
// summing over the windows that contain it), so no atomics and a deterministic sum.
#include "common.cuh"

struct PoolGeometry {
    int height, width, out_height, out_width;
    int kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w;
};

// A flat index into [planes, rows, cols] (one thread per output or per input element).
struct PlanePixel {
    long long plane;
    int row, col;
};

__device__ __forceinline__ PlanePixel plane_pixel(long long i, int rows, int cols) {
    return {i / (static_cast<long long>(cols) * rows), static_cast<int>((i / cols) % rows),
            static_cast<int>(i % cols)};
}

// The geometry travels as 12 int kernel arguments (CuPy passes scalars, not structs).
#define GEOMETRY_PARAMS                                                                        \
    int height, int width, int out_height, int out_width, int kernel_h, int kernel_w,          \
        int stride_h, int stride_w, int pad_h, int pad_w, int dilation_h, int dilation_w
#define GEOMETRY                                                                               \
    PoolGeometry {                                                                             \
        height, width, out_height, out_width, kernel_h, kernel_w, stride_h, stride_w, pad_h,   \
            pad_w, dilation_h, dilation_w                                                      \
    }

// x: [planes, H, W]; y: [planes, Ho, Wo]; indices: [planes, Ho, Wo] int64, the flat h * W + w
// of each window's maximum (the last NaN if any; the first in-image tap of an all -inf window)
template <class T>
__device__ void max_pool2d_forward_impl(const T* __restrict__ x, T* __restrict__ y,
                                        long long* __restrict__ indices, long long planes,
                                        PoolGeometry g) {
    const long long n = planes * g.out_height * g.out_width;
    GRID_STRIDE_LOOP(o, n) {
        const PlanePixel at = plane_pixel(o, g.out_height, g.out_width);
        const long long plane = at.plane;
        const int oh = at.row, ow = at.col;
        const T* image = x + plane * g.height * g.width;
        float best = neg_inf();
        long long best_index = -1;
        for (int kh = 0; kh < g.kernel_h; ++kh) {
            const int ih = oh * g.stride_h - g.pad_h + kh * g.dilation_h;
            if (ih < 0 || ih >= g.height) continue;
            for (int kw = 0; kw < g.kernel_w; ++kw) {
                const int iw = ow * g.stride_w - g.pad_w + kw * g.dilation_w;
                if (iw < 0 || iw >= g.width) continue;
                const long long index = static_cast<long long>(ih) * g.width + iw;
                const float v = to_float(image[index]);
                if (best_index < 0) best_index = index;
                if (v > best || v != v) {  // torch: strict max, and every NaN wins
                    best = v;
                    best_index = index;
                }
            }
        }
        if (best_index < 0) {
            // no tap in the image (a dilation steps over it): torch's index of the window's
            // first tap at or past 0, outside the image; the backward never reaches it
            int h0 = oh * g.stride_h - g.pad_h, w0 = ow * g.stride_w - g.pad_w;
            if (h0 < 0) h0 += (g.dilation_h - 1 - h0) / g.dilation_h * g.dilation_h;
            if (w0 < 0) w0 += (g.dilation_w - 1 - w0) / g.dilation_w * g.dilation_w;
            best_index = static_cast<long long>(h0) * g.width + w0;
        }
        y[o] = from_float<T>(best);
        indices[o] = best_index;
    }
}

// grad_y, indices: [planes, Ho, Wo]; grad_x: [planes, H, W]
template <class T>
__device__ void max_pool2d_backward_impl(const T* __restrict__ grad_y,
                                         const long long* __restrict__ indices,
                                         T* __restrict__ grad_x, long long planes,
                                         PoolGeometry g) {
    const long long n = planes * g.height * g.width;
    GRID_STRIDE_LOOP(i, n) {
        const PlanePixel at = plane_pixel(i, g.height, g.width);
        const long long plane = at.plane;
        const int ih = at.row, iw = at.col;
        const long long out_base = plane * g.out_height * g.out_width;
        const long long here = static_cast<long long>(ih) * g.width + iw;
        float acc = 0.0f;
        for (int kh = 0; kh < g.kernel_h; ++kh) {
            const int th = ih + g.pad_h - kh * g.dilation_h;
            if (th < 0 || th % g.stride_h != 0) continue;
            const int oh = th / g.stride_h;
            if (oh >= g.out_height) continue;
            for (int kw = 0; kw < g.kernel_w; ++kw) {
                const int tw = iw + g.pad_w - kw * g.dilation_w;
                if (tw < 0 || tw % g.stride_w != 0) continue;
                const int ow = tw / g.stride_w;
                if (ow >= g.out_width) continue;
                const long long o = out_base + static_cast<long long>(oh) * g.out_width + ow;
                if (indices[o] == here) acc += to_float(grad_y[o]);
            }
        }
        grad_x[i] = from_float<T>(acc);
    }
}

// torch's average-pool divisor of output (oh, ow); 0 when the window holds no input
__device__ __forceinline__ float avg_pool_divisor(int oh, int ow, const PoolGeometry& g,
                                                  int count_include_pad, int divisor_override) {
    int h0 = oh * g.stride_h - g.pad_h, w0 = ow * g.stride_w - g.pad_w;
    int h1 = min(h0 + g.kernel_h, g.height + g.pad_h);
    int w1 = min(w0 + g.kernel_w, g.width + g.pad_w);
    const int padded_size = (h1 - h0) * (w1 - w0);
    h0 = max(h0, 0);
    w0 = max(w0, 0);
    h1 = min(h1, g.height);
    w1 = min(w1, g.width);
    if (h0 >= h1 || w0 >= w1) return 0.0f;
    if (divisor_override) return static_cast<float>(divisor_override);
    return static_cast<float>(count_include_pad ? padded_size : (h1 - h0) * (w1 - w0));
}

// x: [planes, H, W]; y: [planes, Ho, Wo] (dilation is 1 for average pooling)
template <class T>
__device__ void avg_pool2d_forward_impl(const T* __restrict__ x, T* __restrict__ y,
                                        long long planes, PoolGeometry g, int count_include_pad,
                                        int divisor_override) {
    const long long n = planes * g.out_height * g.out_width;
    GRID_STRIDE_LOOP(o, n) {
        const PlanePixel at = plane_pixel(o, g.out_height, g.out_width);
        const long long plane = at.plane;
        const int oh = at.row, ow = at.col;
        const T* image = x + plane * g.height * g.width;
        const float divisor = avg_pool_divisor(oh, ow, g, count_include_pad, divisor_override);
        float acc = 0.0f;
        const int h0 = max(oh * g.stride_h - g.pad_h, 0);
        const int h1 = min(oh * g.stride_h - g.pad_h + g.kernel_h, g.height);
        const int w0 = max(ow * g.stride_w - g.pad_w, 0);
        const int w1 = min(ow * g.stride_w - g.pad_w + g.kernel_w, g.width);
        for (int ih = h0; ih < h1; ++ih)
            for (int iw = w0; iw < w1; ++iw) acc += to_float(image[ih * g.width + iw]);
        y[o] = from_float<T>(divisor > 0.0f ? acc / divisor : 0.0f);
    }
}

// grad_y: [planes, Ho, Wo]; grad_x: [planes, H, W]
template <class T>
__device__ void avg_pool2d_backward_impl(const T* __restrict__ grad_y, T* __restrict__ grad_x,
                                         long long planes, PoolGeometry g,
                                         int count_include_pad, int divisor_override) {
    const long long n = planes * g.height * g.width;
    GRID_STRIDE_LOOP(i, n) {
        const PlanePixel at = plane_pixel(i, g.height, g.width);
        const long long plane = at.plane;
        const int ih = at.row, iw = at.col;
        const long long out_base = plane * g.out_height * g.out_width;
        // outputs whose window [o * s - p, o * s - p + k) contains ih (resp. iw)
        const int oh_first = max(0, (ih + g.pad_h - g.kernel_h + g.stride_h) / g.stride_h);
        const int oh_last = min(g.out_height - 1, (ih + g.pad_h) / g.stride_h);
        const int ow_first = max(0, (iw + g.pad_w - g.kernel_w + g.stride_w) / g.stride_w);
        const int ow_last = min(g.out_width - 1, (iw + g.pad_w) / g.stride_w);
        float acc = 0.0f;
        for (int oh = oh_first; oh <= oh_last; ++oh)
            for (int ow = ow_first; ow <= ow_last; ++ow) {
                const float divisor =
                    avg_pool_divisor(oh, ow, g, count_include_pad, divisor_override);
                const long long o = out_base + static_cast<long long>(oh) * g.out_width + ow;
                if (divisor > 0.0f) acc += to_float(grad_y[o]) / divisor;
            }
        grad_x[i] = from_float<T>(acc);
    }
}

// torch's adaptive windows: output o of `out` over `size` positions reads
// [floor(o * size / out), ceil((o + 1) * size / out)); swapped, the outputs holding position o
__device__ __forceinline__ int adaptive_start(int o, int out, int size) {
    return static_cast<int>(static_cast<long long>(o) * size / out);
}
__device__ __forceinline__ int adaptive_end(int o, int out, int size) {
    return static_cast<int>((static_cast<long long>(o + 1) * size + out - 1) / out);
}

// x: [planes, H, W]; y: [planes, Ho, Wo]: the mean of each adaptive window
template <class T>
__device__ void adaptive_avg_pool2d_forward_impl(const T* __restrict__ x, T* __restrict__ y,
                                                 long long planes, int height, int width,
                                                 int out_height, int out_width) {
    const long long n = planes * out_height * out_width;
    GRID_STRIDE_LOOP(o, n) {
        const PlanePixel at = plane_pixel(o, out_height, out_width);
        const T* image = x + at.plane * height * width;
        const int h0 = adaptive_start(at.row, out_height, height);
        const int h1 = adaptive_end(at.row, out_height, height);
        const int w0 = adaptive_start(at.col, out_width, width);
        const int w1 = adaptive_end(at.col, out_width, width);
        float acc = 0.0f;
        for (int ih = h0; ih < h1; ++ih)
            for (int iw = w0; iw < w1; ++iw) acc += to_float(image[ih * width + iw]);
        y[o] = from_float<T>(acc / static_cast<float>((h1 - h0) * (w1 - w0)));
    }
}

// grad_y: [planes, Ho, Wo]; grad_x: [planes, H, W]: the sum of grad_y / area over the windows
// that hold each input position
template <class T>
__device__ void adaptive_avg_pool2d_backward_impl(const T* __restrict__ grad_y,
                                                  T* __restrict__ grad_x, long long planes,
                                                  int height, int width, int out_height,
                                                  int out_width) {
    const long long n = planes * height * width;
    GRID_STRIDE_LOOP(i, n) {
        const PlanePixel at = plane_pixel(i, height, width);
        const long long out_base = at.plane * out_height * out_width;
        float acc = 0.0f;
        const int oh1 = adaptive_end(at.row, height, out_height);
        const int ow1 = adaptive_end(at.col, width, out_width);
        for (int oh = adaptive_start(at.row, height, out_height); oh < oh1; ++oh) {
            const int rows = adaptive_end(oh, out_height, height) -
                             adaptive_start(oh, out_height, height);
            for (int ow = adaptive_start(at.col, width, out_width); ow < ow1; ++ow) {
                const int cols = adaptive_end(ow, out_width, width) -
                                 adaptive_start(ow, out_width, width);
                acc += to_float(grad_y[out_base + static_cast<long long>(oh) * out_width + ow]) /
                       static_cast<float>(rows * cols);
            }
        }
        grad_x[i] = from_float<T>(acc);
    }
}

#define DEFINE_POOL_KERNELS(T, S)                                                              \
    extern "C" __global__ void max_pool2d_forward_##S(const T* x, T* y, long long* indices,    \
                                                      long long planes, GEOMETRY_PARAMS) {     \
        max_pool2d_forward_impl<T>(x, y, indices, planes, GEOMETRY);                           \
    }                                                                                          \
    extern "C" __global__ void max_pool2d_backward_##S(                                        \
        const T* grad_y, const long long* indices, T* grad_x, long long planes,                \
        GEOMETRY_PARAMS) {                                                                     \
        max_pool2d_backward_impl<T>(grad_y, indices, grad_x, planes, GEOMETRY);                \
    }                                                                                          \
    extern "C" __global__ void avg_pool2d_forward_##S(const T* x, T* y, long long planes,      \
                                                      GEOMETRY_PARAMS, int count_include_pad,  \
                                                      int divisor_override) {                  \
        avg_pool2d_forward_impl<T>(x, y, planes, GEOMETRY, count_include_pad,                  \
                                   divisor_override);                                          \
    }                                                                                          \
    extern "C" __global__ void avg_pool2d_backward_##S(const T* grad_y, T* grad_x,             \
                                                       long long planes, GEOMETRY_PARAMS,      \
                                                       int count_include_pad,                  \
                                                       int divisor_override) {                 \
        avg_pool2d_backward_impl<T>(grad_y, grad_x, planes, GEOMETRY, count_include_pad,       \
                                    divisor_override);                                         \
    }                                                                                          \
    extern "C" __global__ void adaptive_avg_pool2d_forward_##S(                                \
        const T* x, T* y, long long planes, int height, int width, int out_height,             \
        int out_width) {                                                                       \
        adaptive_avg_pool2d_forward_impl<T>(x, y, planes, height, width, out_height,           \
                                            out_width);                                        \
    }                                                                                          \
    extern "C" __global__ void adaptive_avg_pool2d_backward_##S(                               \
        const T* grad_y, T* grad_x, long long planes, int height, int width, int out_height,   \
        int out_width) {                                                                       \
        adaptive_avg_pool2d_backward_impl<T>(grad_y, grad_x, planes, height, width,            \
                                             out_height, out_width);                           \
    }
FOR_EACH_STORAGE_TYPE(DEFINE_POOL_KERNELS)

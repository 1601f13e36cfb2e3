// Elementwise activation forward / backward over a dense buffer of n elements (the launcher
// hands over tensors whose storage order is shared: contiguous or one common dense layout).
#include "common.cuh"

// x, y: [n]; code/param: the activation (common.cuh)
template <class T>
__device__ void activation_forward_impl(const T* __restrict__ x, T* __restrict__ y,
                                        long long n, int code, float param) {
    GRID_STRIDE_LOOP(i, n)
        y[i] = from_float<T>(activation_value(code, to_float(x[i]), param));
}

// grad_y, saved, grad_x: [n]; saved is y or z as Activation.from_output says
template <class T>
__device__ void activation_backward_impl(const T* __restrict__ grad_y,
                                         const T* __restrict__ saved, T* __restrict__ grad_x,
                                         long long n, int code, float param) {
    GRID_STRIDE_LOOP(i, n)
        grad_x[i] = from_float<T>(
            activation_grad(code, to_float(grad_y[i]), to_float(saved[i]), param));
}

#define DEFINE_ACTIVATION_KERNELS(T, S)                                                        \
    extern "C" __global__ void activation_forward_##S(const T* x, T* y, long long n, int code,  \
                                                      float param) {                           \
        activation_forward_impl<T>(x, y, n, code, param);                                      \
    }                                                                                          \
    extern "C" __global__ void activation_backward_##S(const T* grad_y, const T* saved,        \
                                                       T* grad_x, long long n, int code,        \
                                                       float param) {                          \
        activation_backward_impl<T>(grad_y, saved, grad_x, n, code, param);                    \
    }
FOR_EACH_STORAGE_TYPE(DEFINE_ACTIVATION_KERNELS)

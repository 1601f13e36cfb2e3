// Losses: cross-entropy over class indices or class probabilities, with class weights and label
// smoothing (one block per row, the one-pass online log-sum-exp of softmax.cu, a second pass over
// the row for smoothing and probabilities), NLL (a gather per row), BCE-with-logits (weight,
// pos_weight), BCE on probabilities and MSE (elementwise), and one deterministic single-block
// reduction for "sum" / "mean" over per-row values and per-row denominators.
#include "common.cuh"

__device__ __forceinline__ float quiet_nan() { return __int_as_float(0x7fc00000); }

enum Reduction : int { REDUCE_NONE = 0, REDUCE_SUM = 1, REDUCE_MEAN = 2 };

// torch's clamp of BCE's logs and its floor of the BCE gradient's denominator
constexpr float BCE_LOG_FLOOR = -100.0f;
constexpr float BCE_EPSILON = 1e-12f;

// The class weight of a row's target: 1 without weights, 0 where ignored or out of range.
template <class T>
__device__ __forceinline__ float target_weight(long long t, const T* __restrict__ weight,
                                               int cols, long long ignore_index) {
    if (t == ignore_index || t < 0 || t >= cols) return 0.0f;
    return weight != nullptr ? to_float(weight[t]) : 1.0f;
}

// logits: [rows, cols]; exactly one of target ([rows] int64 class indices) and probs ([rows, cols]
// class probabilities); weight: [cols] or null; eps: label smoothing; lse: [rows] fp32 (class
// indices: the log-sum-exp; probabilities: the row max, with log(sum(exp(x - max))) in log_sum,
// so that backward forms log_p = (x - max) - log_sum as torch rounds it);
// row_loss, row_den: [rows] fp32 (for a reduction: the losses and the mean's denominators, the
// target weights or 1 per row for probabilities) or null; row_out: [rows] T ("none") or null.
// Class indices: (1 - eps) w_t ((m - x_t) + log s) - eps / C sum_c w_c log_p_c, 0 where ignored;
// probabilities: -sum_c log_p_c q_c w_c with q = p (1 - eps) + eps / C (torch's product order).
// A target outside [0, cols) that is not ignore_index gives NaN (no host check, no sync).
template <class T>
__device__ void cross_entropy_forward_impl(const T* __restrict__ logits,
                                           const long long* __restrict__ target,
                                           const T* __restrict__ probs,
                                           const T* __restrict__ weight,
                                           float* __restrict__ row_loss, T* __restrict__ row_out,
                                           float* __restrict__ row_den, float* __restrict__ lse,
                                           float* __restrict__ log_sum_out, int cols,
                                           long long ignore_index, float eps) {
    __shared__ float scratch[2 * MAX_WARPS];
    const long long row = blockIdx.x, base = row * cols;
    MaxSum s{neg_inf(), 0.0f};
    for (int c = threadIdx.x; c < cols; c += blockDim.x)
        s = max_sum_add(s, to_float(logits[base + c]));
    s = block_max_sum(s, scratch);
    const float log_sum = logf(s.sum);
    float acc = 0.0f;  // sum_c log_p_c q_c w_c (q = 1 for the smoothing of class indices)
    if (probs != nullptr || eps != 0.0f) {
        for (int c = threadIdx.x; c < cols; c += blockDim.x) {
            float term = (to_float(logits[base + c]) - s.max) - log_sum;
            if (probs != nullptr) term *= to_float(probs[base + c]) * (1.0f - eps) + eps / cols;
            if (weight != nullptr) term *= to_float(weight[c]);
            acc += term;
        }
        acc = block_sum(acc, scratch);
    }
    if (threadIdx.x != 0) return;
    float loss, den;
    if (probs != nullptr) {
        loss = -acc;
        den = 1.0f;
    } else {
        const long long t = target[row];
        den = target_weight(t, weight, cols, ignore_index);
        loss = 0.0f;
        // (max - x_t) + log(sum): row_lse - x_t would lose the loss to the rounding of row_lse at
        // 1e4-scale logits
        if (t != ignore_index) {
            if (t < 0 || t >= cols) {
                loss = quiet_nan();
            } else {
                loss = den * ((s.max - to_float(logits[base + t])) + log_sum);
                if (eps != 0.0f) loss = (1.0f - eps) * loss + (eps / cols) * -acc;
            }
        }
    }
    loss = to_float(from_float<T>(loss));
    if (probs != nullptr) {
        lse[row] = s.max;
        log_sum_out[row] = log_sum;
    } else {
        lse[row] = s.max + log_sum;
    }
    if (row_loss != nullptr) row_loss[row] = loss;
    if (row_den != nullptr) row_den[row] = den;
    if (row_out != nullptr) row_out[row] = from_float<T>(loss);
}

// log_probs: [rows, cols]; target: [rows] int64; weight: [cols] or null; row_loss, row_den:
// [rows] fp32 or null; row_out: [rows] T or null. loss = -x_t w_t (torch's order), 0 if ignored;
// row_den: the target weights (for the backward's mean, with row_loss null).
template <class T>
__device__ void nll_loss_forward_impl(const T* __restrict__ log_probs,
                                      const long long* __restrict__ target,
                                      const T* __restrict__ weight, float* __restrict__ row_loss,
                                      T* __restrict__ row_out, float* __restrict__ row_den,
                                      long long rows, int cols, long long ignore_index) {
    GRID_STRIDE_LOOP(row, rows) {
        const long long t = target[row];
        const float w = target_weight(t, weight, cols, ignore_index);
        float loss = 0.0f;
        // log_probs null: only the target weights are wanted (row_den), nothing is read
        if (t != ignore_index && log_probs != nullptr)
            loss = (t < 0 || t >= cols) ? quiet_nan() : -to_float(log_probs[row * cols + t]) * w;
        if (row_loss != nullptr) row_loss[row] = to_float(from_float<T>(loss));
        if (row_out != nullptr) row_out[row] = from_float<T>(loss);
        if (row_den != nullptr) row_den[row] = w;
    }
}

// Single block. values: [n] fp32 or null (sum 0); dens: [n] fp32 or null (denominator n);
// out: 0-d T (sum, or sum / denominator when mean) or null; den_out: 0-d fp32 or null.
// mean over nothing (or over zero weight) is 0 / 0 = NaN, as torch.
template <class T>
__device__ void reduce_loss_impl(const float* __restrict__ values,
                                 const float* __restrict__ dens, long long n,
                                 T* __restrict__ out, float* __restrict__ den_out, int mean) {
    __shared__ float scratch[MAX_WARPS];
    float total = 0.0f, den = 0.0f;
    for (long long i = threadIdx.x; i < n; i += blockDim.x) {
        if (values != nullptr) total += values[i];
        den += dens != nullptr ? dens[i] : 1.0f;
    }
    total = block_sum(total, scratch);
    den = block_sum(den, scratch);
    if (threadIdx.x != 0) return;
    // NaN over zero weight: torch's label-smoothing mean adds the NLL part's 0 / 0 to the
    // smoothing part's x / 0
    if (out != nullptr) out[0] = from_float<T>(mean ? (den == 0.0f ? quiet_nan() : total / den)
                                                    : total);
    if (den_out != nullptr) den_out[0] = den;
}

// grad_loss: [rows] T ("none") or 0-d T; den: 0-d fp32 (a class-index mean: the summed target
// weights) or null (probabilities: a mean divides by the rows); lse: [rows] fp32 (unread for
// NLL; the row max for probabilities, with log_sum [rows] fp32); grad_logits: [rows, cols] T
// or null; grad_target: [rows, cols] T (probabilities) or null.
// Class indices: (p - onehot) (1 - eps) w_t g + (p W - w_c) eps / C g, the two terms apart so that
// a zero-weight target under a mean over zero weight gives torch's NaN (0 * inf); NLL: -w_t g at
// the target, 0 elsewhere; probabilities: dx = (p sum(w q) - w_c q_c) g, dt = -w_c (1 - eps)
// log_p g. g is 0 on ignored rows: multiplied, as torch's log_softmax backward, so an ignored row
// of NaN (or of -inf only) gets NaN and any other ignored row 0.
template <class T>
__device__ void cross_entropy_backward_impl(const T* __restrict__ grad_loss,
                                            const T* __restrict__ logits,
                                            const long long* __restrict__ target,
                                            const T* __restrict__ probs,
                                            const T* __restrict__ weight,
                                            const float* __restrict__ lse,
                                            const float* __restrict__ log_sum,
                                            const float* __restrict__ den,
                                            T* __restrict__ grad_logits,
                                            T* __restrict__ grad_target, int cols,
                                            long long ignore_index, int reduction, float eps,
                                            int nll) {
    __shared__ float scratch[MAX_WARPS];
    const long long row = blockIdx.x, base = row * cols;
    float g = to_float(grad_loss[reduction == REDUCE_NONE ? row : 0]);
    if (reduction == REDUCE_MEAN) g /= den != nullptr ? den[0] : static_cast<float>(gridDim.x);
    const float row_lse = nll ? 0.0f : lse[row];
    if (probs != nullptr) {
        float total = 0.0f;  // sum_c w_c q_c
        if (grad_logits != nullptr) {
            for (int c = threadIdx.x; c < cols; c += blockDim.x) {
                const float q = to_float(probs[base + c]) * (1.0f - eps) + eps / cols;
                total += weight != nullptr ? q * to_float(weight[c]) : q;
            }
            total = block_sum(total, scratch);
        }
        for (int c = threadIdx.x; c < cols; c += blockDim.x) {
            const float log_p = (to_float(logits[base + c]) - row_lse) - log_sum[row];
            const float w = weight != nullptr ? to_float(weight[c]) : 1.0f;
            if (grad_logits != nullptr) {
                const float q = to_float(probs[base + c]) * (1.0f - eps) + eps / cols;
                grad_logits[base + c] = from_float<T>((expf(log_p) * total - w * q) * g);
            }
            if (grad_target != nullptr)
                grad_target[base + c] = from_float<T>(-(w * (1.0f - eps)) * log_p * g);
        }
        return;
    }
    const long long t = target[row];
    const bool hit = t != ignore_index && t >= 0 && t < cols;
    if (t == ignore_index) g = 0.0f;  // selected, not computed: mean over no rows is NaN
    const float nll_g = ((1.0f - eps) * target_weight(t, weight, cols, ignore_index)) * g;
    const float smooth_g = (eps / cols) * g;
    float w_sum = static_cast<float>(cols);
    if (eps != 0.0f && weight != nullptr) {
        w_sum = 0.0f;
        for (int c = threadIdx.x; c < cols; c += blockDim.x) w_sum += to_float(weight[c]);
        w_sum = block_sum(w_sum, scratch);
    }
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        const bool hot = hit && c == t;
        float dx;
        if (nll) {
            dx = hot ? -nll_g : 0.0f;
        } else {
            const float p = expf(to_float(logits[base + c]) - row_lse);
            dx = (p - (hot ? 1.0f : 0.0f)) * nll_g;
            if (eps != 0.0f)
                dx += (p * w_sum - (weight != nullptr ? to_float(weight[c]) : 1.0f)) * smooth_g;
        }
        grad_logits[base + c] = from_float<T>(dx);
    }
}

enum PointwiseLoss : int { LOSS_BCE_WITH_LOGITS = 0, LOSS_MSE = 1, LOSS_BCE = 2 };

__device__ __forceinline__ float clamped_log(float v) {
    return v < BCE_LOG_FLOOR ? BCE_LOG_FLOOR : v;  // NaN stays NaN
}

__device__ __forceinline__ bool in_unit(float v) { return v >= 0.0f && v <= 1.0f; }

__device__ __forceinline__ float log_sigmoid(float v) {
    return fminf(v, 0.0f) - log1pf(expf(-fabsf(v)));
}

// x, target: [n]; weight, pos_weight: [n] (broadcast by the launcher) or null; values: [n] fp32
// (for a reduction) or null; out: [n] T ("none") or null
template <class T>
__device__ void pointwise_loss_forward_impl(const T* __restrict__ x, const T* __restrict__ target,
                                            const T* __restrict__ weight,
                                            const T* __restrict__ pos_weight,
                                            float* __restrict__ values, T* __restrict__ out,
                                            long long n, int kind) {
    GRID_STRIDE_LOOP(i, n) {
        const float v = to_float(x[i]), t = to_float(target[i]);
        float loss;
        if (kind == LOSS_BCE_WITH_LOGITS) {
            // torch's (1 - t) x - log_sigmoid(x) term for term (inf and NaN land where torch's
            // do), log1p added last (tiny losses keep their precision); no overflow for any |x|;
            // with pos_weight torch's (1 - t) x - ((pw - 1) t + 1) log_sigmoid(x) exactly
            if (pos_weight != nullptr) {
                const float l = (to_float(pos_weight[i]) - 1.0f) * t + 1.0f;
                loss = (1.0f - t) * v - l * log_sigmoid(v);
            } else {
                loss = ((1.0f - t) * v - fminf(v, 0.0f)) + log1pf(expf(-fabsf(v)));
            }
        } else if (kind == LOSS_MSE) {
            loss = (v - t) * (v - t);
        } else {  // torch's formula; NaN outside [0, 1] (torch raises there in eager)
            loss = (t - 1.0f) * clamped_log(log1pf(-v)) - t * clamped_log(logf(v));
            if (!(in_unit(v) && in_unit(t))) loss = quiet_nan();
        }
        if (weight != nullptr) loss *= to_float(weight[i]);
        const T rounded = from_float<T>(loss);
        if (values != nullptr) values[i] = to_float(rounded);
        if (out != nullptr) out[i] = rounded;
    }
}

// grad_loss: [n] T ("none") or 0-d T; weight, pos_weight: [n] or null; grad_x, grad_target: [n]
// T or null (not needed). bce-with-logits: grad_x = ((pw t + 1 - t) sigmoid(x) - pw t) g,
// grad_target = (log_sigmoid(-x) - pw log_sigmoid(x)) g (pw = 1: sigmoid(x) - t and -x g);
// mse: grad_x = 2 (x - t) g = -grad_target; bce: grad_x = (x - t) / max((1 - x) x, 1e-12) g,
// grad_target = -log(x / (1 - x)) g. g includes the weight.
template <class T>
__device__ void pointwise_loss_backward_impl(const T* __restrict__ grad_loss,
                                             const T* __restrict__ x,
                                             const T* __restrict__ target,
                                             const T* __restrict__ weight,
                                             const T* __restrict__ pos_weight,
                                             T* __restrict__ grad_x, T* __restrict__ grad_target,
                                             long long n, int kind, int reduction, float count) {
    GRID_STRIDE_LOOP(i, n) {
        float g = to_float(grad_loss[reduction == REDUCE_NONE ? i : 0]);
        if (reduction == REDUCE_MEAN) g /= count;
        if (weight != nullptr) g *= to_float(weight[i]);
        const float v = to_float(x[i]), t = to_float(target[i]);
        float dx, dt;
        if (kind == LOSS_BCE_WITH_LOGITS) {
            if (pos_weight != nullptr) {
                const float pt = to_float(pos_weight[i]);
                dx = ((pt * t + 1.0f - t) * sigmoid_f(v) - pt * t) * g;
                dt = (log_sigmoid(-v) - pt * log_sigmoid(v)) * g;
            } else {
                dx = (sigmoid_f(v) - t) * g;
                dt = -v * g;
            }
        } else if (kind == LOSS_MSE) {
            dx = 2.0f * (v - t) * g;
            dt = -dx;
        } else {
            const float den = (1.0f - v) * v;
            dx = (v - t) / (den < BCE_EPSILON ? BCE_EPSILON : den) * g;
            dt = -logf(v / (1.0f - v)) * g;
            if (!(in_unit(v) && in_unit(t))) dx = dt = quiet_nan();
        }
        if (grad_x != nullptr) grad_x[i] = from_float<T>(dx);
        if (grad_target != nullptr) grad_target[i] = from_float<T>(dt);
    }
}

#define DEFINE_LOSS_KERNELS(T, S)                                                              \
    extern "C" __global__ void __launch_bounds__(1024) cross_entropy_forward_##S(              \
        const T* logits, const long long* target, const T* probs, const T* weight,             \
        float* row_loss, T* row_out, float* row_den, float* lse, float* log_sum, int cols,     \
        long long ignore_index, float eps) {                                                   \
        cross_entropy_forward_impl<T>(logits, target, probs, weight, row_loss, row_out,        \
                                      row_den, lse, log_sum, cols, ignore_index, eps);         \
    }                                                                                          \
    extern "C" __global__ void nll_loss_forward_##S(                                           \
        const T* log_probs, const long long* target, const T* weight, float* row_loss,         \
        T* row_out, float* row_den, long long rows, int cols, long long ignore_index) {        \
        nll_loss_forward_impl<T>(log_probs, target, weight, row_loss, row_out, row_den, rows,  \
                                 cols, ignore_index);                                          \
    }                                                                                          \
    extern "C" __global__ void __launch_bounds__(1024) reduce_loss_##S(                        \
        const float* values, const float* dens, long long n, T* out, float* den_out,           \
        int mean) {                                                                            \
        reduce_loss_impl<T>(values, dens, n, out, den_out, mean);                              \
    }                                                                                          \
    extern "C" __global__ void __launch_bounds__(1024) cross_entropy_backward_##S(             \
        const T* grad_loss, const T* logits, const long long* target, const T* probs,          \
        const T* weight, const float* lse, const float* log_sum, const float* den,             \
        T* grad_logits, T* grad_target, int cols, long long ignore_index, int reduction,       \
        float eps, int nll) {                                                                  \
        cross_entropy_backward_impl<T>(grad_loss, logits, target, probs, weight, lse, log_sum, \
                                       den,                                                    \
                                       grad_logits, grad_target, cols, ignore_index,           \
                                       reduction, eps, nll);                                   \
    }                                                                                          \
    extern "C" __global__ void pointwise_loss_forward_##S(                                     \
        const T* x, const T* target, const T* weight, const T* pos_weight, float* values,      \
        T* out, long long n, int kind) {                                                       \
        pointwise_loss_forward_impl<T>(x, target, weight, pos_weight, values, out, n, kind);   \
    }                                                                                          \
    extern "C" __global__ void pointwise_loss_backward_##S(                                    \
        const T* grad_loss, const T* x, const T* target, const T* weight,                      \
        const T* pos_weight, T* grad_x, T* grad_target, long long n, int kind, int reduction,  \
        float count) {                                                                         \
        pointwise_loss_backward_impl<T>(grad_loss, x, target, weight, pos_weight, grad_x,      \
                                        grad_target, n, kind, reduction, count);               \
    }
FOR_EACH_STORAGE_TYPE(DEFINE_LOSS_KERNELS)

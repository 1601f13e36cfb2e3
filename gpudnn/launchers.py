"""The launcher contract: every backend exposes these functions, with these signatures.

A backend is a package with one module per op family (``dense.py``, ``conv.py``, ...):
``gpudnn.reference`` (NumPy), ``gpudnn.kernels.triton`` and ``gpudnn.kernels.cupy``. Each op
module of ``gpudnn.ops`` imports its family's modules and lists their launchers in one
``gpudnn.backend.Kernels``; its custom op takes the backend name as an argument (resolved once by
the public function) and its autograd formula passes the same name to the backward op, so a
``saved`` value only ever meets its own backend. Triton and CuPy launchers take and return torch
tensors; reference launchers take and return NumPy arrays (``backend.reference_launcher``
converts at the boundary, and copies in-place updates back). Shapes below; ``act`` is ``kernels.activations.Activation`` or ``None`` (identity).
``needs`` is a tuple of bools (like ``ctx.needs_input_grad``); a gradient not needed is ``None``.

activations
    activation_forward(x, act) -> y                       any shape, any strides
    activation_backward(grad_y, saved, act) -> grad_x     saved = y if act.from_output else x
dense
    dense_forward(x, weight, bias, act) -> (y, saved)
        x [M, K], weight [N, K], bias [N] | None -> y [M, N];
        saved = None if act is None, y if act.from_output, else the pre-activation z [M, N]
    dense_backward(grad_y, x, weight, saved, act, needs) -> (grad_x, grad_weight, grad_bias)
softmax
    softmax_forward(x, dim, log) -> y                     any shape; log=True is log_softmax
    softmax_backward(grad_y, y, dim, log) -> grad_x
losses
    cross_entropy_forward(logits, target, ignore_index, reduction) -> (loss, lse)
        logits [N, C], target [N] int64; loss 0-d ("mean", "sum") or [N] ("none");
        lse [N] float32 (log-sum-exp of each row; probabilities are never written)
        "mean" divides by the number of non-ignored rows (NaN when all are ignored, as torch)
    cross_entropy_backward(grad_loss, logits, target, lse, ignore_index, reduction) -> grad_logits
    bce_with_logits_forward(x, target, reduction) -> loss      x, target same shape
    bce_with_logits_backward(grad_loss, x, target, reduction, needs) -> (grad_x, grad_target)
    mse_loss_forward(x, target, reduction) -> loss
    mse_loss_backward(grad_loss, x, target, reduction, needs) -> (grad_x, grad_target)
dropout
    dropout_forward(x, p, seed, offset) -> y       seed: an int or a 0-d int64 tensor
    dropout_backward(grad_y, p, seed, offset) -> grad_x
        Element i (row-major logical index) is kept iff u_i >= float32(p), where
        u_i = tl.rand(seed, offset + i) (Philox4x32-10); kept elements are scaled by
        float32(1 / (1 - p)). 0 < p < 1 here (the Function handles p == 0 and p == 1).
    feature_dropout_forward(x, p, seed, offset) -> y     x [N, C, *] (dropout1d / dropout2d)
    feature_dropout_backward(grad_y, p, seed, offset) -> grad_x
        One draw per (sample, channel): u_{n*C+c} decides every element of channel (n, c).
batchnorm
    batch_norm_forward(x, weight, bias, running_mean, running_var, training, momentum, eps, act)
        -> (y, mean, invstd)
        x [N, C, *] (NCHW or channels_last), weight/bias/running_* [C] | None;
        training: batch statistics, running_* updated in place with the unbiased variance;
        eval: running statistics. mean, invstd [C] float32 are what backward needs.
    batch_norm_backward(grad_y, x, weight, bias, mean, invstd, act, training, needs)
        -> (grad_x, grad_weight, grad_bias)       the pre-activation is recomputed from x
norm
    layer_norm_forward(x, normalized_shape, weight, bias, eps, act) -> (y, mean, rstd)
        x [*, *normalized_shape], weight/bias shaped normalized_shape | None; mean, rstd [M]
        (M = the product of the leading dims), at least float32
    layer_norm_backward(grad_y, x, normalized_shape, weight, bias, mean, rstd, act, needs)
        -> (grad_x, grad_weight, grad_bias)
    group_norm_forward(x, num_groups, weight, bias, eps, act) -> (y, mean, rstd)
        x [N, C, *] (any layout), weight/bias [C] | None; mean, rstd [N, num_groups]
    group_norm_backward(grad_y, x, num_groups, weight, bias, mean, rstd, act, needs)
        -> (grad_x, grad_weight, grad_bias)       the pre-activation is recomputed from x
conv
    conv2d_forward(x, weight, bias, stride, padding, dilation, groups, act) -> (y, saved)
        x [N, Cin, H, W] (NCHW or channels_last), weight [Cout, Cin/groups, kh, kw];
        stride (sh, sw), padding (top, bottom, left, right), dilation (dh, dw);
        y in the memory format torch would return
    conv2d_backward(grad_y, x, weight, saved, stride, padding, dilation, groups, act, needs)
        -> (grad_x, grad_weight, grad_bias)
    conv_transpose2d_forward(x, weight, bias, stride, padding, output_padding, groups, dilation,
                             act) -> (y, saved)
        weight [Cin, Cout/groups, kh, kw]; padding (ph, pw); output_padding (oh, ow)
    conv_transpose2d_backward(grad_y, x, weight, saved, stride, padding, output_padding, groups,
                              dilation, act, needs) -> (grad_x, grad_weight, grad_bias)
pool
    max_pool2d_forward(x, kernel_size, stride, padding, dilation, ceil_mode, return_indices)
        -> (y, saved)
        saved: whatever the same backend's backward needs (indices); opaque to the op, except
        that with return_indices it is torch's int64 indices (h * W + w in each plane)
    max_pool2d_backward(grad_y, x_shape, saved, kernel_size, stride, padding, dilation, ceil_mode)
        -> grad_x
    avg_pool2d_forward(x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                       divisor_override) -> y
    avg_pool2d_backward(grad_y, x_shape, kernel_size, stride, padding, ceil_mode,
                        count_include_pad, divisor_override) -> grad_x
    adaptive_avg_pool2d_forward(x, output_size) -> y     output_size (Ho, Wo)
    adaptive_avg_pool2d_backward(grad_y, x_shape) -> grad_x
        all pairs are (h, w) tuples; grad_x takes grad_y's memory format
embedding
    embedding_forward(weight, ids) -> y              weight [V, D], ids [N] int32/int64 -> [N, D];
        an id outside [0, V) gives a NaN row
    embedding_backward(grad_y, ids, num_weights, padding_idx, scale_grad_by_freq) -> grad_weight
        [V, D]; padding_idx -1 for none; ids out of range contribute nothing
lstm
    lstm_cell_forward / lstm_cell_backward / lstm_layer_forward / lstm_layer_backward
        (signatures in gpudnn/reference/lstm.py, the same in every backend)
gru
    gru_cell_forward / gru_cell_backward / gru_layer_forward / gru_layer_backward
        (signatures in gpudnn/reference/gru.py; reference and Triton only)
optim
    sgd_step / adam_step  (in place on lists of tensors; signatures in gpudnn/reference/optim.py)
quant (weight-only quantized inference; forward only)
    quant_dense_forward(x, weight, scale, bias, act) -> y
        x [M, K] float, weight [N, K] int8 or uint8 (float8 e4m3fn bit patterns), scale float32
        [N] | [1]; y = act((x @ weight^T) * scale + bias) [M, N] in x's dtype
    quant_conv2d_forward(x, weight, scale, bias, stride, padding, dilation, groups, act) -> y
        conv2d_forward's arguments with a quantized weight [Cout, Cin/groups, kh, kw] and its
        scale [Cout] | [1]; y = act(conv2d(x, weight) * scale + bias) in torch's memory format
"""

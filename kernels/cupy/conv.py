"""CuPy launchers of conv2d and conv_transpose2d (``conv.cu``).

Design: **im2col + cuBLAS GEMM with our own kernels around it** (not implicit GEMM). The GEMMs are
batched over the groups and run through ``torch.matmul`` on the same stream (cuBLAS; it handles
bfloat16 and honours a tf32 switch, neither of which ``cupy.matmul`` does -- the matmul switch
``torch.backends.cuda.matmul.allow_tf32``, not cuDNN's, so fp32 convs here default to full fp32).
Everything else is ours, in ``conv.cu``:

* ``im2col``: any-strided input -> columns ``[G, Kg, N*L]``;
* ``bias_activation``: the GEMM output ``[C, N, L]`` -> y in torch's memory format (NCHW or
  NHWC) with the bias and the fused activation, writing the pre-activation only when the
  activation's derivative needs it;
* ``col2im``: the adjoint of im2col as a gather (deterministic) with the same fused epilogue;
* ``activation_grad_canonical``: grad_y * f'(saved) -> ``[C, N, L]``; ``channel_sum``: the bias
  gradient (fixed-order block sums, deterministic).

Three compositions cover all four launchers, so no path exists twice:

* ``_conv`` / ``_gemm``: im2col, GEMM (forward of conv2d, input gradient of conv_transpose2d);
* ``_data_grad``: GEMM with the transposed weight, col2im (input gradient of conv2d, forward of
  conv_transpose2d: a transposed convolution *is* the data gradient of a convolution);
* ``_weight_grad``: GEMM of a canonical gradient with the columns of the other operand.
"""
from __future__ import annotations

import torch

from .. import alloc
from ..activations import Activation, code_of, param_of
from ._runtime import blocks_for, f32, i32, i64, launch, require_cuda, same_dtype, suffix, \
    THREADS

Pair = tuple[int, int]


# --- argument checks (no GPU needed) --------------------------------------------------------------

def _pair(op: str, name: str, value, minimum: int) -> Pair:
    if not (isinstance(value, (tuple, list)) and len(value) == 2
            and all(isinstance(v, int) and v >= minimum for v in value)):
        raise ValueError(f"{op}: {name} must be a pair of ints >= {minimum}, got {value!r}")
    return int(value[0]), int(value[1])


def _check_tensors(op: str, x, weight, bias, groups) -> str:
    s = suffix(op, "x", x)
    suffix(op, "weight", weight)
    if bias is not None:
        suffix(op, "bias", bias)
    same_dtype(op, x=x, weight=weight, bias=bias)
    if x.dim() != 4 or weight.dim() != 4:
        raise ValueError(f"{op}: x must be [N, C, H, W] and weight 4-D, got x {tuple(x.shape)} "
                         f"and weight {tuple(weight.shape)}")
    if not isinstance(groups, int) or groups < 1:
        raise ValueError(f"{op}: groups must be a positive int, got {groups!r}")
    return s


def _is_channels_last(t: torch.Tensor) -> bool:
    return t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) \
        and not t.is_contiguous()


def _output_channels_last(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """torch's rule: a convolution computes (and returns) channels_last when either operand is."""
    return _is_channels_last(x) or _is_channels_last(weight)


def _out_size(op: str, size: int, kernel: int, stride: int, before: int, after: int,
              dilation: int) -> int:
    out = (size + before + after - dilation * (kernel - 1) - 1) // stride + 1
    if out <= 0:
        raise ValueError(f"{op}: the output would be empty along a spatial axis (input {size}, "
                         f"kernel {kernel}, stride {stride}, padding {before}+{after}, "
                         f"dilation {dilation})")
    return out


# --- the three compositions -----------------------------------------------------------------------

def _geometry(weight_hw: Pair, stride: Pair, pad_top_left: Pair, dilation: Pair) -> tuple:
    return (i32(weight_hw[0]), i32(weight_hw[1]), i32(stride[0]), i32(stride[1]),
            i32(pad_top_left[0]), i32(pad_top_left[1]), i32(dilation[0]), i32(dilation[1]))


def _columns(s: str, x: torch.Tensor, weight_hw: Pair, stride: Pair, pad_top_left: Pair,
             dilation: Pair, out_hw: Pair) -> torch.Tensor:
    """im2col of x [N, C, H, W] (any strides) -> [C*kh*kw, N*Ho*Wo]."""
    n, c, h, w = x.shape
    rows = c * weight_hw[0] * weight_hw[1]
    cols = alloc.empty((rows, n * out_hw[0] * out_hw[1]), dtype=x.dtype, device=x.device)
    if cols.numel():
        launch("conv", f"im2col_{s}", x.device, (blocks_for(cols.numel()),), (THREADS,),
               (x, cols, i32(n), i32(c), i32(h), i32(w), *(i64(v) for v in x.stride()),
                *_geometry(weight_hw, stride, pad_top_left, dilation), i32(out_hw[0]),
                i32(out_hw[1])))
    return cols


def _grouped(t: torch.Tensor, groups: int) -> torch.Tensor:
    """[G*R, M] -> [G, R, M] (a view)."""
    return t.view(groups, t.shape[0] // groups, t.shape[1])


def _weight_matrix(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """[A, B, kh, kw] -> [G, A/G, B*kh*kw]: the GEMM operand of a conv whose weight is ``weight``
    (conv2d: A = Cout; conv_transpose2d: A = Cin, read as the weight of the adjoint conv)."""
    return weight.reshape(groups, weight.shape[0] // groups, -1)


def _gemm(weight: torch.Tensor, cols: torch.Tensor, groups: int) -> torch.Tensor:
    """The conv GEMM on precomputed columns: -> canonical z [weight.shape[0], M]."""
    z = alloc.empty((weight.shape[0], cols.shape[1]), dtype=cols.dtype, device=cols.device)
    torch.matmul(_weight_matrix(weight, groups), _grouped(cols, groups), out=_grouped(z, groups))
    return z


def _conv(s: str, x: torch.Tensor, weight: torch.Tensor, stride: Pair, pad_top_left: Pair,
          dilation: Pair, groups: int, out_hw: Pair) -> torch.Tensor:
    """z = conv(x, weight), no bias: x [N, C, H, W] any strides -> z [Cout, N*Ho*Wo] canonical."""
    return _gemm(weight, _columns(s, x, weight.shape[2:], stride, pad_top_left, dilation, out_hw),
                 groups)


def _saved_like(y: torch.Tensor, act: Activation | None) -> torch.Tensor | None:
    """The pre-activation buffer the epilogue fills, when the derivative needs it."""
    return alloc.empty_like(y) if act is not None and not act.from_output else None


def _saved(y, z_saved, act):
    return None if act is None else y if act.from_output else z_saved


def _empty_output(n: int, c: int, hw: Pair, like: torch.Tensor,
                  channels_last: bool) -> torch.Tensor:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return alloc.empty((n, c, *hw), dtype=like.dtype, device=like.device, memory_format=fmt)


def _finish(s: str, z: torch.Tensor, bias, act: Activation | None, n: int, out_hw: Pair,
            channels_last: bool):
    """Canonical z [C, N*L] -> (y [N, C, Ho, Wo] in torch's format, saved) with bias + act."""
    c = z.shape[0]
    y = _empty_output(n, c, out_hw, z, channels_last)
    z_saved = _saved_like(y, act)
    if y.numel():
        launch("conv", f"bias_activation_{s}", z.device, (blocks_for(y.numel()),), (THREADS,),
               (z, bias.contiguous() if bias is not None else None, y, z_saved, i32(n), i32(c),
                i64(out_hw[0] * out_hw[1]), i32(channels_last), i32(code_of(act)),
                f32(param_of(act))))
    return y, _saved(y, z_saved, act)


def _data_grad(s: str, dz: torch.Tensor, weight: torch.Tensor, n: int, channels: int,
               in_hw: Pair, stride: Pair, pad_top_left: Pair, dilation: Pair, groups: int,
               out_hw: Pair, bias, act: Activation | None, channels_last: bool):
    """The adjoint of ``_conv``: canonical dz [Cout, N*Ho*Wo] -> (y [N, C, H, W], saved) with
    y = act(conv^T(dz) + bias) (bias None, act None: the plain input gradient)."""
    dcols = alloc.empty((channels * weight.shape[2] * weight.shape[3], dz.shape[1]),
                        dtype=dz.dtype, device=dz.device)
    torch.matmul(_weight_matrix(weight, groups).transpose(1, 2), _grouped(dz, groups),
                 out=_grouped(dcols, groups))
    y = _empty_output(n, channels, in_hw, dz, channels_last)
    z_saved = _saved_like(y, act)
    if y.numel():
        launch("conv", f"col2im_{s}", dz.device, (blocks_for(y.numel()),), (THREADS,),
               (dcols, bias.contiguous() if bias is not None else None, y, z_saved, i32(n),
                i32(channels), i32(in_hw[0]), i32(in_hw[1]),
                *_geometry(weight.shape[2:], stride, pad_top_left, dilation), i32(out_hw[0]),
                i32(out_hw[1]), i32(channels_last), i32(code_of(act)), f32(param_of(act))))
    return y, _saved(y, z_saved, act)


def _canonical(s: str, grad_y: torch.Tensor, saved: torch.Tensor | None,
               act: Activation | None) -> torch.Tensor:
    """grad_y [N, C, H, W] (any strides) * f'(saved) -> [C, N*H*W] canonical."""
    n, c, h, w = grad_y.shape
    out = alloc.empty((c, n * h * w), dtype=grad_y.dtype, device=grad_y.device)
    if out.numel():
        use = saved if act is not None else None
        launch("conv", f"activation_grad_canonical_{s}", grad_y.device,
               (blocks_for(out.numel()),), (THREADS,),
               (grad_y, use, out, i32(n), i32(c), i32(h), i32(w),
                *(i64(v) for v in grad_y.stride()),
                *(i64(v) for v in (use.stride() if use is not None else (0, 0, 0, 0))),
                i32(code_of(act)), f32(param_of(act))))
    return out


def _bias_grad(s: str, dz: torch.Tensor) -> torch.Tensor:
    grad = alloc.empty((dz.shape[0],), dtype=dz.dtype, device=dz.device)
    if dz.shape[1] == 0:
        return grad.zero_()
    if grad.numel():
        launch("conv", f"channel_sum_{s}", dz.device, (dz.shape[0],), (THREADS,),
               (dz, grad, i64(dz.shape[1])))
    return grad


def _weight_grad(dz: torch.Tensor, cols: torch.Tensor, groups: int, weight: torch.Tensor):
    """Canonical dz [A, M] and columns [B*kh*kw, M] -> grad in weight's shape [A, B/G, kh, kw]
    and memory format."""
    grad = torch.matmul(_grouped(dz, groups), _grouped(cols, groups).transpose(1, 2))
    grad = grad.view(weight.shape)
    return grad.contiguous(memory_format=torch.channels_last) if _is_channels_last(weight) \
        else grad


def _check_activation_saved(op: str, grad_y, saved, act) -> None:
    if act is not None and (saved is None or saved.shape != grad_y.shape):
        raise ValueError(f"{op}: an activation needs the saved tensor of grad_y's shape "
                         f"{tuple(grad_y.shape)}")


# --- conv2d ---------------------------------------------------------------------------------------

def _conv2d_shapes(op, x, weight, bias, stride, padding, dilation, groups):
    s = _check_tensors(op, x, weight, bias, groups)
    stride = _pair(op, "stride", stride, 1)
    dilation = _pair(op, "dilation", dilation, 1)
    if not (isinstance(padding, (tuple, list)) and len(padding) == 4
            and all(isinstance(v, int) and v >= 0 for v in padding)):
        raise ValueError(f"{op}: padding must be (top, bottom, left, right) ints >= 0, got "
                         f"{padding!r}")
    cout, cg, kh, kw = weight.shape
    if x.shape[1] != cg * groups or cout % groups:
        raise ValueError(f"{op}: x {tuple(x.shape)} and weight {tuple(weight.shape)} do not "
                         f"match groups={groups} (need Cin = groups * weight.shape[1] and "
                         f"Cout divisible by groups)")
    if bias is not None and tuple(bias.shape) != (cout,):
        raise ValueError(f"{op}: bias must be [{cout}], got {tuple(bias.shape)}")
    top, bottom, left, right = padding
    out_hw = (_out_size(op, x.shape[2], kh, stride[0], top, bottom, dilation[0]),
              _out_size(op, x.shape[3], kw, stride[1], left, right, dilation[1]))
    return s, stride, (top, left), dilation, out_hw


def conv2d_forward(x, weight, bias, stride, padding, dilation, groups, act):
    s, stride, top_left, dilation, out_hw = _conv2d_shapes(
        "conv2d_forward", x, weight, bias, stride, padding, dilation, groups)
    require_cuda("conv2d_forward", x=x, weight=weight, bias=bias)
    z = _conv(s, x, weight, stride, top_left, dilation, groups, out_hw)
    return _finish(s, z, bias, act, x.shape[0], out_hw, _output_channels_last(x, weight))


def _backward_prologue(op, s, grad_y, expected, x, weight, saved, act, needs):
    """The checks and first steps shared by the conv backward launchers: grad_y must be
    ``expected``; returns (dz, grad_bias, need_x, need_w) with dz the canonical [Cout, N*H*W]
    pre-activation gradient and grad_bias None unless needs[2]."""
    if tuple(grad_y.shape) != expected:
        raise ValueError(f"{op}: grad_y must be {list(expected)}, got {tuple(grad_y.shape)}")
    _check_activation_saved(op, grad_y, saved, act)
    same_dtype(op, grad_y=grad_y, x=x, saved=saved)
    need_x, need_w, need_b = (tuple(needs) + (False, False, False))[:3]
    require_cuda(op, grad_y=grad_y, x=x, weight=weight, saved=saved)
    dz = _canonical(s, grad_y, saved, act)
    return dz, _bias_grad(s, dz) if need_b else None, need_x, need_w


def conv2d_backward(grad_y, x, weight, saved, stride, padding, dilation, groups, act, needs):
    op = "conv2d_backward"
    s, stride, top_left, dilation, out_hw = _conv2d_shapes(
        op, x, weight, None, stride, padding, dilation, groups)
    dz, grad_bias, need_x, need_w = _backward_prologue(
        op, s, grad_y, (x.shape[0], weight.shape[0], *out_hw), x, weight, saved, act, needs)
    grad_weight = None
    if need_w:
        cols = _columns(s, x, weight.shape[2:], stride, top_left, dilation, out_hw)
        grad_weight = _weight_grad(dz, cols, groups, weight)
    grad_x = None
    if need_x:
        grad_x, _ = _data_grad(s, dz, weight, x.shape[0], x.shape[1], x.shape[2:], stride,
                               top_left, dilation, groups, out_hw, None, None,
                               _output_channels_last(x, weight))
    return grad_x, grad_weight, grad_bias


# --- conv_transpose2d -----------------------------------------------------------------------------

def _transpose_shapes(op, x, weight, bias, stride, padding, output_padding, groups, dilation):
    s = _check_tensors(op, x, weight, bias, groups)
    stride = _pair(op, "stride", stride, 1)
    dilation = _pair(op, "dilation", dilation, 1)
    padding = _pair(op, "padding", padding, 0)
    output_padding = _pair(op, "output_padding", output_padding, 0)
    cin, cout_g, kh, kw = weight.shape
    if x.shape[1] != cin or cin % groups:
        raise ValueError(f"{op}: x {tuple(x.shape)} and weight {tuple(weight.shape)} do not "
                         f"match groups={groups} (need Cin = weight.shape[0], divisible by groups)")
    if bias is not None and tuple(bias.shape) != (cout_g * groups,):
        raise ValueError(f"{op}: bias must be [{cout_g * groups}], got {tuple(bias.shape)}")
    for a in range(2):
        if output_padding[a] >= max(stride[a], dilation[a]):
            raise ValueError(f"{op}: output_padding {output_padding} must be smaller than "
                             f"stride or dilation")
    out_hw = tuple((x.shape[2 + a] - 1) * stride[a] - 2 * padding[a]
                   + dilation[a] * ((kh, kw)[a] - 1) + output_padding[a] + 1 for a in range(2))
    if min(out_hw) <= 0:
        raise ValueError(f"{op}: the output size {out_hw} is not positive")
    return s, stride, padding, dilation, out_hw


def conv_transpose2d_forward(x, weight, bias, stride, padding, output_padding, groups, dilation,
                             act):
    op = "conv_transpose2d_forward"
    s, stride, padding, dilation, out_hw = _transpose_shapes(
        op, x, weight, bias, stride, padding, output_padding, groups, dilation)
    require_cuda(op, x=x, weight=weight, bias=bias)
    # x plays the adjoint conv's output gradient: [Cin, N*H*W] canonical
    xz = _canonical(s, x, None, None)
    return _data_grad(s, xz, weight, x.shape[0], weight.shape[1] * groups, out_hw, stride,
                      padding, dilation, groups, tuple(x.shape[2:]), bias, act,
                      _output_channels_last(x, weight))


def conv_transpose2d_backward(grad_y, x, weight, saved, stride, padding, output_padding, groups,
                              dilation, act, needs):
    op = "conv_transpose2d_backward"
    s, stride, padding, dilation, out_hw = _transpose_shapes(
        op, x, weight, None, stride, padding, output_padding, groups, dilation)
    dz, grad_bias, need_x, need_w = _backward_prologue(  # dz: [Cout, N*Hout*Wout]
        op, s, grad_y, (x.shape[0], weight.shape[1] * groups, *out_hw), x, weight, saved, act,
        needs)
    n, cout = x.shape[0], dz.shape[0]
    # dz as an [N, Cout, Hout, Wout] view of the canonical buffer: im2col reads any strides
    dz_nchw = dz.view(cout, n, *out_hw).permute(1, 0, 2, 3)
    in_hw = tuple(x.shape[2:])
    grad_x = grad_weight = None
    if need_x or need_w:  # the columns of dz, shared by both gradients
        cols = _columns(s, dz_nchw, weight.shape[2:], stride, padding, dilation, in_hw)
        if need_x:  # the input gradient of a transposed conv is the conv of dz
            grad_x, _ = _finish(s, _gemm(weight, cols, groups), None, None, n, in_hw,
                                _output_channels_last(x, weight))
        if need_w:
            grad_weight = _weight_grad(_canonical(s, x, None, None), cols, groups, weight)
    return grad_x, grad_weight, grad_bias

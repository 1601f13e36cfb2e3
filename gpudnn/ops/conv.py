"""2-D convolution and transposed convolution: the ops ``gpudnn::conv2d`` /
``gpudnn::conv_transpose2d`` (and their backward ops) and the public functions.

``conv2d`` / ``conv_transpose2d`` take torch.nn.functional's arguments plus ``activation=``
(fused with the bias into the kernel's epilogue). Argument checks raise torch's errors; the
launchers then see normalized arguments only: 4-D NCHW or channels_last tensors, (h, w) pairs and
the convolution's padding as (top, bottom, left, right), so that ``padding="same"`` with an even
kernel pads asymmetrically exactly as torch does.
"""
from typing import Any, Optional

import torch
from torch import Tensor
from torch._prims_common import suggest_memory_format

from ..activations import activation_args, activation_of, parse_activation
from ..backend import Kernels, reference_launcher, resolve
from ..kernels.cupy import conv as cupy
from ..kernels.triton import conv as triton
from ..reference import conv as reference
from ._common import autocast_to_lower, check_same, check_tensor, pair
from ._library import absent, define, like_layout
from ._shapes import conv_output_size, conv_transpose2d_output_size

__all__ = ["conv2d", "conv_transpose2d"]

CONV2D = Kernels(
    "conv2d",
    reference=(reference_launcher(reference.conv2d_forward),
               reference_launcher(reference.conv2d_backward)),
    triton=(triton.conv2d_forward, triton.conv2d_backward),
    cupy=(cupy.conv2d_forward, cupy.conv2d_backward))
CONV_TRANSPOSE2D = Kernels(
    "conv_transpose2d",
    reference=(reference_launcher(reference.conv_transpose2d_forward),
               reference_launcher(reference.conv_transpose2d_backward)),
    triton=(triton.conv_transpose2d_forward, triton.conv_transpose2d_backward),
    cupy=(cupy.conv_transpose2d_forward, cupy.conv_transpose2d_backward))


def launcher_layout(t: torch.Tensor | None) -> torch.Tensor | None:
    """``t`` dense in the memory format torch suggests for it (NCHW or channels_last): the only
    two layouts the launchers accept (a no-op when it already is)."""
    if t is None or t.dim() != 4:
        return t
    return t.contiguous(memory_format=suggest_memory_format(t))


def output_format(*tensors: torch.Tensor) -> torch.memory_format:
    """channels_last when any operand suggests it (torch's rule for conv outputs)."""
    return torch.channels_last if any(
        suggest_memory_format(t) == torch.channels_last for t in tensors) else \
        torch.contiguous_format


def positive_pair(value: Any, name: str) -> tuple[int, int]:
    result = pair(value, name)
    if min(result) <= 0:
        raise RuntimeError(f"non-positive {name} is not supported (got {name}={value!r})")
    return result


def nonnegative_pair(value: Any, name: str) -> tuple[int, int]:
    result = pair(value, name)
    if min(result) < 0:
        raise RuntimeError(f"negative {name} is not supported (got {name}={value!r})")
    return result


def _check_groups(groups: Any) -> int:
    if not isinstance(groups, int) or isinstance(groups, bool) or groups <= 0:
        raise RuntimeError(f"non-positive groups is not supported (got groups={groups!r})")
    return groups


def _conv_padding(padding: Any, kernel: tuple[int, int], stride: tuple[int, int],
                  dilation: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) for an int, a pair, "valid" or "same" (torch's split: the
    extra row / column of an even kernel goes to the bottom / right)."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding == "same":
            if stride != (1, 1):
                raise ValueError("padding='same' is not supported for strided convolutions "
                                 f"(got stride={stride})")
            total = [dilation[a] * (kernel[a] - 1) for a in range(2)]
            return (total[0] // 2, total[0] - total[0] // 2, total[1] // 2,
                    total[1] - total[1] // 2)
        raise ValueError(f"Invalid padding string {padding!r}, should be one of "
                         "{'valid', 'same'}")
    ph, pw = nonnegative_pair(padding, "padding")
    return (ph, ph, pw, pw)


def _output_shape(kernels: Kernels, x: Tensor, weight: Tensor, params: tuple) -> tuple:
    """[N, Cout, Ho, Wo] of a conv2d (params: stride, padding4, dilation, groups) or a
    conv_transpose2d (params: stride, padding, output_padding, groups, dilation)."""
    kernel = weight.shape[2:]
    if kernels is CONV2D:
        stride, pad4, dilation, _ = params
        out_hw = [conv_output_size(x.shape[2 + a], kernel[a], stride[a], pad4[2 * a],
                                   pad4[2 * a + 1], dilation[a]) for a in range(2)]
        return (x.shape[0], weight.shape[0], *out_hw)
    stride, padding, output_padding, groups, dilation = params
    out_hw = [conv_transpose2d_output_size(x.shape[2 + a], kernel[a], stride[a], padding[a],
                                           output_padding[a], dilation[a]) for a in range(2)]
    return (x.shape[0], weight.shape[1] * groups, *out_hw)


def _saves_z(act: str, act_param: float) -> bool:
    activation = activation_of(act, act_param)
    return activation is not None and not activation.from_output


def _conv_forward(kernels: Kernels, x, weight, bias, params, act, act_param, backend):
    """(y, z) in the memory format torch would give the output (z empty unless saved)."""
    fmt = output_format(x, weight)
    if x.shape[0] == 0:  # nothing to launch
        y = x.new_empty(_output_shape(kernels, x, weight, params)).contiguous(memory_format=fmt)
        return y, (torch.empty_like(y) if _saves_z(act, act_param) else absent(x))
    y, saved = kernels.forward(backend)(x, weight, bias, *params, activation_of(act, act_param))
    y = y.contiguous(memory_format=fmt)
    if not _saves_z(act, act_param):
        return y, absent(x)
    return y, saved.contiguous(memory_format=fmt)


def _conv_forward_fake(kernels: Kernels, x, weight, params, act, act_param):
    fmt = output_format(x, weight)
    y = x.new_empty(_output_shape(kernels, x, weight, params)).contiguous(memory_format=fmt)
    return y, (torch.empty_like(y) if _saves_z(act, act_param) else absent(x))


def _conv_backward(kernels: Kernels, grad_y, x, weight, saved, params, act, act_param, needs,
                   backend):
    """(grad_x like x, grad_weight like weight, grad_bias [Cout]), each empty unless needed."""
    if x.shape[0] == 0:
        grads = (torch.zeros_like(x), torch.zeros_like(weight),
                 weight.new_zeros(grad_y.shape[1]))
    else:
        grad_y = grad_y.contiguous(memory_format=output_format(x, weight))
        grads = kernels.backward(backend)(grad_y, x, weight, saved, *params,
                                          activation_of(act, act_param), tuple(needs))
    return tuple(absent(x) if not need or g is None else like_layout(g, like)
                 for g, need, like in zip(grads, needs, (x, weight, grad_y.new_empty(0))))


def _conv_backward_fake(grad_y, x, weight, needs):
    return tuple(torch.empty_like(like) if need else absent(x) for need, like in
                 zip(needs, (x, weight, weight.new_empty(grad_y.shape[1]))))


def _autograd(op, backward_op, n_params: int) -> None:
    """register_autograd of a conv op: inputs (x, weight, bias, *params, act, act_param,
    backend); saves x, weight and the saved tensor (y or z, by the activation)."""

    def setup(ctx, inputs, output):
        x, weight, _ = inputs[:3]
        ctx.params = inputs[3:3 + n_params]
        act, act_param, ctx.backend = inputs[3 + n_params:]
        ctx.act = (act, act_param)
        activation = activation_of(act, act_param)
        saved = None if activation is None else output[0 if activation.from_output else 1]
        ctx.save_for_backward(x, weight, saved)

    def grad(ctx, grad_y, grad_z):
        x, weight, saved = ctx.saved_tensors
        needs = list(ctx.needs_input_grad[:3])
        grads = backward_op(grad_y, x, weight, saved, *ctx.params, *ctx.act, needs, ctx.backend)
        return (*(g if need else None for g, need in zip(grads, needs)),) + \
            (None,) * (n_params + 3)

    op.register_autograd(grad, setup_context=setup)


@define("conv2d")
def conv2d_op(x: Tensor, weight: Tensor, bias: Optional[Tensor], stride: list[int],
              padding: list[int], dilation: list[int], groups: int, act: str, act_param: float,
              backend: str) -> tuple[Tensor, Tensor]:
    """x [N, Cin, H, W] (NCHW or channels_last), weight [Cout, Cin/groups, kh, kw], bias [Cout]
    -> (y = act(conv + bias), z: the pre-activation where backward needs it, else empty);
    padding (top, bottom, left, right)."""
    return _conv_forward(CONV2D, x, weight, bias, (stride, padding, dilation, groups), act,
                         act_param, backend)


@conv2d_op.register_fake
def _(x, weight, bias, stride, padding, dilation, groups, act, act_param, backend):
    return _conv_forward_fake(CONV2D, x, weight, (stride, padding, dilation, groups), act,
                              act_param)


@define("conv2d_backward")
def conv2d_backward(grad_y: Tensor, x: Tensor, weight: Tensor, saved: Optional[Tensor],
                    stride: list[int], padding: list[int], dilation: list[int], groups: int,
                    act: str, act_param: float, needs: list[bool],
                    backend: str) -> tuple[Tensor, Tensor, Tensor]:
    """-> (grad_x, grad_weight, grad_bias), each empty unless ``needs`` it."""
    return _conv_backward(CONV2D, grad_y, x, weight, saved, (stride, padding, dilation, groups),
                          act, act_param, needs, backend)


@conv2d_backward.register_fake
def _(grad_y, x, weight, saved, stride, padding, dilation, groups, act, act_param, needs,
      backend):
    return _conv_backward_fake(grad_y, x, weight, needs)


_autograd(conv2d_op, conv2d_backward, 4)


@define("conv_transpose2d")
def conv_transpose2d_op(x: Tensor, weight: Tensor, bias: Optional[Tensor], stride: list[int],
                        padding: list[int], output_padding: list[int], groups: int,
                        dilation: list[int], act: str, act_param: float,
                        backend: str) -> tuple[Tensor, Tensor]:
    """x [N, Cin, H, W], weight [Cin, Cout/groups, kh, kw], bias [Cout] -> (y, z) as conv2d;
    padding, output_padding (h, w)."""
    return _conv_forward(CONV_TRANSPOSE2D, x, weight, bias,
                         (stride, padding, output_padding, groups, dilation), act, act_param,
                         backend)


@conv_transpose2d_op.register_fake
def _(x, weight, bias, stride, padding, output_padding, groups, dilation, act, act_param,
      backend):
    return _conv_forward_fake(CONV_TRANSPOSE2D, x, weight,
                              (stride, padding, output_padding, groups, dilation), act, act_param)


@define("conv_transpose2d_backward")
def conv_transpose2d_backward(grad_y: Tensor, x: Tensor, weight: Tensor, saved: Optional[Tensor],
                              stride: list[int], padding: list[int], output_padding: list[int],
                              groups: int, dilation: list[int], act: str, act_param: float,
                              needs: list[bool], backend: str) -> tuple[Tensor, Tensor, Tensor]:
    """-> (grad_x, grad_weight, grad_bias), each empty unless ``needs`` it."""
    return _conv_backward(CONV_TRANSPOSE2D, grad_y, x, weight, saved,
                          (stride, padding, output_padding, groups, dilation), act, act_param,
                          needs, backend)


@conv_transpose2d_backward.register_fake
def _(grad_y, x, weight, saved, stride, padding, output_padding, groups, dilation, act,
      act_param, needs, backend):
    return _conv_backward_fake(grad_y, x, weight, needs)


_autograd(conv_transpose2d_op, conv_transpose2d_backward, 5)


def _prepare(op: str, input, weight, bias, groups: Any):
    """Shared checks and casts: returns (input [N, C, H, W], weight, bias, groups, unbatched)."""
    check_tensor("input", input, ndim=(3, 4))
    check_tensor("weight", weight, ndim=4)
    check_tensor("bias", bias, ndim=1, optional=True)
    groups = _check_groups(groups)
    input, weight, bias = autocast_to_lower(input, weight, bias)
    check_same(op, input=input, weight=weight, bias=bias)
    unbatched = input.dim() == 3
    if unbatched:
        input = input.unsqueeze(0)
    return input, weight, bias, groups, unbatched


def _check_weight_rows(weight, groups: int) -> None:
    if weight.shape[0] < groups:  # torch's check (0 rows would pass the divisibility test)
        raise RuntimeError(f"Given groups={groups}, expected weight to be at least {groups} at "
                           f"dimension 0, but got weight of size {list(weight.shape)} instead")


def _check_bias(bias, weight, channels: int) -> None:
    if bias is not None and bias.shape[0] != channels:
        raise RuntimeError(f"Given weight of size {list(weight.shape)}, expected bias to be "
                           f"1-dimensional with {channels} elements, but got bias of size "
                           f"{list(bias.shape)} instead")


def _check_output_size(input, out_hw) -> None:
    if min(out_hw) <= 0:
        raise RuntimeError(f"Given input size per channel: ({input.shape[2]} x {input.shape[3]})."
                           f" Calculated output size per channel: ({out_hw[0]} x {out_hw[1]}). "
                           "Output size is too small")


def conv2d_geometry(input, weight, bias, stride, padding, dilation, groups: int
                    ) -> tuple[tuple[int, int], tuple[int, int, int, int], tuple[int, int]]:
    """torch's checks of conv2d's shapes and arguments (input [N, Cin, H, W], weight [Cout,
    Cin/groups, kh, kw], bias [Cout] | None) -> (stride, padding (top, bottom, left, right),
    dilation); also used by the quantized conv2d (gpudnn/ops/quant.py)."""
    stride = positive_pair(stride, "stride")
    dilation = positive_pair(dilation, "dilation")
    kernel = tuple(weight.shape[2:])
    pad4 = _conv_padding(padding, kernel, stride, dilation)
    cout = weight.shape[0]
    _check_weight_rows(weight, groups)
    if cout % groups:
        raise RuntimeError(f"Given groups={groups}, expected weight to be divisible by {groups} "
                           f"at dimension 0, but got weight of size {list(weight.shape)} instead")
    if input.shape[1] != weight.shape[1] * groups:
        raise RuntimeError(f"Given groups={groups}, weight of size {list(weight.shape)}, expected "
                           f"input{list(input.shape)} to have {weight.shape[1] * groups} "
                           f"channels, but got {input.shape[1]} channels instead")
    _check_bias(bias, weight, cout)
    padded = (input.shape[2] + pad4[0] + pad4[1], input.shape[3] + pad4[2] + pad4[3])
    dilated = tuple(dilation[a] * (kernel[a] - 1) + 1 for a in range(2))
    if padded[0] < dilated[0] or padded[1] < dilated[1]:
        raise RuntimeError(f"Calculated padded input size per channel: ({padded[0]} x "
                           f"{padded[1]}). Kernel size: ({dilated[0]} x {dilated[1]}). Kernel "
                           "size can't be greater than actual input size")
    return stride, pad4, dilation


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, activation=None):
    """torch.nn.functional.conv2d with a fused ``activation`` (None, a name, or a torch module).

    input [N, Cin, H, W] or [Cin, H, W], weight [Cout, Cin/groups, kh, kw], bias [Cout] | None;
    padding an int, a pair, "valid" or "same" (stride 1 only)."""
    act = parse_activation(activation)
    input, weight, bias, groups, unbatched = _prepare("conv2d", input, weight, bias, groups)
    stride, pad4, dilation = conv2d_geometry(input, weight, bias, stride, padding, dilation,
                                             groups)
    input, weight = launcher_layout(input), launcher_layout(weight)
    y, _ = conv2d_op(input, weight, bias, list(stride), list(pad4), list(dilation), groups,
                     *activation_args(act), resolve(CONV2D, input, weight, bias))
    return y.squeeze(0) if unbatched else y


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1, activation=None):
    """torch.nn.functional.conv_transpose2d with a fused ``activation``.

    input [N, Cin, H, W] or [Cin, H, W], weight [Cin, Cout/groups, kh, kw], bias [Cout] | None."""
    act = parse_activation(activation)
    if isinstance(padding, str):
        raise ValueError(f"conv_transpose2d: padding must be an int or a pair of ints, got "
                         f"{padding!r} (string padding is only defined for conv2d)")
    input, weight, bias, groups, unbatched = _prepare(
        "conv_transpose2d", input, weight, bias, groups)
    stride = positive_pair(stride, "stride")
    dilation = positive_pair(dilation, "dilation")
    padding = nonnegative_pair(padding, "padding")
    output_padding = nonnegative_pair(output_padding, "output_padding")
    if any(output_padding[a] >= max(stride[a], dilation[a]) for a in range(2)):
        raise RuntimeError(
            "output padding must be smaller than either stride or dilation, but got "
            f"output_padding_height: {output_padding[0]} output_padding_width: "
            f"{output_padding[1]} stride_height: {stride[0]} stride_width: {stride[1]} "
            f"dilation_height: {dilation[0]} dilation_width: {dilation[1]}")
    cin = weight.shape[0]
    _check_weight_rows(weight, groups)
    if cin % groups:
        raise RuntimeError(f"Given groups={groups}, expected weight to be divisible by {groups} "
                           f"at dimension 0, but got weight of size {list(weight.shape)} instead")
    if input.shape[1] != cin:
        raise RuntimeError(f"Given transposed=1, weight of size {list(weight.shape)}, expected "
                           f"input{list(input.shape)} to have {cin} channels, but got "
                           f"{input.shape[1]} channels instead")
    cout = weight.shape[1] * groups
    _check_bias(bias, weight, cout)
    kernel = tuple(weight.shape[2:])
    out_hw = tuple(conv_transpose2d_output_size(input.shape[2 + a], kernel[a], stride[a],
                                                padding[a], output_padding[a], dilation[a])
                   for a in range(2))
    _check_output_size(input, out_hw)
    input, weight = launcher_layout(input), launcher_layout(weight)
    y, _ = conv_transpose2d_op(input, weight, bias, list(stride), list(padding),
                               list(output_padding), groups, list(dilation),
                               *activation_args(act),
                               resolve(CONV_TRANSPOSE2D, input, weight, bias))
    return y.squeeze(0) if unbatched else y

"""The one Triton registry of fused activations (values and derivatives) and the standalone
elementwise activation launchers.

Every fused kernel (dense, conv, batch norm, LSTM) calls

    y  = apply_activation(z, CODE, param)
    dz = activation_grad(dy, saved, CODE, param)      saved = y if Activation.from_output else z
    dz = activation_grad_from_preact(dy, z, CODE, param)   when only z is at hand

with ``CODE = kernels.activations.code_of(act)`` (a constexpr, 0 = identity) and
``param = param_of(act)`` (a runtime float: the leaky_relu slope). All math is in fp32.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import wrap_triton

from .. import alloc
from ..activations import NAMES, Activation, code_of, param_of
from . import _pointwise
from .aot import AOTConfig

# constexpr codes, as Activation.code assigns them (NAMES order, 1-based)
RELU, LEAKY_RELU, SIGMOID, TANH, GELU, GELU_TANH, SILU = (NAMES.index(n) + 1 for n in (
    "relu", "leaky_relu", "sigmoid", "tanh", "gelu", "gelu_tanh", "silu"))
assert len(NAMES) == 7, "a new activation needs a value and a derivative below"

# constants in the formulas below: 1/sqrt(2) = 0.7071067811865476, 1/sqrt(2 pi) =
# 0.3989422804014327, sqrt(2/pi) = 0.7978845608028654, and gelu_tanh's 0.044715


@triton.jit
def _sigmoid(z):
    # exp of a non-positive number only: no overflow for large |z|
    e = tl.exp(-tl.abs(z))
    return tl.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


@triton.jit
def _tanh(z):
    # (1 - e) / (1 + e) with e = exp(-2|z|) loses relative precision near 0, where the odd Taylor
    # series (error < 3e-10 relative for |z| < 1/16) takes over; the series in z itself keeps the
    # sign of -0.0 (tanh(-0.0) = -0.0, as torch), NaN fails a < 1/16 and stays NaN
    a = tl.abs(z)
    e = tl.exp(-2.0 * a)
    big = (1.0 - e) / (1.0 + e)
    z2 = z * z
    small = z * (1.0 + z2 * (-1.0 / 3.0 + z2 * (2.0 / 15.0 + z2 * (-17.0 / 315.0))))
    return tl.where(a < 0.0625, small, tl.where(z < 0, -big, big))


@triton.jit
def _tanh_fast(z):
    # one exp and one division; absolute error ~1e-7 (relative precision near 0 is lost, which
    # gelu_tanh does not need: it multiplies tanh by z and adds 1). exp overflow gives +-1.
    return 1.0 - 2.0 / (1.0 + tl.exp(2.0 * z))


@triton.jit
def apply_activation(z, CODE: tl.constexpr, param):
    """f(z) in fp32 for the activation with constexpr id CODE (0: identity). NaN in, NaN out, as
    torch (comparisons with NaN are false: each select below lets NaN through)."""
    z = z.to(tl.float32)
    if CODE == 1:    # relu: torch's clamp_min(z, 0) keeps NaN and -0.0
        out = tl.where(z < 0, 0.0, z)
    elif CODE == 2:  # leaky_relu (param = negative slope)
        out = tl.where(z > 0, z, z * param)
    elif CODE == 3:  # sigmoid
        out = _sigmoid(z)
    elif CODE == 4:  # tanh
        out = _tanh(z)
    elif CODE == 5:  # gelu, erf form
        out = 0.5 * z * (1.0 + tl.erf(z * 0.7071067811865476))
    elif CODE == 6:  # gelu, tanh approximation
        out = 0.5 * z * (1.0 + _tanh_fast(0.7978845608028654 * (z + 0.044715 * z * z * z)))
    elif CODE == 7:  # silu
        out = z * _sigmoid(z)
    else:
        out = z
    return out


@triton.jit
def activation_grad(dy, saved, CODE: tl.constexpr, param):
    """dy * f'(.) in fp32; ``saved`` is the output y for relu, leaky_relu (slope > 0), sigmoid and
    tanh (Activation.from_output) and the pre-activation z otherwise."""
    dy = dy.to(tl.float32)
    s = saved.to(tl.float32)
    if CODE == 1:    # relu: torch's threshold_backward, 0 where y <= 0, dy elsewhere (at NaN too)
        out = tl.where(s <= 0, 0.0, dy)
    elif CODE == 2:  # leaky_relu: y > 0 <=> z > 0 for a positive slope; z itself otherwise; the
        # slope where not > 0 (at NaN too), as torch's leaky_relu_backward
        out = tl.where(s > 0, dy, dy * param)
    elif CODE == 3:  # sigmoid: y (1 - y)
        out = dy * s * (1.0 - s)
    elif CODE == 4:  # tanh: 1 - y^2
        out = dy * (1.0 - s * s)
    elif CODE == 5:  # gelu: Phi(z) + z phi(z)
        cdf = 0.5 * (1.0 + tl.erf(s * 0.7071067811865476))
        pdf = tl.exp(-0.5 * s * s) * 0.3989422804014327
        out = dy * (cdf + s * pdf)
    elif CODE == 6:  # gelu_tanh, torch's formula
        inner = 0.7978845608028654 * (s + 0.044715 * s * s * s)
        t = _tanh_fast(inner)
        d_inner = 0.7978845608028654 * (1.0 + 3.0 * 0.044715 * s * s)
        out = dy * (0.5 * (1.0 + t) + 0.5 * s * (1.0 - t * t) * d_inner)
    elif CODE == 7:  # silu: sig(z) (1 + z (1 - sig(z)))
        sg = _sigmoid(s)
        out = dy * sg * (1.0 + s * (1.0 - sg))
    else:
        out = dy
    return out


@triton.jit
def activation_grad_from_preact(dy, z, CODE: tl.constexpr, param):
    """dy * f'(z) from the pre-activation z for every activation (kernels that recompute z)."""
    if CODE == 3 or CODE == 4:  # their derivatives are written in terms of the output
        out = activation_grad(dy, apply_activation(z, CODE, param), CODE, param)
    else:  # relu / leaky_relu test the sign, which z and y share; the rest take z
        out = activation_grad(dy, z, CODE, param)
    return out


# --- standalone elementwise launchers -----------------------------------------------------------

@triton.jit
def _activation_kernel(out_ptr, a_ptr, b_ptr, numel,
                       s1, s2, s3, s4, s5,
                       o0, o1, o2, o3, o4, o5,
                       a0, a1, a2, a3, a4, a5,
                       b0, b1, b2, b3, b4, b5,
                       param,
                       CODE: tl.constexpr, BACKWARD: tl.constexpr, FLAT: tl.constexpr,
                       I64: tl.constexpr, BLOCK: tl.constexpr):
    """Forward: out = f(a). Backward: out = a * f'(b) (a = grad_y, b = saved).

    out_ptr, a_ptr, b_ptr: tensors of one logical shape (numel elements), padded to 6 dims with
    sizes (., s1..s5) and element strides o*, a*, b*; FLAT: all share one dense layout, so element
    i sits at storage offset i in each (b_ptr unused in forward).
    """
    i = _pointwise.block_indices(BLOCK, I64)
    mask = i < numel
    off_o = _pointwise.element_offset(i, FLAT, s1, s2, s3, s4, s5, o0, o1, o2, o3, o4, o5)
    off_a = _pointwise.element_offset(i, FLAT, s1, s2, s3, s4, s5, a0, a1, a2, a3, a4, a5)
    off_b = _pointwise.element_offset(i, FLAT, s1, s2, s3, s4, s5, b0, b1, b2, b3, b4, b5)
    a = tl.load(a_ptr + off_a, mask=mask, other=0.0)
    if BACKWARD:
        b = tl.load(b_ptr + off_b, mask=mask, other=0.0)
        out = activation_grad(a, b, CODE, param)
    else:
        out = apply_activation(a, CODE, param)
    tl.store(out_ptr + off_o, out.to(out_ptr.dtype.element_ty), mask=mask)


_BLOCK = 1024
_WARPS = 4


def _launch(a: torch.Tensor, b: torch.Tensor | None, act: Activation | None,
            backward: bool) -> torch.Tensor:
    _pointwise.check_dtypes("activation", input=a, saved=b)
    if b is not None and b.shape != a.shape:
        raise ValueError(f"activation_backward: grad_y {tuple(a.shape)} and saved "
                         f"{tuple(b.shape)} differ in shape")
    out = alloc.empty_like(a, memory_format=torch.preserve_format)
    if a.numel() == 0:
        return out
    ins = [a] if b is None else [a, b]
    plan = _pointwise.plan([out, *ins])
    strides = plan.strides + ([plan.strides[1]] if b is None else [])
    grid = (triton.cdiv(a.numel(), _BLOCK),)
    wrap_triton(_activation_kernel)[grid](out, a, b if b is not None else a, a.numel(), *plan.sizes[1:],
                             *strides[0], *strides[1], *strides[2], param_of(act),
                             CODE=code_of(act), BACKWARD=backward, FLAT=plan.flat, I64=plan.i64,
                             BLOCK=_BLOCK, num_warps=_WARPS)
    return out


def activation_forward(x: torch.Tensor, act: Activation | None) -> torch.Tensor:
    """y = f(x), any shape and strides; y takes x's memory format."""
    return _launch(x, None, act, backward=False)


def activation_backward(grad_y: torch.Tensor, saved: torch.Tensor,
                        act: Activation | None) -> torch.Tensor:
    """grad_x = grad_y * f'(saved); saved = y if act.from_output else x."""
    return _launch(grad_y, saved, act, backward=True)


def aot_configs() -> list[AOTConfig]:
    """The one elementwise kernel for every code, direction, layout form and dtype. CI's
    selection (see _pointwise.aot_all): every code both ways in flat fp32, and gelu_tanh (the
    heaviest code) strided and in bf16 (the codes differ only in constexpr arithmetic)."""
    heaviest = NAMES.index("gelu_tanh") + 1
    configs = []
    for dtype in ("fp32", "fp16", "bf16"):
        for code in range(len(NAMES) + 1):
            for flat in (True, False):
                for backward in (False, True):
                    sig = {"out_ptr": f"*{dtype}", "a_ptr": f"*{dtype}", "b_ptr": f"*{dtype}",
                           "numel": "i32"}
                    sig.update({n: "i32" for n in ("s1", "s2", "s3", "s4", "s5")})
                    sig.update({f"{p}{k}": "i32" for p in "oab" for k in range(6)})
                    sig["param"] = "fp32"
                    sig.update({k: "constexpr" for k in ("CODE", "BACKWARD", "FLAT", "I64",
                                                          "BLOCK")})
                    name = NAMES[code - 1] if code else "identity"
                    configs.append(AOTConfig(
                        _activation_kernel, sig,
                        dict(CODE=code, BACKWARD=backward, FLAT=flat, I64=False, BLOCK=_BLOCK),
                        num_warps=_WARPS, num_stages=1, dtype=dtype,
                        label=f"{name} {'bwd' if backward else 'fwd'} "
                              f"{'flat' if flat else 'strided'}"))
    selected = _pointwise.select(configs, lambda c: (
        (c.dtype == "fp32" and c.constexprs["FLAT"])
        or (c.dtype != "fp16" and c.constexprs["CODE"] == heaviest)))
    # tensors past 2^31 elements: the heaviest code, both layouts and directions, fp32 and bf16
    return selected + _pointwise.i64_variants(
        [c for c in configs if c.constexprs["CODE"] == heaviest and c.dtype != "fp16"],
        _pointwise.STRIDED_I64_SPILLS)

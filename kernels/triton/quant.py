"""Weight-only quantized inference: int8 (or float8 e4m3fn) weights, float activations.

* ``_quant_dense_kernel``: y = act((x @ q^T) * scale + bias). The weight tile is loaded as int8
  (or as uint8 e4m3fn bits, bitcast to Triton's ``float8e4nv``) and converted to the activation
  dtype in registers inside the K loop, so the weight crosses memory at one byte per element and
  no float copy of it exists; the per-output-channel (or per-tensor) scale multiplies the fp32
  accumulator once in the epilogue, then bias and the activation (``activations.py``). The GEMM
  is computed transposed, acc[BN, BM] = q[BN, BK] @ x^T[BK, BM]: the converted weight is the
  left operand, which a Hopper warpgroup MMA may take from registers, and output features fill
  the 64-row MMA even for a handful of input rows (batch-1..16 inference, where a weight-only
  GEMM is bound by reading the weight). Tiles come from ``_config`` (no autotuning).
* ``quant_conv2d_forward``: the implicit GEMM of ``conv.py`` (``_conv_gemm_kernel`` with its
  ``W_QUANT`` path: the same per-tile conversion in registers and the scale before the fused
  epilogue), through ``conv.conv2d_forward_scaled``; one kernel for every group count.

Launchers take the quantized weight as int8, or as uint8 holding e4m3fn bits (the op views a
``torch.float8_e4m3fn`` weight that way: the NumPy reference has no float8 type), and a float32
scale [N] or [1]. Forward only: quantized layers are for inference (``gpudnn.ops.quant``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch.library import wrap_triton

from .. import alloc
from ..layout import contiguous
from ..activations import NAMES, Activation, code_of, param_of
from . import _pointwise
from . import conv as _conv
from ._spatial import signature
from .activations import apply_activation
from .aot import AOTConfig
from .dense import GROUP, _grouped_tile, _needs_i64, _precision

WEIGHT_DTYPES = (torch.int8, torch.uint8)  # int8 values / float8 e4m3fn bit patterns


@triton.jit
def _quant_dense_kernel(x_ptr, q_ptr, s_ptr, b_ptr, y_ptr, M, N, K,
                        stride_xm, stride_xk, stride_qn, stride_qk, scale_stride, param,
                        HAS_BIAS: tl.constexpr, CODE: tl.constexpr, FP8: tl.constexpr,
                        PRECISION: tl.constexpr, BN: tl.constexpr, BM: tl.constexpr,
                        BK: tl.constexpr, GROUP: tl.constexpr):
    """y = f((x q^T) * s + b), computed as its transpose tile by tile.

    x_ptr: [M, K] (strides stride_xm, stride_xk); q_ptr: [N, K] int8, or uint8 e4m3fn bits when
    FP8 (strides stride_qn, stride_qk); s_ptr: float32 scales, output feature n reads
    s[n * scale_stride] (1: per channel, 0: per tensor); b_ptr: [N] (unused without HAS_BIAS);
    y_ptr: [M, N] contiguous.
    """
    pid_n, pid_m = _grouped_tile(N, M, BN, BM, GROUP)
    rn = pid_n * BN + tl.arange(0, BN)
    rm = pid_m * BM + tl.arange(0, BM)
    rk = tl.arange(0, BK)
    # rows past the edge read a valid row (wrapped) and are never stored: no row masks in the loop
    q_offs = (rn % N)[:, None] * stride_qn + rk[None, :] * stride_qk
    x_offs = rk[:, None] * stride_xk + (rm % M)[None, :] * stride_xm
    acc = tl.zeros([BN, BM], dtype=tl.float32)
    for k in range(0, tl.cdiv(K, BK)):
        k_left = K - k * BK
        w = tl.load(q_ptr + q_offs, mask=rk[None, :] < k_left, other=0)
        if FP8:
            w = w.to(tl.float8e4nv, bitcast=True)
        a = tl.load(x_ptr + x_offs, mask=rk[:, None] < k_left, other=0.0)
        acc = tl.dot(w.to(x_ptr.dtype.element_ty), a, acc, input_precision=PRECISION)
        q_ptr += BK * stride_qk
        x_ptr += BK * stride_xk
    n_ok = rn < N
    acc = acc * tl.load(s_ptr + rn * scale_stride, mask=n_ok, other=0.0)[:, None]
    if HAS_BIAS:
        acc += tl.load(b_ptr + rn, mask=n_ok, other=0.0).to(tl.float32)[:, None]
    y = apply_activation(acc, CODE, param)
    tl.store(y_ptr + rm[None, :] * N + rn[:, None], y.to(y_ptr.dtype.element_ty),
             mask=n_ok[:, None] & (rm < M)[None, :])


@dataclass(frozen=True)
class _Tiles:
    BN: int  # output features per program (rows of the transposed product)
    BM: int  # input rows per program
    BK: int
    num_warps: int
    num_stages: int

    @property
    def label(self) -> str:
        return f"{self.BN}x{self.BM}x{self.BK} w{self.num_warps} s{self.num_stages}"


# (dtype class, rows class) -> tiles: the only shapes the heuristic returns. "few": M <= 16
# (token-by-token inference: the whole batch in one 16-wide tile, long K steps to keep the weight
# stream busy), "some": M <= 64 (fp32: any M > 16), "many": larger 16-bit batches. Measured for
# sm_90 (triton 3.9 and 3.6): the weight tile is converted in registers, so
# these kernels hold ~200-255 registers; 128x64x64 with 4 warps sat at 255 (8 warps: ~190-200),
# and an fp32 128x64x32 tile spilled under 3.6, so fp32 stops at 64x64 (aot.compile_sm90).
_TILES = {
    ("16bit", "few"): _Tiles(64, 16, 128, 4, 4),
    ("16bit", "some"): _Tiles(128, 64, 64, 8, 3),
    ("16bit", "many"): _Tiles(128, 128, 64, 8, 3),
    ("fp32", "few"): _Tiles(64, 16, 32, 4, 3),
    ("fp32", "some"): _Tiles(64, 64, 32, 4, 3),
}


def _config(M: int, dtype: torch.dtype) -> _Tiles:
    kind = "fp32" if dtype == torch.float32 else "16bit"
    rows = "few" if M <= 16 else "some" if M <= 64 or kind == "fp32" else "many"
    return _TILES[(kind, rows)]


def _check_weight(name: str, weight: torch.Tensor, scale: torch.Tensor, channels: int) -> None:
    if weight.dtype not in WEIGHT_DTYPES:
        raise TypeError(f"{name} (triton): the weight must be int8, or uint8 holding float8 "
                        f"e4m3fn bits, got {weight.dtype}")
    if scale.dtype != torch.float32 or scale.dim() != 1 or scale.numel() not in (1, channels):
        raise ValueError(f"{name} (triton): scale must be float32 [{channels}] or [1], got "
                         f"{scale.dtype} {tuple(scale.shape)}")


def quant_dense_forward(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor,
                        bias: torch.Tensor | None, act: Activation | None) -> torch.Tensor:
    """x [M, K] float, weight [N, K] int8 | uint8 (e4m3fn bits), scale float32 [N] | [1],
    bias [N] | None -> y = act((x @ weight^T) * scale + bias) [M, N] in x's dtype."""
    if x.dim() != 2 or weight.dim() != 2 or x.shape[1] != weight.shape[1]:
        raise ValueError(f"quantized linear: x {tuple(x.shape)} and weight "
                         f"{tuple(weight.shape)} do not form [M, K] and [N, K]")
    _pointwise.check_dtypes("quantized linear", x=x, bias=bias)
    M, K = x.shape
    N = weight.shape[0]
    _check_weight("quantized linear", weight, scale, N)
    y = alloc.empty((M, N), dtype=x.dtype, device=x.device)
    if M == 0 or N == 0:
        return y
    if _needs_i64(x, weight, y):
        raise ValueError(f"quantized linear (triton): x {tuple(x.shape)} / weight "
                         f"{tuple(weight.shape)}: offsets past 2^31 elements, which these kernels "
                         "index in 32 bits; split the batch")
    scale, bias = contiguous(scale, bias)  # read at the output channel index
    t = _config(M, x.dtype)
    grid = (triton.cdiv(N, t.BN) * triton.cdiv(M, t.BM),)
    wrap_triton(_quant_dense_kernel)[grid](
        x, weight, scale, bias if bias is not None else y, y, M, N, K,
        x.stride(0), x.stride(1), weight.stride(0), weight.stride(1),
        0 if scale.numel() == 1 else 1, param_of(act),
        HAS_BIAS=bias is not None, CODE=code_of(act), FP8=weight.dtype == torch.uint8,
        PRECISION=_precision(x.dtype), BN=t.BN, BM=t.BM, BK=t.BK, GROUP=GROUP,
        num_warps=t.num_warps, num_stages=t.num_stages)
    return y


def quant_conv2d_forward(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor,
                         bias: torch.Tensor | None, stride, padding, dilation, groups: int,
                         act: Activation | None) -> torch.Tensor:
    """x [N, Cin, H, W] float (NCHW or channels_last), weight [Cout, Cin/groups, kh, kw] int8 |
    uint8 (e4m3fn bits), scale float32 [Cout] | [1], bias [Cout] | None; padding (top, bottom,
    left, right) -> y = act(conv(x, weight) * scale + bias) in torch's memory format."""
    _pointwise.check_dtypes("quantized conv2d", x=x, bias=bias)
    _check_weight("quantized conv2d", weight, scale, weight.shape[0])
    return _conv.conv2d_forward_scaled(x, weight, scale, bias, stride, padding, dilation, groups,
                                       act)[0]


# ---------------------------------------------------------------------------------------------
# ahead-of-time configurations
# ---------------------------------------------------------------------------------------------

def aot_configs() -> list[AOTConfig]:
    """Every tile of ``_TILES`` for int8 and e4m3 weights, with fp32 (ieee and tf32) or bf16 /
    fp16 activations, with gelu_tanh (the heaviest epilogue) and bias; plus the plain no-bias
    bf16 forward. The quantized implicit-GEMM conv (``_conv_gemm_kernel`` with W_QUANT): every
    forward tile ``conv._gemm_tile`` picks, per dtype and weight format, without an activation,
    and with gelu_tanh at the largest tile. Strides specialised as the JIT does for row-major
    operands (unit K strides)."""
    gelu = NAMES.index("gelu_tanh") + 1
    configs: list[AOTConfig] = []
    variants = (("fp32", "ieee"), ("fp32", "tf32"), ("bf16", "ieee"), ("fp16", "ieee"))
    weights = (("i8", False), ("u8", True))
    for (kind, rows), t in _TILES.items():
        for dtype, precision in variants:
            if (kind == "fp32") != (dtype == "fp32"):
                continue
            mma = "" if precision == "ieee" and dtype == "fp32" else "HGMMA"
            for wty, fp8 in weights:
                sig = {"x_ptr": f"*{dtype}", "q_ptr": f"*{wty}", "s_ptr": "*fp32",
                       "b_ptr": f"*{dtype}", "y_ptr": f"*{dtype}", "M": "i32", "N": "i32",
                       "K": "i32", "stride_xm": "i32", "stride_xk": "constexpr",
                       "stride_qn": "i32", "stride_qk": "constexpr", "scale_stride": "i32",
                       "param": "fp32"}
                sig.update({k: "constexpr" for k in ("HAS_BIAS", "CODE", "FP8", "PRECISION",
                                                     "BN", "BM", "BK", "GROUP")})
                for code, bias in ((gelu, True),) + (((0, False),) if dtype == "bf16" else ()):
                    act = NAMES[code - 1] if code else "identity"
                    configs.append(AOTConfig(
                        _quant_dense_kernel, sig,
                        dict(HAS_BIAS=bias, CODE=code, FP8=fp8, PRECISION=precision, BN=t.BN,
                             BM=t.BM, BK=t.BK, GROUP=GROUP, stride_xk=1, stride_qk=1),
                        num_warps=t.num_warps, num_stages=t.num_stages, dtype=dtype,
                        expect_mma=mma, label=f"dense {wty} {act}{'' if bias else ' no-bias'} "
                                              f"{precision} {t.label}"))
    configs += _conv_configs(gelu)
    return configs


def _conv_configs(gelu: int) -> list[AOTConfig]:
    configs = []
    for dtype, precision in _conv._VARIANTS:
        mma = "" if precision == "ieee" and dtype == "fp32" else "HGMMA"
        tiles = sorted({_conv._gemm_tile(d, k, _conv._TORCH_DTYPES[dtype], precision)
                        for d in _conv._PROBES for k in _conv._PROBES})
        ptrs = {n: f"*{dtype}" for n in ("src_ptr", "src_saved_ptr", "bias_ptr", "dst_ptr",
                                          "z_ptr")}
        for wty, w_quant in (("i8", 1), ("u8", 2)):
            for code, tile_list in ((0, tiles), (gelu, tiles[-1:])):
                for bm, bn, bk, warps in tile_list:
                    cx = dict(ACT=code, EPILOGUE_ACT=code != 0, STORE_Z=False,
                              SRC_ACT_GRAD=False, PRECISION=precision, BLOCK_M=bm, BLOCK_N=bn,
                              BLOCK_K=bk, W_QUANT=w_quant)
                    sig = signature(_conv._conv_gemm_kernel,
                                    {**ptrs, "w_ptr": f"*{wty}", "scale_ptr": "*fp32"},
                                    ("act_param",), cx)
                    configs.append(AOTConfig(
                        _conv._conv_gemm_kernel, sig, cx, warps, 3,
                        f"quant conv {wty} {bm}x{bn}x{bk} {precision} act{code}", dtype, mma))
    return configs


__all__ = ["quant_dense_forward", "quant_conv2d_forward", "aot_configs"]

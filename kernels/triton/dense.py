"""Fused dense layer: y = f(x W^T + b) and its backward, as tiled Triton GEMMs.

Forward: one GEMM whose fp32 epilogue adds the bias and applies the activation (and stores the
pre-activation z when f' needs it). Backward: two GEMMs, dx = dz W and dW = dz^T x, that compute
dz = dy * f'(saved) on the fly while loading the dy tiles (no elementwise pass over the output);
the dW GEMM's programs of the first K tile also reduce dz over rows into the bias gradient.
Tiles are visited in grouped order (GROUP rows of tiles share their B panel in L2); block shapes
come from ``_config(P, Q, R, dtype)``, never from autotuning. Strides are passed to the kernels,
so transposed or sliced inputs are read in place.
"""
from __future__ import annotations

import dataclasses

from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch.library import wrap_triton

from .. import alloc
from ..layout import contiguous
from ..activations import NAMES, Activation, code_of, param_of
from . import _pointwise
from ._pointwise import INT32_LIMIT
from .activations import activation_grad, apply_activation
from .aot import AOTConfig

GROUP = 8


@triton.jit
def _grouped_tile(P, Q, BP: tl.constexpr, BQ: tl.constexpr, GROUP: tl.constexpr):
    """(row tile, column tile) of this program, walking GROUP row tiles per column sweep."""
    pid = tl.program_id(0)
    n_p = tl.cdiv(P, BP)
    n_q = tl.cdiv(Q, BQ)
    per_group = GROUP * n_q
    first_p = (pid // per_group) * GROUP
    group_rows = tl.minimum(n_p - first_p, GROUP)
    pid_p = first_p + (pid % per_group) % group_rows
    pid_q = (pid % per_group) // group_rows
    return pid_p, pid_q


@triton.jit
def _edge_rows(rows, start, size, I64: tl.constexpr):
    """The row each of a tile's ``rows`` (start + [0, BLOCK)) reads: rows past the edge read a
    valid one and are never stored, so the inner loop needs no row mask.

    32-bit offsets: the row itself, wrapped modulo ``size``. I64: relative to ``start`` (the
    caller's base pointer is already there), clamped to the last row, so it lies in [0, BLOCK)
    and (BLOCK - 1) * stride fits in int32 (launcher-checked); a modulo-wrapped row would lie
    up to ``start`` rows back, an offset as wide as the tensor.
    """
    if I64:
        read = tl.minimum(rows, size - 1) - start
    else:
        read = rows % size
    return read


@triton.jit
def _dense_forward_kernel(x_ptr, w_ptr, b_ptr, y_ptr, z_ptr, M, N, K,
                          stride_xm, stride_xk, stride_wn, stride_wk, param,
                          HAS_BIAS: tl.constexpr, CODE: tl.constexpr, STORE_Z: tl.constexpr,
                          PRECISION: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
                          BK: tl.constexpr, GROUP: tl.constexpr, I64: tl.constexpr):
    """y = f(x w^T + b); z = x w^T + b too when STORE_Z.

    x_ptr: [M, K] (strides stride_xm, stride_xk); w_ptr: [N, K] (stride_wn, stride_wk);
    b_ptr: [N] contiguous (unused without HAS_BIAS); y_ptr, z_ptr: [M, N] contiguous.
    """
    pid_m, pid_n = _grouped_tile(M, N, BM, BN, GROUP)
    m0 = pid_m * BM
    n0 = pid_n * BN
    rm = m0 + tl.arange(0, BM)
    rn = n0 + tl.arange(0, BN)
    rk = tl.arange(0, BK)
    if I64:
        # 64-bit program base: the scalar base pointers move to the tile's first row / column
        # once, offsets inside the tile stay 32-bit (the launcher checks that they fit: _tile_fits)
        x_ptr += m0.to(tl.int64) * stride_xm
        w_ptr += n0.to(tl.int64) * stride_wn
    rm_in = _edge_rows(rm, m0, M, I64)
    rn_in = _edge_rows(rn, n0, N, I64)
    # loop-invariant offsets; only the scalar base pointers move along K
    x_offs = rm_in[:, None] * stride_xm + rk[None, :] * stride_xk
    w_offs = rk[:, None] * stride_wk + rn_in[None, :] * stride_wn
    acc = tl.zeros([BM, BN], dtype=tl.float32)
    for k in range(0, tl.cdiv(K, BK)):
        k_left = K - k * BK
        a = tl.load(x_ptr + x_offs, mask=rk[None, :] < k_left, other=0.0)
        b = tl.load(w_ptr + w_offs, mask=rk[:, None] < k_left, other=0.0)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
        x_ptr += BK * stride_xk
        w_ptr += BK * stride_wk
    if HAS_BIAS:
        acc += tl.load(b_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
    if I64:  # relative to the tile's corner (moved here, not before the loop: fewer spills)
        y_ptr += m0.to(tl.int64) * N + n0
        z_ptr += m0.to(tl.int64) * N + n0
        out_offs = tl.arange(0, BM)[:, None] * N + tl.arange(0, BN)[None, :]
    else:
        out_offs = rm[:, None] * N + rn[None, :]
    out_mask = (rm < M)[:, None] & (rn < N)[None, :]
    if STORE_Z:
        tl.store(z_ptr + out_offs, acc.to(z_ptr.dtype.element_ty), mask=out_mask)
    y = apply_activation(acc, CODE, param)
    tl.store(y_ptr + out_offs, y.to(y_ptr.dtype.element_ty), mask=out_mask)


@triton.jit
def _dense_grad_kernel(dy_ptr, s_ptr, b_ptr, c_ptr, db_ptr, P, Q, R,
                       stride_dp, stride_dr, stride_sp, stride_sr, stride_br, stride_bq, param,
                       CODE: tl.constexpr, COMPUTE_C: tl.constexpr, BIAS_GRAD: tl.constexpr,
                       PRECISION: tl.constexpr, BP: tl.constexpr, BQ: tl.constexpr,
                       BR: tl.constexpr, GROUP: tl.constexpr, I64: tl.constexpr):
    """c = dz b and db = dz summed over R, where dz = dy * f'(s) is formed tile by tile.

    dy_ptr, s_ptr: [P, R] views (strides stride_dp/stride_dr, stride_sp/stride_sr) of grad_y and
    of the saved tensor (s unused when CODE == 0); b_ptr: [R, Q] (stride_br, stride_bq);
    c_ptr: [P, Q] contiguous; db_ptr: [P] contiguous, written by the programs of column tile 0.
    dx = dz W uses (P, R, Q) = (M, N, K); dW = dz^T x uses (P, R, Q) = (N, M, K).
    """
    if COMPUTE_C:
        pid_p, pid_q = _grouped_tile(P, Q, BP, BQ, GROUP)
    else:  # bias gradient only: one program per row tile
        pid_p = tl.program_id(0)
        pid_q = 0
    p0 = pid_p * BP
    q0 = pid_q * BQ
    rp = p0 + tl.arange(0, BP)
    rq = q0 + tl.arange(0, BQ)
    rr = tl.arange(0, BR)
    p_ok = rp < P
    if I64:
        # 64-bit program base, 32-bit offsets inside the tile (as in _dense_forward_kernel)
        dy_ptr += p0.to(tl.int64) * stride_dp
        s_ptr += p0.to(tl.int64) * stride_sp
        b_ptr += q0.to(tl.int64) * stride_bq
    rp_in = _edge_rows(rp, p0, P, I64)
    rq_in = _edge_rows(rq, q0, Q, I64)
    # loop-invariant offsets; only the scalar base pointers move along R
    dy_offs = rp_in[:, None] * stride_dp + rr[None, :] * stride_dr
    s_offs = rp_in[:, None] * stride_sp + rr[None, :] * stride_sr
    b_offs = rr[:, None] * stride_br + rq_in[None, :] * stride_bq
    acc = tl.zeros([BP, BQ], dtype=tl.float32)
    db = tl.zeros([BP], dtype=tl.float32)
    for r in range(0, tl.cdiv(R, BR)):
        r_left = R - r * BR
        dz_mask = rr[None, :] < r_left
        dy = tl.load(dy_ptr + dy_offs, mask=dz_mask, other=0.0)
        if CODE != 0:
            s = tl.load(s_ptr + s_offs, mask=dz_mask, other=0.0)
            dz = activation_grad(dy, s, CODE, param)
        else:
            dz = dy.to(tl.float32)
        if BIAS_GRAD:
            if pid_q == 0:
                db += tl.sum(dz, axis=1)
        if COMPUTE_C:
            b = tl.load(b_ptr + b_offs, mask=rr[:, None] < r_left, other=0.0)
            acc = tl.dot(dz.to(b.dtype), b, acc, input_precision=PRECISION)
        dy_ptr += BR * stride_dr
        s_ptr += BR * stride_sr
        b_ptr += BR * stride_br
    if COMPUTE_C:
        # I64: 64-bit row offsets here, where the forward kernel moves its base pointer instead
        # (measured on sm_90: the other way round, each spills at its largest tile)
        if I64:
            c_offs = rp.to(tl.int64)[:, None] * Q + rq[None, :]
        else:
            c_offs = rp[:, None] * Q + rq[None, :]
        tl.store(c_ptr + c_offs, acc.to(c_ptr.dtype.element_ty),
                 mask=p_ok[:, None] & (rq < Q)[None, :])
    if BIAS_GRAD:
        if pid_q == 0:
            tl.store(db_ptr + rp, db.to(db_ptr.dtype.element_ty), mask=p_ok)


@dataclass(frozen=True)
class _Tiles:
    BP: int
    BQ: int
    BR: int
    num_warps: int
    num_stages: int

    @property
    def label(self) -> str:
        return f"{self.BP}x{self.BQ}x{self.BR} w{self.num_warps} s{self.num_stages}"


# (pass, dtype class, size class) -> tiles: the only shapes the heuristic returns. The backward
# GEMMs form dz = dy * f'(saved) in registers, so they step R in shorter panels.
_TILES = {
    ("fwd", "16bit", "large"): _Tiles(128, 128, 32, 8, 4),
    ("fwd", "16bit", "small"): _Tiles(64, 64, 64, 4, 3),
    ("fwd", "fp32", "large"): _Tiles(128, 128, 32, 8, 3),
    ("fwd", "fp32", "small"): _Tiles(64, 64, 32, 4, 3),
    ("bwd", "16bit", "large"): _Tiles(128, 128, 32, 8, 3),
    ("bwd", "16bit", "small"): _Tiles(64, 64, 32, 4, 3),
    ("bwd", "fp32", "large"): _Tiles(128, 128, 16, 8, 3),
    ("bwd", "fp32", "small"): _Tiles(64, 64, 32, 4, 3),
}


def _config(which: str, P: int, Q: int, R: int, dtype: torch.dtype) -> _Tiles:
    """Block shapes for a [P, Q] output reduced over R. Large tiles when there are enough of them
    to fill an H100 (132 SMs) and the reduction is long enough to amortise the epilogue."""
    kind = "fp32" if dtype == torch.float32 else "16bit"
    enough = triton.cdiv(P, 128) * triton.cdiv(Q, 128) >= 132 and R >= 256
    return _TILES[(which, kind, "large" if enough else "small")]


def _precision(dtype: torch.dtype) -> str:
    if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32:
        return "tf32"
    return "ieee"


def _needs_i64(*tensors: torch.Tensor) -> bool:
    """Whether an element offset in any of ``tensors`` (plus a tile of slack) passes int32."""
    span = max(sum((n - 1) * abs(st) for n, st in zip(t.shape, t.stride())) for t in tensors)
    return span + 256 * 256 > INT32_LIMIT


def _tile_fits(t: torch.Tensor | None, rows: int, cols: int) -> bool:
    """Whether the 32-bit offsets of the I64 kernels inside a [rows, cols] tile of 2-d ``t`` fit
    in int32: the elements a tile touches plus the step to the next tile along a dim longer than
    the tile (rows past the edge are clamped, so a short dim spans size - 1)."""
    return t is None or sum(min(block, n - 1) * abs(st) for block, n, st
                            in zip((rows, cols), t.shape, t.stride())) <= _pointwise.INT32_LIMIT


def _check_tiles(i64: bool, *tiles: tuple[str, torch.Tensor | None, int, int]) -> None:
    """Under I64, refuse (rather than wrap) a tile whose offsets pass int32: a stride of 2^24+
    elements (a row of 16M+ features, or a transposed operand with 67M+ rows)."""
    for name, t, rows, cols in tiles:
        if i64 and not _tile_fits(t, rows, cols):
            raise ValueError(f"dense (triton): {name} {tuple(t.shape)} with strides {t.stride()}"
                             f": a {rows}x{cols} tile spans more than 2^31 elements; the kernels "
                             "index inside a tile in 32 bits (use a contiguous operand, or the "
                             "'reference' backend)")


def _check(x: torch.Tensor, weight: torch.Tensor) -> None:
    if x.dim() != 2 or weight.dim() != 2 or x.shape[1] != weight.shape[1]:
        raise ValueError(f"dense: x {tuple(x.shape)} and weight {tuple(weight.shape)} do not "
                         "form [M, K] and [N, K]")
    _pointwise.check_dtypes("dense", x=x, weight=weight)
    if x.dtype != weight.dtype:
        raise TypeError(f"dense (triton): x ({x.dtype}) and weight ({weight.dtype}) differ in "
                        "dtype")


def dense_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                  act: Activation | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """x [M, K], weight [N, K], bias [N] | None -> (y [M, N], saved): saved is None without an
    activation, y when act.from_output, else the pre-activation z."""
    _check(x, weight)
    M, K = x.shape
    N = weight.shape[0]
    store_z = act is not None and not act.from_output
    y = alloc.empty((M, N), dtype=x.dtype, device=x.device)
    z = alloc.empty((M, N), dtype=x.dtype, device=x.device) if store_z else None
    if M and N:
        bias, = contiguous(bias)
        t = _config("fwd", M, N, K, x.dtype)
        i64 = _needs_i64(x, weight, y)
        _check_tiles(i64, ("x", x, t.BP, t.BR), ("weight", weight, t.BQ, t.BR),
                     ("y", y, t.BP, t.BQ))
        grid = (triton.cdiv(M, t.BP) * triton.cdiv(N, t.BQ),)
        wrap_triton(_dense_forward_kernel)[grid](
            x, weight, bias if bias is not None else y, y, z if store_z else y, M, N, K,
            x.stride(0), x.stride(1), weight.stride(0), weight.stride(1), param_of(act),
            HAS_BIAS=bias is not None, CODE=code_of(act), STORE_Z=store_z,
            PRECISION=_precision(x.dtype), BM=t.BP, BN=t.BQ, BK=t.BR, GROUP=GROUP,
            I64=i64, num_warps=t.num_warps, num_stages=t.num_stages)
    if act is None:
        return y, None
    return y, (z if store_z else y)


def _grad_gemm(dy_pr: torch.Tensor, s_pr: torch.Tensor | None, b_rq: torch.Tensor | None,
               out: torch.Tensor | None, db: torch.Tensor | None, act: Activation | None,
               P: int, Q: int, R: int) -> None:
    """out [P, Q] = dz b_rq and db [P] = row sums of dz, with dz = dy * f'(s) ([P, R] views)."""
    t = _config("bwd", P, Q, R, dy_pr.dtype)
    compute_c = out is not None
    grid = (triton.cdiv(P, t.BP) * triton.cdiv(Q, t.BQ),) if compute_c else (triton.cdiv(P, t.BP),)
    s_pr = s_pr if s_pr is not None else dy_pr
    b_rq = b_rq if b_rq is not None else dy_pr.t()
    i64 = _needs_i64(dy_pr, s_pr, b_rq, *(o for o in (out, db) if o is not None))
    _check_tiles(i64, ("grad_y", dy_pr, t.BP, t.BR), ("saved", s_pr, t.BP, t.BR),
                 ("b", b_rq if compute_c else None, t.BR, t.BQ))
    wrap_triton(_dense_grad_kernel)[grid](
        dy_pr, s_pr, b_rq, out if compute_c else dy_pr, db if db is not None else dy_pr, P, Q, R,
        dy_pr.stride(0), dy_pr.stride(1), s_pr.stride(0), s_pr.stride(1),
        b_rq.stride(0), b_rq.stride(1), param_of(act),
        CODE=code_of(act), COMPUTE_C=compute_c, BIAS_GRAD=db is not None,
        PRECISION=_precision(dy_pr.dtype), BP=t.BP, BQ=t.BQ, BR=t.BR, GROUP=GROUP,
        I64=i64,
        num_warps=t.num_warps, num_stages=t.num_stages)


def dense_backward(grad_y: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                   saved: torch.Tensor | None, act: Activation | None, needs
                   ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """grad_y [M, N] -> (grad_x [M, K], grad_weight [N, K], grad_bias [N]); a gradient that
    ``needs`` does not ask for is None."""
    _check(x, weight)
    M, K = x.shape
    N = weight.shape[0]
    if act is not None and saved is None:
        raise ValueError("dense_backward: an activation needs the saved tensor")
    if grad_y.shape != (M, N):
        raise ValueError(f"dense_backward: grad_y {tuple(grad_y.shape)} is not [{M}, {N}]")
    grad_y = grad_y.to(x.dtype)
    need_x, need_w, need_b = (tuple(needs) + (False, False, False))[:3]
    gx = alloc.empty((M, K), dtype=x.dtype, device=x.device) if need_x else None
    gw = alloc.empty((N, K), dtype=weight.dtype, device=x.device) if need_w else None
    gb = alloc.empty((N,), dtype=weight.dtype, device=x.device) if need_b else None
    if M == 0:  # sums over no rows
        if gw is not None:
            gw.zero_()
        if gb is not None:
            gb.zero_()
        return gx, gw, gb
    s = saved if act is not None else None
    if gx is not None and K and N:
        _grad_gemm(grad_y, s, weight, gx, None, act, M, K, N)
    elif gx is not None:
        gx.zero_()
    if gw is not None or gb is not None:
        if N and (K or gb is not None):
            _grad_gemm(grad_y.t(), s.t() if s is not None else None, x if gw is not None else None,
                       gw if K else None, gb, act, N, K, M)
    return gx, gw, gb


# Spills measured for sm_90 (tests/test_aot.py under triton 3.9, and 3.6, the GPU image's):
# with 64-bit program bases and 32-bit tile offsets (I64), 3.9 spills only in the fp32 ieee dW
# GEMM at 64x64x32 (168 registers, a 24-byte stack, 14 spill instructions); 3.6 only in the
# 16-bit 128x128 gelu_tanh forward (46 spill instructions at 255 registers; 144 with 64-bit
# tile offsets). Both run only for operands past 2^31 elements. 3.6 also spills one register
# (2 instructions) in the fp32 ieee 128x128 gelu_tanh forward without bias (TF32 off).
_SPILLS = {
    "i64 fp32 dW": "64-bit variant of the fp32 ieee dW GEMM (operands past 2^31 elements, TF32 "
                   "off) only: triton 3.9's ptxas keeps 168 registers and spills 5 to a 24-byte "
                   "stack",
    "i64 16-bit fwd": "64-bit variant (operands past 2^31 elements) of the 16-bit 128x128 "
                      "gelu_tanh forward: triton 3.6 spills at 255 registers (3.9 does not)",
    "fp32 no-bias fwd": "fp32 ieee 128x128 gelu_tanh forward without bias (TF32 off): triton 3.6 "
                        "spills one register (3.9 does not)",
}


def _spill_reason(c: AOTConfig) -> str:
    """The measured reason a configuration may spill ("" when it must not)."""
    k = c.constexprs
    if c.kernel is _dense_grad_kernel:
        fp32_dw = (k["I64"] and c.dtype == "fp32" and k["PRECISION"] == "ieee" and k["BP"] == 64
                   and k.get("stride_dp") == 1 and not k["BIAS_GRAD"])
        return _SPILLS["i64 fp32 dW"] if fp32_dw else ""
    wide_gelu = k["BM"] == 128 and k["CODE"] != 0
    if k["I64"] and wide_gelu and c.dtype in ("bf16", "fp16"):
        return _SPILLS["i64 16-bit fwd"]
    if not k["HAS_BIAS"] and wide_gelu and c.dtype == "fp32" and k["PRECISION"] == "ieee":
        return _SPILLS["fp32 no-bias fwd"]
    return ""


def aot_configs() -> list[AOTConfig]:
    """Every tile shape of ``_TILES``, for fp32 (ieee and tf32) or bf16 / fp16, with gelu_tanh
    (the heaviest epilogue / prologue: it bounds registers; other codes differ in constexpr
    arithmetic only), plus the plain bf16 forward. Backward: the dx GEMM and the dW GEMM for
    every dtype, the dW GEMM with the fused bias reduction and the bias-only reduction for
    fp32-tf32 and bf16.

    Strides are specialised as the JIT specialises them for row-major x, weight and grad_y (an
    integer argument equal to 1 becomes a constant): x and weight have unit K strides; dx reads
    dz along its rows (R = N) and W along K; dW reads dz^T down its columns (P = N) and x along K.
    """
    gelu = NAMES.index("gelu_tanh") + 1
    fwd_sig = {"x_ptr": "", "w_ptr": "", "b_ptr": "", "y_ptr": "", "z_ptr": "", "M": "i32",
               "N": "i32", "K": "i32", "stride_xm": "i32", "stride_xk": "constexpr",
               "stride_wn": "i32", "stride_wk": "constexpr", "param": "fp32"}
    grad_sig = {"dy_ptr": "", "s_ptr": "", "b_ptr": "", "c_ptr": "", "db_ptr": "", "P": "i32",
                "Q": "i32", "R": "i32", "stride_dp": "i32", "stride_dr": "i32",
                "stride_sp": "i32", "stride_sr": "i32", "stride_br": "i32",
                "stride_bq": "constexpr", "param": "fp32"}
    unit = {"dx": ("stride_dr", "stride_sr"), "dW": ("stride_dp", "stride_sp")}
    configs = []
    for (which, kind, size), t in _TILES.items():
        dtypes = ([("fp32", "ieee"), ("fp32", "tf32")] if kind == "fp32"
                  else [("bf16", "ieee"), ("fp16", "ieee")])
        for dtype, precision in dtypes:
            mma = "" if precision == "ieee" and dtype == "fp32" else "HGMMA"
            ptr = f"*{dtype}"
            main = dtype == "bf16" or precision == "tf32"
            if which == "fwd":
                sig = {k: (ptr if v == "" else v) for k, v in fwd_sig.items()}
                sig.update({k: "constexpr" for k in ("HAS_BIAS", "CODE", "STORE_Z", "PRECISION",
                                                     "BM", "BN", "BK", "GROUP", "I64")})
                for code in ((gelu, 0) if dtype == "bf16" else (gelu,)):
                    act = NAMES[code - 1] if code else "identity"
                    configs.append(AOTConfig(
                        _dense_forward_kernel, sig,
                        dict(HAS_BIAS=True, CODE=code, STORE_Z=code != 0, PRECISION=precision,
                             BM=t.BP, BN=t.BQ, BK=t.BR, GROUP=GROUP, I64=False, stride_xk=1,
                             stride_wk=1),
                        num_warps=t.num_warps, num_stages=t.num_stages, dtype=dtype,
                        expect_mma=mma, label=f"fwd {act} {precision} {t.label}"))
                continue
            variants = [("dx", True, False), ("dW", True, False)]
            if main:
                variants += [("dW", True, True), ("dW", False, True)]
            for gemm, compute_c, bias_grad in variants:
                sig = {k: (ptr if v == "" else v) for k, v in grad_sig.items()}
                sig.update({k: "constexpr" for k in ("CODE", "COMPUTE_C", "BIAS_GRAD",
                                                     "PRECISION", "BP", "BQ", "BR", "GROUP",
                                                     "I64", *unit[gemm])})
                what = gemm if not bias_grad else ("dW+db" if compute_c else "db")
                configs.append(AOTConfig(
                    _dense_grad_kernel, sig,
                    dict(CODE=gelu, COMPUTE_C=compute_c, BIAS_GRAD=bias_grad,
                         PRECISION=precision, BP=t.BP, BQ=t.BQ, BR=t.BR, GROUP=GROUP, I64=False,
                         stride_bq=1, **{name: 1 for name in unit[gemm]}),
                    num_warps=t.num_warps, num_stages=t.num_stages, dtype=dtype,
                    expect_mma=mma if compute_c else "",
                    label=f"bwd {what} gelu_tanh {precision} {t.label}"))
    # Linear(bias=False) and the LSTM's bias-free projections take the HAS_BIAS=False forward;
    # operands past 2^31 elements take the 64-bit offset (I64) variant of every kernel.
    configs += [dataclasses.replace(c, constexprs=dict(c.constexprs, HAS_BIAS=False),
                                    label=f"{c.label} no-bias")
                for c in configs if c.kernel is _dense_forward_kernel]
    configs += [dataclasses.replace(c, constexprs=dict(c.constexprs, I64=True),
                                    label=f"{c.label} i64")
                for c in list(configs) if c.constexprs.get("HAS_BIAS", True)]
    return [dataclasses.replace(c, spill_reason=_spill_reason(c)) for c in configs]

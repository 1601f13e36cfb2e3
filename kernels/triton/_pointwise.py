"""Shared pieces of H4's elementwise and reduction kernels (private to this package).

- ``plan``: how a kernel walks several same-shaped tensors: one flat pass over storage when they
  share one dense layout (contiguous, channels_last, any permutation without gaps), else logical
  row-major indices mapped to each tensor's storage through (up to 6 collapsed) strides.
- ``block_indices`` / ``strided_offset`` / ``element_offset``: the matching @triton.jit index
  helpers.
- ``sum_partials``: a deterministic finishing reduction of per-program partial sums.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch.library import wrap_triton

from .. import alloc
from ..layout import is_dense

MAX_DIMS = 6
INT32_LIMIT = 2 ** 31 - 1


KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def check_dtypes(op: str, **tensors: torch.Tensor | None) -> None:
    """The kernels compute in fp32: float64 (or anything but fp32 / fp16 / bf16) is refused
    rather than silently computed at lower precision."""
    for name, t in tensors.items():
        if t is not None and t.dtype not in KERNEL_DTYPES:
            raise TypeError(f"{op} (triton): {name} has dtype {t.dtype}; the Triton kernels take "
                            "float32, float16 or bfloat16 (use the 'reference' backend for "
                            "float64)")


@dataclass
class Plan:
    flat: bool              # every tensor: element i at storage offset i
    sizes: list[int]        # 6 logical sizes (leading 1s), row-major order
    strides: list[list[int]]  # per tensor, 6 element strides
    i64: bool               # indices or offsets may pass 2**31 - 1


def plan(tensors: list[torch.Tensor], logical_order: bool = False) -> Plan:
    """A walk over same-shaped ``tensors``. ``logical_order``: the kernel needs the row-major
    logical index of each element (dropout's random stream), so a flat pass needs contiguity."""
    shape = list(tensors[0].shape)
    numel = tensors[0].numel()
    span = max((sum((s - 1) * abs(st) for s, st in zip(t.shape, t.stride())) + 1
                for t in tensors), default=1)
    i64 = max(numel, span) + 1024 > INT32_LIMIT
    first = tensors[0].stride()
    same = all(t.stride() == first for t in tensors)
    if same and (tensors[0].is_contiguous() if logical_order else is_dense(tensors[0])):
        return Plan(True, [1] * (MAX_DIMS - 1) + [numel], [[0] * MAX_DIMS] * len(tensors), i64)
    # collapse neighbouring dims that are contiguous with each other in every tensor
    dims = [(s, [t.stride(d) for t in tensors]) for d, s in enumerate(shape) if s != 1]
    merged: list[tuple[int, list[int]]] = []
    for size, strides in dims:
        if merged and all(prev == cur * size for prev, cur in zip(merged[-1][1], strides)):
            merged[-1] = (merged[-1][0] * size, strides)
        else:
            merged.append((size, strides))
    if len(merged) > MAX_DIMS:
        raise ValueError(f"gpudnn triton: tensors with more than {MAX_DIMS} non-mergeable "
                         f"dimensions are not supported (shape {tuple(shape)})")
    merged = [(1, [0] * len(tensors))] * (MAX_DIMS - len(merged)) + merged
    sizes = [s for s, _ in merged]
    strides = [[st[k] for _, st in merged] for k in range(len(tensors))]
    return Plan(False, sizes, strides, i64)


@triton.jit
def block_indices(BLOCK: tl.constexpr, I64: tl.constexpr):
    """The BLOCK flat indices of this program (int64 when I64)."""
    pid = tl.program_id(0)
    if I64:
        start = pid.to(tl.int64) * BLOCK
    else:
        start = pid * BLOCK
    return start + tl.arange(0, BLOCK)


@triton.jit
def strided_offset(i, s1, s2, s3, s4, s5, t0, t1, t2, t3, t4, t5):
    """Storage offset of row-major logical index i in a 6-d tensor of sizes (., s1..s5) and
    strides t0..t5."""
    r = i
    off = (r % s5) * t5
    r = r // s5
    off += (r % s4) * t4
    r = r // s4
    off += (r % s3) * t3
    r = r // s3
    off += (r % s2) * t2
    r = r // s2
    off += (r % s1) * t1
    r = r // s1
    off += r * t0
    return off


@triton.jit
def element_offset(i, FLAT: tl.constexpr, s1, s2, s3, s4, s5, t0, t1, t2, t3, t4, t5):
    """Storage offset of logical index i: i itself when FLAT (a dense layout shared by every
    tensor the kernel walks), else ``strided_offset``."""
    if FLAT:
        off = i
    else:
        off = strided_offset(i, s1, s2, s3, s4, s5, t0, t1, t2, t3, t4, t5)
    return off


@triton.jit
def _sum_partials_kernel(out_ptr, partial_ptr, n_partials, scale, BLOCK: tl.constexpr):
    """out[0] = scale * sum(partial[0:n_partials]).

    out_ptr: [1] (any float dtype); partial_ptr: [n_partials] fp32.
    """
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for start in range(0, n_partials, BLOCK):
        idx = start + tl.arange(0, BLOCK)
        acc += tl.load(partial_ptr + idx, mask=idx < n_partials, other=0.0)
    total = tl.sum(acc, axis=0) * scale
    tl.store(out_ptr, total.to(out_ptr.dtype.element_ty))


SUM_BLOCK = 1024


def sum_partials(partials: torch.Tensor, dtype: torch.dtype, scale: float) -> torch.Tensor:
    """0-d tensor of ``dtype``: scale * the sum of the fp32 ``partials``."""
    out = alloc.empty((), dtype=dtype, device=partials.device)
    wrap_triton(_sum_partials_kernel)[(1,)](out, partials, partials.numel(), scale, BLOCK=SUM_BLOCK,
                               num_warps=4)
    return out


def sum_partials_aot(dtypes=("fp32", "fp16", "bf16")):
    from .aot import AOTConfig
    sig = {"out_ptr": "", "partial_ptr": "*fp32", "n_partials": "i32", "scale": "fp32",
           "BLOCK": "constexpr"}
    return [AOTConfig(_sum_partials_kernel, dict(sig, out_ptr=f"*{dtype}"),
                      dict(BLOCK=SUM_BLOCK), num_warps=4, num_stages=1, dtype=dtype,
                      label="sum partials") for dtype in dtypes]


def aot_all() -> bool:
    """GPUDNN_AOT_ALL=1: the families list every configuration (every activation code, dtype
    and variant); by default a representative selection that keeps CI's compile time small:
    every block shape the heuristics pick, with the heaviest activation code, fp32 and bf16."""
    return os.environ.get("GPUDNN_AOT_ALL", "0") not in ("", "0")


def select(configs: list, keep) -> list:
    """All ``configs`` under GPUDNN_AOT_ALL=1, else those for which ``keep(config)`` holds."""
    return configs if aot_all() else [c for c in configs if keep(c)]


# Measured for sm_90: the strided (not FLAT) elementwise kernels decode up to 6 dims of 64-bit
# sizes and strides per element in their I64 variant and spill (~40-90 spill instructions).
STRIDED_I64_SPILLS = ("64-bit strided indexing for non-contiguous tensors past 2^31 elements "
                      "only: correct, spills while decoding 6 dims of 64-bit sizes and strides")


def i64_variants(configs: list, strided_spill_reason: str = "") -> list:
    """The 64-bit offset (I64) variant of each configuration: I64=True, and every int argument
    typed i64 as the JIT types an int past 2^31 (the sizes and strides of such tensors). The
    strided (FLAT=False) ones carry ``strided_spill_reason``."""
    import dataclasses
    return [dataclasses.replace(
        c, constexprs=dict(c.constexprs, I64=True), label=f"{c.label} i64",
        signature={k: ("i64" if v == "i32" else v) for k, v in c.signature.items()},
        spill_reason="" if c.constexprs.get("FLAT", True) else strided_spill_reason)
        for c in configs]

"""What the Triton recurrences (``lstm.py``, ``gru.py``) share: the step kernels' tile and gate
GEMM helpers, the block-size heuristic and grid, the step loops' cache keys and their run
through a pointer table and a CUDA graph (``kernels/graphs.py``), and the AOT variants.

A step loop is a function of a key (a frozen dataclass: everything its launches depend on) and
a pointer table only, so that its launches can be captured once per key and replayed."""
from __future__ import annotations

import dataclasses
import itertools
from typing import Callable, Iterator

import torch
import triton
import triton.language as tl

from ..graphs import LaunchGraphs, on_device
from ..limits import check_grid
from ._table import TL_DTYPES, write_pointer_table
from .aot import SIGNATURE_DTYPES

DTYPES = (torch.float32, torch.float16, torch.bfloat16)


# --- kernel helpers ------------------------------------------------------------------------

@triton.jit
def gate_dot(a, w_ptr, gate_rows, offs_k, mask_wk, stride_wr, stride_wc, acc,
             PRECISION: tl.constexpr):
    """acc + a [BB, BK] @ W[gate_rows, offs_k]^T ([BK, BH] tile of W^T)."""
    w = tl.load(w_ptr + gate_rows[None, :] * stride_wr + offs_k.to(tl.int64)[:, None] * stride_wc,
                mask=mask_wk, other=0.0)
    return tl.dot(a, w, acc, input_precision=PRECISION)


@triton.jit
def hidden_gates(h_rows, stride_hph, w_hh_ptr, stride_wr, stride_wc, offs_h, mask_b, mask_h,
                 hidden, GATES: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr,
                 BLOCK_K: tl.constexpr, PRECISION: tl.constexpr):
    """h_{t-1} W_hh^T for the hidden units ``offs_h`` of each of GATES (3 or 4) gates, fp32
    [BLOCK_B, BLOCK_H] each (the fourth is zeros when GATES == 3): h_rows are the addresses of
    the block's rows of h_{t-1} (columns stride_hph apart), W_hh [GATES*H, H]."""
    rows_0 = offs_h.to(tl.int64)
    rows_1 = rows_0 + hidden
    rows_2 = rows_1 + hidden
    rows_3 = rows_2 + hidden
    acc_0 = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
    acc_1 = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
    acc_2 = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
    acc_3 = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
    for k0 in range(0, hidden, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < hidden
        a = tl.load(h_rows + offs_k.to(tl.int64)[None, :] * stride_hph,
                    mask=mask_b[:, None] & mask_k[None, :], other=0.0)
        mask_wk = mask_k[:, None] & mask_h[None, :]
        acc_0 = gate_dot(a, w_hh_ptr, rows_0, offs_k, mask_wk, stride_wr, stride_wc, acc_0,
                         PRECISION)
        acc_1 = gate_dot(a, w_hh_ptr, rows_1, offs_k, mask_wk, stride_wr, stride_wc, acc_1,
                         PRECISION)
        acc_2 = gate_dot(a, w_hh_ptr, rows_2, offs_k, mask_wk, stride_wr, stride_wc, acc_2,
                         PRECISION)
        if GATES == 4:
            acc_3 = gate_dot(a, w_hh_ptr, rows_3, offs_k, mask_wk, stride_wr, stride_wc, acc_3,
                             PRECISION)
    return acc_0, acc_1, acc_2, acc_3


@triton.jit
def load_gates(gates_ptr, wide, hidden, mask):
    """The four saved gate tiles at ``wide`` (offsets into a [B, 4H] row block), fp32."""
    return (tl.load(gates_ptr + wide, mask=mask, other=0.0).to(tl.float32),
            tl.load(gates_ptr + wide + hidden, mask=mask, other=0.0).to(tl.float32),
            tl.load(gates_ptr + wide + 2 * hidden, mask=mask, other=0.0).to(tl.float32),
            tl.load(gates_ptr + wide + 3 * hidden, mask=mask, other=0.0).to(tl.float32))


@triton.jit
def store_gates(gates_ptr, wide, hidden, gate_0, gate_1, gate_2, gate_3, mask):
    """Save four gate tiles at ``wide`` (offsets into a [B, 4H] row block), in the tensor's
    dtype."""
    out_ty = gates_ptr.dtype.element_ty
    tl.store(gates_ptr + wide, gate_0.to(out_ty), mask=mask)
    tl.store(gates_ptr + wide + hidden, gate_1.to(out_ty), mask=mask)
    tl.store(gates_ptr + wide + 2 * hidden, gate_2.to(out_ty), mask=mask)
    tl.store(gates_ptr + wide + 3 * hidden, gate_3.to(out_ty), mask=mask)


@triton.jit
def step_tile(batch, hidden, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr):
    """This program's batch rows (program_id(1)) and hidden units (program_id(0)) of a step,
    and their masks."""
    offs_b = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_h = tl.program_id(0) * BLOCK_H + tl.arange(0, BLOCK_H)
    return offs_b, offs_h, offs_b < batch, offs_h < hidden


@triton.jit
def grad_h_tile(grad_next_ptr, next_stride, k_next, w_hh_ptr, stride_wr, stride_wc,
                grad_y_ptr, stride_gyb, stride_gyh, offs_b, offs_h, mask_b, mask_h,
                BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
                PRECISION: tl.constexpr):
    """The gradient reaching h in a step's [BLOCK_B, BLOCK_H] block, fp32: grad_y[b, h] plus
    sum over k < k_next of grad_next[b, k] W_hh[k, h], where grad_next holds the pre-activation
    gradients of the position processed before (rows ``next_stride`` apart; k_next = 0 on the
    first backward step)."""
    rows64 = offs_b.to(tl.int64)
    cols64 = offs_h.to(tl.int64)
    grad_h = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
    a_rows = grad_next_ptr + rows64[:, None] * next_stride
    for k0 in range(0, k_next, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < k_next
        a = tl.load(a_rows + offs_k[None, :], mask=mask_b[:, None] & mask_k[None, :], other=0.0)
        w = tl.load(w_hh_ptr + offs_k.to(tl.int64)[:, None] * stride_wr
                    + cols64[None, :] * stride_wc, mask=mask_k[:, None] & mask_h[None, :],
                    other=0.0)
        grad_h = tl.dot(a, w, grad_h, input_precision=PRECISION)
    return grad_h + tl.load(grad_y_ptr + rows64[:, None] * stride_gyb
                            + cols64[None, :] * stride_gyh,
                            mask=mask_b[:, None] & mask_h[None, :], other=0.0).to(tl.float32)


# --- heuristics ----------------------------------------------------------------------------

def precision(dtype: torch.dtype) -> str:
    if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32:
        return "tf32"
    return "ieee"


def step_config(batch: int, hidden: int, dtype: torch.dtype) -> dict:
    """Block sizes of the step kernels. A step is latency-bound: narrow blocks of hidden units
    give many programs even at hidden 256; 64-row batch blocks use Hopper's warpgroup MMA.
    hidden is a runtime argument, so every size compiles to these few configurations (tl.dot
    needs every block dimension >= 16)."""
    block_b = 16 if batch <= 32 else 64
    block_k = 32 if dtype == torch.float32 else 64
    return dict(BLOCK_B=block_b, BLOCK_H=16, BLOCK_K=block_k, num_warps=4, num_stages=2)


def step_grid(op: str, cfg: dict, batch: int, hidden: int) -> tuple[int, int]:
    """The step kernels' grid (hidden blocks, batch blocks), refused before any work when the
    batch blocks pass CUDA's grid-axis-1 limit."""
    return check_grid(op, (triton.cdiv(hidden, cfg["BLOCK_H"]),
                           triton.cdiv(batch, cfg["BLOCK_B"])),
                      ("hidden blocks", "batch blocks"))


def check_dtype(op: str, x: torch.Tensor) -> None:
    if x.dtype not in DTYPES:
        raise TypeError(f"the triton {op} runs float32, float16 and bfloat16 tensors, got "
                        f"{x.dtype}; use the 'reference' backend for {x.dtype}")


# --- step loops ----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class StepLoop:
    """Everything a step loop's launches depend on besides the table (a cache key)."""
    steps: int
    batch: int
    hidden: int
    dtype: torch.dtype
    precision: str
    reverse: bool
    aligned: bool
    w_hh_strides: tuple


@dataclasses.dataclass(frozen=True)
class ForwardLoop(StepLoop):
    store_gates: bool
    h0_strides: tuple


def positions(steps: int, reverse: bool) -> list[int]:
    """The positions in the order the forward recurrence processes them."""
    return list(range(steps - 1, -1, -1)) if reverse else list(range(steps))


def forward_steps(steps: int, reverse: bool) -> list[tuple[int, int | None]]:
    """(position, the position processed just before it; None for the first), in the forward
    recurrence's order."""
    order = positions(steps, reverse)
    return [(t, order[k - 1] if k else None) for k, t in enumerate(order)]


def backward_steps(steps: int, reverse: bool) -> list[tuple[int, int | None, int | None]]:
    """(position, ``later``: the position the forward processed just after it, whose gradients
    the backward computed just before (None for the first backward step), ``earlier``: the one
    the forward processed just before it (None for the forward's first)), in backward order."""
    order = positions(steps, reverse)[::-1]
    return [(t, order[k - 1] if k else None, order[k + 1] if k + 1 < steps else None)
            for k, t in enumerate(order)]


def run_loop(loops: LaunchGraphs, loop: StepLoop, launch: Callable, tensors: list,
             device: torch.device) -> None:
    """Write the table of ``tensors`` and run the loop's launches ``launch(table, loop)``
    (replayed from a CUDA graph once captured; a single step is never worth a graph)."""
    with on_device(device):
        sequence = loops.sequence(loop, device, capture=loop.steps > 1)
        sequence.run(lambda table: write_pointer_table(table, tensors),
                     lambda table: launch(table, loop))


# --- ahead-of-time configurations ----------------------------------------------------------

def table_signature(kernel) -> dict[str, str]:
    """A step kernel's signature: the int64 pointer table, i32 integers, then constexprs."""
    return {p.name: "constexpr" if p.is_constexpr else "*i64" if p.name == "table_ptr" else "i32"
            for p in kernel.params}


def step_aot_variants() -> Iterator[tuple[str, dict, dict]]:
    """Every (label, constexprs, AOTConfig keywords) the step heuristic can pick: fp32 (ieee and
    tf32), fp16, bf16, with aligned tensors; each family adds its kernels' own flags."""
    variants = [(torch.float32, "ieee"), (torch.float32, "tf32"), (torch.float16, "ieee"),
                (torch.bfloat16, "ieee")]
    for dtype, prec in variants:
        seen = set()
        for batch, hidden in itertools.product((1, 32, 33, 128), (1, 256, 1024)):
            step = step_config(batch, hidden, dtype)
            key = (step["BLOCK_B"], step["BLOCK_H"])
            if key in seen:
                continue
            seen.add(key)
            blocks = {k: step[k] for k in ("BLOCK_B", "BLOCK_H", "BLOCK_K")}
            label = "B{BLOCK_B} H{BLOCK_H} K{BLOCK_K} {precision}".format(**blocks,
                                                                       precision=prec)
            # tensor cores unless fp32 runs in full precision; 64-row blocks get Hopper's wgmma
            mma = "" if prec == "ieee" and dtype == torch.float32 else \
                "HGMMA" if step["BLOCK_B"] == 64 else "HMMA"
            common = dict(num_warps=step["num_warps"], num_stages=step["num_stages"],
                          dtype=SIGNATURE_DTYPES[dtype], expect_mma=mma)
            constexprs = {"DTYPE": TL_DTYPES[dtype], "ALIGNED": True, **blocks,
                          "PRECISION": prec}
            yield label, constexprs, common


def unaligned_variants(configs: list) -> list:
    """Unaligned tensors (e.g. a view at an odd offset) drop the alignment hints only: the bf16
    configurations again with ALIGNED=False."""
    return [dataclasses.replace(c, constexprs=dict(c.constexprs, ALIGNED=False),
                                label=f"{c.label} unaligned")
            for c in configs if c.dtype == "bf16"]

"""Triton GRU: one layer-direction over a sequence (and the single cell step), forward and
backward through time. Launcher signatures and the formulas: ``gpudnn/reference/gru.py``.

Forward: the input projection of all T steps is one GEMM (``x W_ih^T + b_ih + (b_hr, b_hz,
0)``, [T*B, 3H]: b_hn stays apart, since r multiplies it); then one launch per step of
``_gru_step_forward_kernel``: ``h_{t-1} W_hh^T`` for the three gates of a block of hidden
units, plus the projection, b_hn, the gate nonlinearities and the new state in the epilogue.
Only h (the output) and, when backward will run, the gates r, z, n and gh_n = h W_hn^T + b_hn
are written.

Backward: one launch per step of ``_gru_step_backward_kernel``: ``dh_t = grad_y[t] + carry +
dgh_{t+1} W_hh`` (the GEMM; carry = dh_{t+1} * z_{t+1}, the direct path through
h = (h_prev - n) * z + n, starting at grad_h_n) and, in its epilogue, the step's pointwise
backward, writing the gradients of the input projection (dgi) and of the hidden projection
(dgh: equal but for the n block, times r) and the new carry. After the loop the parameter and
input gradients are each one GEMM over all T*B rows. The loops have no host synchronisation.

Launch overhead: as for the LSTM (``lstm.py``), the step kernels read their tensors' addresses
from a device pointer table (slots ``FWD_*`` / ``BWD_*``) and take only shape-derived
arguments, so each loop is captured once per shape in a CUDA graph and replayed
(``kernels/graphs.py``; ``GPUDNN_CUDA_GRAPHS=0`` turns it off).

saved (opaque, for this backend's backward): gates [T, B, 4H] ([B, 4H] for the cell) in the
input dtype: r, z, n, gh_n of each position.
"""
from __future__ import annotations

import dataclasses

import torch
import triton
import triton.language as tl

from .. import alloc
from ..graphs import LaunchGraphs
from ._recurrent import (ForwardLoop, StepLoop, backward_steps, check_dtype, forward_steps,
                         grad_h_tile, hidden_gates, load_gates, positions, precision, run_loop,
                         step_aot_variants, step_config, step_grid, step_tile, store_gates,
                         table_signature, unaligned_variants)
from ._table import TABLE_SLOTS, TL_DTYPES, addresses_aligned, load_pointer
from .activations import SIGMOID, TANH, apply_activation
from .aot import AOTConfig
from .dense import dense_backward, dense_forward

_SIGMOID = tl.constexpr(SIGMOID)
_TANH = tl.constexpr(TANH)

# pointer-table slots of the forward step loop
FWD_X_PROJ, FWD_W_HH, FWD_B_HN, FWD_H0, FWD_Y, FWD_GATES = range(6)
_FWD_X_PROJ, _FWD_W_HH, _FWD_B_HN, _FWD_Y, _FWD_GATES = (
    tl.constexpr(v) for v in (FWD_X_PROJ, FWD_W_HH, FWD_B_HN, FWD_Y, FWD_GATES))
# pointer-table slots of the backward step loop
BWD_GRAD_GI, BWD_GRAD_GH, BWD_W_HH, BWD_GRAD_Y, BWD_CARRY, BWD_GATES, BWD_Y, BWD_H0 = range(8)
_BWD_GRAD_GI, _BWD_GRAD_GH, _BWD_W_HH, _BWD_GRAD_Y, _BWD_CARRY, _BWD_GATES = (
    tl.constexpr(v) for v in (BWD_GRAD_GI, BWD_GRAD_GH, BWD_W_HH, BWD_GRAD_Y, BWD_CARRY,
                              BWD_GATES))


# --- kernels -------------------------------------------------------------------------------

# step indices vary per launch of a loop: not specialised, so one compiled variant serves all
@triton.jit(do_not_specialize=("step", "prev_step"))
def _gru_step_forward_kernel(
        table_ptr, step, prev_h_slot, prev_step,
        batch, hidden,
        stride_wr, stride_wc, stride_hpb, stride_hph,
        DTYPE: tl.constexpr, STORE_GATES: tl.constexpr, ALIGNED: tl.constexpr,
        BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
        PRECISION: tl.constexpr):
    """Step ``step`` of the recurrence for a [BLOCK_B, BLOCK_H] block of (batch row, hidden
    unit). table_ptr: int64 [8], the addresses (``FWD_*`` slots) of

    x_proj [T, B, 3H] contiguous DTYPE: x W_ih^T + b_ih + (b_hr, b_hz, 0) of every step;
    w_hh [3H, H] DTYPE (strides stride_wr, stride_wc); b_hn [H] contiguous DTYPE (any
    alignment); h0 [B, H] DTYPE; y [T, B, H] contiguous DTYPE (output h of each step);
    gates [T, B, 4H] contiguous DTYPE: r, z, n, gh_n, stored iff STORE_GATES.

    h_{t-1} is row ``prev_step`` of the tensor in slot ``prev_h_slot`` (h0 or y, strides
    stride_hpb, stride_hph).
    """
    w_hh_ptr = load_pointer(table_ptr, _FWD_W_HH, DTYPE, ALIGNED)
    h_prev_ptr = (load_pointer(table_ptr, prev_h_slot, DTYPE, ALIGNED)
                  + prev_step.to(tl.int64) * batch * hidden)
    offs_b, offs_h, mask_b, mask_h = step_tile(batch, hidden, BLOCK_B, BLOCK_H)
    h_rows = h_prev_ptr + offs_b.to(tl.int64)[:, None] * stride_hpb
    acc_r, acc_z, acc_n, _ = hidden_gates(h_rows, stride_hph, w_hh_ptr, stride_wr, stride_wc,
                                          offs_h, mask_b, mask_h, hidden, 3, BLOCK_B, BLOCK_H,
                                          BLOCK_K, PRECISION)

    # the epilogue's addresses, read after the loop: not held in registers across it
    step64 = step.to(tl.int64)
    x_proj_ptr = (load_pointer(table_ptr, _FWD_X_PROJ, DTYPE, ALIGNED)
                  + step64 * batch * 3 * hidden)
    b_hn_ptr = load_pointer(table_ptr, _FWD_B_HN, DTYPE, False)  # b_hh[2H:]: any alignment
    h_ptr = load_pointer(table_ptr, _FWD_Y, DTYPE, ALIGNED) + step64 * batch * hidden
    gates_ptr = (load_pointer(table_ptr, _FWD_GATES, DTYPE, ALIGNED)
                 + step64 * batch * 4 * hidden)
    mask = mask_b[:, None] & mask_h[None, :]
    rows64 = offs_b.to(tl.int64)
    proj = rows64[:, None] * (3 * hidden) + offs_h[None, :]  # [B, 3H] gate r
    narrow = rows64[:, None] * hidden + offs_h[None, :]     # [B, H]
    h_prev = tl.load(h_rows + offs_h.to(tl.int64)[None, :] * stride_hph, mask=mask,
                     other=0.0).to(tl.float32)
    gate_r = apply_activation(
        acc_r + tl.load(x_proj_ptr + proj, mask=mask, other=0.0).to(tl.float32), _SIGMOID, 0.0)
    gate_z = apply_activation(
        acc_z + tl.load(x_proj_ptr + proj + hidden, mask=mask, other=0.0).to(tl.float32),
        _SIGMOID, 0.0)
    gh_n = acc_n + tl.load(b_hn_ptr + offs_h, mask=mask_h, other=0.0).to(tl.float32)[None, :]
    gate_n = apply_activation(
        tl.load(x_proj_ptr + proj + 2 * hidden, mask=mask, other=0.0).to(tl.float32)
        + gate_r * gh_n, _TANH, 0.0)
    h = (h_prev - gate_n) * gate_z + gate_n  # torch's form: NaN and inf as torch's
    tl.store(h_ptr + narrow, h.to(h_ptr.dtype.element_ty), mask=mask)
    if STORE_GATES:
        store_gates(gates_ptr, rows64[:, None] * (4 * hidden) + offs_h[None, :], hidden,
                    gate_r, gate_z, gate_n, gh_n, mask)


@triton.jit(do_not_specialize=("step", "next_step", "prev_step"))
def _gru_step_backward_kernel(
        table_ptr, step, next_step, prev_h_slot, prev_step,
        batch, hidden, k_next,
        stride_wr, stride_wc, stride_gyt, stride_gyb, stride_gyh, stride_hpb, stride_hph,
        DTYPE: tl.constexpr, ALIGNED: tl.constexpr,
        BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
        PRECISION: tl.constexpr):
    """Backpropagation through time at position ``step`` for a [BLOCK_B, BLOCK_H] block.
    table_ptr: int64 [8], the addresses (``BWD_*`` slots) of

    grad_gi [T, B, 3H] contiguous DTYPE: dgi of each position, row ``step`` written here;
    grad_gh [T, B, 3H] contiguous DTYPE: dgh, row ``step`` written, row ``next_step`` (the
    position processed before, k_next = 3H of its columns; k_next = 0 on the first backward
    step) read; w_hh [3H, H] DTYPE (strides stride_wr, stride_wc); grad_y [T, B, H] DTYPE
    (strides stride_gyt, stride_gyb, stride_gyh); carry [B, H] contiguous fp32: dh * z of the
    position processed before (grad_h_n on the first backward step), replaced in place by this
    position's; gates [T, B, 4H] contiguous DTYPE: saved r, z, n, gh_n; y and h0 [B, H] DTYPE:
    h_{t-1} is row ``prev_step`` of the tensor in slot ``prev_h_slot`` (y or h0, strides
    stride_hpb, stride_hph).

    dh = grad_y[step] + carry + grad_gh[next_step] @ W_hh; then the pointwise backward of the
    step (``gpudnn/reference/gru.py``).
    """
    step64 = step.to(tl.int64)
    grad_gh_next_ptr = (load_pointer(table_ptr, _BWD_GRAD_GH, DTYPE, ALIGNED)
                        + next_step.to(tl.int64) * batch * 3 * hidden)
    w_hh_ptr = load_pointer(table_ptr, _BWD_W_HH, DTYPE, ALIGNED)
    grad_y_ptr = load_pointer(table_ptr, _BWD_GRAD_Y, DTYPE, ALIGNED) + step64 * stride_gyt
    carry_ptr = load_pointer(table_ptr, _BWD_CARRY, tl.float32, ALIGNED)
    # no alignment hint for the gates: Triton 3.9 vectorises their loads into another layout
    # than the MMA's, which takes 255 registers in the 64-row 16-bit configuration (140 without)
    gates_ptr = (load_pointer(table_ptr, _BWD_GATES, DTYPE, False)
                 + step64 * batch * 4 * hidden)
    h_prev_ptr = (load_pointer(table_ptr, prev_h_slot, DTYPE, ALIGNED)
                  + prev_step.to(tl.int64) * batch * hidden)
    grad_gi_ptr = (load_pointer(table_ptr, _BWD_GRAD_GI, DTYPE, ALIGNED)
                   + step64 * batch * 3 * hidden)
    grad_gh_ptr = (load_pointer(table_ptr, _BWD_GRAD_GH, DTYPE, ALIGNED)
                   + step64 * batch * 3 * hidden)
    offs_b, offs_h, mask_b, mask_h = step_tile(batch, hidden, BLOCK_B, BLOCK_H)
    mask = mask_b[:, None] & mask_h[None, :]
    rows64 = offs_b.to(tl.int64)
    cols64 = offs_h.to(tl.int64)
    narrow = rows64[:, None] * hidden + offs_h[None, :]
    grad_h = grad_h_tile(grad_gh_next_ptr, 3 * hidden, k_next, w_hh_ptr, stride_wr, stride_wc,
                         grad_y_ptr, stride_gyb, stride_gyh, offs_b, offs_h, mask_b, mask_h,
                         BLOCK_B, BLOCK_H, BLOCK_K, PRECISION) \
        + tl.load(carry_ptr + narrow, mask=mask, other=0.0)

    wide = rows64[:, None] * (4 * hidden) + offs_h[None, :]
    gate_r, gate_z, gate_n, gh_n = load_gates(gates_ptr, wide, hidden, mask)
    h_prev = tl.load(h_prev_ptr + rows64[:, None] * stride_hpb + cols64[None, :] * stride_hph,
                     mask=mask, other=0.0).to(tl.float32)
    grad_n = grad_h - grad_h * gate_z
    grad_z = grad_h * (h_prev - gate_n)
    grad_an = grad_n * (1.0 - gate_n * gate_n)
    grad_ar = (grad_an * gh_n * (1.0 - gate_r) * gate_r).to(grad_gi_ptr.dtype.element_ty)
    grad_az = (grad_z * (1.0 - gate_z) * gate_z).to(grad_gi_ptr.dtype.element_ty)
    proj = rows64[:, None] * (3 * hidden) + offs_h[None, :]
    tl.store(grad_gi_ptr + proj, grad_ar, mask=mask)
    tl.store(grad_gi_ptr + proj + hidden, grad_az, mask=mask)
    tl.store(grad_gi_ptr + proj + 2 * hidden, grad_an.to(grad_gi_ptr.dtype.element_ty),
             mask=mask)
    tl.store(grad_gh_ptr + proj, grad_ar, mask=mask)
    tl.store(grad_gh_ptr + proj + hidden, grad_az, mask=mask)
    tl.store(grad_gh_ptr + proj + 2 * hidden,
             (grad_an * gate_r).to(grad_gh_ptr.dtype.element_ty), mask=mask)
    tl.store(carry_ptr + narrow, grad_h * gate_z, mask=mask)


# --- launchers -----------------------------------------------------------------------------

def _input_projection(x2d, w_ih, b_ih, b_hh, hidden: int) -> torch.Tensor:
    """[T*B, I] -> [T*B, 3H] = x W_ih^T + b_ih + (b_hr, b_hz, 0), all steps in one dense GEMM."""
    bias = b_ih
    if b_hh is not None:
        rz = torch.cat([b_hh[:2 * hidden], b_hh.new_zeros(hidden)])
        bias = rz if b_ih is None else b_ih + rz
    return dense_forward(x2d, w_ih, bias, None)[0]


# --- step loops: functions of a key and a pointer table only (see kernels/graphs.py) ----------

@dataclasses.dataclass(frozen=True)
class _BackwardLoop(StepLoop):
    grad_y_strides: tuple
    h0_strides: tuple


_FORWARD_LOOPS = LaunchGraphs(TABLE_SLOTS)
_BACKWARD_LOOPS = LaunchGraphs(TABLE_SLOTS)


def _launch_forward_steps(table: torch.Tensor, loop: ForwardLoop) -> None:
    cfg = step_config(loop.batch, loop.hidden, loop.dtype)
    grid = step_grid("gru", cfg, loop.batch, loop.hidden)
    for t, previous in forward_steps(loop.steps, loop.reverse):
        if previous is None:  # h0
            h_slot, prev_step, strides = FWD_H0, 0, loop.h0_strides
        else:  # the step before, in y
            h_slot, prev_step, strides = FWD_Y, previous, (loop.hidden, 1)
        _gru_step_forward_kernel[grid](
            table, t, h_slot, prev_step, loop.batch, loop.hidden, *loop.w_hh_strides, *strides,
            DTYPE=TL_DTYPES[loop.dtype], STORE_GATES=loop.store_gates, ALIGNED=loop.aligned,
            PRECISION=loop.precision, **cfg)


def _launch_backward_steps(table: torch.Tensor, loop: _BackwardLoop) -> None:
    cfg = step_config(loop.batch, loop.hidden, loop.dtype)
    grid = step_grid("gru", cfg, loop.batch, loop.hidden)
    for t, later, earlier in backward_steps(loop.steps, loop.reverse):
        if earlier is None:  # the first position the forward processed: h_{t-1} = h0
            h_slot, prev_step, strides = BWD_H0, 0, loop.h0_strides
        else:
            h_slot, prev_step, strides = BWD_Y, earlier, (loop.hidden, 1)
        _gru_step_backward_kernel[grid](
            table, t, t if later is None else later, h_slot, prev_step, loop.batch, loop.hidden,
            0 if later is None else 3 * loop.hidden, *loop.w_hh_strides, *loop.grad_y_strides,
            *strides, DTYPE=TL_DTYPES[loop.dtype], ALIGNED=loop.aligned,
            PRECISION=loop.precision, **cfg)


def _forward(x, h0, w_ih, w_hh, b_ih, b_hh, reverse, y, gates) -> None:
    """Run one layer-direction into y [T, B, H] and (None: not saved) gates [T, B, 4H], both
    preallocated by the caller (base tensors or views of one, never handed out as views:
    autograd forbids in-place updates of outputs that are views)."""
    check_dtype("GRU", x)
    steps, batch, input_size = x.shape
    hidden = h0.shape[-1]
    if batch == 0 or hidden == 0:
        return
    step_grid("gru", step_config(batch, hidden, x.dtype), batch, hidden)  # before any work
    x_proj = _input_projection(x.reshape(steps * batch, input_size), w_ih, b_ih, b_hh, hidden)
    b_hn = b_hh[2 * hidden:].contiguous() if b_hh is not None else x.new_zeros(hidden)
    tensors = [None] * 6
    tensors[FWD_X_PROJ], tensors[FWD_W_HH], tensors[FWD_H0] = x_proj, w_hh, h0
    tensors[FWD_Y], tensors[FWD_GATES] = y, gates
    aligned = addresses_aligned(tensors)  # b_hn is read unaligned: checked apart
    tensors[FWD_B_HN] = b_hn
    loop = ForwardLoop(steps, batch, hidden, x.dtype, precision(x.dtype), bool(reverse),
                       aligned, tuple(w_hh.stride()), gates is not None, tuple(h0.stride()))
    run_loop(_FORWARD_LOOPS, loop, _launch_forward_steps, tensors, x.device)


def _backward(grad_y, grad_h_n, x, h0, w_ih, w_hh, y, gates, reverse, needs):
    """BPTT of one layer-direction; grad_h_n may be None (the cell has no separate h_n), y is
    None for a single step (h_{t-1} is h0)."""
    steps, batch, input_size = x.shape
    hidden = h0.shape[-1]
    dtype, device = x.dtype, x.device
    grad_gi = alloc.empty((steps, batch, 3 * hidden), dtype=dtype, device=device)
    grad_gh = alloc.empty((steps, batch, 3 * hidden), dtype=dtype, device=device)
    carry = alloc.empty((batch, hidden), dtype=torch.float32, device=device)
    if grad_h_n is not None:
        carry.copy_(grad_h_n)
    else:
        carry.zero_()
    order = positions(steps, reverse)[::-1]
    if batch and hidden:
        tensors = [None] * 8
        tensors[BWD_GRAD_GI], tensors[BWD_GRAD_GH], tensors[BWD_W_HH] = grad_gi, grad_gh, w_hh
        tensors[BWD_GRAD_Y], tensors[BWD_CARRY], tensors[BWD_GATES] = grad_y, carry, gates
        tensors[BWD_Y], tensors[BWD_H0] = y, h0
        loop = _BackwardLoop(steps, batch, hidden, dtype, precision(dtype), bool(reverse),
                             addresses_aligned(tensors), tuple(w_hh.stride()),
                             tuple(grad_y.stride()), tuple(h0.stride()))
        run_loop(_BACKWARD_LOOPS, loop, _launch_backward_steps, tensors, device)
    else:
        grad_gi.zero_()
        grad_gh.zero_()

    rows = steps * batch
    # x, W_ih and b_ih: one dense backward over every step's rows; W_hh and b_hh another
    grad_x, grad_w_ih, grad_b_ih = dense_backward(
        grad_gi.view(rows, 3 * hidden), x.reshape(rows, input_size), w_ih, None, None,
        (needs[0], needs[2], needs[4]))
    if grad_x is not None:
        grad_x = grad_x.view(steps, batch, input_size)
    grad_w_hh = grad_b_hh = None
    if needs[3] or needs[5]:
        # h_{t-1} of every position, in the order of the rows of grad_gh
        if steps == 1:  # the cell passes no y
            h_prev = h0
        else:
            h_prev = torch.cat([y[1:], h0[None]] if reverse else [h0[None], y[:-1]])
        _, grad_w_hh, grad_b_hh = dense_backward(
            grad_gh.view(rows, 3 * hidden), h_prev.reshape(rows, hidden), w_hh, None, None,
            (False, needs[3], needs[5]))
    grad_h0 = None
    if needs[1]:  # dh_0 = the carry past the first processed position + its dgh @ W_hh
        through_w = dense_backward(grad_gh[order[-1]], h0, w_hh, None, None,
                                   (True, False, False))[0] if steps else None
        if through_w is not None:
            carry += through_w
        grad_h0 = carry.to(dtype)
    return grad_x, grad_h0, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh


def gru_layer_forward(x, h0, w_ih, w_hh, b_ih, b_hh, reverse, save):
    steps, batch, _ = x.shape
    hidden = h0.shape[-1]
    y = alloc.empty((steps, batch, hidden), dtype=x.dtype, device=x.device)
    gates = alloc.empty((steps, batch, 4 * hidden), dtype=x.dtype, device=x.device) \
        if save else None
    _forward(x, h0, w_ih, w_hh, b_ih, b_hh, reverse, y, gates)
    last = 0 if reverse else steps - 1
    h_n = y[last].clone() if steps else h0.clone()
    return y, h_n, gates


def gru_layer_backward(grad_y, grad_h_n, x, h0, w_ih, w_hh, y, saved, reverse, needs):
    return _backward(grad_y, grad_h_n, x, h0, w_ih, w_hh, y, saved, reverse, needs)


def gru_cell_forward(x, h, w_ih, w_hh, b_ih, b_hh, save):
    batch, hidden = h.shape
    h_new = alloc.empty((batch, hidden), dtype=x.dtype, device=x.device)
    gates = alloc.empty((batch, 4 * hidden), dtype=x.dtype, device=x.device) if save else None
    _forward(x[None], h, w_ih, w_hh, b_ih, b_hh, False, h_new[None],
             gates[None] if save else None)
    return h_new, gates


def gru_cell_backward(grad_h, x, h, w_ih, w_hh, saved, needs):
    grads = _backward(grad_h[None], None, x[None], h, w_ih, w_hh, None, saved[None], False,
                      needs)
    return (grads[0][0] if grads[0] is not None else None, *grads[1:])


# --- ahead-of-time configurations ----------------------------------------------------------

def aot_configs() -> list[AOTConfig]:
    """Every configuration the heuristics above can pick (``step_aot_variants``): the forward
    step with and without storing the gates, the backward step; bf16 also unaligned. (The
    pointer-table write is the LSTM's configuration, compiled there.)"""
    configs = []
    for label, constexprs, common in step_aot_variants():
        for store in (False, True):
            configs.append(AOTConfig(
                kernel=_gru_step_forward_kernel,
                signature=table_signature(_gru_step_forward_kernel),
                constexprs={**constexprs, "STORE_GATES": store},
                label=f"gru step forward {label} store_gates={store}", **common))
        configs.append(AOTConfig(
            kernel=_gru_step_backward_kernel, signature=table_signature(_gru_step_backward_kernel),
            constexprs=constexprs, label=f"gru step backward {label}", **common))
    return configs + unaligned_variants(configs)

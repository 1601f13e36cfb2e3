"""Triton LSTM: one layer-direction over a sequence (and the single cell step), forward and
backward through time. Launcher signatures: ``gpudnn/reference/lstm.py``.

Forward: the input projection of all T steps is one GEMM (``x W_ih^T + b_ih + b_hh``, [T*B, 4H]);
then one launch per step of ``_lstm_step_forward_kernel``: ``h_{t-1} W_hh^T`` for the four gates
of a block of hidden units, plus the projection, the gate nonlinearities and the cell update in
the epilogue. Only h (the output), c (fp32) and, when backward will run, the post-nonlinearity
gates are written.

Backward: one launch per step of ``_lstm_step_backward_kernel``: ``dh_t = grad_y[t] +
dA_{t+1} W_hh`` (the GEMM) and, in its epilogue, the step's pointwise backward, writing the
pre-activation gradient dA_t and the carried cell gradient. After the loop the parameter and
input gradients are each one GEMM over all T*B rows. The loops have no host synchronisation.

Launch overhead: a Triton launch costs more host time than a small step kernel runs. The step
kernels therefore read their tensors' addresses from a device pointer table (slots ``FWD_*`` /
``BWD_*``) and take only shape-derived arguments, so each loop is captured once per shape in a
CUDA graph and replayed, the table rewritten first (``kernels/graphs.py``).

saved (opaque, for this backend's backward): (gates [T, B, 4H] in the input dtype, post-
nonlinearity i, f, g, o; cells [T, B, H] float32, the cell state after each position).
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
from ._table import (TABLE_SLOTS, TL_DTYPES, addresses_aligned, load_pointer,
                     write_table_aot_config)
from .activations import SIGMOID, TANH, apply_activation
from .aot import AOTConfig
from .dense import dense_backward, dense_forward

_SIGMOID = tl.constexpr(SIGMOID)
_TANH = tl.constexpr(TANH)


# --- kernels -------------------------------------------------------------------------------


# pointer-table slots of the forward step loop
FWD_X_PROJ, FWD_W_HH, FWD_H0, FWD_C0, FWD_Y, FWD_CELLS, FWD_GATES = range(7)
_FWD_X_PROJ, _FWD_W_HH, _FWD_Y, _FWD_CELLS, _FWD_GATES = (
    tl.constexpr(v) for v in (FWD_X_PROJ, FWD_W_HH, FWD_Y, FWD_CELLS, FWD_GATES))
# pointer-table slots of the backward step loop
BWD_GRAD_PRE, BWD_W_HH, BWD_GRAD_Y, BWD_GRAD_H_N, BWD_GRAD_C, BWD_GATES, BWD_CELLS, BWD_C0 = \
    range(8)
_BWD_GRAD_PRE, _BWD_W_HH, _BWD_GRAD_Y, _BWD_GRAD_H_N, _BWD_GRAD_C, _BWD_GATES, _BWD_CELLS = (
    tl.constexpr(v) for v in (BWD_GRAD_PRE, BWD_W_HH, BWD_GRAD_Y, BWD_GRAD_H_N, BWD_GRAD_C,
                              BWD_GATES, BWD_CELLS))


# step indices vary per launch of a loop: not specialised, so one compiled variant serves all
@triton.jit(do_not_specialize=("step", "prev_step"))
def _lstm_step_forward_kernel(
        table_ptr, step, prev_h_slot, prev_c_slot, prev_step,
        batch, hidden,
        stride_wr, stride_wc, stride_hpb, stride_hph,
        DTYPE: tl.constexpr, STORE_GATES: tl.constexpr, ALIGNED: tl.constexpr,
        BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
        PRECISION: tl.constexpr):
    """Step ``step`` of the recurrence for a [BLOCK_B, BLOCK_H] block of (batch row, hidden
    unit). table_ptr: int64 [8], the addresses (``FWD_*`` slots) of

    x_proj [T, B, 4H] contiguous DTYPE: x W_ih^T + b_ih + b_hh of every step;
    w_hh [4H, H] DTYPE (strides stride_wr, stride_wc); h0 [B, H] DTYPE; c0 [B, H] contiguous
    fp32; y [T, B, H] contiguous DTYPE (output h of each step); cells [T, B, H] contiguous fp32
    (output c of each step); gates [T, B, 4H] contiguous DTYPE: i, f, g, o after their
    nonlinearities, stored iff STORE_GATES.

    h_{t-1} is row ``prev_step`` of the tensor in slot ``prev_h_slot`` (h0 or y, strides
    stride_hpb, stride_hph); c_{t-1} likewise in ``prev_c_slot`` (c0 or cells).
    """
    step64 = step.to(tl.int64)
    x_proj_ptr = (load_pointer(table_ptr, _FWD_X_PROJ, DTYPE, ALIGNED)
                  + step64 * batch * 4 * hidden)
    w_hh_ptr = load_pointer(table_ptr, _FWD_W_HH, DTYPE, ALIGNED)
    h_prev_ptr = (load_pointer(table_ptr, prev_h_slot, DTYPE, ALIGNED)
                  + prev_step.to(tl.int64) * batch * hidden)
    c_prev_ptr = (load_pointer(table_ptr, prev_c_slot, tl.float32, ALIGNED)
                  + prev_step.to(tl.int64) * batch * hidden)
    h_ptr = load_pointer(table_ptr, _FWD_Y, DTYPE, ALIGNED) + step64 * batch * hidden
    c_ptr = load_pointer(table_ptr, _FWD_CELLS, tl.float32, ALIGNED) + step64 * batch * hidden
    gates_ptr = (load_pointer(table_ptr, _FWD_GATES, DTYPE, ALIGNED)
                 + step64 * batch * 4 * hidden)
    offs_b, offs_h, mask_b, mask_h = step_tile(batch, hidden, BLOCK_B, BLOCK_H)
    acc_i, acc_f, acc_g, acc_o = hidden_gates(
        h_prev_ptr + offs_b.to(tl.int64)[:, None] * stride_hpb, stride_hph, w_hh_ptr, stride_wr,
        stride_wc, offs_h, mask_b, mask_h, hidden, 4, BLOCK_B, BLOCK_H, BLOCK_K, PRECISION)

    mask = mask_b[:, None] & mask_h[None, :]
    wide = offs_b.to(tl.int64)[:, None] * (4 * hidden) + offs_h[None, :]  # [B, 4H] gate i
    narrow = offs_b.to(tl.int64)[:, None] * hidden + offs_h[None, :]      # [B, H]
    gate_i = apply_activation(
        acc_i + tl.load(x_proj_ptr + wide, mask=mask, other=0.0).to(tl.float32), _SIGMOID, 0.0)
    gate_f = apply_activation(
        acc_f + tl.load(x_proj_ptr + wide + hidden, mask=mask, other=0.0).to(tl.float32),
        _SIGMOID, 0.0)
    gate_g = apply_activation(
        acc_g + tl.load(x_proj_ptr + wide + 2 * hidden, mask=mask, other=0.0).to(tl.float32),
        _TANH, 0.0)
    gate_o = apply_activation(
        acc_o + tl.load(x_proj_ptr + wide + 3 * hidden, mask=mask, other=0.0).to(tl.float32),
        _SIGMOID, 0.0)
    c_prev = tl.load(c_prev_ptr + narrow, mask=mask, other=0.0)
    c = gate_f * c_prev + gate_i * gate_g
    h = gate_o * apply_activation(c, _TANH, 0.0)
    tl.store(c_ptr + narrow, c, mask=mask)
    tl.store(h_ptr + narrow, h.to(h_ptr.dtype.element_ty), mask=mask)
    if STORE_GATES:
        store_gates(gates_ptr, wide, hidden, gate_i, gate_f, gate_g, gate_o, mask)


@triton.jit(do_not_specialize=("step", "next_step", "prev_step"))
def _lstm_step_backward_kernel(
        table_ptr, step, next_step, prev_c_slot, prev_step,
        batch, hidden, k_next,
        stride_wr, stride_wc, stride_gyt, stride_gyb, stride_gyh, stride_ghb, stride_ghh,
        DTYPE: tl.constexpr, HAS_GRAD_H_N: tl.constexpr, ALIGNED: tl.constexpr,
        BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
        PRECISION: tl.constexpr):
    """Backpropagation through time at position ``step`` for a [BLOCK_B, BLOCK_H] block.
    table_ptr: int64 [8], the addresses (``BWD_*`` slots) of

    grad_pre [T, B, 4H] contiguous DTYPE: dA (pre-activation gradient) of each position, row
    ``step`` written here, row ``next_step`` (the position processed before, k_next = 4H of its
    columns; k_next = 0 on the first backward step) read;
    w_hh [4H, H] DTYPE (strides stride_wr, stride_wc); grad_y [T, B, H] DTYPE (strides
    stride_gyt, stride_gyb, stride_gyh); grad_h_n [B, H] DTYPE (strides stride_ghb, stride_ghh),
    read iff HAS_GRAD_H_N; grad_c [B, H] contiguous fp32: dc reaching c_t, replaced in place by
    dc reaching c_{t-1}; gates [T, B, 4H] contiguous DTYPE: saved i, f, g, o; cells [T, B, H]
    contiguous fp32: c of each position; c0 [B, H] contiguous fp32. c_{t-1} is row ``prev_step``
    of the tensor in slot ``prev_c_slot`` (cells or c0).

    dh = grad_y[step] + grad_h_n (iff HAS_GRAD_H_N) + grad_pre[next_step] @ W_hh; then the
    pointwise backward of the step.
    """
    step64 = step.to(tl.int64)
    grad_pre_next_ptr = (load_pointer(table_ptr, _BWD_GRAD_PRE, DTYPE, ALIGNED)
                         + next_step.to(tl.int64) * batch * 4 * hidden)
    w_hh_ptr = load_pointer(table_ptr, _BWD_W_HH, DTYPE, ALIGNED)
    grad_y_ptr = load_pointer(table_ptr, _BWD_GRAD_Y, DTYPE, ALIGNED) + step64 * stride_gyt
    grad_h_n_ptr = load_pointer(table_ptr, _BWD_GRAD_H_N, DTYPE, ALIGNED)
    grad_c_ptr = load_pointer(table_ptr, _BWD_GRAD_C, tl.float32, ALIGNED)
    gates_ptr = (load_pointer(table_ptr, _BWD_GATES, DTYPE, ALIGNED)
                 + step64 * batch * 4 * hidden)
    c_ptr = load_pointer(table_ptr, _BWD_CELLS, tl.float32, ALIGNED) + step64 * batch * hidden
    c_prev_ptr = (load_pointer(table_ptr, prev_c_slot, tl.float32, ALIGNED)
                  + prev_step.to(tl.int64) * batch * hidden)
    grad_pre_ptr = (load_pointer(table_ptr, _BWD_GRAD_PRE, DTYPE, ALIGNED)
                    + step64 * batch * 4 * hidden)
    offs_b, offs_h, mask_b, mask_h = step_tile(batch, hidden, BLOCK_B, BLOCK_H)
    mask = mask_b[:, None] & mask_h[None, :]
    rows64 = offs_b.to(tl.int64)
    cols64 = offs_h.to(tl.int64)
    grad_h = grad_h_tile(grad_pre_next_ptr, 4 * hidden, k_next, w_hh_ptr, stride_wr, stride_wc,
                         grad_y_ptr, stride_gyb, stride_gyh, offs_b, offs_h, mask_b, mask_h,
                         BLOCK_B, BLOCK_H, BLOCK_K, PRECISION)
    if HAS_GRAD_H_N:
        grad_h += tl.load(grad_h_n_ptr + rows64[:, None] * stride_ghb
                          + cols64[None, :] * stride_ghh, mask=mask, other=0.0).to(tl.float32)

    wide = rows64[:, None] * (4 * hidden) + offs_h[None, :]
    narrow = rows64[:, None] * hidden + offs_h[None, :]
    gate_i, gate_f, gate_g, gate_o = load_gates(gates_ptr, wide, hidden, mask)
    c = tl.load(c_ptr + narrow, mask=mask, other=0.0)
    c_prev = tl.load(c_prev_ptr + narrow, mask=mask, other=0.0)
    tanh_c = apply_activation(c, _TANH, 0.0)
    grad_c = tl.load(grad_c_ptr + narrow, mask=mask, other=0.0) \
        + grad_h * gate_o * (1.0 - tanh_c * tanh_c)
    out_ty = grad_pre_ptr.dtype.element_ty
    tl.store(grad_pre_ptr + wide, (grad_c * gate_g * gate_i * (1.0 - gate_i)).to(out_ty),
             mask=mask)
    tl.store(grad_pre_ptr + wide + hidden,
             (grad_c * c_prev * gate_f * (1.0 - gate_f)).to(out_ty), mask=mask)
    tl.store(grad_pre_ptr + wide + 2 * hidden,
             (grad_c * gate_i * (1.0 - gate_g * gate_g)).to(out_ty), mask=mask)
    tl.store(grad_pre_ptr + wide + 3 * hidden,
             (grad_h * tanh_c * gate_o * (1.0 - gate_o)).to(out_ty), mask=mask)
    tl.store(grad_c_ptr + narrow, grad_c * gate_f, mask=mask)


# --- launchers -----------------------------------------------------------------------------

def _float_contiguous(c: torch.Tensor) -> torch.Tensor:
    """The fp32 cell-state layout the step kernels read (a copy only when needed)."""
    return c.to(torch.float32).contiguous()


def _input_projection(x2d, w_ih, b_ih, b_hh) -> torch.Tensor:
    """[T*B, I] -> [T*B, 4H] = x W_ih^T + b_ih + b_hh, all steps in one dense GEMM."""
    bias = b_ih if b_hh is None else b_hh if b_ih is None else b_ih + b_hh
    return dense_forward(x2d, w_ih, bias, None)[0]


# --- step loops: functions of a key and a pointer table only (see kernels/graphs.py) ----------

@dataclasses.dataclass(frozen=True)
class _BackwardLoop(StepLoop):
    grad_y_strides: tuple
    grad_h_n_strides: tuple | None  # None: no grad_h_n


_FORWARD_LOOPS = LaunchGraphs(TABLE_SLOTS)
_BACKWARD_LOOPS = LaunchGraphs(TABLE_SLOTS)


def _launch_forward_steps(table: torch.Tensor, loop: ForwardLoop) -> None:
    cfg = step_config(loop.batch, loop.hidden, loop.dtype)
    grid = step_grid("lstm", cfg, loop.batch, loop.hidden)
    for t, previous in forward_steps(loop.steps, loop.reverse):
        if previous is None:  # h0, c0
            h_slot, c_slot, prev_step, strides = FWD_H0, FWD_C0, 0, loop.h0_strides
        else:  # the step before, in y and cells
            h_slot, c_slot, prev_step, strides = FWD_Y, FWD_CELLS, previous, (loop.hidden, 1)
        _lstm_step_forward_kernel[grid](
            table, t, h_slot, c_slot, prev_step, loop.batch, loop.hidden, *loop.w_hh_strides,
            *strides, DTYPE=TL_DTYPES[loop.dtype], STORE_GATES=loop.store_gates,
            ALIGNED=loop.aligned, PRECISION=loop.precision, **cfg)


def _launch_backward_steps(table: torch.Tensor, loop: _BackwardLoop) -> None:
    cfg = step_config(loop.batch, loop.hidden, loop.dtype)
    grid = step_grid("lstm", cfg, loop.batch, loop.hidden)
    grad_h_n_strides = loop.grad_h_n_strides or (0, 0)
    for t, later, earlier in backward_steps(loop.steps, loop.reverse):
        # c_{t-1}: c0 at the first position the forward processed
        c_slot, prev_step = (BWD_C0, 0) if earlier is None else (BWD_CELLS, earlier)
        _lstm_step_backward_kernel[grid](
            table, t, t if later is None else later, c_slot, prev_step, loop.batch, loop.hidden,
            0 if later is None else 4 * loop.hidden, *loop.w_hh_strides, *loop.grad_y_strides,
            *grad_h_n_strides, DTYPE=TL_DTYPES[loop.dtype],
            HAS_GRAD_H_N=later is None and loop.grad_h_n_strides is not None,
            ALIGNED=loop.aligned, PRECISION=loop.precision, **cfg)


def _forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, reverse, save, y):
    """Run one layer-direction; y [T, B, H] is preallocated by the caller (a base tensor, never
    a view: autograd forbids in-place updates of outputs that are views)."""
    check_dtype("LSTM", x)
    steps, batch, input_size = x.shape
    hidden = h0.shape[-1]
    cells = alloc.empty((steps, batch, hidden), dtype=torch.float32, device=x.device)
    gates = alloc.empty((steps, batch, 4 * hidden), dtype=x.dtype, device=x.device) \
        if save else None
    if batch == 0 or hidden == 0:
        return cells, gates
    step_grid("lstm", step_config(batch, hidden, x.dtype), batch, hidden)  # before any work
    x_proj = _input_projection(x.reshape(steps * batch, input_size), w_ih, b_ih, b_hh)
    tensors = [None] * 7
    tensors[FWD_X_PROJ], tensors[FWD_W_HH], tensors[FWD_H0], tensors[FWD_C0] = \
        x_proj, w_hh, h0, _float_contiguous(c0)
    tensors[FWD_Y], tensors[FWD_CELLS], tensors[FWD_GATES] = y, cells, gates
    loop = ForwardLoop(steps, batch, hidden, x.dtype, precision(x.dtype), bool(reverse),
                       addresses_aligned(tensors), tuple(w_hh.stride()), bool(save),
                       tuple(h0.stride()))
    run_loop(_FORWARD_LOOPS, loop, _launch_forward_steps, tensors, x.device)
    return cells, gates


def _backward(grad_y, grad_h_n, grad_c_n, x, h0, c0, w_ih, w_hh, y, saved, reverse, needs):
    """BPTT of one layer-direction; grad_h_n may be None (the cell has no separate h_n)."""
    gates, cells = saved
    steps, batch, input_size = x.shape
    hidden = h0.shape[-1]
    dtype, device = x.dtype, x.device
    grad_pre = alloc.empty((steps, batch, 4 * hidden), dtype=dtype, device=device)
    grad_c = alloc.empty((batch, hidden), dtype=torch.float32, device=device)
    grad_c.copy_(grad_c_n)
    order = positions(steps, reverse)[::-1]
    if batch and hidden:
        tensors = [None] * 8
        tensors[BWD_GRAD_PRE], tensors[BWD_W_HH], tensors[BWD_GRAD_Y] = grad_pre, w_hh, grad_y
        tensors[BWD_GRAD_H_N], tensors[BWD_GRAD_C], tensors[BWD_GATES] = grad_h_n, grad_c, gates
        tensors[BWD_CELLS], tensors[BWD_C0] = cells, _float_contiguous(c0)
        loop = _BackwardLoop(steps, batch, hidden, dtype, precision(dtype), bool(reverse),
                             addresses_aligned(tensors), tuple(w_hh.stride()),
                             tuple(grad_y.stride()),
                             tuple(grad_h_n.stride()) if grad_h_n is not None else None)
        run_loop(_BACKWARD_LOOPS, loop, _launch_backward_steps, tensors, device)
    else:
        grad_pre.zero_()

    rows = steps * batch
    flat_pre = grad_pre.view(rows, 4 * hidden)
    # x, W_ih and both biases: one dense backward over every step's rows
    need_b = needs[5] or needs[6]
    grad_x, grad_w_ih, grad_b = dense_backward(
        flat_pre, x.reshape(rows, input_size), w_ih, None, None, (needs[0], needs[3], need_b))
    if grad_x is not None:
        grad_x = grad_x.view(steps, batch, input_size)
    grad_w_hh = None
    if needs[4]:
        # h_{t-1} of every position, in the order of the rows of grad_pre
        if steps == 1:  # the cell passes no y
            h_prev = h0
        else:
            h_prev = torch.cat([y[1:], h0[None]] if reverse else [h0[None], y[:-1]])
        grad_w_hh = dense_backward(flat_pre, h_prev.reshape(rows, hidden), w_hh, None, None,
                                   (False, True, False))[1]
    grad_h0 = None
    if needs[1]:  # dh_0 = dA of the first processed position @ W_hh
        grad_h0 = dense_backward(grad_pre[order[-1]], h0, w_hh, None, None,
                                 (True, False, False))[0]
    grad_c0 = grad_c.to(dtype, copy=True) if needs[2] else None
    return (grad_x, grad_h0, grad_c0, grad_w_ih, grad_w_hh,
            grad_b if needs[5] else None,
            (grad_b.clone() if needs[5] else grad_b) if needs[6] else None)


def lstm_layer_forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, reverse, save):
    steps, batch, _ = x.shape
    hidden = h0.shape[-1]
    y = alloc.empty((steps, batch, hidden), dtype=x.dtype, device=x.device)
    cells, gates = _forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, reverse, save, y)
    last = 0 if reverse else steps - 1
    h_n = y[last].clone() if steps else h0.clone()
    c_n = cells[last].to(x.dtype, copy=True) if steps else c0.clone()
    return y, h_n, c_n, ((gates, cells) if save else None)


def lstm_layer_backward(grad_y, grad_h_n, grad_c_n, x, h0, c0, w_ih, w_hh, y, saved, reverse,
                        needs):
    return _backward(grad_y, grad_h_n, grad_c_n, x, h0, c0, w_ih, w_hh, y, saved, reverse,
                     needs)


def lstm_cell_forward(x, h, c, w_ih, w_hh, b_ih, b_hh, save):
    h_new = alloc.empty(h.shape, dtype=x.dtype, device=x.device)
    cells, gates = _forward(x[None], h, c, w_ih, w_hh, b_ih, b_hh, False, save, h_new[None])
    return h_new, cells[0].to(x.dtype, copy=True), ((gates, cells) if save else None)


def lstm_cell_backward(grad_h, grad_c, x, h, c, w_ih, w_hh, c_new, saved, needs):
    grads = _backward(grad_h[None], None, grad_c, x[None], h, c, w_ih, w_hh, None, saved, False,
                      needs)
    return (grads[0][0] if grads[0] is not None else None, *grads[1:])


# --- ahead-of-time configurations ----------------------------------------------------------

def aot_configs() -> list[AOTConfig]:
    """Every configuration the heuristics above can pick (``step_aot_variants``), each step
    kernel with its flag off and on; bf16 also unaligned; and the pointer-table write."""
    configs = []
    for label, constexprs, common in step_aot_variants():
        for kernel, flag, what in ((_lstm_step_forward_kernel, "STORE_GATES", "forward"),
                                   (_lstm_step_backward_kernel, "HAS_GRAD_H_N", "backward")):
            for value in (False, True):
                configs.append(AOTConfig(
                    kernel=kernel, signature=table_signature(kernel),
                    constexprs={**constexprs, flag: value},
                    label=f"lstm step {what} {label} {flag.lower()}={value}", **common))
    configs += unaligned_variants(configs)
    configs.append(write_table_aot_config())
    return configs

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

saved (opaque, for this backend's backward): (gates [T, B, 4H] in the input dtype, post-
nonlinearity i, f, g, o; cells [T, B, H] float32, the cell state after each position).
"""
from __future__ import annotations

import itertools

import torch
import triton
import triton.language as tl

from .. import alloc
from .activations import SIGMOID, TANH, apply_activation
from .aot import AOTConfig
from ..limits import check_grid
from .dense import dense_backward, dense_forward

_SIGMOID = tl.constexpr(SIGMOID)
_TANH = tl.constexpr(TANH)
_DTYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


# --- kernels -------------------------------------------------------------------------------

@triton.jit
def _gate_dot(a, w_ptr, gate_rows, offs_k, mask_wk, stride_wr, stride_wc, acc,
              PRECISION: tl.constexpr):
    """acc + a [BB, BK] @ W[gate_rows, offs_k]^T ([BK, BH] tile of W^T)."""
    w = tl.load(w_ptr + gate_rows[None, :] * stride_wr + offs_k.to(tl.int64)[:, None] * stride_wc,
                mask=mask_wk, other=0.0)
    return tl.dot(a, w, acc, input_precision=PRECISION)


@triton.jit
def _step_tile(batch, hidden, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr):
    """This program's batch rows (program_id(1)) and hidden units (program_id(0)) of a step,
    and their masks."""
    offs_b = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_h = tl.program_id(0) * BLOCK_H + tl.arange(0, BLOCK_H)
    return offs_b, offs_h, offs_b < batch, offs_h < hidden


@triton.jit
def _lstm_step_forward_kernel(
        x_proj_ptr, w_hh_ptr, h_prev_ptr, c_prev_ptr, h_ptr, c_ptr, gates_ptr,
        batch, hidden,
        stride_wr, stride_wc, stride_hpb, stride_hph,
        STORE_GATES: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr,
        BLOCK_K: tl.constexpr, PRECISION: tl.constexpr):
    """One LSTM step for a [BLOCK_B, BLOCK_H] block of (batch row, hidden unit).

    x_proj_ptr [B, 4H] contiguous: x_t W_ih^T + b_ih + b_hh of this step;
    w_hh_ptr [4H, H] (strides stride_wr, stride_wc); h_prev_ptr [B, H] (strides stride_hpb,
    stride_hph), same dtype as w_hh; c_prev_ptr [B, H] contiguous fp32;
    h_ptr [B, H] contiguous (output h_t); c_ptr [B, H] contiguous fp32 (output c_t);
    gates_ptr [B, 4H] contiguous: i, f, g, o after their nonlinearities, stored iff STORE_GATES.
    """
    offs_b, offs_h, mask_b, mask_h = _step_tile(batch, hidden, BLOCK_B, BLOCK_H)
    rows_i = offs_h.to(tl.int64)
    rows_f = rows_i + hidden
    rows_g = rows_f + hidden
    rows_o = rows_g + hidden
    acc_i = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
    acc_f = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
    acc_g = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
    acc_o = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
    h_rows = h_prev_ptr + offs_b.to(tl.int64)[:, None] * stride_hpb
    for k0 in range(0, hidden, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < hidden
        a = tl.load(h_rows + offs_k.to(tl.int64)[None, :] * stride_hph,
                    mask=mask_b[:, None] & mask_k[None, :], other=0.0)
        mask_wk = mask_k[:, None] & mask_h[None, :]
        acc_i = _gate_dot(a, w_hh_ptr, rows_i, offs_k, mask_wk, stride_wr, stride_wc, acc_i,
                          PRECISION)
        acc_f = _gate_dot(a, w_hh_ptr, rows_f, offs_k, mask_wk, stride_wr, stride_wc, acc_f,
                          PRECISION)
        acc_g = _gate_dot(a, w_hh_ptr, rows_g, offs_k, mask_wk, stride_wr, stride_wc, acc_g,
                          PRECISION)
        acc_o = _gate_dot(a, w_hh_ptr, rows_o, offs_k, mask_wk, stride_wr, stride_wc, acc_o,
                          PRECISION)

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
        out_ty = gates_ptr.dtype.element_ty
        tl.store(gates_ptr + wide, gate_i.to(out_ty), mask=mask)
        tl.store(gates_ptr + wide + hidden, gate_f.to(out_ty), mask=mask)
        tl.store(gates_ptr + wide + 2 * hidden, gate_g.to(out_ty), mask=mask)
        tl.store(gates_ptr + wide + 3 * hidden, gate_o.to(out_ty), mask=mask)


@triton.jit
def _lstm_step_backward_kernel(
        grad_pre_next_ptr, w_hh_ptr, grad_y_ptr, grad_h_n_ptr, grad_c_ptr, gates_ptr, c_ptr,
        c_prev_ptr, grad_pre_ptr,
        batch, hidden, k_next,
        stride_wr, stride_wc, stride_gyb, stride_gyh, stride_ghb, stride_ghh,
        HAS_GRAD_H_N: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr,
        BLOCK_K: tl.constexpr, PRECISION: tl.constexpr):
    """One step of backpropagation through time for a [BLOCK_B, BLOCK_H] block.

    dh = grad_y + grad_h_n (iff HAS_GRAD_H_N) + grad_pre_next @ W_hh (k_next = 4H columns of it,
    0 on the first backward step); then the pointwise backward of the step.
    grad_pre_next_ptr [B, 4H] contiguous: dA of the step that followed in the forward pass;
    w_hh_ptr [4H, H] (strides stride_wr, stride_wc); grad_y_ptr [B, H] (strides stride_gyb,
    stride_gyh); grad_h_n_ptr [B, H] (strides stride_ghb, stride_ghh);
    grad_c_ptr [B, H] contiguous fp32: dc reaching c_t, replaced in place by dc reaching c_{t-1};
    gates_ptr [B, 4H] contiguous: saved i, f, g, o; c_ptr, c_prev_ptr [B, H] contiguous fp32:
    c_t and c_{t-1}; grad_pre_ptr [B, 4H] contiguous: output dA_t (pre-activation gradient).
    """
    offs_b, offs_h, mask_b, mask_h = _step_tile(batch, hidden, BLOCK_B, BLOCK_H)
    mask = mask_b[:, None] & mask_h[None, :]
    rows64 = offs_b.to(tl.int64)
    cols64 = offs_h.to(tl.int64)

    grad_h = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
    a_rows = grad_pre_next_ptr + rows64[:, None] * (4 * hidden)
    for k0 in range(0, k_next, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < k_next
        a = tl.load(a_rows + offs_k[None, :], mask=mask_b[:, None] & mask_k[None, :], other=0.0)
        w = tl.load(w_hh_ptr + offs_k.to(tl.int64)[:, None] * stride_wr
                    + cols64[None, :] * stride_wc, mask=mask_k[:, None] & mask_h[None, :],
                    other=0.0)
        grad_h = tl.dot(a, w, grad_h, input_precision=PRECISION)
    grad_h += tl.load(grad_y_ptr + rows64[:, None] * stride_gyb + cols64[None, :] * stride_gyh,
                      mask=mask, other=0.0).to(tl.float32)
    if HAS_GRAD_H_N:
        grad_h += tl.load(grad_h_n_ptr + rows64[:, None] * stride_ghb
                          + cols64[None, :] * stride_ghh, mask=mask, other=0.0).to(tl.float32)

    wide = rows64[:, None] * (4 * hidden) + offs_h[None, :]
    narrow = rows64[:, None] * hidden + offs_h[None, :]
    gate_i = tl.load(gates_ptr + wide, mask=mask, other=0.0).to(tl.float32)
    gate_f = tl.load(gates_ptr + wide + hidden, mask=mask, other=0.0).to(tl.float32)
    gate_g = tl.load(gates_ptr + wide + 2 * hidden, mask=mask, other=0.0).to(tl.float32)
    gate_o = tl.load(gates_ptr + wide + 3 * hidden, mask=mask, other=0.0).to(tl.float32)
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


# --- heuristics ----------------------------------------------------------------------------

def _precision(dtype: torch.dtype) -> str:
    if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32:
        return "tf32"
    return "ieee"


def _step_config(batch: int, hidden: int, dtype: torch.dtype) -> dict:
    """Block sizes of both step kernels. A step is latency-bound: narrow blocks of hidden units
    give many programs even at hidden 256; 64-row batch blocks use Hopper's warpgroup MMA.
    hidden is a runtime argument, so every size compiles to these few configurations (tl.dot
    needs every block dimension >= 16)."""
    block_b = 16 if batch <= 32 else 64
    block_k = 32 if dtype == torch.float32 else 64
    return dict(BLOCK_B=block_b, BLOCK_H=16, BLOCK_K=block_k, num_warps=4, num_stages=2)


def _step_grid(cfg: dict, batch: int, hidden: int) -> tuple[int, int]:
    """The step kernels' grid (hidden blocks, batch blocks), refused before any work when the
    batch blocks pass CUDA's grid-axis-1 limit."""
    return check_grid("lstm", (triton.cdiv(hidden, cfg["BLOCK_H"]),
                               triton.cdiv(batch, cfg["BLOCK_B"])),
                      ("hidden blocks", "batch blocks"))


def _check_dtype(x: torch.Tensor) -> None:
    if x.dtype not in _DTYPES:
        raise TypeError(f"the triton LSTM runs float32, float16 and bfloat16 tensors, got "
                        f"{x.dtype}; use the 'reference' backend for {x.dtype}")


# --- launchers -----------------------------------------------------------------------------

def _float_contiguous(c: torch.Tensor) -> torch.Tensor:
    """The fp32 cell-state layout the step kernels read (a copy only when needed)."""
    return c.to(torch.float32).contiguous()


def _input_projection(x2d, w_ih, b_ih, b_hh) -> torch.Tensor:
    """[T*B, I] -> [T*B, 4H] = x W_ih^T + b_ih + b_hh, all steps in one dense GEMM."""
    bias = b_ih if b_hh is None else b_hh if b_ih is None else b_ih + b_hh
    return dense_forward(x2d, w_ih, bias, None)[0]


def _forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, reverse, save, y):
    """Run one layer-direction; y [T, B, H] is preallocated by the caller (a base tensor, never
    a view: autograd forbids in-place updates of outputs that are views)."""
    _check_dtype(x)
    steps, batch, input_size = x.shape
    hidden = h0.shape[-1]
    cells = alloc.empty((steps, batch, hidden), dtype=torch.float32, device=x.device)
    gates = alloc.empty((steps, batch, 4 * hidden), dtype=x.dtype, device=x.device) \
        if save else None
    if batch == 0 or hidden == 0:
        return cells, gates
    cfg = _step_config(batch, hidden, x.dtype)
    grid = _step_grid(cfg, batch, hidden)
    x_proj = _input_projection(x.reshape(steps * batch, input_size), w_ih, b_ih, b_hh)
    x_proj = x_proj.view(steps, batch, 4 * hidden)
    h_prev, c_prev = h0, _float_contiguous(c0)
    for t in (range(steps - 1, -1, -1) if reverse else range(steps)):
        _lstm_step_forward_kernel[grid](
            x_proj[t], w_hh, h_prev, c_prev, y[t], cells[t],
            gates[t] if save else y[t], batch, hidden,
            w_hh.stride(0), w_hh.stride(1), h_prev.stride(0), h_prev.stride(1),
            STORE_GATES=save, PRECISION=_precision(x.dtype), **cfg)
        h_prev, c_prev = y[t], cells[t]
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
    order = list(range(steps)) if reverse else list(range(steps - 1, -1, -1))
    if batch and hidden:
        cfg = _step_config(batch, hidden, dtype)
        grid = _step_grid(cfg, batch, hidden)
        c0_float = _float_contiguous(c0)
        grad_h_n_or_y = grad_h_n if grad_h_n is not None else grad_y[0]
        for k, t in enumerate(order):
            is_first_position = k == steps - 1
            c_prev = c0_float if is_first_position else cells[order[k + 1]]
            next_pre = grad_pre[order[k - 1]] if k > 0 else grad_pre[t]
            _lstm_step_backward_kernel[grid](
                next_pre, w_hh, grad_y[t], grad_h_n_or_y, grad_c, gates[t], cells[t], c_prev,
                grad_pre[t], batch, hidden, 4 * hidden if k > 0 else 0,
                w_hh.stride(0), w_hh.stride(1), grad_y.stride(1), grad_y.stride(2),
                grad_h_n_or_y.stride(0), grad_h_n_or_y.stride(1),
                HAS_GRAD_H_N=k == 0 and grad_h_n is not None, PRECISION=_precision(dtype),
                **cfg)
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
    """Every configuration the heuristics above can pick: fp32 (ieee and tf32), fp16, bf16."""
    configs = []
    variants = [(torch.float32, "ieee"), (torch.float32, "tf32"), (torch.float16, "ieee"),
                (torch.bfloat16, "ieee")]
    for dtype, precision in variants:
        name = _DTYPES[dtype]
        ptr = f"*{name}"
        seen = set()
        for batch, hidden in itertools.product((1, 32, 33, 128), (1, 256, 1024)):
            step = _step_config(batch, hidden, dtype)
            key = (step["BLOCK_B"], step["BLOCK_H"])
            if key in seen:
                continue
            seen.add(key)
            blocks = {k: step[k] for k in ("BLOCK_B", "BLOCK_H", "BLOCK_K")}
            label = "B{BLOCK_B} H{BLOCK_H} K{BLOCK_K} {precision}".format(**blocks,
                                                                       precision=precision)
            # tensor cores unless fp32 runs in full precision; 64-row blocks get Hopper's wgmma
            mma = "" if precision == "ieee" and dtype == torch.float32 else \
                "HGMMA" if step["BLOCK_B"] == 64 else "HMMA"
            common = dict(num_warps=step["num_warps"], num_stages=step["num_stages"], dtype=name,
                          expect_mma=mma)
            for store_gates in (False, True):
                configs.append(AOTConfig(
                    kernel=_lstm_step_forward_kernel,
                    signature={"x_proj_ptr": ptr, "w_hh_ptr": ptr, "h_prev_ptr": ptr,
                               "c_prev_ptr": "*fp32", "h_ptr": ptr, "c_ptr": "*fp32",
                               "gates_ptr": ptr,
                               **{k: "i32" for k in ("batch", "hidden", "stride_wr", "stride_wc",
                                                     "stride_hpb", "stride_hph")},
                               **{k: "constexpr" for k in ("STORE_GATES", *blocks,
                                                           "PRECISION")}},
                    constexprs={"STORE_GATES": store_gates, **blocks, "PRECISION": precision},
                    label=f"lstm step forward {label} store_gates={store_gates}", **common))
            for has_grad_h_n in (False, True):
                configs.append(AOTConfig(
                    kernel=_lstm_step_backward_kernel,
                    signature={"grad_pre_next_ptr": ptr, "w_hh_ptr": ptr, "grad_y_ptr": ptr,
                               "grad_h_n_ptr": ptr, "grad_c_ptr": "*fp32", "gates_ptr": ptr,
                               "c_ptr": "*fp32", "c_prev_ptr": "*fp32", "grad_pre_ptr": ptr,
                               **{k: "i32" for k in ("batch", "hidden", "k_next", "stride_wr",
                                                     "stride_wc", "stride_gyb", "stride_gyh",
                                                     "stride_ghb", "stride_ghh")},
                               **{k: "constexpr" for k in ("HAS_GRAD_H_N", *blocks,
                                                           "PRECISION")}},
                    constexprs={"HAS_GRAD_H_N": has_grad_h_n, **blocks, "PRECISION": precision},
                    label=f"lstm step backward {label} grad_h_n={has_grad_h_n}", **common))
    return configs

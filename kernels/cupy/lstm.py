"""CuPy launchers of the LSTM (``lstm.cu``): a persistent kernel that keeps W_hh on chip.

Signatures and gate order as documented in ``gpudnn/reference/lstm.py``. A layer-direction is

1. one cuBLAS GEMM for the input projection of every step (``torch.matmul`` on the same stream);
2. one launch of ``lstm_forward_steps`` for the whole sequence: block j owns hidden units
   ``[j*units, (j+1)*units)`` and keeps the 4*units rows of W_hh that feed them in shared
   memory (fp32) across all steps; a grid barrier separates the steps (a software one, why not
   ``grid.sync()``: see ``lstm.cu``). The grid is at most the number of blocks the GPU holds at
   once (SM count * the occupancy API's blocks per SM) and is launched cooperatively
   (``cupy.cuda.driver.launchCooperativeKernel``), so the barrier cannot deadlock;
3. backward: one launch of ``lstm_backward_steps`` (W_hh's columns of the block's units on chip),
   then the weight, bias and input gradients as one GEMM each over all steps.

Per-step fallback, and where the limit is: the persistent plan needs
``ceil(H / units) <= resident blocks`` and ``4 * ((4*units + chunk) * (H + 1) + chunk*4*units)``
bytes of shared memory per block (forward; backward alike with K = 4H). On an H100 (132 SMs,
227 KiB per block) that holds up to H = 1320 with ``units = ceil(H / 132)`` (e.g. H = 512,
batch 32: 4 units per block, 98 KiB forward / 160 KiB backward). Beyond, the same kernels run one
step per launch with one unit per block (W_hh slices re-read from L2 every step), up to
H = 7200; larger hidden sizes are refused with a RuntimeError. The LSTM cell is the per-step
path with one step.
"""
from __future__ import annotations

import ctypes
import functools
import math

import numpy as np
import torch

from .. import alloc
from . import _runtime
from ._runtime import i32, launch, require_cuda, same_dtype, suffix

THREADS = 256
MAX_CHUNK = 64  # batch rows staged in shared memory at once (fewer when shared memory is short)


# --- argument checks (no GPU needed) --------------------------------------------------------------

def _check(op: str, x, h0, c0, w_ih, w_hh, b_ih, b_hh, seq: bool) -> str:
    s = suffix(op, "x", x)
    for name, t in (("h", h0), ("c", c0), ("w_ih", w_ih), ("w_hh", w_hh), ("b_ih", b_ih),
                    ("b_hh", b_hh)):
        if t is not None:
            suffix(op, name, t)
    same_dtype(op, x=x, h=h0, c=c0, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh)
    if x.dim() != (3 if seq else 2):
        raise ValueError(f"{op}: x must be {'[T, B, I]' if seq else '[B, I]'}, got "
                         f"{tuple(x.shape)}")
    batch, input_size = x.shape[-2:]
    if w_hh.dim() != 2 or w_hh.shape[0] != 4 * w_hh.shape[1]:
        raise ValueError(f"{op}: w_hh must be [4H, H], got {tuple(w_hh.shape)}")
    hidden = w_hh.shape[1]
    if tuple(w_ih.shape) != (4 * hidden, input_size):
        raise ValueError(f"{op}: w_ih must be [{4 * hidden}, {input_size}], got "
                         f"{tuple(w_ih.shape)}")
    for name, t in (("b_ih", b_ih), ("b_hh", b_hh)):
        if t is not None and tuple(t.shape) != (4 * hidden,):
            raise ValueError(f"{op}: {name} must be [{4 * hidden}], got {tuple(t.shape)}")
    for name, t in (("h", h0), ("c", c0)):
        if tuple(t.shape) != (batch, hidden):
            raise ValueError(f"{op}: {name} must be [{batch}, {hidden}], got {tuple(t.shape)}")
    return s


def _check_grad(op: str, name: str, t, shape) -> None:
    if t is not None and tuple(t.shape) != tuple(shape):
        raise ValueError(f"{op}: {name} must be {list(shape)}, got {tuple(t.shape)}")


# --- launch planning ------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _device_limits(index: int) -> tuple[int, int]:
    """(SM count, opt-in shared memory per block) of CUDA device ``index``."""
    props = torch.cuda.get_device_properties(index)
    shared = getattr(props, "shared_memory_per_block_optin", 0) or 48 * 1024
    return props.multi_processor_count, shared


def _shared_bytes(rows: int, k_len: int, chunk: int) -> int:
    return 4 * ((rows + chunk) * (k_len + 1) + chunk * rows)


def plan(hidden: int, batch: int, backward: bool, sms: int, max_shared: int,
         persistent: bool = True) -> tuple[int, int, int, bool]:
    """(units per block, batch chunk, shared bytes, persistent) for one direction's kernel.

    Persistent: the fewest units per block whose grid fits in ``sms`` blocks (one resident
    block per SM is always possible at this block size); else one unit per block, per step."""
    units = max(1, math.ceil(hidden / sms)) if persistent else 1
    rows, k_len = (units, 4 * hidden) if backward else (4 * units, hidden)
    chunk = max(1, min(batch, MAX_CHUNK))
    while chunk > 1 and _shared_bytes(rows, k_len, chunk) > max_shared:
        chunk //= 2
    shared = _shared_bytes(rows, k_len, chunk)
    if shared <= max_shared:
        return units, chunk, shared, persistent
    if persistent:
        return plan(hidden, batch, backward, sms, max_shared, persistent=False)
    raise RuntimeError(f"the cupy LSTM kernels need {shared} bytes of shared memory per block "
                       f"for hidden size {hidden}, more than this GPU's {max_shared}; use the "
                       "triton or reference backend for this size")


def _run_steps(kernel: str, device: torch.device, hidden: int, batch: int, steps: int,
               backward: bool, buffers: tuple, reverse: bool, final_launch: bool = False) -> None:
    """Launch ``kernel`` over all steps: once (persistent) or once per step (fallback).
    ``buffers``: the kernel's pointer arguments before ``barrier``."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    sms, max_shared = _device_limits(index)
    units, chunk, shared, persistent = plan(hidden, batch, backward, sms, max_shared,
                                            persistent=steps > 1)
    blocks = math.ceil(hidden / units)
    if persistent and blocks > _resident_blocks(kernel, index, shared):
        units, chunk, shared, persistent = plan(hidden, batch, backward, sms, max_shared, False)
        blocks = hidden
    _allow_shared(kernel, index, shared)
    geometry = (i32(steps), i32(batch), i32(hidden), i32(units), i32(chunk))
    if persistent:
        barrier = torch.zeros(2, dtype=torch.int32, device=device)
        _launch_persistent(kernel, device, blocks, (*buffers, barrier, *geometry, i32(0),
                                                    i32(steps), i32(reverse)), shared)
        return
    order = range(steps - 1, -1, -1) if backward else range(steps)
    spans = [(s, s + 1) for s in order] + ([(0, 0)] if final_launch else [])
    for s_begin, s_end in spans:  # (0, 0): grad_h0 after all steps, in a launch of its own
        launch("lstm", kernel, device, (blocks,), (THREADS,),
               (*buffers, None, *geometry, i32(s_begin), i32(s_end), i32(reverse)),
               shared_mem=shared)


_CTYPE = {np.int32: ctypes.c_int32, np.int64: ctypes.c_int64, np.uint64: ctypes.c_uint64,
          np.float32: ctypes.c_float}


def kernel_params(args) -> tuple[list, ctypes.Array]:
    """The ``void*[]`` of a driver-API launch: (the argument values, kept alive by the caller;
    the array of their addresses)."""
    values = [_CTYPE[type(packed)](packed.item())
              for packed in (_runtime._argument(a) for a in args)]
    return values, (ctypes.c_void_p * len(values))(*(ctypes.addressof(v) for v in values))


def _launch_persistent(kernel: str, device: torch.device, blocks: int, args: tuple,
                       shared: int) -> None:
    """The persistent launch: cooperative (cuLaunchCooperativeKernel, so the driver refuses a
    grid that cannot be resident at once instead of letting the barrier hang) on torch's
    stream; a plain launch where CuPy does not expose the cooperative entry point (the grid was
    already sized from the occupancy API)."""
    cupy = _runtime.cupy_module()
    cooperative = getattr(cupy.cuda.driver, "launchCooperativeKernel", None)
    if cooperative is None:
        launch("lstm", kernel, device, (blocks,), (THREADS,), args, shared_mem=shared)
        return
    index = device.index if device.index is not None else torch.cuda.current_device()
    with cupy.cuda.Device(index):
        function = _function(kernel, index).kernel  # compiled and loaded on this device
        values, params = kernel_params(args)
        cooperative(function.ptr, blocks, 1, 1, THREADS, 1, 1, shared,
                    torch.cuda.current_stream(device).cuda_stream, ctypes.addressof(params))
        del values  # alive until the launch has copied the arguments


def _function(kernel: str, index: int):
    cupy = _runtime.cupy_module()
    with cupy.cuda.Device(index):
        return _runtime.raw_module("lstm").get_function(kernel)


def _allow_shared(kernel: str, index: int, shared: int) -> None:
    if shared > 48 * 1024:  # above the default: opt in once per kernel
        cupy = _runtime.cupy_module()
        with cupy.cuda.Device(index):
            function = _function(kernel, index)
            if function.max_dynamic_shared_size_bytes < shared:
                function.max_dynamic_shared_size_bytes = shared


def _resident_blocks(kernel: str, index: int, shared: int) -> int:
    """Blocks of ``kernel`` the whole GPU holds at once (occupancy API * SM count)."""
    cupy = _runtime.cupy_module()
    _allow_shared(kernel, index, shared)
    with cupy.cuda.Device(index):
        function = _function(kernel, index)
        occupancy = getattr(cupy.cuda.driver, "occupancyMaxActiveBlocksPerMultiprocessor", None)
        # without the API: one block per SM always fits (plan() keeps shared memory within the
        # per-block limit; 256 threads never exhaust the registers)
        per_sm = occupancy(function.kernel.ptr, THREADS, shared) if occupancy else 1
    return per_sm * _device_limits(index)[0]


# --- the recurrence -------------------------------------------------------------------------------

def _bias_or_none(b):
    return b.contiguous() if b is not None else None


def _forward(op, x, h0, c0, w_ih, w_hh, b_ih, b_hh, reverse, save):
    """x [T, B, I] -> (y, h_n, c_n, saved (gates fp32, cells fp32) | None)."""
    s = _check(op, x, h0, c0, w_ih, w_hh, b_ih, b_hh, seq=True)
    device = require_cuda(op, x=x, h0=h0, c0=c0, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh)
    steps, batch, input_size = x.shape
    hidden = w_hh.shape[1]
    y = alloc.empty((steps, batch, hidden), dtype=x.dtype, device=device)
    if steps == 0 or batch == 0 or hidden == 0:
        gates = alloc.empty((steps, batch, 4 * hidden), dtype=torch.float32, device=device)
        cells = alloc.empty((steps, batch, hidden), dtype=torch.float32, device=device)
        return y, h0.clone(), c0.clone(), ((gates, cells) if save else None)
    x_proj = torch.matmul(x.reshape(steps * batch, input_size), w_ih.t())  # one GEMM
    h_n = alloc.empty((batch, hidden), dtype=x.dtype, device=device)
    c_n = alloc.empty((batch, hidden), dtype=x.dtype, device=device)
    c_state = torch.empty((batch, hidden), dtype=torch.float32, device=device)
    gates = cells = None
    if save:
        gates = alloc.empty((steps, batch, 4 * hidden), dtype=torch.float32, device=device)
        cells = alloc.empty((steps, batch, hidden), dtype=torch.float32, device=device)
    _run_steps(f"lstm_forward_steps_{s}", device, hidden, batch, steps, False,
               (x_proj, _bias_or_none(b_ih), _bias_or_none(b_hh), h0.contiguous(),
                c0.contiguous(), w_hh.contiguous(), y, c_state, gates, cells, h_n, c_n),
               reverse)
    return y, h_n, c_n, ((gates, cells) if save else None)


def _previous(y, h0, reverse):
    """The hidden state before each position, [T, B, H] (y shifted against the direction)."""
    steps = y.shape[0]  # [:steps]: an empty sequence has no state before any position
    if reverse:
        return torch.cat([y[1:], h0[None]], dim=0)[:steps]
    return torch.cat([h0[None], y[:-1]], dim=0)[:steps]


def _backward(op, grad_y, grad_h_n, grad_c_n, x, h0, c0, w_ih, w_hh, y, saved, reverse, needs):
    s = _check(op, x, h0, c0, w_ih, w_hh, None, None, seq=True)
    if saved is None:
        raise ValueError(f"{op}: nothing was saved for backward (forward ran with save=False)")
    gates, cells = saved
    steps, batch, input_size = x.shape
    hidden = w_hh.shape[1]
    _check_grad(op, "grad_y", grad_y, (steps, batch, hidden))
    _check_grad(op, "grad_h_n", grad_h_n, (batch, hidden))
    _check_grad(op, "grad_c_n", grad_c_n, (batch, hidden))
    _check_grad(op, "saved gates", gates, (steps, batch, 4 * hidden))
    _check_grad(op, "saved cells", cells, (steps, batch, hidden))
    same_dtype(op, x=x, grad_y=grad_y, grad_h_n=grad_h_n, grad_c_n=grad_c_n)
    device = require_cuda(op, grad_y=grad_y, x=x, h0=h0, c0=c0, w_hh=w_hh, gates=gates)
    needs = (tuple(needs) + (False,) * 7)[:7]
    grad_pre = alloc.empty((steps, batch, 4 * hidden), dtype=torch.float32, device=device)
    grad_h0 = alloc.empty((batch, hidden), dtype=x.dtype, device=device) if needs[1] else None
    grad_c0 = alloc.empty((batch, hidden), dtype=x.dtype, device=device) if needs[2] else None
    if steps and batch and hidden:
        dc_state = torch.empty((batch, hidden), dtype=torch.float32, device=device)
        _run_steps(f"lstm_backward_steps_{s}", device, hidden, batch, steps, True,
                   (grad_y.contiguous() if grad_y is not None else
                    torch.zeros_like(y), grad_h_n.contiguous() if grad_h_n is not None else None,
                    grad_c_n.contiguous() if grad_c_n is not None else None, gates, cells,
                    c0.contiguous(), w_hh.contiguous(), grad_pre, dc_state, grad_h0, grad_c0),
                   reverse, final_launch=grad_h0 is not None)
    else:  # no step: the state gradients pass straight through
        for grad, given in ((grad_h0, grad_h_n), (grad_c0, grad_c_n)):
            if grad is not None:
                grad.copy_(given) if given is not None else grad.zero_()
    rows = steps * batch
    flat = grad_pre.reshape(rows, 4 * hidden).to(x.dtype)  # the GEMMs run in the input dtype
    grad_x = torch.matmul(flat, w_ih).reshape(x.shape) if needs[0] else None
    grad_w_ih = torch.matmul(flat.t(), x.reshape(rows, input_size)) if needs[3] else None
    grad_w_hh = (torch.matmul(flat.t(), _previous(y, h0, reverse).reshape(rows, hidden))
                 if needs[4] else None)
    grad_b = None
    if needs[5] or needs[6]:  # column sums as a GEMV with ones (cuBLAS, deterministic)
        grad_b = torch.matmul(torch.ones(rows, dtype=x.dtype, device=device), flat) if rows \
            else torch.zeros(4 * hidden, dtype=x.dtype, device=device)
    return (grad_x, grad_h0, grad_c0, grad_w_ih, grad_w_hh, grad_b if needs[5] else None,
            grad_b.clone() if needs[6] else None)


# --- the launchers --------------------------------------------------------------------------------

def lstm_layer_forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, reverse, save):
    return _forward("lstm_layer_forward", x, h0, c0, w_ih, w_hh, b_ih, b_hh, bool(reverse),
                    save)


def lstm_layer_backward(grad_y, grad_h_n, grad_c_n, x, h0, c0, w_ih, w_hh, y, saved, reverse,
                        needs):
    return _backward("lstm_layer_backward", grad_y, grad_h_n, grad_c_n, x, h0, c0, w_ih, w_hh,
                     y, saved, bool(reverse), needs)


def lstm_cell_forward(x, h, c, w_ih, w_hh, b_ih, b_hh, save):
    """One step: the layer kernel on a sequence of length 1 (saved = (gates, cells))."""
    _check("lstm_cell_forward", x, h, c, w_ih, w_hh, b_ih, b_hh, seq=False)
    y, h_new, c_new, saved = _forward("lstm_cell_forward", x[None], h, c, w_ih, w_hh, b_ih, b_hh,
                                      False, save)
    return h_new, c_new, saved


def lstm_cell_backward(grad_h, grad_c, x, h, c, w_ih, w_hh, c_new, saved, needs):
    """One step backward: the layer backward on a sequence of length 1; grad_h enters as the
    gradient of y[0] (= h_new). c_new is not read: saved holds the cell state."""
    op = "lstm_cell_backward"
    _check(op, x, h, c, w_ih, w_hh, None, None, seq=False)
    grad_h = torch.zeros_like(h) if grad_h is None else grad_h
    _check_grad(op, "grad_h", grad_h, h.shape)
    # y: only its shape matters for one step (the state before position 0 is h itself)
    grads = _backward(op, grad_h[None], None, grad_c, x[None], h, c, w_ih, w_hh, h[None], saved,
                      False, needs)
    return (grads[0][0] if grads[0] is not None else None, *grads[1:])

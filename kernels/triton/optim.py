"""Multi-tensor optimizer steps (SGD, Adam/AdamW): one launch per parameter dtype per step.

Signatures and update rules: ``gpudnn/reference/optim.py``.

Design: a launch covers every parameter of one dtype. The host writes a *tensor table* (int64
``[T, 8]``: the raw addresses of param, grad and up to three state tensors, the element count and
a per-tensor flag) and a *chunk table* (int64 ``[C, 2]``: tensor index, first element); program
``c`` updates ``BLOCK`` elements of one tensor, casting the addresses back to typed pointers
(``int -> pointer``, as Triton's grouped-GEMM tutorial does). This works compiled and under the
interpreter (the interpreter reads raw host addresses of CPU tensors), so there is one design for
both. Full chunks run unmasked, only a tensor's last chunk is masked, so the loads vectorize even
though element counts come from memory. fp16/bf16 parameters are loaded, updated in fp32 and
stored back (state stays in the parameter's dtype, as torch keeps it); fp64 runs in fp64: every
hyper-parameter reaches the kernel through an fp64 *scalar table* (a float passed as a kernel
argument would be an fp32 scalar, rounding an fp64 parameter's lr, eps, betas or weight decay)
and is cast to the accumulation type there.

Not CUDA-graph capturable: every step uploads its scalar table (and, when they change, the tensor
tables) from a temporary pinned host buffer, and the tables hold this step's raw addresses; a
replayed graph would reuse stale values. The launchers refuse to run while the current CUDA
stream is capturing, and ``gpudnn.optim`` refuses ``capturable=True``.

The flat view needs each parameter's tensors to share one dense layout and 16-byte alignment
(true of ordinary parameters, gradients and ``zeros_like`` state). A tensor that is not (a strided
view, a misaligned slice) is updated through an aligned staging copy that is written back.
"""
from __future__ import annotations

import collections
import operator
from typing import Sequence

import numpy as np
import torch
import triton
import triton.language as tl

from .. import alloc
from ..layout import is_dense
from ._table import TL_DTYPES, load_pointer  # addresses staged 16-byte aligned (see _stage)
from .aot import SIGNATURE_DTYPES, AOTConfig

BLOCK = 1024
NUM_WARPS = 4
ROW = 8  # tensor-table columns
PARAM, GRAD, STATE0, STATE1, STATE2, NUMEL, FLAG = range(7)
SGD_SCALARS = tl.constexpr(5)   # fp64 scalar table entries of sgd_kernel
ADAM_SCALARS = tl.constexpr(7)  # adam_kernel's hyper-parameters, ahead of its per-tensor pairs



# --- kernels -----------------------------------------------------------------------------------

@triton.jit
def _sqrt(x):
    if x.dtype == tl.float64:
        return tl.sqrt(x)
    else:
        return tl.sqrt_rn(x)


@triton.jit
def _div(x, y):
    if x.dtype == tl.float64:
        return x / y
    else:
        return tl.div_rn(x, y + tl.zeros_like(x))  # div_rn does not broadcast a scalar y


@triton.jit
def _sgd_block(param_ptr, grad_ptr, buf_ptr, offs, mask, fresh, lr, weight_decay, momentum,
               dampening, grad_sign, ACC: tl.constexpr, HAS_MOMENTUM: tl.constexpr,
               NESTEROV: tl.constexpr):
    """One SGD block at element offsets offs; mask: offs < numel, or None for a whole block."""
    p = tl.load(param_ptr + offs, mask=mask).to(ACC)
    g = tl.load(grad_ptr + offs, mask=mask).to(ACC) * grad_sign
    if weight_decay != 0.0:
        g = g + weight_decay * p
    if HAS_MOMENTUM:
        if fresh != 0:  # torch's first step: the buffer starts as the gradient
            buf = g
        else:
            buf = tl.load(buf_ptr + offs, mask=mask).to(ACC) * momentum + (1.0 - dampening) * g
        tl.store(buf_ptr + offs, buf.to(buf_ptr.dtype.element_ty), mask=mask)
        if NESTEROV:
            g = g + momentum * buf
        else:
            g = buf
    tl.store(param_ptr + offs, (p - lr * g).to(param_ptr.dtype.element_ty), mask=mask)


@triton.jit
def sgd_kernel(table_ptr, chunks_ptr, scalars_ptr, DTYPE: tl.constexpr, ACC: tl.constexpr,
               HAS_MOMENTUM: tl.constexpr, NESTEROV: tl.constexpr, BLOCK: tl.constexpr):
    """SGD on one chunk of one tensor.

    table_ptr: int64 [T, 8] (param, grad, momentum buffer addresses, -, -, numel, fresh flag);
    chunks_ptr: int64 [C, 2] (tensor index, first element); scalars_ptr: fp64 [SGD_SCALARS]
    (lr, weight_decay, momentum, dampening, grad_sign); grid (C,).
    """
    lr = tl.load(scalars_ptr + 0).to(ACC)
    weight_decay = tl.load(scalars_ptr + 1).to(ACC)
    momentum = tl.load(scalars_ptr + 2).to(ACC)
    dampening = tl.load(scalars_ptr + 3).to(ACC)
    grad_sign = tl.load(scalars_ptr + 4).to(ACC)
    chunk = tl.program_id(0)
    row = table_ptr + tl.load(chunks_ptr + 2 * chunk) * 8
    start = tl.multiple_of(tl.load(chunks_ptr + 2 * chunk + 1), BLOCK)
    numel = tl.load(row + 5)
    fresh = tl.load(row + 6)
    param_ptr = load_pointer(row, 0, DTYPE, True)
    grad_ptr = load_pointer(row, 1, DTYPE, True)
    buf_ptr = load_pointer(row, 2, DTYPE, True)
    offs = start + tl.arange(0, BLOCK).to(tl.int64)
    if start + BLOCK <= numel:  # a whole block: unmasked accesses
        _sgd_block(param_ptr, grad_ptr, buf_ptr, offs, None, fresh, lr, weight_decay, momentum,
                   dampening, grad_sign, ACC, HAS_MOMENTUM, NESTEROV)
    else:
        _sgd_block(param_ptr, grad_ptr, buf_ptr, offs, offs < numel, fresh, lr, weight_decay,
                   momentum, dampening, grad_sign, ACC, HAS_MOMENTUM, NESTEROV)


@triton.jit
def _adam_block(param_ptr, grad_ptr, exp_avg_ptr, exp_avg_sq_ptr, max_sq_ptr, offs, mask,
                step_size, bias_correction2_sqrt, param_decay, weight_decay, one_minus_beta1,
                beta2, one_minus_beta2, eps, grad_sign, ACC: tl.constexpr,
                AMSGRAD: tl.constexpr):
    """One Adam block at element offsets offs; mask: offs < numel, or None for a whole block."""
    p = tl.load(param_ptr + offs, mask=mask).to(ACC)
    g = tl.load(grad_ptr + offs, mask=mask).to(ACC) * grad_sign
    m = tl.load(exp_avg_ptr + offs, mask=mask).to(ACC)
    v = tl.load(exp_avg_sq_ptr + offs, mask=mask).to(ACC)
    if param_decay != 1.0:  # AdamW: decoupled decay of the parameter itself
        p = p * param_decay
    if weight_decay != 0.0:  # Adam: L2 through the gradient
        g = g + weight_decay * p
    m = m + one_minus_beta1 * (g - m)
    v = v * beta2 + one_minus_beta2 * g * g
    tl.store(exp_avg_ptr + offs, m.to(exp_avg_ptr.dtype.element_ty), mask=mask)
    tl.store(exp_avg_sq_ptr + offs, v.to(exp_avg_sq_ptr.dtype.element_ty), mask=mask)
    if AMSGRAD:
        # torch.maximum keeps NaN (a diverged second moment must stay visible)
        v = tl.maximum(tl.load(max_sq_ptr + offs, mask=mask).to(ACC), v,
                       propagate_nan=tl.PropagateNan.ALL)
        tl.store(max_sq_ptr + offs, v.to(max_sq_ptr.dtype.element_ty), mask=mask)
    denom = _div(_sqrt(v), bias_correction2_sqrt) + eps
    p = p - step_size * _div(m, denom)
    tl.store(param_ptr + offs, p.to(param_ptr.dtype.element_ty), mask=mask)


@triton.jit
def adam_kernel(table_ptr, chunks_ptr, scalars_ptr, DTYPE: tl.constexpr, ACC: tl.constexpr,
                AMSGRAD: tl.constexpr, BLOCK: tl.constexpr):
    """Adam / AdamW on one chunk of one tensor.

    table_ptr: int64 [T, 8] (param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq addresses, numel);
    chunks_ptr: int64 [C, 2] (tensor index, first element); scalars_ptr: fp64
    [ADAM_SCALARS + 2 T]: (param_decay, weight_decay, 1 - beta1, beta2, 1 - beta2, eps,
    grad_sign), then per tensor (lr / (1 - beta1**step), sqrt(1 - beta2**step)); grid (C,).
    """
    param_decay = tl.load(scalars_ptr + 0).to(ACC)
    weight_decay = tl.load(scalars_ptr + 1).to(ACC)
    one_minus_beta1 = tl.load(scalars_ptr + 2).to(ACC)
    beta2 = tl.load(scalars_ptr + 3).to(ACC)
    one_minus_beta2 = tl.load(scalars_ptr + 4).to(ACC)
    eps = tl.load(scalars_ptr + 5).to(ACC)
    grad_sign = tl.load(scalars_ptr + 6).to(ACC)
    chunk = tl.program_id(0)
    tensor = tl.load(chunks_ptr + 2 * chunk)
    row = table_ptr + tensor * 8
    start = tl.multiple_of(tl.load(chunks_ptr + 2 * chunk + 1), BLOCK)
    numel = tl.load(row + 5)
    per_tensor = scalars_ptr + ADAM_SCALARS + 2 * tensor
    step_size = tl.load(per_tensor).to(ACC)
    bias_correction2_sqrt = tl.load(per_tensor + 1).to(ACC)
    param_ptr = load_pointer(row, 0, DTYPE, True)
    grad_ptr = load_pointer(row, 1, DTYPE, True)
    exp_avg_ptr = load_pointer(row, 2, DTYPE, True)
    exp_avg_sq_ptr = load_pointer(row, 3, DTYPE, True)
    max_sq_ptr = load_pointer(row, 4, DTYPE, True)
    offs = start + tl.arange(0, BLOCK).to(tl.int64)
    if start + BLOCK <= numel:  # a whole block: unmasked accesses
        _adam_block(param_ptr, grad_ptr, exp_avg_ptr, exp_avg_sq_ptr, max_sq_ptr, offs, None,
                    step_size, bias_correction2_sqrt, param_decay, weight_decay, one_minus_beta1,
                    beta2, one_minus_beta2, eps, grad_sign, ACC, AMSGRAD)
    else:
        _adam_block(param_ptr, grad_ptr, exp_avg_ptr, exp_avg_sq_ptr, max_sq_ptr, offs,
                    offs < numel, step_size, bias_correction2_sqrt, param_decay, weight_decay,
                    one_minus_beta1, beta2, one_minus_beta2, eps, grad_sign, ACC, AMSGRAD)


# --- host side ---------------------------------------------------------------------------------

def _acc(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _stage(tensors: list[torch.Tensor | None]) -> tuple[list, list]:
    """Tensors of one parameter (param, grad, state...) that the kernel can treat as flat arrays
    of one layout: the originals where possible, else aligned copies in the param's layout (or
    contiguous when the param is not dense). Returns (flat tensors, [(original, copy)]); the
    caller keeps the copies alive until the launch and writes back all but the read-only grad."""
    ref = tensors[0]
    if is_dense(ref):
        stride = ref.stride()
    else:
        stride = torch.empty(ref.shape, device="meta").stride()
    flat, copies = [], []
    for column, t in enumerate(tensors):
        if t is None or (t.stride() == stride and t.data_ptr() % 16 == 0):
            flat.append(t)
            continue
        staged = alloc.empty_strided(ref.shape, stride, dtype=t.dtype, device=t.device)
        staged.copy_(t)
        flat.append(staged)
        copies.append((t, staged, column))
    return flat, copies


_TABLE_CACHE: collections.OrderedDict = collections.OrderedDict()
_TABLE_CACHE_SIZE = 16


def _to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    host = torch.from_numpy(array)
    if device.type == "cuda":  # pinned + non_blocking: no host synchronization
        return host.pin_memory().to(device, non_blocking=True)
    return host


def _tables(table: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Device copies of the tensor table and its chunk table (cached: parameters and, with the
    caching allocator, gradients usually keep their addresses from step to step)."""
    key = (device, table.tobytes())
    hit = _TABLE_CACHE.get(key)
    if hit is not None:
        _TABLE_CACHE.move_to_end(key)
        return hit
    numels = table[:, NUMEL]
    counts = (numels + BLOCK - 1) // BLOCK
    tensor_of_chunk = np.repeat(np.arange(len(table), dtype=np.int64), counts)
    first_chunk = np.cumsum(counts) - counts
    start = (np.arange(int(counts.sum()), dtype=np.int64)
             - np.repeat(first_chunk, counts)) * BLOCK
    chunks = np.ascontiguousarray(np.stack([tensor_of_chunk, start], axis=1))
    value = (_to_device(table, device), _to_device(chunks, device), len(chunks))
    _TABLE_CACHE[key] = value
    if len(_TABLE_CACHE) > _TABLE_CACHE_SIZE:
        _TABLE_CACHE.popitem(last=False)
    return value


_LAYOUT = operator.attrgetter("shape", "dtype", "device")


def _check(name: str, tensors: Sequence | None, params: Sequence[torch.Tensor]) -> None:
    """``tensors`` pairs with ``params``: same length, shapes, dtypes and devices."""
    if tensors is None:
        raise ValueError(f"{name} is required here")
    if len(tensors) != len(params):
        raise ValueError(f"{name} has {len(tensors)} tensors, params has {len(params)}")
    for i, t in enumerate(tensors):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}[{i}] must be a tensor, got {type(t).__name__}")
    if list(map(_LAYOUT, tensors)) != list(map(_LAYOUT, params)):  # one pass in C per list
        for i, (t, p) in enumerate(zip(tensors, params)):
            if _LAYOUT(t) != _LAYOUT(p):
                raise ValueError(f"{name}[{i}] is {tuple(t.shape)} {t.dtype} on {t.device}; "
                                 f"params[{i}] is {tuple(p.shape)} {p.dtype} on {p.device}")


def _by_dtype(params: Sequence[torch.Tensor]) -> dict[torch.dtype, list[int]]:
    groups: dict[torch.dtype, list[int]] = {}
    for i, p in enumerate(params):
        if p.dtype not in TL_DTYPES:
            raise TypeError(f"params[{i}] has dtype {p.dtype}; the triton optimizer kernels "
                            f"support {sorted(map(str, TL_DTYPES))}")
        if p.numel():
            groups.setdefault(p.dtype, []).append(i)
    return groups


def _prepare(indices: list[int], lists: list[Sequence | None], flags: Sequence[int] | None):
    """The tensor table (int64 ``[T, ROW]``) of these parameters and the staged copies (see
    ``_stage``). Vectorised over the list (map over C methods): this runs on every step."""
    columns = [lst if len(indices) == len(lst) else [lst[i] for i in indices]
               for lst in lists if lst is not None]  # None lists are trailing state slots
    n, used = len(indices), len(columns)
    table = np.zeros((n, ROW), dtype=np.int64)
    usable = np.ones(n, dtype=bool)
    for c, column in enumerate(columns):
        table[:, c] = np.fromiter(map(torch.Tensor.data_ptr, column), np.int64, n)
        usable &= np.fromiter(map(torch.Tensor.is_contiguous, column), bool, n)
    usable &= (table[:, :used] % 16 == 0).all(axis=1)
    table[:, NUMEL] = np.fromiter(map(torch.Tensor.numel, columns[0]), np.int64, n)
    if flags is not None:
        table[:, FLAG] = np.fromiter((flags[i] for i in indices), np.int64, n)
    copies: list = []
    for row in np.flatnonzero(~usable):  # rare: strided views, channels_last, misaligned
        flat, staged = _stage([column[row] for column in columns])
        copies.extend(staged)
        table[row, :used] = [t.data_ptr() for t in flat]
    return table, copies


def _scalars(values, device: torch.device) -> torch.Tensor:
    """The fp64 scalar table of one launch on ``device`` (see the module docstring)."""
    return _to_device(np.ascontiguousarray(values, dtype=np.float64), device)


def _refuse_capture(device: torch.device, op: str) -> None:
    if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
        raise RuntimeError(f"{op} (triton): the fused optimizer step cannot be captured in a "
                           "CUDA graph (it uploads per-step scalars and tensor tables from host "
                           "memory); run it outside the capture or use torch.optim with "
                           "capturable=True")


def _write_back(copies: list) -> None:
    for original, staged, column in copies:
        if column != GRAD:
            original.copy_(staged)


def sgd_step(params, grads, momentum_buffers, fresh_buffers, lr, weight_decay, momentum,
             dampening, nesterov, maximize) -> None:
    _check("grads", grads, params)
    has_momentum = momentum != 0
    if has_momentum:
        _check("momentum_buffers", momentum_buffers, params)
        if fresh_buffers is None or len(fresh_buffers) != len(params):
            raise ValueError("fresh_buffers needs one bool per parameter")
    for dtype, indices in _by_dtype(params).items():
        lists = [params, grads, momentum_buffers if has_momentum else None]
        host_table, copies = _prepare(indices, lists, fresh_buffers if has_momentum else None)
        device = params[indices[0]].device
        _refuse_capture(device, "sgd_step")
        table, chunks, n_chunks = _tables(host_table, device)
        hyper = [lr, weight_decay, momentum, dampening, -1.0 if maximize else 1.0]
        assert len(hyper) == SGD_SCALARS.value
        scalars = _scalars(hyper, device)
        sgd_kernel[(n_chunks,)](
            table, chunks, scalars, DTYPE=TL_DTYPES[dtype], ACC=_acc(dtype),
            HAS_MOMENTUM=has_momentum, NESTEROV=bool(nesterov) and has_momentum, BLOCK=BLOCK,
            num_warps=NUM_WARPS)
        # grads are read-only: only params and buffers are written back
        _write_back(copies)


def adam_step(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, lr, beta1, beta2, eps,
              weight_decay, amsgrad, maximize, decoupled_weight_decay) -> None:
    _check("grads", grads, params)
    _check("exp_avgs", exp_avgs, params)
    _check("exp_avg_sqs", exp_avg_sqs, params)
    if amsgrad:
        _check("max_exp_avg_sqs", max_exp_avg_sqs, params)
    if len(steps) != len(params):
        raise ValueError(f"steps has {len(steps)} entries, params has {len(params)}")
    lr, beta1, beta2 = float(lr), float(beta1), float(beta2)
    for dtype, indices in _by_dtype(params).items():
        lists = [params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs if amsgrad else None]
        host_table, copies = _prepare(indices, lists, None)
        device = params[indices[0]].device
        _refuse_capture(device, "adam_step")
        table, chunks, n_chunks = _tables(host_table, device)
        step = np.asarray([float(steps[i]) for i in indices], dtype=np.float64)
        per_tensor = np.stack([lr / (1.0 - beta1 ** step), np.sqrt(1.0 - beta2 ** step)], axis=1)
        decoupled = bool(decoupled_weight_decay)
        hyper = [1.0 - lr * weight_decay if decoupled else 1.0,
                 0.0 if decoupled else weight_decay, 1.0 - beta1, beta2, 1.0 - beta2, eps,
                 -1.0 if maximize else 1.0]
        assert len(hyper) == ADAM_SCALARS.value
        scalars = _scalars(np.concatenate([hyper, per_tensor.ravel()]), device)
        adam_kernel[(n_chunks,)](
            table, chunks, scalars, DTYPE=TL_DTYPES[dtype], ACC=_acc(dtype),
            AMSGRAD=bool(amsgrad), BLOCK=BLOCK, num_warps=NUM_WARPS)
        _write_back(copies)


# --- ahead-of-time configurations --------------------------------------------------------------

def aot_configs() -> list[AOTConfig]:
    configs = []
    for dtype, tl_dtype in TL_DTYPES.items():
        name = SIGNATURE_DTYPES[dtype]
        for has_momentum, nesterov in ((False, False), (True, False), (True, True)):
            configs.append(AOTConfig(
                kernel=sgd_kernel,
                signature={"table_ptr": "*i64", "chunks_ptr": "*i64", "scalars_ptr": "*fp64",
                           "DTYPE": "constexpr", "ACC": "constexpr",
                           "HAS_MOMENTUM": "constexpr", "NESTEROV": "constexpr",
                           "BLOCK": "constexpr"},
                constexprs={"DTYPE": tl_dtype, "ACC": _acc(dtype), "HAS_MOMENTUM": has_momentum,
                            "NESTEROV": nesterov, "BLOCK": BLOCK},
                num_warps=NUM_WARPS, label=f"momentum={has_momentum} nesterov={nesterov}",
                dtype=name))
        for amsgrad in (False, True):
            configs.append(AOTConfig(
                kernel=adam_kernel,
                signature={"table_ptr": "*i64", "chunks_ptr": "*i64", "scalars_ptr": "*fp64",
                           "DTYPE": "constexpr", "ACC": "constexpr", "AMSGRAD": "constexpr",
                           "BLOCK": "constexpr"},
                constexprs={"DTYPE": tl_dtype, "ACC": _acc(dtype), "AMSGRAD": amsgrad,
                            "BLOCK": BLOCK},
                num_warps=NUM_WARPS, label=f"amsgrad={amsgrad}", dtype=name))
    return configs

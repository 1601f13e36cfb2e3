"""Plumbing shared by the CuPy launchers: argument checks, CuPy discovery with clear errors,
loading each ``.cu`` source once through ``cupy.RawModule``, and launching on torch's stream.

Zero-copy interop: a kernel argument that is a torch tensor is passed as its device address
(``tensor.data_ptr()``, the address its ``__cuda_array_interface__`` / DLPack capsule exposes),
so no copy and no CuPy array is made; this also covers bfloat16, which CuPy has no dtype for.
Kernels run on ``torch.cuda.current_stream()`` wrapped as a ``cupy.cuda.ExternalStream``, so
they order correctly with the surrounding PyTorch work (other streams, CUDA graphs). Nothing here
synchronizes with the host.

Every launcher checks its arguments (shapes, dtypes) before it looks for CUDA or CuPy, so those
checks are unit-tested on machines without either.
"""
from __future__ import annotations

import functools
import importlib
import os
from typing import Any, Sequence

import numpy as np
import torch

from ..layout import is_dense
from ..limits import check_grid

SOURCE_DIR = os.path.dirname(os.path.abspath(__file__))
# torch dtype -> suffix of the extern "C" kernels (FOR_EACH_STORAGE_TYPE in common.cuh)
SUFFIX = {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16"}
THREADS = 256
MAX_BLOCKS = 65535 * 32  # grid-stride loops cover any n beyond this


# --- typed kernel arguments (CuPy packs numpy scalars with their exact C size) ------------------

def i32(v) -> np.int32:
    if not -2 ** 31 <= int(v) < 2 ** 31:
        raise ValueError(f"{v} does not fit the kernel's 32-bit argument")
    return np.int32(v)


def i64(v) -> np.int64:
    return np.int64(v)


def u64(v) -> np.uint64:
    return np.uint64(int(v) & 0xFFFFFFFFFFFFFFFF)


def f32(v) -> np.float32:
    return np.float32(v)


def _argument(a: Any):
    if a is None:
        return np.uint64(0)  # a null pointer
    if isinstance(a, torch.Tensor):
        return np.uint64(a.data_ptr())
    if isinstance(a, (np.integer, np.floating)):
        return a
    raise TypeError(f"kernel argument {a!r}: wrap Python numbers in i32/i64/u64/f32")


# --- argument checks ------------------------------------------------------------------------------

def suffix(op: str, name: str, t: torch.Tensor) -> str:
    """The kernel suffix for ``t``'s dtype, or a TypeError naming the argument."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    try:
        return SUFFIX[t.dtype]
    except KeyError:
        raise TypeError(f"{op}: {name} has dtype {t.dtype}; the cupy backend supports "
                        "float32, float16 and bfloat16; use the 'reference' backend for "
                        "float64") from None


def same_dtype(op: str, **tensors: torch.Tensor | None) -> None:
    present = {k: v for k, v in tensors.items() if v is not None}
    if len({v.dtype for v in present.values()}) > 1:
        raise TypeError(f"{op}: dtypes differ: "
                        + ", ".join(f"{k} is {v.dtype}" for k, v in present.items()))


def require_cuda(op: str, **tensors: torch.Tensor | None) -> torch.device:
    """All given tensors on one CUDA device (else a RuntimeError that says what to do)."""
    devices = {k: v.device for k, v in tensors.items() if v is not None}
    for name, device in devices.items():
        if device.type != "cuda":
            raise RuntimeError(
                f"{op}: the cupy backend runs CUDA tensors only, but {name} is on {device}; move "
                "the tensors to a CUDA device or use the 'reference' backend")
    if len(set(devices.values())) > 1:
        raise RuntimeError(f"{op}: tensors on different devices: "
                           + ", ".join(f"{k} on {d}" for k, d in devices.items()))
    return next(iter(devices.values()))


def common_layout(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The tensors unchanged when they share one dense layout (elementwise kernels then walk
    storage order), else contiguous copies."""
    first = tensors[0]
    if is_dense(first) and all(t.stride() == first.stride() for t in tensors[1:]):
        return tensors
    return tuple(t.contiguous() for t in tensors)


def blocks_for(n: int, threads: int = THREADS) -> int:
    return max(1, min((n + threads - 1) // threads, MAX_BLOCKS))


def threads_per_row(cols: int) -> int:
    """Block size of the one-block-per-row kernels: a power of two in [32, 1024], ~4 per thread."""
    threads = 32
    while threads < 1024 and threads * 4 < cols:
        threads *= 2
    return threads


# --- CuPy ----------------------------------------------------------------------------------------

def cupy_module():
    """The cupy module, or a RuntimeError that says what is missing and how to install it."""
    try:
        cupy = importlib.import_module("cupy")
    except ImportError as exc:
        raise RuntimeError(
            "the cupy backend needs CuPy, which is not installed (" + str(exc) + "); install it "
            "with `pip install 'gpudnn[cupy]'` (cupy-cuda13x for CUDA 13; use the cupy-cudaXXx "
            "wheel matching torch.version.cuda)") from None
    torch_cuda = torch.version.cuda
    try:
        cupy_cuda = cupy.cuda.runtime.runtimeGetVersion()
    except Exception as exc:  # a CuPy without a usable CUDA runtime / driver
        raise RuntimeError(f"CuPy is installed but cannot use CUDA ({type(exc).__name__}: "
                           f"{exc}); install the cupy-cudaXXx wheel matching torch.version.cuda "
                           f"({torch_cuda})") from None
    if torch_cuda is not None and int(torch_cuda.split(".")[0]) != cupy_cuda // 1000:
        raise RuntimeError(f"CuPy is built for CUDA {cupy_cuda // 1000}.x but torch uses CUDA "
                           f"{torch_cuda}; install cupy-cuda{torch_cuda.split('.')[0]}x")
    return cupy


@functools.lru_cache(maxsize=None)
def raw_module(family: str):
    """``<family>.cu`` compiled once per process (NVRTC; CuPy also caches the binary on disk)."""
    cupy = cupy_module()
    capability = int(cupy.cuda.Device().compute_capability)
    if capability < 80:  # the bf16 conversions in common.cuh are sm_80+ PTX
        raise RuntimeError(f"the cupy backend's kernels need a GPU of compute capability 8.0 or "
                           f"newer (this one is {capability // 10}.{capability % 10}); use the "
                           "triton or reference backend")
    with open(os.path.join(SOURCE_DIR, f"{family}.cu")) as f:
        code = f.read()
    return cupy.RawModule(code=code, options=("--std=c++17", f"-I{SOURCE_DIR}"))


def launch(family: str, kernel: str, device: torch.device, grid: Sequence[int],
           block: Sequence[int], args: Sequence[Any], shared_mem: int = 0) -> None:
    """Launch ``kernel`` of ``<family>.cu`` on torch's current stream of ``device``."""
    check_grid(kernel, grid, allow_empty=False)
    cupy = cupy_module()
    function = raw_module(family).get_function(kernel)
    packed = tuple(_argument(a) for a in args)
    with cupy.cuda.Device(device.index if device.index is not None else
                          torch.cuda.current_device()):
        stream = cupy.cuda.ExternalStream(torch.cuda.current_stream(device).cuda_stream)
        with stream:
            function(tuple(grid), tuple(block), packed, shared_mem=shared_mem)

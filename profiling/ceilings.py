"""This GPU's own limits, measured at the start of every run, and the run's environment.

- Copy bandwidth: ``dst.copy_(src)`` over 1 GiB, counting bytes read plus bytes written.
- Matmul rates: ``torch.mm`` at 8192^3 through cuBLAS in bf16, fp16, tf32 (fp32 inputs with
  ``allow_tf32``) and plain fp32, on random data (never zeros: they run faster).
"""
from __future__ import annotations

import datetime
import importlib
import os
import platform
import subprocess

import torch

from .costs import Ceilings

COPY_BYTES = 2 ** 30
MATMUL_N = 8192


def measure_ceilings(timer, copy_bytes: int = COPY_BYTES, n: int = MATMUL_N,
                     device: str = "cuda") -> tuple[Ceilings, dict]:
    """(ceilings, details) measured with ``timer`` on the current CUDA device (``device`` "cpu"
    with a fake timer and small sizes: the dry run)."""
    details: dict = {}
    src = torch.rand(copy_bytes // 4, device=device)
    dst = torch.empty_like(src)
    t = timer.events_flush(lambda i: dst.copy_(src))
    copy_bps = 2 * copy_bytes / (t.median_ms / 1e3)
    details["copy"] = {"bytes_each_way": copy_bytes, **t.as_dict()}
    del src, dst
    rates = {}
    saved_flag = torch.backends.cuda.matmul.allow_tf32
    try:
        for key, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16),
                           ("tf32", torch.float32), ("fp32", torch.float32)):
            torch.backends.cuda.matmul.allow_tf32 = key == "tf32"
            a = torch.randn(n, n, device=device, dtype=dtype)
            b = torch.randn(n, n, device=device, dtype=dtype)
            c = torch.empty(n, n, device=device, dtype=dtype)
            t = timer.events_flush(lambda i: torch.mm(a, b, out=c))
            rates[key] = 2 * n ** 3 / (t.median_ms / 1e3)
            details[f"matmul_{key}"] = {"n": n, **t.as_dict()}
            del a, b, c
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved_flag
    if device == "cuda":
        torch.cuda.empty_cache()
    return Ceilings(copy_bps, rates), details


def slug(name: str) -> str:
    """A folder name from a GPU name: "NVIDIA H100 80GB HBM3" -> "nvidia-h100-80gb-hbm3"."""
    out = "".join(c.lower() if c.isalnum() else "-" for c in name)
    while "--" in out:
        out = out.replace("--", "-")
    return out.strip("-") or "unknown-gpu"


def _version(module: str) -> str | None:
    try:
        return importlib.import_module(module).__version__
    except Exception:
        return None


def _run(cmd: list[str], cwd: str | None = None) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20, cwd=cwd)
        return out.stdout.strip() if out.returncode == 0 else None
    except Exception:
        return None


def environment() -> dict:
    """GPU, driver, CUDA, library versions, commit and date of this run."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host_python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "triton": _version("triton"),
        "cupy": _version("cupy"),
        "gpudnn": _version("gpudnn"),
        "git_commit": _run(["git", "rev-parse", "HEAD"], cwd=root),
        "git_dirty": bool(_run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root)),
        "tf32": {"matmul": torch.backends.cuda.matmul.allow_tf32,
                 "cudnn": torch.backends.cudnn.allow_tf32},
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        env.update({
            "gpu": props.name,
            "compute_capability": f"{props.major}.{props.minor}",
            "sm_count": props.multi_processor_count,
            "gpu_memory_bytes": props.total_memory,
            "l2_bytes": getattr(props, "L2_cache_size", None),
            "driver": _run(["nvidia-smi", "--query-gpu=driver_version",
                            "--format=csv,noheader"]),
        })
        clocks = _run(["nvidia-smi", "--query-gpu=clocks.sm,clocks.max.sm,power.limit",
                       "--format=csv,noheader"])
        if clocks:
            env["clocks_sm_now_max_power_limit"] = clocks.splitlines()[0]
    return env

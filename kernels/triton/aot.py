"""Ahead-of-time compilation of Triton kernels for Hopper (sm_90), without a GPU.

Every family module in this package exposes ``aot_configs()``: the list of every launch
configuration its launchers' heuristics can pick, as ``AOTConfig`` records. ``compile_sm90``
compiles one to a cubin and reads registers, shared memory, spills and the MMA instructions from
its SASS (``cuobjdump``, shipped inside Triton's package). ``tests/test_aot.py`` and
``python -m profiling.kernel_report`` both walk ``all_configs()``.
"""
from __future__ import annotations

import importlib
import os
import pkgutil
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from typing import Any

import torch



def _family_modules() -> tuple[str, ...]:
    """The op family modules of this package: every public module but this one (read from the
    package's files, so a new family is compiled without being listed anywhere)."""
    here = os.path.dirname(os.path.abspath(__file__))
    return tuple(sorted(m.name for m in pkgutil.iter_modules([here])
                        if not m.name.startswith("_") and m.name != "aot"))


FAMILIES = _family_modules()
# torch dtype -> the signature's type name of a pointer to it
SIGNATURE_DTYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16",
                    torch.float64: "fp64"}


@dataclass
class AOTConfig:
    """One launch configuration of one kernel.

    kernel: the @triton.jit function; signature: {arg: type string} for every argument ("*fp32",
    "i32", "i64", "fp32", "constexpr", ...); constexprs: {name: value}; expect_mma: "HGMMA" when
    the configuration must use Hopper's warpgroup MMA, "" for no requirement.
    """

    kernel: Any
    signature: dict[str, str]
    constexprs: dict[str, Any]
    num_warps: int = 4
    num_stages: int = 3
    label: str = ""
    dtype: str = "fp32"
    expect_mma: str = ""
    spill_reason: str = ""  # non-empty: spills are accepted, and this says why


@dataclass
class CompiledInfo:
    name: str
    label: str
    dtype: str
    num_warps: int
    num_stages: int
    registers: int
    shared_bytes: int
    local_bytes: int
    spill_stores: int
    spill_loads: int
    mma: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def spills(self) -> int:
        return self.spill_stores + self.spill_loads


def _tool(name: str) -> str:
    import triton
    path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)
    return path if os.path.exists(path) else name


def compile_sm90(cfg: AOTConfig) -> CompiledInfo:
    """Compile one configuration for sm_90 and report its resources."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    constexprs = {k: v for k, v in cfg.constexprs.items()}
    src = ASTSource(fn=cfg.kernel, signature=cfg.signature, constexprs=constexprs)
    compiled = triton.compile(src, target=GPUTarget("cuda", 90, 32),
                              options={"num_warps": cfg.num_warps, "num_stages": cfg.num_stages})
    cubin = compiled.asm["cubin"]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.cubin")
        with open(path, "wb") as f:
            f.write(cubin)
        res = subprocess.run([_tool("cuobjdump"), "-res-usage", path], capture_output=True,
                             text=True, check=True).stdout
        sass = subprocess.run([_tool("cuobjdump"), "-sass", path], capture_output=True,
                              text=True, check=True).stdout

    def field_of(key: str) -> int:
        m = re.search(rf"\b{key}:(\d+)", res)
        return int(m.group(1)) if m else 0

    mma = ""
    for kind in ("HGMMA", "HMMA", "IMMA", "DMMA"):
        if re.search(rf"\b{kind}\b", sass):
            mma = kind
            break
    name = getattr(cfg.kernel, "__name__", None) or getattr(cfg.kernel.fn, "__name__", "kernel")
    return CompiledInfo(
        name=name, label=cfg.label, dtype=cfg.dtype, num_warps=cfg.num_warps,
        num_stages=cfg.num_stages, registers=field_of("REG"),
        shared_bytes=compiled.metadata.shared, local_bytes=field_of("LOCAL"),
        spill_stores=len(re.findall(r"\bSTL\b", sass)), spill_loads=len(re.findall(r"\bLDL\b", sass)),
        mma=mma)


def all_configs(families: tuple[str, ...] = FAMILIES) -> list[AOTConfig]:
    """Every configuration of every family module (a module without ``aot_configs``, or one
    that does not exist, has none)."""
    configs: list[AOTConfig] = []
    for family in families:
        try:
            module = importlib.import_module(f"{__package__}.{family}")
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.endswith(f"triton.{family}"):
                continue
            raise
        if hasattr(module, "aot_configs"):
            configs.extend(module.aot_configs())
    return configs


def _compile_one(index: int) -> dict:
    cfg = all_configs()[index]
    try:
        info = compile_sm90(cfg)
        row = dict(info.__dict__)
        row["spills"] = info.spills
        row["expect_mma"] = cfg.expect_mma
        row["spill_reason"] = cfg.spill_reason
        return row
    except Exception as exc:  # reported, and a failure in tests
        name = getattr(cfg.kernel, "__name__", "kernel")
        return {"name": name, "label": cfg.label, "dtype": cfg.dtype, "error": f"{exc}"[-2000:]}


def compile_all(jobs: int | None = None) -> list[dict]:
    """Compile every configuration (in worker processes) and return one dict per configuration.

    Must run without TRITON_INTERPRET: under the interpreter @triton.jit yields interpreted
    functions that cannot be compiled; ``run_report_subprocess`` takes care of that.
    """
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise RuntimeError("compile_all needs TRITON_INTERPRET unset; use run_report_subprocess()")
    n = len(all_configs())
    if n == 0:
        return []
    import concurrent.futures as cf
    import multiprocessing as mp
    jobs = jobs or min(n, os.cpu_count() or 1)
    with cf.ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as pool:
        return list(pool.map(_compile_one, range(n)))


def run_report_subprocess(timeout: float = 900) -> list[dict]:
    """``compile_all`` in a fresh interpreter with TRITON_INTERPRET unset (for tests)."""
    import json
    import sys
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-m", "gpudnn.kernels.triton.aot"], env=env,
                         capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"AOT compilation failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout)


if __name__ == "__main__":
    import json
    import sys
    json.dump(compile_all(), sys.stdout)

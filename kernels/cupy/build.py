"""Ahead-of-time compilation of every CUDA C source of the CuPy backend for Hopper, without a GPU.

``compile_all()`` runs ``nvcc -cubin -arch=sm_90 -Werror all-warnings`` on each ``*.cu`` file here
and reads, per kernel, registers / shared / local memory (``cuobjdump -res-usage``) and spill
instructions (STL/LDL in the SASS, as ``kernels/triton/aot.py`` counts them), in aot's row
format, so ``profiling.kernel_report`` can list both backends in one table. The launchers compile
the same sources at run time through NVRTC (``cupy.RawModule``), so what builds here builds there.

Run ``python -m gpudnn.kernels.cupy.build`` for the rows as JSON.
"""
from __future__ import annotations

import concurrent.futures
import os
import re
import shutil
import subprocess
import tempfile

SOURCE_DIR = os.path.dirname(os.path.abspath(__file__))
ARCH = "sm_90"
NVCC_FLAGS = ("-cubin", f"-arch={ARCH}", "-std=c++17", "-Werror", "all-warnings",
              "-Xptxas", "-v", f"-I{SOURCE_DIR}")
_DTYPE_OF_SUFFIX = {"f32": "fp32", "f16": "fp16", "bf16": "bf16"}


def sources() -> list[str]:
    """Every .cu file of the backend (headers are .cuh and compile as part of them)."""
    return sorted(os.path.join(SOURCE_DIR, f) for f in os.listdir(SOURCE_DIR) if f.endswith(".cu"))


def nvcc_path() -> str | None:
    return shutil.which("nvcc")


def _cuobjdump() -> str:
    """cuobjdump from PATH, beside nvcc, or the copy inside Triton's package."""
    found = shutil.which("cuobjdump")
    if found:
        return found
    nvcc = nvcc_path()
    if nvcc:
        # nvcc may be a wrapper script: also try the CUDA install it execs
        for directory in {os.path.dirname(nvcc), os.path.dirname(os.path.realpath(nvcc)),
                          "/usr/local/cuda/bin"}:
            candidate = os.path.join(directory, "cuobjdump")
            if os.path.exists(candidate):
                return candidate
    try:
        import triton
        candidate = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin",
                                 "cuobjdump")
        if os.path.exists(candidate):
            return candidate
    except ImportError:
        pass
    raise RuntimeError("cuobjdump not found (PATH, beside nvcc, or inside Triton's package)")


def _per_function(text: str, header: str) -> dict[str, str]:
    """Split cuobjdump output into {function name: its section} at lines matching ``header``."""
    sections: dict[str, str] = {}
    name = None
    for line in text.splitlines():
        m = re.match(header, line.strip())
        if m:
            name = m.group(1)
            sections[name] = ""
        elif name is not None:
            sections[name] += line + "\n"
    return sections


def _dtype_of(kernel: str) -> str:
    suffix = kernel.rsplit("_", 1)[-1]
    return _DTYPE_OF_SUFFIX.get(suffix, "fp32")  # kernels without a suffix work on fp32 vectors


def compile_source(path: str) -> list[dict]:
    """Compile one .cu file; one row per kernel, or one row with "error"."""
    label = os.path.basename(path)
    nvcc = nvcc_path()
    if nvcc is None:
        return [{"name": label, "label": label, "dtype": "", "error": "nvcc not on PATH"}]
    with tempfile.TemporaryDirectory() as tmp:
        cubin = os.path.join(tmp, label.replace(".cu", ".cubin"))
        built = subprocess.run([nvcc, *NVCC_FLAGS, "-o", cubin, path], capture_output=True,
                               text=True)
        if built.returncode != 0:
            return [{"name": label, "label": label, "dtype": "",
                     "error": (built.stderr + built.stdout)[-4000:]}]
        tool = _cuobjdump()
        res = subprocess.run([tool, "-res-usage", cubin], capture_output=True, text=True,
                             check=True).stdout
        sass = subprocess.run([tool, "-sass", cubin], capture_output=True, text=True,
                              check=True).stdout
    usage = _per_function(res, r"Function (\S+):$")
    code = _per_function(sass, r"Function : (\S+)$")
    rows = []
    for name in sorted(usage):
        def field(key: str) -> int:
            m = re.search(rf"\b{key}:(\d+)", usage[name])
            return int(m.group(1)) if m else 0

        body = code.get(name, "")
        stores, loads = len(re.findall(r"\bSTL\b", body)), len(re.findall(r"\bLDL\b", body))
        rows.append({
            "name": name, "label": label, "dtype": _dtype_of(name), "num_warps": 0,
            "num_stages": 0, "registers": field("REG"), "shared_bytes": field("SHARED"),
            "local_bytes": field("LOCAL"), "spill_stores": stores, "spill_loads": loads,
            "mma": "", "extra": {"stack_bytes": field("STACK"), "arch": ARCH},
            "spills": stores + loads, "expect_mma": "", "spill_reason": "",
        })
    return rows


def compile_all(jobs: int | None = None) -> list[dict]:
    """Compile every .cu file (in parallel) and return one row per kernel (aot's row format)."""
    paths = sources()
    jobs = jobs or min(len(paths), os.cpu_count() or 1) or 1
    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:  # the work is in nvcc processes
        return [row for rows in pool.map(compile_source, paths) for row in rows]


if __name__ == "__main__":
    import json
    import sys
    json.dump(compile_all(), sys.stdout)

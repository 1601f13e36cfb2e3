"""Trace every traceable gpudnn op on fake tensors with the triton backend, as torch.compile's AOT
stage does on a GPU, without a GPU (fake CUDA tensors where CUDA exists, else fake "meta" ones
through the same code path; run by tests/test_compile.py in a subprocess: the Triton interpreter
must be off, so that ``wrap_triton`` sees JIT kernels).

For each op and sample: the graph must hold the op's Triton kernels as
``triton_kernel_wrapper_functional`` calls (Inductor compiles those) and no opaque gpudnn op, and
Triton's own analysis of each kernel (TTIR, compiled for sm_90 here) must find that it writes
none of the op's inputs. Prints one JSON line per op: {"op", "kernels", "problems"}.
"""
import json
import logging
import os
import sys

assert os.environ.get("TRITON_INTERPRET", "0") in ("", "0"), "run without TRITON_INTERPRET"

import torch  # noqa: E402
import triton  # noqa: E402
from torch._functorch.aot_autograd import aot_function  # noqa: E402
from torch._subclasses.fake_tensor import FakeTensorMode  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpudnn  # noqa: E402,F401
from gpudnn.ops import OPS, _library as library  # noqa: E402
from op_samples import samples  # noqa: E402


class _Hopper:
    """The active Triton driver's one method torch's kernel analysis calls, for sm_90."""

    def get_current_target(self):
        return GPUTarget("cuda", 90, 32)


class _Captured(Exception):
    pass


def trace(op, args) -> torch.fx.GraphModule:
    positions = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]
    graphs = []

    def call(*tensors):
        full = list(args)
        for i, t in zip(positions, tensors):
            full[i] = t
        return op(*full)

    def capture(gm, _):
        graphs.append(gm)
        raise _Captured

    try:
        aot_function(call, fw_compiler=capture)(*[args[i] for i in positions])
    except _Captured:
        pass
    return graphs[0]


def check(name: str, mode: FakeTensorMode, device: str) -> dict:
    kernels, problems = 0, []
    with mode:
        cases = samples(name, "triton", device)
    for k, args in enumerate(cases):
        with mode:
            graph = trace(OPS[name].overload, args)
        inputs = {n.name for n in graph.graph.nodes if n.op == "placeholder"}
        for node in graph.graph.nodes:
            target = str(node.target)
            if "gpudnn" in target and "_opaque" in target:
                problems.append(f"sample {k}: runs opaquely ({target})")
            if "triton_kernel_wrapper" in target:
                kernels += 1
                written = [a for a in node.kwargs.get("tensors_to_clone", [])
                           if getattr(node.kwargs["kwargs"].get(a), "name", None) in inputs]
                if written:
                    problems.append(f"sample {k}: a kernel writes the op's inputs {written}")
    if not kernels:
        problems.append("no Triton kernel in the graph")
    return {"op": name, "kernels": kernels, "problems": problems}


def main() -> int:
    logging.getLogger("torch._higher_order_ops.triton_kernel_wrap").setLevel(logging.ERROR)
    if not torch.cuda.is_available():  # on a GPU the real driver (a Hopper one) answers
        triton.runtime.driver.set_active(_Hopper())
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    # a CPU-only torch cannot fake copies or channels_last clones on CUDA tensors: without a
    # GPU the launchers are traced on fake "meta" tensors, through the same traceable path
    device = "cuda" if torch.cuda.is_available() else "meta"
    library.TRITON_TRACE_DEVICES = ("cuda", "meta")
    names = sys.argv[1:] or sorted(n for n, op in OPS.items() if op.traceable)
    for name in names:
        try:
            result = check(name, mode, device)
        except Exception as exc:  # reported, not raised: one line per op
            result = {"op": name, "kernels": 0,
                      "problems": [f"{type(exc).__name__}: {str(exc)[:400]}"]}
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

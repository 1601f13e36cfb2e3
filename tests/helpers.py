"""Helpers shared by the test modules (import as `from helpers import ...`)."""
import contextlib
import os
import re

import numpy as np
import pytest
import torch

import gpudnn
from gpudnn.activations import activation_module, parse_activation
from gpudnn.kernels.cupy._runtime import SOURCE_DIR as CUPY_SOURCE_DIR, is_dense
from gpudnn.testing import assert_close

DEVICE = os.environ.get("GPUDNN_TEST_DEVICE", "cpu")
CHANNELS_LAST = torch.channels_last
# why bf16 GEMM tests run on CUDA only (checked with triton 3.6.0 and 3.9.0)
INTERPRETER_BF16_DOT = ("the Triton interpreter's tl.dot is wrong for bfloat16 operands (a 16x16 "
                        "bf16 tl.dot is off by 1e10 in Triton 3.6 and 3.9); runs under "
                        "`make test-gpu`")


def lstm_args(gen: torch.Generator, x_shape: tuple, hidden: int, gates: int = 4,
              states: int = 2) -> list:
    """float64 (x, h0, c0, w_ih, w_hh, b_ih, b_hh) of an LSTM layer (x [T, B, I]) or cell
    (x [B, I]), drawn from ``gen`` in that order; weights scaled so the gates stay unsaturated.
    ``gates=3, states=1``: a GRU's (x, h0, w_ih, w_hh, b_ih, b_hh)."""
    batch, inp = x_shape[-2], x_shape[-1]
    rows = gates * hidden
    return [torch.randn(shape, dtype=torch.float64, generator=gen) * scale for shape, scale in (
        (tuple(x_shape), 1.0), *[((batch, hidden), 1.0)] * states,
        ((rows, inp), 0.4), ((rows, hidden), 0.3), ((rows,), 0.3), ((rows,), 0.3))]


def compare_recurrent(function, args64, flags, backend, device, cotangent_seed,
                      dtype=torch.float32):
    """A recurrent op (``function(*args, *flags)``: an LSTM or GRU layer or cell step) on
    float64 copies of ``args64`` with the reference backend and on ``dtype`` copies with
    ``backend``, every output poisoned with NaN first: every output and every input gradient
    must match in the ``dtype`` row (weight gradients sum over all T*B rows)."""
    from gpudnn.kernels.alloc import poison_outputs
    ref_in = [a.detach().clone().requires_grad_(True) for a in args64]
    ker_in = [a.detach().to(device=device, dtype=dtype).requires_grad_(True) for a in args64]
    with gpudnn.use_backend("reference"):
        ref_out = function(*ref_in, *flags)
    with gpudnn.use_backend(backend), poison_outputs():
        ker_out = function(*ker_in, *flags)
    for k, (a, e) in enumerate(zip(ker_out, ref_out)):
        assert a.dtype == dtype and a.device.type == device
        assert_close(a, e, dtype, name=f"output {k}")
    gen = torch.Generator().manual_seed(cotangent_seed)
    cot = [torch.randn(o.shape, dtype=torch.float64, generator=gen) for o in ref_out]
    torch.autograd.backward(ref_out, cot)
    with gpudnn.use_backend(backend), poison_outputs():
        torch.autograd.backward(ker_out, [c.to(device=device, dtype=dtype) for c in cot])
    rows = args64[0].shape[0] * args64[0].shape[-2] if args64[0].dim() == 3 else 1
    for k, (a, e) in enumerate(zip(ker_in, ref_in)):
        assert a.grad.dtype == dtype
        assert_close(a.grad, e.grad, dtype, name=f"grad of argument {k}",
                     scale=max(1.0, rows ** 0.5))


def kernel_backends() -> list:
    """Backends whose kernels run on DEVICE: triton always (interpreter on CPU); cupy on CUDA."""
    params = [pytest.param("triton", id="triton")]
    params.append(pytest.param("cupy", id="cupy", marks=pytest.mark.skipif(
        DEVICE != "cuda", reason="the cupy backend needs a CUDA GPU (run `make test-gpu` there)")))
    return params


class TorchFused(torch.nn.Module):
    """A torch layer followed by the torch module of an ``activation=`` argument: the twin of a
    gpudnn layer that fuses that activation (extra forward arguments go to the layer)."""

    def __init__(self, layer: torch.nn.Module, act_arg=None):
        super().__init__()
        self.layer = layer
        self.act = activation_module(parse_activation(act_arg))

    def forward(self, x, *extra, **kwargs):
        return self.act(self.layer(x, *extra, **kwargs))


def _leaves(tree) -> list:
    """The tensors of a (nested tuple / list of) tensors, in order."""
    if isinstance(tree, torch.Tensor):
        return [tree]
    if isinstance(tree, (tuple, list)):
        return [t for item in tree for t in _leaves(item)]
    return []


def _map(tree, fn):
    if isinstance(tree, torch.Tensor):
        return fn(tree)
    if isinstance(tree, (tuple, list)):
        return type(tree)(_map(item, fn) for item in tree)
    return tree


def _fresh_leaf(t: torch.Tensor) -> torch.Tensor:
    t = t.detach().clone(memory_format=torch.preserve_format)
    return t.requires_grad_(True) if t.is_floating_point() else t


def compare_with_twin(ours, theirs, *inputs, dtype=None, grad_scale: float = 1.0,
                      seed: int = 0, check_formats: bool = True, scale: float = 1.0,
                      signed_zeros: bool = False):
    """The ONE check of a gpudnn module / function against its torch twin.

    Both run on fresh copies of ``inputs`` (tensors or nested tuples of tensors; floating ones
    require grad); every output tensor must match (and take torch's memory format); then the same
    random cotangents go backward through both and the gradients of every floating input and of
    every parameter must match (the two modules have the same number of parameters, with the
    same names up to a wrapper prefix such as TorchFused's ``layer.``). ``dtype`` picks the row of
    the tolerance table (default: each value's own dtype); ``grad_scale`` widens atol for the
    gradients (sums over many terms) and ``scale`` for the outputs; ``signed_zeros``: 0.0 and
    -0.0 must not be swapped (exact elementwise results). Returns (our outputs, their outputs).
    """
    ours_in = _map(inputs, _fresh_leaf)
    theirs_in = _map(inputs, _fresh_leaf)
    ours_out, theirs_out = ours(*ours_in), theirs(*theirs_in)
    outs_a, outs_b = _leaves(ours_out), _leaves(theirs_out)
    assert len(outs_a) == len(outs_b), f"{len(outs_a)} outputs, torch gives {len(outs_b)}"
    for k, (a, b) in enumerate(zip(outs_a, outs_b)):
        assert a.dtype == b.dtype, f"output {k}: dtype {a.dtype}, torch gives {b.dtype}"
        assert_close(a, b, dtype, name=f"output {k}", scale=scale, signed_zeros=signed_zeros)
        if check_formats and a.dim() == 4:
            assert a.is_contiguous(memory_format=CHANNELS_LAST) == \
                b.is_contiguous(memory_format=CHANNELS_LAST), f"output {k} memory format"
    params_a = list(ours.named_parameters()) if isinstance(ours, torch.nn.Module) else []
    params_b = list(theirs.named_parameters()) if isinstance(theirs, torch.nn.Module) else []
    assert len(params_a) == len(params_b), \
        f"{len(params_a)} parameters, torch's twin has {len(params_b)}"
    for (name_a, pa), (name_b, pb) in zip(params_a, params_b):
        assert name_b.endswith(name_a) and pa.shape == pb.shape, (name_a, name_b)
    pairs = [(a, b) for a, b in zip(outs_a, outs_b) if b.requires_grad]
    if not pairs:
        return ours_out, theirs_out
    generator = torch.Generator().manual_seed(seed)
    cotangents = [torch.randn(b.shape, dtype=b.dtype, generator=generator).to(b.device)
                  for _, b in pairs]
    torch.autograd.backward([a for a, _ in pairs], cotangents)
    torch.autograd.backward([b for _, b in pairs], cotangents)
    leaves_a, leaves_b = _leaves(ours_in), _leaves(theirs_in)
    for k, (a, b) in enumerate(zip(leaves_a, leaves_b)):
        if not b.requires_grad:
            continue
        assert (a.grad is None) == (b.grad is None), f"input {k}: gradient presence differs"
        if b.grad is None:
            continue
        assert a.grad.dtype == b.grad.dtype, f"input {k} grad: {a.grad.dtype} vs {b.grad.dtype}"
        assert_close(a.grad, b.grad, dtype, name=f"input {k} grad", scale=grad_scale,
                     signed_zeros=signed_zeros)
        if check_formats and a.dim() == 4:
            assert a.grad.is_contiguous(memory_format=CHANNELS_LAST) == \
                b.grad.is_contiguous(memory_format=CHANNELS_LAST), f"input {k} grad format"
    for (name, pa), (_, pb) in zip(params_a, params_b):
        assert (pa.grad is None) == (pb.grad is None), f"{name}: gradient presence differs"
        if pb.grad is not None:
            assert_close(pa.grad, pb.grad, dtype, name=f"{name} grad", scale=grad_scale,
                         signed_zeros=signed_zeros)
    return ours_out, theirs_out


@contextlib.contextmanager
def ieee_float32():
    """float32 matmul / conv without tf32 (torch's and ours), restoring torch's switches."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def compare_float32_on_device(ours, theirs, *inputs, device: str, interpret: bool = False,
                              grad_scale: float = 1.0, seed: int = 0):
    """The float32 leg of ``compare_with_twin`` on ``device`` (the ``device`` fixture): the twins
    (moved in place) and copies of the inputs in float32 on that device; on CUDA the selected GPU backend ("auto")
    runs, on CPU the Triton interpreter when ``interpret`` (cases cheap enough for it), else the
    reference."""
    def to_device(t):
        return t.to(device=device, dtype=torch.float32 if t.is_floating_point() else t.dtype)

    ours = ours.to(device=device, dtype=torch.float32)  # in place, as Module.to is
    theirs = theirs.to(device=device, dtype=torch.float32)
    inputs = _map(inputs, to_device)
    backend = "triton" if device == "cpu" and interpret else "auto"
    with gpudnn.use_backend(backend), ieee_float32():
        return compare_with_twin(ours, theirs, *inputs, dtype=torch.float32,
                                 grad_scale=grad_scale, seed=seed)


# --- CuPy sources: the one parser of their extern "C" kernel signatures ------------------------

CUPY_STORAGE = {"f32": ("float", torch.float32), "f16": ("f16", torch.float16),
            "bf16": ("bf16", torch.bfloat16)}


def kernel_signatures(fam: str) -> dict[str, list[str]]:
    """{kernel name: [C parameter types]} of the extern "C" kernels of ``<fam>.cu``."""
    text = open(f"{CUPY_SOURCE_DIR}/{fam}.cu").read().replace("\\\n", " ")
    for macro in re.finditer(r"#define (\w+)\s+((?:int \w+,?\s*)+)\n", text):
        text = text.replace(macro.group(1), macro.group(2).rstrip().rstrip(","))
    signatures = {}
    for m in re.finditer(r'extern "C" __global__ void (?:__launch_bounds__\([^)]*\)\s*)?'
                         r'([\w#]+)\s*\(([^)]*)\)', text):
        name, params = m.group(1), [p.strip() for p in m.group(2).split(",")]
        types = [" ".join(re.sub(r"\s*\b\w+$", "", p).replace("const ", "")
                          .replace("__restrict__", "").split()) for p in params]
        if name.endswith("##S"):
            for s, (storage, _) in CUPY_STORAGE.items():
                signatures[name[:-3] + s] = [re.sub(r"\bT\b", storage, t) for t in types]
        else:
            signatures[name] = types
    return signatures


# the C types of kernel parameters -> the Python / torch types a launch must pass for them
CUPY_C_TYPES = {"int": np.int32, "long long": np.int64, "unsigned long long": np.uint64,
                "float": np.float32}
CUPY_POINTEE = {"float": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16,
                "long long": torch.int64,
                "unsigned int": torch.int32}  # lstm's barrier words: int32 storage, same bits


def check_cupy_launch(fam, kernel, grid, block, args):
    """One recorded CuPy launch (kernel name, grid, block, arguments) matches ``kernel``'s C
    signature in ``<fam>.cu``: argument count and types, dense tensors, a legal block and grid."""
    types = kernel_signatures(fam).get(kernel)
    assert types is not None, f"{fam}.cu has no kernel {kernel}"
    assert len(args) == len(types), f"{kernel}: {len(args)} arguments for {len(types)} params"
    for i, (arg, ctype) in enumerate(zip(args, types)):
        where = f"{kernel} argument {i} ({ctype})"
        if ctype.endswith("*"):
            assert arg is None or isinstance(arg, torch.Tensor), where
            if arg is not None:
                assert arg.dtype == CUPY_POINTEE[ctype[:-1].strip()], f"{where}: {arg.dtype}"
                assert arg.is_contiguous() or is_dense(arg), f"{where}: not dense"
        else:
            assert type(arg) is CUPY_C_TYPES[ctype], f"{where}: {type(arg).__name__}"
    assert 0 < int(np.prod(block)) <= 1024 and block[0] % 32 == 0, f"{kernel}: block {block}"
    assert all(0 < g for g in grid) and all(g <= 65535 for g in grid[1:]), f"{kernel}: {grid}"


def _cupy_gpu_problem() -> str | None:
    if DEVICE != "cuda":
        return "the cupy backend needs a CUDA GPU (run `make test-gpu` there)"
    from gpudnn import backend
    return backend._cupy_problem()


CUPY_GPU_PROBLEM = _cupy_gpu_problem()
# marks a test that runs the cupy backend's kernels on a GPU
cupy_gpu = pytest.mark.skipif(CUPY_GPU_PROBLEM is not None, reason=CUPY_GPU_PROBLEM or "")


# --- kernel tests: the reference launchers and memory layouts ---------------------------------------

def launcher(name: str, backend: str):
    """Launcher ``name`` ("dense_forward", "lstm_layer_backward", "sgd_step", ...) of
    ``backend``, from the ops' Kernels tables (the reference's wrapped to take torch tensors)."""
    from gpudnn.backend import KERNELS
    for suffix, index in (("_forward", 0), ("_backward", 1)):
        if name.endswith(suffix) and name[:-len(suffix)] in KERNELS:
            return KERNELS[name[:-len(suffix)]].of(backend)[index]
    return KERNELS[name].of(backend)[0]


def reference_launch(name, *args):
    """Launcher ``name`` of the NumPy reference backend, called with ``args``."""
    return launcher(name, "reference")(*args)


def in_layout(t, channels_last: bool):
    """``t`` as channels_last (a copy) when asked, else unchanged."""
    return t.contiguous(memory_format=torch.channels_last) if channels_last else t


def is_channels_last_only(t) -> bool:
    """channels_last and not also NCHW-contiguous (size-1 dims make a tensor both)."""
    return t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) \
        and not t.is_contiguous()

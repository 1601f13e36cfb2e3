"""The CuPy conv2d / conv_transpose2d and persistent-LSTM launchers (kernels/cupy/conv.py, lstm.py).

Without a GPU:
* conv.cu and lstm.cu compile for sm_90 with warnings as errors, without spills;
* the launchers check their arguments before they look for CUDA or CuPy;
* every launch matches its kernel's C signature argument by argument;
* "emulated device": the launchers run end to end on CPU tensors, every launch going to the real
  kernel source built for the host with g++ behind a small shim (conv.cu one thread per launch;
  lstm.cu with the block's threads as OS threads, so __syncthreads and the warp shuffles of the
  tiled mat-vec really synchronize), outputs poisoned with NaN, against the float64 NumPy
  reference: float32 conv over strides, padding, dilation, groups, channels_last, activations;
  transposed convs; the LSTM layer (persistent single-block launch and the per-step fallback
  with many blocks), cell, empty sequence and zero batch. Not covered without a GPU: the grid
  barrier across blocks, fp16/bf16 conversions (PTX), NVRTC specifics and speed.
On a GPU (GPUDNN_TEST_DEVICE=cuda with CuPy): the real kernels against the NumPy reference and
the public functions against torch.
"""
import ctypes
import math
import shutil
import subprocess

import pytest
import torch

from helpers import check_cupy_launch, cupy_gpu, in_layout, kernel_signatures, reference_launch

import gpudnn
from gpudnn.kernels import alloc
from gpudnn.kernels.activations import Activation
from gpudnn.kernels.cupy import _runtime, build
from gpudnn.kernels.cupy import conv as cupy_conv
from gpudnn.kernels.cupy import lstm as cupy_lstm
from gpudnn.testing import assert_close

MODULES = {"conv": cupy_conv, "lstm": cupy_lstm}


def _act(name, param=None):
    return None if name is None else Activation.make(name, param)


# --- compilation (nvcc, no GPU) -------------------------------------------------------------------

@pytest.fixture(scope="module")
def compiled():
    if build.nvcc_path() is None:
        pytest.skip("nvcc is not on PATH: the CUDA C sources cannot be compiled here")
    return {fam: build.compile_source(f"{_runtime.SOURCE_DIR}/{fam}.cu") for fam in MODULES}


@pytest.mark.parametrize("fam", list(MODULES))
def test_source_compiles_for_sm90_without_spills(compiled, fam):
    rows = compiled[fam]
    errors = [r["error"] for r in rows if "error" in r]
    assert not errors, "\n".join(errors)
    assert {r["name"] for r in rows} == set(kernel_signatures(fam))
    assert all(r["registers"] > 0 and r["spills"] == 0 for r in rows), rows


# --- argument checks without a GPU ----------------------------------------------------------------

def cpu(*shape, dtype=torch.float32):
    return torch.randn(*shape, dtype=dtype)


RELU = Activation.make("relu")
CONV_ARGS = ((1, 1), (0, 0, 0, 0), (1, 1), 1)
ARGUMENT_ERRORS = [
    (cupy_conv.conv2d_forward, (cpu(1, 3, 5, 5), cpu(4, 3, 3, 3), None, *CONV_ARGS, None),
     RuntimeError, "CUDA tensors only"),
    (cupy_conv.conv2d_forward, (cpu(1, 3, 5, 5, dtype=torch.float64),
                                cpu(4, 3, 3, 3, dtype=torch.float64), None, *CONV_ARGS, None),
     TypeError, "float64"),
    (cupy_conv.conv2d_forward, (cpu(1, 3, 5, 5), cpu(4, 2, 3, 3), None, *CONV_ARGS, None),
     ValueError, "groups=1"),
    (cupy_conv.conv2d_forward, (cpu(1, 3, 5, 5), cpu(4, 3, 3, 3), cpu(5), *CONV_ARGS, None),
     ValueError, "bias"),
    (cupy_conv.conv2d_forward, (cpu(1, 3, 2, 2), cpu(4, 3, 3, 3), None, *CONV_ARGS, None),
     ValueError, "empty"),
    (cupy_conv.conv2d_forward, (cpu(3, 5, 5), cpu(4, 3, 3, 3), None, *CONV_ARGS, None),
     ValueError, r"\[N, C, H, W\]"),
    (cupy_conv.conv2d_forward, (cpu(1, 3, 5, 5), cpu(4, 3, 3, 3), None, (0, 1), (0, 0, 0, 0),
                                (1, 1), 1, None), ValueError, "stride"),
    (cupy_conv.conv2d_forward, (cpu(1, 3, 5, 5), cpu(4, 3, 3, 3), None, (1, 1), (0, 0),
                                (1, 1), 1, None), ValueError, "padding"),
    (cupy_conv.conv2d_backward, (cpu(1, 4, 4, 4), cpu(1, 3, 5, 5), cpu(4, 3, 3, 3), None,
                                 *CONV_ARGS, None, (1, 1, 1)), ValueError, "grad_y"),
    (cupy_conv.conv2d_backward, (cpu(1, 4, 3, 3), cpu(1, 3, 5, 5), cpu(4, 3, 3, 3), None,
                                 *CONV_ARGS, RELU, (1, 1, 1)), ValueError, "saved"),
    (cupy_conv.conv_transpose2d_forward, (cpu(1, 3, 5, 5), cpu(3, 2, 3, 3), None, (2, 2), (0, 0),
                                          (2, 0), 1, (1, 1), None), ValueError, "output_padding"),
    (cupy_conv.conv_transpose2d_forward, (cpu(1, 3, 5, 5), cpu(4, 2, 3, 3), None, (1, 1), (0, 0),
                                          (0, 0), 1, (1, 1), None), ValueError, "weight"),
    (cupy_conv.conv_transpose2d_forward, (cpu(1, 3, 5, 5), cpu(3, 2, 3, 3), None, (1, 1), (0, 0),
                                          (0, 0), 1, (1, 1), None), RuntimeError, "CUDA"),
    (cupy_lstm.lstm_layer_forward, (cpu(2, 3, 4), cpu(3, 5), cpu(3, 5), cpu(20, 4), cpu(20, 5),
                                    None, None, False, True), RuntimeError, "CUDA tensors only"),
    (cupy_lstm.lstm_layer_forward, (cpu(2, 3, 4), cpu(3, 5), cpu(3, 5), cpu(20, 3), cpu(20, 5),
                                    None, None, False, True), ValueError, "w_ih"),
    (cupy_lstm.lstm_layer_forward, (cpu(2, 3, 4), cpu(2, 5), cpu(3, 5), cpu(20, 4), cpu(20, 5),
                                    None, None, False, True), ValueError, r"h must be \[3, 5\]"),
    (cupy_lstm.lstm_layer_forward, (cpu(2, 3, 4), cpu(3, 5), cpu(3, 5), cpu(20, 4), cpu(20, 5),
                                    cpu(21), None, False, True), ValueError, "b_ih"),
    (cupy_lstm.lstm_layer_forward, (cpu(3, 4), cpu(3, 5), cpu(3, 5), cpu(20, 4), cpu(20, 5),
                                    None, None, False, True), ValueError, r"\[T, B, I\]"),
    (cupy_lstm.lstm_layer_forward, (cpu(2, 3, 4), cpu(3, 5), cpu(3, 5), cpu(20, 4),
                                    cpu(20, 5, dtype=torch.float16), None, None, False, True),
     TypeError, "dtypes differ"),
    (cupy_lstm.lstm_cell_forward, (cpu(3, 4), cpu(3, 5), cpu(3, 5), cpu(20, 4), cpu(19, 5),
                                   None, None, True), ValueError, "w_hh"),
    (cupy_lstm.lstm_layer_backward, (cpu(2, 3, 5), None, None, cpu(2, 3, 4), cpu(3, 5),
                                     cpu(3, 5), cpu(20, 4), cpu(20, 5), cpu(2, 3, 5), None,
                                     False, (1,) * 7), ValueError, "save=False"),
    (cupy_lstm.lstm_layer_backward, (cpu(2, 3, 6), None, None, cpu(2, 3, 4), cpu(3, 5),
                                     cpu(3, 5), cpu(20, 4), cpu(20, 5), cpu(2, 3, 5),
                                     (cpu(2, 3, 20), cpu(2, 3, 5)), False, (1,) * 7),
     ValueError, "grad_y"),
]


@pytest.mark.parametrize("fn,args,exc,message", ARGUMENT_ERRORS,
                         ids=[f"{e[0].__name__}-{i}" for i, e in enumerate(ARGUMENT_ERRORS)])
def test_launchers_check_arguments_without_a_gpu(fn, args, exc, message):
    with pytest.raises(exc, match=message):
        fn(*args)


def test_lstm_plan_keeps_w_hh_on_chip_up_to_the_shared_memory_limit():
    h100 = dict(sms=132, max_shared=227 * 1024)
    for hidden, batch in [(256, 1), (512, 32), (1024, 128), (1320, 32)]:
        for backward in (False, True):
            units, chunk, shared, persistent = cupy_lstm.plan(hidden, batch, backward, **h100)
            assert persistent and math.ceil(hidden / units) <= 132 and shared <= 227 * 1024
            assert 1 <= chunk <= batch
    units, chunk, shared, persistent = cupy_lstm.plan(1324, 32, True, **h100)
    assert not persistent and units == 1 and shared <= 227 * 1024
    units, chunk, shared, persistent = cupy_lstm.plan(7200, 32, True, **h100)
    assert not persistent and units == 1 and shared <= 227 * 1024
    with pytest.raises(RuntimeError, match="shared memory"):
        cupy_lstm.plan(7300, 4, True, **h100)


# --- recorded launches against the kernels' C signatures ------------------------------------------

# --- the emulated device: the kernel sources built for the host ----------------------------------

# conv.cu built for the host: one thread walks every grid-stride loop (gridDim = blockDim = 1;
# channel_sum: one call per block), so the launchers run the real kernel source on CPU tensors.
# Only the float32 instantiations are meaningful here (the fp16/bf16 conversions are PTX).
HOST_SHIM = r"""
#include <math.h>
#include <string.h>
struct Dim3 { unsigned x = 0, y = 0, z = 0; };
static Dim3 threadIdx, blockIdx, blockDim{1, 1, 1}, gridDim{1, 1, 1};
#define __device__
#define __global__
#define __forceinline__ inline
#define __shared__ static
#define asm(...)
inline float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
inline float __uint_as_float(unsigned i) { float f; memcpy(&f, &i, 4); return f; }
inline float __shfl_xor_sync(unsigned, float v, int) { return v; }  // one thread, no warps
inline void __syncthreads() {}
#include "common.cuh"
#define block_sum(v, scratch) (v)
#include "conv.cu"
extern "C" void set_block(unsigned b) { blockIdx.x = b; }
"""


@pytest.fixture(scope="module")
def host_conv(tmp_path_factory):
    return _build_on_host(tmp_path_factory, "conv", HOST_SHIM, "c++17")


# lstm.cu built for the host: the threads of a block are OS threads (__syncthreads and the warp
# shuffles are barriers) and blocks run one after another, so a multi-step (persistent) launch
# must be one block (its grid barrier is then trivial); per-step launches may have many.
# Launched through the same void*[] as the cooperative launch (lstm.kernel_params).
HOST_LSTM_SHIM = r"""
#include <math.h>
#include <string.h>
#include <atomic>
#include <barrier>
#include <memory>
#include <thread>
#include <utility>
#include <vector>
struct Dim3 { unsigned x = 0, y = 0, z = 0; };
static thread_local Dim3 threadIdx;
static Dim3 blockIdx, blockDim{1, 1, 1}, gridDim{1, 1, 1};
static std::barrier<>* block_barrier;
static std::vector<std::unique_ptr<std::barrier<>>> warp_barriers;
static float shuffle_slots[1024];
float smem[1 << 20];  // the dynamic shared memory of the one block running at a time
#define __device__
#define __global__
#define __forceinline__ inline
#define __shared__
#define asm(...)
inline float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
inline float __uint_as_float(unsigned i) { float f; memcpy(&f, &i, 4); return f; }
inline void __syncthreads() { block_barrier->arrive_and_wait(); }
inline float __shfl_xor_sync(unsigned, float v, int lane_mask) {
    const unsigned t = threadIdx.x, warp = t / 32;
    shuffle_slots[t] = v;
    warp_barriers[warp]->arrive_and_wait();
    const float other = shuffle_slots[warp * 32 + ((t % 32) ^ lane_mask)];
    warp_barriers[warp]->arrive_and_wait();
    return other;
}
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __nanosleep(unsigned) {}
inline unsigned atomicAdd(unsigned* p, unsigned v) {
    return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST);
}
inline unsigned atomicExch(unsigned* p, unsigned v) {
    return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST);
}
inline float __ldcg(const float* p) { return *p; }
inline unsigned short __ldcg(const unsigned short* p) { return *p; }
using std::min;
#include "lstm.cu"

// params: the void*[] of a driver-API launch (lstm.kernel_params)
template <class... A, size_t... I>
static void call(void (*kernel)(A...), void** params, std::index_sequence<I...>) {
    kernel(*static_cast<A*>(params[I])...);
}

template <class... A>
static void launch(void (*kernel)(A...), unsigned grid, unsigned threads, void** params) {
    gridDim.x = grid;
    blockDim.x = threads;
    for (unsigned b = 0; b < grid; ++b) {
        blockIdx.x = b;
        std::barrier<> block(threads);
        block_barrier = &block;
        warp_barriers.clear();
        for (unsigned w = 0; w < threads / 32; ++w)
            warp_barriers.emplace_back(new std::barrier<>(32));
        std::vector<std::thread> pool;
        for (unsigned t = 0; t < threads; ++t)
            pool.emplace_back([=] {
                threadIdx.x = t;
                call(kernel, params, std::index_sequence_for<A...>{});
            });
        for (auto& thread : pool) thread.join();
    }
}

extern "C" void host_lstm_forward_steps_f32(unsigned grid, unsigned threads, void** params) {
    launch(lstm_forward_steps_f32, grid, threads, params);
}
extern "C" void host_lstm_backward_steps_f32(unsigned grid, unsigned threads, void** params) {
    launch(lstm_backward_steps_f32, grid, threads, params);
}
"""


def _build_on_host(tmp_path_factory, name, source, std):
    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        pytest.skip(f"no host C++ compiler to build kernels/cupy/{name}.cu for the host")
    folder = tmp_path_factory.mktemp(f"{name}_host")
    (folder / "shim.cpp").write_text(source)
    library = folder / f"lib{name}_host.so"
    built = subprocess.run([compiler, f"-std={std}", "-O1", "-shared", "-fPIC", "-w", "-pthread",
                            f"-I{_runtime.SOURCE_DIR}", "-o", str(library),
                            str(folder / "shim.cpp")], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-3000:]
    return ctypes.CDLL(str(library))


@pytest.fixture(scope="module")
def host_lstm(tmp_path_factory):
    return _build_on_host(tmp_path_factory, "lstm", HOST_LSTM_SHIM, "c++20")


def _run_on_host(library, kernel, grid, args):
    values, _ = cupy_lstm.kernel_params(args)  # ctypes values at each argument's C width
    function = getattr(library, kernel)
    for block in range(grid[0] if kernel.startswith("channel_sum") else 1):
        library.set_block(block)
        function(*values)


@pytest.fixture
def emulated(monkeypatch, request):
    """Launchers on CPU tensors: require_cuda passes, launch checks the signature and runs the
    kernel source built for the host (float32; fp16/bf16 launches are only recorded); every
    output allocation is poisoned with NaN."""
    calls = []

    def fake_launch(fam, kernel, device, grid, block, args, shared_mem=0):
        check_cupy_launch(fam, kernel, grid, block, args)
        calls.append(kernel)
        base, s = kernel.rsplit("_", 1)
        if s != "f32":
            return  # recorded only: the host builds convert fp16/bf16 with PTX
        if fam == "conv":
            _run_on_host(request.getfixturevalue("host_conv"), kernel, grid, args)
        else:
            assert grid[0] == 1 or all(s_end - s_begin <= 1 for s_begin, s_end in
                                       [(int(args[-3]), int(args[-2]))]), "host: one block"
            values, params = cupy_lstm.kernel_params(args)
            getattr(request.getfixturevalue("host_lstm"), f"host_{kernel}")(
                ctypes.c_uint(grid[0]), ctypes.c_uint(block[0]), params)

    for module in MODULES.values():
        monkeypatch.setattr(module, "launch", fake_launch)
        monkeypatch.setattr(module, "require_cuda", lambda op, **t: torch.device("cpu"))
    monkeypatch.setattr(cupy_lstm, "_launch_persistent", lambda kernel, device, blocks, args,
                        shared: fake_launch("lstm", kernel, device, (blocks,),
                                            (cupy_lstm.THREADS,), args))
    # one "SM": a persistent grid is one block (see HOST_LSTM_SHIM)
    monkeypatch.setattr(cupy_lstm, "_device_limits", lambda index: (1, 227 * 1024))
    monkeypatch.setattr(cupy_lstm, "_resident_blocks", lambda kernel, index, shared: 1)
    monkeypatch.setattr(cupy_lstm, "_allow_shared", lambda kernel, index, shared: None)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    with alloc.poison_outputs():
        yield calls


# (batch, Cin, H, W, Cout, kernel, stride, padding (t, b, l, r), dilation, groups, act,
#  channels_last, bias)
CONV_CASES = [
    (2, 3, 7, 9, 5, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, "relu", False, True),
    (1, 4, 8, 7, 6, (3, 2), (2, 3), (2, 1, 0, 2), (2, 1), 2, "gelu", True, True),
    (3, 6, 5, 6, 6, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 6, "silu", False, False),
    (1, 3, 6, 5, 4, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1, None, True, True),
    (2, 2, 9, 8, 3, (2, 3), (3, 2), (0, 1, 1, 0), (1, 2), 1, "leaky_relu", False, True),
]


def _conv_case(case, dtype, device, seed=0):
    n, cin, h, w, cout, k, stride, padding, dilation, groups, act, cl, has_bias = case
    g = torch.Generator().manual_seed(seed)
    x = in_layout(torch.randn(n, cin, h, w, generator=g, dtype=torch.float64), cl)
    weight = torch.randn(cout, cin // groups, *k, generator=g, dtype=torch.float64)
    bias = torch.randn(cout, generator=g, dtype=torch.float64) if has_bias else None
    to = lambda t: None if t is None else t.to(device, dtype)  # noqa: E731 (keeps the layout)
    return (to(x), to(weight), to(bias), stride, padding, dilation, groups, _act(act), x, weight,
            bias)


def _compare(name, ours, ref, dtype, scale=1.0):
    for i, (a, b) in enumerate(zip(ours, ref)):
        if a is None or b is None:
            assert a is None and b is None, f"{name}[{i}]"
            continue
        assert_close(a, b, dtype, name=f"{name}[{i}]", scale=scale)
        if a.dim() == 4:
            assert _layout(a) == _layout(b), f"{name}[{i}]: {_layout(a)} != {_layout(b)}"


def _layout(t):
    if t.is_contiguous():
        return "NCHW"
    return "NHWC" if t.is_contiguous(memory_format=torch.channels_last) else "strided"


def _run_conv(case, dtype, device):
    x, weight, bias, stride, padding, dilation, groups, act, x64, w64, b64 = _conv_case(
        case, dtype, device)
    y, saved = cupy_conv.conv2d_forward(x, weight, bias, stride, padding, dilation, groups, act)
    y_ref, saved_ref = reference_launch("conv2d_forward", x64, w64, b64, stride, padding, dilation,
                                  groups, act)
    scale = math.sqrt(weight[0].numel())
    _compare("conv2d forward", (y, saved), (y_ref, saved_ref), dtype, scale)
    grad_y = in_layout(torch.randn(y_ref.shape, dtype=torch.float64), case[11])
    grads = cupy_conv.conv2d_backward(grad_y.to(device, dtype), x, weight, saved, stride, padding,
                                      dilation, groups, act, (True, True, bias is not None))
    grads_ref = reference_launch("conv2d_backward", grad_y, x64, w64, saved_ref, stride, padding,
                           dilation, groups, act, (True, True, bias is not None))
    _compare("conv2d backward", grads, grads_ref, dtype, scale * math.sqrt(y_ref[0, 0].numel()))


# (batch, Cin, H, W, Cout/groups, kernel, stride, padding, output_padding, dilation, groups, act,
#  channels_last, bias)
TRANSPOSE_CASES = [
    (2, 4, 3, 4, 3, (3, 3), (2, 2), (1, 1), (1, 1), (1, 1), 1, "relu", False, True),
    (1, 4, 4, 3, 2, (2, 3), (3, 2), (0, 1), (2, 0), (1, 2), 2, "tanh", True, True),
    (2, 3, 5, 5, 2, (3, 3), (1, 1), (2, 0), (0, 0), (1, 1), 1, "gelu_tanh", False, False),
]


def _run_transpose(case, dtype, device):
    n, cin, h, w, cout_g, k, stride, padding, out_pad, dilation, groups, act, cl, has_bias = case
    g = torch.Generator().manual_seed(1)
    x64 = in_layout(torch.randn(n, cin, h, w, generator=g, dtype=torch.float64), cl)
    w64 = torch.randn(cin, cout_g, *k, generator=g, dtype=torch.float64)
    b64 = torch.randn(cout_g * groups, generator=g, dtype=torch.float64) if has_bias else None
    x, weight = x64.to(device, dtype), w64.to(device, dtype)
    bias = b64.to(device, dtype) if has_bias else None
    act = _act(act)
    args = (stride, padding, out_pad, groups, dilation, act)
    y, saved = cupy_conv.conv_transpose2d_forward(x, weight, bias, *args)
    y_ref, saved_ref = reference_launch("conv_transpose2d_forward", x64, w64, b64, *args)
    scale = math.sqrt(cin * k[0] * k[1])
    _compare("conv_transpose2d forward", (y, saved), (y_ref, saved_ref), dtype, scale)
    grad_y = torch.randn(y_ref.shape, dtype=torch.float64)
    needs = (True, True, has_bias)
    grads = cupy_conv.conv_transpose2d_backward(grad_y.to(device, dtype), x, weight, saved,
                                                *args, needs)
    grads_ref = reference_launch("conv_transpose2d_backward", grad_y, x64, w64, saved_ref, *args,
                           needs)
    _compare("conv_transpose2d backward", grads, grads_ref, dtype,
             scale * math.sqrt(y_ref[0, 0].numel()))


@pytest.mark.parametrize("case", CONV_CASES, ids=[f"conv{i}" for i in range(len(CONV_CASES))])
def test_emulated_conv2d_matches_reference(case, emulated):
    _run_conv(case, torch.float32, "cpu")
    assert {"im2col_f32", "col2im_f32", "activation_grad_canonical_f32"} <= set(emulated)


@pytest.mark.parametrize("case", TRANSPOSE_CASES,
                         ids=[f"transpose{i}" for i in range(len(TRANSPOSE_CASES))])
def test_emulated_conv_transpose2d_matches_reference(case, emulated):
    _run_transpose(case, torch.float32, "cpu")


def test_emulated_conv_bfloat16_launches_the_bf16_kernels(emulated):  # recorded, not run
    x, weight, bias, *params, act = _conv_case(CONV_CASES[1], torch.bfloat16, "cpu")[:8]
    y, saved = cupy_conv.conv2d_forward(x, weight, bias, *params, act)
    assert y.dtype == torch.bfloat16 and y.is_contiguous(memory_format=torch.channels_last)
    assert emulated and all(k.endswith("_bf16") for k in emulated)


def _lstm_inputs(steps, batch, input_size, hidden, dtype, device, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64) * 0.5  # noqa: E731
    tensors = [r(steps, batch, input_size), r(batch, hidden), r(batch, hidden),
               r(4 * hidden, input_size), r(4 * hidden, hidden),
               r(4 * hidden) if bias else None, r(4 * hidden) if bias else None]
    return [None if t is None else t.to(device, dtype) for t in tensors], tensors


def _run_lstm(steps, batch, input_size, hidden, reverse, dtype, device, bias=True):
    ours_in, ref_in = _lstm_inputs(steps, batch, input_size, hidden, dtype, device, bias)
    y, h_n, c_n, saved = cupy_lstm.lstm_layer_forward(*ours_in, reverse, True)
    y_ref, h_ref, c_ref, saved_ref = reference_launch("lstm_layer_forward", *ref_in, reverse, True)
    _compare("lstm forward", (y, h_n, c_n), (y_ref, h_ref, c_ref), dtype, math.sqrt(hidden))
    g = torch.Generator().manual_seed(7)
    grads_out = [torch.randn(*t.shape, generator=g, dtype=torch.float64) for t in
                 (y_ref, h_ref, c_ref)]
    needs = (True,) * 5 + (bias, bias)
    x, h0, c0, w_ih, w_hh = ours_in[:5]
    grads = cupy_lstm.lstm_layer_backward(*[t.to(device, dtype) for t in grads_out], x, h0, c0,
                                          w_ih, w_hh, y, saved, reverse, needs)
    grads_ref = reference_launch("lstm_layer_backward", *grads_out, *ref_in[:5], y_ref, saved_ref,
                           reverse, needs)
    _compare("lstm backward", grads, grads_ref, dtype, math.sqrt(steps * batch * hidden))


@pytest.mark.parametrize("steps,batch,input_size,hidden,reverse", [
    (5, 3, 4, 7, False),
    (4, 2, 3, 5, True),
    (1, 1, 2, 3, False),     # one step: the per-step path, grad_h0 in its own launch
    (3, 0, 2, 3, False),     # zero-size batch
])
def test_emulated_lstm_layer_matches_reference(steps, batch, input_size, hidden, reverse,
                                               emulated):
    _run_lstm(steps, batch, input_size, hidden, reverse, torch.float32, "cpu")
    if steps > 1 and batch:  # persistent: one launch per direction
        assert emulated.count("lstm_forward_steps_f32") == 1
        assert emulated.count("lstm_backward_steps_f32") == 1


def test_emulated_lstm_empty_sequence_passes_the_states_through(emulated):
    # (the reference's backward cannot reshape an empty sequence: expected values by hand)
    ours_in, _ = _lstm_inputs(0, 2, 3, 4, torch.float32, "cpu")
    x, h0, c0, w_ih, w_hh, b_ih, b_hh = ours_in
    y, h_n, c_n, saved = cupy_lstm.lstm_layer_forward(*ours_in, True, True)
    assert y.shape == (0, 2, 4) and torch.equal(h_n, h0) and torch.equal(c_n, c0)
    grad_h_n, grad_c_n = torch.randn(2, 4), torch.randn(2, 4)
    grads = cupy_lstm.lstm_layer_backward(torch.zeros(0, 2, 4), grad_h_n, grad_c_n, x, h0, c0,
                                          w_ih, w_hh, y, saved, True, (True,) * 7)
    expected = (torch.zeros(0, 2, 3), grad_h_n, grad_c_n, torch.zeros(16, 3),
                torch.zeros(16, 4), torch.zeros(16), torch.zeros(16))
    for name, a, e in zip(("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh"), grads, expected):
        assert_close(a, e, name=f"grad_{name}")
    assert not emulated, "an empty sequence launches no kernel"


def test_cooperative_launch_parameters_hold_each_argument_at_its_c_width():
    x = torch.zeros(3)
    values, params = cupy_lstm.kernel_params((x, None, _runtime.i32(-7), _runtime.i64(2 ** 40),
                                              _runtime.f32(0.5)))
    assert len(params) == 5
    read = [ctypes.c_uint64, ctypes.c_uint64, ctypes.c_int32, ctypes.c_int64, ctypes.c_float]
    got = [kind.from_address(address).value for kind, address in zip(read, params)]
    assert got == [x.data_ptr(), 0, -7, 2 ** 40, 0.5]


def test_emulated_lstm_per_step_fallback(emulated, monkeypatch):
    monkeypatch.setattr(cupy_lstm, "_resident_blocks", lambda kernel, index, shared: 0)
    _run_lstm(4, 3, 2, 5, True, torch.float32, "cpu", bias=False)
    # 4 per-step forward launches, 4 backward + 1 for grad_h0
    assert emulated.count("lstm_forward_steps_f32") == 4
    assert emulated.count("lstm_backward_steps_f32") == 5


def test_emulated_lstm_cell_matches_reference(emulated):
    ours_in, ref_in = _lstm_inputs(1, 3, 4, 6, torch.float32, "cpu")
    x, h, c = ours_in[0][0], ours_in[1], ours_in[2]
    h_new, c_new, saved = cupy_lstm.lstm_cell_forward(x, h, c, *ours_in[3:], True)
    ref = reference_launch("lstm_cell_forward", ref_in[0][0], *ref_in[1:], True)
    _compare("cell forward", (h_new, c_new), ref[:2], torch.float32, math.sqrt(6))
    grad_h, grad_c = torch.randn(3, 6, dtype=torch.float64), torch.randn(3, 6,
                                                                         dtype=torch.float64)
    needs = (True,) * 7
    grads = cupy_lstm.lstm_cell_backward(grad_h.float(), grad_c.float(), x, h, c, ours_in[3],
                                         ours_in[4], c_new, saved, needs)
    grads_ref = reference_launch("lstm_cell_backward", grad_h, grad_c, ref_in[0][0], *ref_in[1:5],
                           ref[1], ref[2], needs)
    _compare("cell backward", grads, grads_ref, torch.float32, math.sqrt(6))


# --- on a GPU: the real kernels against the NumPy reference ---------------------------------------

gpu = cupy_gpu  # a GPU test of the cupy backend: skipped, with the reason, elsewhere


@pytest.fixture
def ieee_fp32(monkeypatch):
    """float32 tolerances need true fp32 products: no tf32 in the cuBLAS GEMMs."""
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    with alloc.poison_outputs():
        yield


@gpu
@pytest.mark.parametrize("case", CONV_CASES, ids=[f"conv{i}" for i in range(len(CONV_CASES))])
def test_gpu_conv2d(case, ieee_fp32):
    _run_conv(case, torch.float32, "cuda")


@gpu
@pytest.mark.parametrize("case", TRANSPOSE_CASES,
                         ids=[f"transpose{i}" for i in range(len(TRANSPOSE_CASES))])
def test_gpu_conv_transpose2d(case, ieee_fp32):
    _run_transpose(case, torch.float32, "cuda")


@gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_gpu_conv2d_half(dtype, ieee_fp32):
    _run_conv(CONV_CASES[1], dtype, "cuda")


@gpu
@pytest.mark.parametrize("steps,batch,input_size,hidden,reverse", [
    (9, 3, 5, 33, False), (6, 32, 16, 300, True), (1, 2, 3, 8, False), (4, 5, 3, 2100, False)])
def test_gpu_lstm_layer(steps, batch, input_size, hidden, reverse, ieee_fp32):
    # hidden 300: several units per block on chip; 2100: the per-step fallback on an H100
    _run_lstm(steps, batch, input_size, hidden, reverse, torch.float32, "cuda")


@gpu
def test_gpu_lstm_bfloat16(ieee_fp32):
    _run_lstm(5, 4, 6, 40, True, torch.bfloat16, "cuda")


@gpu
@pytest.mark.parametrize("channels_last", [False, True])
def test_gpu_public_conv_functions_match_torch(channels_last, ieee_fp32, monkeypatch):
    """gpudnn.functional on the cupy backend against torch autograd (cuDNN without tf32)."""
    import torch.nn.functional as F

    import gpudnn.functional as G
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    g = torch.Generator().manual_seed(3)
    x = in_layout(torch.randn(3, 4, 9, 8, generator=g), channels_last).cuda().requires_grad_()
    w = torch.randn(6, 2, 3, 3, generator=g).cuda().requires_grad_()
    wt = torch.randn(4, 3, 3, 2, generator=g).cuda().requires_grad_()
    b = torch.randn(6, generator=g).cuda().requires_grad_()
    inputs = (x, w, wt, b)

    def run(conv, conv_t, relu):
        y = relu(conv(x, w, b, stride=2, padding=1, dilation=(1, 2), groups=2))
        z = conv_t(x, wt, None, stride=(2, 1), padding=(1, 0), output_padding=(1, 0), groups=2)
        (y.square().sum() + z.sin().sum()).backward()
        grads = [t.grad.clone() for t in inputs]
        for t in inputs:
            t.grad = None
        return [y.detach(), z.detach(), *grads]

    with gpudnn.use_backend("cupy"):
        ours = run(lambda *a, **k: G.conv2d(*a, activation="relu", **k), G.conv_transpose2d,
                   lambda t: t)
    theirs = run(F.conv2d, F.conv_transpose2d, torch.relu)
    for name, a, e in zip(("y", "z", "grad_x", "grad_w", "grad_wt", "grad_b"), ours, theirs):
        assert_close(a, e, torch.float32, name=name, scale=8.0)
        assert _layout(a) == _layout(e), f"{name}: {_layout(a)} != {_layout(e)}"

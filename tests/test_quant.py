"""Weight-only quantization (gpudnn.quantize, gpudnn.functional.quantized_linear /
quantized_conv2d): the quantizer (torch and NumPy agree bit for bit), the NumPy reference
against torch on the dequantized weight in float64, the Triton kernels (the interpreter on the
CPU) against the reference in float32, the modules, their state_dict, inference-only errors and
bad inputs. bfloat16 / float16 activations run on a GPU only (INTERPRETER_BF16_DOT)."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import gpudnn
import gpudnn.functional as GF
from gpudnn.activations import activation_module, parse_activation
from gpudnn.quantization import (QuantizedConv2d, QuantizedLinear, dequantize_weight,
                                 quantize_weight)
from gpudnn.reference import quant as ref
from gpudnn.testing import assert_close
from helpers import DEVICE, INTERPRETER_BF16_DOT, ieee_float32

FORMATS = [("int8", "per_channel"), ("int8", "per_tensor"), ("fp8", "per_channel"),
           ("fp8", "per_tensor")]
ACTS = [None, "relu", "gelu_tanh", torch.nn.LeakyReLU(0.1)]


def _quantized(shape, dtype, granularity, seed=0, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=gen) * scale
    q, s = quantize_weight(w, dtype, granularity)
    return w, q, s


def _torch_linear(x, q, s, b, act):
    """The oracle: torch's linear on the dequantized weight, in x's dtype."""
    w = dequantize_weight(q, s, torch.float64).to(x.dtype)
    return activation_module(parse_activation(act))(F.linear(x, w, b))


def _torch_conv(x, q, s, b, act, **kw):
    w = dequantize_weight(q, s, torch.float64).to(x.dtype)
    return activation_module(parse_activation(act))(F.conv2d(x, w, b, **kw))


# --- the quantizer -------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype,granularity", FORMATS)
@pytest.mark.parametrize("shape", [(7, 13), (6, 3, 3, 3), (4, 0), (1, 5)])
def test_quantizer_matches_the_numpy_reference_bit_for_bit(dtype, granularity, shape):
    w, q, s = _quantized(shape, dtype, granularity, scale=3.0)
    if shape[0] > 1:
        w[1] = 0.0  # a zero row: scale 1
        q, s = quantize_weight(w, dtype, granularity)
    rq, rs = ref.quantize_weight(w.numpy(), dtype, granularity == "per_channel")
    bits = q.view(torch.uint8) if dtype == "fp8" else q
    assert np.array_equal(bits.numpy(), rq)
    assert np.array_equal(s.numpy(), rs)
    assert s.dtype == torch.float32 and s.shape == ((shape[0],) if granularity == "per_channel"
                                                    else (1,))
    if w.numel():  # the absmax maps onto the format's largest value; the error is one half-step
        top = {"int8": 127.0, "fp8": 448.0}[dtype]
        assert float(q.float().abs().max()) == top
        err = (dequantize_weight(q, s) - w).abs()
        step = s.view(-1, *[1] * (w.dim() - 1)) * (0.5 if dtype == "int8" else 16.0)
        assert bool((err <= step + 1e-6).all())


def test_e4m3_encoding_is_torchs_on_every_value_and_tie():
    every = torch.arange(256, dtype=torch.uint8).view(torch.float8_e4m3fn).float().numpy()
    decoded = ref.e4m3_decode(np.arange(256, dtype=np.uint8))
    assert np.array_equal(np.isnan(every), np.isnan(decoded))
    assert np.array_equal(every[~np.isnan(every)], decoded[~np.isnan(decoded)])
    finite = np.unique(decoded[np.isfinite(decoded)]).astype(np.float64)
    ties = ((finite[1:] + finite[:-1]) / 2).astype(np.float32)  # exact midpoints
    rng = np.random.default_rng(0)
    values = np.concatenate([ties, finite.astype(np.float32), [-0.0],
                             rng.uniform(-448, 448, 4000).astype(np.float32),
                             rng.normal(0, 1e-2, 4000).astype(np.float32)])
    theirs = torch.from_numpy(values).to(torch.float8_e4m3fn).view(torch.uint8).numpy()
    assert np.array_equal(ref.e4m3_encode(values), theirs)


# --- the reference against torch (float64) ------------------------------------------------------

@pytest.mark.parametrize("dtype,granularity", FORMATS)
@pytest.mark.parametrize("act", ACTS, ids=str)
def test_reference_linear_is_torch_on_the_dequantized_weight(dtype, granularity, act):
    _, q, s = _quantized((6, 11), dtype, granularity)
    x = torch.randn(2, 5, 11, dtype=torch.float64)
    b = torch.randn(6, dtype=torch.float64)
    with gpudnn.use_backend("reference"):
        got = GF.quantized_linear(x, q, s, b, activation=act)
    assert_close(got, _torch_linear(x, q, s, b, act), torch.float64, name="linear")


@pytest.mark.parametrize("dtype,granularity", FORMATS)
@pytest.mark.parametrize("case", [
    dict(stride=1, padding=1, dilation=1, groups=1, act="relu", channels_last=False),
    dict(stride=(2, 1), padding=(0, 2), dilation=(1, 2), groups=2, act="gelu",
         channels_last=True),
    dict(stride=1, padding="same", dilation=1, groups=4, act=None, channels_last=False),
], ids=["plain", "strided-grouped-cl", "depthwise-same"])
def test_reference_conv2d_is_torch_on_the_dequantized_weight(dtype, granularity, case):
    case = dict(case)
    act, channels_last = case.pop("act"), case.pop("channels_last")
    groups = case["groups"]
    _, q, s = _quantized((4, 4 // groups, 3, 2), dtype, granularity)
    x = torch.randn(2, 4, 7, 6, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    b = torch.randn(4, dtype=torch.float64)
    with gpudnn.use_backend("reference"):
        got = GF.quantized_conv2d(x, q, s, b, activation=act, **case)
    expected = _torch_conv(x, q, s, b, act, **case)
    assert_close(got, expected, torch.float64, name="conv2d")
    assert got.is_contiguous(memory_format=torch.channels_last) == \
        expected.is_contiguous(memory_format=torch.channels_last)


# --- the Triton kernels against the reference (float32; interpreter on the CPU) -----------------

def _on_device(*tensors):
    return [t.to(DEVICE) if t is not None else None for t in tensors]


@pytest.mark.parametrize("dtype,granularity", FORMATS)
@pytest.mark.parametrize("mkn", [(5, 7, 9), (16, 70, 130), (40, 33, 64), (70, 9, 33)],
                         ids=lambda s: "x".join(map(str, s)))
def test_triton_linear_matches_the_reference(dtype, granularity, mkn):
    """Every tile class of the heuristic (M <= 16, <= 64, more), K across several tiles."""
    m, k_, n = mkn[0], mkn[2], mkn[1]
    _, q, s = _quantized((n, k_), dtype, granularity, seed=1)
    x, b = torch.randn(m, k_), torch.randn(n)
    x, b, q, s = _on_device(x, b, q, s)
    with ieee_float32():
        with gpudnn.use_backend("reference"):
            expected = GF.quantized_linear(x, q, s, b, activation="gelu_tanh")
        with gpudnn.use_backend("triton"):
            got = GF.quantized_linear(x, q, s, b, activation="gelu_tanh")
    assert_close(got, expected, torch.float32, name="linear", scale=k_ ** 0.5)


def test_triton_linear_reads_strided_inputs_and_no_bias():
    _, q, s = _quantized((6, 10), "int8", "per_channel", seed=2)
    qt = q.t().contiguous().t()  # a column-major weight view
    x = torch.randn(10, 4).t()   # a transposed input
    x, q, qt, s = _on_device(x, q, qt, s)
    with ieee_float32():
        with gpudnn.use_backend("reference"):
            expected = GF.quantized_linear(x, q, s)
        with gpudnn.use_backend("triton"):
            got = GF.quantized_linear(x, qt, s)
    assert_close(got, expected, torch.float32, name="strided linear")


@pytest.mark.parametrize("dtype", ["int8", "fp8"])
@pytest.mark.parametrize("case", [
    dict(shape=(2, 4, 7, 6), cout=6, k=(3, 3), stride=1, padding=1, dilation=1, groups=1,
         cl=False),
    dict(shape=(2, 4, 7, 6), cout=6, k=(3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2),
         groups=2, cl=True),
    dict(shape=(1, 3, 5, 5), cout=6, k=(3, 3), stride=1, padding=1, dilation=1, groups=3,
         cl=False),  # depthwise (multiplier 2): the implicit GEMM with one channel per group
    dict(shape=(2, 40, 5, 4), cout=70, k=(1, 1), stride=1, padding=0, dilation=1, groups=1,
         cl=True),  # wide channels: the larger tiles
], ids=["plain", "strided-grouped-cl", "depthwise", "wide-cl"])
def test_triton_conv2d_matches_the_reference(dtype, case):
    cin, cout, groups = case["shape"][1], case["cout"], case["groups"]
    _, q, s = _quantized((cout, cin // groups, *case["k"]), dtype, "per_channel", seed=3)
    x, b = torch.randn(case["shape"]), torch.randn(cout)
    if case["cl"]:
        x = x.contiguous(memory_format=torch.channels_last)
    x, b, q, s = _on_device(x, b, q, s)
    kw = dict(stride=case["stride"], padding=case["padding"], dilation=case["dilation"],
              groups=groups, activation="silu")
    with ieee_float32():
        with gpudnn.use_backend("reference"):
            expected = GF.quantized_conv2d(x, q, s, b, **kw)
        with gpudnn.use_backend("triton"):
            got = GF.quantized_conv2d(x, q, s, b, **kw)
    assert_close(got, expected, torch.float32, name="conv2d", scale=3.0)
    assert got.is_contiguous(memory_format=torch.channels_last) == \
        expected.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.skipif(DEVICE != "cuda", reason=INTERPRETER_BF16_DOT)
@pytest.mark.parametrize("act_dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("dtype", ["int8", "fp8"])
@pytest.mark.parametrize("m", [3, 48, 300])
def test_triton_16bit_activations_on_the_gpu(act_dtype, dtype, m):
    _, q, s = _quantized((96, 200), dtype, "per_channel", seed=4)
    x, b = torch.randn(m, 200), torch.randn(96)
    x, b, q, s = _on_device(x.to(act_dtype), b.to(act_dtype), q, s)
    with gpudnn.use_backend("triton"):
        got = GF.quantized_linear(x, q, s, b, activation="relu")
    assert got.dtype == act_dtype
    assert_close(got, _torch_linear(x.float(), q, s, b.float(), "relu"), act_dtype,
                 name="16-bit linear", scale=4.0)
    img = torch.randn(2, 32, 6, 6, device=DEVICE).to(act_dtype)
    _, qc, sc = _quantized((48, 32, 3, 3), dtype, "per_tensor", seed=5)
    qc, sc = _on_device(qc, sc)
    with gpudnn.use_backend("triton"):
        got = GF.quantized_conv2d(img, qc, sc, padding=1)
    assert_close(got, _torch_conv(img.float(), qc, sc, None, None, padding=1), act_dtype,
                 name="16-bit conv2d", scale=8.0)


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_empty_dims(backend):
    _, q, s = _quantized((4, 3), "int8", "per_channel")
    _, q0, s0 = _quantized((4, 0), "int8", "per_channel")
    b = torch.randn(4)
    with gpudnn.use_backend(backend):
        assert GF.quantized_linear(torch.randn(0, 3), q, s, b).shape == (0, 4)
        y = GF.quantized_linear(torch.randn(2, 0), q0, s0, b, activation="relu")
        assert_close(y, F.relu(b).expand(2, 4), torch.float32, name="K = 0")
        _, qc, sc = _quantized((5, 2, 3, 3), "fp8", "per_channel")
        y = GF.quantized_conv2d(torch.randn(0, 2, 5, 5), qc, sc, padding=1)
        assert y.shape == (0, 5, 5, 5)


# --- modules ---------------------------------------------------------------------------------------

def _float_model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, stride=2, groups=2), torch.nn.LeakyReLU(0.2),
        torch.nn.Flatten(), torch.nn.Linear(8 * 3 * 3, 16), torch.nn.GELU(),
        torch.nn.Linear(16, 5)).eval()


@pytest.mark.parametrize("dtype,granularity", FORMATS)
def test_quantize_swaps_linear_and_conv_and_keeps_fused_activations(dtype, granularity):
    model = _float_model()
    model[1].running_mean.uniform_(-0.5, 0.5)
    model[1].running_var.uniform_(0.5, 2.0)
    quantized = gpudnn.quantize(model, dtype=dtype, granularity=granularity)
    kinds = [type(m).__name__ for m in quantized]
    assert kinds.count("QuantizedConv2d") == 2 and kinds.count("QuantizedLinear") == 2
    assert not quantized.training and all(not m.training for m in quantized.modules())
    assert quantized[0].activation.name == "relu"   # BatchNorm folded, then ReLU fused
    assert quantized[3].activation.name == "leaky_relu" and quantized[6].activation.name == "gelu"
    assert not list(quantized.parameters())          # int8 / fp8 weights are buffers
    x = torch.randn(4, 3, 7, 7)
    with torch.no_grad():
        expected, got = model(x), quantized(x)
    # weight rounding only: within a few percent of the float model's outputs
    assert float((got - expected).abs().max()) <= 0.05 * float(expected.abs().max()) + 1e-3
    # the module against its torch twin: the float layer on the dequantized weight
    lin = quantized[8]
    twin = torch.nn.Linear(16, 5)
    twin.load_state_dict({"weight": dequantize_weight(lin.weight, lin.weight_scale),
                          "bias": lin.bias})
    h = torch.randn(3, 16)
    with torch.no_grad():
        assert_close(lin(h), twin(h), torch.float32, name="QuantizedLinear vs twin")


@pytest.mark.parametrize("dtype", ["int8", "fp8"])
def test_state_dict_round_trips(dtype):
    model = gpudnn.quantize(_float_model(), dtype=dtype)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    state = torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    assert state["6.weight"].dtype == gpudnn.quantization.DTYPES[dtype]
    assert state["6.weight_scale"].dtype == torch.float32
    fresh = gpudnn.quantize(_float_model(seed=1), dtype=dtype)
    fresh.load_state_dict(state)
    x = torch.randn(2, 3, 7, 7)
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))
    other = gpudnn.quantize(_float_model(), dtype="fp8" if dtype == "int8" else "int8")
    with pytest.raises(RuntimeError, match="quantize the model with the dtype"):
        other.load_state_dict(state)


def test_dtype_conversion_keeps_the_quantized_weight_and_scales():
    layer = QuantizedLinear.from_float(torch.nn.Linear(5, 3), "fp8")
    layer = layer.to(torch.float64)
    assert layer.weight.dtype == torch.float8_e4m3fn
    assert layer.weight_scale.dtype == torch.float32 and layer.bias.dtype == torch.float64
    x = torch.randn(2, 5, dtype=torch.float64)
    with gpudnn.use_backend("reference"):
        assert_close(layer(x), _torch_linear(x, layer.weight, layer.weight_scale, layer.bias,
                                             None), torch.float64, name="float64 activations")


def test_training_through_a_quantized_layer_is_a_clear_error():
    layer = QuantizedLinear.from_float(torch.nn.Linear(4, 3))
    layer.train()
    with pytest.raises(RuntimeError, match="inference only.*eval"):
        layer(torch.randn(2, 4))
    layer.eval()
    x = torch.randn(2, 4, requires_grad=True)
    y = layer(x)
    with pytest.raises(RuntimeError, match="no backward: quantized layers are for inference"):
        y.sum().backward()
    conv = QuantizedConv2d.from_float(torch.nn.Conv2d(2, 3, 3)).train()
    with pytest.raises(RuntimeError, match="inference only"):
        conv(torch.randn(1, 2, 5, 5))


# --- bad inputs ------------------------------------------------------------------------------------

def test_quantize_refuses_unsupported_layers_and_arguments():
    with pytest.raises(ValueError, match="ConvTranspose2d.*supports Linear and Conv2d"):
        gpudnn.quantize(torch.nn.ConvTranspose2d(3, 4, 3))
    with pytest.raises(ValueError, match="no Linear or Conv2d layer"):
        gpudnn.quantize(torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Tanh()))
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LSTM(4, 4))
    with pytest.raises(ValueError, match="layer '1' is a LSTM"):
        gpudnn.quantize(model, layers=["1"])
    with pytest.raises(ValueError, match="no layer named 'fc'"):
        gpudnn.quantize(model, layers=["fc"])
    assert isinstance(gpudnn.quantize(model, layers=["0"])[0], QuantizedLinear)
    with pytest.raises(ValueError, match="dtype must be one of"):
        gpudnn.quantize(torch.nn.Linear(3, 4), dtype="int4")
    with pytest.raises(ValueError, match="mode must be 'weight_only'"):
        gpudnn.quantize(torch.nn.Linear(3, 4), mode="dynamic")
    with pytest.raises(ValueError, match="granularity must be one of"):
        gpudnn.quantize(torch.nn.Linear(3, 4), granularity="per_group")
    with pytest.raises(ValueError, match="padding_mode='reflect'"):
        gpudnn.quantize(torch.nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"))
    with pytest.raises(TypeError, match="torch.nn.Module"):
        gpudnn.quantize(torch.randn(3, 3))
    bad = torch.nn.Linear(3, 4)
    with torch.no_grad():
        bad.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        gpudnn.quantize(bad)
    original = _float_model()
    gpudnn.quantize(original)
    assert type(original[0]) is torch.nn.Conv2d  # a copy unless inplace=True


def test_quantized_functions_refuse_bad_arguments():
    _, q, s = _quantized((4, 3), "int8", "per_channel")
    x = torch.randn(2, 3)
    with pytest.raises(TypeError, match="weight must be int8 or torch.float8_e4m3fn"):
        GF.quantized_linear(x, torch.randn(4, 3), s)
    with pytest.raises(TypeError, match="weight_scale must be float32"):
        GF.quantized_linear(x, q, s.double())
    with pytest.raises(ValueError, match="one scale per output channel"):
        GF.quantized_linear(x, q, torch.ones(3))
    with pytest.raises(ValueError, match="does not match weight's in_features"):
        GF.quantized_linear(torch.randn(2, 5), q, s)
    with pytest.raises(ValueError, match="bias shape"):
        GF.quantized_linear(x, q, s, torch.randn(5))
    with pytest.raises(TypeError, match="dtypes differ"):
        GF.quantized_linear(x, q, s, torch.randn(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="weight must have 4 dimensions"):
        GF.quantized_conv2d(torch.randn(1, 3, 4, 4), q, s)
    _, qc, sc = _quantized((4, 3, 3, 3), "int8", "per_channel")
    with pytest.raises(RuntimeError, match="expected input.*to have 3 channels"):
        GF.quantized_conv2d(torch.randn(1, 2, 5, 5), qc, sc)
    with pytest.raises(RuntimeError, match="non-positive groups"):
        GF.quantized_conv2d(torch.randn(1, 3, 5, 5), qc, sc, groups=0)
    with gpudnn.use_backend("triton"), pytest.raises(TypeError, match="float64"):
        GF.quantized_linear(x.double(), q, s)


def test_quantized_ops_trace_and_compile():
    """A quantized model compiles with fullgraph=True (the ops are torch.library custom ops)."""
    model = gpudnn.quantize(_float_model())
    x = torch.randn(2, 3, 7, 7)
    torch._dynamo.reset()
    explained = torch._dynamo.explain(model)(x)
    assert explained.graph_break_count == 0
    with torch.no_grad():
        assert_close(torch.compile(model, backend="aot_eager", fullgraph=True)(x), model(x),
                     torch.float32, name="compiled")

"""gpudnn.nn.Embedding and gpudnn.functional.embedding: the NumPy reference against torch in
float64 (forward, backward, gradcheck), the Triton kernels (interpreter) against the reference in
float32 on poisoned outputs (hot ids longer than a step, strided weights, 16-bit copies, a
deterministic backward), the module against torch.nn.Embedding after load_state_dict, bad input,
empty shapes, and ids out of range (IndexError in eager, NaN rows in a compiled graph)."""
import pytest
import torch
import torch.nn.functional as F

import gpudnn
import gpudnn.functional as GF
import gpudnn.nn as gnn
from gpudnn.kernels.alloc import poison_outputs
from gpudnn.kernels.triton import embedding as triton_embedding
from gpudnn.ops.embedding import embedding_op
from gpudnn.testing import assert_close
from helpers import (DEVICE, compare_float32_on_device, compare_with_twin, cupy_gpu, launcher,
                     reference_launch)

F64 = torch.float64


def _ids(*shape, high=7, seed=0, dtype=torch.int64):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, high, shape, generator=gen).to(dtype)


def _weight(v=7, d=5, seed=1, dtype=F64):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(v, d, generator=gen, dtype=F64).to(dtype)


# --- the reference against torch (float64) --------------------------------------------------------

# (ids, padding_idx, scale_grad_by_freq)
CASES = [
    pytest.param(_ids(3, 4), None, False, id="plain"),
    pytest.param(_ids(3, 4, seed=2), 2, False, id="padding"),
    pytest.param(_ids(3, 4, seed=3), -1, True, id="negative-padding-freq"),
    pytest.param(_ids(11, seed=4, dtype=torch.int32), None, True, id="int32-freq"),
    pytest.param(torch.tensor(3), None, False, id="0d"),
    pytest.param(torch.zeros(2, 0, dtype=torch.int64), 1, False, id="empty"),
]


@pytest.mark.parametrize("ids,padding_idx,freq", CASES)
def test_reference_matches_torch(ids, padding_idx, freq):
    with gpudnn.use_backend("reference"):
        compare_with_twin(
            lambda w, i: GF.embedding(i, w, padding_idx, scale_grad_by_freq=freq),
            lambda w, i: F.embedding(i, w, padding_idx, scale_grad_by_freq=freq),
            _weight(), ids, dtype=F64)


def test_reference_gradcheck():
    """(padding_idx and scale_grad_by_freq are deliberate departures from the true derivative,
    as torch's: compared with torch above.)"""
    ids = torch.tensor([3, 0, 3, 3, 6, 1])
    w = _weight(7, 3).requires_grad_()
    assert torch.autograd.gradcheck(lambda w: embedding_op(w, ids, -1, False, "reference"), (w,))


def test_padding_row_gets_no_gradient_even_from_nan():
    w = _weight().requires_grad_()
    ids = torch.tensor([1, 2, 2])
    with gpudnn.use_backend("reference"):
        GF.embedding(ids, w, padding_idx=2).backward(torch.full((3, 5), float("nan"), dtype=F64))
    assert torch.equal(w.grad[2], torch.zeros(5, dtype=F64))
    assert w.grad[1].isnan().all()


# --- Triton (interpreter) against the reference (float32) ---------------------------------------

@pytest.mark.parametrize("v,d,n,strided", [(7, 5, 13, False), (40, 33, 300, True),
                                           (3, 600, 9, False), (5, 1, 4, False)])
def test_triton_matches_reference(device, v, d, n, strided):
    gen = torch.Generator().manual_seed(v + d)
    weight = torch.randn(d, v, generator=gen).t() if strided else torch.randn(v, d, generator=gen)
    # a hot id much longer than one step of the backward (BLOCK_T ids)
    ids = torch.where(torch.rand(n, generator=gen) < 0.5, 1, torch.randint(0, v, (n,),
                                                                           generator=gen))
    grad_y = torch.randn(n, d, generator=gen)
    ref_y = reference_launch("embedding_forward", weight.double(), ids)
    with poison_outputs():
        y = triton_embedding.embedding_forward(weight.to(device), ids.to(device))
    assert torch.equal(y.cpu(), ref_y.float()), "the forward is an exact copy"
    for padding, freq in ((-1, False), (2 % v, True)):
        ref = reference_launch("embedding_backward", grad_y.double(), ids, v, padding, freq)
        with poison_outputs():
            got = triton_embedding.embedding_backward(grad_y.to(device), ids.to(device), v,
                                                      padding, freq)
        assert_close(got, ref, torch.float32, name=f"grad_weight {padding} {freq}",
                     scale=n ** 0.5)
        again = triton_embedding.embedding_backward(grad_y.to(device), ids.to(device), v,
                                                    padding, freq)
        assert torch.equal(got, again), "the backward is deterministic"


def test_triton_strided_ids(device):
    weight, ids = torch.randn(9, 4), _ids(20, high=9, seed=6)[::3]
    assert not ids.is_contiguous()
    y = triton_embedding.embedding_forward(weight.to(device), ids.to(device))
    assert torch.equal(y.cpu(), weight[ids])


def test_triton_out_of_range_ids_give_nan_rows_and_no_gradient(device):
    weight, ids = torch.randn(4, 3), torch.tensor([0, 4, -1, 3])
    y = triton_embedding.embedding_forward(weight.to(device), ids.to(device)).cpu()
    assert torch.equal(y[[0, 3]], weight[[0, 3]]) and y[[1, 2]].isnan().all()
    grad = triton_embedding.embedding_backward(torch.ones(4, 3).to(device), ids.to(device), 4,
                                               -1, False).cpu()
    assert torch.equal(grad, torch.tensor([1.0, 0.0, 0.0, 1.0])[:, None].expand(4, 3))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_triton_half_precision(device, dtype):
    weight, ids = torch.randn(6, 20).to(dtype), _ids(3, 5, high=6)
    with gpudnn.use_backend("triton"):
        w = weight.to(device).requires_grad_()
        y = GF.embedding(ids.to(device), w)
        y.backward(torch.ones_like(y))
    assert y.dtype == dtype and torch.equal(y.cpu(), F.embedding(ids, weight))
    counts = torch.bincount(ids.reshape(-1), minlength=6).to(dtype)
    assert torch.equal(w.grad.cpu(), counts[:, None].expand(6, 20))


def test_triton_functional_against_torch(device):
    weight, ids = _weight(9, 6, dtype=torch.float32), _ids(4, 7, high=9, seed=5)
    with gpudnn.use_backend("triton"):
        compare_with_twin(
            lambda w, i: GF.embedding(i, w, padding_idx=0, scale_grad_by_freq=True),
            lambda w, i: F.embedding(i, w, padding_idx=0, scale_grad_by_freq=True),
            weight.to(device), ids.to(device), dtype=torch.float32)


# --- the module -----------------------------------------------------------------------------------

def test_module_matches_torch_twin():
    torch.manual_seed(0)
    theirs = torch.nn.Embedding(10, 4, padding_idx=3, scale_grad_by_freq=True).double()
    ours = gnn.Embedding(10, 4, padding_idx=3, scale_grad_by_freq=True).double()
    ours.load_state_dict(theirs.state_dict())
    assert list(ours.state_dict()) == ["weight"]
    with gpudnn.use_backend("reference"):
        compare_with_twin(ours, theirs, _ids(2, 6, high=10), dtype=F64)


def test_module_on_device_matches_torch_twin(device):
    theirs = torch.nn.Embedding(12, 8)
    ours = gnn.Embedding(12, 8)
    ours.load_state_dict(theirs.state_dict())
    compare_float32_on_device(ours, theirs, _ids(3, 5, high=12), device=device,
                              interpret=True)


def test_from_pretrained_and_padding_initialization():
    pretrained = _weight(5, 3, dtype=torch.float32)
    ours = gnn.Embedding.from_pretrained(pretrained, freeze=False, padding_idx=1)
    assert type(ours) is gnn.Embedding and torch.equal(ours.weight, pretrained)
    assert torch.equal(gnn.Embedding(5, 3, padding_idx=1).weight[1], torch.zeros(3))


def test_convert_swaps_embedding_but_leaves_max_norm_alone():
    model = torch.nn.Sequential(torch.nn.Embedding(5, 3), torch.nn.Embedding(5, 3, max_norm=1.0))
    converted = gnn.convert(model)
    assert type(converted[0]) is gnn.Embedding
    assert type(converted[1]) is torch.nn.Embedding


# --- bad input ----------------------------------------------------------------------------------

@pytest.mark.parametrize("call,exc,match", [
    (lambda: GF.embedding(torch.tensor([1.0]), _weight()), TypeError, "int64 or int32"),
    (lambda: GF.embedding(torch.tensor([1], dtype=torch.int16), _weight()), TypeError, "int16"),
    (lambda: GF.embedding(torch.tensor([1]), torch.randn(5)), ValueError, "2-D"),
    (lambda: GF.embedding(torch.tensor([1]), torch.ones(5, 2, dtype=torch.int64)), TypeError,
     "floating"),
    (lambda: GF.embedding(torch.tensor([7]), _weight()), IndexError, "index 7, out of range"),
    (lambda: GF.embedding(torch.tensor([[0], [-1]]), _weight()), IndexError, "-1"),
    (lambda: GF.embedding(torch.tensor([1]), _weight(), padding_idx=7), ValueError,
     "padding_idx"),
    (lambda: GF.embedding(torch.tensor([1]), _weight(), padding_idx=-8), ValueError,
     "padding_idx"),
    (lambda: GF.embedding(torch.tensor([1]), _weight(), max_norm=1.0), NotImplementedError,
     "max_norm"),
    (lambda: GF.embedding(torch.tensor([1]), _weight(), sparse=True), NotImplementedError,
     "sparse"),
    (lambda: gnn.Embedding(5, 3, max_norm=2.0), NotImplementedError, "max_norm"),
    (lambda: gnn.Embedding(5, 3, sparse=True), NotImplementedError, "sparse"),
    (lambda: GF.embedding(torch.tensor([1], device="meta"), _weight()), RuntimeError,
     "input on meta"),
])
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_compiled_out_of_range_ids_give_nan_not_a_wrong_value(backend):
    """A compiled graph cannot raise on data: an id out of range gives a NaN row."""
    layer = gnn.Embedding(4, 3)
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    torch._dynamo.reset()
    with gpudnn.use_backend(backend):
        y = compiled(torch.tensor([[2, 9], [-3, 0]]))
    assert y[0, 1].isnan().all() and y[1, 0].isnan().all()
    assert torch.equal(y[0, 0], layer.weight[2].detach())


def test_empty_weight_and_ids():
    w = torch.empty(0, 4, requires_grad=True)
    with gpudnn.use_backend("reference"):
        y = GF.embedding(torch.zeros(3, 0, dtype=torch.int64), w)
        y.sum().backward()
    assert y.shape == (3, 0, 4) and w.grad.shape == (0, 4)


@pytest.mark.skipif(DEVICE != "cpu", reason="the interpreter leg; the GPU run covers CUDA")
def test_reference_and_triton_agree_through_autograd():
    weight, ids = _weight(9, 4, dtype=torch.float32), _ids(5, 6, high=9, seed=7)
    grads = []
    for backend in ("reference", "triton"):
        w = weight.clone().requires_grad_()
        with gpudnn.use_backend(backend):
            GF.embedding(ids, w, padding_idx=4).pow(2).sum().backward()
        grads.append(w.grad)
    assert_close(grads[1], grads[0], torch.float32, name="grad_weight", scale=3.0)


@cupy_gpu
def test_cupy_matches_reference():
    gen = torch.Generator().manual_seed(9)
    weight, grad_y = torch.randn(40, 33, generator=gen), torch.randn(300, 33, generator=gen)
    ids = torch.where(torch.rand(300, generator=gen) < 0.5, 1,
                      torch.randint(0, 40, (300,), generator=gen))
    with poison_outputs():
        y = launcher("embedding_forward", "cupy")(weight.cuda(), ids.int().cuda())
    assert torch.equal(y.cpu(), weight[ids])
    for padding, freq in ((-1, False), (1, True)):
        ref = reference_launch("embedding_backward", grad_y.double(), ids, 40, padding, freq)
        with poison_outputs():
            got = launcher("embedding_backward", "cupy")(grad_y.cuda(), ids.cuda(), 40, padding,
                                                         freq)
        assert_close(got, ref, torch.float32, name="grad_weight", scale=10.0)

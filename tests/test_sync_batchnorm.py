"""SyncBatchNorm: two processes (torch.distributed, gloo, on the CPU) normalizing with the statistics
of both batches must equal one BatchNorm over the whole batch (torch's, with the activation after
it): outputs, input gradients, the sum of the ranks' parameter gradients, running statistics.
Also BatchNorm's ``bias=False`` and the SyncBatchNorm conversions."""
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import gpudnn
import gpudnn.nn as gnn
from gpudnn.testing import assert_close
from helpers import DEVICE

WORLD = 2
SHAPES = {"2d": (6, 3, 4, 5), "1d": (10, 4)}
ACTS = {"2d": "relu", "1d": None}


def _inputs(kind: str, dtype):
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(SHAPES[kind], generator=gen, dtype=torch.float64) * 2 + 0.5
    cot = torch.randn(SHAPES[kind], generator=gen, dtype=torch.float64)
    # rank 0 gets 2 samples, rank 1 the rest: unequal batches
    return x.to(dtype), cot.to(dtype), [slice(0, 2), slice(2, None)]


def _set_parameters(layer) -> None:
    channels = layer.weight.shape[0]
    with torch.no_grad():
        layer.weight.copy_(torch.linspace(0.5, 1.5, channels))
        layer.bias.copy_(torch.linspace(-0.5, 0.5, channels))


def _worker(rank: int, init_file: str, backend: str, kind: str, out_file: str, dtype) -> None:
    os.environ.setdefault("TRITON_INTERPRET", "1")
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=WORLD)
    try:
        x, cot, parts = _inputs(kind, dtype)
        layer = gnn.SyncBatchNorm(x.shape[1], momentum=0.3, activation=ACTS[kind]).to(dtype)
        _set_parameters(layer)
        mine = x[parts[rank]].clone().requires_grad_(True)
        with gpudnn.use_backend(backend):
            y = layer(mine)
            (y * cot[parts[rank]]).sum().backward()
        torch.save({"y": y.detach(), "grad_x": mine.grad, "grad_w": layer.weight.grad,
                    "grad_b": layer.bias.grad, "running_mean": layer.running_mean,
                    "running_var": layer.running_var, "steps": layer.num_batches_tracked},
                   f"{out_file}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(DEVICE != "cpu", reason="gloo on CPU tensors (the GPU run has one device)")
@pytest.mark.parametrize("backend,kind,dtype", [
    ("reference", "2d", torch.float64), ("reference", "1d", torch.float64),
    ("triton", "2d", torch.float32)])
def test_two_processes_equal_one_batch_norm_over_the_whole_batch(backend, kind, dtype,
                                                                 tmp_path):
    out_file = str(tmp_path / "out")
    mp.start_processes(_worker, args=(str(tmp_path / "init"), backend, kind, out_file, dtype),
                       nprocs=WORLD, start_method="spawn")
    ranks = [torch.load(f"{out_file}.{r}") for r in range(WORLD)]

    x, cot, parts = _inputs(kind, dtype)
    twin = (torch.nn.BatchNorm1d if kind == "1d" else torch.nn.BatchNorm2d)(
        x.shape[1], momentum=0.3).to(dtype)
    _set_parameters(twin)
    full = x.clone().requires_grad_(True)
    y = twin(full)
    if ACTS[kind]:
        y = torch.relu(y)
    (y * cot).sum().backward()
    for rank, part in enumerate(parts):
        assert_close(ranks[rank]["y"], y[part], dtype, name=f"rank {rank} y")
        assert_close(ranks[rank]["grad_x"], full.grad[part], dtype, name=f"rank {rank} grad_x")
        for name in ("running_mean", "running_var"):
            assert_close(ranks[rank][name], getattr(twin, name), dtype,
                         name=f"rank {rank} {name}")
        assert int(ranks[rank]["steps"]) == 1
    # parameter gradients stay local (DDP averages them): their sum is the whole batch's
    assert_close(sum(r["grad_w"] for r in ranks), twin.weight.grad, dtype, name="grad_w")
    assert_close(sum(r["grad_b"] for r in ranks), twin.bias.grad, dtype, name="grad_b")


def test_one_process_is_batch_norm():
    torch.manual_seed(0)
    sync = gnn.SyncBatchNorm(3, activation="relu")
    plain = gnn.BatchNorm2d(3, activation="relu")
    plain.load_state_dict(sync.state_dict())
    x = torch.randn(4, 3, 5, 5)
    assert_close(sync(x), plain(x), torch.float32, name="y")
    assert_close(sync.running_var, plain.running_var, torch.float32, name="running_var")


def test_batch_norm_without_bias():
    torch.manual_seed(0)
    ours = gnn.BatchNorm2d(3, bias=False, activation="relu")
    theirs = torch.nn.BatchNorm2d(3, bias=False)
    assert ours.state_dict().keys() == theirs.state_dict().keys() and ours.bias is None
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(4, 3, 5, 5, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    ours(x).sum().backward()
    torch.relu(theirs(x2)).sum().backward()
    assert_close(x.grad, x2.grad, torch.float32, name="grad x")
    assert_close(ours.weight.grad, theirs.weight.grad, torch.float32, name="grad w")


def test_conversions_keep_parameters_and_the_fused_activation():
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.BatchNorm2d(3),
                                torch.nn.ReLU(), torch.nn.SyncBatchNorm(3))
    converted = gnn.convert(model)
    assert type(converted[3]) is gnn.SyncBatchNorm
    synced = gnn.SyncBatchNorm.convert_sync_batchnorm(converted)
    assert type(synced[1]) is gnn.SyncBatchNorm and synced[1].activation.name == "relu"
    assert synced[1].weight is converted[1].weight
    assert synced.state_dict().keys() == model.state_dict().keys()

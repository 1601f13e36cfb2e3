"""``import gpudnn.nn as nn`` as a drop-in for ``import torch.nn as nn``; ``gpudnn.optim`` from
``import gpudnn``; whole converted models through ``torch.load(weights_only=True)``."""
import io
import subprocess
import sys

import torch

import gpudnn
import gpudnn.nn as gnn
from gpudnn.testing import assert_close


def test_every_torch_nn_name_is_here_and_the_twins_replace_torchs():
    public = {n for n in dir(torch.nn) if not n.startswith("_")}
    assert public <= set(gnn.__all__) and all(hasattr(gnn, n) for n in public)
    assert gnn.Module is torch.nn.Module and gnn.Sequential is torch.nn.Sequential
    assert gnn.init is torch.nn.init and gnn.functional is torch.nn.functional
    for name in gnn.TWINS:
        cls = getattr(gnn, name)
        assert cls.__module__.startswith("gpudnn.nn."), name
        assert issubclass(cls, torch.nn.Module), name
    assert gnn.Linear is not torch.nn.Linear


def test_a_script_written_for_torch_nn_runs_on_gpudnn():
    code = """
import torch
import gpudnn.nn as nn
import gpudnn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                                  nn.Linear(4 * 3 * 3, 10))
        nn.init.zeros_(self.body[-1].bias)
    def forward(self, x):
        return self.body(x)

net = Net()
opt = gpudnn.optim.Adam(net.parameters())
loss = nn.CrossEntropyLoss()(net(torch.randn(2, 1, 8, 8)), torch.tensor([1, 2]))
loss.backward(); opt.step()
print(type(net.body[0]).__module__, type(opt).__module__)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["gpudnn.nn.conv", "gpudnn.optim.adam"]


def test_gpudnn_optim_comes_with_import_gpudnn():
    out = subprocess.run([sys.executable, "-c", "import gpudnn; print(gpudnn.optim.SGD)"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "gpudnn.optim" in out.stdout, out.stderr[-2000:]


def test_a_whole_converted_model_loads_with_weights_only():
    torch.manual_seed(0)
    model = gnn.convert(torch.nn.Sequential(
        torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Linear(2 * 4 * 4, 3), torch.nn.LeakyReLU(0.2)))
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    # gpudnn registers its own classes; torch's stay the caller's to allow, as for any model
    with torch.serialization.safe_globals([torch.nn.Sequential, torch.nn.Identity,
                                           torch.nn.Flatten]):
        loaded = torch.load(buffer, weights_only=True)
    assert type(loaded[0]) is gnn.Conv2d and loaded[1].activation.name == "relu"
    assert loaded[4].activation.param == 0.2
    x = torch.randn(2, 1, 6, 6)
    model.eval(), loaded.eval()
    with gpudnn.use_backend("reference"):
        assert_close(loaded(x), model(x), torch.float32, name="loaded model")

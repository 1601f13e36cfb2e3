"""`python -m gpudnn quantize|prune`: on tiny trained CNN and GAN checkpoints, the accuracy and
size lines, the files written (a quantized model that loads back, a pruned checkpoint that
`quantize --checkpoint` takes) and the errors a user can fix (exit code 2, one line)."""
from __future__ import annotations

import os
import re

import pytest
import torch

from gpudnn import cli, pruning
from gpudnn.models import compress, training
from helpers import DEVICE
from test_cli import TINY_CNN, TINY_GAN
from test_models import write_tiny_mnist

RUNTIME = ["--device", DEVICE]


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory):
    """A 2-epoch tiny CNN on 40 MNIST-format training images (20 test images)."""
    data = write_tiny_mnist(str(tmp_path_factory.mktemp("mnist")), n_train=40, n_test=20)
    out = tmp_path_factory.mktemp("cnn")
    assert cli.main(["train", "cnn", "--data", data, "--epochs", "2", "--out", str(out),
                     *TINY_CNN]) == 0
    return str(out)


def _numbers(line: str) -> list[float]:
    return [float(x) for x in re.findall(r"[-+]?\d+\.\d+", line)]


def _line(out: str, start: str) -> str:
    return next(line for line in out.splitlines() if line.strip().startswith(start))


@pytest.mark.parametrize("dtype", ["int8", "fp8"])
def test_quantize_reports_accuracy_and_size_and_the_model_loads_back(cnn_run, capsys, dtype):
    assert cli.main(["quantize", "--out", cnn_run, "--dtype", dtype, *RUNTIME]) == 0
    out = capsys.readouterr().out
    before, after, change = _numbers(_line(out, "test accuracy:"))
    assert 0 <= after <= 100 and change == pytest.approx(after - before, abs=0.011)
    size = _line(out, "size on disk")
    raw_before, raw_after = _numbers(size)[:2]
    assert raw_after < raw_before
    path = os.path.join(cnn_run, "quantized.pt")
    assert _line(out, "written:").endswith(path)
    payload = torch.load(path, weights_only=True)
    assert payload["metrics"]["after"] == pytest.approx(after / 100, abs=5e-5)
    task = compress.load_quantized(path, torch.device(DEVICE), lambda *a, **k: cli._make_task(
        a[0], a[1], a[2], "gpudnn", **k))
    weights = [v for k, v in task.model.state_dict().items() if k.endswith(".weight")]
    assert {w.dtype for w in weights} == {torch.int8 if dtype == "int8"
                                          else torch.float8_e4m3fn}
    task.prepare_data()
    assert task.evaluate()["test_acc"] == pytest.approx(after / 100, abs=5e-5)


def test_prune_fine_tunes_and_writes_a_sparse_checkpoint_that_quantize_takes(cnn_run, capsys):
    assert cli.main(["prune", "--out", cnn_run, "--amount", "0.5", "--fine-tune-epochs", "1",
                     "--no-progress", *RUNTIME]) == 0
    out = capsys.readouterr().out
    assert "fine-tune epoch 3:" in out  # the checkpoint's epochs continue
    assert _numbers(_line(out, "test accuracy:"))
    path = os.path.join(cnn_run, "pruned.pt")
    payload = training.load_checkpoint(path, "cnn")
    assert payload["epoch"] == 3
    for key, value in payload["model"].items():
        if key.endswith(".weight") and value.dim() in (2, 4):
            assert float((value == 0).float().mean()) == pytest.approx(0.5, abs=0.02), key
    assert not any(k.endswith(("_orig", "_mask")) for k in payload["model"])
    assert cli.main(["quantize", "--out", cnn_run, "--checkpoint", path, *RUNTIME]) == 0
    assert "test accuracy:" in capsys.readouterr().out


def test_prune_2to4_leaves_the_first_conv_dense(cnn_run, capsys):
    assert cli.main(["prune", "--out", cnn_run, "--method", "2:4", "--fine-tune-epochs", "0",
                     *RUNTIME]) == 0
    out = capsys.readouterr().out
    assert "left dense: features.conv1 (Conv2d weight (4, 1, 3, 3) has 9 inputs" in out
    state = training.load_checkpoint(os.path.join(cnn_run, "pruned.pt"))["model"]
    assert pruning.is_2to4(state["features.conv2.weight"])
    assert pruning.is_2to4(state["classifier.fc1.weight"])


def test_gan_discriminator_quantized_and_pruned(tmp_path, capsys):
    assert cli.main(["train", "gan", "--epochs", "1", "--out", str(tmp_path), *TINY_GAN]) == 0
    capsys.readouterr()
    assert cli.main(["quantize", "--out", str(tmp_path), *RUNTIME]) == 0
    out = capsys.readouterr().out
    assert "the discriminator's Linear/Conv2d weights to int8" in out
    assert len(_numbers(_line(out, "discriminator AUC"))) == 3
    assert cli.main(["prune", "--out", str(tmp_path), "--fine-tune-epochs", "1",
                     "--no-progress", *RUNTIME]) == 0
    out = capsys.readouterr().out
    assert len(_numbers(_line(out, "discriminator AUC (real digits vs generated):"))) == 3


@pytest.mark.parametrize("argv,message", [
    (["quantize", "--checkpoint", "/nonexistent/checkpoint.pt"], "no checkpoint at"),
    (["prune", "--amount", "1.0"], "amount must be a fraction in [0, 1)"),
    (["prune", "--method", "2:4", "--amount", "0.25"], "amount must be 0.5"),
    (["prune", "--fine-tune-epochs", "-1"], "--fine-tune-epochs must be >= 0"),
    (["quantize", "--backend", "torch"], "--backend torch does not apply"),
])
def test_user_errors_exit_2(cnn_run, capsys, argv, message):
    assert cli.main([*argv, "--out", cnn_run, *RUNTIME]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gpudnn: error: ") and message in err


def test_an_lstm_checkpoint_is_refused(cnn_run, tmp_path, capsys):
    payload = training.load_checkpoint(os.path.join(cnn_run, "checkpoint.pt"))
    payload["task"] = "lstm"
    path = str(tmp_path / "checkpoint.pt")
    torch.save(training.seal_checkpoint(payload), path)
    assert cli.main(["quantize", "--out", str(tmp_path), *RUNTIME]) == 2
    assert "holds the 'lstm' model; quantize and prune take the cnn and gan" in \
        capsys.readouterr().err

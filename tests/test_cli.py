"""`python -m gpudnn`: train / resume / sample, checkpoints and their errors, the progress bar."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest
import torch

from gpudnn import cli
from gpudnn.models import training
from gpudnn.testing import assert_close
from helpers import DEVICE
from test_models import _decode_png, write_tiny_mnist

TINY_CNN = ["--widths", "4,8", "--hidden", "16", "--batch-size", "8", "--no-progress",
            "--device", DEVICE]
TINY_LSTM = ["--max-chars", "3000", "--seq-len", "16", "--hidden", "16", "--embed-dim", "8",
             "--batch-size", "16", "--no-progress", "--device", DEVICE]
TINY_GAN = ["--image-size", "8", "--width", "4", "--latent-dim", "8", "--batch-size", "128",
            "--no-progress", "--device", DEVICE]


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory):
    """40 training and 20 test images in MNIST's idx format (8x8 digits): 5 steps an epoch."""
    return write_tiny_mnist(str(tmp_path_factory.mktemp("mnist")), n_train=40, n_test=20)


def train_cnn(out, epochs, mnist_dir, *extra):
    return cli.main(["train", "cnn", "--data", mnist_dir, "--epochs", str(epochs), "--out",
                     str(out), *TINY_CNN, *extra])


def assert_same_checkpoint(a, b):
    ca = training.load_checkpoint(os.path.join(a, "checkpoint.pt"))
    cb = training.load_checkpoint(os.path.join(b, "checkpoint.pt"))
    assert ca["epoch"] == cb["epoch"]
    for key, value in ca["model"].items():
        assert_close(cb["model"][key], value, "float32", name=key)
    state_a = ca["optimizers"]["model"]["state"]
    state_b = cb["optimizers"]["model"]["state"]
    assert state_a.keys() == state_b.keys()
    for index in state_a:
        for name, value in state_a[index].items():
            assert_close(state_b[index][name], value, "float32", name=f"optimizer {name}")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, mnist_dir):
    """A 2-epoch CNN run in one go: what every resumed run must reproduce."""
    out = tmp_path_factory.mktemp("straight")
    assert train_cnn(out, 2, mnist_dir) == 0
    return str(out)


def test_resume_continues_from_the_last_epoch(tmp_path, mnist_dir, uninterrupted, capsys):
    assert train_cnn(tmp_path, 1, mnist_dir) == 0
    capsys.readouterr()
    # no --data: the checkpoint remembers the folder
    assert cli.main(["train", "cnn", "--epochs", "2", "--out", str(tmp_path), "--resume",
                     "--no-progress", "--device", DEVICE]) == 0
    printed = capsys.readouterr().out
    assert "resuming cnn" in printed and "after epoch 1" in printed
    assert "epoch 2/2" in printed and "epoch 1/2" not in printed
    assert_same_checkpoint(str(tmp_path), uninterrupted)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    # resuming a finished run trains nothing and says so
    assert train_cnn(tmp_path, 2, mnist_dir, "--resume") == 0
    assert "nothing to do" in capsys.readouterr().out


def test_interrupted_run_loses_nothing_and_resumes(tmp_path, mnist_dir, uninterrupted,
                                                   monkeypatch, capsys):
    real_step = training.CNNTask.train_step
    calls = []

    def step_then_interrupt(self, batch):
        calls.append(1)
        if len(calls) == 7:  # in the middle of epoch 2 (5 steps an epoch)
            raise KeyboardInterrupt
        return real_step(self, batch)

    monkeypatch.setattr(training.CNNTask, "train_step", step_then_interrupt)
    assert train_cnn(tmp_path, 2, mnist_dir) == 130
    assert "--resume" in capsys.readouterr().err
    saved = training.load_checkpoint(str(tmp_path / "checkpoint.pt"), "cnn")
    assert saved["epoch"] == 1
    assert not [name for name in os.listdir(tmp_path) if ".tmp" in name]
    monkeypatch.setattr(training.CNNTask, "train_step", real_step)
    assert train_cnn(tmp_path, 2, mnist_dir, "--resume") == 0
    assert_same_checkpoint(str(tmp_path), uninterrupted)


def test_checkpoint_write_is_atomic(tmp_path, mnist_dir, monkeypatch):
    assert train_cnn(tmp_path, 1, mnist_dir) == 0
    path = str(tmp_path / "checkpoint.pt")
    before = open(path, "rb").read()
    task = training.CNNTask({"widths": [4, 8], "hidden": 16, "data": mnist_dir}, DEVICE,
                            "torch")

    def half_written(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 partial")
        raise OSError("disk full")

    monkeypatch.setattr(training.torch, "save", half_written)
    with pytest.raises(OSError, match="disk full"):
        training.save_checkpoint(path, task, 2, [])
    assert open(path, "rb").read() == before
    assert os.listdir(tmp_path).count("checkpoint.pt") == 1
    assert not [name for name in os.listdir(tmp_path) if ".tmp" in name]


def test_torn_checkpoint_never_loads(tmp_path, mnist_dir):
    """A checkpoint cut at any byte (what a writer killed mid-write leaves in its temporary
    file) is a CheckpointError, never a checkpoint: 300 random cuts and the last 64 bytes."""
    assert train_cnn(tmp_path, 1, mnist_dir) == 0
    good = (tmp_path / "checkpoint.pt").read_bytes()
    gen = torch.Generator().manual_seed(0)
    cuts = torch.randint(len(good), (300,), generator=gen).tolist()
    torn = str(tmp_path / "torn.pt")
    for cut in sorted(set(cuts + list(range(len(good) - 64, len(good))))):
        open(torn, "wb").write(good[:cut])
        with pytest.raises(training.CheckpointError, match="corrupt"):
            training.load_checkpoint(torn, "cnn")


def test_stale_temp_files_are_removed_and_never_loaded(tmp_path, mnist_dir, capsys):
    """A killed writer's checkpoint.pt.tmp<pid> is not a checkpoint; the next run deletes it
    (a temporary file of a live process, another trainer writing there, is left alone)."""
    assert train_cnn(tmp_path, 1, mnist_dir) == 0
    dead = 99_999_999  # above Linux's largest pid (2**22): names no process
    os.replace(tmp_path / "checkpoint.pt", tmp_path / f"checkpoint.pt.tmp{dead}")
    (tmp_path / f"metrics.jsonl.tmp{dead}").write_text("{")
    live = tmp_path / f"checkpoint.pt.tmp{os.getppid()}"
    live.write_bytes(b"in progress")
    assert train_cnn(tmp_path, 2, mnist_dir, "--resume") == 2
    assert "no checkpoint at" in capsys.readouterr().err
    assert train_cnn(tmp_path, 1, mnist_dir) == 0
    assert sorted(os.listdir(tmp_path)) == sorted(["checkpoint.pt", "metrics.jsonl", live.name])


def _corrupt(kind, path, tmp_path):
    good = open(path, "rb").read()
    if kind == "truncated":
        open(path, "wb").write(good[: len(good) // 2])
    elif kind == "garbage":
        open(path, "wb").write(os.urandom(4096))
    elif kind == "empty":
        open(path, "wb").close()
    elif kind == "not-a-checkpoint":
        torch.save({"weights": torch.zeros(3)}, path)
    elif kind == "bit-flip":  # one bit of the largest weight's stored bytes
        weight = max(training.load_checkpoint(path)["model"].values(), key=torch.Tensor.numel)
        at = good.index(weight.numpy().tobytes()) + weight.numel() * 2
        open(path, "wb").write(good[:at] + bytes([good[at] ^ 4]) + good[at + 1:])
    elif kind == "other-model":  # edited and resealed: a valid digest
        payload = training.load_checkpoint(path)
        payload["task"] = "gan"
        torch.save(training.seal_checkpoint(payload), path)
    elif kind == "wrong-shapes":
        payload = training.load_checkpoint(path)
        payload["model"]["classifier.fc2.weight"] = torch.zeros(3, 3)
        torch.save(training.seal_checkpoint(payload), path)
    elif kind == "edited":  # changed without resealing
        payload = training.load_checkpoint(path)
        payload["epoch"] = 7
        torch.save(payload, path)
    elif kind == "missing":
        os.remove(path)


@pytest.mark.parametrize("kind,message", [
    ("missing", "no checkpoint at"), ("truncated", "corrupt or unreadable"),
    ("garbage", "corrupt or unreadable"), ("empty", "corrupt or unreadable"),
    ("bit-flip", "do not match the SHA-256 digest"), ("edited", "do not match the SHA-256"),
    ("not-a-checkpoint", "not a gpudnn checkpoint"), ("other-model", "for the 'gan' model"),
    ("wrong-shapes", "does not fit this model")])
def test_bad_checkpoint_is_a_clear_error(tmp_path, mnist_dir, capsys, kind, message):
    assert train_cnn(tmp_path, 1, mnist_dir) == 0
    _corrupt(kind, str(tmp_path / "checkpoint.pt"), tmp_path)
    capsys.readouterr()
    assert train_cnn(tmp_path, 2, mnist_dir, "--resume") == 2
    err = capsys.readouterr().err
    assert err.startswith("gpudnn: error: ") and message in err, err
    assert "Traceback" not in err and err.count("\n") == 1


def test_process_exit_code_and_message_without_traceback(tmp_path):
    done = subprocess.run([sys.executable, "-m", "gpudnn", "train", "lstm", "--resume",
                           "--out", str(tmp_path / "nothing")], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    assert "gpudnn: error: no checkpoint at" in done.stderr and "Traceback" not in done.stderr
    helped = subprocess.run([sys.executable, "-m", "gpudnn", "train", "cnn", "--help"],
                            capture_output=True, text=True, timeout=120)
    assert helped.returncode == 0
    for flag in ("--epochs", "--batch-size", "--lr", "--backend", "--device", "--out",
                 "--resume", "--data"):
        assert flag in helped.stdout


@pytest.mark.parametrize("argv,message", [
    (["train", "cnn", "--data", "/nonexistent/folder"], "does not exist"),
    (["train", "cnn", "--backend", "cupy", "--device", "cpu"], "cannot run on cpu"),
    (["train", "gan", "--image-size", "12"], "must be 8, 16 or 32"),
    (["sample", "gan", "--out", "/nonexistent/run"], "no checkpoint at"),
    (["train", "cnn", "--epochs", "0"], "--epochs must be >= 1"),
    (["train", "lstm", "--lr", "-0.1"], "--lr must be > 0"),
    (["train", "cnn", "--dropout", "1"], "--dropout must be in [0, 1)"),
])
def test_user_errors_exit_2(tmp_path, capsys, argv, message):
    assert cli.main(argv + ["--out", str(tmp_path / "o")] if argv[0] == "train" else argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("gpudnn: error: ") and message in err, err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_device_without_cuda_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["train", "cnn", "--device", "cuda", "--out", str(tmp_path)]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err


def test_lstm_train_then_sample_text(tmp_path, capsys):
    assert cli.main(["train", "lstm", "--epochs", "1", "--out", str(tmp_path), *TINY_LSTM]) == 0
    assert (tmp_path / "sample_epoch001.txt").is_file()
    capsys.readouterr()
    argv = ["sample", "lstm", "--out", str(tmp_path), "--prompt", "class ", "--length", "30",
            "--device", DEVICE]
    assert cli.main(argv) == 0
    text = capsys.readouterr().out.rstrip("\n")
    assert text.startswith("class ") and len(text) == 36
    assert (tmp_path / "sample.txt").read_text() == text
    assert cli.main(argv + ["--temperature", "0"]) == 0  # greedy: the same text twice
    greedy = capsys.readouterr().out
    assert cli.main(argv + ["--temperature", "0", "--seed", "5"]) == 0
    assert capsys.readouterr().out == greedy
    assert cli.main(["sample", "lstm", "--out", str(tmp_path), "--prompt", "\x01"]) == 2
    assert "not in the vocabulary" in capsys.readouterr().err


def test_gan_train_then_sample_grid(tmp_path, capsys):
    assert cli.main(["train", "gan", "--epochs", "1", "--out", str(tmp_path), *TINY_GAN]) == 0
    assert "grid " + str(tmp_path / "grid_epoch001.png") in capsys.readouterr().out
    assert cli.main(["sample", "gan", "--out", str(tmp_path), "--count", "9", "--device",
                     DEVICE]) == 0
    path = capsys.readouterr().out.strip()
    assert path == str(tmp_path / "samples.png")
    assert _decode_png(path).shape == (3 * 9 + 1, 3 * 9 + 1)


def test_progress_bar_shows_loss_and_throughput():
    log = io.StringIO()
    bar = training.ProgressBar(4, "cnn epoch 1/3", "img", stream=log, log_every=0.0)
    for loss in (4.0, 2.0):
        bar.update({"loss": torch.tensor(loss)}, 32)
    bar.close()
    lines = log.getvalue().splitlines()
    assert len(lines) == 3 and "\r" not in log.getvalue()
    assert lines[0].startswith("cnn epoch 1/3 [######------------------] 1/4 loss 4.0000")
    assert lines[-1].startswith("cnn epoch 1/3 [############------------] 2/4 loss 3.0000")
    assert lines[-1].endswith("img/s")

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    term = Terminal()
    bar = training.ProgressBar(2, "x", "img", stream=term)
    bar.update({"loss": torch.tensor(1.0)}, 8)
    bar.close()
    assert term.getvalue().startswith("\r") and term.getvalue().endswith("\n")

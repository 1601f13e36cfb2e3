"""Models (CNN, char-LSTM, DCGAN), their data and training: gpudnn twin vs torch twin, and that
each model actually learns."""
from __future__ import annotations

import gzip
import math
import os
import pickle
import struct
import zlib

import numpy as np
import pytest
import torch

import gpudnn
from gpudnn import data as gdata
from gpudnn.models import cnn, gan, lstm, to_gpudnn
from gpudnn.models.training import CNNTask, GANTask, LSTMTask, fit, single_threaded_blas
from gpudnn.testing import assert_close
from helpers import DEVICE, kernel_backends


@pytest.fixture(autouse=True)
def _one_blas_thread():
    """As the CLI does: the reference backend's small GEMMs are fastest on one BLAS thread."""
    with single_threaded_blas():
        yield


# --- data -------------------------------------------------------------------------------------

def test_digits_split_is_fixed_disjoint_and_scaled():
    a, b = gdata.digits(), gdata.digits()
    assert a.x_train.shape == (1348, 1, 8, 8) and a.x_test.shape == (449, 1, 8, 8)
    assert a.x_train.dtype == torch.float32 and a.y_train.dtype == torch.int64
    assert torch.equal(a.x_test, b.x_test) and torch.equal(a.y_train, b.y_train)
    assert a.x_train.min() == -1.0 and a.x_train.max() == 1.0
    assert set(a.y_test.tolist()) == set(range(10))
    # no test image is also a training image (digits has a few exact duplicates: allow those)
    train_rows = {tuple(r) for r in a.x_train.flatten(1).tolist()}
    overlap = sum(tuple(r) in train_rows for r in a.x_test.flatten(1).tolist())
    assert overlap <= 5
    other = gdata.digits(seed=1)
    assert not torch.equal(other.y_test, a.y_test)


@pytest.mark.parametrize("size", [16, 32])
def test_digit_images_upscaled(size):
    x = gdata.digit_images(size)
    assert x.shape == (1797, 1, size, size) and x.is_contiguous()
    assert x.min() >= -1.0 and x.max() <= 1.0 and x.max() > 0.9
    # a blurred copy of the original: the block means recover the 8x8 image up to interpolation
    small = torch.nn.functional.avg_pool2d(x, size // 8)
    original = gdata.digit_images(8)
    assert (small - original).abs().mean() < 0.15


def _write_idx(path, array, code=0x08):
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(payload)


def write_tiny_mnist(folder, n_train=40, n_test=20, size=8, seed=0, gz=False):
    """An MNIST-format folder whose images are the digits (so a model can learn them)."""
    os.makedirs(folder, exist_ok=True)
    split = gdata.digits(seed=seed)
    ext = ".gz" if gz else ""
    for prefix, x, y, n in (("train", split.x_train, split.y_train, n_train),
                            ("t10k", split.x_test, split.y_test, n_test)):
        images = ((x[:n, 0] + 1) * 127.5).round().to(torch.uint8).numpy()
        if size != 8:
            images = np.kron(images, np.ones((size // 8, size // 8), np.uint8))
        _write_idx(os.path.join(folder, f"{prefix}-images-idx3-ubyte{ext}"), images)
        _write_idx(os.path.join(folder, f"{prefix}-labels-idx1-ubyte{ext}"),
                   y[:n].numpy().astype(np.uint8))
    return folder


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_loader_reads_idx_files(tmp_path, gz):
    folder = write_tiny_mnist(str(tmp_path), n_train=7, n_test=3, size=16, gz=gz)
    split = gdata.load_image_folder(folder)
    assert split.x_train.shape == (7, 1, 16, 16) and split.x_test.shape == (3, 1, 16, 16)
    digits = gdata.digits()
    expected = ((digits.x_train[:7] + 1) * 127.5).round() / 127.5 - 1
    assert_close(split.x_train[:, :, ::2, ::2], expected, name="mnist pixels")
    assert torch.equal(split.y_train, digits.y_train[:7])


def test_idx_reader_rejects_bad_files(tmp_path):
    bad = tmp_path / "images.idx"
    bad.write_bytes(b"\x00\x00\x08\x03" + struct.pack(">3I", 2, 4, 4) + bytes(31))
    with pytest.raises(ValueError, match="need 32"):
        gdata.read_idx(str(bad))
    bad.write_bytes(b"PK\x03\x04junk")
    with pytest.raises(ValueError, match="not an idx file"):
        gdata.read_idx(str(bad))
    with pytest.raises(FileNotFoundError, match="neither MNIST"):
        gdata.load_image_folder(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        gdata.load_image_folder(str(tmp_path / "nope"))


def test_cifar10_loader_reads_pickle_batches(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    rng = np.random.default_rng(0)
    batches = {}
    for name, n in (("data_batch_1", 5), ("data_batch_2", 4), ("test_batch", 3)):
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"labels": rng.integers(0, 10, n).tolist()}
        batches[name] = batch
        with open(root / name, "wb") as f:
            pickle.dump(batch, f)
    split = gdata.load_image_folder(str(tmp_path))  # the parent folder is accepted too
    assert split.x_train.shape == (9, 3, 32, 32) and split.x_test.shape == (3, 3, 32, 32)
    first = batches["data_batch_1"][b"data"][2].reshape(3, 32, 32).astype(np.float32)
    assert_close(split.x_train[2], first / 127.5 - 1, name="cifar pixels")
    assert split.y_train.tolist() == (batches["data_batch_1"][b"labels"]
                                      + batches["data_batch_2"][b"labels"])
    assert split.y_test.tolist() == batches["test_batch"][b"labels"]


def test_char_corpus_and_vocab():
    text, vocab = gdata.char_corpus(5000)
    assert len(text) == 5000 and "def " in text
    ids = vocab.encode(text)
    assert ids.dtype == torch.int64 and int(ids.max()) < len(vocab)
    assert vocab.decode(ids) == text
    with pytest.raises(ValueError, match="not in the vocabulary"):
        vocab.encode("\x00")


def _decode_png(path):
    """Minimal PNG reader (8-bit gray/RGB, filter 0) to check what write_png wrote."""
    raw = open(path, "rb").read()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    while pos < len(raw):
        (length,) = struct.unpack(">I", raw[pos:pos + 4])
        kind, body = raw[pos + 4:pos + 8], raw[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", raw[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF, kind
        chunks[kind] = chunks.get(kind, b"") + body
        pos += 12 + length
    width, height, depth, color = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    channels = {0: 1, 2: 3}[color]
    rows = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), np.uint8).reshape(height, -1)
    assert depth == 8 and (rows[:, 0] == 0).all() and b"IEND" in chunks
    pixels = rows[:, 1:].reshape(height, width, channels)
    return pixels[:, :, 0] if channels == 1 else pixels


@pytest.mark.parametrize("channels", [1, 3])
def test_png_grid_round_trip(tmp_path, channels):
    images = torch.rand(7, channels, 5, 6) * 2 - 1
    grid = gdata.image_grid(images, columns=3)
    assert grid.shape[:2] == (3 * 6 + 1, 3 * 7 + 1)
    path = str(tmp_path / "grid.png")
    gdata.write_png(path, grid)
    back = _decode_png(path)
    assert np.array_equal(back, grid)
    assert gdata.read_png_size(path) == (grid.shape[1], grid.shape[0])
    tile = back[1 + 6:1 + 6 + 5, 1 + 7:1 + 7 + 6]  # image 4: row 1, column 1
    expected = ((images[4].clamp(-1, 1) + 1) * 127.5).round().permute(1, 2, 0).squeeze(-1)
    assert np.array_equal(tile, expected.to(torch.uint8).numpy())


# --- model shapes -----------------------------------------------------------------------------

@pytest.mark.parametrize("separable", [False, True])
@pytest.mark.parametrize("channels,size", [(1, 8), (1, 28), (3, 32)])
def test_cnn_shapes(separable, channels, size):
    model = cnn.build_torch(channels, 10, size, widths=(4, 8, 8) if separable else (4, 8),
                            hidden=16, separable=separable)
    out = model(torch.randn(3, channels, size, size))
    assert out.shape == (3, 10)
    if separable:
        depthwise = model.features.block1.body.depthwise1
        assert depthwise.groups == depthwise.in_channels == 4


@pytest.mark.parametrize("size", [16, 32])
def test_gan_shapes(size):
    model = gan.build_torch(latent_dim=8, image_size=size, width=4)
    images = model(model.noise(5))
    assert images.shape == (5, 1, size, size) and images.abs().max() <= 1
    assert model.discriminator(images).shape == (5, 1)


def test_lstm_sample_length_and_greedy_is_deterministic():
    model = lstm.build_torch(vocab_size=11, embed_dim=4, hidden_size=8, num_layers=2)
    prompt = torch.tensor([1, 2, 3])
    greedy = [model.sample(prompt, 9, temperature=0) for _ in range(2)]
    assert greedy[0].shape == (9,) and torch.equal(greedy[0], greedy[1])
    drawn = model.sample(prompt, 9, 1.0, torch.Generator().manual_seed(0))
    assert drawn.dtype == torch.int64 and int(drawn.max()) < 11
    assert model.training  # sample() restores the mode
    with pytest.raises(ValueError, match="non-empty"):
        model.sample(torch.tensor([], dtype=torch.int64), 3)


def test_to_gpudnn_keeps_parameters_and_fuses():
    model = cnn.build_torch(widths=(4, 8), hidden=16)
    twin = to_gpudnn(model)
    assert type(model.features.conv1) is torch.nn.Conv2d  # the original is untouched
    assert isinstance(twin.features.conv1, gpudnn.nn.Conv2d)
    assert isinstance(twin.features.relu1, torch.nn.Identity)  # fused into the BatchNorm
    assert twin.state_dict().keys() == model.state_dict().keys()
    for key, value in model.state_dict().items():
        assert torch.equal(twin.state_dict()[key], value)
        assert twin.state_dict()[key].data_ptr() != value.data_ptr() or value.numel() == 0


# --- gpudnn twin vs torch twin ----------------------------------------------------------------

def _cast_task(task, dtype):
    task.model.to(device=DEVICE, dtype=dtype)  # parameters keep their identity: optimizers ok
    if isinstance(task, CNNTask):
        task.split.x_train = task.split.x_train.to(dtype)
    elif isinstance(task, GANTask):
        task.images = task.images.to(dtype)
    return task


def _losses(task, steps, seed=7):
    """Losses of ``steps`` training steps on the first batches of a seeded epoch."""
    torch.manual_seed(seed)  # GAN noise
    batches = task.batches(torch.Generator().manual_seed(seed))
    out = []
    for _ in range(steps):
        losses, _ = task.train_step(next(batches))
        out.append(torch.stack([v.double().cpu() for v in losses.values()]))
    return torch.stack(out)


# Tiny configurations; dropout is 0 because gpudnn's dropout masks (Philox) differ from torch's.
TWIN_CASES = {
    "cnn": (CNNTask, {"widths": [4, 8], "hidden": 16, "dropout": 0.0, "batch_size": 16}),
    "xception": (CNNTask, {"widths": [4, 8], "hidden": 16, "dropout": 0.0, "batch_size": 16,
                           "separable": True}),
    "lstm": (LSTMTask, {"max_chars": 4000, "seq_len": 12, "hidden": 16, "embed_dim": 8,
                        "batch_size": 6}),
    "gan": (GANTask, {"width": 4, "latent_dim": 8, "batch_size": 8}),
}


# Smaller still for the Triton interpreter, which runs every kernel program in Python.
INTERPRETER_OVERRIDES = {
    "cnn": {"widths": [4], "hidden": 8, "batch_size": 4},
    "xception": {"hidden": 8, "batch_size": 4},
    "lstm": {},
    "gan": {"image_size": 8, "batch_size": 4},
}


def _twin_losses(case, dtype, steps, overrides=None):
    cls, config = TWIN_CASES[case]
    config = {**config, **(overrides or {})}
    results = {}
    for flavor in ("torch", "gpudnn"):
        task = _cast_task(cls(config, DEVICE, flavor), dtype)
        results[flavor] = _losses(task, steps)
    return results["gpudnn"], results["torch"]


@pytest.mark.parametrize("case", sorted(TWIN_CASES))
def test_gpudnn_reference_trains_like_torch_float64(case):
    """Same initial weights and batches, 4 optimiser steps (Adam): the losses of the gpudnn
    network on the reference backend equal the torch twin's to the float64 tolerance
    (rounding-order differences only)."""
    with gpudnn.use_backend("reference"):
        ours, theirs = _twin_losses(case, torch.float64, steps=4)
    assert torch.isfinite(ours).all()
    assert_close(ours, theirs, "float64", name=f"{case} losses per step")
    assert not torch.equal(ours[0], ours[-1])  # the steps changed the weights


@pytest.fixture
def no_tf32():
    """Full float32 matmuls and convs for torch and gpudnn alike (both follow these switches)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.mark.parametrize("backend", kernel_backends())
@pytest.mark.parametrize("case", sorted(INTERPRETER_OVERRIDES))
def test_gpudnn_kernels_train_like_torch_float32(case, backend, no_tf32):
    """The same on the GPU kernels (the Triton interpreter on CPU), float32, 2 steps: losses
    agree to the float32 tolerance (observed differences ~2e-7). TF32 is off for both sides."""
    try:
        with gpudnn.use_backend(backend):
            ours, theirs = _twin_losses(case, torch.float32, steps=2,
                                        overrides=INTERPRETER_OVERRIDES[case] if DEVICE == "cpu"
                                        else None)
    except RuntimeError as exc:
        # CuPy kernels cover only some op families (conv and LSTM are optional there)
        if backend == "cupy" and "has no kernel" in str(exc):
            pytest.skip(f"cupy backend: {exc}")
        raise
    assert_close(ours, theirs, "float32", name=f"{case} losses per step")


# --- learning on real data --------------------------------------------------------------------

def test_cnn_reaches_95_percent_on_digits_with_the_demo_budget(tmp_path):
    """The demo's CNN configuration, gpudnn layers on the default backend, trained exactly as
    `python -m gpudnn demo` trains it."""
    task = CNNTask(dict(CNNTask.DEMO), DEVICE, "gpudnn")
    history = fit(task, task.config["epochs"], str(tmp_path), progress=False, log=lambda s: None)
    assert len(history) == CNNTask.DEMO["epochs"]
    assert history[-1]["test_acc"] >= 0.95, [round(h["test_acc"], 4) for h in history]


LSTM_LOSS_TARGET = 2.75  # nats/char; the untrained model starts at ~ln(vocab) = ~4.4


def test_lstm_loss_falls_below_target(tmp_path):
    """3 epochs (108 steps) on 20k characters; torch's twin ends at 2.56 (train), 2.65 (val)."""
    config = {"max_chars": 20_000, "seq_len": 32, "hidden": 48, "embed_dim": 16,
              "num_layers": 2, "batch_size": 16, "lr": 1e-2, "sample_length": 40}
    task = LSTMTask(config, DEVICE, "gpudnn")
    start = task.evaluate()["val_loss"]
    history = fit(task, 3, str(tmp_path), progress=False, log=lambda s: None)
    assert start > 4.0
    assert history[-1]["loss"] < LSTM_LOSS_TARGET, [h["loss"] for h in history]
    assert history[-1]["val_loss"] < start - 1.5
    assert history[-1]["sample"].startswith("def ") and len(history[-1]["sample"]) == 44
    assert os.path.isfile(history[-1]["sample_path"])


def test_gan_writes_grid_and_losses_stay_finite(tmp_path):
    task = GANTask({"width": 8, "latent_dim": 16, "batch_size": 64, "grid_count": 16},
                   DEVICE, "gpudnn")
    history = fit(task, 1, str(tmp_path), progress=False, log=lambda s: None)
    last = history[-1]
    assert math.isfinite(last["d_loss"]) and math.isfinite(last["g_loss"])
    assert last["grid"] == str(tmp_path / "grid_epoch001.png")
    grid = _decode_png(last["grid"])
    assert grid.shape == (4 * 17 + 1, 4 * 17 + 1)
    assert grid.std() > 5  # not a blank image

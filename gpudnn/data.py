"""Datasets that exist offline, loaders for public datasets in a local folder, and a PNG writer.

- ``digits()``: scikit-learn's bundled 8x8 handwritten digits (1797 images, no download), split
  into train/test with a fixed seed; ``digit_images(size)`` upscales them to 16x16 or 32x32 for
  the GAN.
- ``load_mnist(folder)`` / ``load_cifar10(folder)``: the standard distribution files (MNIST idx
  files, optionally gzipped; CIFAR-10 "python version" pickle batches) from a folder the user
  points at. Nothing is downloaded.
- ``char_corpus()``: text from a fixed list of the Python standard library's own source files,
  with a ``CharVocab``.
- ``write_png`` / ``image_grid``: an 8-bit grayscale or RGB PNG written with zlib + struct.

Images come back as float32 tensors ``[N, C, H, W]`` scaled to [-1, 1], labels as int64 ``[N]``.
"""
from __future__ import annotations

import gzip
import os
import pickle
import struct
import sysconfig
import zlib
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch


@dataclass
class ImageSplit:
    """Train and test images ``[N, C, H, W]`` float32 in [-1, 1] with int64 labels ``[N]``."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])


def _scale_to_unit_range(images: np.ndarray, max_value: float) -> torch.Tensor:
    """uint8-like values in [0, max_value] -> float32 in [-1, 1]."""
    return torch.from_numpy(images.astype(np.float32) * (2.0 / max_value) - 1.0)


# --- scikit-learn digits ----------------------------------------------------------------------

def _load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # scikit-learn is the optional "data" extra
        raise ImportError("the digits dataset needs scikit-learn: "
                          "pip install 'gpudnn[data]' (or pip install scikit-learn)") from exc
    bunch = load_digits()
    return bunch.images.astype(np.float32), bunch.target.astype(np.int64)  # values 0..16


def digits(test_fraction: float = 0.25, seed: int = 0) -> ImageSplit:
    """The 8x8 digits as ``[N, 1, 8, 8]`` in [-1, 1]; a seeded shuffle picks the test set."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    images, labels = _load_digits_arrays()
    order = np.random.default_rng(seed).permutation(len(images))
    n_test = int(round(len(images) * test_fraction))
    test, train = order[:n_test], order[n_test:]
    x = _scale_to_unit_range(images, 16.0).unsqueeze(1)
    y = torch.from_numpy(labels)
    return ImageSplit(x[train], y[train], x[test], y[test], num_classes=10)


def digit_images(size: int = 16) -> torch.Tensor:
    """All 1797 digits upscaled (bilinear) to ``[N, 1, size, size]``, values in [-1, 1]."""
    if size not in (8, 16, 32):
        raise ValueError(f"size must be 8, 16 or 32, got {size}")
    images, _ = _load_digits_arrays()
    x = _scale_to_unit_range(images, 16.0).unsqueeze(1)
    if size != 8:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear",
                                            align_corners=False)
    return x.clamp_(-1.0, 1.0).contiguous()


# --- MNIST (idx files) ------------------------------------------------------------------------

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4",
               0x0E: ">f8"}


def read_idx(path: str) -> np.ndarray:
    """One idx file (``.gz`` or not): magic ``0 0 type ndim``, big-endian uint32 dims, data."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an idx file (bad magic number {raw[:4]!r})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: idx header truncated")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(f"{path}: idx data has {len(raw) - header} bytes, dims {dims} need "
                         f"{expected}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


def _find_file(folder: str, stems: Sequence[str]) -> str:
    for stem in stems:
        for name in (stem, stem + ".gz"):
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                return path
    raise FileNotFoundError(f"{folder}: none of {', '.join(stems)} (optionally .gz) found")


def _mnist_stems(prefix: str, kind: str) -> list[str]:
    # the files are distributed as "train-images-idx3-ubyte"; some mirrors rename the last dash
    idx = "idx3" if kind == "images" else "idx1"
    return [f"{prefix}-{kind}-{idx}-ubyte", f"{prefix}-{kind}.{idx}-ubyte"]


def is_mnist_folder(folder: str) -> bool:
    try:
        _find_file(folder, _mnist_stems("train", "images"))
        return True
    except FileNotFoundError:
        return False


def load_mnist(folder: str) -> ImageSplit:
    """MNIST (or Fashion-MNIST: same files) from ``folder``: ``[N, 1, 28, 28]`` in [-1, 1]."""
    arrays = {}
    for prefix in ("train", "t10k"):
        for kind in ("images", "labels"):
            arrays[prefix, kind] = read_idx(_find_file(folder, _mnist_stems(prefix, kind)))
    for prefix in ("train", "t10k"):
        images, labels = arrays[prefix, "images"], arrays[prefix, "labels"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(f"{folder}: {prefix} images {images.shape} and labels "
                             f"{labels.shape} do not match")
    x_train = _scale_to_unit_range(arrays["train", "images"], 255.0).unsqueeze(1)
    x_test = _scale_to_unit_range(arrays["t10k", "images"], 255.0).unsqueeze(1)
    y_train = torch.from_numpy(arrays["train", "labels"].astype(np.int64))
    y_test = torch.from_numpy(arrays["t10k", "labels"].astype(np.int64))
    return ImageSplit(x_train, y_train, x_test, y_test, num_classes=10)


# --- CIFAR-10 (python pickle batches) ---------------------------------------------------------

def _cifar_dir(folder: str) -> str:
    for candidate in (folder, os.path.join(folder, "cifar-10-batches-py")):
        if os.path.isfile(os.path.join(candidate, "test_batch")):
            return candidate
    raise FileNotFoundError(f"{folder}: no CIFAR-10 'test_batch' file (the python version, "
                            "cifar-10-batches-py/) found")


def is_cifar10_folder(folder: str) -> bool:
    try:
        _cifar_dir(folder)
        return True
    except FileNotFoundError:
        return False


def _read_cifar_batch(path: str) -> tuple[np.ndarray, np.ndarray]:
    # The official distribution format is a pickle: only load folders you trust.
    with open(path, "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise ValueError(f"{path}: expected data [N, 3072] and N labels, got {data.shape} and "
                         f"{labels.shape}")
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar10(folder: str) -> ImageSplit:
    """CIFAR-10 from ``folder`` (or ``folder/cifar-10-batches-py``): ``[N, 3, 32, 32]``."""
    root = _cifar_dir(folder)
    train_files = sorted(name for name in os.listdir(root) if name.startswith("data_batch_"))
    if not train_files:
        raise FileNotFoundError(f"{root}: no data_batch_* files")
    parts = [_read_cifar_batch(os.path.join(root, name)) for name in train_files]
    x_test, y_test = _read_cifar_batch(os.path.join(root, "test_batch"))
    x_train = np.concatenate([p[0] for p in parts])
    y_train = np.concatenate([p[1] for p in parts])
    return ImageSplit(_scale_to_unit_range(x_train, 255.0), torch.from_numpy(y_train),
                      _scale_to_unit_range(x_test, 255.0), torch.from_numpy(y_test),
                      num_classes=10)


def load_image_folder(folder: str) -> ImageSplit:
    """MNIST or CIFAR-10, whichever ``folder`` holds."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"data folder {folder!r} does not exist")
    if is_mnist_folder(folder):
        return load_mnist(folder)
    if is_cifar10_folder(folder):
        return load_cifar10(folder)
    raise FileNotFoundError(f"{folder}: neither MNIST idx files (train-images-idx3-ubyte[.gz], "
                            "...) nor CIFAR-10 batches (cifar-10-batches-py/) found")


# --- character corpus from the standard library -----------------------------------------------

# Plain, stable modules present in every CPython >= 3.10 (missing ones are skipped).
STDLIB_FILES = ("textwrap.py", "bisect.py", "heapq.py", "colorsys.py", "fnmatch.py", "glob.py",
                "shlex.py", "queue.py", "sched.py", "contextlib.py", "copy.py", "abc.py",
                "functools.py", "fractions.py", "random.py", "statistics.py", "dataclasses.py")


class CharVocab:
    """Characters <-> integer ids; unknown characters are refused with a clear error."""

    def __init__(self, chars: str):
        self.chars = "".join(sorted(set(chars)))
        self._index = {c: i for i, c in enumerate(self.chars)}

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> torch.Tensor:
        unknown = sorted({c for c in text if c not in self._index})
        if unknown:
            raise ValueError(f"characters not in the vocabulary: {''.join(unknown)!r}")
        return torch.tensor([self._index[c] for c in text], dtype=torch.int64)

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)


def char_corpus(max_chars: int | None = 200_000,
                files: Sequence[str] = STDLIB_FILES) -> tuple[str, CharVocab]:
    """Concatenated source of ``files`` from this interpreter's standard library (first
    ``max_chars`` characters) and its vocabulary."""
    stdlib = sysconfig.get_paths()["stdlib"]
    pieces = []
    total = 0
    for name in files:
        path = os.path.join(stdlib, name)
        if not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        pieces.append(text)
        total += len(text)
        if max_chars is not None and total >= max_chars:
            break
    text = "\n".join(pieces)
    if max_chars is not None:
        text = text[:max_chars]
    if len(text) < 1000:
        raise FileNotFoundError(f"the standard library at {stdlib} has too little of "
                                f"{list(files)} to train on ({len(text)} characters)")
    return text, CharVocab(text)


# --- batching ---------------------------------------------------------------------------------

def batch_indices(n: int, batch_size: int, *, shuffle: bool,
                  generator: torch.Generator | None = None) -> Iterator[torch.Tensor]:
    """Index tensors of consecutive batches covering ``range(n)`` (the last may be short)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


# --- PNG --------------------------------------------------------------------------------------

def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (struct.pack(">I", len(payload)) + kind + payload
            + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF))


def write_png(path: str, image: np.ndarray) -> None:
    """Write ``image`` (uint8 ``[H, W]`` gray or ``[H, W, 3]`` RGB) as a PNG, atomically."""
    image = np.ascontiguousarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (
            image.ndim == 3 and image.shape[2] != 3):
        raise ValueError(f"write_png needs uint8 [H, W] or [H, W, 3], got {image.dtype} "
                         f"{image.shape}")
    height, width = image.shape[:2]
    color_type = 0 if image.ndim == 2 else 2
    rows = image.reshape(height, -1)
    # each scanline starts with filter type 0 (None)
    raw = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1).tobytes()
    png = (b"\x89PNG\r\n\x1a\n"
           + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0))
           + _png_chunk(b"IDAT", zlib.compress(raw, 9))
           + _png_chunk(b"IEND", b""))
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(png)
    os.replace(tmp, path)


def image_grid(images: torch.Tensor, columns: int | None = None, pad: int = 1) -> np.ndarray:
    """Images ``[N, C, H, W]`` in [-1, 1] (C = 1 or 3) -> one uint8 grid image, ``pad`` pixels
    of black between tiles."""
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"image_grid needs [N, 1 or 3, H, W], got {tuple(images.shape)}")
    n, c, h, w = images.shape
    columns = columns or max(1, int(np.ceil(np.sqrt(n))))
    rows = max(1, -(-n // columns))
    pixels = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    pixels = pixels.permute(0, 2, 3, 1).numpy()  # [N, H, W, C]
    grid = np.zeros((rows * (h + pad) + pad, columns * (w + pad) + pad, c), np.uint8)
    for i in range(n):
        r, col = divmod(i, columns)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        grid[top:top + h, left:left + w] = pixels[i]
    return grid[:, :, 0] if c == 1 else grid


def read_png_size(path: str) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR (after checking the signature)."""
    with open(path, "rb") as f:
        head = f.read(24)
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        raise ValueError(f"{path} is not a PNG file")
    return struct.unpack(">II", head[16:24])

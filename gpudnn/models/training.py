"""Training tasks (CNN on images, char-LSTM on text, DCGAN on digits) and the loop that runs them:
progress bar, a metrics line per epoch, atomic checkpoints and ``resume``.

A task owns one ``nn.Module`` (the GAN's generator and discriminator live in one container) and
its optimizers. ``flavor`` is ``"gpudnn"`` (the torch model passed through ``to_gpudnn``, gpudnn
losses and optimizers) or ``"torch"`` (the pure torch twin, for comparison).

Runs are reproducible: epoch ``e`` reseeds torch's generator (dropout masks, GAN noise) and the
shuffling generator from ``(seed, e)``, so an interrupted run resumed from its checkpoint follows
the same trajectory as an uninterrupted one.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import sys
import time
from typing import Any, Callable, Iterator, TextIO

import torch
from torch import nn

from .. import data as gdata
from . import cnn as cnn_model
from . import gan as gan_model
from . import lstm as lstm_model
from . import nn_namespace, optim_namespace, to_gpudnn

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = "gpudnn-checkpoint"
CHECKPOINT_VERSION = 2  # 2: with a digest; version 1 files (no digest) still load
FLAVORS = ("gpudnn", "torch")


class CheckpointError(Exception):
    """A checkpoint is missing, unreadable or belongs to another model (message says which)."""


def _describe(exc: BaseException, limit: int = 200) -> str:
    """``Type: first line of the message`` (torch's loader errors run over many lines)."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:limit]}" if lines else type(exc).__name__


def single_threaded_blas() -> contextlib.AbstractContextManager:
    """One BLAS thread inside the block (a no-op without threadpoolctl, which scikit-learn
    brings). The reference backend runs many small NumPy GEMMs (one per LSTM time step); a
    multithreaded BLAS next to torch's own thread pool makes the threads spin against each
    other, measured 10-20x slower per training step on a 2-core machine."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


# --- tasks ------------------------------------------------------------------------------------

class Task:
    """One model, its data, optimizers and train/eval steps. Subclasses set ``name``,
    ``DEFAULTS`` (every config key), ``DEMO`` (overrides for ``python -m gpudnn demo``) and
    ``unit`` (what throughput counts)."""

    name = ""
    unit = "samples"
    DEFAULTS: dict[str, Any] = {}
    DEMO: dict[str, Any] = {}

    def __init__(self, config: dict[str, Any], device: str | torch.device = "cpu",
                 flavor: str = "gpudnn", with_data: bool = True):
        """``with_data=False`` (sampling from a checkpoint's config) skips loading the data."""
        if flavor not in FLAVORS:
            raise ValueError(f"flavor must be one of {FLAVORS}, got {flavor!r}")
        self.config = {**self.DEFAULTS, **config}
        self.device = torch.device(device)
        self.flavor = flavor
        if with_data:
            self.prepare_data()  # may add data-derived keys (image shape, vocab) to config
        torch.manual_seed(self.config["seed"])  # the initial weights
        torch_model = self.build_torch(self.config)
        self.model = self.convert(torch_model).to(self.device)
        self.optimizers = self.make_optimizers()

    # subclass hooks
    @classmethod
    def build_torch(cls, config: dict[str, Any]) -> nn.Module:
        raise NotImplementedError

    def prepare_data(self) -> None:
        raise NotImplementedError

    def make_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        raise NotImplementedError

    def batches(self, generator: torch.Generator) -> Iterator[Any]:
        raise NotImplementedError

    def num_batches(self) -> int:
        raise NotImplementedError

    def train_step(self, batch: Any) -> tuple[dict[str, torch.Tensor], int]:
        """One optimisation step: (detached 0-d losses, number of ``unit``s processed)."""
        raise NotImplementedError

    def evaluate(self) -> dict[str, float]:
        return {}

    def end_of_epoch(self, epoch: int, out_dir: str) -> dict[str, Any]:
        """Artifacts of the epoch (file paths, sample text) to record next to the metrics."""
        return {}

    # shared helpers
    def convert(self, torch_model: nn.Module) -> nn.Module:
        return to_gpudnn(torch_model, copy=False) if self.flavor == "gpudnn" else torch_model

    @property
    def layers(self):
        return nn_namespace(self.flavor == "gpudnn")

    @property
    def optim(self):
        return optim_namespace(self.flavor == "gpudnn")

    def state(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(),
                "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()}}

    def load_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        if set(state["optimizers"]) != set(self.optimizers):
            raise ValueError(f"optimizers {sorted(state['optimizers'])} != "
                             f"{sorted(self.optimizers)}")
        for key, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][key])


class CNNTask(Task):
    """Image classification: digits by default, MNIST/CIFAR-10 from the folder ``config["data"]``
    (kept in the checkpoint, so ``--resume`` finds the same data)."""

    name = "cnn"
    unit = "img"
    DEFAULTS = {"epochs": 10, "batch_size": 32, "lr": 2e-3, "seed": 0, "separable": False,
                "widths": [32, 64], "hidden": 128, "dropout": 0.25, "in_channels": 1,
                "image_size": 8, "num_classes": 10, "data": None}
    DEMO = {"epochs": 6, "widths": [16, 32], "hidden": 64}

    @classmethod
    def build_torch(cls, config):
        widths = config["widths"]
        if config["separable"] and len(widths) < 2:
            widths = [widths[0], widths[0] * 2]
        return cnn_model.build_torch(config["in_channels"], config["num_classes"],
                                     config["image_size"], widths, config["hidden"],
                                     config["dropout"], config["separable"])

    def prepare_data(self):
        folder = self.config["data"]
        split = gdata.load_image_folder(folder) if folder else gdata.digits()
        channels, height, width = split.image_shape
        if height != width:
            raise ValueError(f"square images expected, got {height}x{width}")
        self.config.update(in_channels=channels, image_size=height,
                           num_classes=split.num_classes)
        self.split = split

    def make_optimizers(self):
        return {"model": self.optim.Adam(self.model.parameters(), lr=self.config["lr"])}

    def num_batches(self):
        return -(-len(self.split.x_train) // self.config["batch_size"])

    def batches(self, generator):
        for idx in gdata.batch_indices(len(self.split.x_train), self.config["batch_size"],
                                       shuffle=True, generator=generator):
            yield self.split.x_train[idx], self.split.y_train[idx]

    def train_step(self, batch):
        x, y = (t.to(self.device) for t in batch)
        logits = self.model(x)
        loss = self.criterion(logits, y)
        opt = self.optimizers["model"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        correct = (logits.detach().argmax(1) == y).sum()
        return {"loss": loss.detach(), "acc": correct.float() / len(y)}, len(y)

    @property
    def criterion(self):
        return self.layers.CrossEntropyLoss()

    @torch.no_grad()
    def evaluate(self):
        self.model.eval()
        loss_sum = torch.zeros((), dtype=torch.float64)
        correct = 0
        x_test, y_test = self.split.x_test, self.split.y_test
        criterion = self.layers.CrossEntropyLoss(reduction="sum")
        for start in range(0, len(x_test), 500):
            x = x_test[start:start + 500].to(self.device)
            y = y_test[start:start + 500].to(self.device)
            logits = self.model(x)
            loss_sum += criterion(logits, y).double().cpu()
            correct += int((logits.argmax(1) == y).sum())
        self.model.train()
        n = max(1, len(x_test))
        return {"test_loss": float(loss_sum) / n, "test_acc": correct / n}


class LSTMTask(Task):
    """Character-level language model on the standard library's source (90% train, 10% val)."""

    name = "lstm"
    unit = "char"
    DEFAULTS = {"epochs": 20, "batch_size": 32, "lr": 5e-3, "seed": 0, "seq_len": 64,
                "embed_dim": 32, "hidden": 128, "num_layers": 2, "dropout": 0.0,
                "max_chars": 200_000, "vocab": None, "prompt": "def ", "temperature": 0.8,
                "sample_length": 200}
    DEMO = {"epochs": 5, "batch_size": 16, "lr": 1e-2, "sample_length": 240}

    @classmethod
    def build_torch(cls, config):
        return lstm_model.build_torch(len(config["vocab"]), config["embed_dim"],
                                      config["hidden"], config["num_layers"], config["dropout"])

    @property
    def vocab(self) -> gdata.CharVocab:
        if getattr(self, "_vocab", None) is None:
            self._vocab = gdata.CharVocab(self.config["vocab"])
        return self._vocab

    def prepare_data(self):
        text, vocab = gdata.char_corpus(self.config["max_chars"])
        if self.config["vocab"] is None:
            self.config["vocab"] = vocab.chars
        # characters a resumed run's vocabulary lacks (another Python's stdlib) are dropped
        if not set(text) <= set(self.vocab.chars):
            text = "".join(c for c in text if c in self.vocab.chars)
        ids = self.vocab.encode(text)
        cut = int(len(ids) * 0.9)
        self.train_ids, self.val_ids = ids[:cut], ids[cut:]

    def make_optimizers(self):
        return {"model": self.optim.Adam(self.model.parameters(), lr=self.config["lr"])}

    def _sequences(self, ids: torch.Tensor, offset: int) -> torch.Tensor:
        """``[n, seq_len + 1]`` windows of ``ids`` starting at ``offset`` (consecutive windows
        overlap by one id: the last target of one is the first input of the next)."""
        seq = self.config["seq_len"]
        n = (len(ids) - 1 - offset) // seq
        starts = offset + torch.arange(n) * seq
        return ids[starts.unsqueeze(1) + torch.arange(seq + 1)]

    def num_batches(self):
        n = (len(self.train_ids) - 1 - (self.config["seq_len"] - 1)) // self.config["seq_len"]
        return -(-n // self.config["batch_size"])

    def batches(self, generator):
        offset = int(torch.randint(self.config["seq_len"], (1,), generator=generator))
        windows = self._sequences(self.train_ids, offset)
        count = self.num_batches() * self.config["batch_size"]
        windows = windows[:count]  # the same number of batches whatever the offset
        for idx in gdata.batch_indices(len(windows), self.config["batch_size"], shuffle=True,
                                       generator=generator):
            yield windows[idx]

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean"):
        return self.layers.CrossEntropyLoss(reduction=reduction)(
            logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))

    def train_step(self, batch):
        batch = batch.to(self.device)
        logits, _ = self.model(batch[:, :-1])
        loss = self.loss(logits, batch[:, 1:])
        opt = self.optimizers["model"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        opt.step()
        return {"loss": loss.detach()}, batch[:, 1:].numel()

    @torch.no_grad()
    def evaluate(self):
        self.model.eval()
        windows = self._sequences(self.val_ids, 0)[:256]
        total, count = 0.0, 0
        for start in range(0, len(windows), 64):
            chunk = windows[start:start + 64].to(self.device)
            logits, _ = self.model(chunk[:, :-1])
            total += float(self.loss(logits, chunk[:, 1:], reduction="sum"))
            count += chunk[:, 1:].numel()
        self.model.train()
        return {"val_loss": total / max(1, count)}

    def sample_text(self, prompt: str, length: int, temperature: float, seed: int) -> str:
        generator = torch.Generator().manual_seed(seed)
        ids = self.model.sample(self.vocab.encode(prompt), length, temperature, generator)
        return prompt + self.vocab.decode(ids)

    def end_of_epoch(self, epoch, out_dir):
        text = self.sample_text(self.config["prompt"], self.config["sample_length"],
                                self.config["temperature"], self.config["seed"] + epoch)
        path = os.path.join(out_dir, f"sample_epoch{epoch:03d}.txt")
        _write_text_atomic(path, text)
        return {"sample": text, "sample_path": path}


class GANTask(Task):
    """DCGAN on the digits upscaled to ``image_size`` (16 or 32), non-saturating BCE losses."""

    name = "gan"
    unit = "img"
    DEFAULTS = {"epochs": 10, "batch_size": 64, "lr": 1e-3, "seed": 0, "image_size": 16,
                "latent_dim": 32, "width": 32, "grid_count": 64}
    DEMO = {"epochs": 8, "width": 16}

    @classmethod
    def build_torch(cls, config):
        return gan_model.build_torch(config["latent_dim"], config["image_size"], 1,
                                     config["width"])

    def prepare_data(self):
        self.images = gdata.digit_images(self.config["image_size"])

    def make_optimizers(self):
        # DCGAN's Adam betas; both players share the learning rate
        adam = self.optim.Adam
        lr, betas = self.config["lr"], (0.5, 0.999)
        return {"generator": adam(self.model.generator.parameters(), lr=lr, betas=betas),
                "discriminator": adam(self.model.discriminator.parameters(), lr=lr,
                                      betas=betas)}

    def num_batches(self):
        return len(self.images) // self.config["batch_size"]

    def batches(self, generator):
        # full batches only: BatchNorm statistics of a 1-image tail batch are meaningless
        for idx in gdata.batch_indices(len(self.images), self.config["batch_size"],
                                       shuffle=True, generator=generator):
            if len(idx) == self.config["batch_size"]:
                yield self.images[idx]

    def train_step(self, real):
        real = real.to(self.device)
        batch = len(real)
        gen, disc = self.model.generator, self.model.discriminator
        bce = self.layers.BCEWithLogitsLoss()
        ones = torch.ones(batch, 1, device=self.device, dtype=real.dtype)
        zeros = torch.zeros(batch, 1, device=self.device, dtype=real.dtype)

        fake = gen(self.model.noise(batch, device=self.device))
        d_loss = bce(disc(real), ones) + bce(disc(fake.detach()), zeros)
        opt_d = self.optimizers["discriminator"]
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()

        g_loss = bce(disc(fake), ones)  # non-saturating generator loss
        opt_g = self.optimizers["generator"]
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        return {"d_loss": d_loss.detach(), "g_loss": g_loss.detach()}, batch

    @torch.no_grad()
    def generate(self, count: int, seed: int) -> torch.Tensor:
        """``count`` images from fixed noise (eval mode: BatchNorm running statistics)."""
        self.model.eval()
        try:
            z = self.model.noise(count, torch.Generator().manual_seed(seed), self.device)
            return self.model(z).cpu()
        finally:
            self.model.train()

    def end_of_epoch(self, epoch, out_dir):
        path = os.path.join(out_dir, f"grid_epoch{epoch:03d}.png")
        images = self.generate(self.config["grid_count"], self.config["seed"])
        gdata.write_png(path, gdata.image_grid(images))
        return {"grid": path}


TASKS: dict[str, type[Task]] = {t.name: t for t in (CNNTask, LSTMTask, GANTask)}


# --- checkpoints ------------------------------------------------------------------------------
#
# A file is written to ``NAME.tmp<pid>`` in its own folder, flushed and fsynced, renamed over
# ``NAME`` (atomic on POSIX and Windows) and the folder fsynced, so a run killed at any moment
# leaves the previous complete file or the new one. A killed writer's ``.tmp<pid>`` file stays
# behind; it is never read (the loader opens only ``checkpoint.pt``) and the next ``fit`` in that
# folder deletes it. A checkpoint carries a SHA-256 digest of its contents: a torn or bit-flipped
# file is a ``CheckpointError``, never a checkpoint with wrong weights
# (tests/test_checkpoint_kill.py kills the trainer mid-write many times).

# what fit writes into its folder, as ``NAME.tmp<pid>`` first
_TEMP_FILE = re.compile(r"^(checkpoint\.pt|metrics\.jsonl|sample_epoch\d+\.txt|grid_epoch\d+\.png)"
                        r"\.tmp(\d+)$")
# tests only: pause inside every step of a checkpoint write and report the steps on stderr, so a
# SIGKILL sent at a random moment often lands inside a write (see _TestPause)
TEST_PAUSE_ENV = "GPUDNN_CHECKPOINT_TEST_PAUSE"


def _fsync_dir(folder: str) -> None:
    """Make a rename in ``folder`` durable. Best effort: Windows cannot open a folder, and some
    file systems refuse to fsync one (the rename itself has happened either way)."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    with contextlib.suppress(OSError):
        fd = os.open(folder or ".", os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_atomic(path: str, write: Callable[[Any], None], mode: str = "wb",
                  step: Callable[[str], None] = lambda name: None) -> None:
    """``write(file)`` into ``path.tmp<pid>``, fsync, rename over ``path``, fsync the folder.
    ``step`` is called after each stage (the test hook; a no-op otherwise)."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            write(f)
            step("written")
            f.flush()
            os.fsync(f.fileno())
        step("synced")
        os.replace(tmp, path)
        step("replaced")
        _fsync_dir(os.path.dirname(path))
    finally:
        if os.path.exists(tmp):  # an exception before the rename: leave no temp file behind
            os.remove(tmp)


def _write_text_atomic(path: str, text: str) -> None:
    _write_atomic(path, lambda f: f.write(text), mode="w")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this process has not started writing: a file with its pid is stale
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists (another user's); anything else: keep the file
        return True
    return True


def remove_stale_temp_files(out_dir: str) -> list[str]:
    """Delete the temporary files a killed writer left in ``out_dir`` (those of a process that
    is still running, another trainer writing there, are left alone); return their names."""
    removed = []
    for name in sorted(os.listdir(out_dir)):
        match = _TEMP_FILE.match(name)
        if match and not _pid_alive(int(match.group(2))):
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(out_dir, name))
                removed.append(name)
    return removed


def _digest(obj: Any) -> str:
    """SHA-256 of a checkpoint payload: every tensor's dtype, shape and bytes, every other
    value's type and repr, in order (dicts keep their insertion order through torch.save)."""
    h = hashlib.sha256()

    def walk(x: Any) -> None:
        if isinstance(x, torch.Tensor):
            t = x.detach().cpu().contiguous().reshape(-1)
            h.update(f"T{t.dtype}{tuple(x.shape)}:".encode())
            h.update(t.view(torch.uint8).numpy().tobytes())
        elif isinstance(x, dict):
            h.update(f"D{len(x)}:".encode())
            for key, value in x.items():
                walk(key)
                walk(value)
        elif isinstance(x, (list, tuple)):
            h.update(f"{type(x).__name__}{len(x)}:".encode())
            for value in x:
                walk(value)
        else:
            h.update(f"{type(x).__name__}:{x!r};".encode())

    walk(obj)
    return h.hexdigest()


def seal_checkpoint(payload: dict[str, Any]) -> dict[str, Any]:
    """``payload`` with its ``digest`` (re)computed: what ``torch.save`` writes."""
    body = {k: v for k, v in payload.items() if k != "digest"}
    return {**body, "digest": _digest(body)}


class _TestPause:
    """The ``GPUDNN_CHECKPOINT_TEST_PAUSE=SECONDS`` hook (tests/test_checkpoint_kill.py). After
    each step of the write (begin, written, synced, replaced, end) it prints ``gpudnn-test:
    checkpoint epoch E STEP`` on stderr and sleeps SECONDS; it hands the file to torch.save
    through a wrapper that passes each chunk on to the OS at once (a kill leaves the temporary
    file torn at that byte) and sleeps SECONDS / 50 after it. The bytes written are the same."""

    def __init__(self, seconds: float, epoch: int):
        self.seconds, self.epoch = seconds, epoch

    def step(self, name: str) -> None:
        print(f"gpudnn-test: checkpoint epoch {self.epoch} {name}", file=sys.stderr, flush=True)
        time.sleep(self.seconds)

    def wrap(self, f):
        pause = self.seconds / 50

        class Chunked:
            def write(self, data):
                n = f.write(data)
                f.flush()
                time.sleep(pause)
                return n

            def flush(self):
                f.flush()

        return Chunked()


def save_checkpoint(path: str, task: Task, epoch: int, history: list[dict]) -> None:
    """Write the checkpoint atomically (see above): a run killed at any moment leaves the
    previous checkpoint or the new one, never a torn ``path``."""
    payload = seal_checkpoint({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
                               "task": task.name, "config": task.config, "epoch": epoch,
                               "history": history, **task.state()})
    pause = os.environ.get(TEST_PAUSE_ENV)
    if not pause:
        _write_atomic(path, lambda f: torch.save(payload, f))
        return
    hook = _TestPause(float(pause), epoch)
    hook.step("begin")
    _write_atomic(path, lambda f: torch.save(payload, hook.wrap(f)), step=hook.step)
    hook.step("end")


def load_checkpoint(path: str, task_name: str | None = None) -> dict[str, Any]:
    """Read and validate a checkpoint; ``CheckpointError`` with a clear message otherwise."""
    if not os.path.isfile(path):
        raise CheckpointError(f"no checkpoint at {path} (train first, or point --out at the "
                              "folder of an earlier run)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated/garbage files
        raise CheckpointError(f"checkpoint {path} is corrupt or unreadable "
                              f"({_describe(exc)}); "
                              "delete it to start over") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a gpudnn checkpoint")
    version = payload.get("version")
    if version not in (1, CHECKPOINT_VERSION):
        raise CheckpointError(f"{path} has checkpoint version {version!r}; "
                              f"this gpudnn reads versions 1 to {CHECKPOINT_VERSION}")
    missing = [k for k in ("task", "config", "epoch", "history", "model", "optimizers")
               + (("digest",) if version >= 2 else ()) if k not in payload]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {missing}; it is corrupt")
    if version >= 2 and seal_checkpoint(payload)["digest"] != payload["digest"]:
        raise CheckpointError(f"checkpoint {path} is corrupt (its contents do not match the "
                              "SHA-256 digest written with them); delete it to start over")
    if task_name is not None and payload["task"] != task_name:
        raise CheckpointError(f"checkpoint {path} is for the {payload['task']!r} model, "
                              f"not {task_name!r}")
    return payload


def restore(task: Task, payload: dict[str, Any], path: str) -> None:
    try:
        task.load_state(payload)
    except (RuntimeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"checkpoint {path} does not fit this model "
                              f"({_describe(exc, 300)})") from exc


# --- progress and metrics ---------------------------------------------------------------------

class ProgressBar:
    """A one-line progress bar on ``stream`` (stderr): batches done, running mean losses and
    throughput. On a terminal it redraws in place (at most 10 times a second); otherwise it
    prints a line at most every ``log_every`` seconds, and once at the end."""

    def __init__(self, total: int, label: str, unit: str, stream: TextIO | None = None,
                 enabled: bool = True, log_every: float = 10.0):
        self.total, self.label, self.unit = total, label, unit
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = 0.1 if self.tty else log_every
        self.done = 0
        self.items = 0
        self.sums: dict[str, torch.Tensor] = {}
        self.start = time.perf_counter()
        self.last_draw = self.start

    def update(self, losses: dict[str, torch.Tensor], items: int) -> None:
        self.done += 1
        self.items += items
        for key, value in losses.items():
            # summed on the device: no host sync per step
            self.sums[key] = self.sums[key] + value if key in self.sums else value.clone()
        now = time.perf_counter()
        if self.enabled and now - self.last_draw >= self.interval:
            self.last_draw = now
            self._draw(final=False)

    def means(self) -> dict[str, float]:
        return {k: float(v) / max(1, self.done) for k, v in self.sums.items()}

    def rate(self) -> float:
        return self.items / max(1e-9, time.perf_counter() - self.start)

    def _draw(self, final: bool) -> None:
        width = 24
        filled = int(width * self.done / max(1, self.total))
        bar = "#" * filled + "-" * (width - filled)
        losses = " ".join(f"{k} {v:.4f}" for k, v in self.means().items())
        line = (f"{self.label} [{bar}] {self.done}/{self.total} {losses} "
                f"{_human(self.rate())} {self.unit}/s")
        if self.tty:
            self.stream.write("\r" + line + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self._draw(final=True)


def _human(x: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= scale:
            return f"{x / scale:.1f}{unit}"
    return f"{x:.0f}"


def format_metrics(metrics: dict[str, Any], epochs: int) -> str:
    """``epoch 3/10 loss 0.1234 test_acc 0.9712 ... 1.2k img/s 4.1s`` (text samples left out)."""
    parts = [f"epoch {metrics['epoch']}/{epochs}"]
    for key, value in metrics.items():
        if key in ("epoch", "sample", "throughput", "unit", "seconds"):
            continue
        if isinstance(value, float):
            parts.append(f"{key} {value:.4f}")
        else:
            parts.append(f"{key} {value}")
    parts.append(f"{_human(metrics['throughput'])} {metrics['unit']}/s")
    parts.append(f"{metrics['seconds']:.1f}s")
    return " ".join(parts)


def _epoch_seed(seed: int, epoch: int) -> int:
    return (int(seed) * 1_000_003 + epoch) % (2 ** 63)


def fit(task: Task, epochs: int, out_dir: str, resume: bool = False,
        log: Callable[[str], None] = print, progress: bool = True,
        progress_stream: TextIO | None = None) -> list[dict[str, Any]]:
    """Train ``task`` up to ``epochs`` epochs, writing ``out_dir/checkpoint.pt`` after each epoch
    and ``out_dir/metrics.jsonl``; with ``resume``, continue from the checkpoint there (the
    task must already hold the checkpoint's config). Returns the metrics of every epoch."""
    os.makedirs(out_dir, exist_ok=True)
    remove_stale_temp_files(out_dir)
    path = os.path.join(out_dir, CHECKPOINT_NAME)
    metrics_path = os.path.join(out_dir, "metrics.jsonl")
    history: list[dict[str, Any]] = []
    start = 0
    if resume:
        payload = load_checkpoint(path, task.name)
        restore(task, payload, path)
        start, history = int(payload["epoch"]), list(payload["history"])
        # a run killed between the checkpoint's rename and metrics.jsonl's left it an epoch short
        _write_text_atomic(metrics_path, "".join(json.dumps(m) + "\n" for m in history))
        log(f"resuming {task.name} from {path} after epoch {start}")
    if start >= epochs:
        log(f"{task.name}: already trained for {start} epochs (asked for {epochs}); nothing to do")
        return history
    task.model.train()
    for epoch in range(start + 1, epochs + 1):
        seed = _epoch_seed(task.config["seed"], epoch)
        torch.manual_seed(seed)
        shuffle = torch.Generator().manual_seed(seed)
        bar = ProgressBar(task.num_batches(), f"{task.name} epoch {epoch}/{epochs}", task.unit,
                          stream=progress_stream, enabled=progress)
        for batch in task.batches(shuffle):
            losses, items = task.train_step(batch)
            bar.update(losses, items)
        bar.close()
        train = bar.means()
        if not all(math.isfinite(v) for v in train.values()):
            log(f"warning: non-finite training loss in epoch {epoch}: {train}")
        metrics = {"epoch": epoch, **train, **task.evaluate(), **task.end_of_epoch(epoch, out_dir),
                   "throughput": bar.rate(), "unit": task.unit,
                   "seconds": time.perf_counter() - bar.start}
        history.append(metrics)
        save_checkpoint(path, task, epoch, history)
        _write_text_atomic(metrics_path, "".join(json.dumps(m) + "\n" for m in history))
        log(format_metrics(metrics, epochs))
    return history

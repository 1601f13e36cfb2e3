"""Quantizing and pruning trained models (``python -m gpudnn quantize|prune``): what each one
measures before and after, and the files they write.

What is measured:

- ``cnn``: test accuracy (``CNNTask.evaluate``);
- ``gan``: the discriminator's ROC AUC at telling real digits from the checkpoint's generator's
  images: the fraction of (real, generated) pairs in which the real image gets the higher logit,
  over ``EVAL_IMAGES`` of each, drawn once before anything changes, so that before and after see
  the same images. A threshold-free score: in eval mode (running BatchNorm statistics, which mix
  real and generated batches) a DCGAN discriminator's logits are shifted as a whole, and a fixed
  threshold at 0 classifies every image alike. Only the discriminator is quantized or pruned (the
  generator's transposed convolutions are neither Linear nor Conv2d).

Size on disk: the bytes of ``torch.save(state_dict)`` of what was compressed (the whole CNN, the
GAN's discriminator), and the same bytes gzip-compressed (level 9): pruned weights are stored
dense, so pruning shows in the compressed size only.
"""
from __future__ import annotations

import gzip
import io
import os
from typing import Any, Callable

import torch
from torch import nn

from .. import pruning, quantization
from .training import (CHECKPOINT_NAME, ProgressBar, Task, _epoch_seed, _write_atomic,
                       load_checkpoint, restore, save_checkpoint)

EVAL_IMAGES = 512
QUANTIZED_NAME = "quantized.pt"
PRUNED_NAME = "pruned.pt"
QUANTIZED_FORMAT = "gpudnn-quantized"
SUPPORTED = ("cnn", "gan")


def state_bytes(module: nn.Module) -> tuple[int, int]:
    """(bytes of ``torch.save(module.state_dict())``, the same bytes gzip-compressed)."""
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    raw = buffer.getvalue()
    return len(raw), len(gzip.compress(raw, 9))


def target(task: Task) -> nn.Module:
    """The part of the model that gets quantized / pruned."""
    return task.model.discriminator if task.name == "gan" else task.model


def _set_target(task: Task, module: nn.Module) -> None:
    if task.name == "gan":
        task.model.discriminator = module
    else:
        task.model = module


class Metric:
    """The model's score before and after (higher is better), with its name."""

    def __init__(self, task: Task):
        self.task = task
        if task.name == "gan":
            self.name = "discriminator AUC (real digits vs generated)"
            count = min(EVAL_IMAGES, len(task.images))
            self.real = task.images[:count].to(task.device)
            self.fake = task.generate(count, task.config["seed"]).to(task.device)
        else:
            self.name = "test accuracy"

    @torch.no_grad()
    def __call__(self) -> float:
        if self.task.name != "gan":
            return self.task.evaluate()["test_acc"]
        disc = self.task.model.discriminator
        was_training = disc.training
        disc.eval()
        try:
            real, fake = disc(self.real).reshape(-1, 1), disc(self.fake).reshape(1, -1)
        finally:
            disc.train(was_training)
        return float(((real > fake).double() + 0.5 * (real == fake).double()).mean())


def load_task(path: str, device: torch.device, make_task: Callable) -> tuple[Task, dict]:
    """The task of checkpoint ``path`` (gpudnn flavor) with its weights and optimizers restored."""
    payload = load_checkpoint(path)
    if payload["task"] not in SUPPORTED:
        raise ValueError(f"{path} holds the {payload['task']!r} model; quantize and prune take "
                         f"the {' and '.join(SUPPORTED)} checkpoints")
    task = make_task(payload["task"], payload["config"], device)
    restore(task, payload, path)
    return task, payload


def quantize_task(task: Task, dtype: str, granularity: str) -> None:
    _set_target(task, quantization.quantize(target(task), dtype=dtype, granularity=granularity))


def save_quantized(path: str, task: Task, dtype: str, granularity: str,
                   metrics: dict[str, Any]) -> None:
    payload = {"format": QUANTIZED_FORMAT, "version": 1, "task": task.name,
               "config": task.config, "quantization": {"dtype": dtype,
                                                       "granularity": granularity},
               "model": task.model.state_dict(), "metrics": metrics}
    _write_atomic(path, lambda f: torch.save(payload, f))


def load_quantized(path: str, device: torch.device, make_task: Callable) -> Task:
    """A task whose model is quantized as ``path`` says and holds its weights (round trip of
    ``save_quantized``)."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != QUANTIZED_FORMAT:
        raise ValueError(f"{path} is not a gpudnn quantized model")
    task = make_task(payload["task"], payload["config"], device, with_data=False)
    quantize_task(task, **payload["quantization"])
    task.model.load_state_dict(payload["model"])
    return task


def fine_tune(task: Task, epochs: int, first_epoch: int, progress: bool = False,
              log: Callable[[str], None] = print) -> None:
    """``epochs`` more epochs of the task's own training steps and optimizers (epoch numbers
    continue the checkpoint's, so the data order and seeds are those of a longer run)."""
    task.model.train()
    for epoch in range(first_epoch, first_epoch + epochs):
        seed = _epoch_seed(task.config["seed"], epoch)
        torch.manual_seed(seed)
        shuffle = torch.Generator().manual_seed(seed)
        bar = ProgressBar(task.num_batches(), f"fine-tune epoch {epoch}", task.unit,
                          enabled=progress)
        for batch in task.batches(shuffle):
            bar.update(*task.train_step(batch))
        bar.close()
        log(f"  fine-tune epoch {epoch}: " + " ".join(f"{k} {v:.4f}"
                                                       for k, v in bar.means().items()))


def save_pruned(path: str, task: Task, epoch: int, history: list) -> None:
    """A regular training checkpoint (``--checkpoint`` of ``quantize`` takes it)."""
    save_checkpoint(path, task, epoch, history)


def default_checkpoint(out: str) -> str:
    return os.path.join(out, CHECKPOINT_NAME)


def sparsity_line(module: nn.Module) -> str:
    levels = pruning.sparsity(module)
    zeros = sum(level * _numel(module, name) for name, level in levels.items())
    total = sum(_numel(module, name) for name in levels)
    return f"{zeros / max(total, 1):.1%} of Linear/Conv2d weights zero (" + ", ".join(
        f"{name} {level:.0%}" for name, level in levels.items()) + ")"


def _numel(module: nn.Module, name: str) -> int:
    return dict(module.named_modules())[name].weight.numel()

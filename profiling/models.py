"""The three networks of ``gpudnn.models`` as the profile uses them: their configuration (which
also gives the op shapes in ``profiling.registry``), synthetic batches and one training step.

- CNN on 8x8 digits: ``gpudnn.models.cnn.build_torch`` (Conv-BN-ReLU + 2x2 max pool per width,
  Flatten, Dropout, Linear+ReLU, Linear), batch 32 as its training default.
- char-LSTM: ``gpudnn.models.lstm.build_torch`` (Embedding, 2-layer LSTM, Linear), batch 32,
  64 steps, a 96-character vocabulary.
- DCGAN 32x32 (grayscale digits): ``gpudnn.models.gan.build_torch(image_size=32)``, batch 64.

The gpudnn network is ``gpudnn.models.to_gpudnn(twin)`` (``gpudnn.nn.convert``): the same
parameters in gpudnn layers. When ``gpudnn.models`` cannot be imported the end-to-end part is
recorded as not measured, with the reason; the op shapes here do not need it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

CNN = dict(in_channels=1, num_classes=10, image_size=8, widths=(32, 64), hidden=128,
           dropout=0.25)
CNN_BATCH = 32
LSTM = dict(vocab_size=96, embed_dim=32, hidden_size=128, num_layers=2, dropout=0.0)
LSTM_BATCH, LSTM_STEPS = 32, 64
GAN = dict(latent_dim=32, image_size=32, channels=1, width=32)
GAN_BATCH = 64


@dataclass
class TrainingTask:
    """One model's training step, described for the end-to-end harness."""

    name: str
    build_twin: Callable[[], torch.nn.Module]       # the torch.nn twin (gpudnn.models)
    parts: Callable[[torch.nn.Module], tuple]        # the modules a step calls (and optimizes)
    make_batch: Callable[[torch.device, torch.Generator], tuple]
    step: Callable                                   # (parts, optimizers, batch, loss_fn) -> loss
    loss: str            # the loss function's name in torch.nn.functional / gpudnn.functional
    betas: tuple = (0.9, 0.999)


def _models():
    import gpudnn.models
    return gpudnn.models


def to_gpudnn(model: torch.nn.Module) -> torch.nn.Module:
    return _models().to_gpudnn(model, copy=False)


def _cnn_batch(device, gen):
    size = CNN["image_size"]
    x = torch.randn(CNN_BATCH, CNN["in_channels"], size, size, generator=gen).to(device)
    y = torch.randint(0, CNN["num_classes"], (CNN_BATCH,), generator=gen).to(device)
    return x, y


def _lstm_batch(device, gen):
    tokens = torch.randint(0, LSTM["vocab_size"], (LSTM_BATCH, LSTM_STEPS + 1), generator=gen)
    tokens = tokens.to(device)
    return tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()


def _gan_batch(device, gen):
    size = GAN["image_size"]
    real = torch.rand(GAN_BATCH, GAN["channels"], size, size, generator=gen).to(device) * 2 - 1
    z = torch.randn(GAN_BATCH, GAN["latent_dim"], 1, 1, generator=gen).to(device)
    return real, z


def _classifier_step(parts, optimizers, batch, loss_fn):
    (model,), (opt,) = parts, optimizers
    x, y = batch
    opt.zero_grad(set_to_none=True)
    logits = model(x)
    if isinstance(logits, tuple):      # the LSTM LM returns (logits, state)
        logits = logits[0]
    loss = loss_fn(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
    loss.backward()
    opt.step()
    return loss


def _gan_step(parts, optimizers, batch, loss_fn):
    """One discriminator and one generator step (non-saturating losses), as gpudnn's GANTask."""
    gen, disc = parts
    opt_g, opt_d = optimizers
    real, z = batch
    ones = torch.ones(real.shape[0], 1, device=real.device)
    zeros = torch.zeros(real.shape[0], 1, device=real.device)
    fake = gen(z)
    loss_d = loss_fn(disc(real), ones) + loss_fn(disc(fake.detach()), zeros)
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()
    loss_g = loss_fn(disc(fake), ones)
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()
    return loss_g


def _build_cnn():
    c = CNN
    return _models().cnn.build_torch(c["in_channels"], c["num_classes"], c["image_size"],
                                     c["widths"], c["hidden"], c["dropout"])


def _build_lstm():
    c = LSTM
    return _models().lstm.build_torch(c["vocab_size"], c["embed_dim"], c["hidden_size"],
                                      c["num_layers"], c["dropout"])


def _build_gan():
    c = GAN
    return _models().gan.build_torch(c["latent_dim"], c["image_size"], c["channels"],
                                     c["width"])


TASKS = {
    "cnn": TrainingTask("cnn", _build_cnn, lambda m: (m,), _cnn_batch, _classifier_step,
                        "cross_entropy"),
    "lstm": TrainingTask("lstm", _build_lstm, lambda m: (m,), _lstm_batch, _classifier_step,
                         "cross_entropy"),
    "gan": TrainingTask("gan", _build_gan, lambda m: (m.generator, m.discriminator), _gan_batch,
                        _gan_step, "binary_cross_entropy_with_logits", betas=(0.5, 0.999)),
}

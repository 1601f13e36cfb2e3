"""Embedding: torch.nn.Embedding on gpudnn's lookup (same constructor, initialization,
``from_pretrained`` and state_dict)."""
from __future__ import annotations

import torch

from ..ops.embedding import embedding, refuse_unsupported

__all__ = ["Embedding"]


class Embedding(torch.nn.Embedding):
    """torch.nn.Embedding. ``max_norm`` and ``sparse=True`` are NotImplementedError (at
    construction and in forward); ``convert`` leaves such torch layers as they are."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        refuse_unsupported(self.max_norm, self.sparse)

    @staticmethod
    def _gpudnn_accepts(module: torch.nn.Module) -> bool:
        """Whether ``convert`` may swap this torch.nn.Embedding for the twin."""
        return module.max_norm is None and not module.sparse

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return embedding(input, self.weight, self.padding_idx, self.max_norm, self.norm_type,
                         self.scale_grad_by_freq, self.sparse)

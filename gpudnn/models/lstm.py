"""Character-level language model: Embedding -> multi-layer LSTM -> Linear.

``build_torch`` gives the pure-torch twin; ``gpudnn.models.to_gpudnn`` swaps ``nn.Embedding``,
``nn.LSTM`` and ``nn.Linear`` for gpudnn's.
"""
from __future__ import annotations

import torch
from torch import nn

LSTMState = tuple[torch.Tensor, torch.Tensor]


class CharLM(nn.Module):
    """``forward(tokens [B, T] int64, state=None) -> (logits [B, T, vocab], (h, c))``."""

    def __init__(self, vocab_size: int, embed_dim: int = 32, hidden_size: int = 128,
                 num_layers: int = 2, dropout: float = 0.0):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.lstm = nn.LSTM(embed_dim, hidden_size, num_layers, batch_first=True,
                            dropout=dropout if num_layers > 1 else 0.0)
        self.head = nn.Linear(hidden_size, vocab_size)

    def forward(self, tokens: torch.Tensor,
                state: LSTMState | None = None) -> tuple[torch.Tensor, LSTMState]:
        out, state = self.lstm(self.embedding(tokens), state)
        batch, steps, hidden = out.shape
        # the head sees 2-D rows: [B*T, H] -> [B*T, vocab]
        logits = self.head(out.reshape(batch * steps, hidden))
        return logits.view(batch, steps, -1), state

    @torch.no_grad()
    def sample(self, prompt: torch.Tensor, length: int, temperature: float = 1.0,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Continue ``prompt`` (int64 ids ``[T0]``, T0 >= 1) by ``length`` ids drawn from
        softmax(logits / temperature); ``temperature == 0`` picks the most likely id. Returns
        the ``length`` new ids (on the CPU). Runs in eval mode and restores the mode after."""
        if prompt.dim() != 1 or prompt.numel() == 0:
            raise ValueError(f"prompt must be a non-empty 1-D tensor of ids, got shape "
                             f"{tuple(prompt.shape)}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        was_training = self.training
        self.eval()
        device = self.head.weight.device
        try:
            logits, state = self(prompt.to(device).unsqueeze(0))
            new_ids = []
            for _ in range(length):
                last = logits[0, -1].float().cpu()
                if temperature == 0:
                    next_id = int(last.argmax())
                else:
                    probs = torch.softmax(last / temperature, dim=0)
                    next_id = int(torch.multinomial(probs, 1, generator=generator))
                new_ids.append(next_id)
                logits, state = self(torch.tensor([[next_id]], device=device), state)
        finally:
            self.train(was_training)
        return torch.tensor(new_ids, dtype=torch.int64)


def build_torch(vocab_size: int, embed_dim: int = 32, hidden_size: int = 128,
                num_layers: int = 2, dropout: float = 0.0) -> CharLM:
    return CharLM(vocab_size, embed_dim, hidden_size, num_layers, dropout)

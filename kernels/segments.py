"""Grouping the rows of a gather by the index they read, for the deterministic backward of a
gather (the embedding's): shared by the Triton and CuPy launchers."""
from __future__ import annotations

import torch


def sorted_segments(ids: torch.Tensor, num_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(order [N] int64, bounds [num_rows + 1] int64) of ids [N] (int32 / int64): the positions
    n with ids[n] == v are order[bounds[v]:bounds[v + 1]], in increasing n (a stable sort). Ids
    outside [0, num_rows) fall outside every segment. Torch ops only (traceable: no host sync)."""
    sorted_ids, order = torch.sort(ids, stable=True)
    rows = torch.arange(num_rows + 1, dtype=ids.dtype, device=ids.device)
    return order, torch.searchsorted(sorted_ids, rows)

"""CUDA launch limits, checked on the host before any launch (Triton and CuPy alike).

A grid past them fails on the GPU with an opaque launch error, and the Triton interpreter would
run it anyway: checking here gives one clear error everywhere, tests on CPU included.
"""
from __future__ import annotations

from typing import Sequence

MAX_GRID = (2 ** 31 - 1, 65535, 65535)  # x, y, z


def check_grid(op: str, grid: Sequence[int], what: Sequence[str] | None = None, *,
               allow_empty: bool = True) -> tuple[int, ...]:
    """``grid`` as a tuple, or a ValueError naming the operation and the axis (``what[i]`` says
    what axis i counts) when it is outside CUDA's limits. ``allow_empty=False`` also refuses
    a zero-size axis (a raw CUDA launch cannot have one; Triton skips such launches)."""
    grid = tuple(int(g) for g in grid)
    for axis, size in enumerate(grid):
        limit = MAX_GRID[axis]
        if size > limit or size < (0 if allow_empty else 1):
            counted = f" ({what[axis]})" if what else ""
            raise ValueError(f"{op}: launch-grid dimension {'xyz'[axis]} = {size}{counted} is "
                             f"outside CUDA's limit {0 if allow_empty else 1}..{limit}; the "
                             "tensor is too large for this kernel: use the 'reference' backend "
                             "or split the operation")
    return grid

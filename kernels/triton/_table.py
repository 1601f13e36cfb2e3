"""Device pointer tables: kernels that read their tensors' addresses from an int64 table (the
fused optimizer's multi-tensor launch; the LSTM step loops, whose launches are captured once in
a CUDA graph and replayed with a rewritten table, see ``kernels/graphs.py``)."""
from __future__ import annotations

from typing import Sequence

import torch
import triton
import triton.language as tl

from .aot import AOTConfig

TABLE_SLOTS = 8
# the element types a table's addresses are typed as (the kernels' DTYPE constexpr)
TL_DTYPES = {torch.float32: tl.float32, torch.float16: tl.float16,
             torch.bfloat16: tl.bfloat16, torch.float64: tl.float64}


@triton.jit
def load_pointer(table_ptr, slot, DTYPE: tl.constexpr, ALIGNED: tl.constexpr):
    """The address in ``table_ptr[slot]`` as a ``DTYPE`` pointer; ALIGNED: the host checked it
    is a multiple of 16 bytes (lets loads from it vectorise)."""
    pointer = tl.load(table_ptr + slot).to(tl.pointer_type(DTYPE))
    if ALIGNED:
        pointer = tl.multiple_of(pointer, 16)
    return pointer


# every argument is an address: never specialised (no recompile per alignment or value)
@triton.jit(do_not_specialize=tuple(range(1, 1 + TABLE_SLOTS)))
def _write_table_kernel(table_ptr, a0, a1, a2, a3, a4, a5, a6, a7):
    """table_ptr: int64 [8], set to the eight addresses a0..a7."""
    tl.store(table_ptr + 0, a0.to(tl.int64))
    tl.store(table_ptr + 1, a1.to(tl.int64))
    tl.store(table_ptr + 2, a2.to(tl.int64))
    tl.store(table_ptr + 3, a3.to(tl.int64))
    tl.store(table_ptr + 4, a4.to(tl.int64))
    tl.store(table_ptr + 5, a5.to(tl.int64))
    tl.store(table_ptr + 6, a6.to(tl.int64))
    tl.store(table_ptr + 7, a7.to(tl.int64))


def addresses_aligned(tensors: Sequence[torch.Tensor | None]) -> bool:
    """Whether every given tensor's address is a multiple of 16 bytes (the kernels' ALIGNED)."""
    return all(t.data_ptr() % 16 == 0 for t in tensors if t is not None)


def write_pointer_table(table: torch.Tensor, tensors: Sequence[torch.Tensor | None]) -> None:
    """Enqueue the write of the tensors' addresses into ``table`` (int64 [8]) on the current
    stream: a kernel launch with the addresses as arguments, so no host buffer must outlive it
    and it is capturable. An absent tensor (None, or past the list) gets the table's own
    address, never read (keeps every argument a 64-bit address)."""
    if len(tensors) > TABLE_SLOTS or table.numel() != TABLE_SLOTS:
        raise ValueError(f"a pointer table holds {TABLE_SLOTS} addresses")
    own = table.data_ptr()
    addresses = [t.data_ptr() if t is not None else own for t in tensors]
    addresses += [own] * (TABLE_SLOTS - len(addresses))
    _write_table_kernel[(1,)](table, *addresses, num_warps=1)


def write_table_aot_config():
    """The table write's one configuration (for the AOT list of the families that use it)."""
    addresses = {f"a{k}": "i64" for k in range(TABLE_SLOTS)}
    return AOTConfig(kernel=_write_table_kernel, signature={"table_ptr": "*i64", **addresses},
                     constexprs={}, num_warps=1, num_stages=1, dtype="i64",
                     label="pointer table write")

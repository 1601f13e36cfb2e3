"""Philox4x32-10 in NumPy, bit for bit what Triton's ``tl.rand(seed, offsets)`` returns.

Triton (``triton/language/random.py``; this is 3.9's, and the structure has been the same since
the 64-bit offset split of the 3.x series) does, for a scalar integer seed and a block of integer
offsets:

- key: the seed as uint64, k0 = its low 32 bits, k1 = its high 32 bits;
- counter: c0 = the offset's low 32 bits, c1 = its high 32 bits (arithmetic shift) when the
  offsets are 64-bit integers and 0 when they are 32-bit, c2 = c3 = 0;
- 10 rounds of c0' = umulhi(B, c2) ^ c1 ^ k0, c2' = umulhi(A, c0) ^ c3 ^ k1, c1' = B * c2,
  c3' = A * c0 (mod 2^32), then k0 += 0x9E3779B9, k1 += 0xBB67AE85;
- ``tl.rand`` keeps c0 and maps it to [0, 1): reinterpret as int32, x = ~x where x < 0, and return
  float32(x) * float32(4.6566127342e-10).

tests/test_reference_core.py checks bit equality against ``tl.rand`` under the interpreter (CPU)
and, with GPUDNN_TEST_DEVICE=cuda, against the compiled kernel of the GPU machine's Triton.
"""
from __future__ import annotations

import numpy as np

PHILOX_KEY_A = np.uint32(0x9E3779B9)
PHILOX_KEY_B = np.uint32(0xBB67AE85)
PHILOX_ROUND_A = np.uint32(0xD2511F53)
PHILOX_ROUND_B = np.uint32(0xCD9E8D57)
N_ROUNDS = 10
# the largest float32 with INT32_MAX * scale < 1 (Triton's uint_to_uniform_float)
UNIFORM_SCALE = np.float32(4.6566127342e-10)
_LOW32 = np.uint64(0xFFFFFFFF)


def _mul_hi_lo(a: np.uint32, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(high, low) 32-bit halves of the 64-bit product a * b, elementwise."""
    product = np.uint64(a) * b.astype(np.uint64)
    return (product >> np.uint64(32)).astype(np.uint32), (product & _LOW32).astype(np.uint32)


def philox4x32(seed: int, c0: np.ndarray, c1: np.ndarray, c2: np.ndarray, c3: np.ndarray,
               n_rounds: int = N_ROUNDS) -> tuple[np.ndarray, ...]:
    """The four uint32 output words for counters (c0, c1, c2, c3) and the key from ``seed``."""
    seed = int(seed) & 0xFFFFFFFFFFFFFFFF
    k0 = np.uint32(seed & 0xFFFFFFFF)
    k1 = np.uint32(seed >> 32)
    with np.errstate(over="ignore"):
        for _ in range(n_rounds):
            hi_b, lo_b = _mul_hi_lo(PHILOX_ROUND_B, c2)
            hi_a, lo_a = _mul_hi_lo(PHILOX_ROUND_A, c0)
            c0, c1, c2, c3 = hi_b ^ c1 ^ k0, lo_b, hi_a ^ c3 ^ k1, lo_a
            k0 = np.uint32((int(k0) + int(PHILOX_KEY_A)) & 0xFFFFFFFF)
            k1 = np.uint32((int(k1) + int(PHILOX_KEY_B)) & 0xFFFFFFFF)
    return c0, c1, c2, c3


def philox_randint(seed: int, offsets: np.ndarray) -> np.ndarray:
    """``tl.randint(seed, offsets)``: the first Philox word per offset, as uint32."""
    offsets = np.asarray(offsets)
    if offsets.dtype.kind not in "iu":
        raise TypeError(f"offsets must be integers, got {offsets.dtype}")
    low = offsets.astype(np.uint32)  # wraps modulo 2^32, as Triton's .to(tl.uint32)
    if offsets.dtype.itemsize > 4:
        high = (offsets >> 32).astype(np.uint32)
    else:
        high = np.zeros_like(low)
    zero = np.zeros_like(low)
    return philox4x32(seed, low, high, zero, zero)[0]


def uint_to_uniform_float(bits: np.ndarray) -> np.ndarray:
    """Triton's uint32 -> float32 in [0, 1)."""
    x = bits.view(np.int32)
    x = np.where(x < 0, ~x, x)
    return x.astype(np.float32) * UNIFORM_SCALE


def philox_uniform(seed: int, offsets: np.ndarray) -> np.ndarray:
    """``tl.rand(seed, offsets)``: float32 uniforms in [0, 1), offsets int32 or int64."""
    return uint_to_uniform_float(philox_randint(seed, offsets))

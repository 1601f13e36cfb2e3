"""The one tolerance table and the one ``assert_close`` used by every test (and GPU checks)."""
from __future__ import annotations

import numpy as np
import torch

# dtype -> (rtol, atol). Keyed by the dtype the computation ran in.
#  float64: the NumPy reference against torch autograd; only rounding-order differences remain.
#  float32: kernels (interpreter or GPU, ieee) against the float64 reference.
#  tf32 / float16 / bfloat16: 10-bit / 10-bit / 7-bit mantissas with fp32 accumulation.
TOLERANCES: dict[str, tuple[float, float]] = {
    "float64": (1e-7, 1e-9),
    "float32": (2e-4, 2e-5),
    "tf32": (5e-3, 5e-3),
    "float16": (1e-2, 1e-2),
    "bfloat16": (5e-2, 5e-2),
}


def _key(dtype) -> str:
    if isinstance(dtype, str):
        return dtype
    if isinstance(dtype, torch.dtype):
        return str(dtype).replace("torch.", "")
    return np.dtype(dtype).name


def tolerance(dtype) -> tuple[float, float]:
    """(rtol, atol) for computations in ``dtype``; integer and bool values must match exactly."""
    key = _key(dtype)
    if key not in TOLERANCES and (key.startswith(("int", "uint")) or key == "bool"):
        return (0.0, 0.0)
    return TOLERANCES[key]


def _as_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach()
        if x.dtype in (torch.bfloat16, torch.float16):
            x = x.float()
        return x.cpu().numpy()
    return np.asarray(x)


def _where(flat_index, shape) -> tuple[int, ...]:
    return tuple(int(i) for i in np.unravel_index(flat_index, shape))


def assert_close(actual, expected, dtype=None, *, name: str = "value",
                 rtol: float | None = None, atol: float | None = None,
                 scale: float = 1.0, signed_zeros: bool = False) -> None:
    """Assert ``|actual - expected| <= atol*scale + rtol*|expected|`` elementwise, shapes equal and
    NaN/inf (with their signs) in the same places; on failure say where and by how much.

    ``dtype`` picks the row of ``TOLERANCES`` (default: the dtype of ``actual``); ``scale`` widens
    atol for values that are sums of many terms (pass e.g. sqrt(K) for a K-long reduction).
    ``signed_zeros``: where both values are zero their signs must agree too (0.0 vs -0.0), for
    exact elementwise results such as relu(-0.0).
    """
    a, e = _as_numpy(actual), _as_numpy(expected)
    if dtype is None:
        dtype = actual.dtype if isinstance(actual, torch.Tensor) else a.dtype
    r, t = tolerance(dtype)
    rtol = r if rtol is None else rtol
    atol = (t if atol is None else atol) * scale
    if a.shape != e.shape:
        raise AssertionError(f"{name}: shape {a.shape} != expected {e.shape}")
    if a.size == 0:
        return
    a64, e64 = a.astype(np.float64), e.astype(np.float64)
    nan_a, nan_e = np.isnan(a64), np.isnan(e64)
    if (nan_a != nan_e).any():
        idx = _where(np.argmax(nan_a != nan_e), a.shape)
        raise AssertionError(f"{name}: NaN mismatch at index {idx}: actual {a64[idx]}, "
                             f"expected {e64[idx]} ({int((nan_a != nan_e).sum())} places)")
    inf_a, inf_e = np.isinf(a64), np.isinf(e64)
    if (inf_a != inf_e).any() or (a64[inf_a] != e64[inf_a]).any():
        bad = (inf_a != inf_e) | (inf_a & (a64 != e64))
        idx = _where(np.argmax(bad), a.shape)
        raise AssertionError(f"{name}: inf mismatch at index {idx}: actual {a64[idx]}, "
                             f"expected {e64[idx]}")
    if signed_zeros:
        zeros = (a64 == 0) & (e64 == 0)
        bad = zeros & (np.signbit(a64) != np.signbit(e64))
        if bad.any():
            idx = _where(np.argmax(bad), a.shape)
            raise AssertionError(f"{name}: sign of zero differs at index {idx}: actual "
                                 f"{a64[idx]}, expected {e64[idx]} ({int(bad.sum())} places)")
    finite = ~(nan_a | inf_a)
    with np.errstate(invalid="ignore"):  # inf - inf where both are inf: masked out below
        diff = np.where(finite, np.abs(a64 - e64), 0.0)
    bound = atol + rtol * np.abs(np.where(finite, e64, 0.0))
    bad = diff > bound
    if bad.any():
        idx = _where(np.argmax(np.where(bad, diff - bound, -np.inf)), a.shape)
        worst = _where(np.argmax(diff), a.shape)
        raise AssertionError(
            f"{name}: {int(bad.sum())} of {a.size} elements differ beyond rtol={rtol:g}, "
            f"atol={atol:g} ({_key(dtype)}); at index {idx}: actual {a64[idx]:.9g}, expected "
            f"{e64[idx]:.9g}; largest |diff| {diff[worst]:.3g} at {worst}")

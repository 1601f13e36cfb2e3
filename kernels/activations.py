"""The one list of fused activations, shared by every backend, the reference and the tests.

Each backend implements exactly these names (value and derivative): the Triton registry in
``kernels/triton/activations.py``, the CUDA C one in ``kernels/cupy/``, the NumPy one in
``gpudnn/reference/activations.py``. Tests assert that every backend covers ``NAMES``.
"""
from __future__ import annotations

from dataclasses import dataclass

# name -> (default parameter, derivative expressible from the output alone)
# leaky_relu's derivative is a function of the output only when the slope is positive
# (sign(y) == sign(x)); Activation.from_output checks the parameter.
_TABLE = {
    "relu": (0.0, True),
    "leaky_relu": (0.01, True),
    "sigmoid": (0.0, True),
    "tanh": (0.0, True),
    "gelu": (0.0, False),        # erf form, torch.nn.GELU(approximate="none")
    "gelu_tanh": (0.0, False),   # torch.nn.GELU(approximate="tanh")
    "silu": (0.0, False),
}
NAMES: tuple[str, ...] = tuple(_TABLE)


@dataclass(frozen=True)
class Activation:
    """A fused activation: a name from ``NAMES`` and its one scalar parameter (leaky_relu slope)."""

    name: str
    param: float = 0.0

    def __post_init__(self):
        if self.name not in _TABLE:
            raise ValueError(f"unknown activation {self.name!r}; expected one of {NAMES}")

    @property
    def from_output(self) -> bool:
        """True when f'(z) can be computed from y = f(z), so backward saves y instead of z."""
        if self.name == "leaky_relu":
            return self.param > 0.0
        return _TABLE[self.name][1]

    @property
    def code(self) -> int:
        """Small integer id used as a constexpr by the kernels (0 = identity)."""
        return NAMES.index(self.name) + 1

    @classmethod
    def make(cls, name: str, param: float | None = None) -> "Activation":
        return cls(name, _TABLE[name][0] if param is None else float(param)) if name in _TABLE \
            else cls(name)


def default_param(name: str) -> float:
    """The parameter ``name`` takes when none is given (leaky_relu's slope 0.01; 0 otherwise)."""
    if name not in _TABLE:
        raise ValueError(f"unknown activation {name!r}; expected one of {NAMES}")
    return _TABLE[name][0]


def code_of(act: Activation | None) -> int:
    """Constexpr id of an optional activation: 0 for None (identity)."""
    return 0 if act is None else act.code


def param_of(act: Activation | None) -> float:
    return 0.0 if act is None else act.param

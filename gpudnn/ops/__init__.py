"""gpudnn's ops: one module per family (``dense.py``, ``conv.py``, ...), each holding

- the family's ``gpudnn.backend.Kernels``: its launchers on every backend, imported by name from
  ``gpudnn.reference.<family>``, ``gpudnn.kernels.triton.<family>`` and
  ``gpudnn.kernels.cupy.<family>``;
- its ``torch.library`` custom ops in the ``gpudnn::`` namespace (``_library.define``): a typed
  body taking ``backend: str`` last, a fake rule, and for forward ops an autograd formula that
  calls the backward op on the same backend;
- its public functions (torch.nn.functional's signatures), listed in the module's ``__all__``:
  argument checks, autocast, ``backend.resolve`` once, then the op.

Adding an op: its NumPy reference (``gpudnn/reference/<family>.py``), its kernels and launchers
per backend (``kernels/triton``, ``kernels/cupy``), its op module here (``dense.py`` is the
pattern), its module in ``gpudnn/nn``, sample arguments in ``tests/op_samples.py`` (opcheck and
the Inductor trace walk every op) and a module example in ``tests/test_compile.py``, its tests,
and a benchmark entry in ``profiling/registry.py``. Nothing else lists it: every public module of
this package is imported below (``FAMILIES``), ``gpudnn.functional`` is the union of their
``__all__``, and importing registers the ops (``torch.ops.gpudnn.*``, ``OPS``).
"""
from .. import _modules
from ._library import OPS

FAMILIES = _modules.public_modules(__import__(__name__, fromlist=["_"]))
# the public functions of every family (gpudnn.functional's names)
FUNCTIONAL: list[str] = sorted(name for family in FAMILIES for name in
                               getattr(family, "__all__", ()))

__all__ = ["OPS", "FAMILIES", "FUNCTIONAL"]

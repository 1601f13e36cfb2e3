"""``gpudnn.nn``: torch.nn with gpudnn's twins in place of the layers gpudnn implements.

``import gpudnn.nn as nn`` works as a drop-in for ``import torch.nn as nn``: every public torch.nn
name is here (``Module``, ``Sequential``, ``ModuleList``, ``Parameter``, ``init``, ...), and the
layers gpudnn implements are its twins (same signatures and ``state_dict``; ``activation=`` on the
layers that fuse one). ``nn.functional`` stays torch's; gpudnn's is ``gpudnn.functional``.
``convert(model)`` swaps the torch layers of an existing model for their twins.

The twins are the classes in the ``__all__`` of every public module of this package (``fold``
holds a function); nothing lists them by hand.
"""
import torch.nn as _torch_nn
from torch.nn import *  # noqa: F401,F403  (every public torch.nn name; the twins replace some)

from .. import _modules
from ._convert import convert  # noqa: E402

TWIN_MODULES = _modules.public_modules(__import__(__name__, fromlist=["_"]), skip=("fold",))
TWINS: tuple[str, ...] = tuple(sorted(name for m in TWIN_MODULES for name in m.__all__))
globals().update({name: getattr(m, name) for m in TWIN_MODULES for name in m.__all__})
__all__ = sorted({n for n in dir(_torch_nn) if not n.startswith("_")} | set(TWINS) | {"convert"})


def _register_safe_globals() -> None:
    """gpudnn's classes that a pickled model holds (the twins and their fused Activation) are
    safe for ``torch.load(..., weights_only=True)``; torch's own classes stay the caller's to
    allow, as for any whole-model pickle."""
    import torch.serialization
    from ..kernels.activations import Activation
    twins = [globals()[name] for name in TWINS]
    torch.serialization.add_safe_globals([*twins, Activation])


_register_safe_globals()

"""gpudnn: hand-written Triton and CUDA C kernels for training neural networks from PyTorch.

Drop ``gpudnn.nn`` modules into PyTorch code (or ``gpudnn.nn.convert(model)``); every op is a
``torch.autograd.Function`` that runs the selected backend (``gpudnn.set_backend``).
"""
from __future__ import annotations

import importlib.util
import os
import sys

__version__ = "0.1.0"


def _map_kernels_from_checkout() -> None:
    # An installed gpudnn maps kernels/ to gpudnn.kernels (pyproject's package-dir). A source
    # checkout on PYTHONPATH has no such mapping: point gpudnn.kernels at ../kernels here.
    if importlib.util.find_spec("gpudnn.kernels") is not None:
        return
    root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "kernels")
    init = os.path.join(root, "__init__.py")
    if os.path.exists(init):
        spec = importlib.util.spec_from_file_location(
            "gpudnn.kernels", init, submodule_search_locations=[root])
        module = importlib.util.module_from_spec(spec)
        sys.modules["gpudnn.kernels"] = module
        spec.loader.exec_module(module)


_map_kernels_from_checkout()

from .backend import available_backends, get_backend, set_backend, use_backend  # noqa: E402
from . import functional, nn, optim  # noqa: E402
from .pruning import prune  # noqa: E402  (gpudnn.prune(...), gpudnn.prune.remove(...))
from .quantization import quantize  # noqa: E402
from .aten import disable, enable, enabled, enabled_stats, reset_enabled_stats  # noqa: E402

__all__ = ["available_backends", "get_backend", "set_backend", "use_backend", "functional", "nn",
           "optim", "prune", "quantize", "enable", "disable", "enabled", "enabled_stats",
           "reset_enabled_stats",
           "__version__"]

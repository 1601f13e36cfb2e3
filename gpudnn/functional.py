"""``gpudnn.functional``: torch.nn.functional's signatures, gpudnn's kernels.

Each function is defined next to its op in ``gpudnn/ops/<family>.py`` (listed in that module's
``__all__``); this namespace is their union.
"""
from .ops import FAMILIES as _FAMILIES, FUNCTIONAL as __all__  # noqa: N811

for _family in _FAMILIES:
    globals().update({_name: getattr(_family, _name) for _name in getattr(_family, "__all__", ())})
del _family

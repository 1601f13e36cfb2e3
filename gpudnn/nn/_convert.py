"""``convert(module)``: swap torch.nn layers for their gpudnn twins and fuse activations."""
from __future__ import annotations

import copy
import dataclasses
import functools
import sys
from collections import Counter

import torch
from torch import nn

from ..activations import parse_activation

def twin_classes() -> dict[type, type]:
    """torch.nn class -> its gpudnn.nn twin, for every twin ``gpudnn.nn`` defines (the torch
    class is the twin's ``torch_twin`` attribute, else its nearest torch.nn base). Subclasses of
    these torch classes: ``_twin_for``."""
    from . import TWIN_MODULES
    table = {}
    for module in TWIN_MODULES:
        for name in module.__all__:
            cls = getattr(module, name)
            base = cls.__dict__.get("torch_twin") or next(
                b for b in cls.__mro__[1:] if b.__module__.startswith("torch.nn."))
            table[base] = cls
    return table


_ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.GELU, nn.SiLU)


_GPUDNN_HOOKS = ("_gpudnn_accepts", "_gpudnn_after_convert", "torch_twin")


def _replaced_methods(twin: type, base: type) -> set[str]:
    """The methods the twin defines over its torch class (forward and what forward calls)."""
    return {name for c in twin.__mro__[:twin.__mro__.index(base)] for name, value in vars(c).items()
            if callable(value) and not name.startswith("__") and name != "extra_repr"
            and name not in _GPUDNN_HOOKS}


def derived_class(cls: type, bases: tuple, namespace: dict, rebuild, args: tuple) -> type:
    """A class made at run time that looks like ``cls`` (name, module, qualname), pickles its
    instances as ``rebuild(*args)`` plus their state (it cannot be imported), and copies them as
    instances of itself."""
    def __reduce_ex__(self, protocol):
        _, _, *state = object.__reduce_ex__(self, protocol)
        return (rebuild, args, *state)

    def __copy__(self):
        new = new_instance(type(self))
        new.__dict__.update(self.__dict__)
        return new

    def __deepcopy__(self, memo):
        new = memo[id(self)] = new_instance(type(self))
        new.__setstate__(copy.deepcopy(self.__dict__, memo))
        return new

    return type(cls.__name__, bases, {"__module__": cls.__module__,
                                      "__qualname__": cls.__qualname__,
                                      "__reduce_ex__": __reduce_ex__, "__copy__": __copy__,
                                      "__deepcopy__": __deepcopy__, **namespace})


@functools.cache
def subclass_twin(cls: type, twin: type) -> type:
    """``cls`` (a user's subclass of a torch layer) with ``twin``'s methods: same name and
    attributes, ``isinstance`` of both; pickles and deep-copies as itself."""
    return derived_class(cls, (cls, twin), {}, _rebuild_twin, (cls, twin))


def _rebuild_twin(cls: type, twin: type):
    return new_instance(subclass_twin(cls, twin))


def new_instance(cls: type):
    """An instance of ``cls`` for the unpickler to fill (no __init__)."""
    return cls.__new__(cls)


# a whole-model pickle of a converted model holds these; torch.load(weights_only=True) still
# needs the classes they are given (the user's own) to be allowed
torch.serialization.add_safe_globals([_rebuild_twin, new_instance])


def _twin_for(module: nn.Module, table: dict) -> tuple[type | None, str | None]:
    """(the class to swap ``module`` to, None) or (None, why not; None when no torch.nn class
    of it has a twin, or it is gpudnn's already)."""
    cls = type(module)
    if is_gpudnn(cls):
        return None, None
    if cls in table:
        twin = table[cls]
    else:
        base = next((b for b in cls.__mro__[1:] if b in table), None)
        if base is None:
            return None, None
        twin = table[base]
        if not issubclass(twin, base):
            return None, (f"subclass of torch.nn.{base.__name__} (gpudnn.nn.{twin.__name__} is "
                          f"not a torch.nn.{base.__name__} subclass)")
        mine = {name for c in cls.__mro__[:cls.__mro__.index(base)] for name in vars(c)}
        overridden = sorted(mine & _replaced_methods(twin, base))
        if overridden:
            return None, f"subclass of torch.nn.{base.__name__} overriding {', '.join(overridden)}"
        twin = subclass_twin(cls, twin)
    if getattr(module, "inplace", False) is True:
        return None, "inplace=True (gpudnn computes out of place; torch's op keeps the aliasing)"
    # a twin may decline a configuration it does not implement (Embedding with max_norm)
    if not getattr(twin, "_gpudnn_accepts", lambda m: True)(module):
        return None, f"gpudnn.nn.{twin.__name__} does not implement this configuration"
    return twin, None


def is_gpudnn(cls: type) -> bool:
    """A gpudnn class, or a subclass of one (a twin subclass, a user's subclass of a twin)."""
    return any(c.__module__.startswith("gpudnn.") for c in cls.__mro__)


def _swap(module: nn.Module, twin: type) -> None:
    """The same object (same parameters, buffers and hooks) as an instance of its gpudnn twin."""
    module.__class__ = twin
    if hasattr(twin, "_gpudnn_after_convert"):
        module._gpudnn_after_convert()


def _has_hooks(module: nn.Module) -> bool:
    return any(getattr(module, name, None) for name in (
        "_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"))


def _fusable(module: nn.Module) -> bool:
    from .. import nn as gnn
    return isinstance(module, (gnn.Linear, gnn.Conv2d, gnn.ConvTranspose2d, gnn.BatchNorm1d,
                               gnn.BatchNorm2d, gnn.LayerNorm, gnn.GroupNorm)) \
        and getattr(module, "activation", None) is None and not _has_hooks(module)


def _fuse_sequential(seq: nn.Sequential, fold_batchnorm: bool, report=None,
                     prefix: str = "") -> None:
    """Fuse Linear/Conv -> [BatchNorm] -> activation runs of a Sequential in place.

    The activation goes into the last layer of the run (the BatchNorm if there is one: in
    training it cannot be folded into the conv) and its slot becomes nn.Identity, so state_dict
    keys do not change. With ``fold_batchnorm`` an eval-mode BatchNorm2d after a Conv2d is folded
    into the conv's weight and bias and its slot becomes nn.Identity too (its keys go away).
    Layers and activations with hooks are not fused (a hook would see a different tensor).
    """
    from .. import nn as gnn
    names = list(seq._modules)
    path = (prefix + ".") if prefix else ""
    i = 0
    while i < len(names):
        layer = seq._modules[names[i]]
        if not _fusable(layer):
            i += 1
            continue
        j = i + 1
        if (fold_batchnorm and isinstance(layer, gnn.Conv2d) and j < len(names)
                and isinstance(seq._modules[names[j]], gnn.BatchNorm2d)
                and not seq._modules[names[j]].training and not layer.training):
            from .fold import fold_batchnorm as fold
            layer = fold(layer, seq._modules[names[j]])
            seq._modules[names[i]] = layer
            seq._modules[names[j]] = nn.Identity()
            if report is not None:
                report.add("fused", f"{path}{names[j]} folded into {path}{names[i]}")
            j += 1
        elif (isinstance(layer, (gnn.Linear, gnn.Conv2d, gnn.ConvTranspose2d)) and j < len(names)
              and isinstance(seq._modules[names[j]], (gnn.BatchNorm1d, gnn.BatchNorm2d))
              and _fusable(seq._modules[names[j]])):
            i, layer, j = j, seq._modules[names[j]], j + 1  # the activation goes into the BN
        if j < len(names) and isinstance(seq._modules[names[j]], _ACTIVATIONS) \
                and not _has_hooks(seq._modules[names[j]]):
            layer.activation = parse_activation(seq._modules[names[j]])
            if report is not None:
                kind = type(seq._modules[names[j]]).__name__
                report.add("fused", f"{path}{names[i]} + {path}{names[j]} ({kind})")
            seq._modules[names[j]] = nn.Identity()
            j += 1
        i = j


@dataclasses.dataclass(repr=False)
class ConvertReport:
    """What ``convert`` did to a model: ``convert(model, report=True)`` returns it with the model,
    ``verbose=True`` prints it. ``converted``: layers now gpudnn twins ("path (Class)");
    ``fused``: activations fused into the layer before them (Sequential runs and traced
    ``forward`` code); ``functional``: ``forward``'s torch function calls now gpudnn.functional's
    (one entry per call); ``left``: (what, why) for everything left as torch; ``rewritten``: the
    modules whose ``forward`` was replaced; ``code``: that forward's code, by module."""

    model: str
    converted: list[str] = dataclasses.field(default_factory=list)
    fused: list[str] = dataclasses.field(default_factory=list)
    functional: list[str] = dataclasses.field(default_factory=list)
    left: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    rewritten: list[str] = dataclasses.field(default_factory=list)
    code: dict[str, str] = dataclasses.field(default_factory=dict)

    def add(self, kind: str, item) -> None:
        getattr(self, kind).append(item)

    def __repr__(self) -> str:
        functional = [f"{name} x{n}" if n > 1 else name for name, n in
                      Counter(self.functional).items()]
        left = [(f"{what} x{n}" if n > 1 else what, why) for (what, why), n in
                Counter(self.left).items()]
        lines = [f"gpudnn.nn.convert({self.model}): {len(self.converted)} layers converted, "
                 f"{len(self.fused)} fused, {len(self.functional)} calls on gpudnn.functional, "
                 f"{len(left)} left as torch"]
        for title, items in (("converted", self.converted), ("fused", self.fused),
                             ("gpudnn.functional", functional),
                             ("forward rewritten", self.rewritten)):
            if items:
                lines.append(f"  {title}: {', '.join(items)}")
        if left:
            lines.append("  left as torch:")
            lines += [f"    {what}: {why}" for what, why in left]
        return "\n".join(lines)

    __str__ = __repr__


_MODULE_KEYS = frozenset(nn.Module().__dict__)
_NO_COMPUTE = (nn.Identity, nn.Flatten, nn.Unflatten)


def _plain_containers(module: nn.Module, path: str, registered: set, report) -> None:
    """Report modules held in plain Python lists / tuples / dicts: torch does not register them
    (not in parameters(), state_dict(), .to(), modules()), and convert leaves them alone too."""
    for key, value in vars(module).items():
        if key in _MODULE_KEYS or not isinstance(value, (list, tuple, dict)):
            continue
        items = value.values() if isinstance(value, dict) else value
        if any(isinstance(m, nn.Module) and m not in registered for m in items):
            kind = type(value).__name__
            use = "nn.ModuleDict" if kind == "dict" else "nn.ModuleList"
            report.add("left", (f"{path + '.' if path else ''}{key}",
                                f"modules in a plain Python {kind} (not registered with torch: "
                                f"use {use}); left alone"))


def convert(module: nn.Module, inplace: bool = True, fold_batchnorm: bool = False, *,
            trace: bool = True, verbose: bool = False, report: bool = False):
    """Turn ``module`` into a gpudnn model: the same object by default (``inplace=True``).

    1. Every torch.nn layer with a gpudnn twin becomes an instance of it: its class is swapped,
       its parameter and buffer objects stay (an optimizer built before ``convert`` keeps
       training them; ``state_dict`` keys and values are unchanged). Subclasses of a torch layer
       that override none of the twin's methods get a twin subclass of their own class; those
       that override ``forward`` (or what it calls) are left alone, and so are in-place
       activation modules outside a fusable run and configurations a twin declines.
    2. Inside ``nn.Sequential``, Linear/Conv2d/ConvTranspose2d -> [BatchNorm] -> activation and
       LayerNorm / GroupNorm -> activation runs are fused (``_fuse_sequential``; the activation
       slot becomes ``nn.Identity``). ``fold_batchnorm=True`` (inference) also folds eval-mode
       BatchNorm2d layers into the preceding Conv2d (their state_dict entries go away).
    3. ``trace=True``: the ``forward`` of each of the user's own modules is traced with
       ``torch.fx`` and rewritten (``gpudnn/nn/_fx.py``; the object stays, its class becomes a
       run-time subclass of its own with the new ``forward``): layer -> functional or module
       activation becomes one fused call, and ``torch.nn.functional`` calls that
       ``gpudnn.functional`` implements call it. A forward that cannot be traced keeps its code
       (its children are tried) and the report says why.

    ``inplace=False`` works on a deep copy and leaves ``module`` untouched (build the optimizer
    from the returned model then). Returns the model, or ``(model, ConvertReport)`` with
    ``report=True``; ``verbose=True`` prints the report to stderr.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"convert expects a torch.nn.Module, got {type(module).__name__}")
    for name, value in (("inplace", inplace), ("fold_batchnorm", fold_batchnorm),
                        ("trace", trace), ("verbose", verbose), ("report", report)):
        if not isinstance(value, bool):
            raise TypeError(f"convert: {name} must be a bool, got {value!r}")
    if not inplace:
        module = copy.deepcopy(module)
    from ._fx import _is_leaf, rewrite
    result = ConvertReport(type(module).__name__)
    table = twin_classes()
    registered = set(module.modules())
    converted, declined = [], []
    for path, sub in list(module.named_modules()):  # classes change in place: same objects
        label = f"{path or type(module).__name__} ({type(sub).__name__})"
        _plain_containers(sub, path, registered, result)
        twin, why = _twin_for(sub, table)
        if twin is not None:
            _swap(sub, twin)
            converted.append((path, sub, label))
        elif why is not None:
            declined.append((path, sub, label, why))
        elif _is_leaf(sub) and not isinstance(sub, _NO_COMPUTE) and not is_gpudnn(type(sub)):
            declined.append((path, sub, label, "no gpudnn twin"))
    for path, sub in list(module.named_modules()):
        if isinstance(sub, nn.Sequential):
            if type(sub).forward is nn.Sequential.forward:
                _fuse_sequential(sub, fold_batchnorm, result, path)
            else:
                result.add("left", (f"{path or type(sub).__name__} ({type(sub).__name__})",
                                    "nn.Sequential subclass with its own forward: its layers are "
                                    "fused only where a traced forward shows the run"))
    named = dict(module.named_modules())  # activations fused away are neither
    result.converted += [label for path, sub, label in converted if named.get(path) is sub]
    result.left[:0] = [(label, why) for path, sub, label, why in declined
                       if named.get(path) is sub]
    if trace:
        rewrite(module, result)
    if verbose:
        print(result, file=sys.stderr)
    return (module, result) if report else module

"""The ``torch.fx`` pass of ``gpudnn.nn.convert``: what a model's ``forward`` does between layers.

``convert`` swaps layers; this pass rewrites the Python ``forward`` of a user's module (its own
class, not a torch.nn layer) so that

- a fusable gpudnn layer (Linear, Conv2d, ConvTranspose2d, BatchNorm, LayerNorm, GroupNorm: any
  gpudnn layer class declaring ``activation``) whose output goes only into an activation
  (``F.relu``, ``torch.sigmoid``, ``x.tanh()``, ``F.leaky_relu(x, 0.2)``, ``F.gelu``,
  ``F.silu``, an activation module, ...) computes both in one kernel: the call becomes
  ``fused_call(layer, "relu", 0.0, x)``, which runs the layer with that activation for this call
  only (the module itself is not changed, so its other callers, say a VAE's ``decode``, still
  get the plain layer);
- a call of a ``torch.nn.functional`` function that ``gpudnn.functional`` has (its ``__all__``
  decides: ``max_pool2d``, ``log_softmax``, ``cross_entropy``, ...), or of its ``torch.`` / Tensor
  method spelling with the same parameters, calls gpudnn's with the same arguments, unless the
  arguments are ones gpudnn refuses (``REFUSED``) or an ``inplace=True`` whose input is used again.

The module keeps its identity, attributes, methods, parameters and ``state_dict``: only its
``forward`` is replaced by the code of the rewritten graph, through its class (a subclass of its
own class, made at run time, same name, ``isinstance`` of it; it deep-copies as itself and pickles
as the original class, whose ``forward`` the loaded model runs). Two graphs when ``forward`` reads
``self.training``: the one matching the module's mode at call time runs. A call passing ``None``
for an argument runs the original ``forward`` (tracing saw a tensor there, so ``is None``
branches were decided for a tensor). Only the traced module's ``forward`` is rewritten: a
submodule called on its own runs its own code.

Not traced, and said why (the layers stay swapped): data-dependent control flow or anything
else ``torch.fx.symbolic_trace`` refuses, ``*args`` / ``**kwargs`` signatures, a forward that
creates tensors from constants (tracing would freeze them) or assigns Python attributes (tracing
would run that once). Tracing runs ``forward``'s Python once: Python-level randomness or global
state it reads is frozen (``convert(..., trace=False)`` for such models).
"""
from __future__ import annotations

import inspect
import random
from collections import Counter
from typing import Any, Callable

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from ..activations import Activation, parse_activation
from ._convert import _has_hooks, derived_class, new_instance

__all__ = ["fused_call", "rewrite", "REFUSED"]

# Statically visible arguments that gpudnn.functional refuses (NotImplementedError / TypeError):
# name -> {parameter: predicate on its value}. A call with one of them stays torch's (reported);
# tests/test_convert.py checks that gpudnn still refuses each of them. A refusal missing here
# surfaces as gpudnn's own clear NotImplementedError when the rewritten forward runs.
REFUSED: dict[str, dict[str, Callable[[Any], bool]]] = {
    "mse_loss": {"weight": lambda v: v is not None},
    "embedding": {"max_norm": lambda v: v is not None, "sparse": bool},
    "softmax": {"dim": lambda v: v is None},
    "log_softmax": {"dim": lambda v: v is None},
}

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict, nn.ParameterList, nn.ParameterDict)
_ACTIVATION_NAMES = ("relu", "sigmoid", "tanh", "silu", "gelu", "leaky_relu")
_ACTIVATION_METHODS = {"relu": "relu", "relu_": "relu", "sigmoid": "sigmoid",
                       "sigmoid_": "sigmoid", "tanh": "tanh", "tanh_": "tanh"}


def fuses_activation(module: nn.Module) -> bool:
    """A gpudnn layer whose forward applies ``self.activation`` (a gpudnn class declares it)."""
    return any(c.__module__.startswith("gpudnn.") and "activation" in vars(c)
               for c in type(module).__mro__)


def _apply(act: Activation, y: torch.Tensor) -> torch.Tensor:
    from ..ops.activations import activation
    return activation(y, act)


def fused_call(layer: nn.Module, name: str, param: float, *args, **kwargs):
    """``activation(layer(*args, **kwargs))`` in one kernel: ``layer`` runs with ``activation``
    set for this call only (its hooks run, its own ``activation`` is restored after). A layer
    that cannot fuse (replaced since ``convert``) or already has an activation applies it after."""
    act = Activation(name, param)
    if not fuses_activation(layer) or layer.activation is not None:
        return _apply(act, layer(*args, **kwargs))
    layer.activation = act
    try:
        return layer(*args, **kwargs)
    finally:
        layer.activation = None


def _is_leaf(module: nn.Module) -> bool:
    """torch.nn layers (and gpudnn's twins of them, and user subclasses of either) are called,
    not traced through; containers and the user's own modules are traced."""
    return any(c.__module__.startswith("torch.nn.") and c is not nn.Module
               and c not in _CONTAINERS for c in type(module).__mro__)


class _Tracer(fx.Tracer):
    proxy_buffer_attributes = True  # buffers are read when forward runs (and can be sliced)

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return _is_leaf(m)


def _activation_functions() -> dict:
    table = {}
    from .. import functional as GF
    for name in _ACTIVATION_NAMES:
        for namespace in (F, torch, GF):
            for suffix in ("", "_"):
                fn = getattr(namespace, name + suffix, None)
                if callable(fn):
                    table.setdefault(fn, name)
    return table


def _spelling(fn) -> str:
    for prefix, namespace in (("F.", F), ("torch.", torch)):
        name = getattr(fn, "__name__", "")
        if getattr(namespace, name, None) is fn:
            return prefix + name
    return getattr(fn, "__name__", repr(fn))


def _constant(value) -> bool:
    return not isinstance(value, fx.Node)


def _activation_of(node: fx.Node, modules: dict) -> tuple[Activation, str] | None:
    """(the activation ``node`` applies to its first argument, how it is written) or None."""
    args, kwargs = node.args, dict(node.kwargs)
    if not args or not all(_constant(v) for v in (*args[1:], *kwargs.values())):
        return None
    if node.op == "call_function":
        name = _activation_functions().get(node.target)
        if name is None or set(kwargs) - {"inplace", "negative_slope", "approximate"}:
            return None
        if name == "leaky_relu":
            module = nn.LeakyReLU(args[1] if len(args) > 1 else kwargs.get("negative_slope", 0.01))
        elif name == "gelu":
            module = nn.GELU(args[1] if len(args) > 1 else kwargs.get("approximate", "none"))
        elif len(args) > 1 and name in ("sigmoid", "tanh"):
            return None
        else:
            module = name
        try:
            return parse_activation(module), _spelling(node.target)
        except (ValueError, TypeError):
            return None
    if node.op == "call_method" and node.target in _ACTIVATION_METHODS and len(args) == 1 \
            and not kwargs:
        return Activation.make(_ACTIVATION_METHODS[node.target]), f".{node.target}()"
    if node.op == "call_module" and len(args) == 1 and not kwargs:
        module = modules[node.target]
        if _has_hooks(module):
            return None
        try:
            return parse_activation(module), f"{node.target} ({type(module).__name__})"
        except ValueError:
            return None
    return None


def _fuse(graph: fx.Graph, modules: dict, report, prefix: str) -> bool:
    changed = False
    for node in list(graph.nodes):
        if node.op != "call_module" or len(node.users) != 1:
            continue
        layer = modules[node.target]
        if not fuses_activation(layer) or layer.activation is not None or _has_hooks(layer):
            continue
        (user,) = node.users
        if not user.args or user.args[0] is not node or node in user.args[1:] or \
                node in user.kwargs.values():
            continue
        found = _activation_of(user, modules)
        if found is None:
            continue
        act, how = found
        with graph.inserting_before(user):
            ref = graph.get_attr(node.target)
            fused = graph.call_function(fused_call, (ref, act.name, act.param, *node.args),
                                        dict(node.kwargs))
        user.replace_all_uses_with(fused)
        graph.erase_node(user)
        graph.erase_node(node)
        report.add("fused", f"{prefix}{node.target} + {how}")
        changed = True
    return changed


def _gpudnn_function_table() -> dict:
    """torch callable -> its gpudnn.functional name, for every name in gpudnn.functional.__all__
    that torch.nn.functional or torch spells the same."""
    from .. import functional as GF
    table = {}
    for name in GF.__all__:
        for namespace in (F, torch):
            fn = getattr(namespace, name, None)
            if callable(fn):
                table.setdefault(fn, name)
    return table


def _normalized(target, args, kwargs) -> dict | None:
    from torch.fx.operator_schemas import normalize_function
    try:
        pair = normalize_function(target, tuple(args), dict(kwargs),
                                  normalize_to_only_use_kwargs=True)
    except Exception:  # noqa: BLE001  (ambiguous overloads: not matched)
        return None
    return None if pair is None else dict(pair.kwargs)


def _refusal(name: str, arguments: dict) -> str | None:
    for param, refused in REFUSED.get(name, {}).items():
        if param == "dim" and arguments.get("dim") is None:
            return "dim not given (torch's implicit dim; gpudnn needs dim)"
        if param in arguments:
            value = arguments[param]
            if isinstance(value, fx.Node):  # a traced value: given (a dim is always fine)
                if param == "dim":
                    continue
                return f"{param}= given (gpudnn does not support it)"
            if refused(value):
                return f"{param}={value!r} (gpudnn does not support it)"
    return None


def _replace_functions(graph: fx.Graph, report) -> bool:
    from .. import functional as GF
    table = _gpudnn_function_table()
    changed = False
    for node in list(graph.nodes):
        if node.op == "call_function" and node.target in table:
            name, spelled = table[node.target], _spelling(node.target)
            same = getattr(F, name, None) is node.target
            call = ((tuple(node.args), dict(node.kwargs)) if same else
                    ((), _normalized(node.target, node.args, node.kwargs)))
        elif node.op == "call_method" and isinstance(node.target, str) and \
                node.target in GF.__all__ and callable(getattr(torch, node.target, None)):
            name, spelled = node.target, f".{node.target}()"
            call = ((), _normalized(getattr(torch, name), node.args, node.kwargs))
        else:
            if node.op == "call_function" and getattr(F, getattr(node.target, "__name__", ""),
                                                      None) is node.target:
                report.add("left", (_spelling(node.target), "not in gpudnn.functional"))
            continue
        gpudnn_fn = getattr(GF, name)
        why = None
        if call[1] is None:
            why = "arguments not matched to torch's signature"
        else:
            try:
                arguments = inspect.signature(gpudnn_fn).bind(*call[0], **call[1]).arguments
            except TypeError:
                why = f"arguments differ from gpudnn.functional.{name}'s"
            else:
                why = _refusal(name, arguments)
                source = next(iter(arguments.values()), None)
                if why is None and arguments.get("inplace") is not False and \
                        "inplace" in arguments and isinstance(source, fx.Node) and \
                        len(source.users) > 1:
                    why = "inplace=True on a tensor used again (gpudnn computes out of place)"
        if why is not None:
            report.add("left", (spelled, why))
            continue
        node.op, node.target = "call_function", gpudnn_fn
        node.args, node.kwargs = call
        report.add("functional", spelled)
        changed = True
    return changed


def _signature_problem(cls: type) -> str | None:
    try:
        params = list(inspect.signature(cls.forward).parameters.values())[1:]
    except (TypeError, ValueError):
        return "forward has no Python signature"
    if any(p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params):
        return "forward takes *args, **kwargs or keyword-only arguments"
    return None


def _state(root: nn.Module) -> dict:
    return {m: [dict(m.__dict__), dict(m._parameters), dict(m._buffers), dict(m._modules)]
            for m in root.modules()}


def _restore(saved: dict) -> bool:
    """Put back every module's attributes as they were; True if tracing had changed any."""
    changed = False
    for m, (attrs, params, buffers, mods) in saved.items():
        for live, old in ((m._parameters, params), (m._buffers, buffers), (m._modules, mods),
                          (m.__dict__, attrs)):
            if live.keys() != old.keys() or any(live[k] is not v for k, v in old.items()):
                changed = True
                live.clear()
                live.update(old)
    return changed


def _trace(module: nn.Module, training: bool) -> fx.Graph:
    """The graph of ``module.forward`` with every module in mode ``training``; raises on anything
    tracing would get wrong."""
    modes = {m: m.training for m in module.modules()}
    for m in modes:  # not module.train(): a user's override of it is not for tracing
        m.training = training
    saved = _state(module)
    python_rng = random.getstate()
    try:
        with torch.random.fork_rng(devices=[]):  # a forward drawing at trace time draws nothing
            graph = _Tracer().trace(module)
    finally:
        random.setstate(python_rng)
        touched = _restore(saved)
        for m, mode in modes.items():
            m.training = mode
    if any(n.op == "get_attr" and n.target.startswith("_tensor_constant") for n in graph.nodes):
        raise _NotTraceable("forward creates a tensor from constants (tracing would freeze it)")
    if touched:
        raise _NotTraceable("forward assigns Python attributes (tracing would run that once)")
    return graph


class _NotTraceable(Exception):
    pass


class _Notes(list):
    """(kind, item) entries of one graph; ``a - b``: a's entries beyond b's, counted."""

    def add(self, kind: str, item) -> None:
        self.append((kind, item))

    def __sub__(self, other: "_Notes") -> list:
        extra = Counter(self) - Counter(other)
        out = []
        for entry in self:
            if extra[entry]:
                extra[entry] -= 1
                out.append(entry)
        return out


def _forward(cls: type, code: dict[bool, Callable]):
    """The new ``forward``: the rewritten graph of the module's current mode, called with the
    original signature's arguments (fx may rename its placeholders)."""
    params = list(inspect.signature(cls.forward).parameters.values())[1:]
    names = [p.name for p in params]
    defaults = [p.default for p in params]
    train_fn, eval_fn = code.get(True, code.get(False)), code.get(False, code.get(True))
    original = cls.forward
    empty = inspect.Parameter.empty

    def forward(self, *args, **kwargs):
        if kwargs or len(args) < len(names):
            if len(args) > len(names) or any(k not in names[len(args):] for k in kwargs):
                return original(self, *args, **kwargs)  # raises the original's TypeError
            full = list(args)
            for name, default in zip(names[len(args):], defaults[len(args):]):
                value = kwargs.get(name, default)
                if value is empty:
                    return original(self, *args, **kwargs)  # the original's TypeError
                full.append(value)
            args = tuple(full)
        if any(a is None for a in args):
            return original(self, *args)  # tracing saw a tensor there
        return (train_fn if self.training else eval_fn)(self, *args)

    forward.__qualname__ = f"{cls.__qualname__}.forward"
    return forward


def _rewritten_class(cls: type, forward) -> type:
    return derived_class(cls, (cls,), {"forward": forward, "_gpudnn_traced_class": cls},
                         new_instance, (cls,))


def _rewrite_one(module: nn.Module, path: str, report) -> str | None:
    """Trace, rewrite and install; the reason when ``module`` was not traced."""
    cls = getattr(type(module), "_gpudnn_traced_class", type(module))  # converted again
    problem = _signature_problem(cls)
    if "forward" in vars(module):
        problem = "forward is set on the instance"
    if problem:
        return problem
    current, module.__class__ = module.__class__, cls
    try:
        graphs = {True: _trace(module, True), False: _trace(module, False)}
    except _NotTraceable as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001  (whatever symbolic tracing refuses)
        text = str(exc).strip().splitlines()
        return f"{type(exc).__name__}: {text[0] if text else ''}"[:160]
    finally:
        module.__class__ = current
    if graphs[True].python_code("self").src == graphs[False].python_code("self").src:
        del graphs[False]  # forward does not read self.training
    modules = dict(module.named_modules())
    changed, found = False, []
    for graph in graphs.values():
        notes = _Notes()
        changed |= _fuse(graph, modules, notes, f"{path}." if path else "")
        changed |= _replace_functions(graph, notes)
        found.append(notes)
    for kind, item in found[0] + (found[1] - found[0] if len(found) > 1 else []):
        report.add(kind, item)  # the eval graph's only where it differs
    if not changed:
        module.__class__ = cls
        return None
    label = path or cls.__name__
    code = {}
    for mode, graph in graphs.items():
        gm = fx.GraphModule(module, graph, cls.__name__)  # shares module's submodules
        code[mode] = type(gm).forward
        title = label if len(graphs) == 1 else f"{label} ({'train' if mode else 'eval'})"
        report.code[title] = gm.code.strip()
    module.__class__ = _rewritten_class(cls, _forward(cls, code))
    report.add("rewritten", label)
    return None


def rewrite(root: nn.Module, report, path: str = "") -> None:
    """Rewrite ``root``'s forward; if it cannot be traced, say why and try its children."""
    if _is_leaf(root):
        return
    if not isinstance(root, _CONTAINERS):
        why = _rewrite_one(root, path, report)
        if why is None:
            return
        report.add("left", (f"{path or type(root).__name__}.forward", f"not traced: {why}"))
    for name, child in root.named_children():
        rewrite(child, report, f"{path}.{name}" if path else name)

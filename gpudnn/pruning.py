"""``gpudnn.prune``: magnitude and 2:4 semi-structured pruning of Linear / Conv2d weights, with
masks kept through training, and ``gpudnn.prune.remove`` to make it permanent.

``prune(model, amount=0.5, method="magnitude")`` zeroes, in each Linear and Conv2d layer (torch's
or gpudnn's), the ``amount`` fraction of its weights with the smallest magnitude (torch's
``l1_unstructured`` per layer). ``method="2:4"`` keeps, in every group of 4 consecutive weights
along the input dimension (a Linear's in_features; a Conv2d's flattened ``(Cin/groups, kh, kw)``,
torch's weight layout), the 2 of largest magnitude: the pattern Ampere / Hopper sparse tensor
cores take (``to_semi_structured`` hands 2:4 Linear weights to torch's semi-structured sparse
kernels on such GPUs). Biases are never pruned. Pruning works in place and returns the model.

Mechanism (torch.nn.utils.prune's, so its tools understand gpudnn's masks): each pruned weight
becomes the Parameter ``weight_orig`` (the same tensor object, so existing optimizers keep
updating it) and the buffer ``weight_mask``, and a forward pre-hook sets ``weight = weight_orig *
weight_mask`` before every forward; gradients at pruned positions are therefore zero. On top of
that, one global optimizer step post hook (``torch.optim.optimizer.
register_optimizer_step_post_hook``; gpudnn.optim's optimizers subclass torch's, so it runs for
them too) zeroes the pruned entries of every ``*_orig`` parameter the optimizer just stepped:
weight decay and stale momentum never move a pruned weight off zero. ``remove(model)`` folds the
masks in (``weight = weight_orig * weight_mask``, torch's ``prune.remove``): plain ``weight``
parameters again, with the state_dict keys of the unpruned model.
"""
from __future__ import annotations

import numbers
import warnings
import weakref
from typing import Iterable

import torch
import torch.nn.functional as F
import torch.nn.utils.prune as torch_prune
import torch.optim.optimizer as torch_optimizer
from torch import nn

__all__ = ["prune", "remove", "is_pruned", "sparsity", "prunable_layers", "mask_2to4",
           "is_2to4", "to_semi_structured", "SemiStructuredLinear", "METHODS"]

METHODS = ("magnitude", "2:4")
_PARAM = "weight"

# modules holding gpudnn masks (weakly: a dropped model is forgotten), for the optimizer hook;
# a module joins at prune time and again at every forward (a deep copy of a pruned model, or one
# built from a checkpoint, joins with its first forward, which precedes any optimizer step)
_PRUNED: "weakref.WeakSet[nn.Module]" = weakref.WeakSet()
_hook_handle = None


class _Mask(torch_prune.CustomFromMask):
    """torch's CustomFromMask pre-hook that also registers its module for the optimizer hook."""

    def __call__(self, module, inputs):
        if not torch.compiler.is_compiling():
            _PRUNED.add(module)
        super().__call__(module, inputs)


def _pruning_hooks(module: nn.Module) -> list[torch_prune.BasePruningMethod]:
    return [h for h in module._forward_pre_hooks.values()
            if isinstance(h, torch_prune.BasePruningMethod)]


@torch.no_grad()
def _zero_pruned(optimizer: torch.optim.Optimizer, args, kwargs) -> None:
    """The global step post hook: pruned entries of the parameters just stepped back to 0."""
    modules = list(_PRUNED)
    if not modules:
        return
    stepped = {id(p) for group in optimizer.param_groups for p in group["params"]}
    for module in modules:
        for hook in _pruning_hooks(module):
            orig = module._parameters.get(hook._tensor_name + "_orig")
            mask = module._buffers.get(hook._tensor_name + "_mask")
            if orig is not None and mask is not None and id(orig) in stepped:
                orig.masked_fill_(mask == 0, 0.0)


def _install_optimizer_hook() -> None:
    global _hook_handle
    if _hook_handle is None:
        _hook_handle = torch_optimizer.register_optimizer_step_post_hook(_zero_pruned)


# --- masks ---------------------------------------------------------------------------------------

def _rows(weight: torch.Tensor) -> torch.Tensor:
    """weight [out, ...] as [out, K]: K is the input dimension the 2:4 groups run along."""
    return weight.flatten(1)


def mask_2to4(weight: torch.Tensor) -> torch.Tensor:
    """The 2:4 mask of ``weight`` [out, ...] (K = its elements per output, a multiple of 4): in
    each group of 4 consecutive inputs, 1 for the 2 of largest |w| (ties: the lower index)."""
    rows = _rows(weight.detach())
    if rows.shape[1] % 4:
        raise ValueError(f"2:4 pruning needs the inputs per output channel to be a multiple of "
                         f"4; weight {tuple(weight.shape)} has {rows.shape[1]}")
    groups = rows.abs().reshape(rows.shape[0], -1, 4)
    order = torch.argsort(-groups, dim=-1, stable=True)
    mask = torch.zeros_like(groups, dtype=weight.dtype)
    mask.scatter_(-1, order[..., :2], 1.0)
    return mask.reshape(weight.shape)


def is_2to4(weight: torch.Tensor) -> bool:
    """Whether every group of 4 consecutive inputs of ``weight`` [out, ...] has <= 2 nonzeros."""
    rows = _rows(weight.detach())
    if rows.shape[1] % 4:
        return False
    return bool(((rows != 0).reshape(rows.shape[0], -1, 4).sum(-1) <= 2).all())


def _magnitude_mask(weight: torch.Tensor, amount: float) -> torch.Tensor:
    """torch's l1_unstructured mask: the round(amount * numel) smallest |w| pruned."""
    return torch_prune.L1Unstructured(amount).compute_mask(weight.detach(),
                                                           torch.ones_like(weight))


# --- the API ---------------------------------------------------------------------------------

def _check_amount(amount, method: str) -> float:
    if isinstance(amount, bool) or not isinstance(amount, numbers.Real) or \
            not 0 <= float(amount) < 1:
        raise ValueError(f"prune: amount must be a fraction in [0, 1), got {amount!r}")
    if method == "2:4" and float(amount) != 0.5:
        raise ValueError(f"prune: 2:4 pruning removes exactly half of the weights; amount must "
                         f"be 0.5, got {amount!r}")
    return float(amount)


def _label(name: str) -> str:
    return f"layer {name!r}" if name else "the model"


def _is_prunable(module: nn.Module) -> bool:
    return isinstance(module, (nn.Linear, nn.Conv2d)) and not _is_quantized(module)


def _is_quantized(module: nn.Module) -> bool:
    from .quantization import QuantizedConv2d, QuantizedLinear
    return isinstance(module, (QuantizedLinear, QuantizedConv2d))


def _weight(module: nn.Module) -> torch.Tensor:
    """The (effective) weight: weight_orig * mask for a module pruned already."""
    orig = module._parameters.get(_PARAM + "_orig")
    if orig is not None:
        return orig * module._buffers[_PARAM + "_mask"]
    return module._parameters[_PARAM]


def prunable_layers(model: nn.Module, method: str = "magnitude"
                    ) -> tuple[list[str], dict[str, str]]:
    """(names of the Linear / Conv2d layers ``method`` can prune, {name: why not} for the other
    Linear / Conv2d layers: 2:4 needs a multiple of 4 inputs per output channel)."""
    _check_method(method)
    ok, skipped = [], {}
    for name, module in model.named_modules():
        if not _is_prunable(module):
            continue
        k = _rows(_weight(module)).shape[1]
        if method == "2:4" and k % 4:
            skipped[name] = (f"{type(module).__name__} weight {tuple(_weight(module).shape)} has "
                             f"{k} inputs per output channel, not a multiple of 4")
        else:
            ok.append(name)
    return ok, skipped


def _check_method(method) -> None:
    if method not in METHODS:
        raise ValueError(f"prune: method must be one of {METHODS}, got {method!r}")


def prune(model: nn.Module, amount: float = 0.5, method: str = "magnitude",
          layers: Iterable[str] | None = None) -> nn.Module:
    """Prune the Linear / Conv2d layers of ``model`` in place (see the module docstring) and
    return it. ``layers``: qualified names of the layers to prune (default: every Linear and
    Conv2d; for 2:4, every one whose input dimension is a multiple of 4, the others are left
    dense with a warning). A named layer of another kind, or one 2:4 cannot take, is a
    ValueError, as is ``amount`` outside [0, 1) (2:4: exactly 0.5) and a model with nothing to
    prune. Pruning a pruned layer again computes the new mask on its current (masked) weight."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"prune expects a torch.nn.Module, got {type(model).__name__}")
    _check_method(method)
    amount = _check_amount(amount, method)
    named = dict(model.named_modules())
    ok, skipped = prunable_layers(model, method)
    if layers is None:
        if not ok:
            if _is_prunable(model) or skipped:
                raise ValueError(f"prune: no layer of {type(model).__name__} can take 2:4 "
                                 f"pruning: " + "; ".join(f"{n or 'the model'}: {why}"
                                                          for n, why in skipped.items()))
            what = next(iter(named.values()))
            raise ValueError(f"prune: {_label('')} ({type(what).__name__}) has no Linear or "
                             "Conv2d layer; gpudnn.prune prunes Linear and Conv2d weights")
        if skipped:
            warnings.warn("prune: left dense (2:4 does not fit): " + "; ".join(
                f"{n}: {why}" for n, why in skipped.items()), UserWarning, stacklevel=2)
        targets = ok
    else:
        targets = [layers] if isinstance(layers, str) else list(layers)
        for name in targets:
            if name not in named:
                raise ValueError(f"prune: the model has no layer named {name!r}")
            module = named[name]
            if _is_quantized(module):
                raise ValueError(f"prune: {_label(name)} is quantized; prune the float model, "
                                 "then quantize it")
            if not _is_prunable(module):
                raise ValueError(f"prune: {_label(name)} is a {type(module).__name__}; "
                                 "gpudnn.prune prunes Linear and Conv2d weights")
            if name in skipped:
                raise ValueError(f"prune: {_label(name)} cannot take 2:4 pruning: "
                                 f"{skipped[name]}")
    _install_optimizer_hook()
    for name in targets:
        module = named[name]
        if _pruning_hooks(module):
            _finalize(module)  # fold the old mask in, then mask again
        weight = module._parameters[_PARAM]
        mask = mask_2to4(weight) if method == "2:4" else _magnitude_mask(weight, amount)
        order = list(module._parameters)
        hook = _Mask.apply(module, _PARAM, mask)
        hook.mask = None  # the mask lives in the module's weight_mask buffer
        hook.parameter_order = order  # remove() puts `weight` back in its place
        with torch.no_grad():  # the stored weight is zero too, not only the masked product
            module._parameters[_PARAM + "_orig"].masked_fill_(
                module._buffers[_PARAM + "_mask"] == 0, 0.0)
        _PRUNED.add(module)
    return model


def is_pruned(model: nn.Module) -> bool:
    """Whether any layer of ``model`` carries a pruning mask (torch's ``prune.is_pruned``)."""
    return torch_prune.is_pruned(model)


def _finalize(module: nn.Module) -> int:
    """torch's ``prune.remove`` on every masked tensor of ``module`` (not its children), with
    its parameters back in their unpruned order; the number of tensors finalized."""
    done = 0
    for hook in _pruning_hooks(module):
        torch_prune.remove(module, hook._tensor_name)  # a PruningContainer names one tensor too
        done += 1
        order = getattr(hook, "parameter_order", None)
        if order and set(order) == set(module._parameters):
            for key in order:  # the unpruned module's parameter (and state_dict) order
                module._parameters[key] = module._parameters.pop(key)
    _PRUNED.discard(module)
    return done


def remove(model: nn.Module) -> nn.Module:
    """Make the pruning permanent (torch's ``prune.remove`` on every masked tensor): each
    ``weight_orig`` / ``weight_mask`` pair becomes a plain ``weight`` parameter (the same
    Parameter object, zero where pruned). Returns ``model``; ValueError if nothing is pruned."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"remove expects a torch.nn.Module, got {type(model).__name__}")
    done = sum(_finalize(module) for module in model.modules())
    if not done:
        raise ValueError(f"prune.remove: nothing in {type(model).__name__} is pruned")
    return model


def sparsity(model: nn.Module) -> dict[str, float]:
    """{layer name: fraction of zero weights} for every Linear / Conv2d layer of ``model``."""
    return {name: float((_weight(m) == 0).float().mean()) if _weight(m).numel() else 0.0
            for name, m in model.named_modules() if _is_prunable(m)}


# --- 2:4 on sparse tensor cores ---------------------------------------------------------------

class SemiStructuredLinear(nn.Module):
    """A finalized 2:4 Linear whose weight is a torch semi-structured sparse tensor
    (``torch.sparse.to_sparse_semi_structured``: CUTLASS / cuSPARSELt kernels on compute
    capability >= 8.0, float16 / bfloat16): ``activation(F.linear(x, weight, bias))``."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        from torch.sparse import to_sparse_semi_structured
        from .activations import activation_module
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = nn.Parameter(to_sparse_semi_structured(linear.weight.detach()),
                                   requires_grad=False)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach(),
                                                                  requires_grad=False)
        self.act = activation_module(getattr(linear, "activation", None))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return self.act(F.linear(input, self.weight, self.bias))


def semi_structured_problem(device: torch.device | str, dtype: torch.dtype) -> str | None:
    """Why torch's semi-structured sparse kernels cannot run here, or None."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return "torch's semi-structured sparse kernels need a CUDA GPU"
    if torch.cuda.get_device_capability(device) < (8, 0):
        return "semi-structured sparse tensor cores need compute capability >= 8.0"
    if dtype not in (torch.float16, torch.bfloat16):
        return f"semi-structured sparse weights must be float16 or bfloat16, got {dtype}"
    return None


def to_semi_structured(model: nn.Module) -> nn.Module:
    """Swap (in place) every finalized Linear with a 2:4 weight for a ``SemiStructuredLinear``
    (inference; CUDA float16 / bfloat16, compute capability >= 8.0). Returns ``model``; a
    RuntimeError says why when the GPU cannot run them, a ValueError when no Linear is 2:4."""
    named = dict(model.named_modules())
    targets = [n for n, m in named.items() if isinstance(m, nn.Linear) and not _pruning_hooks(m)
               and is_2to4(m.weight)]
    if not targets:
        raise ValueError("to_semi_structured: no finalized 2:4 Linear layer (prune with "
                         "method='2:4', then gpudnn.prune.remove)")
    for name in targets:
        weight = named[name].weight
        why = semi_structured_problem(weight.device, weight.dtype)
        if why:
            raise RuntimeError(f"to_semi_structured: {why}")
        sparse = SemiStructuredLinear(named[name])
        if name == "":
            return sparse
        parent, _, child = name.rpartition(".")
        setattr(named[parent], child, sparse)
    return model


# ``gpudnn.prune.remove(model)`` and friends, torch.nn.utils.prune-style
prune.remove = remove
prune.is_pruned = is_pruned
prune.sparsity = sparsity
prune.to_semi_structured = to_semi_structured

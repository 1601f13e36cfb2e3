"""Importing every public module of a package, so that the package's tables (ops, twins,
functional names) derive from its files and a new family is never listed by hand."""
from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


def public_modules(package: ModuleType, skip: tuple[str, ...] = ()) -> tuple[ModuleType, ...]:
    """Every module of ``package`` whose name does not start with ``_`` (minus ``skip``),
    imported, in name order."""
    names = sorted(m.name for m in pkgutil.iter_modules(package.__path__)
                   if not m.name.startswith("_") and m.name not in skip)
    return tuple(importlib.import_module(f"{package.__name__}.{name}") for name in names)

"""Deprecated names that moved to an integration package: found there with a warning, or an ImportError saying what
to install."""

from __future__ import annotations

import importlib
import warnings
from typing import Any

__all__ = ["moved_to_integration"]


def moved_to_integration(module: str, name: str, dist: str, *, old: str, stacklevel: int = 3) -> Any:
    """``name`` from the integration package ``module`` (distribution ``dist``), warning that ``old`` is deprecated.

    Raises:
        ImportError: ``dist`` is not installed; the message names ``pip install {dist}`` and the new import.
    """
    new_import = f"from {module} import {name}"
    try:
        target = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is None or not module.startswith(exc.name):  # something the package itself needs is missing
            raise
        raise ImportError(
            f"{name} moved from {old} to the {dist} package: pip install {dist}, then {new_import}"
        ) from exc
    warnings.warn(f"{old}.{name} is deprecated: use {new_import} (pip install {dist})", DeprecationWarning, stacklevel)
    return getattr(target, name)

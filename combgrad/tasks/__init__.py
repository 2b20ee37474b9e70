"""Benchmark tasks: data, models and training loops.

``warcraft`` (shortest paths on maps), ``pto`` (predict-then-optimize: PyEPO's
problems, losses and metrics), ``nri``, ``vae`` and ``l2x`` (discrete latent
structure: spanning trees, k-subset codes, feature subsets).

Each task is a subpackage, imported on first use (``combgrad.tasks.warcraft``); the
run infrastructure they share (loop, checkpoints, resume, metrics, plots, atomic
writes) is :mod:`combgrad.tasks._training`, which imports no task.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from . import l2x, nri, pto, vae, warcraft

__all__ = ["l2x", "nri", "pto", "vae", "warcraft"]

_TASKS = ("warcraft", "pto", "nri", "vae", "l2x")


def __getattr__(name: str) -> Any:
    # A task is imported when first used, so that another task (or the shared
    # _training package) loads without it.
    if name in _TASKS:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

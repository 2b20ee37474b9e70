"""Benchmark tasks: data, models and training loops (``warcraft``: shortest paths on maps).

Each task is a subpackage, imported on first use (``combgrad.tasks.warcraft``); the
run infrastructure they share (loop, checkpoints, resume, metrics, plots, atomic
writes) is :mod:`combgrad.tasks._training`, which imports no task.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from . import warcraft

__all__ = ["warcraft"]

_TASKS = ("warcraft",)


def __getattr__(name: str) -> Any:
    # A task is imported when first used, so that another task (or the shared
    # _training package) loads without it.
    if name in _TASKS:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

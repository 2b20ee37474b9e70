"""Predict-then-optimize (PyEPO's problems, losses and metrics): data generators, regret,
the methods and the trainer behind ``combgrad pto``.

The generators and the metric import only torch and numpy; :func:`train` and
:class:`PtoConfig` (which load the solvers, estimators and training parts) are
imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .data import knapsack_data, shortest_path_data, tsp_data
from .metrics import regret

if TYPE_CHECKING:
    from .config import PtoConfig
    from .trainer import train

_LAZY = {"PtoConfig": "config", "train": "trainer"}

__all__ = ["PtoConfig", "knapsack_data", "regret", "shortest_path_data", "train", "tsp_data"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

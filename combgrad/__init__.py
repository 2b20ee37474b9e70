"""combgrad: differentiable combinatorial solvers for PyTorch.

The import is light: ``combgrad.tasks`` (the benchmark tasks) is imported on
first attribute access, and OR-Tools on the first integer program.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from . import adapters, geometry, gradients, solvers
from .adapters import DifferentiableSolver, differentiable
from .errors import ConvergenceWarning, OptionError, SolverError
from .gradients import losses
from .solvers import get_num_threads, set_num_threads

if TYPE_CHECKING:
    from . import tasks

__all__ = [
    "ConvergenceWarning",
    "DifferentiableSolver",
    "OptionError",
    "SolverError",
    "differentiable",
    "get_num_threads",
    "set_num_threads",
    "losses",
    "adapters",
    "geometry",
    "gradients",
    "solvers",
    "tasks",
    "__version__",
]

_LAZY_SUBMODULES = ("tasks",)


def __getattr__(name: str) -> Any:
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

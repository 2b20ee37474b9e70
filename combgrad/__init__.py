"""combgrad: differentiable combinatorial solvers for PyTorch."""

__version__ = "0.1.0"

from . import adapters, geometry, gradients, solvers, tasks
from .errors import SolverError

__all__ = ["SolverError", "adapters", "geometry", "gradients", "solvers", "tasks", "__version__"]

"""combgrad: differentiable combinatorial solvers for PyTorch."""

__version__ = "0.1.0"

from . import adapters, geometry, gradients, solvers, tasks
from .adapters import DifferentiableSolver, differentiable
from .errors import SolverError
from .gradients import losses

__all__ = [
    "DifferentiableSolver",
    "SolverError",
    "differentiable",
    "losses",
    "adapters",
    "geometry",
    "gradients",
    "solvers",
    "tasks",
    "__version__",
]

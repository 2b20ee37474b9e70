"""Adapters: turn Python functions into batched solvers and solvers into layers."""

from .differentiable import DifferentiableSolver, differentiable
from .from_function import from_function
from .from_pyepo import from_pyepo
from .solution_pool import SolutionPool

__all__ = ["DifferentiableSolver", "differentiable", "from_function", "from_pyepo", "SolutionPool"]

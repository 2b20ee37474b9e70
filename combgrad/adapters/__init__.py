"""Adapters: turn Python functions into batched solvers and solvers into layers."""

from .differentiable import DifferentiableSolver, differentiable
from .from_function import from_function
from .solution_pool import SolutionPool

__all__ = ["DifferentiableSolver", "differentiable", "from_function", "SolutionPool"]

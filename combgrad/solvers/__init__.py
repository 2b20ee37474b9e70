"""Batched combinatorial solvers and their registry.

``get(name, **options)`` builds a solver; ``names()`` lists them; ``register``
adds one. Importing this package registers the built-ins.
"""

from .base import BatchSolver, Solver
from .registry import get, names, options, register, unregister

# Built-in solvers register themselves on import.
from .argmax import Argmax
from .assignment import Assignment
from .ilp import ILP
from .knapsack import Knapsack
from .shortest_path import ShortestPath
from .spanning_tree import SpanningTree
from .topk import TopK

__all__ = [
    "Argmax",
    "Assignment",
    "BatchSolver",
    "ILP",
    "Knapsack",
    "ShortestPath",
    "Solver",
    "SpanningTree",
    "TopK",
    "get",
    "names",
    "options",
    "register",
    "unregister",
]

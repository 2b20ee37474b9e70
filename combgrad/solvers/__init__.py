"""Batched combinatorial solvers and their registry.

``get(name, **options)`` builds a solver; ``names()`` lists them; ``register``
adds one; ``set_num_threads``/``get_num_threads`` bound the numba solvers' threads
(see :mod:`combgrad.solvers.parallel`). Importing this package registers the
built-ins.
"""

from .base import BatchSolver, Solver
from .parallel import get_num_threads, set_num_threads
from .registry import get, names, options, register, unregister

# Built-in solvers register themselves on import.
from .argmax import Argmax
from .assignment import Assignment
from .graph_shortest_path import GraphShortestPath
from .ilp import ILP
from .knapsack import Knapsack
from .lp import LP
from .ranks import Ranks
from .shortest_path import ShortestPath
from .spanning_tree import SpanningTree
from .topk import TopK
from .tsp import TSP

__all__ = [
    "Argmax",
    "Assignment",
    "BatchSolver",
    "GraphShortestPath",
    "ILP",
    "Knapsack",
    "LP",
    "Ranks",
    "ShortestPath",
    "Solver",
    "SpanningTree",
    "TopK",
    "TSP",
    "get",
    "get_num_threads",
    "names",
    "options",
    "register",
    "set_num_threads",
    "unregister",
]

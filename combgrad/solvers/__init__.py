"""Batched combinatorial solvers and their registry.

``get(name, **options)`` builds a solver; ``names()`` lists them; ``register``
adds one. Importing this package registers the built-ins.
"""

from .base import BatchSolver, Solver
from .registry import get, names, register, unregister

# Built-in solvers register themselves on import.
from .argmax import Argmax
from .topk import TopK

__all__ = ["BatchSolver", "Solver", "get", "names", "register", "unregister", "Argmax", "TopK"]

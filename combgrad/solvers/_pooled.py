"""What the solvers built on a Python-level model per instance share (``ilp``, ``lp``, ``tsp``).

Each of them keeps its constraint data in a small frozen problem record that
travels to worker processes, builds the solver model (CP-SAT, GLOP) once per
problem per thread, changes only the objective per instance, and runs the batch
through :func:`combgrad.pool.map_instances` (serial, the shared process pool, or
a caller's executor). The pieces that would otherwise be repeated in each
module live here: the option checks of ``workers=``/``executor=``/``timeout=``/
``time_limit=``, the per-thread model cache, the parsing of ``A, b, A_eq, b_eq``
and the integer rounding of an objective for CP-SAT.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import torch

from .. import pool
from .._checks import check_number, check_positive_int
from ..errors import SolverError
from .base import BatchSolver

T = TypeVar("T")

# One model per problem, per thread: a model is mutated per instance (its
# objective), so threads of an executor must not share one. Worker processes keep
# theirs across chunks and calls, so each builds a problem's model once, not once
# per instance; a few problems are kept for code that alternates between solvers.
_cache = threading.local()
_CACHE_SIZE = 8


def cached_model(key: str, build: Callable[[], T]) -> T:
    """The model cached under ``key`` in this thread, built by ``build()`` on a miss.

    Example:
        >>> cached_model("doc-example", lambda: [1, 2]) is cached_model("doc-example", list)
        True
    """
    models: OrderedDict[str, Any] | None = getattr(_cache, "models", None)
    if models is None:
        models = OrderedDict()
        _cache.models = models
    if key in models:
        models.move_to_end(key)
        return models[key]
    model = build()
    models[key] = model
    if len(models) > _CACHE_SIZE:
        models.popitem(last=False)
    return model


def as_array(owner: str, argument: str, value: object, ndim: int) -> np.ndarray:
    """``value`` as a finite float64 array with ``ndim`` dims, else ValueError naming ``argument``.

    Example:
        >>> as_array("lp", "b", [1, 2], 1)
        array([1., 2.])
    """
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{owner}: {argument} must be a numeric array, got {type(value).__name__}") from error
    if array.ndim != ndim:
        shape = "[m, n]" if ndim == 2 else "[m]" if argument.startswith("b") else "[n] or a scalar"
        raise ValueError(f"{owner}: {argument} must have {ndim} dims {shape}, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{owner}: {argument} must be finite, got NaN or inf values")
    return array


Constraints = dict[str, "tuple[np.ndarray, np.ndarray] | None"]


def constraint_pairs(owner: str, A: object, b: object, A_eq: object, b_eq: object) -> Constraints:
    """Validate ``A x <= b`` and ``A_eq x = b_eq``: ``{"A": (A, b) | None, "A_eq": ...}`` in float64.

    A matrix without its right-hand side (or the reverse), wrong dims, NaN or
    inf, or a right-hand side whose length is not the matrix's row count raise
    ValueError. The column count is checked by :func:`complete_pairs` once the
    number of variables is known.

    Example:
        >>> pairs = constraint_pairs("lp", [[1, 2]], [3], None, None)
        >>> pairs["A"][0].shape, pairs["A_eq"]
        ((1, 2), None)
    """
    pairs: Constraints = {}
    for matrix_name, vector_name, matrix, vector in (("A", "b", A, b), ("A_eq", "b_eq", A_eq, b_eq)):
        if (matrix is None) != (vector is None):
            given, missing = (matrix_name, vector_name) if vector is None else (vector_name, matrix_name)
            raise ValueError(f"{owner}: {given} was given without {missing}; pass both or neither")
        if matrix is None:
            pairs[matrix_name] = None
            continue
        matrix_array = as_array(owner, matrix_name, matrix, 2)
        vector_array = as_array(owner, vector_name, vector, 1)
        if vector_array.shape[0] != matrix_array.shape[0]:
            raise ValueError(
                f"{owner}: {vector_name} must have one entry per row of {matrix_name} "
                f"({matrix_array.shape[0]}), got shape {vector_array.shape}"
            )
        pairs[matrix_name] = (matrix_array, vector_array)
    return pairs


def pairs_size(pairs: Constraints) -> int | None:
    """The number of variables ``n`` that ``A`` (else ``A_eq``) gives, or None without either."""
    for matrix_name in ("A", "A_eq"):
        pair = pairs[matrix_name]
        if pair is not None:
            return int(pair[0].shape[1])
    return None


def complete_pairs(owner: str, pairs: Constraints, n: int, dtype: type = np.float64) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Empty ``[0, n]`` systems for missing pairs; ValueError for a matrix without ``n`` columns."""
    complete: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for matrix_name, pair in pairs.items():
        if pair is None:
            complete[matrix_name] = (np.zeros((0, n), dtype), np.zeros(0, dtype))
        elif pair[0].shape[1] != n:
            raise ValueError(
                f"{owner}: {matrix_name} must have n={n} columns (the number of variables), "
                f"got shape {pair[0].shape}"
            )
        else:
            complete[matrix_name] = pair
    return complete


def integer_objective(theta: np.ndarray, objective_scale: float | None, resolution: int) -> np.ndarray:
    """Integer objective coefficients ``[n]`` for one instance ``theta [n]`` (CP-SAT needs integers).

    With ``objective_scale=None`` the largest ``|theta_j|`` becomes ``resolution``
    and the rest are rounded to the nearest integer on that scale; with a fixed
    scale every coefficient is ``round(theta_j * objective_scale)``.

    Example:
        >>> integer_objective(np.array([0.5, -1.0, 0.25]), None, 4)
        array([ 2, -4,  1])
    """
    if objective_scale is None:
        largest = float(np.abs(theta).max(initial=0.0))
        if largest == 0:
            return np.zeros(theta.shape, np.int64)
        # Normalise first: resolution / largest overflows to inf for |theta|
        # below about 6e-300, while theta / largest is always in [-1, 1].
        return np.rint(theta / largest * resolution).astype(np.int64)
    # A fixed scale may round every coefficient to 0: an all-zero objective is
    # a valid problem (any feasible point is optimal).
    return np.rint(theta * objective_scale).astype(np.int64)


class PooledSolver(BatchSolver):
    """A :class:`BatchSolver` whose host kernel runs one Python-level solve per instance.

    Subclasses call :meth:`set_pool` in their constructor and
    :meth:`map_instances` in :meth:`solve_batch`; the instance function must be
    a module-level function (or a ``functools.partial`` of one) so that worker
    processes can run it.
    """

    workers: int = 0
    executor: Any = None
    timeout: float | None = None

    def set_pool(self, workers: object, executor: object, timeout: object) -> None:
        """Validate and store ``workers``, ``executor`` and ``timeout`` (ValueError/TypeError naming them)."""
        self.workers = check_positive_int(self.name, "workers", workers, minimum=0)
        # A wrong executor (or one given with workers) fails here, not at the first call.
        pool.check_executor(self.name, self.workers, executor)
        self.executor = executor
        self.timeout = None if timeout is None else check_number(self.name, "timeout", timeout, positive=True)

    def map_instances(self, fn: Callable[[np.ndarray], Any], theta: np.ndarray) -> list[Any]:
        """``[fn(theta[i]) for i]`` serially, in the pool or on the executor; errors name the instance."""
        return pool.map_instances(
            fn, theta, workers=self.workers, owner=self.name, timeout=self.timeout, executor=self.executor
        )

    def pool_repr(self) -> str:
        """The ``workers=..., executor=..., timeout=...`` part of a subclass's repr."""
        executor = type(self.executor).__name__ if self.executor is not None else None
        return f"workers={self.workers}, executor={executor}, timeout={self.timeout}"


def check_time_limit(owner: str, time_limit: object) -> float | None:
    """``time_limit`` (seconds per instance) as a positive float, or None."""
    return None if time_limit is None else check_number(owner, "time_limit", time_limit, positive=True)


def cp_sat_solver(time_limit: float | None) -> Any:
    """A CP-SAT solver set up for one instance at a time (OR-Tools imported here, on first use)."""
    from ortools.sat.python import cp_model

    solver = cp_model.CpSolver()
    # One search worker per instance: the batch is the parallel dimension, and
    # CP-SAT's single-worker search is deterministic.
    solver.parameters.num_workers = 1
    # CP-SAT's own SIGINT handler would end the search early on Ctrl-C and
    # report a non-optimal status, i.e. turn the interrupt into a SolverError;
    # without it Python raises KeyboardInterrupt when the search returns.
    solver.parameters.catch_sigint_signal = False
    if time_limit is not None:
        solver.parameters.max_time_in_seconds = time_limit
    return solver


def cp_sat_not_optimal(model: Any, solver: Any, status: Any, time_limit: float | None) -> SolverError:
    """The SolverError for a CP-SAT search that ended without a proven optimum (not infeasibility)."""
    from ortools.sat.python import cp_model

    if status == cp_model.MODEL_INVALID:
        return SolverError(f"CP-SAT rejected the model: {model.validate()}")
    if time_limit is not None:  # no other limit is set: the time ran out
        return SolverError(
            f"CP-SAT did not prove optimality within time_limit={time_limit!r} s "
            f"(status {solver.status_name(status)}); raise time_limit or simplify the problem"
        )
    return SolverError(f"CP-SAT stopped with status {solver.status_name(status)} without proving optimality")

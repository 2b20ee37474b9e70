"""``tsp``: the symmetric travelling salesman problem, solved exactly by CP-SAT's circuit constraint.

OR-Tools is imported on the first construction of a :class:`TSP`, not by
``import combgrad``.
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch

from .._checks import check_positive_int
from ._pooled import (
    PooledSolver,
    cached_model,
    check_time_limit,
    cp_sat_not_optimal,
    cp_sat_solver,
    integer_objective,
)
from .registry import register

#: With each instance's largest |cost| scaled to this integer (or less for very
#: many edges, see :class:`TSP`), rounding moves no cost by more than
#: ``max|theta| / 2**31``.
AUTO_RESOLUTION = 2**30

# CP-SAT refuses models whose objective could overflow int64 (see ilp.py).
_ACTIVITY_LIMIT = 2**60


@dataclass(frozen=True, eq=False)
class _Problem:
    """What the worker processes need to build the CP-SAT model of one TSP size."""

    num_nodes: int
    resolution: int  # the integer that each instance's largest |cost| becomes
    time_limit: float | None  # seconds per instance for CP-SAT's search
    key: str  # identifies the problem in the per-thread model cache


def _build(problem: _Problem) -> tuple[Any, Any]:
    """The CP-SAT model: one Boolean per arc direction of each edge, one circuit through all nodes.

    Variable ``2 k`` is edge ``k = (i, j)`` travelled ``i -> j``, variable
    ``2 k + 1`` the same edge ``j -> i``; both carry the edge's cost. The
    circuit constraint makes the chosen arcs one directed Hamiltonian cycle, so
    for n >= 3 at most one direction of each edge is used and the edges used
    form the tour.
    """
    from ortools.sat.python import cp_model

    model = cp_model.CpModel()
    arcs = []
    for i, j in itertools.combinations(range(problem.num_nodes), 2):
        arcs.append((i, j, model.new_bool_var("")))
        arcs.append((j, i, model.new_bool_var("")))
    model.add_circuit(arcs)
    model.proto.objective.vars.extend(range(len(arcs)))
    solver = cp_sat_solver(problem.time_limit)
    # The circuit's LP relaxation with its cuts (level 2; the default 1 adds less):
    # on random Euclidean 20-node instances 25-45 ms instead of 0.25-2.6 s.
    solver.parameters.linearization_level = 2
    return model, solver


def _solve_instance(problem: _Problem, theta: np.ndarray) -> np.ndarray:
    """Solve one instance ``theta [m]`` (edge costs); module level so that workers can run it."""
    from ortools.sat.python import cp_model

    model, solver = cached_model(problem.key, partial(_build, problem))
    costs = integer_objective(theta, None, problem.resolution)
    objective = model.proto.objective
    objective.coeffs.clear()
    objective.coeffs.extend(np.repeat(costs, 2).tolist())
    status = solver.solve(model)
    if status != cp_model.OPTIMAL:
        raise cp_sat_not_optimal(model, solver, status, problem.time_limit)
    arcs = np.fromiter(solver.response_proto.solution, dtype=np.float64, count=2 * theta.shape[0])
    return arcs[0::2] + arcs[1::2]


class TSP(PooledSolver):
    """Symmetric travelling salesman: the cheapest tour through all ``num_nodes`` nodes, exactly.

    ``theta [*, m]`` holds the symmetric edge costs of the complete graph on
    ``n = num_nodes`` nodes, ``m = n (n - 1) / 2``, in the order of
    ``itertools.combinations(range(n), 2)`` (``(0, 1), (0, 2), ..., (n - 2, n - 1)``,
    also in :attr:`edges`). The output ``[*, m]`` is the 0/1 mask of the ``n``
    edges of a tour (a Hamiltonian cycle) of minimum total cost (sense "min").
    Costs may be negative: every tour has ``n`` edges, so adding a constant to
    all costs changes no tour's rank.

    Each instance is one CP-SAT search (one search worker) over a Boolean per
    arc direction with the circuit constraint, which proves optimality; the
    batch is the parallel dimension (``workers=N``). Exact search is exponential
    in the worst case: instances of 20 nodes (PyEPO's TSP) take milliseconds to
    tens of milliseconds, and ``time_limit`` bounds the search of larger ones.

    Rounding. CP-SAT works with integers: instance ``i``'s costs are rounded to
    ``c = round(theta * R / max_e |theta_e|)`` with ``R = min(2**30, 2**60 // (2 m))``,
    so each cost moves by at most ``max_e |theta_e| / (2 R)`` and the tour
    returned is optimal for the true costs within ``n * max_e |theta_e| / R``
    (about ``1e-9 * n * max|theta|``). Tours whose costs differ by less than that
    (near-ties) may be returned in either order; exact ties are broken by
    CP-SAT's deterministic single-worker search (the same for the same data and
    OR-Tools version, in this process or a worker).

    Args:
        num_nodes: The number of nodes n (>= 3).
        workers: 0 (default) solves in this process; N > 0 uses the shared pool
            of N processes (:mod:`combgrad.pool`); a script using it needs the
            usual ``if __name__ == "__main__":`` guard.
        executor: None (default), or a ``concurrent.futures.Executor`` or a
            ``dask.distributed.Client`` to solve the batch on, in chunks; not
            together with ``workers``.
        timeout: Seconds for one call (the whole batch), or None (default): past
            it the call raises :class:`~combgrad.SolverError` naming the
            unfinished instances (as in :class:`~combgrad.solvers.ILP`).
        time_limit: Seconds of CP-SAT search per instance, or None (default, no
            limit). An instance whose optimum is not proven in time raises
            :class:`~combgrad.SolverError` naming it (no unproven tour is
            returned silently).

    Raises:
        ValueError: On ``num_nodes < 3`` or an invalid option; when called, if
            theta's last dim is not ``n (n - 1) / 2``.

    Example:
        >>> import torch, combgrad as cg
        >>> tsp = cg.solvers.get("tsp", num_nodes=4)
        >>> tsp.edges.tolist()
        [[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]]
        >>> tsp(torch.tensor([1.0, 9.0, 1.0, 1.0, 9.0, 1.0]))  # the cheap square 0-1-2-3-0
        tensor([1., 0., 1., 1., 0., 1.])
    """

    name = "tsp"
    sense = "min"
    event_ndim = 1

    def __init__(
        self,
        *,
        num_nodes: int,
        workers: int = 0,
        executor: Any = None,
        timeout: float | None = None,
        time_limit: float | None = None,
    ) -> None:
        self.num_nodes = check_positive_int("tsp", "num_nodes", num_nodes, minimum=3)
        self.set_pool(workers, executor, timeout)
        time_limit = check_time_limit("tsp", time_limit)
        self.num_edges = self.num_nodes * (self.num_nodes - 1) // 2
        self.edges = np.array(list(itertools.combinations(range(self.num_nodes), 2)), dtype=np.int64)
        resolution = min(AUTO_RESOLUTION, _ACTIVITY_LIMIT // (2 * self.num_edges))
        self._problem = _Problem(self.num_nodes, resolution, time_limit, uuid.uuid4().hex)
        # OR-Tools is imported (and a broken installation fails) here, not at the first call.
        cached_model(self._problem.key, partial(_build, self._problem))

    def check_event(self, theta: torch.Tensor, event_shape: tuple[int, ...]) -> None:
        if event_shape[0] != self.num_edges:
            raise ValueError(
                f"tsp: theta's last dim must be n (n - 1) / 2 = {self.num_edges} (one cost per edge of "
                f"{self.num_nodes} nodes), got shape {tuple(theta.shape)}"
            )

    def solve_batch(self, theta: np.ndarray) -> np.ndarray:
        return np.stack(self.map_instances(partial(_solve_instance, self._problem), theta))

    def __repr__(self) -> str:
        return f"TSP(num_nodes={self.num_nodes}, {self.pool_repr()}, time_limit={self._problem.time_limit})"


register("tsp", TSP)

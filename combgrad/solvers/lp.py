"""``lp``: continuous linear programs ``opt <theta, x>`` solved exactly by OR-Tools' GLOP simplex.

OR-Tools is imported on the first construction of an :class:`LP`, not by
``import combgrad``.

Why GLOP: ``benchmarks/lp_backends.py`` times this solver against HiGHS
(``highspy``, the model passed once, costs changed per instance) in one run. On
this project's 2-core machine under load (load average 5.5, batch 32), per
instance: PyEPO's 5x5 shortest-path flow LP 214 us against 517 us for HiGHS
from scratch and 238 us for HiGHS reusing the previous basis (which makes the
vertex chosen for a tie depend on the previous instance); a dense 100 x 100
``A x <= b`` LP 2.4 ms against 7.4 ms (warm: 7.4 ms); the same with ``x <= 1``
2.3 ms against 5.6 ms (warm: 2.8 ms). GLOP is already a dependency and wins
every row, so it is the one backend. It is driven through OR-Tools' model
builder, which hands GLOP a fresh copy of the model per solve: the ``pywraplp``
interface kept state between solves (tied instances got different vertices in
a batch and in its reverse). GLOP runs without its presolve (see ``_build``).
On the flow LP ``ilp`` (CP-SAT) takes about 10x longer (1981 us in the same run).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from functools import partial
from types import ModuleType
from typing import Any

import numpy as np
import torch

from .._checks import check_sense
from ..errors import SolverError
from ._pooled import (
    PooledSolver,
    cached_model,
    check_time_limit,
    complete_pairs,
    constraint_pairs,
    pairs_size,
)
from .base import Sense
from .registry import register

#: Entries of a solution within this distance of an integer are set to it: the
#: basic solutions of integral totally unimodular LPs (flows, matchings) come out
#: as exact 0/1 instead of 0.9999999999999998.
INTEGER_SNAP = 1e-9


def _helpers() -> ModuleType:
    """OR-Tools' model builder helpers (the C++ model and GLOP), imported on first use."""
    from ortools.linear_solver.python import model_builder_helper

    return model_builder_helper


@dataclass(frozen=True, eq=False)
class _Problem:
    """The constraint data of one LP, as sent to the worker processes."""

    A: np.ndarray  # float64 [m, n]
    b: np.ndarray  # float64 [m]
    A_eq: np.ndarray  # float64 [p, n]
    b_eq: np.ndarray  # float64 [p]
    lower: np.ndarray  # float64 [n], -inf where unbounded
    upper: np.ndarray  # float64 [n], +inf where unbounded
    sense: str
    time_limit: float | None  # seconds per instance
    key: str  # identifies the problem in the per-thread model cache


@dataclass(eq=False)
class _Model:
    """One thread's GLOP model of a problem."""

    model: Any  # ModelBuilderHelper: the LP, objective replaced per instance
    solver: Any  # ModelSolverHelper("glop")
    variables: list[int]


def _build(problem: _Problem) -> _Model:
    helpers = _helpers()
    n = problem.lower.shape[0]
    model = helpers.ModelBuilderHelper()
    model.add_var_array_with_bounds(problem.lower, problem.upper, np.zeros(n, dtype=bool), "")
    rows = [
        (problem.A, np.full(problem.b.shape, -np.inf), problem.b),
        (problem.A_eq, problem.b_eq, problem.b_eq),
    ]
    for matrix, lower, upper in rows:
        for row, low, high in zip(matrix, lower.tolist(), upper.tolist()):
            constraint = model.add_linear_constraint()
            model.set_constraint_lower_bound(constraint, low)
            model.set_constraint_upper_bound(constraint, high)
            for j in np.flatnonzero(row).tolist():
                model.set_constraint_coefficient(constraint, j, float(row[j]))
    model.set_maximize(problem.sense == "max")
    # The model builder's solver hands GLOP a copy of the model at every solve:
    # each instance starts from scratch, never from the previous instance's basis,
    # so the vertex chosen for a tied objective depends on that instance alone.
    # (The pywraplp interface kept state across solves even with incrementality
    # off: a batch and its reverse gave different vertices on tied flow LPs.)
    solver = helpers.ModelSolverHelper("glop")
    # Without GLOP's presolve: faster on these LPs (measured, loaded machine: 59
    # against 108 us per flow LP, 1.2 against 1.7 ms per dense 100 x 100 LP, equal
    # on a sparse 50 x 200 one), and the plain simplex tells an infeasible problem
    # from an unbounded one, which presolve reports as INFEASIBLE alike.
    solver.set_solver_specific_parameters("use_preprocessing:false")
    if problem.time_limit is not None:
        solver.set_time_limit_in_seconds(problem.time_limit)
    return _Model(model, solver, list(range(n)))


def _solve_instance(problem: _Problem, theta: np.ndarray) -> np.ndarray:
    """Solve one instance ``theta [n]``; module level so that workers can run it."""
    lp = cached_model(problem.key, partial(_build, problem))
    # A positive factor changes no optimal x; on [-1, 1] GLOP's tolerances are
    # relative to the objective, and huge or tiny theta cannot overflow or vanish.
    largest = float(np.abs(theta).max(initial=0.0))
    # set_objective_coefficients skips zero coefficients (OR-Tools 9.15), which
    # would leave the previous instance's value in place: clear first. Clearing
    # may reset the direction too, so it is set again.
    lp.model.clear_objective()
    lp.model.set_maximize(problem.sense == "max")
    lp.model.set_objective_coefficients(lp.variables, (theta / largest if largest > 0 else theta).tolist())
    status_type = _helpers().SolveStatus
    lp.solver.solve(lp.model)
    status = lp.solver.status()
    if status == status_type.OPTIMAL:
        x = np.array(lp.solver.variable_values(), dtype=np.float64)
        nearest = np.rint(x)
        # + 0.0 turns the -0.0 of a snapped tiny negative into 0.0.
        return np.where(np.abs(x - nearest) <= INTEGER_SNAP, nearest, x) + 0.0
    if status == status_type.INFEASIBLE:
        raise SolverError(
            "infeasible: no x satisfies A x <= b, A_eq x = b_eq, lower <= x <= upper "
            "(the constraints are shared, so no instance of this solver has a solution)"
        )
    if status == status_type.UNBOUNDED:
        best = "minimum" if problem.sense == "min" else "maximum"
        raise SolverError(
            f"unbounded: <theta, x> has no finite {best} over the feasible set for this "
            "instance's theta; give finite lower/upper bounds or more constraints"
        )
    if problem.time_limit is not None and status in (status_type.NOT_SOLVED, status_type.FEASIBLE):
        raise SolverError(
            f"GLOP did not prove optimality within time_limit={problem.time_limit!r} s "
            f"(status {status.name}); raise time_limit or simplify the problem"
        )
    raise SolverError(f"GLOP stopped with status {status.name} without proving optimality")


def _bound(argument: str, value: Any, default: float) -> np.ndarray:
    """A bound as a float64 scalar or ``[n]``; None (the whole bound or an entry of a list) and +-inf mean unbounded."""
    if value is None:
        return np.array(default)
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    elif isinstance(value, (list, tuple)):
        value = [default if entry is None else entry for entry in value]
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"lp: {argument} must be a number, an array [n] or None, got {value!r}") from error
    if array.ndim > 1:
        raise ValueError(f"lp: {argument} must be a number, an array [n] or None, got shape {array.shape}")
    if np.isnan(array).any():
        raise ValueError(f"lp: {argument} must not contain NaN (use None or +-inf for no bound), got {value!r}")
    if (array == -default).any():
        raise ValueError(f"lp: {argument} must not be {-default} (no x satisfies it), got {value!r}")
    return array


class LP(PooledSolver):
    """Linear program per instance, solved exactly by OR-Tools' GLOP (primal/dual simplex).

    For each instance ``theta [n]`` of ``theta [*, n]`` it returns an optimal vertex

        x* = argmin / argmax <theta, x>   subject to   A x <= b,  A_eq x = b_eq,
                                                       lower <= x <= upper

    as float values in theta's dtype (computed in float64). ``lower``/``upper``
    entries may be None or +-inf (no bound); by default ``x >= 0`` and no upper
    bound. Each instance is one simplex solve that proves optimality, within
    GLOP's tolerances (about 1e-7 relative on feasibility and reduced costs:
    objective values agree with HiGHS to about 1e-9 relative in the tests).

    Vertices and integrality. The simplex returns a basic (vertex) solution, so
    an LP whose vertices are integral (a totally unimodular system with integral
    right-hand sides: shortest-path flows, bipartite matchings) gives an integral
    x. Entries within ``INTEGER_SNAP = 1e-9`` of an integer are set to that
    integer, so such LPs return exact 0/1 (a flow LP can then replace ``ilp``);
    the snap moves x by at most 1e-9 per entry, far inside GLOP's own
    feasibility tolerance, and leaves fractional vertices alone.

    Scaling: each instance's objective is divided by ``max_j |theta_j|`` before
    the solve (a positive factor changes no optimal x), so the tolerances are
    relative and any finite theta works.

    Ties: each instance is solved from scratch (no warm start from the previous
    instance), so the vertex returned for a tied objective depends on that
    instance's data alone: the same in a batch of any size or order, serially or
    in workers, for the same OR-Tools version.

    Failures: an infeasible problem (feasibility does not depend on theta, so it
    fails on the first instance solved) and an instance whose objective is
    unbounded over the feasible set raise :class:`~combgrad.SolverError` naming
    the instance index and saying "infeasible" or "unbounded".

    Args:
        A: Inequality matrix ``[m, n]`` (with ``b``), or None.
        b: Inequality right-hand side ``[m]``.
        A_eq: Equality matrix ``[p, n]`` (with ``b_eq``), or None.
        b_eq: Equality right-hand side ``[p]``.
        lower: Lower bounds: a number, ``[n]``, or None (no bound); default 0.
            Entries of -inf (or None, in a list) mean no bound.
        upper: Upper bounds: a number, ``[n]``, or None (default, no bound).
            Entries of +inf (or None, in a list) mean no bound.
        sense: "min" (default) or "max".
        workers: 0 (default) solves in this process; N > 0 uses the shared pool
            of N processes (:mod:`combgrad.pool`), worth it from about a
            millisecond per instance (a dense 100 x 100 LP; not a 40-variable
            flow LP at 0.1 ms); a script using it needs the usual
            ``if __name__ == "__main__":`` guard.
        time_limit: Seconds of simplex per instance, or None (default, no
            limit). An instance not solved in time raises
            :class:`~combgrad.SolverError` naming it.
        timeout: Seconds for one call (the whole batch), or None (default), as
            in :class:`~combgrad.solvers.ILP`: past it the call raises
            :class:`~combgrad.SolverError` naming the unfinished instances.
        executor: None (default), or a ``concurrent.futures.Executor`` or a
            ``dask.distributed.Client`` to solve the batch on, in chunks; not
            together with ``workers``. Each thread or process builds its own
            GLOP model once.

    ``n`` is taken from ``A``, else ``A_eq``, else array bounds.

    Raises:
        ValueError: On badly shaped or non-finite constraint data, NaN bounds,
            ``lower > upper``, ``lower=+inf`` or ``upper=-inf``, or an invalid
            option; when called, if theta's last dim is not ``n``.

    Example:
        >>> import torch, combgrad as cg
        >>> lp = cg.solvers.get("lp", A=[[1.0, 2.0]], b=[4.0], upper=3.0, sense="max")
        >>> lp(torch.tensor([[1.0, 1.0], [0.0, 1.0]]))
        tensor([[3.0000, 0.5000],
                [0.0000, 2.0000]])

        PyEPO's 2 x 2 shortest-path flow LP (arcs 0->1, 0->2, 1->3, 2->3) is
        totally unimodular, so the flow is an exact 0/1 path:

        >>> flow = [[-1, -1, 0, 0], [1, 0, -1, 0], [0, 1, 0, -1], [0, 0, 1, 1]]
        >>> path = cg.solvers.get("lp", A_eq=flow, b_eq=[-1, 0, 0, 1], upper=1)
        >>> path(torch.tensor([1.0, 2.0, 5.0, 1.0]))
        tensor([0., 1., 0., 1.])
    """

    name = "lp"
    event_ndim = 1

    def __init__(
        self,
        *,
        A: Any = None,
        b: Any = None,
        A_eq: Any = None,
        b_eq: Any = None,
        lower: Any = 0,
        upper: Any = None,
        sense: Sense = "min",
        workers: int = 0,
        time_limit: float | None = None,
        timeout: float | None = None,
        executor: Any = None,
    ) -> None:
        self.sense = check_sense("lp", sense)
        self.set_pool(workers, executor, timeout)
        time_limit = check_time_limit("lp", time_limit)
        pairs = constraint_pairs("lp", A, b, A_eq, b_eq)
        lower_array = _bound("lower", lower, -np.inf)
        upper_array = _bound("upper", upper, np.inf)
        n = pairs_size(pairs)
        if n is None:
            sizes = {array.shape[0] for array in (lower_array, upper_array) if array.ndim == 1}
            if not sizes:
                raise ValueError("lp: cannot tell the number of variables n: pass A, A_eq, or lower/upper as arrays [n]")
            if len(sizes) > 1:
                raise ValueError(
                    f"lp: lower and upper must have the same length n, got {lower_array.shape} and {upper_array.shape}"
                )
            n = sizes.pop()
        complete = complete_pairs("lp", pairs, n)
        for argument, array in (("lower", lower_array), ("upper", upper_array)):
            if array.ndim == 1 and array.shape[0] != n:
                raise ValueError(f"lp: {argument} must have n={n} entries (the number of variables), got shape {array.shape}")
        lower_array = np.broadcast_to(lower_array, (n,)).copy()
        upper_array = np.broadcast_to(upper_array, (n,)).copy()
        if (lower_array > upper_array).any():
            j = int(np.flatnonzero(lower_array > upper_array)[0])
            raise ValueError(
                f"lp: lower must be <= upper, got lower={lower_array[j]} > upper={upper_array[j]} for variable {j}"
            )
        self.n = n
        self._problem = _Problem(
            A=complete["A"][0],
            b=complete["A"][1],
            A_eq=complete["A_eq"][0],
            b_eq=complete["A_eq"][1],
            lower=lower_array,
            upper=upper_array,
            sense=self.sense,
            time_limit=time_limit,
            key=uuid.uuid4().hex,
        )
        # Build this thread's model now: OR-Tools is imported (and a broken
        # installation fails) at construction, not at the first call.
        cached_model(self._problem.key, partial(_build, self._problem))

    def check_event(self, theta: torch.Tensor, event_shape: tuple[int, ...]) -> None:
        if event_shape[0] != self.n:
            raise ValueError(
                f"lp: theta's last dim must be n={self.n} (the number of variables), got shape {tuple(theta.shape)}"
            )

    def solve_batch(self, theta: np.ndarray) -> np.ndarray:
        return np.stack(self.map_instances(partial(_solve_instance, self._problem), theta))

    def __repr__(self) -> str:
        return (
            f"LP(n={self.n}, inequalities={self._problem.A.shape[0]}, "
            f"equalities={self._problem.A_eq.shape[0]}, sense={self.sense!r}, {self.pool_repr()}, "
            f"time_limit={self._problem.time_limit})"
        )


register("lp", LP)

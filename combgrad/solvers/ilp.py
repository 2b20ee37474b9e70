"""``ilp``: integer linear programs ``opt <theta, x>`` solved exactly by OR-Tools CP-SAT.

OR-Tools is imported on the first construction of an :class:`ILP`, not by
``import combgrad`` (it takes a few hundred milliseconds to load).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from functools import partial
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .._checks import check_number, check_sense, scaled_integers
from ..errors import SolverError
from ._pooled import (
    PooledSolver,
    cached_model,
    check_time_limit,
    cp_sat_not_optimal,
    cp_sat_solver,
    complete_pairs,
    constraint_pairs,
    integer_objective,
    pairs_size,
)
from .base import Sense
from .registry import register

if TYPE_CHECKING:
    from ortools.sat.python import cp_model as cp_model_types

#: With ``objective_scale=None`` each instance's largest |coefficient| becomes this
#: integer (or less, see :class:`ILP`), so rounding changes no coefficient by more
#: than ``max|theta_i| / 2**31`` -- finer than float32 resolution.
AUTO_RESOLUTION = 2**30

# CP-SAT refuses models whose linear activity could overflow int64; keeping the
# objective's worst-case activity below 2**60 leaves it a safe margin.
_ACTIVITY_LIMIT = 2**60

# Data beyond 2**53 cannot be told apart from its float64 neighbours.
_EXACT_LIMIT = 2**53
_INTEGER_REASON = "CP-SAT needs integer data"

_INT64_MIN = -(2**63)


def _cp_model() -> ModuleType:
    """OR-Tools' CP-SAT module, imported on first use."""
    from ortools.sat.python import cp_model

    return cp_model


@dataclass(frozen=True, eq=False)
class _Problem:
    """The constraint data of one ILP, integral, as sent to the worker processes."""

    A: np.ndarray  # int64 [m, n]
    b: np.ndarray  # int64 [m]
    A_eq: np.ndarray  # int64 [p, n]
    b_eq: np.ndarray  # int64 [p]
    lower: np.ndarray  # int64 [n]
    upper: np.ndarray  # int64 [n]
    sense: str
    objective_scale: float | None
    resolution: int  # the automatic scale's target for max |coefficient|
    time_limit: float | None  # seconds per instance for CP-SAT's search
    key: str  # identifies the problem in the per-process model cache


def _build_model(problem: _Problem) -> cp_model_types.CpModel:
    """The CP-SAT model of the constraints, with an objective over every variable.

    Written straight into the model's proto: it is faster than the expression API
    and lets each instance replace only the objective's coefficients.
    """
    model = _cp_model().CpModel()
    proto = model.proto
    for low, high in zip(problem.lower.tolist(), problem.upper.tolist()):
        proto.variables.add().domain.extend([low, high])
    rows = [(problem.A, problem.b, False), (problem.A_eq, problem.b_eq, True)]
    for matrix, bound, equality in rows:
        for row, value in zip(matrix, bound.tolist()):
            support = np.flatnonzero(row)
            linear = proto.constraints.add().linear
            linear.vars.extend(support.tolist())
            linear.coeffs.extend(row[support].tolist())
            linear.domain.extend([value, value] if equality else [_INT64_MIN, value])
    proto.objective.vars.extend(range(problem.lower.shape[0]))
    return model


def _model_for(problem: _Problem) -> tuple[cp_model_types.CpModel, cp_model_types.CpSolver]:
    """This thread's model and solver of ``problem`` (built once, see :func:`cached_model`)."""
    return cached_model(problem.key, partial(_build_model_and_solver, problem))


def _build_model_and_solver(problem: _Problem) -> tuple[cp_model_types.CpModel, cp_model_types.CpSolver]:
    return _build_model(problem), cp_sat_solver(problem.time_limit)


def _solve_instance(problem: _Problem, theta: np.ndarray) -> np.ndarray:
    """Solve one instance ``theta [n]`` exactly; module level so workers can run it."""
    model, solver = _model_for(problem)
    coefficients = integer_objective(theta, problem.objective_scale, problem.resolution)
    if problem.sense == "max":
        coefficients = -coefficients
    objective = model.proto.objective
    objective.coeffs.clear()
    objective.coeffs.extend(coefficients.tolist())
    status = solver.solve(model)
    cp_model = _cp_model()
    if status == cp_model.OPTIMAL:
        solution = solver.response_proto.solution
        return np.fromiter(solution, dtype=np.float64, count=theta.shape[0])
    if status == cp_model.INFEASIBLE:
        raise SolverError(
            "infeasible: no integer x satisfies A x <= b, A_eq x = b_eq, lower <= x <= upper "
            "(the constraints are shared, so no instance of this solver has a solution)"
        )
    raise cp_sat_not_optimal(model, solver, status, problem.time_limit)


class ILP(PooledSolver):
    """Integer linear program per instance, solved exactly by OR-Tools CP-SAT.

    For each instance ``theta [n]`` of ``theta [*, n]`` it returns an optimal

        x* = argmin / argmax <theta, x>   subject to   A x <= b,  A_eq x = b_eq,
                                                       lower <= x <= upper,  x integer

    as float values in theta's dtype. Each instance is one CP-SAT search with one
    search worker (``num_workers=1``), which proves optimality; the batch is the
    parallel dimension (``workers=N`` runs it in N processes).

    What is exact and what is rounded. CP-SAT works with integers only.

    * Constraints are exact: ``A``, ``b``, ``A_eq``, ``b_eq`` must be integral after
      multiplying by ``constraint_scale`` (default 1; e.g. 100 for data with two
      decimals; multiplying a whole constraint by a positive number keeps its
      solutions), and ``lower``, ``upper`` must be integral. Other data raises
      ValueError rather than being rounded silently.
    * The objective is rounded: x* is optimal for ``c_i = round(s_i * theta_i)``.
      With ``objective_scale=None`` (default) ``s_i = R / max_j |theta_ij|`` per
      instance, with ``R = min(2**30, 2**60 // sum_j max(|lower_j|, |upper_j|))``, so
      each coefficient moves by at most ``max_j |theta_ij| / (2 R)``. With a fixed
      ``objective_scale=s``, ``s_i = s`` for all instances; if ``s * theta`` is
      integral (integer theta and ``s=1``) the result is exactly optimal for theta.
      In every case ``<theta_i, x*>`` is within ``sum_j (upper_j - lower_j) / (2 s_i)``
      of the true optimum (rounding perturbs each coefficient by at most
      ``1 / (2 s_i)``), and exact ties as well as near-ties closer than that can be
      resolved either way.

    Ties: among optimal solutions of the rounded problem, the one CP-SAT's
    single-worker search finds; deterministic for the same data and OR-Tools
    version, in this process or a worker.

    Infeasibility: feasibility does not depend on theta, so an infeasible problem
    fails on the first instance solved: a :class:`~combgrad.SolverError` whose
    message says "infeasible" and names that instance's index. Nothing is dropped.

    Args:
        A: Inequality matrix ``[m, n]`` (with ``b``), or None.
        b: Inequality right-hand side ``[m]``.
        A_eq: Equality matrix ``[p, n]`` (with ``b_eq``), or None.
        b_eq: Equality right-hand side ``[p]``.
        lower: Lower bounds: an integer or ``[n]``; default 0.
        upper: Upper bounds: an integer or ``[n]``; default 1 (binary x).
        sense: "min" (default) or "max".
        workers: 0 (default) solves in this process; N > 0 uses the shared pool of
            N processes (:mod:`combgrad.pool`), worth it from about a
            millisecond per instance; a script using it needs the usual
            ``if __name__ == "__main__":`` guard.
        objective_scale: None for the per-instance automatic scale above, or a
            positive factor applied to every instance.
        constraint_scale: Positive factor applied to ``A``, ``b``, ``A_eq``, ``b_eq``
            before the integrality check; default 1.
        time_limit: Seconds of CP-SAT search per instance, or None (default, no
            limit). An instance whose optimum is not proven in time raises
            :class:`~combgrad.SolverError` naming it (no unproven solution is
            returned silently).
        timeout: Seconds for one call (the whole batch), or None (default). Past
            it the call raises :class:`~combgrad.SolverError` naming the
            unfinished instances and the pool's workers are replaced; with
            ``workers=0`` it is checked between instances; on an executor the
            unfinished tasks are cancelled (Dask workers still running them are
            restarted).
        executor: None (default), or a ``concurrent.futures.Executor`` or a
            ``dask.distributed.Client`` to solve the batch on (a cluster), in
            chunks sized so per-task overhead stays under 10 % of solving time;
            not together with ``workers``. Dask workers need combgrad and
            OR-Tools installed.

    Interrupts: a Ctrl-C (KeyboardInterrupt) is never turned into a
    SolverError. With ``workers=0`` it takes effect when the running instance's
    search returns (bounded by ``time_limit``); with workers it stops the call at
    once and kills the workers that ran it, and the next call works at once.

    ``n`` is taken from ``A``, else ``A_eq``, else array bounds.

    Raises:
        ValueError: On non-integral or badly shaped data, ``lower > upper``, an
            invalid option, or data too large for CP-SAT's 64-bit arithmetic;
            when called, if theta's last dim is not ``n`` or (fixed
            ``objective_scale``) a scaled objective could overflow.

    Example:
        >>> import torch, combgrad as cg
        >>> knapsack = cg.solvers.get("ilp", A=[[2, 3, 4]], b=[5], sense="max")
        >>> knapsack(torch.tensor([3.0, 4.0, 8.0]))
        tensor([0., 0., 1.])
        >>> knapsack(torch.tensor([[3.0, 4.0, 5.0], [1.0, 1.0, 5.0]]))
        tensor([[1., 1., 0.],
                [0., 0., 1.]])
    """

    name = "ilp"
    event_ndim = 1

    def __init__(
        self,
        *,
        A: Any = None,
        b: Any = None,
        A_eq: Any = None,
        b_eq: Any = None,
        lower: Any = 0,
        upper: Any = 1,
        sense: Sense = "min",
        workers: int = 0,
        objective_scale: float | None = None,
        constraint_scale: float = 1.0,
        time_limit: float | None = None,
        timeout: float | None = None,
        executor: Any = None,
    ) -> None:
        self.sense = check_sense("ilp", sense)
        self.set_pool(workers, executor, timeout)
        time_limit = check_time_limit("ilp", time_limit)
        if objective_scale is not None:
            objective_scale = check_number("ilp", "objective_scale", objective_scale, positive=True)
        constraint_scale = check_number("ilp", "constraint_scale", constraint_scale, positive=True)

        pairs: dict[str, Any] = {
            matrix_name: None
            if pair is None
            else tuple(
                scaled_integers("ilp", name, array, constraint_scale, "constraint_scale", reason=_INTEGER_REASON)
                for name, array in zip((matrix_name, "b" + matrix_name[1:]), pair)
            )
            for matrix_name, pair in constraint_pairs("ilp", A, b, A_eq, b_eq).items()
        }

        lower_array = self._bound("lower", lower)
        upper_array = self._bound("upper", upper)
        n = self._size(pairs, lower_array, upper_array)
        pairs = complete_pairs("ilp", pairs, n, np.int64)
        lower_array = np.broadcast_to(lower_array, (n,)).copy()
        upper_array = np.broadcast_to(upper_array, (n,)).copy()
        if (lower_array > upper_array).any():
            j = int(np.flatnonzero(lower_array > upper_array)[0])
            raise ValueError(
                f"ilp: lower must be <= upper, got lower={lower_array[j]} > upper={upper_array[j]} "
                f"for variable {j}"
            )

        # Python ints: an int64 sum could overflow for many wide variables.
        magnitude = sum(np.maximum(np.abs(lower_array), np.abs(upper_array)).tolist())
        self._magnitude = max(magnitude, 1)
        resolution = min(AUTO_RESOLUTION, _ACTIVITY_LIMIT // self._magnitude)
        if resolution < 1:
            raise ValueError(
                f"ilp: the bounds are too wide for CP-SAT's 64-bit objective: "
                f"sum_j max(|lower_j|, |upper_j|) = {magnitude} exceeds 2**60"
            )
        self.n = n
        self._problem = _Problem(
            A=pairs["A"][0],
            b=pairs["A"][1],
            A_eq=pairs["A_eq"][0],
            b_eq=pairs["A_eq"][1],
            lower=lower_array,
            upper=upper_array,
            sense=self.sense,
            objective_scale=objective_scale,
            resolution=resolution,
            time_limit=time_limit,
            key=uuid.uuid4().hex,
        )
        self._validate_model()

    @staticmethod
    def _bound(argument: str, value: Any) -> np.ndarray:
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().numpy()
        try:
            array = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"ilp: {argument} must be an integer or an array [n] of integers, got {value!r}"
            ) from error
        if array.ndim > 1:
            raise ValueError(
                f"ilp: {argument} must be an integer or an array [n] of integers, got shape {array.shape}"
            )
        if not np.isfinite(array).all():
            raise ValueError(
                f"ilp: {argument} must be finite (CP-SAT needs bounded integer variables), got {value!r}"
            )
        return scaled_integers("ilp", argument, array, 1.0, "", reason=_INTEGER_REASON)

    @staticmethod
    def _size(pairs: dict[str, Any], lower: np.ndarray, upper: np.ndarray) -> int:
        size = pairs_size(pairs)
        if size is not None:
            return size
        sizes = {array.shape[0] for array in (lower, upper) if array.ndim == 1}
        if not sizes:
            raise ValueError(
                "ilp: cannot tell the number of variables n: pass A, A_eq, or lower/upper as arrays [n]"
            )
        if len(sizes) > 1:
            raise ValueError(
                f"ilp: lower and upper must have the same length n, got {lower.shape} and {upper.shape}"
            )
        return sizes.pop()

    def _validate_model(self) -> None:
        """Let CP-SAT check the model (64-bit overflow) once, with a worst-case objective."""
        model, _ = _model_for(self._problem)
        objective = model.proto.objective
        objective.coeffs.clear()
        objective.coeffs.extend([self._problem.resolution] * self.n)
        message = model.validate()
        if message:
            raise ValueError(f"ilp: CP-SAT cannot represent this problem (data too large?): {message}")

    def check_event(self, theta: torch.Tensor, event_shape: tuple[int, ...]) -> None:
        if event_shape[0] != self.n:
            raise ValueError(
                f"ilp: theta's last dim must be n={self.n} (the number of variables), "
                f"got shape {tuple(theta.shape)}"
            )
        scale = self._problem.objective_scale
        if scale is not None and theta.numel():
            largest = theta.detach().abs().reshape(-1, self.n).amax(dim=1).double() * scale
            too_large = largest * self._magnitude > _ACTIVITY_LIMIT
            if bool(too_large.any()):
                index = int(torch.nonzero(too_large)[0, 0])
                raise ValueError(
                    f"ilp: objective_scale={scale!r} makes instance {index}'s objective too large "
                    f"for CP-SAT (max|theta * scale| = {float(largest[index]):.3g}); use a smaller "
                    "objective_scale or objective_scale=None"
                )

    def solve_batch(self, theta: np.ndarray) -> np.ndarray:
        return np.stack(self.map_instances(partial(_solve_instance, self._problem), theta))

    def __repr__(self) -> str:
        return (
            f"ILP(n={self.n}, inequalities={self._problem.A.shape[0]}, "
            f"equalities={self._problem.A_eq.shape[0]}, sense={self.sense!r}, {self.pool_repr()}, "
            f"time_limit={self._problem.time_limit})"
        )


register("ilp", ILP)

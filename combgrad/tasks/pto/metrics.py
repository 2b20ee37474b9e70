"""Decision quality of predicted costs: regret, PyEPO's metric, computed in float64.

The regret of a prediction ``c_hat`` for an instance with true costs ``c`` is the
true cost of the decision taken under ``c_hat`` minus the best true cost:
``<c, w*(c_hat)> - <c, w*(c)>`` for a "min" problem, ``<c, w*(c)> - <c, w*(c_hat)>``
for a "max" one, so it is >= 0 in both senses. PyEPO's *normalized* regret sums it
over instances and divides by the sum of ``|<c, w*(c)>|``.

Everything here runs in float64: PyEPO stores costs and optimal objectives in
float32, and on 339 of 1000 shortest-path instances its stored objective differed
from the recomputed one, which biases any loss or metric that reads it.

References:
    A. N. Elmachtoub, P. Grigas. Smart "Predict, then Optimize". Management
    Science 68(1), 2022.

    B. Tang, E. B. Khalil. PyEPO: A PyTorch-based End-to-End Predict-then-Optimize
    Library for Linear and Integer Programming. Mathematical Programming Computation, 2024.
"""

from __future__ import annotations

from typing import Any

import torch

from ..._checks import check_bool, check_choice, check_same_shape, check_tensor

REDUCTIONS = ("sum", "mean", "none")


def _solve(solver: Any, costs: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return solver(costs).to(torch.float64)


def _costs(owner: str, argument: str, value: Any) -> torch.Tensor:
    tensor = check_tensor(owner, argument, value)
    if tensor.ndim < 1:
        raise ValueError(f"{owner}: {argument} must have at least 1 dim [*, m], got shape {tuple(tensor.shape)}")
    if not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"{owner}: {argument} must be finite, got non-finite entries")
    return tensor.detach().to(torch.float64)


def optimal_objective(solver: Any, cost_true: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The optimal solutions ``w*(c) [*, m]`` and objectives ``<c, w*(c)> [*]``, in float64.

    Example:
        >>> import combgrad as cg
        >>> knapsack = cg.solvers.get("knapsack", weights=[3, 4, 2], capacity=5)
        >>> solutions, objectives = optimal_objective(knapsack, torch.tensor([[4.0, 5.0, 3.0]]))
        >>> solutions.tolist(), objectives.tolist()
        ([[1.0, 0.0, 1.0]], [7.0])
    """
    costs = _costs("optimal_objective", "cost_true", cost_true)
    solutions = _solve(solver, costs)
    return solutions, (solutions * costs).sum(-1)


def regret(
    solver: Any,
    cost_pred: torch.Tensor,
    cost_true: torch.Tensor,
    *,
    normalized: bool = True,
    reduction: str = "sum",
    objective_true: torch.Tensor | None = None,
) -> torch.Tensor:
    """Regret of the decisions taken under ``cost_pred``, measured with ``cost_true`` (PyEPO's definition).

    Per instance ``r_i = sign * (<c_i, w*(c_hat_i)> - z_i)`` with ``z_i = <c_i, w*(c_i)>``,
    ``sign = +1`` for a "min" solver and ``-1`` for "max". ``normalized=True``
    divides by ``|z|`` reduced the same way: with ``reduction="sum"`` (the default)
    that is PyEPO's normalized regret ``sum_i r_i / sum_i |z_i|``; with ``"none"`` it
    is each instance's ``r_i / |z_i|``; ``"mean"`` gives the mean regret (normalized,
    the same number as ``"sum"``). Computed in float64 whatever the inputs' dtype;
    ties between optimal decisions do not matter (they have the same true cost).

    Args:
        solver: A combgrad solver (``sense``, ``__call__``) of the problem.
        cost_pred: Predicted costs ``[*, m]``.
        cost_true: True costs ``[*, m]``.
        normalized: Divide by the optimal objectives' magnitude.
        reduction: ``"sum"``, ``"mean"`` or ``"none"`` (per instance, ``[*]``).
        objective_true: The optimal objectives ``z [*]`` if already known (saves a
            solver call; see :func:`optimal_objective`).

    Returns:
        A float64 scalar, or ``[*]`` for ``reduction="none"``.

    Raises:
        ValueError: On mismatched shapes, non-finite costs, or a bad ``reduction``.

    Example:
        >>> import combgrad as cg
        >>> knapsack = cg.solvers.get("knapsack", weights=[3, 4, 2], capacity=5)  # a "max" problem
        >>> values = torch.tensor([[4.0, 5.0, 3.0], [1.0, 1.0, 1.0]])
        >>> guess = torch.tensor([[1.0, 5.0, 1.0], [1.0, 1.0, 1.0]])  # first: takes item 1 (5), best is 7
        >>> regret(knapsack, guess, values, normalized=False, reduction="none").tolist()
        [2.0, 0.0]
        >>> round(float(regret(knapsack, guess, values)), 6)  # (2 + 0) / (7 + 2)
        0.222222

    References:
        B. Tang, E. B. Khalil. PyEPO: A PyTorch-based End-to-End Predict-then-Optimize
        Library for Linear and Integer Programming. Mathematical Programming Computation, 2024.
    """
    owner = "regret"
    check_bool(owner, "normalized", normalized)
    check_choice(owner, "reduction", reduction, REDUCTIONS)
    predicted = _costs(owner, "cost_pred", cost_pred)
    costs = _costs(owner, "cost_true", cost_true)
    costs = check_same_shape(owner, "cost_true", costs, predicted)
    if objective_true is None:
        _, objectives = optimal_objective(solver, costs)
    else:
        objectives = _costs(owner, "objective_true", objective_true)
        if objectives.shape != costs.shape[:-1]:
            raise ValueError(
                f"{owner}: objective_true must have shape {tuple(costs.shape[:-1])} (one per instance), "
                f"got {tuple(objectives.shape)}"
            )
    decisions = _solve(solver, predicted)
    taken = (decisions * costs).sum(-1)
    # A difference in the sense's order rather than a sign times it: no -0.0 entries.
    per_instance = taken - objectives if solver.sense == "min" else objectives - taken
    scale = objectives.abs()
    if reduction == "none":
        return per_instance / scale if normalized else per_instance
    total = per_instance.sum() if reduction == "sum" else per_instance.mean()
    if not normalized:
        return total
    magnitude = scale.sum() if reduction == "sum" else scale.mean()
    # PyEPO adds 1e-7 to the denominator; an all-zero optimum is the only case where it matters.
    return total / (magnitude + 1e-7)


__all__ = ["REDUCTIONS", "optimal_objective", "regret"]

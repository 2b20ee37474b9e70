"""Perturbation-gradient losses (Gupta & Huang, 2024): ``cg.losses.pg``."""

from __future__ import annotations

from typing import Any

import torch

from ..._checks import check_choice, check_number, check_theta
from ..base import event_sum, score_sign, solve_scores
from ._common import check_target, no_blame, refuse_negative_inputs, resolve

_PG_OPTIONS = ("solver", "step", "theta", "theta_true", "variant")


def pg(
    theta: torch.Tensor,
    theta_true: torch.Tensor,
    *,
    solver: Any,
    step: float = 0.1,
    variant: str = "backward",
    **solver_options: Any,
) -> torch.Tensor:
    """Perturbation-gradient (PG) loss of predicted costs ``theta`` against true costs ``theta_true``, per instance.

    With ``z(c) = opt_y <c, y>`` the solver's optimal value, the decision's true
    cost ``<theta_true, y*(theta)>`` is the derivative of ``z`` at ``theta`` in the
    direction ``theta_true``; PG replaces it by a finite difference of width
    ``h = step``, whose gradient in ``theta`` is informative where the solution
    itself is piecewise constant (Gupta and Huang). As PyEPO's ``PG``, for a
    "min" solver (``y_-`` = the solution at ``theta - h theta_true``, ``y_+`` at
    ``theta + h theta_true``):

    * ``variant="backward"`` (PGB, PyEPO's ``two_sides=False``):
      ``(<theta, y*(theta)> - <theta - h theta_true, y_->) / h``;
    * ``variant="central"`` (PGC, ``two_sides=True``):
      ``(<theta + h theta_true, y_+> - <theta - h theta_true, y_->) / (2 h)``;

    and the negative of the same expression for a "max" solver (whose decision
    value is to be maximized; PyEPO's ``sign``). In score space
    (``s = sign theta``, ``s_true = sign theta_true``, ``V(s) = max_y <s, y>``) both
    senses read ``(V(s - h s_true) - V(s)) / h`` and
    ``(V(s - h s_true) - V(s + h s_true)) / (2 h)``: ``-<s_true, y*(s)>`` up to
    ``O(h)``. Solutions are held constant, so the gradient is the difference of
    solutions over the width (``(y*(theta) - y_-) / h`` for "min", backward).

    One batched solver call solves both shifted inputs. Unlike PyEPO, the width
    has no ``1e-8`` added (``step > 0`` is checked instead). PyEPO averages over
    the batch (``reduction="mean"``); this returns one value per instance. For
    PyEPO's ``solve_ratio`` caching pass ``solver=cg.adapters.SolutionPool(...)``.

    Args:
        theta: Predicted costs (or values, for a "max" solver) ``[*, *event]``.
        theta_true: True costs, same shape, finite (the direction of the difference).
        solver: A solver (or a ``SolutionPool``) or its registry name
            (configured by ``**solver_options``).
        step: The finite-difference width ``h > 0`` (PyEPO's ``sigma``, default 0.1).
        variant: ``"backward"`` (default, one shifted input) or ``"central"`` (two).

    Returns:
        ``[*]``, one loss per instance.

    Raises:
        ValueError: On mismatched shapes, non-finite values, a bad ``step`` or
            ``variant``, or a solver with ``accepts_negative = False`` when a
            shifted input has negative entries (the clipped problem would give a
            wrong loss).
        OptionError: On an option that neither the loss nor the solver takes.

    Example:
        >>> import torch, combgrad as cg
        >>> costs = torch.tensor([[2.0, 1.0, 3.0]], requires_grad=True)
        >>> true_costs = torch.tensor([[1.0, 4.0, 2.0]])
        >>> solver = cg.solvers.get("argmax")  # a "max" problem: pick the best of three
        >>> cg.losses.pg(costs, true_costs, solver=solver, step=0.5)  # -(3 - 2) / 0.5 = -true[2]
        tensor([-2.], grad_fn=<NegBackward0>)
        >>> loss = cg.losses.pg(costs, true_costs, solver=solver, step=2.0)  # costs - 2 true picks e_0
        >>> loss.backward()  # -(<costs, e_2> - <costs - 2 true, e_0>) / 2, so the gradient is -(e_2 - e_0) / 2
        >>> loss.detach(), costs.grad
        (tensor([-1.5000]), tensor([[ 0.5000,  0.0000, -0.5000]]))

    References:
        V. Gupta, M. Huang. Decision-Focused Learning with Directional
        Gradients. NeurIPS 2024.
    """
    owner = "pg"
    width = check_number(owner, "step", step, positive=True)
    check_choice(owner, "variant", variant, ("backward", "central"))
    solver = resolve(owner, solver, solver_options, _PG_OPTIONS)
    theta = check_theta(owner, theta, solver.event_ndim)
    costs_true = check_target(owner, "theta_true", theta_true, theta).detach()
    event_ndim = solver.event_ndim
    with torch.no_grad():
        base = theta.detach()
        minus = base - width * costs_true
        inputs = [base + width * costs_true if variant == "central" else base, minus]
        shifted = "a shifted input theta -/+ step * theta_true"
        refuse_negative_inputs(owner, solver, [(shifted, values) for values in inputs], remedy="a smaller step")
        sign = score_sign(solver.sense)
        # Both shifted inputs in one solver call; theta and theta_true are checked,
        # so the solver input's check only catches an overflow of the shift.
        y_first, y_minus = solve_scores(solver, sign * torch.stack(inputs), owner=owner, blame=no_blame)
    shift = width * costs_true
    if variant == "central":
        difference = event_sum((theta + shift) * y_first - (theta - shift) * y_minus, event_ndim) / (2 * width)
    else:
        difference = event_sum(theta * y_first - (theta - shift) * y_minus, event_ndim) / width
    # PyEPO's sign: the value of a "min" decision is a cost, that of a "max" decision a reward.
    return -difference if sign > 0 else difference

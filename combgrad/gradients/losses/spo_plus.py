"""The SPO+ loss of smart predict-then-optimize (Elmachtoub & Grigas, 2022): ``cg.losses.spo_plus``."""

from __future__ import annotations

from typing import Any

import torch

from ..._checks import check_theta, rename_deprecated
from ...errors import OptionError
from ..base import event_sum, score_sign, solve_scores
from ._common import check_target, no_blame, refuse_negative_inputs, resolve

_SPO_PLUS_OPTIONS = ("solver", "theta", "theta_true", "y_true")


def spo_plus(
    theta: torch.Tensor | None = None,
    theta_true: torch.Tensor | None = None,
    *,
    solver: Any,
    y_true: torch.Tensor | None = None,
    **solver_options: Any,
) -> torch.Tensor:
    """SPO+ loss of predicted costs ``theta`` against true costs ``theta_true``, per instance.

    For a "min" solver with ``w*(c)`` its solution (Elmachtoub and Grigas),
    ``SPO+(c_hat, c) = max_w <c - 2 c_hat, w> + 2 <c_hat, w*(c)> - <c, w*(c)>``, with
    ``max_w <c - 2 c_hat, w> = <c - 2 c_hat, w*(2 c_hat - c)>``. A "max" problem
    (PyEPO supports both senses) is the "min" problem of ``-c``; substituting
    ``c -> -c``, ``c_hat -> -c_hat`` gives
    ``max_w <2 c_hat - c, w> - 2 <c_hat, w*(c)> + <c, w*(c)>``, where now ``w*`` is the
    maximizer and the max is attained at ``w*(2 c_hat - c)``. In both senses the
    solver is called on ``2 theta - theta_true``, and the loss is

    ``SPO+ = sign * <2 theta - theta_true, w*(2 theta - theta_true) - w*(theta_true)>``,

    ``sign = -1`` for "min" and ``+1`` for "max": ``>= 0`` for an exact solver (the
    first solution is optimal for ``2 theta - theta_true``), 0 at
    ``theta = theta_true``, with subgradient
    ``2 sign (w*(2 theta - theta_true) - w*(theta_true))`` in ``theta``.

    ``2 theta - theta_true`` is often negative early in training. A solver that
    would clip or refuse negative costs (``accepts_negative = False``, e.g. the
    grid ``shortest_path``, which reads negative costs as 0) would give a wrong
    loss and subgradient, so it is refused with a ValueError instead.

    Args:
        theta: Predicted costs (or values, for a "max" solver) ``[*, *event]``
            (alias ``theta_hat``, deprecated).
        theta_true: True costs, same shape, finite (alias ``c_true``, deprecated).
        solver: A solver or its registry name (configured by ``**solver_options``).
        y_true: ``w*(theta_true)`` if already known (saves one solver call).

    Returns:
        ``[*]``, one loss per instance.

    Raises:
        ValueError: On mismatched shapes, non-finite values, or a solver with
            ``accepts_negative = False`` when ``2 theta - theta_true`` (or
            ``theta_true``, when it is solved) has negative entries.
        OptionError: On an option that neither the loss nor the solver takes.

    Example:
        >>> import torch, combgrad as cg
        >>> c_true = torch.tensor([[1.0, 5.0], [1.0, 1.0]])
        >>> c_hat = torch.tensor([[1.0, 3.0], [9.0, 1.0]], requires_grad=True)
        >>> loss = cg.losses.spo_plus(c_hat, c_true, solver="shortest_path", neighbourhood=4)
        >>> loss.backward()  # 2 (w*(c) - w*(2 c_hat - c)): the true path goes down, the other right
        >>> loss.detach(), c_hat.grad
        (tensor(16.), tensor([[ 0., -2.],
                [ 2.,  0.]]))
        >>> values = torch.tensor([4.0, 5.0, 3.0])  # a "max" problem: knapsack
        >>> guess = torch.tensor([1.0, 5.0, 1.0], requires_grad=True)
        >>> cg.losses.spo_plus(guess, values, solver="knapsack", weights=[3, 4, 2], capacity=5)
        tensor(8., grad_fn=<SumBackward1>)

    References:
        A. N. Elmachtoub, P. Grigas. Smart "Predict, then Optimize". Management
        Science 68(1), 2022.
    """
    owner = "spo_plus"
    given: dict[str, Any] = {}
    if theta is not None:
        given["theta"] = theta
    if theta_true is not None:
        given["theta_true"] = theta_true
    for old in ("theta_hat", "c_true"):
        if old in solver_options:
            given[old] = solver_options.pop(old)
    given = rename_deprecated(owner, given, {"theta_hat": "theta", "c_true": "theta_true"})
    missing = [name for name in ("theta", "theta_true") if name not in given]
    if missing:
        raise OptionError(f"{owner}: missing argument{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    solver = resolve(owner, solver, solver_options, _SPO_PLUS_OPTIONS)
    theta = check_theta(owner, given["theta"], solver.event_ndim)
    costs_true = check_target(owner, "theta_true", given["theta_true"], theta).detach()
    if y_true is not None:
        y_true = check_target(owner, "y_true", y_true, theta).detach()
    with torch.no_grad():
        shifted = 2 * theta.detach() - costs_true
        inputs = [("2 * theta - theta_true", shifted)] + ([("theta_true", costs_true)] if y_true is None else [])
        refuse_negative_inputs(owner, solver, inputs, remedy="keep theta >= theta_true / 2")
        # One solver call for both inputs; theta and theta_true were checked above,
        # so the solver input's check only catches an overflow of 2 * theta - theta_true.
        sign = score_sign(solver.sense)
        if y_true is None:
            y_shifted, y_true = solve_scores(solver, sign * torch.stack([shifted, costs_true]), owner=owner, blame=no_blame)
        else:
            y_shifted = solve_scores(solver, sign * shifted, owner=owner, blame=no_blame)
    # sign * (y_shifted - y_true), written as a difference so that the gradient has no -0.
    difference = y_shifted - y_true if score_sign(solver.sense) > 0 else y_true - y_shifted
    return event_sum((2 * theta - costs_true) * difference, solver.event_ndim)

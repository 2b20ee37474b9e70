"""Losses for learning through solvers: Fenchel-Young, SPO+, Hamming (``cg.losses``).

All three return one value per instance, ``[*batch]``, and are differentiable
with plain autograd: each is written so that its autograd gradient is the
loss's known (sub)gradient, with solver outputs held constant.

References:
    Q. Berthet, M. Blondel, O. Teboul, M. Cuturi, J.-P. Vert, F. Bach. Learning
    with Differentiable Perturbed Optimizers. NeurIPS 2020.

    A. N. Elmachtoub, P. Grigas. Smart "Predict, then Optimize". Management
    Science 68(1), 2022.
"""

from __future__ import annotations

from typing import Any

import torch

from .._checks import check_positive_int, check_theta
from . import noise as noise_module
from .._checks import check_number
from .base import check_noise_options, draw_noise, event_sum, resolve_solver, score_sign, solve_perturbed

__all__ = ["fenchel_young", "hamming", "spo_plus"]


def _check_same_shape(owner: str, argument: str, value: object, reference: torch.Tensor) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{owner}: {argument} must be a torch.Tensor, got {type(value).__name__}")
    if value.shape != reference.shape:
        raise ValueError(
            f"{owner}: {argument} must have the shape of the prediction {tuple(reference.shape)}, "
            f"got {tuple(value.shape)}"
        )
    return value.to(dtype=reference.dtype, device=reference.device)


def fenchel_young(
    theta: torch.Tensor,
    y_true: torch.Tensor,
    *,
    solver: Any,
    sigma: float = 1.0,
    noise: str = "gumbel",
    samples: int = 10,
    generator: torch.Generator | None = None,
    **solver_options: Any,
) -> torch.Tensor:
    """Perturbed Fenchel-Young loss ``F(s) - <s, y_true>`` per instance, by Monte Carlo.

    In score space (``s = theta`` for a "max" solver, ``-theta`` for "min"),
    ``F(s) = E max_y <s + sigma Z, y>``. The estimate is

    ``mean_i <s + sigma Z_i, y_i - y_true> + sigma E[Z] sum(y_true)``,  ``y_i = y*(s + sigma Z_i)``,

    which is unbiased for ``F(s) - <s, y_true>`` (the known mean of
    ``<sigma Z_i, y_true>`` replaces its sample value, a control variate). Its
    gradient is ``mean_i y_i - y_true`` in score space (``-(...)`` with respect to
    the costs of a "min" solver). When ``y_true`` is a feasible solution and the
    solver is exact, every term ``<s + sigma Z_i, y_i - y_true>`` is ``>= 0``, so
    the estimate is ``>= sigma E[Z] sum(y_true)``, which is ``>= 0`` for 0/1 targets
    (``E[Z]`` is 0 for normal and Euler's constant for Gumbel noise). A
    fractional ``y_true`` or an inexact solver (shortest_path clipping negative
    perturbed costs to 0) can make a single estimate slightly negative; its
    expectation is still the true value.

    Args:
        theta: Scores or costs ``[*, *event]``.
        y_true: Target solutions, same shape.
        solver: A registry name (configured by ``**solver_options``) or a solver.
        sigma: Noise scale ``> 0``.
        noise: ``"gumbel"`` (default) or ``"normal"``.
        samples: Number of draws ``>= 1``; all solved in one batched call.
        generator: Optional ``torch.Generator`` for the draws.

    Returns:
        ``[*]``, one loss per instance.

    Raises:
        ValueError: On invalid options or a ``y_true`` of another shape.
        TypeError: On options that the solver does not take.

    Example:
        >>> import torch, combgrad as cg
        >>> theta = torch.tensor([[0.0, 2.0, 1.0]], requires_grad=True)
        >>> y_true = torch.tensor([[0.0, 0.0, 1.0]])
        >>> loss = cg.losses.fenchel_young(theta, y_true, solver="topk", k=1, sigma=1.0, samples=20000,
        ...                                generator=torch.Generator().manual_seed(0))
        >>> loss.backward()  # softmax(theta) - y_true = [0.09, 0.67, -0.76]
        >>> theta.grad.round(decimals=1)
        tensor([[ 0.1000,  0.7000, -0.8000]])

    References:
        Q. Berthet, M. Blondel, O. Teboul, M. Cuturi, J.-P. Vert, F. Bach.
        Learning with Differentiable Perturbed Optimizers. NeurIPS 2020.
    """
    check_positive_int("fenchel_young", "samples", samples)
    check_number("fenchel_young", "sigma", sigma, positive=True)
    check_noise_options("fenchel_young", noise, None, 1, ("gumbel", "normal"))
    solver = resolve_solver("fenchel_young", solver, solver_options)
    check_theta("fenchel_young", theta, solver.event_ndim)
    y_true = _check_same_shape("fenchel_young", "y_true", y_true, theta)
    event_ndim = solver.event_ndim
    scores = score_sign(solver.sense) * theta
    draws = draw_noise(noise, samples, theta.detach(), generator=generator)
    with torch.no_grad():
        solutions = solve_perturbed(solver, scores.detach(), draws, sigma)
    # Solutions are constants here, so autograd's gradient is mean_i y_i - y_true
    # (Danskin's theorem for the max inside F).
    terms = event_sum((scores.unsqueeze(0) + sigma * draws) * (solutions - y_true), event_ndim)
    return terms.mean(0) + sigma * noise_module.mean(noise) * event_sum(y_true, event_ndim)


def spo_plus(
    theta_hat: torch.Tensor,
    c_true: torch.Tensor,
    *,
    solver: Any,
    y_true: torch.Tensor | None = None,
    **solver_options: Any,
) -> torch.Tensor:
    """SPO+ loss of predicted costs ``theta_hat`` against true costs ``c_true``, per instance.

    For a "min" solver with ``w*(c)`` its solution,
    ``SPO+ = max_w <c - 2 c_hat, w> + 2 <c_hat, w*(c)> - <c, w*(c)>``, computed with
    ``max_w <c - 2 c_hat, w> = <c - 2 c_hat, w*(2 c_hat - c)>``. Its subgradient in
    ``c_hat`` is ``2 (w*(c) - w*(2 c_hat - c))``. It is ``>= 0`` whenever the solver
    is exact, and 0 when ``c_hat = c``.

    Args:
        theta_hat: Predicted costs ``[*, *event]``.
        c_true: True costs, same shape.
        solver: A "min" solver or its registry name (configured by ``**solver_options``).
        y_true: ``w*(c_true)`` if already known (saves one solver call).

    Returns:
        ``[*]``, one loss per instance.

    Raises:
        ValueError: For a "max" solver or mismatched shapes.

    Example:
        >>> import torch, combgrad as cg
        >>> c_true = torch.tensor([[1.0, 5.0], [1.0, 1.0]])
        >>> c_hat = torch.tensor([[1.0, 0.1], [9.0, 1.0]], requires_grad=True)
        >>> loss = cg.losses.spo_plus(c_hat, c_true, solver="shortest_path", neighbourhood=4)
        >>> loss.backward()  # 2 (w*(c) - w*(2 c_hat - c)): the true path goes down, the other right
        >>> loss.detach(), c_hat.grad
        (tensor(21.8000), tensor([[ 0., -2.],
                [ 2.,  0.]]))

    References:
        A. N. Elmachtoub, P. Grigas. Smart "Predict, then Optimize". Management
        Science 68(1), 2022.
    """
    solver = resolve_solver("spo_plus", solver, solver_options)
    if solver.sense != "min":
        raise ValueError(
            f"spo_plus: solver must have sense 'min' (SPO+ is defined for cost minimization), "
            f"got {solver.sense!r}; negate the scores and use a 'min' solver"
        )
    check_theta("spo_plus", theta_hat, solver.event_ndim, "theta_hat")
    c_true = _check_same_shape("spo_plus", "c_true", c_true, theta_hat).detach()
    with torch.no_grad():
        if y_true is None:
            y_true = solver(c_true)
        else:
            y_true = _check_same_shape("spo_plus", "y_true", y_true, theta_hat)
        y_hat = solver(2 * theta_hat.detach() - c_true)
    event_ndim = solver.event_ndim
    return (
        event_sum((c_true - 2 * theta_hat) * y_hat, event_ndim)
        + 2 * event_sum(theta_hat * y_true, event_ndim)
        - event_sum(c_true * y_true, event_ndim)
    )


def hamming(y: torch.Tensor, y_true: torch.Tensor, *, event_ndim: int | None = None) -> torch.Tensor:
    """Hamming distance per instance: ``sum y (1 - y_true) + (1 - y) y_true`` over the event dims.

    For 0/1 tensors this counts the differing entries; for a fractional ``y``
    against a 0/1 ``y_true`` it is ``sum |y - y_true|``, and it is linear in
    ``y``, so its gradient ``1 - 2 y_true`` never vanishes (the loss of the I-MLE
    paper's toy problem).

    Args:
        y: Predictions ``[*, *event]``.
        y_true: Targets, same shape.
        event_ndim: Number of trailing event dims; default all dims but the first
            (all dims for a 1-D ``y``).

    Returns:
        ``[*]``, one distance per instance.

    Example:
        >>> import torch, combgrad as cg
        >>> y = torch.tensor([[1.0, 0.0, 1.0], [0.5, 0.5, 0.0]])
        >>> cg.losses.hamming(y, torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]]))
        tensor([2., 1.])
    """
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"hamming: y must be a torch.Tensor, got {type(y).__name__}")
    y_true = _check_same_shape("hamming", "y_true", y_true, y)
    if event_ndim is None:
        event_ndim = max(y.ndim - 1, 1) if y.ndim else 0
    elif isinstance(event_ndim, bool) or not isinstance(event_ndim, int) or not 0 <= event_ndim <= y.ndim:
        raise ValueError(f"hamming: event_ndim must be an integer in [0, {y.ndim}], got {event_ndim!r}")
    return event_sum(y * (1 - y_true) + (1 - y) * y_true, event_ndim)

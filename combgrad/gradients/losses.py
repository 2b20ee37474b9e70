"""Losses for learning through solvers: Fenchel-Young, SPO+, Hamming (``cg.losses``).

This module's one job is the losses that compare a prediction with a target
through a solver. All three return one value per instance, ``[*batch]``, and are
differentiable with plain autograd: each is written so that its autograd
gradient is the loss's known (sub)gradient, with solver outputs held constant.

They share one argument convention: ``theta`` is the prediction (scores or
costs, the solver's input), ``y_true`` the target solution and ``theta_true``
the true costs where a loss needs them (SPO+). The old names ``theta_hat`` and
``c_true`` (SPO+) and ``sigma`` (Fenchel-Young) still work, with a
DeprecationWarning, for one release.

References:
    Q. Berthet, M. Blondel, O. Teboul, M. Cuturi, J.-P. Vert, F. Bach. Learning
    with Differentiable Perturbed Optimizers. NeurIPS 2020.

    A. N. Elmachtoub, P. Grigas. Smart "Predict, then Optimize". Management
    Science 68(1), 2022.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from .._checks import (
    check_finite,
    check_number,
    check_positive_int,
    check_same_shape,
    check_tensor,
    check_theta,
    rename_deprecated,
)
from ..errors import OptionError
from ..solvers import registry as solver_registry
from ..solvers.base import Solver
from .base import (
    blame_theta,
    check_noise_options,
    check_theta_structure,
    draw_noise,
    event_sum,
    resolve_solver,
    score_sign,
    solve_perturbed,
    solve_scores,
)

__all__ = ["fenchel_young", "hamming", "spo_plus"]

_FENCHEL_YOUNG_OPTIONS = ("generator", "noise", "noise_scale", "samples", "solver")
_SPO_PLUS_OPTIONS = ("solver", "theta", "theta_true", "y_true")

# The default of ``noise_scale``, compared by identity to tell "not passed" from an
# explicit 1.0, so that passing it together with its deprecated alias ``sigma`` is refused.
_DEFAULT_NOISE_SCALE = float(1)


def _check_target(owner: str, argument: str, value: object, reference: torch.Tensor) -> torch.Tensor:
    """A finite real tensor of ``reference``'s shape, cast to its dtype and device."""
    value = check_finite(owner, argument, check_tensor(owner, argument, value))
    return check_same_shape(owner, argument, value, reference)


def _resolve(owner: str, solver: object, options: dict[str, Any], own: Iterable[str]) -> Solver:
    """The solver, with option errors that name the loss's own options as well as the solver's."""
    own_options = ", ".join(own)
    if options and not isinstance(solver, str):
        names = ", ".join(repr(name) for name in options)
        raise OptionError(
            f"{owner}: unknown option{'s' if len(options) > 1 else ''} {names}; {owner} takes "
            f"{own_options}, and solver options only with a registry name (configure the solver object instead)"
        )
    try:
        return resolve_solver(owner, solver, options)
    except OptionError as error:
        raise OptionError(f"{owner}: {error}; {owner}'s own options: {own_options}") from None


def fenchel_young(
    theta: torch.Tensor,
    y_true: torch.Tensor,
    *,
    solver: Any,
    noise_scale: float = _DEFAULT_NOISE_SCALE,
    noise: str = "normal",
    samples: int = 10,
    generator: torch.Generator | None = None,
    **solver_options: Any,
) -> torch.Tensor:
    """Perturbed Fenchel-Young loss ``F(s) + Omega(y_true) - <s, y_true>`` per instance, by Monte Carlo.

    In score space (``s = theta`` for a "max" solver, ``-theta`` for "min"),
    ``F(s) = E max_y <s + sigma Z, y>`` (``sigma = noise_scale``) and ``Omega`` is
    its convex conjugate. For a target ``y_true`` that is a vertex of the
    solutions' hull (any 0/1 feasible solution), ``Omega(y_true) = -sigma E[Z] sum(y_true)``:
    ``F(s) >= <s, y_true> + sigma E[Z] sum(y_true)`` (take ``y = y_true`` inside the
    max) gives ``<=``, and letting ``s`` grow along a direction that makes
    ``y_true`` the unique optimum gives equality (the gap
    ``E max_y <s + sigma Z, y - y_true>`` tends to 0 by dominated convergence).
    Since ``E <sigma Z, y_true> = sigma E[Z] sum(y_true)`` for i.i.d. noise, the loss is

    ``L(s; y_true) = E <s + sigma Z, y*(s + sigma Z) - y_true>``, estimated by
    ``mean_i <s + sigma Z_i, y_i - y_true>``, ``y_i = y*(s + sigma Z_i)``.

    Every term is ``>= 0`` when the solver is exact and ``y_true`` feasible, and
    the loss is 0 when every perturbed solution equals ``y_true`` (a confident
    correct prediction), whatever the noise's mean. For a fractional ``y_true``
    inside the hull, convexity of ``Omega`` makes this value an upper bound of
    the Fenchel-Young loss (still ``>= 0``). The gradient is
    ``mean_i y_i - y_true`` in score space (Danskin's theorem for the max inside
    ``F``; ``-(...)`` with respect to the costs of a "min" solver).

    The default noise is ``"normal"`` (centred): Gumbel noise has mean
    ``0.5772`` and, for "min" solvers whose solutions differ in size (shortest
    paths, knapsack, ilp), lowers every perturbed cost by ``0.5772 sigma`` on
    average, which favours larger solutions (see :mod:`combgrad.gradients.noise`).

    Args:
        theta: Scores or costs ``[*, *event]``.
        y_true: Target solutions, same shape, finite.
        solver: A registry name (configured by ``**solver_options``) or a solver.
        noise_scale: Noise scale ``sigma > 0`` (default 1.0; alias ``sigma``, deprecated).
        noise: ``"normal"`` (default) or ``"gumbel"``.
        samples: Number of draws ``>= 1``; all solved in one batched call.
        generator: Optional ``torch.Generator`` for the draws.

    Returns:
        ``[*]``, one loss per instance.

    Raises:
        ValueError: On invalid options, or a ``y_true`` of another shape or with
            NaN/inf values.
        OptionError: On an option that neither the loss nor the solver takes
            (the message lists both).

    Example:
        >>> import torch, combgrad as cg
        >>> theta = torch.tensor([[0.0, 2.0, 1.0]], requires_grad=True)
        >>> y_true = torch.tensor([[0.0, 0.0, 1.0]])
        >>> loss = cg.losses.fenchel_young(theta, y_true, solver="topk", k=1, noise="gumbel",
        ...                                samples=20000, generator=torch.Generator().manual_seed(0))
        >>> loss.backward()  # softmax(theta) - y_true = [0.09, 0.67, -0.76]
        >>> theta.grad.round(decimals=1)
        tensor([[ 0.1000,  0.7000, -0.8000]])
        >>> round(loss.item(), 1)  # logsumexp(theta) - theta_2 = 1.41 - 1 (Gumbel closed form)
        1.4
        >>> confident = torch.tensor([[0.0, 0.0, 50.0]])
        >>> cg.losses.fenchel_young(confident, y_true, solver="topk", k=1, noise="gumbel")
        tensor([0.])

    References:
        Q. Berthet, M. Blondel, O. Teboul, M. Cuturi, J.-P. Vert, F. Bach.
        Learning with Differentiable Perturbed Optimizers. NeurIPS 2020.
    """
    owner = "fenchel_young"
    given = {} if noise_scale is _DEFAULT_NOISE_SCALE else {"noise_scale": noise_scale}
    if "sigma" in solver_options:
        given["sigma"] = solver_options.pop("sigma")
    noise_scale = rename_deprecated(owner, given, {"sigma": "noise_scale"}).get("noise_scale", 1.0)
    check_positive_int(owner, "samples", samples)
    sigma = check_number(owner, "noise_scale", noise_scale, positive=True)
    check_noise_options(owner, noise, None, 1, ("normal", "gumbel"))
    solver = _resolve(owner, solver, solver_options, _FENCHEL_YOUNG_OPTIONS)
    # theta's finiteness is read once, with the perturbed scores (below).
    theta = check_theta_structure(owner, theta, solver.event_ndim)
    y_true = _check_target(owner, "y_true", y_true, theta)
    event_ndim = solver.event_ndim
    scores = score_sign(solver.sense) * theta
    draws = draw_noise(noise, samples, theta.detach(), generator=generator)
    with torch.no_grad():
        blame = blame_theta(owner, theta, event_ndim)
        solutions = solve_perturbed(solver, scores.detach(), draws, sigma, owner=owner, blame=blame)
    # Solutions are constants here, so autograd's gradient is mean_i y_i - y_true.
    terms = event_sum((scores.unsqueeze(0) + sigma * draws) * (solutions - y_true), event_ndim)
    return terms.mean(0)


def _no_blame() -> None:
    """The ``blame`` of a solver input whose sources are checked: only an overflow is left."""


def _negative_cost_solvers() -> str:
    """The registered solvers that take negative costs as they are (``accepts_negative`` absent or True)."""
    names = [
        name
        for name in solver_registry.names()
        if getattr(solver_registry.SOLVERS.factory(name), "accepts_negative", True) is not False
    ]
    return ", ".join(names)


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
    solver = _resolve(owner, solver, solver_options, _SPO_PLUS_OPTIONS)
    theta = check_theta(owner, given["theta"], solver.event_ndim)
    costs_true = _check_target(owner, "theta_true", given["theta_true"], theta).detach()
    if y_true is not None:
        y_true = _check_target(owner, "y_true", y_true, theta).detach()
    with torch.no_grad():
        shifted = 2 * theta.detach() - costs_true
        if getattr(solver, "accepts_negative", True) is False:
            inputs = [("2 * theta - theta_true", shifted)]
            if y_true is None:
                inputs.append(("theta_true", costs_true))
            for description, values in inputs:
                if values.numel() and bool((values < 0).any()):
                    raise ValueError(
                        f"{owner}: solver {getattr(solver, 'name', type(solver).__name__)!r} does not accept "
                        f"negative costs (accepts_negative = False: it would clip or refuse them), and "
                        f"{description} has entries down to {float(values.min()):.4g}; use a solver that "
                        f"accepts negative costs ({_negative_cost_solvers()}), or keep theta >= theta_true / 2"
                    )
        # One solver call for both inputs; theta and theta_true were checked above,
        # so the solver input's check only catches an overflow of 2 * theta - theta_true.
        sign = score_sign(solver.sense)
        if y_true is None:
            y_shifted, y_true = solve_scores(solver, sign * torch.stack([shifted, costs_true]), owner=owner, blame=_no_blame)
        else:
            y_shifted = solve_scores(solver, sign * shifted, owner=owner, blame=_no_blame)
    # sign * (y_shifted - y_true), written as a difference so that the gradient has no -0.
    difference = y_shifted - y_true if score_sign(solver.sense) > 0 else y_true - y_shifted
    return event_sum((2 * theta - costs_true) * difference, solver.event_ndim)


def hamming(y: torch.Tensor, y_true: torch.Tensor, *, event_ndim: int | None = None) -> torch.Tensor:
    """Hamming distance per instance: ``sum y (1 - y_true) + (1 - y) y_true`` over the event dims.

    For 0/1 tensors this counts the differing entries; for a fractional ``y``
    against a 0/1 ``y_true`` it is ``sum |y - y_true|``, and it is linear in
    ``y``, so its gradient ``1 - 2 y_true`` never vanishes (the loss of the I-MLE
    paper's toy problem). Its first argument is a predicted *solution* (a
    solver's or layer's output), not the solver's input, hence ``y``.

    Args:
        y: Predicted solutions ``[*, *event]``.
        y_true: Targets, same shape, finite.
        event_ndim: Number of trailing event dims; default all dims but the first
            (all dims for a 1-D ``y``).

    Returns:
        ``[*]``, one distance per instance.

    Raises:
        TypeError: If ``y`` or ``y_true`` is not a tensor.
        ValueError: On mismatched shapes, a NaN/inf ``y_true``, a meta tensor, or
            an invalid ``event_ndim``.

    Example:
        >>> import torch, combgrad as cg
        >>> y = torch.tensor([[1.0, 0.0, 1.0], [0.5, 0.5, 0.0]])
        >>> cg.losses.hamming(y, torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]]))
        tensor([2., 1.])
    """
    y = check_tensor("hamming", "y", y)
    y_true = _check_target("hamming", "y_true", y_true, y)
    if event_ndim is None:
        event_ndim = max(y.ndim - 1, 1) if y.ndim else 0
    elif isinstance(event_ndim, bool) or not isinstance(event_ndim, int) or not 0 <= event_ndim <= y.ndim:
        raise ValueError(f"hamming: event_ndim must be an integer in [0, {y.ndim}], got {event_ndim!r}")
    return event_sum(y * (1 - y_true) + (1 - y) * y_true, event_ndim)

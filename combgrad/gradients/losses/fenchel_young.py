"""The perturbed Fenchel-Young loss (Berthet et al., 2020): ``cg.losses.fenchel_young``."""

from __future__ import annotations

from typing import Any

import torch

from ..._checks import check_bool, check_number, check_positive_int, rename_deprecated
from ..base import (
    blame_theta,
    check_noise_options,
    check_theta_structure,
    draw_noise,
    event_sum,
    score_sign,
    solve_perturbed,
    solve_scores,
)
from ..perturbation import check_positive_theta, multiplicative_factor
from ._common import check_target, resolve

_FENCHEL_YOUNG_OPTIONS = ("generator", "multiplicative", "noise", "noise_scale", "samples", "solver")


# The default of ``noise_scale``, compared by identity to tell "not passed" from an
# explicit 1.0, so that passing it together with its deprecated alias ``sigma`` is refused.
_DEFAULT_NOISE_SCALE = float(1)


def fenchel_young(
    theta: torch.Tensor,
    y_true: torch.Tensor,
    *,
    solver: Any,
    noise_scale: float = _DEFAULT_NOISE_SCALE,
    noise: str = "normal",
    samples: int = 10,
    generator: torch.Generator | None = None,
    multiplicative: bool = False,
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

    With ``multiplicative=True`` (Dalle et al. 2022; InferOpt's
    ``FenchelYoungLoss`` of a ``PerturbedMultiplicative``, PyEPO's
    ``perturbedFenchelYoungMul``) the perturbation is ``s * e`` with
    ``e = exp(sigma Z - sigma^2 / 2)``, ``Z`` standard normal, so positive costs
    stay positive (``theta > 0`` is required, ``noise="normal"``). Then
    ``F(s) = E max_y <s * e, y>`` is convex and positively homogeneous, so
    ``Omega`` is the indicator of a convex set, which holds every feasible
    ``y_true`` (``E[y_true * e] = y_true`` since ``E e = 1``): ``Omega(y_true) = 0``
    and ``L(s; y_true) = F(s) - <s, y_true>``, estimated by
    ``mean_i <s * e_i, y_i - y_true>`` (each term ``>= 0``, 0 when every sample
    equals ``y_true``; the same expectation as ``F - <s, y_true>``, again by
    ``E e = 1``). The gradient is InferOpt's and PyEPO's,
    ``mean_i e_i * y_i - y_true`` (Danskin's theorem: ``d<s * e, y>/ds = e * y``),
    in score space.

    Args:
        theta: Scores or costs ``[*, *event]``.
        y_true: Target solutions, same shape, finite.
        solver: A registry name (configured by ``**solver_options``) or a solver.
        noise_scale: Noise scale ``sigma > 0`` (default 1.0; alias ``sigma``, deprecated).
        noise: ``"normal"`` (default) or ``"gumbel"``.
        samples: Number of draws ``>= 1``; all solved in one batched call.
        generator: Optional ``torch.Generator`` for the draws.
        multiplicative: Perturb multiplicatively, ``theta * exp(sigma Z -
            sigma^2 / 2)`` (default False); needs ``theta > 0`` and ``noise="normal"``.

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
        >>> costs = torch.tensor([[2.0, 1.0, 3.0]])  # a "min" solver: cheapest entry, costs kept > 0
        >>> loss = cg.losses.fenchel_young(costs, torch.tensor([[0.0, 1.0, 0.0]]), solver=cg.solvers.get("topk", k=1),
        ...                                multiplicative=True, noise_scale=0.5)
        >>> bool(loss >= 0)
        True

    References:
        Q. Berthet, M. Blondel, O. Teboul, M. Cuturi, J.-P. Vert, F. Bach.
        Learning with Differentiable Perturbed Optimizers. NeurIPS 2020.

        G. Dalle, L. Baty, L. Bouvier, A. Parmentier. Learning with Combinatorial
        Optimization Layers: a Probabilistic Approach. arXiv:2207.13513, 2022.
    """
    owner = "fenchel_young"
    given = {} if noise_scale is _DEFAULT_NOISE_SCALE else {"noise_scale": noise_scale}
    if "sigma" in solver_options:
        given["sigma"] = solver_options.pop("sigma")
    noise_scale = rename_deprecated(owner, given, {"sigma": "noise_scale"}).get("noise_scale", 1.0)
    check_positive_int(owner, "samples", samples)
    sigma = check_number(owner, "noise_scale", noise_scale, positive=True)
    check_noise_options(owner, noise, None, 1, ("normal", "gumbel"))
    check_bool(owner, "multiplicative", multiplicative)
    if multiplicative and noise != "normal":
        raise ValueError(
            f"{owner}: multiplicative=True needs noise='normal' (the factor exp(sigma Z - sigma^2/2) has mean 1 "
            f"for a standard normal Z), got noise={noise!r}"
        )
    solver = resolve(owner, solver, solver_options, _FENCHEL_YOUNG_OPTIONS)
    # theta's finiteness is read once, with the perturbed scores (below).
    theta = check_theta_structure(owner, theta, solver.event_ndim)
    y_true = check_target(owner, "y_true", y_true, theta)
    event_ndim = solver.event_ndim
    scores = score_sign(solver.sense) * theta
    draws = draw_noise(noise, samples, theta.detach(), generator=generator)
    blame = blame_theta(owner, theta, event_ndim)
    if multiplicative:
        check_positive_theta(owner, theta.detach(), event_ndim)
        factor = multiplicative_factor(draws, sigma)
        with torch.no_grad():
            solutions = solve_scores(solver, scores.detach() * factor, owner=owner, blame=blame)
        terms = event_sum(scores.unsqueeze(0) * factor * (solutions - y_true), event_ndim)
        # The last term is 0 in value; its gradient turns mean_i e_i (y_i - y_true), the
        # autograd gradient of the line above, into InferOpt's mean_i e_i y_i - y_true
        # (the same expectation, E e = 1; InferOpt and PyEPO take the y_true part exactly).
        detached = scores.detach()
        correction = event_sum((scores - detached) * y_true * (factor - 1), event_ndim)
        return (terms + correction).mean(0)
    with torch.no_grad():
        solutions = solve_perturbed(solver, scores.detach(), draws, sigma, owner=owner, blame=blame)
    # Solutions are constants here, so autograd's gradient is mean_i y_i - y_true.
    terms = event_sum((scores.unsqueeze(0) + sigma * draws) * (solutions - y_true), event_ndim)
    return terms.mean(0)


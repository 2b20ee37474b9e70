"""``perturbation``: the perturbed optimizer of Berthet et al. (2020).

In score space, forward returns the Monte Carlo mean of perturbed solutions
``y_eps(s) = mean_i y*(s + sigma Z_i)`` (``sigma`` is the option
``noise_scale``), a smooth function of ``s`` (for Gumbel noise and argmax it is
``softmax(s / sigma)``). Backward is the score-function estimate of its
Jacobian-vector product, ``g = 1 / (sigma S) sum_i <y_i, dy> grad_nu(Z_i)``,
with ``nu = -log density`` (``grad_nu(z) = z`` for the normal, ``1 - exp(-z)``
for the Gumbel); it reuses the forward's draws, so it calls no solver. With
``variance_reduction=True`` each ``<y_i, dy>`` is replaced by
``<y_i, dy> - mean_{j != i} <y_j, dy>`` (a leave-one-out baseline); since
``E grad_nu(Z) = 0`` and the baseline does not depend on ``Z_i``, the estimate
stays unbiased.

With ``multiplicative=True`` (Dalle et al. 2022; InferOpt's
``PerturbedMultiplicative``, PyEPO's ``perturbedOptMul``) the perturbation is
``theta * exp(sigma Z - sigma^2 / 2)`` with ``Z`` standard normal, so positive
costs stay positive (a Dijkstra-type solver never sees a negative cost) and
``E exp(sigma Z - sigma^2 / 2) = 1`` keeps the perturbed costs' mean at theta.
The Jacobian follows from the score-function identity in log space: with
``u = log theta - sigma^2 / 2 + sigma Z``, ``u`` is normal with mean
``m = log theta - sigma^2 / 2`` and ``d E f(e^u) / dm = E[f Z] / sigma``, and
``dm / dtheta = 1 / theta``, so

``d E[y*] / d theta_j = E[y* Z_j] / (sigma theta_j)``,

the additive formula divided by ``theta_j`` (InferOpt's multiplicative
Jacobian, ``E[y Z^T] / (sigma theta)``; PyEPO divides by ``sigma * cost`` in the
same way). It needs ``theta > 0`` (checked, one host read) and
``noise="normal"``. The sign of the perturbation is immaterial here: a "min"
solver's scores ``-theta`` scale by the same factor.

The default noise is the standard normal, as in the perturbations library and
PyEPO: it is centred, while the standard Gumbel (mean 0.5772) lowers every
perturbed cost of a "min" solver on average and so favours solutions with more
entries. ``noise="gumbel"`` gives the papers' Gumbel (and the softmax closed form).

References:
    Q. Berthet, M. Blondel, O. Teboul, M. Cuturi, J.-P. Vert, F. Bach. Learning
    with Differentiable Perturbed Optimizers. NeurIPS 2020.

    G. Dalle, L. Baty, L. Bouvier, A. Parmentier. Learning with Combinatorial
    Optimization Layers: a Probabilistic Approach. arXiv:2207.13513, 2022
    (InferOpt.jl).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch.autograd.function import once_differentiable

from .._checks import check_theta
from ..solvers.base import Solver
from . import noise as noise_module
from .base import (
    Estimator,
    SamplingOptions,
    blame_theta,
    boolean,
    check_incoming_gradient,
    choice,
    draw_noise,
    event_sum,
    number,
    option,
    positive_int,
    score_sign,
    solve_perturbed,
    solve_scores,
)
from .registry import register

NOISES = ("gumbel", "normal")


@dataclasses.dataclass(frozen=True)
class PerturbationOptions(SamplingOptions):
    """Validated options of :class:`Perturbation` (see there): the one place they are written."""

    owner = "perturbation"
    deprecated: ClassVar[Mapping[str, str]] = {"sigma": "noise_scale"}

    samples: int = option(10, positive_int)
    noise: str = option("normal", choice(NOISES))
    noise_scale: float = option(1.0, number(positive=True))
    variance_reduction: bool = option(False, boolean)
    multiplicative: bool = option(False, boolean)

    def validate(self) -> None:
        if self.multiplicative and self.noise != "normal":
            raise ValueError(
                f"perturbation: multiplicative=True needs noise='normal' (the factor exp(sigma Z - sigma^2/2) "
                f"has mean 1 for a standard normal Z), got noise={self.noise!r}"
            )
        if self.variance_reduction and self.samples < 2:
            raise ValueError(
                f"perturbation: variance_reduction=True needs samples >= 2 for its leave-one-out "
                f"baseline, got samples={self.samples}"
            )


def perturbation_vjp(
    solutions: torch.Tensor,
    draws: torch.Tensor,
    dy: torch.Tensor,
    *,
    noise_scale: float,
    noise: str,
    event_ndim: int,
    variance_reduction: bool = False,
    reduce: bool = True,
    scores: torch.Tensor | None = None,
) -> torch.Tensor:
    """Score-space ``dy^T J``: ``1 / (sigma S) sum_i <y_i, dy> grad_nu(Z_i)``.

    With ``reduce=False`` the output was the samples themselves and ``dy`` has
    one gradient per sample: ``1 / sigma sum_i <y_i, dy_i> grad_nu(Z_i)``, so
    that ``y.mean(0)`` taken by the user gives exactly the reduced estimate.

    Args:
        solutions: ``y_i [S, *batch, *event]``.
        draws: ``Z_i [S, *batch, *event]``.
        dy: Upstream gradient ``[*batch, *event]`` (``[S, *batch, *event]`` with
            ``reduce=False``).
        noise_scale: ``sigma``.
        noise: The noise's name (for ``grad_nu``).
        event_ndim: The solver's event dims.
        variance_reduction: Subtract the leave-one-out baseline.
        reduce: Whether the output was the mean of the samples.
        scores: ``s [*batch, *event]`` for the multiplicative perturbation
            ``s * exp(sigma Z - sigma^2 / 2)``: the estimate is divided by ``s``
            (the chain rule through ``log s``); None for the additive one.

    Returns:
        ``[*batch, *event]``.

    Example:
        >>> y, z = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[0.5, -0.5], [-0.5, 0.5]])
        >>> perturbation_vjp(y, z, torch.tensor([1.0, 0.0]), noise_scale=1.0, noise="normal", event_ndim=1)
        tensor([ 0.2500, -0.2500])
    """
    if reduce:
        dy = dy.unsqueeze(0)
    weights = event_sum(solutions * dy, event_ndim)  # [S, *batch]
    samples = weights.shape[0]
    if variance_reduction and samples > 1:
        weights = weights - (weights.sum(0, keepdim=True) - weights) / (samples - 1)
    weights = weights.reshape(*weights.shape, *([1] * event_ndim))
    divisor = noise_scale * (draws.shape[0] if reduce else 1)
    grad = (weights * noise_module.log_density_gradient(noise, draws)).sum(0) / divisor
    return grad if scores is None else grad / scores


def multiplicative_factor(draws: torch.Tensor, noise_scale: float) -> torch.Tensor:
    """``exp(sigma Z - sigma^2 / 2)``: mean 1 for a standard normal ``Z``, positive, shaped like ``draws``.

    Example:
        >>> multiplicative_factor(torch.zeros(1), 2.0)
        tensor([0.1353])
    """
    return torch.exp(noise_scale * draws - noise_scale * noise_scale / 2)


def check_positive_theta(owner: str, theta: torch.Tensor, event_ndim: int) -> None:
    """Raise ValueError unless every entry of ``theta`` is > 0 (multiplicative perturbation): one host read.

    Example:
        >>> check_positive_theta("perturbation", torch.tensor([1.0, 0.0]), 1)
        Traceback (most recent call last):
        ...
        ValueError: perturbation: theta must be > 0 everywhere with multiplicative=True (the perturbation theta * exp(sigma Z - sigma^2/2) keeps each entry's sign), got min 0.0; make theta positive (e.g. softplus) or use the additive perturbation
    """
    if bool((theta > 0).all()):
        return
    check_theta(owner, theta, event_ndim)  # a NaN is reported as such
    raise ValueError(
        f"{owner}: theta must be > 0 everywhere with multiplicative=True (the perturbation "
        f"theta * exp(sigma Z - sigma^2/2) keeps each entry's sign), got min {theta.min().item()}; "
        "make theta positive (e.g. softplus) or use the additive perturbation"
    )


class PerturbationFunction(torch.autograd.Function):
    """Autograd function of :class:`Perturbation`: ``(theta, solver, options, generator, sample) -> y``."""

    @staticmethod
    def forward(
        ctx: Any,
        theta: torch.Tensor,
        solver: Solver,
        options: PerturbationOptions,
        generator: torch.Generator | None,
        sample: bool,
    ) -> torch.Tensor:
        sign = score_sign(solver.sense)
        if sample:
            draws = draw_noise(options.noise, options.samples, theta, generator=generator)
        else:
            # Eval mode: one zero draw is the exact solution; grad_nu(0) = 0 for both
            # noises, so its gradient is 0, the derivative of a piecewise-constant y*.
            draws = torch.zeros((1, *theta.shape), dtype=theta.dtype, device=theta.device)
        # The perturbed scores' finiteness check is the forward's one host read.
        blame = blame_theta("perturbation", theta, solver.event_ndim)
        scores = sign * theta.detach()
        if options.multiplicative:
            check_positive_theta("perturbation", theta.detach(), solver.event_ndim)
            factor = multiplicative_factor(draws, options.noise_scale)
            solutions = solve_scores(solver, scores * factor, owner="perturbation", blame=blame)
        else:
            solutions = solve_perturbed(solver, scores, draws, options.noise_scale, owner="perturbation", blame=blame)
        ctx.save_for_backward(solutions, draws, scores)
        ctx.sign = sign
        ctx.options = options
        ctx.event_ndim = solver.event_ndim
        if options.reduce:
            return solutions.mean(0)
        return solutions.expand(options.samples, *solutions.shape[1:]).clone()

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        check_incoming_gradient("perturbation", dy)
        solutions, draws, scores = ctx.saved_tensors
        options = ctx.options
        # dL/ds and dL/dtheta differ by the score sign (dy is the same in both spaces).
        grad = ctx.sign * perturbation_vjp(
            solutions,
            draws,
            dy,
            noise_scale=options.noise_scale,
            noise=options.noise,
            event_ndim=ctx.event_ndim,
            variance_reduction=options.variance_reduction,
            reduce=options.reduce,
            scores=scores if options.multiplicative else None,
        )
        return grad, None, None, None, None


class Perturbation(Estimator):
    """Perturbed optimizer (Berthet et al. 2020): smooth forward, score-function backward.

    Forward returns ``mean_i y*(s + noise_scale Z_i)`` (a fractional tensor
    shaped like theta), or the samples ``[S, *theta.shape]`` with
    ``reduce=False`` (backward then takes one gradient per sample, and
    ``y.mean(0)`` gives the reduced estimator exactly). Backward needs no further
    solver call. All ``samples`` perturbed instances go to the solver in one
    batched call. In eval mode forward returns the exact solution ``y*(theta)``
    (deterministic, like dropout; its gradient is 0) unless ``sample_in_eval``.

    Args:
        samples: Number of noise draws ``S >= 1`` (default 10).
        noise: ``"normal"`` (default, centred) or ``"gumbel"`` (the standard
            Gumbel of the papers, mean 0.5772).
        noise_scale: Noise scale ``sigma > 0`` (default 1; old name ``sigma``).
        reduce: Return the mean of the samples (default True); False returns
            all of them, ``[S, *theta.shape]``.
        sample_in_eval: Keep drawing noise in eval mode (default False).
        variance_reduction: Subtract a leave-one-out baseline in backward (needs
            ``samples >= 2``).
        multiplicative: Perturb multiplicatively, ``theta * exp(noise_scale Z -
            noise_scale^2 / 2)`` (default False; Dalle et al. 2022): positive
            costs stay positive. Needs ``theta > 0`` and ``noise="normal"``;
            backward divides the additive estimate by theta.
        sigma: Deprecated name of ``noise_scale`` (warns).

    Raises:
        ValueError: On invalid options, naming the argument.
        OptionError: On an unknown option (a TypeError and a ValueError).

    Example:
        >>> import torch, combgrad as cg
        >>> estimator = cg.gradients.get("perturbation", samples=1000, noise_scale=0.5)
        >>> theta = torch.tensor([0.0, 1.0], requires_grad=True)
        >>> y = estimator(theta, cg.solvers.get("argmax"), generator=torch.Generator().manual_seed(0))
        >>> y.sum().item(), y.requires_grad
        (1.0, True)
        >>> estimator.eval()(theta, cg.solvers.get("argmax"))  # eval: the exact solution
        tensor([0., 1.], grad_fn=<PerturbationFunctionBackward>)
        >>> costs = torch.tensor([[1.0, 3.0], [2.0, 1.0]], requires_grad=True)  # must stay > 0
        >>> paths = cg.gradients.get("perturbation", multiplicative=True, samples=100)(costs, cg.solvers.get("shortest_path"))
        >>> paths.shape
        torch.Size([2, 2])

    References:
        Q. Berthet, M. Blondel, O. Teboul, M. Cuturi, J.-P. Vert, F. Bach. Learning
        with Differentiable Perturbed Optimizers. NeurIPS 2020.

        G. Dalle, L. Baty, L. Bouvier, A. Parmentier. Learning with Combinatorial
        Optimization Layers: a Probabilistic Approach. arXiv:2207.13513, 2022.
    """

    name = "perturbation"
    Options = PerturbationOptions

    def forward(
        self, theta: torch.Tensor, solver: Solver, *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Perturbed mean ``y [*, *event]`` of ``theta [*, *event]`` (``[S, *, *event]`` unreduced)."""
        self.check_input(theta, solver)
        return PerturbationFunction.apply(theta, solver, self.options, generator, self.sampling())


register("perturbation", Perturbation)

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

The default noise is the standard normal, as in the perturbations library and
PyEPO: it is centred, while the standard Gumbel (mean 0.5772) lowers every
perturbed cost of a "min" solver on average and so favours solutions with more
entries. ``noise="gumbel"`` gives the papers' Gumbel (and the softmax closed form).

References:
    Q. Berthet, M. Blondel, O. Teboul, M. Cuturi, J.-P. Vert, F. Bach. Learning
    with Differentiable Perturbed Optimizers. NeurIPS 2020.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch.autograd.function import once_differentiable

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

    def validate(self) -> None:
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
    return (weights * noise_module.log_density_gradient(noise, draws)).sum(0) / divisor


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
        solutions = solve_perturbed(solver, sign * theta.detach(), draws, options.noise_scale, owner="perturbation", blame=blame)
        ctx.save_for_backward(solutions, draws)
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
        solutions, draws = ctx.saved_tensors
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

    References:
        Q. Berthet, M. Blondel, O. Teboul, M. Cuturi, J.-P. Vert, F. Bach. Learning
        with Differentiable Perturbed Optimizers. NeurIPS 2020.
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

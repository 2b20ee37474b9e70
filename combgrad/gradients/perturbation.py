"""``perturbation``: the perturbed optimizer of Berthet et al. (2020).

In score space, forward returns the Monte Carlo mean of perturbed solutions
``y_eps(s) = mean_i y*(s + sigma Z_i)``, a smooth function of ``s`` (for Gumbel
noise and argmax it is ``softmax(s / sigma)``). Backward is the score-function
estimate of its Jacobian-vector product,
``g = 1 / (sigma S) sum_i <y_i, dy> grad_nu(Z_i)``, with ``nu = -log density``
(``grad_nu(z) = z`` for the normal, ``1 - exp(-z)`` for the Gumbel); it reuses
the forward's draws, so it calls no solver. With ``variance_reduction=True`` each
``<y_i, dy>`` is replaced by ``<y_i, dy> - mean_{j != i} <y_j, dy>`` (a
leave-one-out baseline); since ``E grad_nu(Z) = 0`` and the baseline does not
depend on ``Z_i``, the estimate stays unbiased.

References:
    Q. Berthet, M. Blondel, O. Teboul, M. Cuturi, J.-P. Vert, F. Bach. Learning
    with Differentiable Perturbed Optimizers. NeurIPS 2020.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.autograd.function import once_differentiable

from .._checks import check_positive_int
from ..solvers.base import Solver
from . import noise as noise_module
from .._checks import check_bool, check_number
from .base import Estimator, check_noise_options, draw_noise, event_sum, score_sign, solve_perturbed
from .registry import register

NOISES = ("gumbel", "normal")


@dataclass(frozen=True)
class PerturbationOptions:
    """Validated options of :class:`Perturbation` (see there)."""

    samples: int = 10
    sigma: float = 1.0
    noise: str = "gumbel"
    variance_reduction: bool = False

    def __post_init__(self) -> None:
        check_positive_int("perturbation", "samples", self.samples)
        check_number("perturbation", "sigma", self.sigma, positive=True)
        check_noise_options("perturbation", self.noise, None, 1, NOISES)
        check_bool("perturbation", "variance_reduction", self.variance_reduction)
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
    sigma: float,
    noise: str,
    event_ndim: int,
    variance_reduction: bool = False,
) -> torch.Tensor:
    """Score-space ``dy^T J``: ``1 / (sigma S) sum_i <y_i, dy> grad_nu(Z_i)``.

    Args:
        solutions: ``y_i [S, *batch, *event]``.
        draws: ``Z_i [S, *batch, *event]``.
        dy: Upstream gradient ``[*batch, *event]``.

    Returns:
        ``[*batch, *event]``.
    """
    samples = solutions.shape[0]
    weights = event_sum(solutions * dy.unsqueeze(0), event_ndim)  # [S, *batch]
    if variance_reduction:
        weights = weights - (weights.sum(0, keepdim=True) - weights) / (samples - 1)
    weights = weights.reshape(*weights.shape, *([1] * event_ndim))
    return (weights * noise_module.log_density_gradient(noise, draws)).sum(0) / (sigma * samples)


class PerturbationFunction(torch.autograd.Function):
    """Autograd function of :class:`Perturbation`: ``(theta, solver, options, generator) -> y``."""

    @staticmethod
    def forward(
        ctx: Any,
        theta: torch.Tensor,
        solver: Solver,
        options: PerturbationOptions,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        sign = score_sign(solver.sense)
        draws = draw_noise(options.noise, options.samples, theta, generator=generator)
        solutions = solve_perturbed(solver, sign * theta.detach(), draws, options.sigma)
        ctx.save_for_backward(solutions, draws)
        ctx.sign = sign
        ctx.options = options
        ctx.event_ndim = solver.event_ndim
        return solutions.mean(0)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        solutions, draws = ctx.saved_tensors
        options = ctx.options
        # dL/ds and dL/dtheta differ by the score sign (dy is the same in both spaces).
        grad = ctx.sign * perturbation_vjp(
            solutions,
            draws,
            dy,
            sigma=options.sigma,
            noise=options.noise,
            event_ndim=ctx.event_ndim,
            variance_reduction=options.variance_reduction,
        )
        return grad, None, None, None


class Perturbation(Estimator):
    """Perturbed optimizer (Berthet et al. 2020): smooth forward, score-function backward.

    Forward returns ``mean_i y*(s + sigma Z_i)`` (a fractional tensor shaped like
    theta); backward needs no further solver call. All ``samples`` perturbed
    instances go to the solver in one batched call.

    Args:
        samples: Number of noise draws ``S >= 1``.
        sigma: Noise scale ``> 0``.
        noise: ``"gumbel"`` (default) or ``"normal"``.
        variance_reduction: Subtract a leave-one-out baseline in backward (needs
            ``samples >= 2``).

    Raises:
        ValueError: On invalid options, naming the argument.

    Example:
        >>> import torch, combgrad as cg
        >>> estimator = cg.gradients.get("perturbation", samples=1000, sigma=0.5)
        >>> theta = torch.tensor([0.0, 1.0], requires_grad=True)
        >>> y = estimator(theta, cg.solvers.get("argmax"), generator=torch.Generator().manual_seed(0))
        >>> y.sum().item(), y.requires_grad
        (1.0, True)

    References:
        Q. Berthet, M. Blondel, O. Teboul, M. Cuturi, J.-P. Vert, F. Bach. Learning
        with Differentiable Perturbed Optimizers. NeurIPS 2020.
    """

    name = "perturbation"

    def __init__(
        self,
        *,
        samples: int = 10,
        sigma: float = 1.0,
        noise: str = "gumbel",
        variance_reduction: bool = False,
    ) -> None:
        super().__init__()
        self.options = PerturbationOptions(
            samples=samples, sigma=sigma, noise=noise, variance_reduction=variance_reduction
        )

    def forward(
        self, theta: torch.Tensor, solver: Solver, *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Perturbed mean ``y [*, *event]`` of ``theta [*, *event]``."""
        self.check_input(theta, solver)
        return PerturbationFunction.apply(theta, solver, self.options, generator)


register("perturbation", Perturbation)

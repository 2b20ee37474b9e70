"""``imle``: Implicit Maximum Likelihood Estimation (Niepert et al. 2021).

In score space, with noise draws ``eps_i`` (``i = 1..S``), input temperature
``tau`` and target temperature ``tau_t``:

- forward returns ``mean_i y*(s + tau eps_i)`` (perturb-and-MAP samples);
- backward builds the target ``s' = s - lam dy`` and returns
  ``g = mean_i [y*(s + tau eps_i) - y*(s' + tau_t eps_i)]``, optionally divided by
  ``lam`` (``scale=True``). The draws ``eps_i`` are the forward's own, and the
  forward's solutions are reused, so backward makes one batched solver call.

With ``noise="none"`` and ``scale=True`` this is the blackbox estimator. The
difference functions here are shared with AIMLE (:mod:`.aimle`).

References:
    M. Niepert, P. Minervini, L. Franceschi. Implicit MLE: Backpropagating Through
    Discrete Exponential Family Distributions. NeurIPS 2021.
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
from .base import Estimator, check_noise_options, draw_noise, noise_k, score_sign, solve_perturbed, solve_scores
from .registry import register


def check_sampling_options(
    owner: str,
    samples: object,
    noise: object,
    k: object,
    iterations: object,
    temperature: object,
    target_temperature: object,
) -> None:
    """Validate the perturb-and-MAP options that I-MLE and AIMLE share."""
    check_positive_int(owner, "samples", samples)
    check_noise_options(owner, noise, k, iterations, noise_module.NOISES)
    check_number(owner, "temperature", temperature, nonnegative=True)
    if target_temperature is not None:
        check_number(owner, "target_temperature", target_temperature, nonnegative=True)


@dataclass(frozen=True)
class IMLEOptions:
    """Validated options of :class:`IMLE` (see there)."""

    samples: int = 1
    noise: str = "sum_of_gamma"
    k: int | None = None
    iterations: int = 10
    temperature: float = 1.0
    target_temperature: float | None = None
    lam: float = 10.0
    scale: bool = False

    def __post_init__(self) -> None:
        check_sampling_options(
            "imle",
            self.samples,
            self.noise,
            self.k,
            self.iterations,
            self.temperature,
            self.target_temperature,
        )
        check_number("imle", "lam", self.lam, positive=True)
        check_bool("imle", "scale", self.scale)


def input_draws(
    theta: torch.Tensor,
    solver: Solver,
    *,
    samples: int,
    noise: str,
    k: int | None,
    iterations: int,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """The perturb-and-MAP draws ``eps [S, *theta.shape]``.

    With ``noise="none"`` every sample would be the same solve, so one zero draw
    stands for all of them (the mean, and every gradient, is unchanged).
    """
    if noise == "none":
        samples = 1
    return draw_noise(
        noise, samples, theta, k=noise_k(k, solver), iterations=iterations, generator=generator
    )


def perturb_and_solve(
    theta: torch.Tensor, solver: Solver, options: Any, generator: torch.Generator | None
) -> tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The forward shared by I-MLE and AIMLE: ``(sign, scores, draws, solutions)``.

    ``scores = sign * theta`` in score space, ``draws [S, *theta.shape]`` and the
    solutions ``[S, *theta.shape]`` of the perturbed scores, all from one batched
    solver call. ``options`` carries the sampling fields (``samples``, ``noise``,
    ``k``, ``iterations``, ``temperature``).
    """
    sign = score_sign(solver.sense)
    scores = sign * theta.detach()
    draws = input_draws(
        theta,
        solver,
        samples=options.samples,
        noise=options.noise,
        k=options.k,
        iterations=options.iterations,
        generator=generator,
    )
    return sign, scores, draws, solve_perturbed(solver, scores, draws, options.temperature)


def broadcast_instances(values: torch.Tensor | float, event_ndim: int) -> torch.Tensor | float:
    """Reshape per-instance values ``[*batch]`` to broadcast over ``[*batch, *event]``."""
    if isinstance(values, torch.Tensor):
        return values.reshape(*values.shape, *([1] * event_ndim))
    return values


def target_difference(
    solver: Solver,
    scores: torch.Tensor,
    dy: torch.Tensor,
    draws: torch.Tensor,
    solutions: torch.Tensor,
    *,
    lam: float | torch.Tensor,
    target_temperature: float,
) -> torch.Tensor:
    """``mean_i [y_i - y*(s - lam dy + tau_t eps_i)]``: the I-MLE difference, in one solver call.

    Args:
        scores: ``s [*batch, *event]``.
        dy: ``[*batch, *event]``.
        draws: ``eps [S, *batch, *event]``.
        solutions: The forward's ``y_i [S, *batch, *event]``.
        lam: A float or per-instance ``[*batch]`` tensor.

    Returns:
        ``[*batch, *event]``, unscaled (not divided by lam).
    """
    lam = broadcast_instances(lam, solver.event_ndim)
    targets = solve_perturbed(solver, scores - lam * dy, draws, target_temperature)
    return (solutions - targets).mean(0)


def central_difference(
    solver: Solver,
    scores: torch.Tensor,
    dy: torch.Tensor,
    draws: torch.Tensor,
    *,
    lam: float | torch.Tensor,
    target_temperature: float,
) -> torch.Tensor:
    """``mean_i [y*(s + lam dy + tau_t eps_i) - y*(s - lam dy + tau_t eps_i)] / 2``, both sides in one call.

    Shapes as in :func:`target_difference`; returns ``[*batch, *event]``, unscaled.
    """
    lam = broadcast_instances(lam, solver.event_ndim)
    sides = torch.stack([scores + lam * dy, scores - lam * dy]).unsqueeze(1)  # [2, 1, *shape]
    both = solve_scores(solver, sides + target_temperature * draws)  # [2, S, *shape]
    return (both[0] - both[1]).mean(0) / 2


class IMLEFunction(torch.autograd.Function):
    """Autograd function of :class:`IMLE`: ``(theta, solver, options, generator) -> y``."""

    @staticmethod
    def forward(
        ctx: Any,
        theta: torch.Tensor,
        solver: Solver,
        options: IMLEOptions,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        sign, scores, draws, solutions = perturb_and_solve(theta, solver, options, generator)
        ctx.save_for_backward(scores, draws, solutions)
        ctx.sign = sign
        ctx.solver = solver
        ctx.options = options
        return solutions.mean(0)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        scores, draws, solutions = ctx.saved_tensors
        options = ctx.options
        target_temperature = (
            options.temperature if options.target_temperature is None else options.target_temperature
        )
        grad = target_difference(
            ctx.solver, scores, dy, draws, solutions, lam=options.lam, target_temperature=target_temperature
        )
        if options.scale:
            grad = grad / options.lam
        return ctx.sign * grad, None, None, None


class IMLE(Estimator):
    """I-MLE (Niepert et al. 2021): perturb-and-MAP forward, target-distribution backward.

    Forward returns ``mean_i y*(s + temperature * eps_i)`` (exact solutions when
    ``samples=1``); backward returns
    ``mean_i [y*(s + temperature eps_i) - y*(s - lam dy + target_temperature eps_i)]``
    in score space (times -1 for a "min" solver), divided by ``lam`` if ``scale``.
    Backward reuses the forward's draws and solutions and calls the solver once,
    on all samples together.

    Args:
        samples: Number of perturbed solves ``S >= 1``.
        noise: ``"sum_of_gamma"`` (default), ``"gumbel"``, ``"normal"`` or ``"none"``.
        k: Sum-of-gamma shape (draws per Gumbel); default None takes the solver's
            ``k`` attribute if it has one (top-k), else 1.
        iterations: Sum-of-gamma terms, ``>= 1`` (default 10).
        temperature: Input noise scale ``>= 0``.
        target_temperature: Target noise scale ``>= 0``; default the same as
            ``temperature``.
        lam: Target step ``> 0`` (default 10).
        scale: Divide the gradient by ``lam`` (default False, as in the paper).

    Raises:
        ValueError: On invalid options, naming the argument.

    Example:
        >>> import torch, combgrad as cg
        >>> estimator = cg.gradients.get("imle", noise="none", lam=1.0)
        >>> theta = torch.tensor([0.0, 1.0, 0.5], requires_grad=True)
        >>> y = estimator(theta, cg.solvers.get("argmax"))
        >>> y.backward(torch.tensor([-1.0, 1.0, 0.0]))  # the loss prefers index 0 to index 1
        >>> y.detach(), theta.grad
        (tensor([0., 1., 0.]), tensor([-1.,  1.,  0.]))

    References:
        M. Niepert, P. Minervini, L. Franceschi. Implicit MLE: Backpropagating
        Through Discrete Exponential Family Distributions. NeurIPS 2021.
    """

    name = "imle"

    def __init__(
        self,
        *,
        samples: int = 1,
        noise: str = "sum_of_gamma",
        k: int | None = None,
        iterations: int = 10,
        temperature: float = 1.0,
        target_temperature: float | None = None,
        lam: float = 10.0,
        scale: bool = False,
    ) -> None:
        super().__init__()
        self.options = IMLEOptions(
            samples=samples,
            noise=noise,
            k=k,
            iterations=iterations,
            temperature=temperature,
            target_temperature=target_temperature,
            lam=lam,
            scale=scale,
        )

    def forward(
        self, theta: torch.Tensor, solver: Solver, *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Mean perturbed solution ``y [*, *event]`` of ``theta [*, *event]``."""
        self.check_input(theta, solver)
        return IMLEFunction.apply(theta, solver, self.options, generator)


register("imle", IMLE)

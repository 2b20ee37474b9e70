"""``aimle``: Adaptive I-MLE (Minervini et al. 2023).

I-MLE whose target step is chosen per instance from the sizes of the score and of
the upstream gradient, ``lam_b = beta * ||s_b|| / ||dy_b||``, with ``beta``
adapted online so that the gradient keeps a target size.

The norms are the Euclidean norms over one instance's event dims of the
*unperturbed* score ``s_b`` (``[*event]``, not repeated over samples) and of
``dy_b``; an instance with ``dy_b = 0`` gets ``lam_b = 0`` (and a zero gradient).

Adaptation, deterministic and the only state change made in backward: after
computing the unscaled finite difference ``d [*batch, *event]``, the module
measures ``n`` = the mean over instances of the number of non-zero entries of
``d_b``, then

``velocity <- momentum * velocity + step * sign(target_norm - n)``;
``beta <- max(beta + velocity, 0)``.

So beta grows while gradients are too sparse (too small a step changes no
solution) and shrinks while they are too dense. The gradient of a call uses the
beta in force when its forward ran; the update happens in backward because it
needs ``dy``, only in training mode and only when ``beta_update_step > 0``
(``beta_update_step=0`` freezes beta). ``beta``, ``velocity`` and the last ``n``
(``nonzero``) are registered buffers: they move with ``.to()`` and are saved and
restored by ``state_dict``.

References:
    P. Minervini, L. Franceschi, M. Niepert. Adaptive Perturbation-Based Gradient
    Estimation for Discrete Latent Variable Models. AAAI 2023.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.autograd.function import once_differentiable

from ..solvers.base import Solver
from .._checks import check_bool, check_number
from .base import Estimator, event_norm
from .imle import (
    broadcast_instances,
    central_difference,
    check_sampling_options,
    perturb_and_solve,
    target_difference,
)
from .registry import register


@dataclass(frozen=True)
class AIMLEOptions:
    """Validated options of :class:`AIMLE` (see there); ``beta`` is the initial value."""

    samples: int = 1
    noise: str = "sum_of_gamma"
    k: int | None = None
    iterations: int = 10
    temperature: float = 1.0
    target_temperature: float | None = None
    beta: float = 1.0
    target_norm: float = 1.0
    beta_update_step: float = 1e-3
    beta_update_momentum: float = 0.0
    symmetric: bool = False
    scale: bool = False

    def __post_init__(self) -> None:
        check_sampling_options(
            "aimle",
            self.samples,
            self.noise,
            self.k,
            self.iterations,
            self.temperature,
            self.target_temperature,
        )
        check_number("aimle", "beta", self.beta, nonnegative=True)
        check_number("aimle", "target_norm", self.target_norm, nonnegative=True)
        check_number("aimle", "beta_update_step", self.beta_update_step, nonnegative=True)
        check_number("aimle", "beta_update_momentum", self.beta_update_momentum, nonnegative=True, below=1.0)
        check_bool("aimle", "symmetric", self.symmetric)
        check_bool("aimle", "scale", self.scale)


def adaptive_lam(scores: torch.Tensor, dy: torch.Tensor, beta: torch.Tensor, event_ndim: int) -> torch.Tensor:
    """Per-instance ``lam_b = beta * ||s_b|| / ||dy_b||`` (0 where ``dy_b = 0``); returns ``[*batch]``.

    Example:
        >>> import torch
        >>> adaptive_lam(torch.tensor([[3.0, 4.0]]), torch.tensor([[0.0, 2.0]]), torch.tensor(0.5), 1)
        tensor([1.2500])
    """
    dy_norm = event_norm(dy, event_ndim)
    safe = torch.where(dy_norm > 0, dy_norm, torch.ones_like(dy_norm))
    lam = beta.to(scores.dtype) * event_norm(scores, event_ndim) / safe
    return torch.where(dy_norm > 0, lam, torch.zeros_like(lam))


def nonzero_count(difference: torch.Tensor, event_ndim: int) -> torch.Tensor:
    """Mean over instances of the number of non-zero entries of ``difference [*batch, *event]`` (0-dim)."""
    event_numel = difference.shape[difference.ndim - event_ndim :].numel()
    counts = (difference != 0).reshape(-1, event_numel).sum(-1)
    return counts.to(torch.float64).mean() if counts.numel() else counts.new_zeros((), dtype=torch.float64)


class AIMLEFunction(torch.autograd.Function):
    """Autograd function of :class:`AIMLE`: ``(theta, solver, options, generator, state) -> y``.

    ``state`` is the :class:`AIMLE` module whose buffers hold beta; backward
    calls its :meth:`AIMLE.adapt` (the documented adaptation).
    """

    @staticmethod
    def forward(
        ctx: Any,
        theta: torch.Tensor,
        solver: Solver,
        options: AIMLEOptions,
        generator: torch.Generator | None,
        state: AIMLE,
    ) -> torch.Tensor:
        sign, scores, draws, solutions = perturb_and_solve(theta, solver, options, generator)
        # The beta in force now, so that an update made by another backward in
        # between does not change this call's gradient.
        ctx.save_for_backward(scores, draws, solutions, state.beta.detach().clone())
        ctx.sign = sign
        ctx.solver = solver
        ctx.options = options
        ctx.state = state
        return solutions.mean(0)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        scores, draws, solutions, beta = ctx.saved_tensors
        options, solver = ctx.options, ctx.solver
        target_temperature = (
            options.temperature if options.target_temperature is None else options.target_temperature
        )
        lam = adaptive_lam(scores, dy, beta, solver.event_ndim)
        if options.symmetric:
            difference = central_difference(
                solver, scores, dy, draws, lam=lam, target_temperature=target_temperature
            )
        else:
            difference = target_difference(
                solver, scores, dy, draws, solutions, lam=lam, target_temperature=target_temperature
            )
        ctx.state.adapt(difference, solver.event_ndim)
        grad = difference
        if options.scale:
            lam_b = broadcast_instances(lam, solver.event_ndim)
            grad = torch.where(lam_b > 0, difference / torch.where(lam_b > 0, lam_b, 1.0), 0.0)
        return ctx.sign * grad, None, None, None, None


class AIMLE(Estimator):
    """Adaptive I-MLE (Minervini et al. 2023): I-MLE with ``lam_b = beta * ||s_b|| / ||dy_b||``.

    Forward is I-MLE's (``mean_i y*(s + temperature eps_i)``). Backward, in score
    space (times -1 for a "min" solver), returns
    ``mean_i [y*(s + temperature eps_i) - y*(s - lam dy + target_temperature eps_i)]``,
    or with ``symmetric=True`` the central difference
    ``mean_i [y*(s + lam dy + tau_t eps_i) - y*(s - lam dy + tau_t eps_i)] / 2``
    (both sides in one solver call), divided by ``lam_b`` if ``scale``. Norms are
    per-instance Euclidean norms over the event dims of the unperturbed score and
    of ``dy``. Beta adapts in backward toward ``target_norm`` non-zero gradient
    entries per instance (see the module docstring for the exact rule); the
    current value is the buffer ``beta``, saved by ``state_dict``.

    Args:
        samples, noise, k, iterations, temperature, target_temperature: As in
            :class:`~combgrad.gradients.imle.IMLE`.
        beta: Initial beta ``>= 0`` (default 1).
        target_norm: Target mean number of non-zero entries of one instance's
            (unscaled) gradient, ``>= 0`` (default 1).
        beta_update_step: Step of each beta update ``>= 0``; 0 freezes beta.
        beta_update_momentum: Heavy-ball momentum of the update, in ``[0, 1)``.
        symmetric: Use the central difference.
        scale: Divide the gradient by ``lam_b``.

    Raises:
        ValueError: On invalid options, naming the argument.

    Example:
        >>> import torch, combgrad as cg
        >>> estimator = cg.gradients.get("aimle", noise="none", beta=2.0, beta_update_step=0.1)
        >>> theta = torch.tensor([[0.0, 1.0, 0.5]], requires_grad=True)
        >>> y = estimator(theta, cg.solvers.get("argmax"))
        >>> y.backward(torch.tensor([[-1.0, 1.0, 0.0]]))
        >>> theta.grad, round(estimator.beta.item(), 3)  # gradient with 2 non-zeros > target 1
        (tensor([[-1.,  1.,  0.]]), 1.9)

    References:
        P. Minervini, L. Franceschi, M. Niepert. Adaptive Perturbation-Based
        Gradient Estimation for Discrete Latent Variable Models. AAAI 2023.
    """

    name = "aimle"
    beta: torch.Tensor
    velocity: torch.Tensor
    nonzero: torch.Tensor

    def __init__(
        self,
        *,
        samples: int = 1,
        noise: str = "sum_of_gamma",
        k: int | None = None,
        iterations: int = 10,
        temperature: float = 1.0,
        target_temperature: float | None = None,
        beta: float = 1.0,
        target_norm: float = 1.0,
        beta_update_step: float = 1e-3,
        beta_update_momentum: float = 0.0,
        symmetric: bool = False,
        scale: bool = False,
    ) -> None:
        super().__init__()
        self.options = AIMLEOptions(
            samples=samples,
            noise=noise,
            k=k,
            iterations=iterations,
            temperature=temperature,
            target_temperature=target_temperature,
            beta=beta,
            target_norm=target_norm,
            beta_update_step=beta_update_step,
            beta_update_momentum=beta_update_momentum,
            symmetric=symmetric,
            scale=scale,
        )
        # float64 state: many small steps must not be lost to float32 rounding.
        self.register_buffer("beta", torch.tensor(float(beta), dtype=torch.float64))
        self.register_buffer("velocity", torch.zeros((), dtype=torch.float64))
        self.register_buffer("nonzero", torch.zeros((), dtype=torch.float64))

    def forward(
        self, theta: torch.Tensor, solver: Solver, *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Mean perturbed solution ``y [*, *event]`` of ``theta [*, *event]``."""
        self.check_input(theta, solver)
        return AIMLEFunction.apply(theta, solver, self.options, generator, self)

    @torch.no_grad()
    def adapt(self, difference: torch.Tensor, event_ndim: int) -> None:
        """One beta update from an unscaled gradient ``difference [*batch, *event]``.

        Records ``nonzero`` always; changes ``velocity`` and ``beta`` only in
        training mode with ``beta_update_step > 0``.
        """
        count = nonzero_count(difference, event_ndim).to(self.nonzero.device)
        self.nonzero.copy_(count)
        if not self.training or self.options.beta_update_step == 0:
            return
        direction = torch.sign(self.options.target_norm - count).to(self.velocity.dtype)
        self.velocity.mul_(self.options.beta_update_momentum).add_(self.options.beta_update_step * direction)
        self.beta.add_(self.velocity).clamp_(min=0.0)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, current beta={self.beta.item():.6g}"


register("aimle", AIMLE)

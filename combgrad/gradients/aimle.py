"""``aimle``: Adaptive I-MLE (Minervini et al. 2023), as its reference implementation does it.

I-MLE whose target step is chosen from the sizes of the score and of the
upstream gradient, ``lam = beta * ||s|| / ||dy||``, with ``beta`` adapted online
so that the gradient keeps a target number of non-zero entries. The defaults
follow the paper's reference implementation (EdinburghNLP/torch-adaptive-imle,
``imle/aimle.py`` and ``AdaptiveTargetDistribution`` in ``imle/target.py``):

- norms over the whole batch (``norm="batch"``): ``||s||`` of the unperturbed
  scores ``[*batch, *event]`` and ``||dy||`` of the whole incoming gradient, one
  ``lam`` per call; ``norm="instance"`` uses each instance's own norms over its
  event dims (combgrad's earlier behaviour). ``dy = 0`` gives ``lam = 0``;
- the gradient is divided by ``lam`` (``divide_by_lam=True``; by 1 where
  ``lam = 0``);
- beta's update, deterministic and the only state change made in backward
  (training mode only, and only with ``beta_update_step > 0``): from the
  unscaled per-sample differences ``d [S, *batch, *event]`` (before averaging
  over samples), ``n`` = non-zero entries of ``d`` divided by ``S * batch``
  (the count per sample and instance); an exponential moving average
  ``nonzero <- decay * nonzero + (1 - decay) * n`` (``nonzero_decay=0.9``,
  starting at 1 as in the reference); then
  ``velocity <- momentum * velocity + step * (+1 if nonzero < target_norm else -1)``
  and ``beta <- max(beta + velocity, 0)``: beta grows while gradients are too
  sparse (too small a step changes no solution) and shrinks otherwise,
  including when the count equals the target;
- without ``symmetric``, the left side ``y*(s + tau_t eps_i)`` is solved at the
  target noise scale (the forward's solutions are reused when the two scales
  are equal, which gives the same solutions).

The gradient of a call uses the beta in force when its forward ran. ``beta``,
``velocity`` and ``nonzero`` are registered float64 buffers: they move with
``.to()`` and are saved and restored by ``state_dict``; the update runs on
their device without reading them back to the host, so a module moved to
theta's device (``aimle.to("cuda")``) adds no host sync per step. The norms
and ``lam`` are float32 at least, also for float16/bfloat16 theta.

References:
    P. Minervini, L. Franceschi, M. Niepert. Adaptive Perturbation-Based Gradient
    Estimation for Discrete Latent Variable Models. AAAI 2023.
    Reference implementation: github.com/EdinburghNLP/torch-adaptive-imle.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch.autograd.function import once_differentiable

from ..solvers.base import Solver
from .base import Estimator, blame_gradient, boolean, choice, event_norm, number, option
from .perturb_and_map import (
    PerturbAndMAPOptions,
    broadcast_instances,
    central_difference,
    combine_samples,
    perturb_and_solve,
    sample_output,
    target_difference,
    with_sample_dim,
)
from .registry import register

NORMS = ("batch", "instance")

# The reference's AdaptiveTargetDistribution starts its running count at 1.
INITIAL_NONZERO = 1.0


@dataclasses.dataclass(frozen=True)
class AIMLEOptions(PerturbAndMAPOptions):
    """Validated options of :class:`AIMLE` (see there); ``beta`` is the initial value."""

    owner = "aimle"

    divide_by_lam: bool = option(True, boolean)
    beta: float = option(1.0, number(nonnegative=True))
    target_norm: float = option(1.0, number(nonnegative=True))
    beta_update_step: float = option(1e-3, number(nonnegative=True))
    beta_update_momentum: float = option(0.0, number(nonnegative=True, below=1.0))
    nonzero_decay: float = option(0.9, number(nonnegative=True, below=1.0))
    norm: str = option("batch", choice(NORMS))
    symmetric: bool = option(False, boolean)


def adaptive_lam(
    scores: torch.Tensor, dy: torch.Tensor, beta: torch.Tensor, event_ndim: int, norm: str = "batch"
) -> torch.Tensor:
    """``lam = beta * ||s|| / ||dy||`` (0 where ``dy = 0``): 0-dim for ``norm="batch"``, else ``[S', *batch]``.

    The norms and ``lam`` are computed in float32 at least (float64 stays
    float64): a float16 norm overflows once its squares sum past 65504, which a
    30x30 map of costs near 10 already does (900 * 100), and ``lam`` would be
    inf. ``lam`` is on ``scores``' device, whatever ``beta``'s.

    Args:
        scores: ``s [*batch, *event]``.
        dy: ``[*batch, *event]`` or ``[S, *batch, *event]``.
        beta: 0-dim.
        event_ndim: The solver's event dims.
        norm: ``"batch"`` (norms over everything) or ``"instance"`` (per instance
            over its event dims; per sample too when ``dy`` has samples).

    Example:
        >>> import torch
        >>> s, dy = torch.tensor([[3.0, 4.0], [0.0, 0.0]]), torch.tensor([[0.0, 2.0], [0.0, 0.0]])
        >>> adaptive_lam(s, dy, torch.tensor(0.5), 1)
        tensor(1.2500)
        >>> adaptive_lam(s, dy, torch.tensor(0.5), 1, norm="instance")
        tensor([[1.2500, 0.0000]])
    """
    dtype = torch.promote_types(scores.dtype, torch.float32)
    if norm == "batch":
        dy_norm = torch.linalg.vector_norm(dy, dtype=dtype)
        score_norm = torch.linalg.vector_norm(scores, dtype=dtype)
    else:
        dy_norm = event_norm(with_sample_dim(dy, scores).to(dtype), event_ndim)
        score_norm = event_norm(scores.to(dtype), event_ndim)
    safe = torch.where(dy_norm > 0, dy_norm, torch.ones_like(dy_norm))
    lam = beta.to(device=scores.device, dtype=dtype) * score_norm / safe
    return torch.where(dy_norm > 0, lam, torch.zeros_like(lam))


def nonzero_count(per_sample: torch.Tensor, event_ndim: int) -> torch.Tensor:
    """Non-zero entries of ``per_sample [S, *batch, *event]`` per sample and instance (0-dim float64).

    Counted before averaging over samples, as the reference does
    (``count_nonzero(gradient) / (batch_size * nb_samples)``).

    Example:
        >>> nonzero_count(torch.tensor([[[1.0, -1.0, 0.0]], [[0.0, 0.0, 0.0]]]), 1)
        tensor(1., dtype=torch.float64)
    """
    instances = per_sample.shape[: per_sample.ndim - event_ndim].numel()
    if instances == 0:
        return torch.zeros((), dtype=torch.float64, device=per_sample.device)
    return torch.count_nonzero(per_sample).to(torch.float64) / instances


class AIMLEFunction(torch.autograd.Function):
    """Autograd function of :class:`AIMLE`: ``(theta, solver, options, generator, sample, state) -> y``.

    ``state`` is the :class:`AIMLE` module whose buffers hold beta; backward
    calls its :meth:`AIMLE.adapt` (the documented update).
    """

    @staticmethod
    def forward(
        ctx: Any,
        theta: torch.Tensor,
        solver: Solver,
        options: AIMLEOptions,
        generator: torch.Generator | None,
        sample: bool,
        state: AIMLE,
    ) -> torch.Tensor:
        sign, scores, draws, solutions = perturb_and_solve(theta, solver, options, generator, sample=sample)
        # The beta in force now, so that an update made by another backward in
        # between does not change this call's gradient.
        ctx.save_for_backward(scores, draws, solutions, state.beta.detach().clone())
        ctx.sign = sign
        ctx.solver = solver
        ctx.options = options
        ctx.state = state
        return sample_output(solutions, options)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        scores, draws, solutions, beta = ctx.saved_tensors
        options, solver = ctx.options, ctx.solver
        event_ndim = solver.event_ndim
        lam = adaptive_lam(scores, dy, beta, event_ndim, options.norm)
        tau_t = options.target_scale
        # The solver input's finiteness check is this pass's one host read; it blames a non-finite dy.
        blame = blame_gradient("aimle", dy)
        if options.symmetric:
            per_sample = central_difference(
                solver, scores, dy, draws, lam=lam, target_noise_scale=tau_t, owner="aimle", blame=blame
            )
        else:
            # The reference solves the left side at the target noise scale too (in
            # the targets' solver call); at equal scales the forward's solutions are it.
            left = None if tau_t == options.noise_scale else tau_t
            per_sample = target_difference(
                solver, scores, dy, draws, solutions, lam=lam, target_noise_scale=tau_t, left_noise_scale=left,
                owner="aimle", blame=blame,
            )
        ctx.state.adapt(per_sample, event_ndim)
        if options.divide_by_lam:
            # As the reference: divide by lam, or by 1 where lam = 0 (there dy = 0 and so is d).
            safe = torch.where(lam > 0, lam, torch.ones_like(lam))
            per_sample = per_sample / broadcast_instances(safe, event_ndim)
        return ctx.sign * combine_samples(per_sample, options.reduce), None, None, None, None, None


class AIMLE(Estimator):
    """Adaptive I-MLE (Minervini et al. 2023): I-MLE with ``lam = beta * ||s|| / ||dy||``.

    Forward is I-MLE's (``mean_i y*(s + noise_scale eps_i)``, all samples with
    ``reduce=False``, the exact solution in eval mode). Backward, in score space
    (times -1 for a "min" solver), returns
    ``mean_i [y*(s + tau_t eps_i) - y*(s - lam dy + tau_t eps_i)] / lam``, or with
    ``symmetric=True`` the central difference
    ``mean_i [y*(s + lam dy + tau_t eps_i) - y*(s - lam dy + tau_t eps_i)] / (2 lam)``
    (both sides in one solver call). The defaults follow the reference
    implementation (whole-batch norms, division by lam, per-sample non-zero
    count with an EMA); see the module docstring for the exact update of beta.
    The current beta is the buffer ``beta``, saved by ``state_dict``.

    Args:
        samples: Number of perturbed solves ``S >= 1`` (as in :class:`~combgrad.gradients.imle.IMLE`).
        noise: ``"sum_of_gamma"`` (default), ``"gumbel"``, ``"normal"`` or ``"none"``.
        noise_scale: Input noise scale ``>= 0`` (default 1; old name ``temperature``).
        reduce: Return the mean of the samples (default True); False returns all
            of them, ``[S, *theta.shape]``, and sums the per-sample gradients.
        sample_in_eval: Keep drawing noise in eval mode (default False).
        k: Sum-of-gamma shape; default None takes the solver's ``k``, else 1.
        iterations: Sum-of-gamma terms, ``>= 1`` (default 10).
        target_noise_scale: Target noise scale ``>= 0``; default None uses
            ``noise_scale`` (old name ``target_temperature``).
        divide_by_lam: Divide the gradient by ``lam`` (default True, as the
            reference does; old name ``scale``).
        beta: Initial beta ``>= 0`` (default 1).
        target_norm: Target number of non-zero entries of one sample's gradient
            for one instance, ``>= 0`` (default 1).
        beta_update_step: Step of each beta update ``>= 0`` (default 1e-3); 0
            freezes beta.
        beta_update_momentum: Heavy-ball momentum of the update, in ``[0, 1)``
            (default 0).
        nonzero_decay: Decay of the moving average of the non-zero count, in
            ``[0, 1)`` (default 0.9, the reference's; 0 uses the latest count).
        norm: ``"batch"`` (default, whole-batch norms) or ``"instance"`` (one
            ``lam`` per instance).
        symmetric: Use the central difference (default False).
        temperature: Deprecated name of ``noise_scale`` (warns).
        target_temperature: Deprecated name of ``target_noise_scale`` (warns).
        scale: Deprecated name of ``divide_by_lam`` (warns).

    Raises:
        ValueError: On invalid options, naming the argument.
        OptionError: On an unknown option (a TypeError and a ValueError).

    Example:
        >>> import torch, combgrad as cg
        >>> estimator = cg.gradients.get("aimle", noise="none", beta=2.0, beta_update_step=0.1)
        >>> theta = torch.tensor([[0.0, 1.0, 0.5]], requires_grad=True)
        >>> y = estimator(theta, cg.solvers.get("argmax"))
        >>> y.backward(torch.tensor([[-1.0, 1.0, 0.0]]))
        >>> theta.grad  # lam = 2 * ||s|| / ||dy|| = 1.58 moves the solution: divided by lam
        tensor([[-0.6325,  0.6325,  0.0000]])
        >>> estimator.nonzero.item(), round(estimator.beta.item(), 3)  # 0.9 * 1 + 0.1 * 2 > 1: beta down
        (1.1, 1.9)

    References:
        P. Minervini, L. Franceschi, M. Niepert. Adaptive Perturbation-Based
        Gradient Estimation for Discrete Latent Variable Models. AAAI 2023.
        Reference implementation: github.com/EdinburghNLP/torch-adaptive-imle.
    """

    name = "aimle"
    Options = AIMLEOptions
    options: AIMLEOptions
    beta: torch.Tensor
    velocity: torch.Tensor
    nonzero: torch.Tensor

    def init_state(self) -> None:
        """Register ``beta``, ``velocity`` and the running non-zero count ``nonzero`` as buffers."""
        # float64 state: many small steps must not be lost to float32 rounding.
        self.register_buffer("beta", torch.tensor(float(self.options.beta), dtype=torch.float64))
        self.register_buffer("velocity", torch.zeros((), dtype=torch.float64))
        self.register_buffer("nonzero", torch.tensor(INITIAL_NONZERO, dtype=torch.float64))

    def forward(
        self, theta: torch.Tensor, solver: Solver, *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Mean perturbed solution ``y [*, *event]`` of ``theta [*, *event]`` (``[S, *, *event]`` unreduced)."""
        self.check_input(theta, solver)
        return AIMLEFunction.apply(theta, solver, self.options, generator, self.sampling(), self)

    @torch.no_grad()
    def adapt(self, per_sample: torch.Tensor, event_ndim: int) -> None:
        """One beta update from the unscaled per-sample differences ``[S, *batch, *event]``.

        Does nothing in eval mode (the running count is state too, and
        evaluation must not move it); with ``beta_update_step=0`` only the
        running count moves.
        """
        options = self.options
        if not self.training:
            return
        count = nonzero_count(per_sample, event_ndim).to(self.nonzero.device)
        self.nonzero.mul_(options.nonzero_decay).add_((1.0 - options.nonzero_decay) * count)
        if options.beta_update_step == 0:
            return
        # torch.where, not a Python branch: the update stays on the device (no host read).
        direction = torch.where(self.nonzero < options.target_norm, 1.0, -1.0).to(self.velocity.dtype)
        self.velocity.mul_(options.beta_update_momentum).add_(options.beta_update_step * direction)
        self.beta.add_(self.velocity).clamp_(min=0.0)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, current beta={self.beta.item():.6g}"


register("aimle", AIMLE)

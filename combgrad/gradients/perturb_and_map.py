"""Perturb-and-MAP mechanics shared by I-MLE and AIMLE: their options, draws and differences.

Both estimators draw ``eps_i [S, *theta.shape]``, solve all perturbed scores
``s + noise_scale * eps_i`` in one batched call (forward), and in backward
compare those solutions with solutions of moved scores perturbed by the same
draws at ``target_noise_scale``. This module holds that machinery once; the
estimators (:mod:`.imle`, :mod:`.aimle`) only choose the step ``lam`` and what
to do with the differences.

The difference functions return one difference per sample, ``[S, *theta.shape]``:
AIMLE counts non-zero entries per sample before averaging (as its reference
implementation does), and with ``reduce=False`` the estimators sum over samples.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import ClassVar

import torch

from ..solvers.base import Solver
from . import noise as noise_module
from .base import (
    SamplingOptions,
    blame_theta,
    boolean,
    choice,
    draw_noise,
    noise_k,
    number,
    option,
    optional,
    positive_int,
    score_sign,
    solve_perturbed,
    solve_scores,
)


@dataclasses.dataclass(frozen=True)
class PerturbAndMAPOptions(SamplingOptions):
    """The options I-MLE and AIMLE share (documented in :class:`~combgrad.gradients.imle.IMLE`)."""

    deprecated: ClassVar[Mapping[str, str]] = {
        "temperature": "noise_scale",
        "target_temperature": "target_noise_scale",
        "scale": "divide_by_lam",
    }

    noise: str = option("sum_of_gamma", choice(noise_module.NOISES))
    k: int | None = option(None, optional(positive_int))
    iterations: int = option(10, positive_int)
    target_noise_scale: float | None = option(None, optional(number(nonnegative=True)))
    divide_by_lam: bool = option(False, boolean)

    @property
    def target_scale(self) -> float:
        """The target noise scale in force: ``target_noise_scale``, or ``noise_scale`` if that is None."""
        return self.noise_scale if self.target_noise_scale is None else self.target_noise_scale


def perturb_and_solve(
    theta: torch.Tensor,
    solver: Solver,
    options: PerturbAndMAPOptions,
    generator: torch.Generator | None,
    *,
    sample: bool = True,
) -> tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The forward shared by I-MLE and AIMLE: ``(sign, scores, draws, solutions)``.

    ``scores = sign * theta`` in score space; ``draws [S, *theta.shape]`` and the
    solutions ``[S, *theta.shape]`` of ``scores + noise_scale * draws``, from one
    batched solver call, whose input is the pass's one finiteness check (a
    non-finite theta raises its own error from there). Without noise (``noise="none"``, or ``sample=False``:
    eval mode) every sample would be the same solve, so one zero draw stands for
    all of them (``S = 1``; the mean and every gradient are unchanged).

    Example:
        >>> import torch, combgrad as cg
        >>> options = PerturbAndMAPOptions(samples=4, noise="gumbel")
        >>> sign, scores, draws, y = perturb_and_solve(torch.zeros(2, 3), cg.solvers.get("argmax"), options, None)
        >>> draws.shape, y.shape
        (torch.Size([4, 2, 3]), torch.Size([4, 2, 3]))
    """
    sign = score_sign(solver.sense)
    scores = sign * theta.detach()
    noise = options.noise if sample else "none"
    samples = 1 if noise == "none" else options.samples
    draws = draw_noise(
        noise, samples, theta, k=noise_k(options.k, solver), iterations=options.iterations, generator=generator
    )
    owner = options.owner
    blame = blame_theta(owner, theta, solver.event_ndim)
    return sign, scores, draws, solve_perturbed(solver, scores, draws, options.noise_scale, owner=owner, blame=blame)


def sample_output(solutions: torch.Tensor, options: SamplingOptions) -> torch.Tensor:
    """The layer's output from the solutions ``[S', *shape]``: their mean, or all ``S`` samples.

    With ``reduce=False`` one noise-free solve (``S' = 1``) is repeated to the
    ``[samples, *shape]`` that the user asked for.

    Example:
        >>> sample_output(torch.ones(1, 2), PerturbAndMAPOptions(samples=3, reduce=False)).shape
        torch.Size([3, 2])
    """
    if options.reduce:
        return solutions.mean(0)
    return solutions.expand(options.samples, *solutions.shape[1:]).clone()


def combine_samples(per_sample: torch.Tensor, reduce: bool) -> torch.Tensor:
    """theta's gradient from per-sample gradients ``[S, *shape]``.

    With ``reduce=True`` the output is the mean of the samples, so the gradient is
    the mean of the per-sample ones; with ``reduce=False`` each sample is its own
    output and autograd's rule for a tensor used S times applies: the sum.

    Example:
        >>> combine_samples(torch.tensor([[1.0], [3.0]]), reduce=True), combine_samples(torch.tensor([[1.0], [3.0]]), reduce=False)
        (tensor([2.]), tensor([4.]))
    """
    return per_sample.mean(0) if reduce else per_sample.sum(0)


def broadcast_instances(values: torch.Tensor | float, event_ndim: int) -> torch.Tensor | float:
    """Reshape per-instance values ``[*batch]`` to broadcast over ``[*batch, *event]``.

    Example:
        >>> broadcast_instances(torch.tensor([1.0, 2.0]), 2).shape
        torch.Size([2, 1, 1])
    """
    if isinstance(values, torch.Tensor):
        return values.reshape(*values.shape, *([1] * event_ndim))
    return values


def with_sample_dim(dy: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """``dy`` as ``[S', *scores.shape]``: ``[1, ...]`` for a reduced output's gradient, as is for samples."""
    return dy.unsqueeze(0) if dy.ndim == scores.ndim else dy


def target_difference(
    solver: Solver,
    scores: torch.Tensor,
    dy: torch.Tensor,
    draws: torch.Tensor,
    solutions: torch.Tensor,
    *,
    lam: float | torch.Tensor,
    target_noise_scale: float,
    owner: str | None = None,
    blame: Callable[[], object] | None = None,
    left_noise_scale: float | None = None,
) -> torch.Tensor:
    """Per sample ``y_i - y*(s - lam dy_i + tau_t eps_i)``: the I-MLE difference, in one solver call.

    Args:
        solver: The solver.
        scores: ``s [*batch, *event]``.
        dy: ``[*batch, *event]`` (one gradient for all samples) or
            ``[S, *batch, *event]`` (one per sample, ``reduce=False``).
        draws: ``eps [S, *batch, *event]`` (``S = 1`` without noise).
        solutions: The forward's ``y_i [S, *batch, *event]``.
        lam: A float, or a tensor that broadcasts over ``[S, *batch]``.
        target_noise_scale: ``tau_t``.
        owner: The estimator, for the solver input's finiteness error.
        blame: Raises the error of a non-finite ``dy`` (see
            :func:`~combgrad.gradients.base.check_solver_input`).
        left_noise_scale: If set, ``y_i`` is re-solved as
            ``y*(s + left_noise_scale eps_i)`` in the same solver call as the
            targets (AIMLE's left side at the target noise scale), and
            ``solutions`` is ignored.

    Returns:
        ``[S, *batch, *event]``, unscaled (not divided by lam).

    Example:
        >>> import torch, combgrad as cg
        >>> s, dy = torch.tensor([[0.0, 1.0]]), torch.tensor([[-1.0, 1.0]])
        >>> y = torch.tensor([[[0.0, 1.0]]])
        >>> target_difference(cg.solvers.get("argmax"), s, dy, torch.zeros(1, 1, 2), y, lam=1.0, target_noise_scale=0.0)
        tensor([[[-1.,  1.]]])
    """
    lam = broadcast_instances(lam, solver.event_ndim)
    moved = scores - lam * with_sample_dim(dy, scores) + target_noise_scale * draws
    if left_noise_scale is None:
        return solutions - solve_scores(solver, moved, owner=owner, blame=blame)
    left = scores + left_noise_scale * draws
    left, moved = torch.broadcast_tensors(left, moved)
    both = solve_scores(solver, torch.stack([left, moved]), owner=owner, blame=blame)
    return both[0] - both[1]


def central_difference(
    solver: Solver,
    scores: torch.Tensor,
    dy: torch.Tensor,
    draws: torch.Tensor,
    *,
    lam: float | torch.Tensor,
    target_noise_scale: float,
    owner: str | None = None,
    blame: Callable[[], object] | None = None,
) -> torch.Tensor:
    """Per sample ``[y*(s + lam dy_i + tau_t eps_i) - y*(s - lam dy_i + tau_t eps_i)] / 2``, both sides in one call.

    Shapes as in :func:`target_difference`; returns ``[S, *batch, *event]``, unscaled.

    Example:
        >>> import torch, combgrad as cg
        >>> s, dy = torch.tensor([[0.0, 1.0]]), torch.tensor([[-1.0, 1.0]])
        >>> central_difference(cg.solvers.get("argmax"), s, dy, torch.zeros(1, 1, 2), lam=1.0, target_noise_scale=0.0)
        tensor([[[-0.5000,  0.5000]]])
    """
    lam = broadcast_instances(lam, solver.event_ndim)
    step = lam * with_sample_dim(dy, scores)
    sides = torch.stack([scores + step, scores - step])  # [2, S', *shape]
    both = solve_scores(solver, sides + target_noise_scale * draws, owner=owner, blame=blame)  # [2, S, *shape]
    return (both[0] - both[1]) / 2

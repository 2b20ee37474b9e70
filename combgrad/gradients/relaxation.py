"""What the relaxed baselines share (``sst``, ``relaxed_topk``): options, solver checks, one autograd function.

A relaxed estimator perturbs the scores, ``r_i = s + noise_scale * G_i`` (Gumbel
``G_i`` by default), and replaces the solver's piecewise-constant map by a
smooth relaxation ``y~(r_i)`` with a temperature ``tau``: a softmax for argmax
(Jang et al. 2017), k successive masked softmaxes for top-k (Xie & Ermon 2019).
With ``hard=True`` (straight-through) the forward returns the exact solution of
the perturbed scores, ``y*(r_i)`` (one batched solver call, the solver's tie
rule), and the backward is the relaxation's gradient at ``r_i``; with
``hard=False`` the relaxation itself is the output. Backward recomputes the
relaxation under autograd from the saved perturbed scores (no solver call),
so nothing but ``r`` is kept between the passes.

Why ``tau`` and not ``temperature``: ``temperature`` is I-MLE's and AIMLE's
deprecated name of ``noise_scale``, the strength of the noise, while the
relaxation's temperature divides the perturbed scores inside the softmax, a
different quantity (torch's ``gumbel_softmax`` and the papers call it ``tau``).

These estimators only make sense for the solvers whose relaxation they are, so
they refuse any other solver (a ValueError naming it). A solver wrapper that
keeps the solver as ``.solver`` (the training loop's timer) is looked through
for its ``k``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch.autograd.function import once_differentiable

from ..solvers.base import Solver
from .base import (
    SamplingOptions,
    blame_theta,
    boolean,
    check_incoming_gradient,
    check_solver_input,
    choice,
    draw_noise,
    number,
    option,
    positive_int,
    score_sign,
    solve_scores,
)
from .perturb_and_map import sample_output, with_sample_dim

NOISES = ("gumbel", "normal", "none")

# A relaxation: ``relax(perturbed [S, *batch, n], tau, k) -> [S, *batch, n]``, differentiable by autograd.
Relaxation = Callable[[torch.Tensor, float, int], torch.Tensor]


@dataclasses.dataclass(frozen=True)
class RelaxationOptions(SamplingOptions):
    """The options ``sst`` and ``relaxed_topk`` share (documented in :class:`~combgrad.gradients.sst.SST`)."""

    samples: int = option(1, positive_int)
    noise: str = option("gumbel", choice(NOISES))
    noise_scale: float = option(1.0, number(nonnegative=True))
    tau: float = option(1.0, number(positive=True))
    hard: bool = option(True, boolean)


def solver_k(solver: Any) -> int | None:
    """The ``k`` of a top-k solver (1 for argmax), looking through a wrapper's ``.solver``; None otherwise.

    Example:
        >>> import combgrad as cg
        >>> solver_k(cg.solvers.get("topk", k=3)), solver_k(cg.solvers.get("argmax")), solver_k(cg.solvers.get("spanning_tree"))
        (3, 1, None)
    """
    name = getattr(solver, "name", None)
    if name == "argmax":
        return 1
    if name != "topk":
        return None
    for candidate in (solver, getattr(solver, "solver", None)):
        k = getattr(candidate, "k", None)
        if isinstance(k, int) and not isinstance(k, bool):
            return k
    return None


def is_one_hot_solver(solver: Any) -> bool:
    """Whether ``solver`` picks one entry of ``[*, n]``: ``argmax``, or ``topk`` with ``k = 1``.

    Example:
        >>> import combgrad as cg
        >>> is_one_hot_solver(cg.solvers.get("topk", k=1)), is_one_hot_solver(cg.solvers.get("topk", k=2))
        (True, False)
    """
    return solver_k(solver) == 1


def check_relaxed_solver(owner: str, solver: Any, *, one_hot: bool) -> int:
    """``k`` of an argmax/top-k solver in the "max" sense, else a ValueError naming the solver.

    Example:
        >>> import combgrad as cg
        >>> check_relaxed_solver("sst", cg.solvers.get("shortest_path"), one_hot=True)
        Traceback (most recent call last):
        ...
        ValueError: sst: the Gumbel-softmax relaxation needs an argmax solver (or topk with k=1), got 'shortest_path'; use an estimator for any solver (imle, aimle, perturbation, score_function) instead
    """
    k = solver_k(solver)
    name = getattr(solver, "name", type(solver).__name__)
    if one_hot and k != 1:
        hint = "; for top-k use relaxed_topk" if k is not None else ""
        raise ValueError(
            f"{owner}: the Gumbel-softmax relaxation needs an argmax solver (or topk with k=1), got {name!r}"
            f"{hint or '; use an estimator for any solver (imle, aimle, perturbation, score_function) instead'}"
        )
    if k is None:
        raise ValueError(
            f"{owner}: the relaxed top-k needs a topk (or argmax) solver, got {name!r}; use an estimator for "
            "any solver (imle, aimle, perturbation, score_function) instead"
        )
    if getattr(solver, "sense", "max") != "max" or getattr(solver, "event_ndim", 1) != 1:
        raise ValueError(f"{owner}: needs a 'max' solver over [*, n], got {name!r} with sense {solver.sense!r}")
    return k


class RelaxationFunction(torch.autograd.Function):
    """``(theta, solver, options, generator, sample, relax, k, owner) -> y``: the relaxed estimators' one Function."""

    @staticmethod
    def forward(
        ctx: Any,
        theta: torch.Tensor,
        solver: Solver,
        options: RelaxationOptions,
        generator: torch.Generator | None,
        sample: bool,
        relax: Relaxation,
        k: int,
        owner: str,
    ) -> torch.Tensor:
        sign = score_sign(solver.sense)
        scores = sign * theta.detach()
        noise = options.noise if sample else "none"
        # Without noise every sample would be the same: one stands for all (as in I-MLE).
        samples = 1 if noise == "none" else options.samples
        draws = draw_noise(noise, samples, theta, generator=generator)
        perturbed = scores + options.noise_scale * draws  # [S', *batch, n]
        blame = blame_theta(owner, theta, solver.event_ndim)
        if options.hard:
            # The perturbed scores' finiteness check (in solve_scores) is the pass's one host read.
            solutions = solve_scores(solver, perturbed, owner=owner, blame=blame)
        else:
            check_solver_input(owner, perturbed, blame)
            with torch.no_grad():
                solutions = relax(perturbed, options.tau, k)
        ctx.save_for_backward(scores, perturbed)
        ctx.sign, ctx.options, ctx.relax, ctx.k, ctx.owner = sign, options, relax, k, owner
        return sample_output(solutions, options)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        check_incoming_gradient(ctx.owner, dy)
        scores, perturbed = ctx.saved_tensors
        options = ctx.options
        dy = with_sample_dim(dy, scores)  # [S or 1, *batch, n]
        count = perturbed.shape[0]
        if options.reduce:
            dy = dy.expand(count, *dy.shape[1:]) / count  # the output was the mean of the samples
        elif count == 1 and dy.shape[0] > 1:
            dy = dy.sum(0, keepdim=True)  # one relaxation stood for all the samples
        with torch.enable_grad():
            point = perturbed.detach().requires_grad_()
            (grad,) = torch.autograd.grad(ctx.relax(point, options.tau, ctx.k), point, dy)
        # perturbed = s + noise: d/ds sums over the samples; the score sign maps to theta.
        return ctx.sign * grad.sum(0), None, None, None, None, None, None, None

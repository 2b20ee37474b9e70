"""``ste``: the straight-through estimator.

Forward returns the exact solution ``y*(theta)``; backward passes the upstream
gradient through unchanged *in score space*: ``dL/ds = dy``, so
``dL/dtheta = dy`` for a "max" solver and ``-dy`` for a "min" one (raising the
score of an entry that the loss wants more of means lowering its cost).

References:
    Y. Bengio, N. Leonard, A. Courville. Estimating or Propagating Gradients
    Through Stochastic Neurons for Conditional Computation. arXiv:1308.3432, 2013.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch.autograd.function import once_differentiable

from ..solvers.base import Solver
from .base import Estimator, EstimatorOptions, blame_theta, check_incoming_gradient, score_sign, solve_scores
from .registry import register


@dataclasses.dataclass(frozen=True)
class STEOptions(EstimatorOptions):
    """Options of :class:`STE` (it has none)."""

    owner = "ste"


class STEFunction(torch.autograd.Function):
    """Autograd function of :class:`STE`: ``(theta, solver) -> y*(theta)``."""

    @staticmethod
    def forward(ctx: Any, theta: torch.Tensor, solver: Solver) -> torch.Tensor:
        sign = score_sign(solver.sense)
        ctx.sign = sign
        return solve_scores(solver, sign * theta.detach(), owner="ste", blame=blame_theta("ste", theta, solver.event_ndim))

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        return ctx.sign * check_incoming_gradient("ste", dy), None


class STE(Estimator):
    """Straight-through estimator: exact forward, identity backward in score space.

    Example:
        >>> import torch, combgrad as cg
        >>> costs = torch.tensor([[1.0, 9.0], [1.0, 1.0]], requires_grad=True)
        >>> y = cg.gradients.get("ste")(costs, cg.solvers.get("shortest_path"))
        >>> y.backward(torch.ones_like(y))
        >>> costs.grad  # shortest_path is a "min" solver
        tensor([[-1., -1.],
                [-1., -1.]])
    """

    name = "ste"
    Options = STEOptions

    def forward(
        self, theta: torch.Tensor, solver: Solver, *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Exact solution ``y [*, *event]``; ``generator`` is unused (no noise)."""
        self.check_input(theta, solver)
        return STEFunction.apply(theta, solver)


register("ste", STE)

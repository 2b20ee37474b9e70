"""``blackbox``: blackbox differentiation of combinatorial solvers (Vlastelica et al. 2020).

Forward returns the exact solution. For a "min" solver over costs ``w`` the paper's
backward is ``w' = w + lam dy``, ``grad_w = -(y(w) - y(w')) / lam``: the gradient of
a piecewise-linear interpolation of the loss. In score space (``s = -w``) that is
``g = (y*(s) - y*(s - lam dy)) / lam``, which is also I-MLE without noise divided
by lam; this module states it directly and calls the solver once in backward.

References:
    M. Vlastelica, A. Paulus, V. Musil, G. Martius, M. Rolinek. Differentiation of
    Blackbox Combinatorial Solvers. ICLR 2020.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch.autograd.function import once_differentiable

from ..solvers.base import Solver
from .base import EstimatorOptions, Estimator, blame_gradient, blame_theta, number, option, score_sign, solve_scores
from .registry import register


@dataclasses.dataclass(frozen=True)
class BlackboxOptions(EstimatorOptions):
    """Validated options of :class:`Blackbox` (see there): the one place they are written."""

    owner = "blackbox"

    lam: float = option(10.0, number(positive=True))


def blackbox_vjp(
    solver: Solver, scores: torch.Tensor, solution: torch.Tensor, dy: torch.Tensor, lam: float
) -> torch.Tensor:
    """Score-space ``(y*(s) - y*(s - lam dy)) / lam`` for ``s, y, dy [*batch, *event]``.

    The moved scores' finiteness check is the backward's one host read; a
    non-finite ``dy`` raises its own error from there.
    """
    moved = solve_scores(solver, scores - lam * dy, owner="blackbox", blame=blame_gradient("blackbox", dy))
    return (solution - moved) / lam


class BlackboxFunction(torch.autograd.Function):
    """Autograd function of :class:`Blackbox`: ``(theta, solver, options) -> y*(theta)``."""

    @staticmethod
    def forward(ctx: Any, theta: torch.Tensor, solver: Solver, options: BlackboxOptions) -> torch.Tensor:
        sign = score_sign(solver.sense)
        scores = sign * theta.detach()
        solution = solve_scores(solver, scores, owner="blackbox", blame=blame_theta("blackbox", theta, solver.event_ndim))
        ctx.save_for_backward(scores, solution)
        ctx.sign = sign
        ctx.solver = solver
        ctx.options = options
        return solution

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        scores, solution = ctx.saved_tensors
        grad = blackbox_vjp(ctx.solver, scores, solution, dy, ctx.options.lam)
        return ctx.sign * grad, None, None


class Blackbox(Estimator):
    """Blackbox differentiation (Vlastelica et al. 2020): ``(y*(s) - y*(s - lam dy)) / lam`` backward.

    Args:
        lam: Interpolation strength ``> 0`` (default 10; the paper uses 10 to 20
            on Warcraft).

    Raises:
        ValueError: If ``lam`` is not a positive finite number.
        OptionError: On an unknown option (a TypeError and a ValueError).

    Example:
        >>> import torch, combgrad as cg
        >>> theta = torch.tensor([0.0, 1.0, 0.5], requires_grad=True)
        >>> y = cg.gradients.get("blackbox", lam=2.0)(theta, cg.solvers.get("argmax"))
        >>> y.backward(torch.tensor([-1.0, 1.0, 0.0]))
        >>> theta.grad
        tensor([-0.5000,  0.5000,  0.0000])

    References:
        M. Vlastelica, A. Paulus, V. Musil, G. Martius, M. Rolinek. Differentiation
        of Blackbox Combinatorial Solvers. ICLR 2020.
    """

    name = "blackbox"
    Options = BlackboxOptions

    def forward(
        self, theta: torch.Tensor, solver: Solver, *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Exact solution ``y [*, *event]``; ``generator`` is unused (no noise)."""
        self.check_input(theta, solver)
        return BlackboxFunction.apply(theta, solver, self.options)


register("blackbox", Blackbox)

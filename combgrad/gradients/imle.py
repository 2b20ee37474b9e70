"""``imle``: Implicit Maximum Likelihood Estimation (Niepert et al. 2021).

In score space, with noise draws ``eps_i`` (``i = 1..S``), input noise scale
``tau`` (``noise_scale``) and target noise scale ``tau_t`` (``target_noise_scale``):

- forward returns ``mean_i y*(s + tau eps_i)`` (perturb-and-MAP samples), or all
  samples ``[S, *theta.shape]`` with ``reduce=False``;
- backward builds the target ``s' = s - lam dy`` and returns
  ``g = mean_i [y*(s + tau eps_i) - y*(s' + tau_t eps_i)]``, divided by ``lam``
  with ``divide_by_lam=True``. The draws ``eps_i`` are the forward's own, and the
  forward's solutions are reused, so backward makes one batched solver call.
- with ``symmetric=True``, backward takes the central difference
  ``g = mean_i [y*(s + lam dy + tau_t eps_i) - y*(s - lam dy + tau_t eps_i)] / 2``
  (both sides in one solver call, divided by ``lam`` with ``divide_by_lam=True``):
  PyEPO's ``implicitMLE(two_sides=True)``, which is this with
  ``divide_by_lam=True`` (the same name and formula as AIMLE's ``symmetric``).

With ``noise="none"`` and ``divide_by_lam=True`` this is the blackbox estimator.
The perturb-and-solve mechanics are shared with AIMLE in :mod:`.perturb_and_map`.

References:
    M. Niepert, P. Minervini, L. Franceschi. Implicit MLE: Backpropagating Through
    Discrete Exponential Family Distributions. NeurIPS 2021.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch.autograd.function import once_differentiable

from ..solvers.base import Solver
from .base import Estimator, blame_gradient, boolean, number, option
from .perturb_and_map import (
    PerturbAndMAPOptions,
    central_difference,
    combine_samples,
    perturb_and_solve,
    sample_output,
    target_difference,
)
from .registry import register


@dataclasses.dataclass(frozen=True)
class IMLEOptions(PerturbAndMAPOptions):
    """Validated options of :class:`IMLE` (see there): the one place they are written."""

    owner = "imle"

    lam: float = option(10.0, number(positive=True))
    symmetric: bool = option(False, boolean)


class IMLEFunction(torch.autograd.Function):
    """Autograd function of :class:`IMLE`: ``(theta, solver, options, generator, sample) -> y``."""

    @staticmethod
    def forward(
        ctx: Any,
        theta: torch.Tensor,
        solver: Solver,
        options: IMLEOptions,
        generator: torch.Generator | None,
        sample: bool,
    ) -> torch.Tensor:
        sign, scores, draws, solutions = perturb_and_solve(theta, solver, options, generator, sample=sample)
        ctx.save_for_backward(scores, draws, solutions)
        ctx.sign = sign
        ctx.solver = solver
        ctx.options = options
        return sample_output(solutions, options)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        scores, draws, solutions = ctx.saved_tensors
        options = ctx.options
        # The targets' finiteness check is this pass's one host read; it blames a non-finite dy.
        blame = blame_gradient("imle", dy)
        if options.symmetric:
            per_sample = central_difference(
                ctx.solver, scores, dy, draws, lam=options.lam, target_noise_scale=options.target_scale,
                owner="imle", blame=blame,
            )
        else:
            per_sample = target_difference(
                ctx.solver, scores, dy, draws, solutions, lam=options.lam, target_noise_scale=options.target_scale,
                owner="imle", blame=blame,
            )
        grad = combine_samples(per_sample, options.reduce)
        if options.divide_by_lam:
            grad = grad / options.lam
        return ctx.sign * grad, None, None, None, None


class IMLE(Estimator):
    """I-MLE (Niepert et al. 2021): perturb-and-MAP forward, target-distribution backward.

    Forward returns ``mean_i y*(s + noise_scale * eps_i)`` (exact solutions when
    ``samples=1`` and ``noise="none"``); backward returns
    ``mean_i [y*(s + noise_scale eps_i) - y*(s - lam dy + target_noise_scale eps_i)]``
    in score space (times -1 for a "min" solver), divided by ``lam`` if
    ``divide_by_lam``. Backward reuses the forward's draws and solutions and
    calls the solver once, on all samples together. With ``symmetric=True``
    backward is the central difference
    ``mean_i [y*(s + lam dy + target_noise_scale eps_i) - y*(s - lam dy + target_noise_scale eps_i)] / 2``
    (both sides in one solver call; PyEPO's ``two_sides=True`` with ``divide_by_lam=True``).

    With ``samples > 1`` and ``reduce=True`` the layer outputs the mean ``ybar``
    of the samples, so a loss ``L`` is differentiated at ``L(ybar)``, not as
    ``mean_i L(y_i)``. ``reduce=False`` returns the samples ``[S, *theta.shape]``
    (as torch-imle does), so that the loss can be taken per sample: each sample
    then gets its own target ``s - lam dy_i`` and theta's gradient is the sum of
    the per-sample gradients (autograd's rule for S outputs of one input; with
    ``loss = mean_i L(y_i)`` the ``1/S`` is in ``dy_i``).

    In eval mode (``layer.eval()``) forward returns the exact solution
    ``y*(theta)``, deterministic like dropout, and backward is noise-free;
    ``sample_in_eval=True`` keeps sampling.

    Args:
        samples: Number of perturbed solves ``S >= 1``.
        noise: ``"sum_of_gamma"`` (default), ``"gumbel"``, ``"normal"`` or ``"none"``.
        noise_scale: Input noise scale ``tau >= 0`` (default 1; the paper's
            temperature, old name ``temperature``).
        reduce: Return the mean of the samples (default True); False returns
            all of them, ``[S, *theta.shape]``.
        sample_in_eval: Keep drawing noise in eval mode (default False: eval
            returns the exact solution).
        k: Sum-of-gamma shape (draws per Gumbel); default None takes the solver's
            ``k`` attribute if it has one (top-k), else 1.
        iterations: Sum-of-gamma terms, ``>= 1`` (default 10).
        target_noise_scale: Target noise scale ``tau_t >= 0``; default None uses
            ``noise_scale`` (old name ``target_temperature``).
        divide_by_lam: Divide the gradient by ``lam`` (default False, as in the
            paper; old name ``scale``).
        lam: Target step ``> 0`` (default 10).
        symmetric: Use the central difference around ``s`` instead of the
            one-sided target (default False; PyEPO's ``two_sides``, AIMLE's
            ``symmetric``).
        temperature: Deprecated name of ``noise_scale`` (warns).
        target_temperature: Deprecated name of ``target_noise_scale`` (warns).
        scale: Deprecated name of ``divide_by_lam`` (warns).

    Raises:
        ValueError: On invalid options, naming the argument.
        OptionError: On an unknown option (a TypeError and a ValueError).

    Example:
        >>> import torch, combgrad as cg
        >>> estimator = cg.gradients.get("imle", noise="none", lam=1.0)
        >>> theta = torch.tensor([0.0, 1.0, 0.5], requires_grad=True)
        >>> y = estimator(theta, cg.solvers.get("argmax"))
        >>> y.backward(torch.tensor([-1.0, 1.0, 0.0]))  # the loss prefers index 0 to index 1
        >>> y.detach(), theta.grad
        (tensor([0., 1., 0.]), tensor([-1.,  1.,  0.]))
        >>> theta.grad = None
        >>> y = cg.gradients.get("imle", noise="none", lam=1.0, symmetric=True)(theta, cg.solvers.get("argmax"))
        >>> y.backward(torch.tensor([-1.0, 1.0, 0.0]))  # [y*(s + dy) - y*(s - dy)] / 2, s - dy picks index 0
        >>> theta.grad
        tensor([-0.5000,  0.5000,  0.0000])

    References:
        M. Niepert, P. Minervini, L. Franceschi. Implicit MLE: Backpropagating
        Through Discrete Exponential Family Distributions. NeurIPS 2021.
        torch-imle (github.com/uclnlp/torch-imle), which returns all samples.
    """

    name = "imle"
    Options = IMLEOptions

    def forward(
        self, theta: torch.Tensor, solver: Solver, *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Mean perturbed solution ``y [*, *event]`` of ``theta [*, *event]`` (``[S, *, *event]`` unreduced)."""
        self.check_input(theta, solver)
        return IMLEFunction.apply(theta, solver, self.options, generator, self.sampling())


register("imle", IMLE)

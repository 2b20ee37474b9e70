"""``score_function``: the score-function (REINFORCE) estimator (Williams 1992) for perturb-and-MAP samples.

The layer samples ``y_i = y*(s + sigma Z_i)`` (``sigma`` is ``noise_scale``,
``s`` the scores: theta for a "max" solver, -theta for "min"), a discrete
distribution ``p(y; s)``, and estimates the gradient of an expected loss by the
score-function identity ``grad_s E[f(y)] = E[f(y) grad_s log q]``, with a
baseline ``b`` that does not depend on the sample (so ``E[b grad_s log q] = 0``
and the estimate stays unbiased):

``g = 1 / S sum_i (f_i - b_i) grad_s log q_i``   (``reduce=True``; the sum with ``reduce=False``).

**The function value.** A layer sees only the gradient ``dy`` flowing into its
output, not the loss. It takes ``f_i = <y_i, dy_i>``: with ``reduce=False`` (the
layer returns the samples ``[S, *theta.shape]`` and the loss is taken per
sample) ``dy_i = dL/dy`` at ``y_i``, and ``<y_i, dy_i>`` is exactly ``L(y_i)``
up to a constant for every loss linear in ``y`` (``<c, y> + const``), and for
losses whose values on the solutions are linear, such as any loss of an argmax
(one-hot ``y``: ``y_j^2 = y_j``) or squared errors of 0/1 solutions of a fixed
size. The constant multiplies ``E[grad log q] = 0``, so it adds no bias (only
variance, which the baseline removes). With ``reduce=True`` the layer returns
the mean ``ybar`` and ``dy`` is one vector for all samples; then ``f_i = <y_i, dy>``
and ``g`` is the unbiased estimate of the vector-Jacobian product of the
smoothed map ``E[y]``, as for :mod:`.perturbation`.

**The log-probability** (``log_prob``):

- ``"noise"`` (default, any solver): the score of the perturbed scores'
  density, ``grad_s log q(s + sigma Z_i; s) = grad_nu(Z_i) / sigma``
  (``grad_nu(z) = z`` for the normal, ``1 - exp(-z)`` for the Gumbel). The
  perturbed scores are a continuous random variable whose function
  ``y*`` is the sample, so this is REINFORCE on them: unbiased for every solver,
  whatever its distribution ``p(y; s)`` is (it has no closed form for shortest
  paths or spanning trees).
- ``"exact"``: the discrete distribution's own score where it has a closed form:
  an argmax (or ``topk`` with ``k=1``) under Gumbel noise samples
  ``p(y = e_j) = softmax(s / sigma)_j``, so ``grad_s log p(y_i) = (y_i - softmax(s / sigma)) / sigma``.
  It is the ``"noise"`` score averaged over the noise given the sample
  (Rao-Blackwellised), with lower variance. Other solvers are refused with a
  clear error. (The exponential-family k-subset distribution of the I-MLE paper
  is not what Gumbel top-k samples, so ``k > 1`` is not offered as exact.)

**Baselines** (``baseline``), following the AIMLE paper's comparison (its SFE
multiplies the sample's loss by ``z - mu(theta)``, the exponential family's
score, without a baseline) and the usual REINFORCE practice:

- ``"moving_average"`` (default): ``b`` is an exponential moving average of the
  mean value ``mean f`` of past calls, ``b <- decay * b + (1 - decay) * mean f``,
  starting at 0; the gradient of a call uses the ``b`` in force before that
  call's update. It lives in the buffer ``running_value`` (float64, saved by
  ``state_dict``, moved by ``.to()``), is updated on its device without a host
  read, and only in training mode.
- ``"leave_one_out"``: ``b_i = mean_{j != i} f_j`` over the call's samples of the
  same instance (needs ``samples >= 2``).
- ``"none"``: ``b = 0``.

Backward needs no solver call: it reuses the forward's samples and draws. In
eval mode forward returns the exact solution ``y*(theta)`` and the gradient is
0 (the derivative of a piecewise-constant map), unless ``sample_in_eval=True``.

The default noise is the standard Gumbel, the distribution of the latent-structure
papers (softmax for argmax). For a "min" solver whose solutions differ in size
(shortest paths), prefer ``noise="normal"`` (see :mod:`combgrad.gradients.noise`).

References:
    R. J. Williams. Simple Statistical Gradient-Following Algorithms for
    Connectionist Reinforcement Learning. Machine Learning 8, 1992.

    P. Minervini, L. Franceschi, M. Niepert. Adaptive Perturbation-Based Gradient
    Estimation for Discrete Latent Variable Models. AAAI 2023 (SFE baseline).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch.autograd.function import once_differentiable

from ..solvers.base import Solver
from . import noise as noise_module
from .base import (
    Estimator,
    SamplingOptions,
    blame_theta,
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
from .perturb_and_map import broadcast_instances, combine_samples, sample_output, with_sample_dim
from .relaxation import is_one_hot_solver
from .registry import register

NOISES = ("gumbel", "normal")
BASELINES = ("moving_average", "leave_one_out", "none")
LOG_PROBS = ("noise", "exact")


@dataclasses.dataclass(frozen=True)
class ScoreFunctionOptions(SamplingOptions):
    """Validated options of :class:`ScoreFunction` (see there): the one place they are written."""

    owner = "score_function"

    samples: int = option(10, positive_int)
    noise: str = option("gumbel", choice(NOISES))
    noise_scale: float = option(1.0, number(positive=True))
    baseline: str = option("moving_average", choice(BASELINES))
    decay: float = option(0.9, number(nonnegative=True, below=1.0))
    log_prob: str = option("noise", choice(LOG_PROBS))

    def validate(self) -> None:
        if self.baseline == "leave_one_out" and self.samples < 2:
            raise ValueError(
                f"score_function: baseline='leave_one_out' needs samples >= 2, got samples={self.samples}"
            )
        if self.log_prob == "exact" and self.noise != "gumbel":
            raise ValueError(
                f"score_function: log_prob='exact' needs noise='gumbel' (Gumbel-max sampling is a softmax), "
                f"got noise={self.noise!r}"
            )


def sample_values(solutions: torch.Tensor, dy: torch.Tensor, scores: torch.Tensor, event_ndim: int) -> torch.Tensor:
    """Per-sample values ``f_i = <y_i, dy_i>`` (``dy`` shared by all samples when reduced): ``[S, *batch]``.

    Example:
        >>> sample_values(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([2.0, 5.0]), torch.zeros(2), 1)
        tensor([2., 5.])
    """
    return event_sum(solutions * with_sample_dim(dy, scores), event_ndim)


def leave_one_out(values: torch.Tensor) -> torch.Tensor:
    """``b_i = mean_{j != i} values_j`` over the sample dim 0 (at least 2 samples).

    Example:
        >>> leave_one_out(torch.tensor([1.0, 2.0, 6.0]))
        tensor([4.0000, 3.5000, 1.5000])
    """
    samples = values.shape[0]
    return (values.sum(0, keepdim=True) - values) / (samples - 1)


def log_prob_gradient(
    log_prob: str,
    noise: str,
    draws: torch.Tensor,
    solutions: torch.Tensor,
    scores: torch.Tensor,
    noise_scale: float,
) -> torch.Tensor:
    """``grad_s log q_i`` per sample, ``[S, *batch, *event]``: the noise's score or the softmax's.

    Example:
        >>> z, y = torch.zeros(1, 2), torch.tensor([[1.0, 0.0]])
        >>> log_prob_gradient("exact", "gumbel", z, y, torch.zeros(2), 1.0)  # y - softmax(0)
        tensor([[ 0.5000, -0.5000]])
    """
    if log_prob == "exact":
        return (solutions - torch.softmax(scores / noise_scale, dim=-1)) / noise_scale
    return noise_module.log_density_gradient(noise, draws) / noise_scale


class ScoreFunctionFunction(torch.autograd.Function):
    """Autograd function of :class:`ScoreFunction`: ``(theta, solver, options, generator, sample, state) -> y``.

    ``state`` is the :class:`ScoreFunction` module whose buffer holds the moving
    average; backward reads it and calls :meth:`ScoreFunction.update_baseline`.
    """

    @staticmethod
    def forward(
        ctx: Any,
        theta: torch.Tensor,
        solver: Solver,
        options: ScoreFunctionOptions,
        generator: torch.Generator | None,
        sample: bool,
        state: ScoreFunction,
    ) -> torch.Tensor:
        sign = score_sign(solver.sense)
        scores = sign * theta.detach()
        if sample:
            draws = draw_noise(options.noise, options.samples, theta, generator=generator)
        else:
            draws = torch.zeros((1, *theta.shape), dtype=theta.dtype, device=theta.device)
        blame = blame_theta("score_function", theta, solver.event_ndim)
        solutions = solve_perturbed(solver, scores, draws, options.noise_scale, owner="score_function", blame=blame)
        # The moving average in force now, so that another call's update in between changes nothing here.
        ctx.save_for_backward(scores, draws, solutions, state.running_value.detach().clone())
        ctx.sign = sign
        ctx.options = options
        ctx.event_ndim = solver.event_ndim
        ctx.sample = sample
        ctx.state = state
        return sample_output(solutions, options)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        check_incoming_gradient("score_function", dy)
        scores, draws, solutions, running = ctx.saved_tensors
        options, event_ndim = ctx.options, ctx.event_ndim
        if not ctx.sample:
            # Eval mode: the exact, piecewise-constant y*(theta) has derivative 0.
            return torch.zeros_like(scores), None, None, None, None, None
        values = sample_values(solutions, dy, scores, event_ndim)  # [S, *batch]
        if options.baseline == "leave_one_out":
            centred = values - leave_one_out(values)
        elif options.baseline == "moving_average":
            centred = values - running.to(values.dtype)
            ctx.state.update_baseline(values)
        else:
            centred = values
        score = log_prob_gradient(options.log_prob, options.noise, draws, solutions, scores, options.noise_scale)
        per_sample = broadcast_instances(centred, event_ndim) * score
        return ctx.sign * combine_samples(per_sample, options.reduce), None, None, None, None, None


class ScoreFunction(Estimator):
    """Score-function (REINFORCE) estimator (Williams 1992) of perturb-and-MAP samples, with a baseline.

    Forward returns ``mean_i y*(s + noise_scale Z_i)`` (or the samples
    ``[S, *theta.shape]`` with ``reduce=False``, the setting in which the loss is
    taken per sample, as REINFORCE needs); backward returns
    ``sum_i (f_i - b_i) grad_s log q_i`` over samples (divided by ``S`` when
    reduced), with ``f_i = <y_i, dy_i>``, in score space (times -1 for a "min"
    solver). See the module docstring for why ``<y_i, dy_i>`` is the sample's
    value, the two log-probabilities and the three baselines. Backward calls no
    solver.

    Args:
        samples: Number of samples ``S >= 1`` (default 10).
        noise: ``"gumbel"`` (default) or ``"normal"``.
        noise_scale: Noise scale ``sigma > 0`` (default 1).
        reduce: Return the mean of the samples (default True); False returns
            all of them, ``[S, *theta.shape]``.
        sample_in_eval: Keep sampling in eval mode (default False: eval returns
            the exact solution, with gradient 0).
        baseline: ``"moving_average"`` (default), ``"leave_one_out"`` (needs
            ``samples >= 2``) or ``"none"``.
        decay: Decay of the moving-average baseline, in ``[0, 1)`` (default 0.9).
        log_prob: ``"noise"`` (default: the noise density's score, any solver) or
            ``"exact"`` (the softmax of a Gumbel argmax; argmax or topk with
            ``k=1`` only, ``noise="gumbel"``).

    Raises:
        ValueError: On invalid options, naming the argument; in forward, for
            ``log_prob="exact"`` with a solver other than argmax / topk(k=1).
        OptionError: On an unknown option (a TypeError and a ValueError).

    Example:
        >>> import torch, combgrad as cg
        >>> estimator = cg.gradients.get("score_function", samples=4000, reduce=False, baseline="leave_one_out",
        ...                              log_prob="exact")
        >>> theta = torch.tensor([0.0, 1.0, 0.5], requires_grad=True)
        >>> y = estimator(theta, cg.solvers.get("argmax"), generator=torch.Generator().manual_seed(0))
        >>> y.shape
        torch.Size([4000, 3])
        >>> (y @ torch.tensor([1.0, 0.0, 0.0])).mean().backward()  # the loss is P(y = e_0) = softmax(theta)_0
        >>> theta.grad.round(decimals=2)  # the softmax Jacobian's row 0 is [0.15, -0.09, -0.06]
        tensor([ 0.1400, -0.0900, -0.0600])

    References:
        R. J. Williams. Simple Statistical Gradient-Following Algorithms for
        Connectionist Reinforcement Learning. Machine Learning 8, 1992.
    """

    name = "score_function"
    Options = ScoreFunctionOptions
    options: ScoreFunctionOptions
    running_value: torch.Tensor

    def init_state(self) -> None:
        """Register the moving-average baseline ``running_value`` (float64, starting at 0) as a buffer."""
        self.register_buffer("running_value", torch.zeros((), dtype=torch.float64))

    def forward(
        self, theta: torch.Tensor, solver: Solver, *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Mean sampled solution ``y [*, *event]`` of ``theta [*, *event]`` (``[S, *, *event]`` unreduced)."""
        self.check_input(theta, solver)
        if self.options.log_prob == "exact" and not is_one_hot_solver(solver):
            raise ValueError(
                "score_function: log_prob='exact' needs an argmax or topk(k=1) solver (the softmax of a "
                f"Gumbel argmax), got {getattr(solver, 'name', type(solver).__name__)!r}; use log_prob='noise'"
            )
        return ScoreFunctionFunction.apply(theta, solver, self.options, generator, self.sampling(), self)

    @torch.no_grad()
    def update_baseline(self, values: torch.Tensor) -> None:
        """``running_value <- decay * running_value + (1 - decay) * mean(values)``, in training mode only."""
        if not self.training or values.numel() == 0:
            return
        decay = self.options.decay
        mean = values.mean().to(device=self.running_value.device, dtype=self.running_value.dtype)
        self.running_value.mul_(decay).add_((1.0 - decay) * mean)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, running_value={self.running_value.item():.6g}"


register("score_function", ScoreFunction)

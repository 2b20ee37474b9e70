"""Entropic optimal transport: log-domain Sinkhorn iterations with envelope gradients.

This module's one job is solving entropic optimal transport, batched and
differentiable, from a cost matrix or from two point clouds.

For weights ``a [N]``, ``b [M]`` (non-negative, summing to one) and a cost matrix
``C [N, M]``, the entropy-regularized optimal transport value is

    OT_eps(a, b, C) = min_{P >= 0, P 1 = a, P^T 1 = b}  <P, C> + eps KL(P | a b^T),

and its dual is ``max_{f, g} <f, a> + <g, b> - eps (sum_ij a_i b_j e^{(f_i + g_j - C_ij) / eps} - 1)``;
the optimal plan is ``P_ij = a_i b_j exp((f_i + g_j - C_ij) / eps)``. Sinkhorn's
algorithm (Cuturi 2013) maximizes the dual one block at a time; here every update
is a log-sum-exp in the log domain, so small ``eps`` neither overflows nor
underflows. Gradients are not unrolled through the iterations: at the optimum, the
envelope theorem gives ``d OT_eps / d C = P``, ``d OT_eps / d a = f`` and
``d OT_eps / d b = g`` (Feydy et al. 2019, section 3; as the potentials are defined
up to ``(f + c, g - c)``, the weights get the centred ``f - <f, a>`` and ``g - <g, b>``,
the gradient of a function of ``a / sum(a)``), so the backward pass costs one
multiplication.

Precision. The plan depends on ``C`` only up to a row and a column shift, so the
solver works on ``C - u 1^T - 1 v^T`` (row and column minima): costs between
clouds far apart (~1e5) would otherwise drown the differences that decide the
plan (~1) in rounding, since ``C / eps`` must be resolved to well below 1.
float16 and bfloat16 inputs are solved in float32 (and returned in their dtype),
and float32 in float64 when ``range(C) / eps`` approaches float32's overflow. The
reported error is the marginal error of the returned plan, summed from its
entries, and a solve that ends above ``tol`` emits
:class:`combgrad.ConvergenceWarning`.

Three entry points, from low to high level: :func:`sinkhorn` (arbitrary weights and
cost matrices), :func:`sinkhorn_divergence` (the debiased divergence between two
point clouds) and :class:`SinkhornDistance` (the ``nn.Module`` of the seeds'
walkthrough, returning ``(dist, P, C)``).

References:
    Cuturi, "Sinkhorn Distances: Lightspeed Computation of Optimal Transport", NeurIPS 2013.
    Feydy, Séjourné, Vialard, Amari, Trouvé, Peyré, "Interpolating between Optimal
    Transport and MMD using Sinkhorn Divergences", AISTATS 2019.
    Schmitzer, "Stabilized Sparse Scaling Algorithms for Entropy Regularized Transport
    Problems", SIAM J. Sci. Comput. 2019 (log-domain updates, epsilon scaling).
    Peyré and Cuturi, "Computational Optimal Transport", 2019, chapter 4.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import nn

from .._checks import check_choice, check_number, check_positive_int, check_tensor, check_theta
from ..errors import ConvergenceWarning

REDUCTIONS = (None, "none", "mean", "sum")
WEIGHT_TOLERANCE = 1e-4  # how far from one the weights' sums may be
# float16 and bfloat16 hold C / eps to 3 digits at best: they are solved in float32.
_LOW_PRECISION = (torch.float16, torch.bfloat16)
# Potentials reach about range(C) / eps: solve in float64 once that comes within this
# factor of float32's largest value, and refuse it beyond float64's.
_OVERFLOW_MARGIN = 1e-6


class SinkhornResult(NamedTuple):
    """What :func:`sinkhorn` returns; ``[*B]`` is the batch shape of the cost matrix.

    Attributes:
        value: ``[*B]`` the regularized value ``OT_eps(a, b, C)``, computed as the dual
            objective at the returned potentials (a lower bound that is tight at
            convergence). Differentiable: its gradients are the envelope gradients
            ``P`` (w.r.t. ``C``) and the centred potentials (w.r.t. ``a`` and ``b``).
        cost: ``[*B]`` the transport cost ``<P, C>`` of the plan. Differentiable w.r.t.
            ``C`` only, with the plan held fixed: its gradient is ``P``, which is the
            exact gradient of ``value``, not of ``cost`` (it omits ``<dP, C>``).
        plan: ``[*B, N, M]`` the transport plan ``P``, without gradient.
        f: ``[*B, N]`` the dual potential of ``a``, without gradient.
        g: ``[*B, M]`` the dual potential of ``b``, without gradient.
        error: ``[*B]`` the marginal error ``max(||P 1 - a||_1, ||P^T 1 - b||_1)`` of the
            returned plan, summed from its entries.
        iterations: how many Sinkhorn iterations ran (one ``f`` and one ``g`` update each).
        converged: ``[*B]`` bool, ``error < tol`` per instance.
    """

    value: torch.Tensor
    cost: torch.Tensor
    plan: torch.Tensor
    f: torch.Tensor
    g: torch.Tensor
    error: torch.Tensor
    iterations: int
    converged: torch.Tensor


@dataclass(frozen=True)
class SinkhornOptions:
    """Validated solver options (see :func:`sinkhorn` for their meaning)."""

    eps: float
    max_iter: int
    tol: float
    eps_scaling: float | None
    check_every: int = 10

    @classmethod
    def create(
        cls, owner: str, eps: object, max_iter: object, tol: object, eps_scaling: object, check_every: object = 10
    ) -> SinkhornOptions:
        """Check every option and build the dataclass; errors name ``owner``."""
        scaling = None
        if eps_scaling is not None:
            scaling = check_number(owner, "eps_scaling", eps_scaling, positive=True, below=1.0)
        return cls(
            check_number(owner, "eps", eps, positive=True),
            check_positive_int(owner, "max_iter", max_iter),
            check_number(owner, "tol", tol, positive=True),
            scaling,
            check_positive_int(owner, "check_every", check_every),
        )

    def reads_error(self, iterations: int) -> bool:
        """Whether the error estimate is read (a host sync) after ``iterations`` iterations.

        After iterations 1, 2, 4, 8, ... below ``check_every`` (problems that
        converge in a few iterations stop within a factor 2 of it), then every
        ``check_every`` iterations, as POT does (every 10 by default): on a GPU
        each read waits for the queue, which costs more than an iteration of a
        small batch. A stop is therefore late by less than ``check_every``
        iterations (and each late iteration only lowers the error).

        Example:
            >>> options = SinkhornOptions(1.0, 100, 1e-5, None, check_every=10)
            >>> [i for i in range(1, 31) if options.reads_error(i)]
            [1, 2, 4, 8, 10, 20, 30]
        """
        if iterations % self.check_every == 0:
            return True
        return iterations < self.check_every and iterations & (iterations - 1) == 0


# ---------------------------------------------------------------------------------------
# The solver: log-domain updates on one flat batch [B, N, M], no autograd.


def _exp_floor(dtype: torch.dtype) -> float:
    # exp of arguments below log(tiny) (about -87 in float32) takes a slow path that
    # costs ~10x a normal exp (measured: 5.4 ms against 0.47 ms per 10^6 entries);
    # such terms are below tiny relative to the largest term of the sum (which is 1
    # after the max shift), so rounding them up to tiny changes no sum in any digit.
    return math.log(torch.finfo(dtype).tiny) + 1.0


def _softmin(C: torch.Tensor, h: torch.Tensor, eps: float, dim: int, work: torch.Tensor) -> torch.Tensor:
    """``-eps * logsumexp(h - C / eps)`` over ``dim`` (-1: over columns, -2: over rows).

    ``h`` is ``[B, M]`` for ``dim=-1`` and ``[B, N]`` for ``dim=-2``. Writes into the
    scratch buffer ``work [B, N, M]`` so that no other ``[B, N, M]`` tensor is made.
    """
    torch.sub(h.unsqueeze(-2) if dim == -1 else h.unsqueeze(-1), C, alpha=1.0 / eps, out=work)
    shift = work.amax(dim=dim, keepdim=True)
    work.sub_(shift).clamp_(min=_exp_floor(work.dtype)).exp_()
    return (work.sum(dim=dim).log_() + shift.squeeze(dim)).mul_(-eps)


def _row_error(a: torch.Tensor, f: torch.Tensor, f_next: torch.Tensor, eps: float) -> torch.Tensor:
    # Row sums of the plan from (f, g) are a * exp((f - f_next) / eps), where f_next
    # is the next f-update from g: an estimate of the error that comes free with the
    # update. It is exact only in exact arithmetic (when rounding stalls the
    # iterations it can read 0 while the plan is off), so a stop is confirmed on the
    # plan itself. The clamp keeps 0 * inf (zero weights, first iterations) out of the sum.
    return (a * torch.expm1(((f - f_next) / eps).clamp_(max=50.0))).abs_().sum(-1)


def _centre(
    a: torch.Tensor, b: torch.Tensor, C: torch.Tensor, dtype: torch.dtype, symmetric: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``C - u 1^T - 1 v^T`` as a new contiguous ``[B, N, M]`` tensor of ``dtype``, with ``u [B, N]``, ``v [B, M]``.

    Subtracting a row and a column shift changes no plan (the potentials absorb
    them: ``f = f' + u``, ``g = g' + v``) but removes the part of ``C`` that only
    rounding sees: the costs between clouds 300 apart are ~1.8e5 while their
    differences, which decide the plan, are ~1. ``u`` is each row's minimum over
    columns of positive weight, ``v`` each column's minimum of ``C - u`` over rows of
    positive weight, so every row and column has an entry <= 0 against a point of
    positive mass: no update can meet a row of ``-inf`` (``-inf - -inf`` is NaN).
    Symmetric problems (point clouds against themselves, centred by the cost
    function) keep ``C`` so that ``f == g`` still holds.
    """
    if symmetric:
        zeros = C.new_zeros(C.shape[:-1], dtype=dtype)
        return C.to(dtype=dtype, memory_format=torch.contiguous_format), zeros, zeros
    inf = torch.tensor(math.inf, dtype=C.dtype, device=C.device)
    positive_b = b > 0
    rows_from = C if bool(positive_b.all()) else torch.where(positive_b.unsqueeze(-2), C, inf)
    u = rows_from.amin(dim=-1).to(dtype)
    del rows_from
    centred = torch.empty(C.shape, dtype=dtype, device=C.device)
    # Type promotion computes a float16 C minus a float32 u in float32, with no copy of C.
    torch.sub(C, u.unsqueeze(-1), out=centred)
    positive_a = (a > 0).unsqueeze(-1)
    if bool(positive_a.all()):
        v = centred.amin(dim=-2)
    else:
        v = torch.where(positive_a, centred, inf.to(dtype)).amin(dim=-2)
    centred.sub_(v.unsqueeze(-2))
    return centred, u, v


def _eps_schedule(C: torch.Tensor, options: SinkhornOptions) -> list[float]:
    """Decreasing eps values above the target, one Sinkhorn iteration each (eps scaling)."""
    if options.eps_scaling is None:
        return []
    schedule: list[float] = []
    current = float(C.amax() - C.amin())  # the cost's range: above it, the plan is nearly a b^T
    while current > options.eps and len(schedule) < options.max_iter - 1:
        schedule.append(current)
        current *= options.eps_scaling
    return schedule


def _plan(
    a: torch.Tensor, b: torch.Tensor, f: torch.Tensor, g: torch.Tensor, C: torch.Tensor, eps: float,
    out: torch.Tensor,
) -> torch.Tensor:
    """``P = a b^T exp((f + g - C) / eps)`` written into ``out [B, N, M]``."""
    torch.sub((g / eps + b.log()).unsqueeze(-2), C, alpha=1.0 / eps, out=out)
    out.add_((f / eps + a.log()).unsqueeze(-1)).clamp_(min=_exp_floor(out.dtype)).exp_()
    # The clamp lifts exact zeros to tiny; put back the zero rows and columns of zero weights.
    if bool((a == 0).any()) or bool((b == 0).any()):
        out.mul_((a > 0).unsqueeze(-1)).mul_((b > 0).unsqueeze(-2))
    return out


class _Solution(NamedTuple):
    f: torch.Tensor  # [B, N], potentials of the centred cost
    g: torch.Tensor  # [B, M]
    plan: torch.Tensor  # [B, N, M]
    rows: torch.Tensor  # [B, N], the plan's row sums
    columns: torch.Tensor  # [B, M], its column sums
    error: torch.Tensor  # [B]
    iterations: int
    stalled: bool  # stopped before max_iter above tol: rounding stopped the progress


def _measure(
    a: torch.Tensor, b: torch.Tensor, f: torch.Tensor, g: torch.Tensor, C: torch.Tensor, eps: float,
    work: torch.Tensor, iterations: int, stalled: bool = False,
) -> _Solution:
    """The plan of ``(f, g)`` in ``work`` and its marginal error, summed from its entries."""
    plan = _plan(a, b, f, g, C, eps, out=work)
    rows, columns = plan.sum(-1), plan.sum(-2)
    error = torch.maximum((rows - a).abs().sum(-1), (columns - b).abs().sum(-1))
    return _Solution(f, g, plan, rows, columns, error, iterations, stalled)


def _solve(
    a: torch.Tensor, b: torch.Tensor, C: torch.Tensor, options: SinkhornOptions, symmetric: bool
) -> _Solution:
    """Run Sinkhorn on ``a [B, N]``, ``b [B, M]`` (summing to one), ``C [B, N, M]`` (contiguous).

    Every iteration computes the free error estimate of :func:`_row_error`, and the
    iterations that :meth:`SinkhornOptions.reads_error` picks read it on the host
    (every ``check_every``-th, after a doubling start); once it is
    below ``tol`` the plan is built and its marginals summed, and the solve stops if
    they agree (that plan is the one returned, so the check costs nothing then).
    If they do not, rounding has made the estimate optimistic: the iterations go on,
    confirming again after a tenth more of them (at least 10: a confirmation costs
    about half an iteration, so this adds at most 5%), and stop early only when an
    update changes no potential (a fixed point of the rounded iteration: more
    iterations cannot help). With ``symmetric`` (``b is a`` and ``C`` symmetric) the
    averaged update ``f <- (f + T(f)) / 2`` of Feydy et al. (2019) keeps ``f == g``
    and converges in a few iterations.
    """
    work = torch.empty(C.shape, dtype=C.dtype, device=C.device)
    log_a, log_b = a.log(), b.log()
    eps, tol, max_iter = options.eps, options.tol, options.max_iter
    iterations, next_confirmation = 0, 0
    if symmetric:
        f = torch.zeros_like(a)
        for step_eps in _eps_schedule(C, options):
            f = 0.5 * (f + _softmin(C, f / step_eps + log_a, step_eps, -1, work))
            iterations += 1
        while True:
            f_next = _softmin(C, f / eps + log_a, eps, -1, work)
            estimate = _row_error(a, f, f_next, eps)
            iterations += 1
            if iterations >= max_iter:
                return _measure(a, a, f, f, C, eps, work, iterations)
            if iterations >= next_confirmation and options.reads_error(iterations) and float(estimate.max()) < tol:
                solution = _measure(a, a, f, f, C, eps, work, iterations, stalled=torch.equal(f, f_next))
                if solution.stalled or float(solution.error.max()) < tol:
                    return solution
                next_confirmation = iterations + max(10, iterations // 10)
            f = 0.5 * (f + f_next)
    g = torch.zeros_like(b)
    for step_eps in _eps_schedule(C, options):
        f = _softmin(C, g / step_eps + log_b, step_eps, -1, work)
        g = _softmin(C, f / step_eps + log_a, step_eps, -2, work)
        iterations += 1
    f = _softmin(C, g / eps + log_b, eps, -1, work)
    while True:
        g = _softmin(C, f / eps + log_a, eps, -2, work)
        f_next = _softmin(C, g / eps + log_b, eps, -1, work)
        # (f, g) has exact column sums (g was just fitted), so the row error is the error.
        estimate = _row_error(a, f, f_next, eps)
        iterations += 1
        if iterations >= max_iter:
            return _measure(a, b, f, g, C, eps, work, iterations)
        if iterations >= next_confirmation and options.reads_error(iterations) and float(estimate.max()) < tol:
            solution = _measure(a, b, f, g, C, eps, work, iterations, stalled=torch.equal(f, f_next))
            if solution.stalled or float(solution.error.max()) < tol:
                return solution
            next_confirmation = iterations + max(10, iterations // 10)
        f = f_next


def _compute_dtype(dtype: torch.dtype, span: float, eps: float, owner: str) -> torch.dtype:
    """The dtype to solve in: float32 for float16/bfloat16, float64 where ``C / eps`` would overflow."""
    compute = torch.float32 if dtype in _LOW_PRECISION else dtype
    if compute == torch.float32 and span / eps > _OVERFLOW_MARGIN * torch.finfo(torch.float32).max:
        compute = torch.float64
    if span / eps > _OVERFLOW_MARGIN * torch.finfo(torch.float64).max:
        raise ValueError(
            f"{owner}: range(C) / eps must be below {_OVERFLOW_MARGIN * torch.finfo(torch.float64).max:.3g} "
            f"(float64's range), got {span / eps:.3g}; rescale C or raise eps"
        )
    return compute


class _EntropicOT(torch.autograd.Function):
    """Sinkhorn forward under no_grad; envelope-theorem backward (no unrolling).

    Inputs ``a [B, N]``, ``b [B, M]``, ``C [B, N, M]`` (any strides) and the range of
    ``C``; outputs ``value, cost [B]`` (differentiable) and ``plan, f, g, error``
    (marked non-differentiable) in ``C``'s dtype, the iteration count as a 0-dim
    tensor, ``converged [B]`` (bool) and whether the solve stalled (0-dim bool).
    """

    @staticmethod
    def forward(
        ctx: Any, a: torch.Tensor, b: torch.Tensor, C: torch.Tensor, span: float, options: SinkhornOptions,
        symmetric: bool, owner: str,
    ) -> tuple[torch.Tensor, ...]:
        # Unused outputs (the plan above all) must not get zero gradients of size [B, N, M].
        ctx.set_materialize_grads(False)
        dtype = _compute_dtype(C.dtype, span, options.eps, owner)
        # Scale-free in the weights: the value is OT_eps(a / sum a, b / sum b, C),
        # so rounding in a sum never stops the marginal error from reaching tol.
        a = a.to(dtype) / a.to(dtype).sum(-1, keepdim=True)
        b = b.to(dtype) / b.to(dtype).sum(-1, keepdim=True)
        centred, u, v = _centre(a, b, C, dtype, symmetric)
        solution = _solve(a, b, centred, options, symmetric)
        plan = solution.plan
        f, g = solution.f + u, solution.g + v
        batch = C.shape[0]
        mass = solution.rows.sum(-1)
        value = (f * a).sum(-1) + (g * b).sum(-1) - options.eps * (mass - 1.0)
        # <P, C> = <P, C'> + <P 1, u> + <P^T 1, v>: no read of C, whatever its strides.
        cost = torch.bmm(plan.view(batch, 1, -1), centred.view(batch, -1, 1)).view(batch)
        cost = cost + (solution.rows * u).sum(-1) + (solution.columns * v).sum(-1)
        del centred
        converged = solution.error < options.tol
        # The gradient w.r.t. a of a function of a / sum(a) is orthogonal to ones:
        # the potential centred so that <f, a> = 0 (f is defined up to a constant).
        f_centred = f - (f * a).sum(-1, keepdim=True)
        g_centred = g - (g * b).sum(-1, keepdim=True)
        outputs = [t.to(C.dtype) for t in (value, cost, plan, f, g, solution.error, f_centred, g_centred)]
        value, cost, plan, f, g, error, f_centred, g_centred = outputs
        ctx.save_for_backward(plan, f_centred, g_centred)
        ctx.mark_non_differentiable(plan, f, g, error)
        stalled = torch.tensor(solution.stalled)
        return value, cost, plan, f, g, error, torch.tensor(solution.iterations), converged, stalled

    @staticmethod
    def backward(ctx: Any, grad_value: torch.Tensor | None, grad_cost: torch.Tensor | None,
                 *_: Any) -> tuple[torch.Tensor | None, ...]:
        plan, f_centred, g_centred = ctx.saved_tensors
        grad_a = grad_b = grad_C = None
        if grad_value is not None and ctx.needs_input_grad[0]:
            grad_a = grad_value.unsqueeze(-1) * f_centred
        if grad_value is not None and ctx.needs_input_grad[1]:
            grad_b = grad_value.unsqueeze(-1) * g_centred
        if ctx.needs_input_grad[2] and (grad_value is not None or grad_cost is not None):
            # value and cost share the gradient P: one [B, N, M] tensor for both.
            if grad_value is None or grad_cost is None:
                scale = grad_value if grad_cost is None else grad_cost
            else:
                scale = grad_value + grad_cost
            grad_C = plan * scale.view(-1, 1, 1)  # type: ignore[union-attr]
        return grad_a, grad_b, grad_C, None, None, None, None


# ---------------------------------------------------------------------------------------
# Validation and the public functions.


def _check_weights(owner: str, argument: str, weights: torch.Tensor | None, C: torch.Tensor, size: int,
                   batch_shape: tuple[int, ...]) -> torch.Tensor:
    """Validate weights ``[size]`` or ``[*batch_shape, size]``; uniform when ``None``."""
    if weights is None:
        return torch.full((size,), 1.0 / size, dtype=C.dtype, device=C.device)
    check_theta(owner, weights, 1, argument)
    if tuple(weights.shape) not in ((size,), (*batch_shape, size)):
        raise ValueError(
            f"{owner}: {argument} must have shape ({size},) or {(*batch_shape, size)} to match the "
            f"cost matrix, got {tuple(weights.shape)}"
        )
    if bool((weights < 0).any()):
        raise ValueError(f"{owner}: {argument} must be non-negative, got minimum {float(weights.min()):.3g}")
    sums = weights.detach().sum(-1)
    # Loose on purpose: the solver renormalizes, so the check only catches weights
    # that are not distributions (counts, unnormalized masses), not rounding.
    tolerance = WEIGHT_TOLERANCE
    worst = float((sums - 1.0).abs().max())
    if worst > tolerance:
        raise ValueError(
            f"{owner}: {argument} must sum to one (within {tolerance:g}) along the last dim, "
            f"got sums off by up to {worst:.3g}"
        )
    return weights.to(dtype=C.dtype, device=C.device)


def _check_cost(owner: str, C: object) -> tuple[torch.Tensor, float]:
    """Check that ``C`` is a finite floating tensor ``[*B, N, M]`` with N, M >= 1; return it and its range."""
    C = check_tensor(owner, "C", C)
    if C.ndim < 2 or C.shape[-1] == 0 or C.shape[-2] == 0:
        raise ValueError(f"{owner}: C must have shape [*B, N, M] with N, M >= 1, got {tuple(C.shape)}")
    if not C.is_floating_point():
        raise ValueError(f"{owner}: C must be a floating tensor, got dtype {C.dtype}")
    if C.numel() == 0:  # an empty batch
        return C, 0.0
    # Finite iff the extremes are (NaN propagates through amax): two reductions
    # instead of torch.isfinite's [B, N, M] temporaries, which would break the memory bound.
    high, low = float(C.detach().amax()), float(C.detach().amin())
    if not (math.isfinite(high) and math.isfinite(low)):
        raise ValueError(f"{owner}: C must be finite, got NaN or inf values")
    return C, high - low  # Python floats: the difference cannot overflow


def _run(owner: str, a: torch.Tensor | None, b: torch.Tensor | None, C: torch.Tensor,
         options: SinkhornOptions, symmetric: bool = False, *, stacklevel: int = 3) -> SinkhornResult:
    C, span = _check_cost(owner, C)
    *batch_dims, n, m = C.shape
    batch_shape = tuple(batch_dims)
    a = _check_weights(owner, "a", a, C, n, batch_shape)
    b = _check_weights(owner, "b", b, C, m, batch_shape)
    flat_C = C.reshape(-1, n, m)
    batch = flat_C.shape[0]
    if batch == 0:
        return _empty_result(a, b, flat_C, batch_shape)
    value, cost, plan, f, g, error, iterations, converged, stalled = _EntropicOT.apply(
        a.expand(batch, n) if a.ndim == 1 else a.reshape(batch, n),
        b.expand(batch, m) if b.ndim == 1 else b.reshape(batch, m),
        flat_C, span, options, symmetric, owner,
    )
    if not bool(converged.all()):
        _warn_not_converged(owner, options, error, converged, int(iterations), bool(stalled), C.dtype, stacklevel)
    return SinkhornResult(
        value=value.reshape(batch_shape),
        cost=cost.reshape(batch_shape),
        plan=plan.reshape(*batch_shape, n, m),
        f=f.reshape(*batch_shape, n),
        g=g.reshape(*batch_shape, m),
        error=error.reshape(batch_shape),
        iterations=int(iterations),
        converged=converged.reshape(batch_shape),
    )


def _empty_result(a: torch.Tensor, b: torch.Tensor, C: torch.Tensor, batch_shape: tuple[int, ...]) -> SinkhornResult:
    """The result for a batch of zero problems: empty tensors, differentiable where ``value`` and ``cost`` are."""
    n, m = C.shape[-2:]
    # Sums over the empty batch keep value and cost connected to C, a and b (zero gradients).
    value = C.sum(dim=(-2, -1)) + (a.sum(-1) + b.sum(-1)).sum() * 0.0
    return SinkhornResult(
        value=value.reshape(batch_shape),
        cost=C.sum(dim=(-2, -1)).reshape(batch_shape),
        plan=C.detach().new_zeros((*batch_shape, n, m)),
        f=C.detach().new_zeros((*batch_shape, n)),
        g=C.detach().new_zeros((*batch_shape, m)),
        error=C.detach().new_zeros(batch_shape),
        iterations=0,
        converged=torch.ones(batch_shape, dtype=torch.bool, device=C.device),
    )


def _warn_not_converged(owner: str, options: SinkhornOptions, error: torch.Tensor, converged: torch.Tensor,
                        iterations: int, stalled: bool, dtype: torch.dtype, stacklevel: int) -> None:
    """Emit :class:`~combgrad.errors.ConvergenceWarning` naming the error reached and what to change."""
    failed = int((~converged).sum())
    where = f" in {failed} of {converged.numel()} instances" if converged.numel() > 1 else ""
    reached = f"L1 marginal error {float(error.max()):.3g} above tol={options.tol:g}{where}"
    if stalled:
        message = (f"{owner}: Sinkhorn stalled after {iterations} iterations with {reached}: rounding in "
                   f"{dtype} stops the progress at this eps; solve in float64, or raise eps or tol")
    else:
        message = (f"{owner}: Sinkhorn stopped at max_iter={options.max_iter} with {reached}; "
                   "raise max_iter, eps or tol (or try eps_scaling)")
    warnings.warn(message, ConvergenceWarning, stacklevel=stacklevel + 1)


def sinkhorn(
    a: torch.Tensor | None,
    b: torch.Tensor | None,
    C: torch.Tensor,
    eps: float,
    *,
    max_iter: int = 1000,
    tol: float = 1e-5,
    eps_scaling: float | None = None,
    check_every: int = 10,
) -> SinkhornResult:
    """Entropic optimal transport between weights ``a`` and ``b`` for the cost ``C``.

    Solves ``OT_eps(a, b, C) = min_P <P, C> + eps KL(P | a b^T)`` over plans with
    marginals ``a`` and ``b`` by log-domain Sinkhorn iterations, batched over the
    leading dims of ``C``, until the marginal error is below ``tol`` (estimated every
    iteration at no extra cost, read on the host every ``check_every`` iterations,
    and confirmed on the plan's own sums) or ``max_iter``
    iterations have run. A solve that ends above ``tol`` (at ``max_iter``, or earlier
    when rounding stops all progress) emits :class:`combgrad.ConvergenceWarning`
    naming the error reached; ``converged`` says which instances reached ``tol``.

    Gradients come from the envelope theorem, not from unrolling the iterations:
    ``value`` has gradient ``P`` w.r.t. ``C`` and the potentials ``f``, ``g``
    (centred: ``<f, a> = <g, b> = 0``) w.r.t. ``a`` and ``b``. These are the exact
    partial derivatives of the dual objective at the returned potentials, and the
    exact gradient of ``OT_eps(a / sum a, b / sum b, C)`` at convergence; at a finite
    ``tol`` they are off by the order of ``error``. ``cost = <P, C>`` gets the
    gradient ``P`` w.r.t. ``C`` with the plan held fixed (which is not the gradient of
    ``<P(C), C>``: the plan's own derivative is left out). ``eps`` gets no gradient.

    Memory: the cost matrix plus two ``[B, N, M]`` buffers during the solve (the
    shifted cost, freed at the end, and a scratch buffer, which becomes the plan);
    the backward pass adds the gradient of ``C``. A batched forward and backward
    therefore holds at most three ``[B, N, M]`` tensors (of the solve's dtype:
    float32 for float16 and bfloat16 input).

    Args:
        a: ``[N]`` or ``[*B, N]`` non-negative weights summing to one (within 1e-4;
            they are renormalized), or ``None`` for uniform.
        b: ``[M]`` or ``[*B, M]`` likewise.
        C: ``[N, M]`` or ``[*B, N, M]`` finite cost matrix (any real values, any
            strides, any floating dtype; ``B`` may be 0).
        eps: Entropic regularization, > 0, in the units of ``C``.
        max_iter: Most iterations, eps-scaling steps included.
        tol: Stop when the L1 marginal error is below ``tol`` for every instance.
            Float32 reaches about ``1e-7 * range(C') / eps`` (``C'`` the shifted cost:
            about ``(diameter of x) * (diameter of y) / eps`` for squared distances),
            not much below.
        eps_scaling: If set (in (0, 1)), warm-start by one iteration at each of
            ``range(C) * eps_scaling^k`` while above ``eps`` (Schmitzer 2019); this
            changes where the iterations start, not the fixed point. On random point
            clouds at small ``eps`` 0.5 saves 20-40% of the iterations; on nearly
            one-to-one problems (the seeds' five points) it can cost many more, as the
            potentials then balance only through exponentially small couplings.
            ``None`` (default) starts at ``eps`` from zero potentials.
        check_every: Read the error estimate on the host after iterations 1, 2,
            4, ... below ``check_every``, then every ``check_every`` iterations
            (default 10, as POT): each read is a host sync on a GPU. 1 reads it
            every iteration (the fewest iterations); a larger value syncs less
            and runs up to ``check_every - 1`` iterations past convergence.

    Returns:
        A :class:`SinkhornResult` ``(value, cost, plan, f, g, error, iterations,
        converged)`` in ``C``'s dtype.

    Raises:
        ValueError: Non-finite ``C`` or weights, weights of the wrong shape, negative
            or not summing to one, ``eps``/``tol`` not > 0, ``max_iter`` < 1,
            ``range(C) / eps`` beyond float64's range, ``check_every`` < 1.

    Warns:
        ConvergenceWarning: If some instance ends with its marginal error above ``tol``.

    Example:
        >>> import torch, combgrad as cg
        >>> C = torch.tensor([[0.0, 1.0], [1.0, 0.0]], requires_grad=True)
        >>> out = cg.geometry.sinkhorn(None, None, C, eps=0.01)
        >>> out.plan.round(decimals=3)
        tensor([[0.5000, 0.0000],
                [0.0000, 0.5000]])
        >>> out.value.backward()
        >>> C.grad.round(decimals=3)
        tensor([[0.5000, 0.0000],
                [0.0000, 0.5000]])
    """
    options = SinkhornOptions.create("sinkhorn", eps, max_iter, tol, eps_scaling, check_every)
    return _run("sinkhorn", a, b, C, options)


# ---------------------------------------------------------------------------------------
# Point clouds: the ground cost, the divergence and the module.


def _check_points(owner: str, x: object, y: object) -> tuple[torch.Tensor, torch.Tensor]:
    """Check ``x [N, D]``/``[B, N, D]`` and ``y [M, D]``/``[B, M, D]``; return them as 3-dim.

    float16 and bfloat16 points come back in float32, so that the cost matrix and the
    solve keep the precision that ``C / eps`` needs; the callers round back.
    """
    checked = []
    for name, value in (("x", x), ("y", y)):
        points = check_theta(owner, value, 2, name)
        if points.ndim > 3 or points.shape[-2] == 0:
            raise ValueError(
                f"{owner}: {name} must have shape [N, D] or [B, N, D] with N >= 1, got {tuple(points.shape)}"
            )
        checked.append(points)
    x, y = checked
    if x.ndim != y.ndim or (x.ndim == 3 and x.shape[0] != y.shape[0]):
        raise ValueError(
            f"{owner}: x and y must have the same batch size (both [N, D] or both [B, N, D]), "
            f"got shapes {tuple(x.shape)} and {tuple(y.shape)}"
        )
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(
            f"{owner}: x and y must have the same feature size D, got {x.shape[-1]} and {y.shape[-1]}"
        )
    if x.dtype != y.dtype or x.device != y.device:
        raise ValueError(f"{owner}: x and y must share dtype and device, got {x.dtype}/{x.device} and "
                         f"{y.dtype}/{y.device}")
    if x.dtype in _LOW_PRECISION:
        x, y = x.float(), y.float()
    return (x, y) if x.ndim == 3 else (x.unsqueeze(0), y.unsqueeze(0))


def _check_power(owner: str, p: object) -> float:
    number = check_number(owner, "p", p)
    if number < 1:
        raise ValueError(f"{owner}: p must be >= 1 (cost |x - y|^p), got {p!r}")
    return number


def _cost_matrix(x: torch.Tensor, y: torch.Tensor, p: float) -> torch.Tensor:
    """``C_ij = |x_i - y_j|^p`` (Euclidean norm) for ``x [B, N, D]``, ``y [B, M, D]``."""
    if p != 2.0:
        return torch.cdist(x, y).pow(p)
    # |x|^2 + |y|^2 - 2 <x, y> as one batched product of augmented points: a single
    # [B, N, M] allocation, and a backward pass that makes none. Centring first keeps
    # the expansion accurate (the cost is translation invariant, hence the detach).
    centre = 0.5 * (x.mean(-2, keepdim=True) + y.mean(-2, keepdim=True)).detach()
    x, y = x - centre, y - centre
    ones_x, ones_y = x.new_ones(*x.shape[:-1], 1), y.new_ones(*y.shape[:-1], 1)
    x_aug = torch.cat([x, (x * x).sum(-1, keepdim=True), ones_x], -1)
    y_aug = torch.cat([-2.0 * y, ones_y, (y * y).sum(-1, keepdim=True)], -1)
    return torch.bmm(x_aug, y_aug.transpose(-1, -2))


def sinkhorn_divergence(
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    a: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
    p: float = 2.0,
    max_iter: int = 1000,
    tol: float = 1e-5,
    eps_scaling: float | None = None,
    check_every: int = 10,
) -> torch.Tensor:
    """Debiased Sinkhorn divergence between point clouds (Feydy et al. 2019).

    ``S_eps(a, b) = OT_eps(a, b) - OT_eps(a, a) / 2 - OT_eps(b, b) / 2`` with the
    ground cost ``|x_i - y_j|^p``. Unlike ``OT_eps``, it is zero when the two clouds
    coincide and positive otherwise, and it interpolates between optimal transport
    (``eps -> 0``) and an MMD (``eps -> inf``). The two symmetric terms use the
    averaged symmetric Sinkhorn update.

    Gradients: each ``OT_eps`` term has the envelope gradient of :func:`sinkhorn`
    (``P`` w.r.t. its cost matrix, centred potentials w.r.t. weights) and autograd
    differentiates the cost matrices, so that ``d S / d x_i = sum_j P_ij grad c(x_i,
    y_j) - sum_k Pxx_ik grad c(x_i, x_k)`` (``grad`` w.r.t. the first argument of
    ``c(x, y) = |x - y|^p``) and ``d S / d a = f - f_xx`` (centred). This is the exact
    gradient of ``S_eps`` at convergence (the three problems solved to ``tol``).

    Memory: the three problems are solved one after another and their plans are
    kept for the backward pass; with ``N = M`` the peak is four ``[B, N, N]`` tensors
    (the symmetric problems need no shifted copy of their cost).

    Args:
        x: ``[N, D]`` or ``[B, N, D]`` finite points.
        y: ``[M, D]`` or ``[B, M, D]`` finite points (same batch and D as ``x``).
        eps: Entropic regularization, > 0, in the units of the cost.
        a: ``[N]`` or ``[B, N]`` weights of ``x`` (uniform if ``None``).
        b: ``[M]`` or ``[B, M]`` weights of ``y`` (uniform if ``None``).
        p: Ground cost exponent, >= 1 (``2``: squared Euclidean).
        max_iter, tol, eps_scaling, check_every: As in :func:`sinkhorn`.

    Returns:
        ``[]`` or ``[B]`` divergence values.

    Raises:
        ValueError: Mismatched batch or feature sizes, non-finite points, bad weights,
            ``eps <= 0``, ``p < 1``.

    References:
        Feydy, Séjourné, Vialard, Amari, Trouvé, Peyré, "Interpolating between Optimal
        Transport and MMD using Sinkhorn Divergences", AISTATS 2019.

    Example:
        >>> import torch, combgrad as cg
        >>> x = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
        >>> bool(cg.geometry.sinkhorn_divergence(x, x, eps=0.3).abs() < 1e-5)
        True
        >>> print(f"{cg.geometry.sinkhorn_divergence(x, x + 1.0, eps=0.3).item():.4f}")
        2.0000
    """
    owner = "sinkhorn_divergence"
    options = SinkhornOptions.create(owner, eps, max_iter, tol, eps_scaling, check_every)
    p = _check_power(owner, p)
    x3, y3 = _check_points(owner, x, y)
    # One problem at a time, so at most one pair of scratch buffers is alive.
    ot_xy = _run(owner, a, b, _cost_matrix(x3, y3, p), options).value
    ot_xx = _run(owner, a, a, _cost_matrix(x3, x3, p), options, symmetric=True).value
    ot_yy = _run(owner, b, b, _cost_matrix(y3, y3, p), options, symmetric=True).value
    divergence = (ot_xy - 0.5 * (ot_xx + ot_yy)).to(x.dtype)
    return divergence.squeeze(0) if x.ndim == 2 else divergence


class SinkhornDistance(nn.Module):
    """Sinkhorn distance between uniform point clouds, as in the seeds' walkthrough.

    ``dist, P, C = SinkhornDistance(eps=0.1, max_iter=100)(x, y)`` solves entropic
    optimal transport between the uniform weights on ``x`` and ``y`` for the cost
    ``C_ij = |x_i - y_j|^p`` and returns the transport cost ``dist = <P, C>`` of the
    entropic plan ``P``, the plan and the cost matrix.

    Gradient: ``dist`` back-propagates ``P`` into ``C`` (the plan held fixed, the
    envelope gradient of the regularized value ``OT_eps``, exact for ``OT_eps`` at
    convergence) and autograd carries it through the cost to ``x`` and ``y``.
    ``P`` is returned without gradient; ``C`` keeps its autograd history.

    float16 and bfloat16 points are solved in float32 and the outputs rounded back.
    A solve that ends above ``tol`` emits :class:`combgrad.ConvergenceWarning`.

    Args:
        eps: Entropic regularization, > 0, in the units of the cost.
        max_iter: Most Sinkhorn iterations. The default, 1000, reaches ``tol`` at the
            default ``eps`` on clouds in the unit cube (10 points in 10 dims take ~400);
            clouds of larger extent (standard normal: ``C / eps`` ~ 300) can need
            10^4 and more, or a larger ``eps``.
        reduction: ``None``/``"none"`` (per instance), ``"mean"`` or ``"sum"`` over
            the batch.
        p: Ground cost exponent, >= 1; 2 (default) is the squared Euclidean distance.
        tol: Stop when the L1 marginal error is below this.
        eps_scaling: Epsilon-scaling factor in (0, 1), or None (see :func:`sinkhorn`).
        check_every: Iterations between host reads of the error (default 10; see
            :func:`sinkhorn`).

    Shapes:
        ``x [N, D]`` or ``[B, N, D]``, ``y [M, D]`` or ``[B, M, D]`` ->
        ``dist []`` or ``[B]`` (reduced to ``[]`` by "mean"/"sum"),
        ``P`` and ``C`` ``[N, M]`` or ``[B, N, M]``.

    Example:
        >>> import torch, combgrad as cg
        >>> x = torch.tensor([[float(i), 0.0] for i in range(5)])
        >>> y = torch.tensor([[float(i), 1.0] for i in range(5)])
        >>> dist, P, C = cg.geometry.SinkhornDistance(eps=0.1, max_iter=100)(x, y)
        >>> print(f"{dist.item():.3f}", tuple(P.shape), tuple(C.shape))
        1.000 (5, 5) (5, 5)
    """

    def __init__(
        self,
        eps: float = 0.1,
        max_iter: int = 1000,
        reduction: str | None = None,
        *,
        p: float = 2.0,
        tol: float = 1e-5,
        eps_scaling: float | None = None,
        check_every: int = 10,
    ) -> None:
        super().__init__()
        owner = "SinkhornDistance"
        self.options = SinkhornOptions.create(owner, eps, max_iter, tol, eps_scaling, check_every)
        self.reduction = check_choice(owner, "reduction", reduction, REDUCTIONS)
        self.p = _check_power(owner, p)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``(dist, P, C)`` for point clouds ``x`` and ``y`` (see the class doc)."""
        owner = "SinkhornDistance"
        x3, y3 = _check_points(owner, x, y)
        C = _cost_matrix(x3, y3, self.p)
        # nn.Module.__call__ adds two frames between the caller and forward.
        result = _run(owner, None, None, C, self.options, stacklevel=5)
        dtype = x.dtype
        dist, P, C = result.cost.to(dtype), result.plan.to(dtype), C.to(dtype)
        if x.ndim == 2:
            dist, P, C = dist.squeeze(0), P.squeeze(0), C.squeeze(0)
        if self.reduction == "mean":
            dist = dist.mean()
        elif self.reduction == "sum":
            dist = dist.sum()
        return dist, P, C

    def extra_repr(self) -> str:
        o = self.options
        return (f"eps={o.eps}, max_iter={o.max_iter}, reduction={self.reduction!r}, p={self.p}, "
                f"tol={o.tol}, eps_scaling={o.eps_scaling}, check_every={o.check_every}")

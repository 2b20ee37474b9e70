"""Noise distributions for perturbation-based estimators and losses, all generator-driven.

This module's one job is drawing noise. Every sampler takes an explicit
``torch.Generator`` or, when ``generator`` is None, uses torch's global RNG, so
results are reproducible under ``torch.manual_seed``. Draws come back on the
requested ``device`` and ``dtype``; when a generator lives on another device (a
CPU generator for a CUDA theta), the draw is made on the generator's device and
moved, so one seeded generator gives the same numbers on every device. Draws are
made in float64 for float64 requests and in float32 otherwise, then cast.

The distributions:

- ``gumbel``: standard Gumbel, ``-log(E)`` with ``E ~ Exponential(1)``; mean is the
  Euler-Mascheroni constant ``gamma = 0.5772``, variance ``pi^2 / 6``. The papers'
  noise: Gumbel-perturbed argmax is ``softmax(theta / sigma)``.
- ``normal``: standard normal, mean 0, variance 1.
- ``sum_of_gamma(k, iterations)``: ``sum_{i=1..s} Gamma(1/k, rate i) - (log s) / k``
  with ``s = iterations``; the sum of ``k`` independent draws is distributed as
  ``max(E_1..E_s) - log s`` (``E_i ~ Exponential(1)``), which tends to a standard
  Gumbel as ``s`` grows, so that a perturbed top-k behaves like a Gumbel-perturbed
  k-subset (Niepert et al. 2021). Mean ``(H_s - log s) / k`` (``H_s`` the harmonic
  number), variance ``(sum_{i<=s} 1/i^2) / k``.
- ``none``: zeros.

Which noises are centred, and why it matters. ``normal`` and ``none`` have mean
0. ``gumbel`` has mean ``gamma``, and ``sum_of_gamma`` has mean
``(H_s - log s) / k`` (``gamma / k`` as ``s`` grows, so ``k`` draws add up to about
``gamma``). A mean ``m`` adds ``sigma * m`` to every score: for a "max" solver
``<s + sigma Z, y> = <s + sigma (Z - m), y> + sigma m sum(y)``, and for a "min"
solver every perturbed cost ``theta - sigma Z`` is lowered by ``sigma m`` on
average. When all feasible solutions have the same size (argmax, top-k,
assignment, spanning trees) this shifts every objective by the same
``sigma m sum(y)`` and changes nothing. When sizes differ (shortest paths,
knapsack, ilp) it favours larger solutions: a "min" shortest path through a
perturbed map prefers longer paths by ``sigma m`` per extra cell. That is why
``normal`` is the default noise of ``perturbation`` and ``fenchel_young`` (as in
the perturbations library and PyEPO); ``gumbel`` stays available as the papers'
standard Gumbel (the softmax closed form and published reference values depend
on it).

How sum-of-gamma is drawn. A sum of ``s`` gamma variables of shape ``1/k`` and
rates ``1..s`` is a mixture of single gammas (Moschopoulos 1985): writing
``1 - t/i = (s/i) (1 - t/s) (1 - q_i v)`` with ``q_i = 1 - i/s`` and
``v = 1 / (1 - t/s)``, its moment generating function is

    prod_i (1 - t/i)^(-1/k) = sum_j P(J = j) (1 - t/s)^(-(rho + j)),   rho = s / k,

where ``J = sum_{i<s} N_i`` with independent negative binomials
``N_i ~ NB(1/k, success probability i/s)`` (the factor ``prod_i (p_i / (1 - q_i v))^(1/k)``
is their probability generating function at ``v``). So the sum is
``Gamma(rho + J, rate s)``: one categorical draw of ``J`` (Walker's alias method,
from a table of ``P(J = j)`` computed once per ``(k, iterations)`` by an FFT of
that generating function, truncated where a Chernoff bound puts the tail below
1e-18), then ONE gamma draw per entry (Marsaglia and Tsang's method, with
``Gamma(a) = Gamma(a + 1) U^(1/a)`` for the shapes below 1), instead of ``s``
gamma draws per entry. The rejection step redraws the few rejected entries in
one batch of fixed size (three proposals each) without reading anything back to
the host; only a final check reads one value, and a last loop runs in the rare
calls where entries remain. At the estimators' shapes a draw went from about
26x a Gumbel draw of the same shape (summing ``s`` gammas) to 1.6-2.0x
(``benchmarks/noise.py``).

References:
    M. Niepert, P. Minervini, L. Franceschi. Implicit MLE: Backpropagating Through
    Discrete Exponential Family Distributions. NeurIPS 2021.

    G. Marsaglia, W. W. Tsang. A Simple Method for Generating Gamma Variables.
    ACM Transactions on Mathematical Software 26(3), 2000.

    P. G. Moschopoulos. The distribution of the sum of independent gamma random
    variables. Annals of the Institute of Statistical Mathematics 37, 1985.

    M. D. Vose. A linear algorithm for generating random numbers with a given
    distribution. IEEE Transactions on Software Engineering 17(9), 1991.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import torch

from .._checks import check_choice, check_number, check_positive_int

__all__ = [
    "CENTRED",
    "EULER_GAMMA",
    "NOISES",
    "gamma",
    "gumbel",
    "log_density_gradient",
    "mean",
    "none",
    "normal",
    "sample",
    "sum_of_gamma",
]

NOISES = ("gumbel", "normal", "sum_of_gamma", "none")
CENTRED = ("normal", "none")
"""The noises of mean 0 (see the module docstring for what a mean does to "min" solvers)."""
EULER_GAMMA = 0.5772156649015329

Shape = Sequence[int] | torch.Size


def _draw_setup(
    dtype: torch.dtype | None, device: torch.device | str | None, generator: torch.Generator | None
) -> tuple[torch.dtype, torch.device, torch.dtype, torch.device]:
    """(output dtype, output device, draw dtype, draw device)."""
    dtype = torch.get_default_dtype() if dtype is None else dtype
    device = torch.device("cpu") if device is None else torch.device(device)
    draw_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    # torch requires a generator on the device it samples on.
    draw_device = device if generator is None else generator.device
    return dtype, device, draw_dtype, draw_device


def gumbel(
    shape: Shape,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Standard Gumbel draws of ``shape`` (mean ``EULER_GAMMA``, not centred).

    Example:
        >>> import torch
        >>> z = gumbel((100_000,), generator=torch.Generator().manual_seed(0))
        >>> round(float(z.mean()), 1)  # Euler-Mascheroni constant 0.577
        0.6
    """
    dtype, device, draw_dtype, draw_device = _draw_setup(dtype, device, generator)
    exponential = torch.empty(tuple(shape), dtype=draw_dtype, device=draw_device)
    exponential.exponential_(generator=generator)
    # An exponential draw of exactly 0 would give +inf.
    z = -torch.log(exponential.clamp_min(torch.finfo(draw_dtype).tiny))
    return z.to(device=device, dtype=dtype)


def normal(
    shape: Shape,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Standard normal draws of ``shape`` (centred).

    Example:
        >>> import torch
        >>> normal((2, 3), generator=torch.Generator().manual_seed(0)).shape
        torch.Size([2, 3])
    """
    dtype, device, draw_dtype, draw_device = _draw_setup(dtype, device, generator)
    z = torch.randn(tuple(shape), dtype=draw_dtype, device=draw_device, generator=generator)
    return z.to(device=device, dtype=dtype)


def none(
    shape: Shape,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Zeros of ``shape`` (the "no noise" distribution); ``generator`` is unused.

    Example:
        >>> none((3,))
        tensor([0., 0., 0.])
    """
    dtype, device, _, _ = _draw_setup(dtype, device, generator)
    return torch.zeros(tuple(shape), dtype=dtype, device=device)


# Marsaglia and Tsang reject at most 4.9% of proposals (at shape 1; fewer above),
# which sizes the batch of redraws.
_REJECTION_BOUND = 0.05
_PROPOSALS_PER_REDRAW = 3


def _propose(shape_parameter: torch.Tensor, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """One Marsaglia-Tsang proposal per entry of ``shape_parameter`` (all >= 1): (value, accepted)."""
    d = shape_parameter - 1.0 / 3.0
    x = torch.randn(shape_parameter.shape, dtype=d.dtype, device=d.device, generator=generator)
    u = torch.rand(shape_parameter.shape, dtype=d.dtype, device=d.device, generator=generator)
    cx = torch.mul(d, 9.0).rsqrt_().mul_(x)
    # w = (1 + c x)^3 - 1, expanded so that log1p(w) - w keeps its precision when
    # d is large and w small (float32 draws at shapes in the thousands).
    w = cx + 3.0
    w.mul_(cx).add_(3.0).mul_(cx)
    # Accept when log u < x^2/2 + d (1 - v + log v), v = 1 + w. Where 1 + c x <= 0
    # the proposal must be rejected: there w <= -1, log1p gives -inf or NaN, and
    # the comparison is False. The bound reuses cx's memory: every fresh buffer of
    # this size costs page faults, which made whole draws up to 3x slower.
    bound = torch.log1p(w, out=cx).sub_(w).mul_(d).addcmul_(x, x, value=0.5)
    accepted = u.log_() < bound
    return w.add_(1.0).mul_(d), accepted


def _gamma_at_least_one(shape_parameter: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """``Gamma(a, 1)`` draws for a 1-D tensor of shapes ``a >= 1``, same dtype and device.

    The LAST entry is a scratch slot: its draw is returned but meaningless (the
    callers append it; it saves two copies of every array). The first round
    proposes once per entry. The rejected entries (a fixed-size batch found with
    ``nonzero_static``, unused places pointing at the scratch slot, so no value is
    read back to the host) get three proposals each and keep the first accepted
    one; the number of rounds is fixed, so a CUDA stream never waits for the
    host. Only the final check reads one value; in the rare call where an entry
    was rejected every time, or more entries were rejected than the batch holds,
    a plain loop finishes them. The draws consumed depend only on the
    generator's state, so results are reproducible.
    """
    scratch = shape_parameter.numel() - 1
    out, accepted = _propose(shape_parameter, generator)
    if scratch <= 0:
        return out
    accepted[scratch] = True
    expected = _REJECTION_BOUND * scratch
    # Six standard deviations above the expected count of rejections.
    slots = min(scratch, math.ceil(expected + 6.0 * math.sqrt(expected) + 8.0))
    pending = torch.nonzero_static(~accepted, size=slots, fill_value=scratch).squeeze(1)
    values, again = _propose(shape_parameter[pending].expand(_PROPOSALS_PER_REDRAW, slots), generator)
    first = torch.where(again[0], values[0], torch.where(again[1], values[1], values[2]))
    redrawn = again.any(0)
    # Only the scratch slot can be written twice, and its value does not matter.
    out.index_put_((pending,), torch.where(redrawn, first, out[pending]))
    accepted.index_put_((pending,), redrawn | (pending == scratch))
    remaining = torch.nonzero(~accepted).squeeze(1)  # the one host read
    while remaining.numel():
        values, again = _propose(shape_parameter[remaining], generator)
        out[remaining[again]] = values[again]
        remaining = remaining[~again]
    return out


def gamma(
    shape: Shape,
    concentration: float,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``Gamma(concentration, rate 1)`` draws of ``shape``, driven by ``generator``.

    torch's own gamma sampler takes no generator, so this is Marsaglia and Tsang's
    exact rejection method built on generator-driven normal and uniform draws; for
    ``concentration < 1`` it samples ``Gamma(concentration + 1) * U^(1/concentration)``.
    Draws are made in float64 whatever ``dtype`` is: small concentrations produce
    values far below float32's range.

    Args:
        shape: Output shape.
        concentration: Shape parameter ``> 0``.

    Returns:
        ``[*shape]`` draws of ``dtype`` on ``device``.

    Raises:
        ValueError: If ``concentration`` is not a positive finite number.

    Example:
        >>> import torch
        >>> g = gamma((200_000,), 2.5, generator=torch.Generator().manual_seed(0))
        >>> round(float(g.mean()), 1), round(float(g.var()), 1)
        (2.5, 2.5)
    """
    concentration = check_number("gamma", "concentration", concentration, positive=True)
    dtype, device, _, draw_device = _draw_setup(dtype, device, generator)
    boost = concentration < 1
    count = math.prod(shape)
    shape_parameter = torch.full(
        (count + 1,), concentration + 1.0 if boost else concentration, dtype=torch.float64, device=draw_device
    )
    out = _gamma_at_least_one(shape_parameter, generator)[:count]  # the last is a scratch slot
    if boost:
        u = torch.rand((count,), dtype=torch.float64, device=draw_device, generator=generator)
        # In log space: U^(1/a) underflows for small a before the product would.
        out = torch.exp(torch.log(out) + torch.log(u) / concentration)
    return out.reshape(tuple(shape)).to(device=device, dtype=dtype)


# The categorical's tail beyond the table is below this (a Chernoff bound).
_MIXTURE_TAIL = 1e-18


@functools.lru_cache(maxsize=32)
def _mixture_weights(k: int, iterations: int) -> np.ndarray:
    """``P(J = j)`` for ``j = 0, 1, ...`` (float64): the mixing weights of the sum-of-gamma draw.

    ``J = sum_{i<s} NB(1/k, i/s)`` has the generating function
    ``G(v) = prod_{i<s} ((i/s) / (1 - (1 - i/s) v))^(1/k)``; its values at the
    ``L``-th roots of unity, Fourier-transformed, give ``P(J = j)`` up to the mass
    beyond ``L``, which ``P(J >= L) <= G(v) / v^L`` (for ``1 < v < s/(s-1)``) keeps
    below 1e-18. Cost: ``O(s L)`` once per ``(k, s)`` (``L`` grows like ``40 s``).
    """
    s = iterations
    if s == 1:
        return np.ones(1)
    rates = np.arange(1, s, dtype=np.float64) / s  # the success probabilities i/s
    q = 1.0 - rates
    log_p = float(np.log(rates).sum())

    def log_generating_function(v: np.ndarray) -> np.ndarray:
        total = np.zeros(v.shape, dtype=v.dtype)
        for chunk in np.array_split(q, max(1, q.size // 64)):  # bounded memory
            total -= np.log1p(-np.multiply.outer(v, chunk)).sum(-1)
        return (log_p + total) / k

    # Real points in (1, 1 / max q) for the Chernoff bound.
    v = 1.0 + (1.0 / q[0] - 1.0) * np.linspace(0.05, 0.95, 19)
    bound_at_v = log_generating_function(v)
    size = 64
    while (bound_at_v - size * np.log(v)).min() > math.log(_MIXTURE_TAIL):
        size *= 2
    # 1 - q v has a positive real part on the unit disc, so the principal
    # logarithm is the analytic one and G's powers 1/k are taken correctly.
    roots = np.exp(2j * np.pi * np.arange(size) / size)
    weights = np.fft.fft(np.exp(log_generating_function(roots))).real / size
    # Round-off leaves values of about 1e-17 (some negative) where the weights vanish.
    weights = np.clip(weights, 0.0, None)
    weights = weights[: int(np.nonzero(weights > 1e-17)[0][-1]) + 1]
    return weights / weights.sum()


def _alias_table(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Walker's alias table for ``weights`` (Vose's construction): (threshold, alias).

    Draw ``b`` uniform in ``0..n-1`` and ``f`` uniform in ``[0, 1)``: the outcome is
    ``b`` if ``f < threshold[b]``, else ``alias[b]``.
    """
    n = weights.size
    scaled = weights * n
    threshold = np.ones(n)
    alias = np.arange(n)
    small = [i for i in range(n) if scaled[i] < 1.0]
    large = [i for i in range(n) if scaled[i] >= 1.0]
    while small and large:
        low, high = small.pop(), large.pop()
        threshold[low], alias[low] = scaled[low], high
        scaled[high] -= 1.0 - scaled[low]
        (small if scaled[high] < 1.0 else large).append(high)
    return threshold, alias  # what is left over has scaled weight 1 up to round-off


@functools.lru_cache(maxsize=32)
def _mixture_tables(
    k: int, iterations: int, dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """The alias table of ``J`` on ``device``: thresholds (float64) and alias shapes ``rho + alias`` (``dtype``)."""
    threshold, alias = _alias_table(_mixture_weights(k, iterations))
    alias_shape = torch.tensor(alias + iterations / k, dtype=dtype, device=device)
    return torch.tensor(threshold, dtype=torch.float64, device=device), alias_shape


def sum_of_gamma(
    shape: Shape,
    *,
    k: int,
    iterations: int = 10,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Sum-of-gamma draws ``sum_{i=1..s} Gamma(1/k, rate i) - (log s) / k``, ``s = iterations``.

    Mean ``(H_s - log s) / k`` (``H_s`` the harmonic number), variance
    ``(sum_{i<=s} 1/i^2) / k``; the sum of ``k`` independent draws is distributed as
    ``max(E_1..E_s) - log s`` and tends to a standard Gumbel as ``iterations``
    grows. Each entry is drawn exactly as ``Gamma(s/k + J, rate s) - (log s) / k``
    with ``J`` from its mixing distribution (see the module docstring): two
    uniform and one normal draw per entry (three uniforms when ``s < k``), a few
    percent redrawn, whatever ``iterations`` is.

    Args:
        shape: Output shape.
        k: Number of draws that add up to (about) one Gumbel, ``>= 1``; for top-k
            it is the subset size.
        iterations: Number of gamma terms ``s``, ``>= 1``.

    Returns:
        ``[*shape]`` draws of ``dtype`` on ``device``.

    Raises:
        ValueError: If ``k`` or ``iterations`` is not a positive integer.

    Example:
        >>> import torch
        >>> z = sum_of_gamma((3, 100_000), k=3, iterations=10, generator=torch.Generator().manual_seed(0))
        >>> round(float(z.sum(0).mean()), 2)  # k draws add up to about a Gumbel: mean H_10 - log 10
        0.63
    """
    k = check_positive_int("sum_of_gamma", "k", k)
    iterations = check_positive_int("sum_of_gamma", "iterations", iterations)
    dtype, device, draw_dtype, draw_device = _draw_setup(dtype, device, generator)
    count = math.prod(shape)
    threshold, alias_shape = _mixture_tables(k, iterations, draw_dtype, draw_device)
    rho = iterations / k
    # One float64 uniform picks the bucket (integer part) and decides between it
    # and its alias (fraction), with 40+ bits left for the decision.
    # One more entry than asked: the scratch slot of _gamma_at_least_one, dropped at the end.
    position = torch.rand((count + 1,), dtype=torch.float64, device=draw_device, generator=generator)
    position.mul_(threshold.numel())
    bucket = position.long()
    own = (position.frac_() < threshold[bucket]).to(draw_dtype)
    # Gamma shape rho + J; torch.where is several times slower than this blend on CPU.
    shape_parameter = alias_shape[bucket]
    shape_parameter.addcmul_(own, bucket.to(draw_dtype).add_(rho).sub_(shape_parameter))
    if rho < 1:
        # J = 0 leaves a shape rho < 1: draw Gamma(rho + 1) and multiply by U^(1/rho).
        below_one = own.copy_(shape_parameter < 1)  # own's memory, no fresh buffer
        draws = _gamma_at_least_one(shape_parameter + below_one, generator)
        u = torch.rand((count + 1,), dtype=draw_dtype, device=draw_device, generator=generator)
        tiny = torch.finfo(draw_dtype).tiny
        # In log space, the exponent of U being 0 where no boost is needed (tiny
        # avoids 0 * -inf). Values below the smallest normal float are raised to
        # it: arithmetic on subnormals is many times slower (it made whole draws
        # 5x slower), and they sit below the precision of the shift subtracted next.
        log_u = u.clamp_min_(tiny).log_().mul_(below_one).div_(shape_parameter)
        log_w = log_u.add_(draws.log_()).sub_(math.log(iterations)).clamp_min_(math.log(tiny))
        z = log_w.exp_().sub_(math.log(iterations) / k)
    else:
        draws = _gamma_at_least_one(shape_parameter, generator)
        z = draws.div_(iterations).sub_(math.log(iterations) / k)
    return z[:count].reshape(tuple(shape)).to(device=device, dtype=dtype)


def sample(
    name: str,
    shape: Shape,
    *,
    k: int = 1,
    iterations: int = 10,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draws of ``shape`` from the distribution called ``name`` (one of :data:`NOISES`).

    ``k`` and ``iterations`` are used by ``sum_of_gamma`` only.

    Raises:
        ValueError: If ``name`` is unknown.

    Example:
        >>> sample("none", (2,))
        tensor([0., 0.])
    """
    check_choice("noise", "noise", name, NOISES)
    if name == "sum_of_gamma":
        return sum_of_gamma(shape, k=k, iterations=iterations, dtype=dtype, device=device, generator=generator)
    sampler = {"gumbel": gumbel, "normal": normal, "none": none}[name]
    return sampler(shape, dtype=dtype, device=device, generator=generator)


def mean(name: str, *, k: int = 1, iterations: int = 10) -> float:
    """The expectation of one draw of the distribution called ``name`` (0 for :data:`CENTRED` ones).

    Example:
        >>> round(mean("gumbel"), 4), mean("normal")
        (0.5772, 0.0)
    """
    check_choice("noise", "noise", name, NOISES)
    if name == "gumbel":
        return EULER_GAMMA
    if name == "sum_of_gamma":
        k = check_positive_int("sum_of_gamma", "k", k)
        iterations = check_positive_int("sum_of_gamma", "iterations", iterations)
        harmonic = math.fsum(1.0 / i for i in range(1, iterations + 1))
        return (harmonic - math.log(iterations)) / k
    return 0.0


def log_density_gradient(name: str, z: torch.Tensor) -> torch.Tensor:
    """``grad nu(z)`` with ``nu = -log density``, for ``"gumbel"`` and ``"normal"``.

    This is the weight of the perturbation estimator's score-function gradient
    (Berthet et al. 2020): ``z`` for the normal, ``1 - exp(-z)`` for the Gumbel.
    Both have mean zero under their distribution.

    Raises:
        ValueError: For other distributions, whose density has no closed form here.

    Example:
        >>> import torch
        >>> log_density_gradient("gumbel", torch.tensor([0.0]))
        tensor([0.])
    """
    check_choice("noise", "noise", name, ("gumbel", "normal"))
    if name == "normal":
        return z
    return -torch.expm1(-z)

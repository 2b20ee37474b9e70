"""Noise distributions for perturbation-based estimators, all generator-driven.

Every sampler takes an explicit ``torch.Generator`` or, when ``generator`` is None,
uses torch's global RNG, so results are reproducible under ``torch.manual_seed``.
Draws come back on the requested ``device`` and ``dtype``; when a generator lives
on another device (a CPU generator for a CUDA theta), the draw is made on the
generator's device and moved, so one seeded generator gives the same numbers on
every device. Draws are made in float64 (float32 for lower precisions) and cast.

The distributions:

- ``gumbel``: standard Gumbel, ``-log(E)`` with ``E ~ Exponential(1)``; mean is the
  Euler-Mascheroni constant, variance ``pi^2 / 6``.
- ``normal``: standard normal.
- ``sum_of_gamma(k, iterations)``: ``(sum_{i=1..s} G_i - log s) / k`` with
  ``G_i ~ Gamma(shape 1/k, rate i/k)`` and ``s = iterations``; the sum of ``k``
  independent draws tends to a Gumbel as ``s`` grows, which makes it the noise
  whose perturbed top-k is a Gumbel-perturbed k-subset (Niepert et al. 2021).
- ``none``: zeros.

References:
    M. Niepert, P. Minervini, L. Franceschi. Implicit MLE: Backpropagating Through
    Discrete Exponential Family Distributions. NeurIPS 2021.

    G. Marsaglia, W. W. Tsang. A Simple Method for Generating Gamma Variables.
    ACM Transactions on Mathematical Software 26(3), 2000.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .._checks import check_choice, check_positive_int

NOISES = ("gumbel", "normal", "sum_of_gamma", "none")
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


def _uniform(shape: Shape, dtype: torch.dtype, device: torch.device, generator) -> torch.Tensor:
    return torch.rand(tuple(shape), dtype=dtype, device=device, generator=generator)


def _standard_normal(shape: Shape, dtype: torch.dtype, device: torch.device, generator) -> torch.Tensor:
    return torch.randn(tuple(shape), dtype=dtype, device=device, generator=generator)


def gumbel(
    shape: Shape,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Standard Gumbel draws of ``shape``.

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
    """Standard normal draws of ``shape``.

    Example:
        >>> import torch
        >>> normal((2, 3), generator=torch.Generator().manual_seed(0)).shape
        torch.Size([2, 3])
    """
    dtype, device, draw_dtype, draw_device = _draw_setup(dtype, device, generator)
    return _standard_normal(shape, draw_dtype, draw_device, generator).to(device=device, dtype=dtype)


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
    The rejection loop redraws only the rejected entries (acceptance is above 95%),
    and its number of rounds is fixed by the generator's state, so it is reproducible.

    Args:
        shape: Output shape.
        concentration: Shape parameter ``> 0``.

    Raises:
        ValueError: If ``concentration`` is not a positive finite number.

    Example:
        >>> import torch
        >>> g = gamma((200_000,), 2.5, generator=torch.Generator().manual_seed(0))
        >>> round(float(g.mean()), 1), round(float(g.var()), 1)
        (2.5, 2.5)
    """
    if isinstance(concentration, bool) or not isinstance(concentration, (int, float)) or not (
        0 < concentration < math.inf
    ):
        raise ValueError(f"gamma: concentration must be a positive finite number, got {concentration!r}")
    dtype, device, _, draw_device = _draw_setup(dtype, device, generator)
    # float64 throughout: small concentrations produce values far below float32's range.
    draw_dtype = torch.float64
    boost = concentration < 1
    alpha = concentration + 1.0 if boost else float(concentration)
    d = alpha - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)

    def propose(count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``count`` proposals ``d * v`` and whether each is accepted."""
        x = _standard_normal((count,), draw_dtype, draw_device, generator)
        u = _uniform((count,), draw_dtype, draw_device, generator)
        t = 1.0 + c * x
        positive = t > 0
        t = torch.where(positive, t, 1.0)
        v = t * t * t
        # Accept when log u < x^2 / 2 + d - d v + d log v, with log v = 3 log t.
        bound = torch.log(t).mul_(3.0 * d).add_(x * x, alpha=0.5).add_(d).sub_(v * d)
        return v.mul_(d), positive & (torch.log(u) < bound)

    count = math.prod(shape)
    out, accepted = propose(count)
    pending = (~accepted).nonzero().squeeze(-1)
    while pending.numel():
        values, accepted = propose(pending.numel())
        out[pending[accepted]] = values[accepted]
        pending = pending[~accepted]
    if boost:
        u = _uniform((count,), draw_dtype, draw_device, generator)
        # In log space: U^(1/a) underflows for small a before the product would.
        out = torch.exp(torch.log(out) + torch.log(u) / concentration)
    return out.reshape(tuple(shape)).to(device=device, dtype=dtype)


def sum_of_gamma(
    shape: Shape,
    *,
    k: int,
    iterations: int = 10,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Sum-of-gamma draws ``(sum_{i=1..s} Gamma(1/k, rate i/k) - log s) / k``, ``s = iterations``.

    Mean ``(H_s - log s) / k`` (``H_s`` the harmonic number), variance
    ``(sum_{i<=s} 1/i^2) / k``; the sum of ``k`` independent draws tends to a
    standard Gumbel as ``iterations`` grows.

    Args:
        shape: Output shape.
        k: Number of draws that add up to (about) one Gumbel, ``>= 1``; for top-k
            it is the subset size.
        iterations: Number of gamma terms ``s``, ``>= 1``.

    Raises:
        ValueError: If ``k`` or ``iterations`` is not a positive integer.

    Example:
        >>> import torch
        >>> sum_of_gamma((4,), k=3, iterations=10, generator=torch.Generator().manual_seed(0)).shape
        torch.Size([4])
    """
    k = check_positive_int("sum_of_gamma", "k", k)
    iterations = check_positive_int("sum_of_gamma", "iterations", iterations)
    dtype, device, draw_dtype, draw_device = _draw_setup(dtype, device, generator)
    # Gamma(1/k, rate i/k) = Gamma(1/k, rate 1) * k / i.
    draws = gamma((iterations, *shape), 1.0 / k, dtype=torch.float64, device=draw_device, generator=generator)
    index = torch.arange(1, iterations + 1, dtype=torch.float64, device=draw_device)
    scale = (k / index).reshape(iterations, *([1] * len(tuple(shape))))
    z = ((draws * scale).sum(0) - math.log(iterations)) / k
    return z.to(device=device, dtype=dtype)


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
    common = {"dtype": dtype, "device": device, "generator": generator}
    if name == "sum_of_gamma":
        return sum_of_gamma(shape, k=k, iterations=iterations, **common)
    return {"gumbel": gumbel, "normal": normal, "none": none}[name](shape, **common)


def mean(name: str, *, k: int = 1, iterations: int = 10) -> float:
    """The expectation of one draw of the distribution called ``name``.

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

"""Poisson Quasimetric Embeddings (PQE): a learned asymmetric distance head.

This module's one job is the PQE head: its variants, parametrization and initialization.

A quasimetric is a distance without symmetry: ``d(u, u) = 0``, ``d >= 0`` and the
triangle inequality, but ``d(u, v) != d(v, u)`` in general (shortest paths in a
directed graph, the cost to reach one state from another). A PQE turns two latent
vectors into such a distance, and any quasimetric is approximated by some PQE.

Each latent coordinate describes a set ``A(u)`` in the space of a Poisson process.
A group of ``n`` processes gives a random quasipartition ``pi(u, v)``: 0 when every
process counts no more points in ``A(u)`` than in ``A(v)``, else 1. Its expectation,

    ``E[pi(u, v)] = 1 - prod_i P[Poisson(mu_i(A_i(u) - A_i(v))) <= Poisson(mu_i(A_i(v) - A_i(u)))]``,

is a quasimetric with values in [0, 1), and a PQE mixes ``num_quasipartition_mixtures``
of them with non-negative learned weights (or, discounted, multiplies learned bases
raised to them). The variants, named for the mean measure ``mu`` and the sets ``A``:

- PQE-LH (``measure="lebesgue", shape="halfline"``, default): ``A(u) = (-inf, u]``
  under the Lebesgue measure, ``E[pi] = 1 - exp(mean_i min(v_i - u_i, 0))``.
- ``measure="gaussian", shape="halfline"``: half-lines under a Gaussian measure with a
  learned variance per process.
- PQE-GG (``measure="gaussian", shape="gaussian"``): ``A(u)`` is the region under a
  unit Gaussian density centred at ``u``, under a Gaussian measure with learned
  variance; its set differences have closed forms in the normal CDF (Sec. C.2).

With the Gaussian measure the rates of all processes are additionally mixed by a
learned non-negative matrix (the mean measure of each process becomes a
non-negative combination of all coordinates' measures, which is still a Poisson
process, so every property holds; it starts near a multiple of the identity) and
divided by ``n``, the counterpart of PQE-LH's mean; the comparison probability
is :func:`poisson_le_probability`. The Lebesgue measure with Gaussian shapes is
refused: every such set has measure 1, so both set differences have the same
measure and the distance would be symmetric.

Non-negative weights, rate scales and discount logits are each a deep linear
network (a product of four matrices plus a bias, squared where they must be
non-negative), as in the paper (Sec. C.4.3): the product has no more expressive
power than one matrix, but the over-parametrization speeds up gradient descent on
these few effective parameters (Arora et al. 2018).

References:
    Tongzhou Wang, Phillip Isola. "On the Learning and Learnability of
    Quasimetrics." ICLR 2022.
    Sanjeev Arora, Nadav Cohen, Elad Hazan. "On the Optimization of Deep Networks:
    Implicit Acceleration by Overparameterization." ICML 2018.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_bool, check_choice, check_positive_int
from ._latents import check_latent_pair
from .poisson import PoissonLessEqual

__all__ = ["PQE"]

MEASURES = ("lebesgue", "gaussian")
SHAPES = ("halfline", "gaussian")
# The discounted output starts in this range on standard normal latents (Sec. C.4.3).
_DISCOUNT_INIT_RANGE = (0.5, 0.75)
_RATE_SCALE_INIT = 3.0
# Beyond this many standard deviations a normal density is 0 in every float dtype.
_MAX_STANDARDIZED = 64.0


class _DeepLinearNet(nn.Module):
    """A ``[output_dim, input_dim]`` matrix parametrized as a product of matrices plus a bias.

    Factors are initialized with variance ``1 / fan_in`` so the product has
    entries of variance ``1 / input_dim``; the bias starts at zero. With
    ``non_negative=True`` the matrix is squared entrywise.
    """

    def __init__(self, input_dim: int, output_dim: int, *, non_negative: bool, depth: int = 4) -> None:
        super().__init__()
        self.input_dim, self.output_dim, self.non_negative = input_dim, output_dim, non_negative
        hidden = max(64, input_dim, output_dim)
        dims = [input_dim] + [hidden] * (depth - 1) + [output_dim]
        # Stored output-side first, so the product reads left to right.
        self.factors = nn.ParameterList(
            nn.Parameter(torch.randn(fan_out, fan_in) / math.sqrt(fan_in))
            for fan_in, fan_out in reversed(list(zip(dims[:-1], dims[1:])))
        )
        self.bias = nn.Parameter(torch.zeros(output_dim, input_dim))

    def product(self) -> torch.Tensor:
        """The product of the factors, ``[output_dim, input_dim]``, without bias or square."""
        return torch.linalg.multi_dot(list(self.factors))

    def matrix(self) -> torch.Tensor:
        """The effective matrix ``[output_dim, input_dim]``."""
        matrix = self.product() + self.bias
        return matrix.square() if self.non_negative else matrix

    def extra_repr(self) -> str:
        return f"input_dim={self.input_dim}, output_dim={self.output_dim}, non_negative={self.non_negative}"


def _normal_density(x: torch.Tensor, variance: torch.Tensor) -> torch.Tensor:
    """``N(x; 0, variance)``, with finite gradients for any finite ``x``.

    ``x^2`` overflows float32 from |x| ~ 1.8e19: the density is 0 there either way, but
    its gradient w.r.t. the variance would be ``0 * inf = NaN``. The standardized
    value is clamped at 64 instead, where ``exp(-2048)`` is 0 even in float64, so the
    value is unchanged and the gradient is the exact 0 it underflows to.
    """
    standardized = (x / variance.sqrt()).clamp(-_MAX_STANDARDIZED, _MAX_STANDARDIZED)
    return torch.exp(-0.5 * standardized.square()) / torch.sqrt(2 * math.pi * variance)


def _normal_cdf_difference(upper: torch.Tensor, lower: torch.Tensor) -> torch.Tensor:
    """``Phi(upper) - Phi(lower)`` without cancellation when both lie in the right tail."""
    right = upper + lower > 0
    return torch.where(
        right,
        torch.special.ndtr(-lower) - torch.special.ndtr(-upper),
        torch.special.ndtr(upper) - torch.special.ndtr(lower),
    )


class PQE(nn.Module):
    """Poisson Quasimetric Embedding: ``d = pqe(u, v)``, a learnable quasimetric on latents.

    Latents ``[..., m * n]`` (``m = num_quasipartition_mixtures``,
    ``n = num_poisson_processes_per_quasipartition``) are split into ``m`` groups of
    ``n`` consecutive coordinates; group ``j`` gives an expected quasipartition
    ``E[pi_j(u, v)]`` in [0, 1) (see the module docstring for each variant). The output is

    - ``discounted=False``: ``d = sum_j w_j E[pi_j]`` with learned weights ``w_j >= 0``;
      ``d(u, u) = 0``, ``d >= 0``, ``d(u, w) <= d(u, v) + d(v, w)``.
    - ``discounted=True``: ``d = prod_j sigmoid(beta_j) ** E[pi_j]`` in (0, 1], a
      discounted distance (``gamma ** distance``) with learned logits ``beta_j``;
      ``d(u, u) = 1`` and ``d(u, w) >= d(u, v) * d(v, w)``. The logits start so that
      the output lies around [0.5, 0.75] for standard normal latents (the paper's
      advice: a product of many factors below 1 must not start near 0).

    Leading dims of ``u`` and ``v`` broadcast (``pqe(x[:, None], x)`` gives all pairs).
    Input values are not checked for NaN (that would synchronize a GPU every call);
    NaN latents give NaN distances.

    Args:
        num_quasipartition_mixtures: Number of groups ``m`` (expected quasipartitions mixed).
        num_poisson_processes_per_quasipartition: Coordinates (Poisson processes) per group ``n``.
        measure: Mean measure of the processes, "lebesgue" or "gaussian".
        shape: Sets parametrized by a coordinate, "halfline" or "gaussian"
            ("gaussian" needs ``measure="gaussian"``).
        discounted: Return discounted distances in (0, 1] instead of distances.

    Raises:
        ValueError: For non-positive sizes, unknown measure or shape, or the
            symmetric combination ``measure="lebesgue", shape="gaussian"``.

    Example:
        >>> import torch
        >>> from combgrad.geometry import PQE
        >>> _ = torch.manual_seed(0)
        >>> pqe = PQE(16, num_poisson_processes_per_quasipartition=4)
        >>> u, v, w = torch.randn(3, 5, 64).unbind(0)
        >>> bool((pqe(u, v) >= 0).all()), pqe(u, u).abs().max().item()
        (True, 0.0)
        >>> bool((pqe(u, v) != pqe(v, u)).any())
        True
        >>> bool((pqe(u, w) <= pqe(u, v) + pqe(v, w) + 1e-6).all())
        True
        >>> pqe(u[:, None], u).shape
        torch.Size([5, 5])

    References:
        Tongzhou Wang, Phillip Isola. "On the Learning and Learnability of
        Quasimetrics." ICLR 2022.
    """

    def __init__(
        self,
        num_quasipartition_mixtures: int,
        num_poisson_processes_per_quasipartition: int = 4,
        measure: str = "lebesgue",
        shape: str = "halfline",
        discounted: bool = False,
    ) -> None:
        super().__init__()
        self.num_quasipartition_mixtures = check_positive_int(
            "PQE", "num_quasipartition_mixtures", num_quasipartition_mixtures
        )
        self.num_poisson_processes_per_quasipartition = check_positive_int(
            "PQE", "num_poisson_processes_per_quasipartition", num_poisson_processes_per_quasipartition
        )
        self.measure = check_choice("PQE", "measure", measure, MEASURES)
        self.shape = check_choice("PQE", "shape", shape, SHAPES)
        if measure == "lebesgue" and shape == "gaussian":
            raise ValueError(
                "PQE: measure='lebesgue' with shape='gaussian' would be symmetric (every Gaussian "
                "shape has Lebesgue measure 1, so both set differences have equal measure); "
                "use measure='gaussian' for Gaussian shapes"
            )
        self.discounted = check_bool("PQE", "discounted", discounted)
        groups, processes = self.num_quasipartition_mixtures, self.num_poisson_processes_per_quasipartition
        self.latent_size = groups * processes

        if measure == "gaussian":
            # Log-variance of each process's Gaussian measure (variance 1 at start).
            self.measure_log_variance = nn.Parameter(torch.zeros(groups, processes))
            self.rate_scales = _DeepLinearNet(self.latent_size, self.latent_size, non_negative=True)
            # Unlike the paper's zero bias, the rate scales start near 9 * identity (the
            # bias is 3 * I before squaring): each process starts on its own coordinate,
            # keeping that coordinate's asymmetry instead of a random average over all,
            # and the rates start O(1) although Gaussian masses are <= 0.28. Measured on
            # examples/quasimetric_graph.py (1000 steps, 2 seeds): test MSE 0.88 / 0.91
            # with zero bias, 0.77 / 0.81 with this start.
            with torch.no_grad():
                self.rate_scales.bias.copy_(_RATE_SCALE_INIT * torch.eye(self.latent_size))
        if discounted:
            self.discount_logits = _DeepLinearNet(1, groups, non_negative=False)
            self._init_discount_logits()
        else:
            self.mixture_weights = _DeepLinearNet(groups, 1, non_negative=True)

    def _init_discount_logits(self) -> None:
        """Start the discounted output in [0.5, 0.75] on standard normal latents.

        With every expected quasipartition equal to ``q``, ``prod_j sigmoid(beta_j) ** q``
        lies in [0.5, 0.75] when each ``sigmoid(beta_j)`` lies in
        ``[0.5 ** (1 / (m q)), 0.75 ** (1 / (m q))]``. The paper takes ``q = 1/2``; here
        ``q`` is the mean expected quasipartition of this freshly initialized head on
        standard normal latents (about 0.39 for PQE-LH, 0.42 for PQE-GG, 0.68 for
        Gaussian half-lines), drawn from a private generator so the global random
        state is untouched. The bias absorbs the random product, so the logits start
        exactly at uniform draws in that range.
        """
        groups = self.num_quasipartition_mixtures
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            u, v = torch.randn(2, 256, self.latent_size, generator=generator).unbind(0)
            typical = float(self.expected_quasipartitions(u, v).mean().clamp(min=1e-3))
            low, high = (
                math.log(bound ** (1 / (groups * typical))) - math.log1p(-(bound ** (1 / (groups * typical))))
                for bound in _DISCOUNT_INIT_RANGE
            )
            target = torch.empty(groups, 1).uniform_(low, high)
            self.discount_logits.bias.copy_(target - self.discount_logits.product())

    def forward(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Quasimetric distance from ``u`` to ``v``.

        Args:
            u: Latents ``[..., m * n]``.
            v: Latents ``[..., m * n]``, leading dims broadcastable with ``u``'s.

        Returns:
            Distances ``[...]`` (the broadcast leading shape), in (0, 1] if discounted.

        Raises:
            TypeError: If ``u`` or ``v`` is not a tensor.
            ValueError: If a latent is not floating point, has the wrong last dim,
                or the leading dims do not broadcast.
        """
        u, v = check_latent_pair(
            "PQE", u, v, self.latent_size,
            f"num_quasipartition_mixtures * num_poisson_processes_per_quasipartition = "
            f"{self.num_quasipartition_mixtures} * {self.num_poisson_processes_per_quasipartition} = {self.latent_size}",
        )
        quasipartitions = self.expected_quasipartitions(u, v)
        if self.discounted:
            logits = self.discount_logits.matrix()[:, 0].to(quasipartitions.dtype)
            # exp(sum_j E[pi_j] log sigmoid(beta_j)): stays in (0, 1] and its gradient is
            # finite even where sigmoid(beta_j) underflows.
            return torch.exp((quasipartitions * F.logsigmoid(logits)).sum(dim=-1))
        weights = self.mixture_weights.matrix()[0].to(quasipartitions.dtype)
        return quasipartitions @ weights

    def expected_quasipartitions(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Expected quasipartition of each group, ``[..., m]``, each in [0, 1) (unchecked input)."""
        groups, processes = self.num_quasipartition_mixtures, self.num_poisson_processes_per_quasipartition
        if self.measure == "lebesgue":
            # Nested half-lines: A(u) - A(v) = (v, u] has measure max(u - v, 0) and
            # A(v) - A(u) is empty, so P[count(u) <= count(v)] = exp(-max(u - v, 0)).
            # The mean over the group replaces the paper's sum for a scale that does
            # not grow with n (Sec. C.4.1).
            gap = (v - u).clamp(max=0).unflatten(-1, (groups, processes))
            return -torch.expm1(gap.mean(dim=-1))
        u_minus_v, v_minus_u = self._set_difference_measures(u, v)
        scales = self.rate_scales.matrix().to(u_minus_v.dtype)
        rate_u = (u_minus_v @ scales.T).unflatten(-1, (groups, processes)) / processes
        rate_v = (v_minus_u @ scales.T).unflatten(-1, (groups, processes)) / processes
        rate_u, rate_v = torch.broadcast_tensors(rate_u, rate_v)
        return 1 - PoissonLessEqual.apply(rate_u, rate_v).prod(dim=-1)

    def _set_difference_measures(self, u: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu(A(u) - A(v)), mu(A(v) - A(u)))`` per process under the Gaussian measure, ``[..., m * n]``."""
        variance = self.measure_log_variance.exp().reshape(-1).to(torch.promote_types(u.dtype, v.dtype))
        if self.shape == "halfline":
            sigma = variance.sqrt()
            mass = _normal_cdf_difference(u / sigma, v / sigma)  # mu((v, u]) with sign
            return mass.clamp(min=0), (-mass).clamp(min=0)
        # A(u) = {(t, h): 0 <= h <= phi(t - u)} under N(t; 0, s2) dt dh. The product of the
        # two Gaussian densities is N(u; 0, s2 + 1) times the density of t ~ N(u r, r)
        # with r = s2 / (s2 + 1), and A(u) - A(v) lies over the half-line of t nearer to u
        # than to v, split at the midpoint.
        total_variance = variance + 1
        ratio = variance / total_variance
        height_u = _normal_density(u, total_variance)
        height_v = _normal_density(v, total_variance)
        middle = (u + v) / 2
        side = torch.sign(v - u)  # +1: u's side of the midpoint is t < middle
        z_u = side * (middle - u * ratio) / ratio.sqrt()
        z_v = side * (middle - v * ratio) / ratio.sqrt()
        u_minus_v = height_u * torch.special.ndtr(z_u) - height_v * torch.special.ndtr(z_v)
        v_minus_u = height_v * torch.special.ndtr(-z_v) - height_u * torch.special.ndtr(-z_u)
        # Mathematically >= 0; rounding can leave -1e-17 where u and v are close.
        return u_minus_v.clamp(min=0), v_minus_u.clamp(min=0)

    def extra_repr(self) -> str:
        return (
            f"num_quasipartition_mixtures={self.num_quasipartition_mixtures}, "
            f"num_poisson_processes_per_quasipartition={self.num_poisson_processes_per_quasipartition}, "
            f"measure={self.measure!r}, shape={self.shape!r}, discounted={self.discounted}"
        )

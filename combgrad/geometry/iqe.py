"""Interval Quasimetric Embeddings (IQE): a simpler learned asymmetric distance head.

This module's one job is the IQE head and the interval-union length it is built on.

Latents are split into components of ``dim_per_component`` coordinates. In a
component, coordinate ``j`` of ``u`` and ``v`` spans the interval
``[u_j, max(u_j, v_j)]`` (empty when ``v_j <= u_j``), and the component's distance is
the total length of the union of these intervals. Each component is a quasimetric
(the union from ``u`` to ``w`` is covered by the unions from ``u`` to ``v`` and from
``v`` to ``w``), and so is any max or mean of them; IQE mixes the max and the mean of
the components with a learned weight ``alpha = sigmoid(logit)``, the "maxmean"
reduction of Deep Norms.

References:
    Tongzhou Wang, Phillip Isola. "Improved Representation of Asymmetrical Distances
    with Interval Quasimetric Embeddings." NeurIPS 2022 Workshop on Symmetry and
    Geometry in Neural Representations (arXiv:2211.15120).
    Silviu Pitis, Harris Chan, Kiarash Jamali, Jimmy Ba. "An Inductive Bias for
    Distances: Neural Nets that Respect the Triangle Inequality." ICLR 2020 (maxmean).
"""

from __future__ import annotations

import torch
from torch import nn

from .._checks import check_positive_int
from ._latents import check_latent_pair

__all__ = ["IQE", "interval_union_length"]


def interval_union_length(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Length of the union of the intervals ``[u_j, max(u_j, v_j)]`` over the last dim.

    Sort-based, ``O(d log d)`` for ``d`` intervals: sorted by left end, interval ``i``
    adds the part of it right of every earlier interval's right end,
    ``relu(right_i - max(left_i, max_{k < i} right_k))``. Differentiable (almost
    everywhere: not at ties between endpoints): exposed left ends get gradient -1 and
    exposed right ends +1.

    Args:
        u: Left ends ``[..., d]``.
        v: Right ends ``[..., d]`` (broadcastable with ``u``); ``v_j <= u_j`` gives an
            empty interval.

    Returns:
        Union lengths ``[...]``, >= 0.

    Example:
        >>> import torch
        >>> from combgrad.geometry import interval_union_length
        >>> u = torch.tensor([[0.0, 0.0], [0.0, 1.0]])
        >>> v = torch.tensor([[1.0, 2.0], [2.0, 3.0]])
        >>> interval_union_length(u, v)  # [0, 1] U [0, 2] and [0, 2] U [1, 3]
        tensor([2., 3.])
    """
    u, v = torch.broadcast_tensors(u, v)
    # An empty interval becomes the point [u_j, u_j]: it adds 0 and cannot raise the
    # running right end above the left end of any later-sorted interval.
    right = torch.maximum(u, v)
    left, order = torch.sort(u, dim=-1)
    right = torch.gather(right, -1, order)
    reach = torch.cummax(right, dim=-1).values
    covered_before = torch.cat([torch.full_like(reach[..., :1], -torch.inf), reach[..., :-1]], dim=-1)
    return torch.relu(right - torch.maximum(left, covered_before)).sum(dim=-1)


class IQE(nn.Module):
    """Interval Quasimetric Embedding: ``d = iqe(u, v)``, a learnable quasimetric on latents.

    ``d = alpha * max_c d_c + (1 - alpha) * mean_c d_c`` over components ``c``, where
    ``d_c`` is :func:`interval_union_length` of component ``c``'s coordinates and
    ``alpha = sigmoid(alpha_logit)`` is learned (starting at 1/2). ``d(u, u) = 0``,
    ``d >= 0``, ``d(u, w) <= d(u, v) + d(v, w)``. Leading dims broadcast.

    Args:
        input_size: Latent size; a multiple of ``dim_per_component``.
        dim_per_component: Coordinates per component (the paper recommends >= 8).

    Raises:
        ValueError: For non-positive sizes or an ``input_size`` not divisible by
            ``dim_per_component``.

    Example:
        >>> import torch
        >>> from combgrad.geometry import IQE
        >>> iqe = IQE(32, dim_per_component=16)
        >>> u = torch.zeros(32)
        >>> v = torch.cat([torch.ones(16), torch.full((16,), 3.0)])
        >>> iqe(u, v)  # components 1 and 3: 0.5 * 3 + 0.5 * 2
        tensor(2.5000, grad_fn=<LerpBackward1>)
        >>> iqe(v, u)
        tensor(0., grad_fn=<LerpBackward1>)

    References:
        Tongzhou Wang, Phillip Isola. "Improved Representation of Asymmetrical
        Distances with Interval Quasimetric Embeddings." NeurIPS 2022 Workshop on
        Symmetry and Geometry in Neural Representations (arXiv:2211.15120).
    """

    def __init__(self, input_size: int, dim_per_component: int = 16) -> None:
        super().__init__()
        self.input_size = check_positive_int("IQE", "input_size", input_size)
        self.dim_per_component = check_positive_int("IQE", "dim_per_component", dim_per_component)
        if input_size % dim_per_component:
            raise ValueError(
                f"IQE: input_size must be a multiple of dim_per_component={dim_per_component}, "
                f"got {input_size}"
            )
        self.num_components = input_size // dim_per_component
        self.alpha_logit = nn.Parameter(torch.zeros(()))

    def forward(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Quasimetric distance from ``u`` to ``v``.

        Args:
            u: Latents ``[..., input_size]``.
            v: Latents ``[..., input_size]``, leading dims broadcastable with ``u``'s.

        Returns:
            Distances ``[...]`` (the broadcast leading shape).

        Raises:
            TypeError: If ``u`` or ``v`` is not a tensor.
            ValueError: If a latent is not floating point, has the wrong last dim,
                or the leading dims do not broadcast.
        """
        u, v = check_latent_pair("IQE", u, v, self.input_size, f"input_size={self.input_size}")
        shape = (self.num_components, self.dim_per_component)
        components = interval_union_length(u.unflatten(-1, shape), v.unflatten(-1, shape))
        alpha = torch.sigmoid(self.alpha_logit).to(components.dtype)
        return torch.lerp(components.mean(dim=-1), components.amax(dim=-1), alpha)

    def extra_repr(self) -> str:
        return f"input_size={self.input_size}, dim_per_component={self.dim_per_component}"

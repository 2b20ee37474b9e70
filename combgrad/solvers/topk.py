"""``topk``: the k-hot mask of the k largest scores."""

from __future__ import annotations

import torch

from .._checks import check_positive_int
from .base import BatchSolver
from .registry import register


class TopK(BatchSolver):
    """k-hot ``y`` marking the ``k`` largest entries of each instance ``theta [*, n]``.

    Sense "max"; among equal scores the lower index is chosen first. Runs in torch
    on theta's device.

    Args:
        k: How many entries to select, ``1 <= k <= n``.

    Example:
        >>> import torch, combgrad as cg
        >>> cg.solvers.get("topk", k=2)(torch.tensor([0.5, 3.0, 0.5, 1.0]))
        tensor([0., 1., 0., 1.])
    """

    name = "topk"
    sense = "max"
    event_ndim = 1
    backends = ("torch",)

    def __init__(self, *, k: int) -> None:
        self.k = check_positive_int("topk", "k", k)

    def check_event(self, theta: torch.Tensor, event_shape: tuple[int, ...]) -> None:
        if event_shape[0] < self.k:
            raise ValueError(
                f"topk: theta's last dim must be at least k={self.k}, got shape {tuple(theta.shape)}"
            )

    def solve_torch(self, theta: torch.Tensor) -> torch.Tensor:
        # torch.topk is fast but promises nothing about ties, so it only finds the
        # k-th largest value. Where exactly k entries reach it, they are the answer;
        # elsewhere entries equal to it fill the remaining places in index order.
        kth_largest = torch.topk(theta, self.k, dim=-1, sorted=False).values.amin(dim=-1, keepdim=True)
        chosen = theta >= kth_largest
        tied = chosen.sum(dim=-1) != self.k
        if bool(tied.any()):
            rows = theta[tied]
            above = rows > kth_largest[tied]
            at = rows == kth_largest[tied]
            places_left = self.k - above.sum(dim=-1, keepdim=True)
            chosen[tied] = above | (at & (at.cumsum(dim=-1) <= places_left))
        return chosen.to(theta.dtype)

    def __repr__(self) -> str:
        return f"TopK(k={self.k})"


register("topk", TopK)

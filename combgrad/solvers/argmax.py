"""``argmax``: the one-hot of the largest score."""

from __future__ import annotations

import torch

from .base import BatchSolver
from .registry import register


class Argmax(BatchSolver):
    """One-hot ``y`` with a 1 at the largest entry of each instance ``theta [*, n]``.

    Sense "max"; ties go to the lower index. Runs in torch on theta's device.

    Example:
        >>> import torch, combgrad as cg
        >>> cg.solvers.get("argmax")(torch.tensor([0.1, 2.0, 2.0]))
        tensor([0., 1., 0.])
    """

    name = "argmax"
    sense = "max"
    event_ndim = 1
    backends = ("torch",)

    def check_event(self, theta: torch.Tensor, event_shape: tuple[int, ...]) -> None:
        if event_shape[0] < 1:
            raise ValueError(f"argmax: theta must have at least 1 entry per instance, got shape {tuple(theta.shape)}")

    def solve_torch(self, theta: torch.Tensor) -> torch.Tensor:
        # torch.argmax returns the first maximal index, which is the documented tie rule.
        index = theta.argmax(dim=-1, keepdim=True)
        return torch.zeros_like(theta).scatter_(-1, index, 1.0)


register("argmax", Argmax)

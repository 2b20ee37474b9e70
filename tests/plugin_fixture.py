"""A stand-in third-party solver, loaded through a faked ``combgrad.solvers`` entry point.

Importing this module has no side effects; ``plugin_fixture_registering`` is the
variant whose import registers a solver, the other form an entry point may take.
"""

import torch

from combgrad.solvers import BatchSolver


class PluginArgmin(BatchSolver):
    """One-hot of the smallest entry of ``theta [*, n]`` (sense "min"), in torch."""

    name = "plugin_argmin"
    sense = "min"
    event_ndim = 1

    def __init__(self, *, offset: float = 0.0) -> None:
        self.offset = offset

    def solve_flat(self, theta: torch.Tensor) -> torch.Tensor:
        index = theta.argmin(dim=-1, keepdim=True)
        return torch.zeros_like(theta).scatter_(-1, index, 1.0)

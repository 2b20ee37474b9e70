"""What a solver is, and the validation and batching that every solver shares.

A solver maps scores or costs ``theta [*batch, *event]`` to a discrete solution of
the same shape, ``y*(theta) = argmax_y <theta, y>`` (sense "max") or argmin (sense
"min"). Leading dims are batch dims. :class:`BatchSolver` does the boundary work
once for all built-in solvers: type, finiteness and shape checks, flattening the
batch, the CPU/float64 numpy round trip, and returning on theta's device and dtype.
"""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from .._checks import Sense, check_theta


@runtime_checkable
class Solver(Protocol):
    """The solver contract: ``y = solver(theta)`` over ``event_ndim`` trailing dims."""

    name: str
    sense: Sense
    event_ndim: int

    def __call__(self, theta: torch.Tensor) -> torch.Tensor: ...


class BatchSolver:
    """Base class for solvers that run on one flat batch ``[B, *event]``.

    Subclasses set ``name``, ``sense`` and ``event_ndim``, may override
    :meth:`check_event` for problem-specific checks, and implement either
    :meth:`solve_batch` on a float64 numpy array (numba and Python kernels; it is a
    fresh copy, so the caller's tensor is never modified) or, for torch-native
    solvers that run on theta's own device, :meth:`solve_flat`.
    """

    name: str
    sense: Sense
    event_ndim: int

    def __call__(self, theta: torch.Tensor) -> torch.Tensor:
        """Solve every instance of ``theta [*batch, *event]``; returns ``y`` of the same shape."""
        check_theta(self.name, theta, self.event_ndim)
        event_shape = tuple(theta.shape[theta.ndim - self.event_ndim :])
        batch_shape = tuple(theta.shape[: theta.ndim - self.event_ndim])
        self.check_event(theta, event_shape)
        # An explicit batch size: reshape(-1, ...) is ambiguous when an event dim is 0.
        flat = theta.detach().reshape(math.prod(batch_shape), *event_shape)
        if flat.shape[0] == 0:
            y = torch.zeros_like(flat)
        else:
            y = self.solve_flat(flat)
        return y.reshape(*batch_shape, *event_shape).to(device=theta.device, dtype=theta.dtype)

    def solve_flat(self, theta: torch.Tensor) -> torch.Tensor:
        """Solve ``theta [B, *event]`` (B >= 1, detached); return ``y [B, *event]``.

        The default runs :meth:`solve_batch` on a float64 CPU copy.
        """
        # copy=True: a float64 CPU theta would otherwise be shared with the kernel,
        # which may then write into the caller's tensor (or return it as y).
        array = theta.to(
            "cpu", torch.float64, copy=True, memory_format=torch.contiguous_format
        ).numpy()
        return torch.from_numpy(np.asarray(self.solve_batch(array)))

    def check_event(self, theta: torch.Tensor, event_shape: tuple[int, ...]) -> None:
        """Raise ValueError if ``event_shape`` (or theta's values) suit no instance."""

    def solve_batch(self, theta: np.ndarray) -> np.ndarray:
        """Solve ``theta [B, *event]`` (float64, C-contiguous); return ``y [B, *event]``."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, sense={self.sense!r})"

"""``argmax``: the one-hot of the largest score.

Two kernels: ``torch.argmax`` on theta's own device (``"torch"``) and a numba
scan on the host (``"numba"``), run over the batch by
:func:`combgrad.solvers.parallel.run_batch`; both return the first maximal index.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit, prange

from .base import BatchSolver
from .parallel import chunk_range, run_batch
from .registry import register


@njit(cache=True)
def _solve_range(theta, out, start, stop):
    """Instances ``start:stop`` of ``theta [B, n]`` into the zeroed uint8 one-hots ``out [B, n]``."""
    for index in range(start, stop):
        row = theta[index]
        best = 0
        for entry in range(1, row.shape[0]):
            # Strict comparison: the first maximal entry wins ties.
            if row[entry] > row[best]:
                best = entry
        out[index, best] = 1


@njit(cache=True, parallel=True)
def _solve_chunks(theta, out, chunks):
    """The batch cut into ``chunks`` contiguous ranges, one per thread (see :mod:`.parallel`)."""
    for chunk in prange(chunks):
        start, stop = chunk_range(chunk, out.shape[0], chunks)
        _solve_range(theta, out, start, stop)


# Estimated serial time of one entry of the scan (benchmarks/threads.py --calibrate style).
SECONDS_PER_ENTRY = 1e-9


class Argmax(BatchSolver):
    """One-hot ``y`` with a 1 at the largest entry of each instance ``theta [*, n]``.

    Sense "max"; ties go to the lower index, on both backends.

    Args:
        backend: ``"auto"`` (default: ``"torch"``; on the CPU the two measured
            within 0.7-1.4x of each other, and torch needs no float64 host
            copy), ``"torch"`` (``torch.argmax`` on theta's device) or
            ``"numba"`` (a scan on the host; a CUDA theta is copied there and
            back).

    Example:
        >>> import torch, combgrad as cg
        >>> cg.solvers.get("argmax")(torch.tensor([0.1, 2.0, 2.0]))
        tensor([0., 1., 0.])
        >>> cg.solvers.get("argmax", backend="numba")(torch.tensor([0.1, 2.0, 2.0]))
        tensor([0., 1., 0.])
    """

    name = "argmax"
    sense = "max"
    event_ndim = 1
    # torch first: "auto" on the CPU picks the first (benchmarks/gpu.py --dry, README).
    backends = ("torch", "numba")

    def __init__(self, *, backend: str = "auto") -> None:
        self.set_backend(backend)

    def check_event(self, theta: torch.Tensor, event_shape: tuple[int, ...]) -> None:
        if event_shape[0] < 1:
            raise ValueError(f"argmax: theta must have at least 1 entry per instance, got shape {tuple(theta.shape)}")

    def solve_batch(self, theta: np.ndarray) -> np.ndarray:
        out = np.zeros(theta.shape, dtype=np.uint8)
        return run_batch(_solve_range, _solve_chunks, (theta,), out, SECONDS_PER_ENTRY * theta.shape[1])

    def solve_torch(self, theta: torch.Tensor) -> torch.Tensor:
        # torch.argmax returns the first maximal index, which is the documented tie rule.
        index = theta.argmax(dim=-1, keepdim=True)
        return torch.zeros_like(theta).scatter_(-1, index, 1.0)

    def __repr__(self) -> str:
        return f"Argmax(backend={self.backend!r})"


register("argmax", Argmax)

"""``topk``: the k-hot mask of the k largest scores.

Two kernels: ``torch.topk`` on theta's own device (``"torch"``) and a numba
partition on the host (``"numba"``), run over the batch by
:func:`combgrad.solvers.parallel.run_batch`; both take the lower index first
among equal scores.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit, prange

from .._checks import check_positive_int
from .base import BatchSolver
from .parallel import chunk_range, run_batch
from .registry import register

@njit(cache=True)
def _sift_down(heap, size, position):
    """Restore the min-heap order of ``heap[:size]`` below ``position``."""
    value = heap[position]
    while True:
        child = 2 * position + 1
        if child >= size:
            break
        if child + 1 < size and heap[child + 1] < heap[child]:
            child += 1
        if heap[child] >= value:
            break
        heap[position] = heap[child]
        position = child
    heap[position] = value


@njit(cache=True)
def _kth_largest(row, k, heap):
    """The ``k``-th largest entry of ``row [n]``, in ``O(n log min(k, n - k + 1))``.

    A min-heap of the ``m`` largest entries of ``sign * row`` seen so far has
    the ``m``-th largest at its root. The ``k``-th largest of ``row`` is its
    ``(n - k + 1)``-th smallest, i.e. minus the ``(n - k + 1)``-th largest of
    ``-row``, so the smaller of the two heaps is used (negation is exact).
    ``heap`` is scratch of at least ``min(k, n - k + 1)`` entries.
    """
    n = row.shape[0]
    sign = 1.0
    size = k
    if n - k + 1 < k:
        sign = -1.0
        size = n - k + 1
    for entry in range(size):
        heap[entry] = sign * row[entry]
    for position in range(size // 2 - 1, -1, -1):
        _sift_down(heap, size, position)
    for entry in range(size, n):
        value = sign * row[entry]
        if value > heap[0]:
            heap[0] = value
            _sift_down(heap, size, 0)
    return sign * heap[0]


@njit(cache=True)
def _solve_range(theta, k, out, start, stop):
    """Instances ``start:stop`` of ``theta [B, n]`` into the zeroed uint8 k-hot masks ``out [B, n]``."""
    n = theta.shape[1]
    heap = np.empty(min(k, n - k + 1), dtype=np.float64)  # scratch, once per range
    for index in range(start, stop):
        row = theta[index]
        kth_largest = _kth_largest(row, k, heap)
        places_left = k
        for entry in range(n):
            places_left -= row[entry] > kth_largest
        # Entries above the k-th largest are all chosen; entries equal to it fill
        # the remaining places in index order (the lower index first).
        for entry in range(n):
            if row[entry] > kth_largest:
                out[index, entry] = 1
            elif row[entry] == kth_largest and places_left > 0:
                out[index, entry] = 1
                places_left -= 1


@njit(cache=True, parallel=True)
def _solve_chunks(theta, k, out, chunks):
    """The batch cut into ``chunks`` contiguous ranges, one per thread (see :mod:`.parallel`)."""
    for chunk in prange(chunks):
        start, stop = chunk_range(chunk, out.shape[0], chunks)
        _solve_range(theta, k, out, start, stop)


# Estimated serial time per entry (heap selection and two scans), n = 1000, k = 10.
SECONDS_PER_ENTRY = 5e-9



class TopK(BatchSolver):
    """k-hot ``y`` marking the ``k`` largest entries of each instance ``theta [*, n]``.

    Sense "max"; among equal scores the lower index is chosen first, on both
    backends.

    Args:
        k: How many entries to select, ``1 <= k <= n``.
        backend: ``"auto"`` (default: ``"torch"``, which is also the faster on
            the CPU), ``"torch"`` (``torch.topk`` on theta's device) or
            ``"numba"`` (a heap selection on the host; a CUDA theta is copied there
            and back).

    Example:
        >>> import torch, combgrad as cg
        >>> cg.solvers.get("topk", k=2)(torch.tensor([0.5, 3.0, 0.5, 1.0]))
        tensor([0., 1., 0., 1.])
    """

    name = "topk"
    sense = "max"
    event_ndim = 1
    # torch first: "auto" on the CPU picks the first (see README, Solvers: backends).
    backends = ("torch", "numba")

    def __init__(self, *, k: int, backend: str = "auto") -> None:
        self.k = check_positive_int("topk", "k", k)
        self.set_backend(backend)

    def check_event(self, theta: torch.Tensor, event_shape: tuple[int, ...]) -> None:
        if event_shape[0] < self.k:
            raise ValueError(
                f"topk: theta's last dim must be at least k={self.k}, got shape {tuple(theta.shape)}"
            )

    def solve_batch(self, theta: np.ndarray) -> np.ndarray:
        out = np.zeros(theta.shape, dtype=np.uint8)
        return run_batch(_solve_range, _solve_chunks, (theta, self.k), out, SECONDS_PER_ENTRY * theta.shape[1])

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
        return f"TopK(k={self.k}, backend={self.backend!r})"


register("topk", TopK)

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
def _quickselect(values, position, rounds):
    """``(True, v)``: ``v`` is the entry at ``position`` of ``values`` sorted ascending.

    Hoare's selection on the scratch copy ``values`` (reordered in place), with a
    median-of-three pivot and a three-way partition (equal entries, common in
    ties, are settled at once). Expected ``O(n)``; after ``rounds`` partitions
    without an answer it gives up, ``(False, 0.0)``, so that an adversarial
    input falls back to the heap's ``O(n log k)`` bound.
    """
    low, high = 0, values.shape[0] - 1
    for _ in range(rounds):
        if low >= high:
            return True, values[position]
        first, middle, last = values[low], values[(low + high) // 2], values[high]
        pivot = max(min(first, middle), min(max(first, middle), last))
        below, entry, above = low, low, high
        while entry <= above:
            value = values[entry]
            if value < pivot:
                values[entry], values[below] = values[below], value
                below += 1
                entry += 1
            elif value > pivot:
                values[entry], values[above] = values[above], value
                above -= 1
            else:
                entry += 1
        # Now values[low:below] < pivot, values[below:above + 1] == pivot, values[above + 1:high + 1] > pivot.
        if position < below:
            high = below - 1
        elif position > above:
            low = above + 1
        else:
            return True, pivot
    return False, 0.0


@njit(cache=True)
def _solve_range(theta, k, out, start, stop):
    """Instances ``start:stop`` of ``theta [B, n]`` into the zeroed uint8 k-hot masks ``out [B, n]``."""
    n = theta.shape[1]
    heap = np.empty(min(k, n - k + 1), dtype=np.float64)  # scratch, once per range
    values = np.empty(n, dtype=np.float64)
    rounds = 4 * int(np.log2(n + 1)) + 8
    for index in range(start, stop):
        row = theta[index]
        if heap.shape[0] <= 100:
            # Measured on n = 1000 (one process, 1,024 rows): the heap takes 0.2x
            # quickselect's time at k = 20, 1.05x at k = 100, 1.75x at k = 500.
            kth_largest = _kth_largest(row, k, heap)
        else:
            values[:] = row
            found, kth_largest = _quickselect(values, n - k, rounds)
            if not found:
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


# Estimated serial time per entry (selection and two scans), n = 1000.
SECONDS_PER_ENTRY = 5e-9



class TopK(BatchSolver):
    """k-hot ``y`` marking the ``k`` largest entries of each instance ``theta [*, n]``.

    Sense "max"; among equal scores the lower index is chosen first, on both
    backends.

    Args:
        k: How many entries to select, ``1 <= k <= n``.
        backend: ``"auto"`` (default: ``"torch"`` for a theta off the CPU,
            ``"numba"`` on the CPU, where it measured 2.8-3.2x faster at
            k = 10 and k = 990 and on par at k = 500, n = 1000),
            ``"numba"`` (a selection on the host; a CUDA theta is copied there
            and back) or ``"torch"`` (``torch.topk`` on theta's device).

    Example:
        >>> import torch, combgrad as cg
        >>> cg.solvers.get("topk", k=2)(torch.tensor([0.5, 3.0, 0.5, 1.0]))
        tensor([0., 1., 0., 1.])
    """

    name = "topk"
    sense = "max"
    event_ndim = 1
    # numba first: "auto" on the CPU picks the first (benchmarks/gpu.py --dry, README).
    backends = ("numba", "torch")

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
        # k-th largest value: entries above it are chosen, and entries equal to it
        # fill the remaining places in index order. Done for every row, without
        # first asking which rows have ties: that question is a host sync on a GPU.
        kth_largest = torch.topk(theta, self.k, dim=-1, sorted=False).values.amin(dim=-1, keepdim=True)
        above = theta > kth_largest
        at = theta == kth_largest
        places_left = self.k - above.sum(dim=-1, keepdim=True)
        chosen = above | (at & (at.cumsum(dim=-1) <= places_left))
        return chosen.to(theta.dtype)

    def __repr__(self) -> str:
        return f"TopK(k={self.k}, backend={self.backend!r})"


register("topk", TopK)

"""``knapsack``: the 0/1 knapsack with integer weights, solved exactly by dynamic programming.

Two kernels run the same DP over the capacity: the "numba" one per instance,
over the batch by :func:`combgrad.solvers.parallel.run_batch` (serial for small
batches, threads for large ones); the "torch" one across the batch at once, a
``[B, capacity + 1]`` value table updated item by item on theta's device (the
weights are shared by the batch, so each item is one shifted slice), then a
vectorised walk back through the ``[B, n, capacity + 1]`` decisions. Fractional data is scaled to integers with ``constraint_scale``
as in the ``ilp`` solver.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from numba import njit, prange

from .._checks import check_number, check_positive_int, scaled_integers
from .base import BatchSolver, check_sum_magnitude
from .parallel import chunk_range, run_batch
from .registry import register

# The DP keeps an n x (capacity + 1) table of decisions per instance, one byte a
# cell, in each thread; beyond this it is a job for the `ilp` solver.
MAX_TABLE_CELLS = 2**27


@njit(cache=True)
def _knapsack_one(
    values: np.ndarray, weights: np.ndarray, capacity: int, out: np.ndarray, best: np.ndarray, take: np.ndarray
) -> None:
    """Write into ``out [n]`` (zeros) the 0/1 selection of greatest value within ``capacity``.

    ``best[c]`` is the greatest value of a selection among the items seen so far
    with total weight at most ``c``; ``take[i, c]`` records whether item ``i``
    strictly improved it, which is enough to walk the optimal selection back.
    ``best [capacity + 1]`` and ``take [n, capacity + 1]`` are scratch buffers
    owned by the calling thread.
    """
    n = values.shape[0]
    best[:] = 0.0
    take[:, :] = False
    for i in range(n):
        value = values[i]
        weight = weights[i]
        # Items of value <= 0 never improve strictly, so they are never taken.
        if value <= 0.0 or weight > capacity:
            continue
        # Downwards, so that best[c - weight] still excludes item i.
        for c in range(capacity, weight - 1, -1):
            candidate = best[c - weight] + value
            if candidate > best[c]:
                best[c] = candidate
                take[i, c] = True
    c = capacity
    for i in range(n - 1, -1, -1):
        if take[i, c]:
            out[i] = 1.0
            c -= weights[i]


@njit(cache=True)
def _solve_range(values: np.ndarray, weights: np.ndarray, capacity: int, out: np.ndarray, start: int, stop: int) -> None:
    """Instances ``start:stop`` of ``values [B, n]`` into the zeroed selections ``out [B, n]``."""
    # The DP table is allocated once per range rather than once per instance.
    best = np.empty(capacity + 1)
    take = np.empty((values.shape[1], capacity + 1), np.bool_)
    for index in range(start, stop):
        _knapsack_one(values[index], weights, capacity, out[index], best, take)


@njit(cache=True, parallel=True)
def _solve_chunks(values: np.ndarray, weights: np.ndarray, capacity: int, out: np.ndarray, chunks: int) -> None:
    """The batch cut into ``chunks`` contiguous ranges, one per thread (see :mod:`.parallel`)."""
    for chunk in prange(chunks):
        start, stop = chunk_range(chunk, out.shape[0], chunks)
        _solve_range(values, weights, capacity, out, start, stop)


# Estimated serial time of one DP cell (one item at one capacity): about
# 0.75 ns with 50 items (benchmarks/threads.py --calibrate).
SECONDS_PER_CELL = 0.8e-9


# The torch kernel solves the batch in chunks whose decision tables hold at most
# this many cells (one byte each), so memory stays bounded for any batch size.
MAX_TORCH_CHUNK_CELLS = 2**28


def _knapsack_torch(values: torch.Tensor, weights: list[int], capacity: int) -> torch.Tensor:
    """The torch kernel: 0/1 selections ``y [B, n]`` for ``values [B, n]``, all instances at once.

    The DP of :func:`_knapsack_one` with the batch as the vectorised dim: the
    same additions and strict comparisons, item by item, so in float64 it takes
    exactly numba's decisions (its tie rule included). Half precision is widened
    to float32; float32 and float64 stay as they are.
    """
    if values.dtype not in (torch.float32, torch.float64):
        values = values.float()
    batch, n = values.shape
    best = torch.zeros(batch, capacity + 1, dtype=values.dtype, device=values.device)
    take = torch.zeros(batch, n, capacity + 1, dtype=torch.bool, device=values.device)
    for item, weight in enumerate(weights):
        if weight > capacity:
            continue
        # The candidate is computed from the table before this item, like numba's
        # downward loop; values <= 0 never improve strictly (best is non-decreasing
        # in the capacity), so, as in numba, such items are never taken.
        candidate = best[:, : capacity + 1 - weight] + values[:, item : item + 1]
        improve = candidate > best[:, weight:]
        take[:, item, weight:] = improve
        best[:, weight:] = torch.where(improve, candidate, best[:, weight:])
    y = torch.zeros(batch, n, dtype=values.dtype, device=values.device)
    left = torch.full((batch, 1), capacity, dtype=torch.long, device=values.device)
    for item in range(n - 1, -1, -1):
        taken = take[:, item].gather(1, left)
        y[:, item : item + 1] = taken.to(values.dtype)
        left = left - taken.long() * weights[item]
    return y


# Why weights must be integers, for the error message.
_INTEGER_REASON = "the dynamic program indexes its table by total weight"


def _check_weights(weights: object, scale: float) -> np.ndarray:
    """``weights * scale`` as a 1-D int64 array, or raise ValueError saying what is wrong."""
    if isinstance(weights, torch.Tensor):
        array = weights.detach().cpu().numpy()
    else:
        try:
            array = np.asarray(weights)
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"knapsack: weights must be a 1-D sequence of numbers, got {weights!r} ({error})"
            ) from None
    if array.dtype == np.bool_ or not (
        np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
    ):
        raise ValueError(
            f"knapsack: weights must be integers (or integral floats), got dtype {array.dtype}"
        )
    if array.ndim != 1 or array.shape[0] < 1:
        raise ValueError(
            f"knapsack: weights must be 1-D with at least one item, got shape {array.shape}"
        )
    as_float = array.astype(np.float64)
    if not np.isfinite(as_float).all():
        raise ValueError(f"knapsack: weights must be finite, got {array.tolist()}")
    if (as_float < 0).any():
        raise ValueError(f"knapsack: weights must be non-negative, got {array.tolist()}")
    if np.issubdtype(array.dtype, np.integer) and scale == 1.0:
        # Exact already; a float64 round trip would lose integers above 2**53.
        if (array > 2**53).any():
            raise ValueError(f"knapsack: weights must hold integers of magnitude <= 2**53, got {array.max()}")
        return array.astype(np.int64)
    return scaled_integers("knapsack", "weights", as_float, scale, "constraint_scale", reason=_INTEGER_REASON)


def _check_capacity(capacity: object, scale: float) -> int:
    """``capacity * scale`` as an int, or raise ValueError."""
    if isinstance(capacity, (int, np.integer)) and not isinstance(capacity, bool) and scale == 1.0:
        value = check_positive_int("knapsack", "capacity", capacity, minimum=0)
        if value > 2**53:
            raise ValueError(f"knapsack: capacity must be an integer of magnitude <= 2**53, got {value}")
        return value
    number = check_number("knapsack", "capacity", capacity, nonnegative=True)
    scaled = scaled_integers(
        "knapsack", "capacity", np.array([number]), scale, "constraint_scale", reason=_INTEGER_REASON
    )
    return int(scaled[0])


class Knapsack(BatchSolver):
    """The 0/1 selection ``y [*, n]`` of greatest value ``<theta, y>`` within a weight budget.

    Item ``i`` has value ``theta[..., i]`` and weight ``weights[i]``; the selection's
    total weight is at most ``capacity``. Sense "max". Exact, by dynamic programming
    over the capacity, O(n * capacity) time per instance. Items of value <= 0 are never taken (leaving them out never lowers
    the value), so perturbed scores can be passed as they are.

    Weights and capacity must be non-negative integers after multiplying them by
    ``constraint_scale`` (default 1), as for the ``ilp`` solver's constraints:
    pass ``constraint_scale=100`` for data with two decimals. The scaled data is
    rounded to the nearest integer, and refused (ValueError) where it lies more
    than 1e-9 (relative) away from one, so ``100 * 4.61 = 461.00000000000006`` is
    read as 461 while really fractional data is never changed silently. (Do not
    round with ``np.ceil(100 * w)``: it turns 4.61 into 462.) Multiplying the
    constraint by a positive factor keeps its solutions. The ``weights`` and
    ``capacity`` attributes hold the scaled integers. The table behind the DP has
    ``n * (c + 1)`` cells, where ``c = min(capacity, sum(weights))`` after
    scaling; more than 2**27 is refused (use the ``ilp`` solver for such
    instances).

    Ties: among selections of equal value, items are decided from the last to the
    first, and each is left out whenever an optimal selection of the items before
    it exists without it; that is, the result minimizes
    ``(y[n-1], y[n-2], ..., y[0])`` lexicographically among the optimal selections,
    so equal items are taken lowest index first. Values are compared exactly in
    float64, so selections whose values differ only by rounding are not ties.
    The torch backend follows the same rule in theta's precision (float64, or
    float32 for float32 and narrower dtypes): in float64 it returns numba's
    selection; for float32 theta its sums are rounded to float32, so where two
    selections' values differ by less than that rounding it may return the other.

    Backends: ``"numba"`` (compiled DP per instance, threads over the batch; the
    faster one on the CPU, so ``"auto"`` picks it there) and ``"torch"`` (the DP
    vectorised across the batch on theta's device, no host copy; ``"auto"`` picks
    it for a CUDA theta). The torch kernel keeps a ``B x n x (c + 1)`` table of
    byte decisions, in batch chunks of at most 2**28 cells.

    Args:
        weights: Item weights ``[n]``: a tensor, ndarray or sequence of non-negative
            numbers, integers after multiplying by ``constraint_scale``.
        capacity: The weight budget, a number >= 0, an integer after multiplying
            by ``constraint_scale``.
        constraint_scale: Positive factor applied to ``weights`` and ``capacity``
            before the integrality check; default 1.
        backend: ``"auto"`` (the default: ``"torch"`` for a CUDA theta, else
            ``"numba"``), ``"numba"`` or ``"torch"``: which kernel solves the batch.

    Raises:
        ValueError: If ``weights``, ``capacity`` or ``backend`` is invalid, or (on call) if
            theta's last dim is not ``n``, or theta is not finite or so large that
            a sum of n values overflows float64.

    Example:
        >>> import torch, combgrad as cg
        >>> solver = cg.solvers.get("knapsack", weights=[3, 4, 2], capacity=5)
        >>> solver(torch.tensor([4.0, 5.0, 3.0]))
        tensor([1., 0., 1.])
        >>> decimal = cg.solvers.get("knapsack", weights=[4.61, 2.5], capacity=7.11, constraint_scale=100)
        >>> decimal.weights.tolist(), decimal.capacity
        ([461, 250], 711)
        >>> cg.solvers.get("knapsack", weights=[3, 4, 2], capacity=5, backend="torch")(torch.tensor([4.0, 5.0, 3.0]))
        tensor([1., 0., 1.])
    """

    name = "knapsack"
    sense = "max"
    event_ndim = 1
    backends = ("numba", "torch")

    def __init__(
        self,
        *,
        weights: torch.Tensor | np.ndarray | Sequence[float],
        capacity: float,
        constraint_scale: float = 1.0,
        backend: str = "auto",
    ) -> None:
        self.set_backend(backend)
        scale = check_number("knapsack", "constraint_scale", constraint_scale, positive=True)
        self.weights = _check_weights(weights, scale)
        self.capacity = _check_capacity(capacity, scale)
        # A budget above the total weight buys nothing; capping it keeps the table small.
        total = sum(int(weight) for weight in self.weights)
        self._table_capacity = min(self.capacity, total)
        cells = self.weights.shape[0] * (self._table_capacity + 1)
        if cells > MAX_TABLE_CELLS:
            raise ValueError(
                f"knapsack: n * (min(capacity, sum(weights)) + 1) must be at most "
                f"{MAX_TABLE_CELLS} table cells, got {cells}; divide weights and capacity "
                "by a common factor, or use the 'ilp' solver"
            )

    def check_event(self, theta: torch.Tensor, event_shape: tuple[int, ...]) -> None:
        if event_shape[0] != self.weights.shape[0]:
            raise ValueError(
                f"knapsack: theta's last dim must equal len(weights)={self.weights.shape[0]}, "
                f"got shape {tuple(theta.shape)}"
            )
        # A selection's value, a sum of up to n scores, must not overflow float64.
        check_sum_magnitude("knapsack", "theta", theta, event_shape[0], f"a selection of {event_shape[0]} items")

    def solve_batch(self, theta: np.ndarray) -> np.ndarray:
        out = np.zeros_like(theta)
        work = SECONDS_PER_CELL * theta.shape[1] * (self._table_capacity + 1)
        return run_batch(_solve_range, _solve_chunks, (theta, self.weights, self._table_capacity), out, work)

    def solve_torch(self, theta: torch.Tensor) -> torch.Tensor:
        weights = [int(weight) for weight in self.weights]
        cells = theta.shape[1] * (self._table_capacity + 1)
        chunk = max(1, MAX_TORCH_CHUNK_CELLS // cells)
        return torch.cat(
            [_knapsack_torch(part, weights, self._table_capacity) for part in theta.split(chunk)]
        )

    def __repr__(self) -> str:
        # The scaled integers: this recreates an equivalent solver.
        text = f"Knapsack(weights={self.weights.tolist()}, capacity={self.capacity}"
        return text + (")" if self.backend == "auto" else f", backend={self.backend!r})")


register("knapsack", Knapsack)

"""``knapsack``: the 0/1 knapsack with integer weights, solved exactly by dynamic programming."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from numba import njit, prange

from .._checks import check_positive_int
from .base import BatchSolver
from .registry import register

# The DP keeps an n x (capacity + 1) table of decisions per instance, one byte a
# cell, in each thread; beyond this it is a job for the `ilp` solver.
MAX_TABLE_CELLS = 2**27


@njit(cache=True)
def _knapsack_one(values: np.ndarray, weights: np.ndarray, capacity: int, out: np.ndarray) -> None:
    """Write into ``out [n]`` (zeros) the 0/1 selection of greatest value within ``capacity``.

    ``best[c]`` is the greatest value of a selection among the items seen so far
    with total weight at most ``c``; ``take[i, c]`` records whether item ``i``
    strictly improved it, which is enough to walk the optimal selection back.
    """
    n = values.shape[0]
    best = np.zeros(capacity + 1)
    take = np.zeros((n, capacity + 1), np.bool_)
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


@njit(cache=True, parallel=True)
def _knapsack_batch(values: np.ndarray, weights: np.ndarray, capacity: int) -> np.ndarray:
    """Solve every instance of ``values [B, n]``; returns the selections ``y [B, n]``."""
    out = np.zeros_like(values)
    for b in prange(values.shape[0]):
        _knapsack_one(values[b], weights, capacity, out[b])
    return out


def _check_weights(weights: object) -> np.ndarray:
    """Return ``weights`` as a 1-D int64 array, or raise ValueError saying what is wrong."""
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
    if (as_float != np.floor(as_float)).any():
        raise ValueError(
            "knapsack: weights must be integers; scale fractional weights and the "
            "capacity by a common factor and round, e.g. weights=np.ceil(100 * w) "
            f"and capacity=math.floor(100 * capacity) for two decimals, got {array.tolist()}"
        )
    if (as_float > 2.0**53).any():
        raise ValueError(
            f"knapsack: weights must be at most 2**53, got max {as_float.max():.6g}"
        )
    return array.astype(np.int64)


class Knapsack(BatchSolver):
    """The 0/1 selection ``y [*, n]`` of greatest value ``<theta, y>`` within a weight budget.

    Item ``i`` has value ``theta[..., i]`` and weight ``weights[i]``; the selection's
    total weight is at most ``capacity``. Sense "max". Exact, by dynamic programming
    over the capacity, O(n * capacity) time per instance, in numba, parallel over
    the batch. Items of value <= 0 are never taken (leaving them out never lowers
    the value), so perturbed scores can be passed as they are.

    Weights must be non-negative integers: scale fractional weights yourself, by
    multiplying weights and capacity by the same factor and rounding (e.g.
    ``weights=np.ceil(100 * w)``, ``capacity=math.floor(100 * capacity)`` for two
    decimals; rounding weights up and the capacity down keeps every selection
    feasible for the original data). The table behind the DP has ``n * (c + 1)`` cells, where
    ``c = min(capacity, sum(weights))``; more than 2**27 is refused (use the ``ilp``
    solver for such instances).

    Ties: among selections of equal value, items are decided from the last to the
    first, and each is left out whenever an optimal selection of the items before
    it exists without it; that is, the result minimizes
    ``(y[n-1], y[n-2], ..., y[0])`` lexicographically among the optimal selections,
    so equal items are taken lowest index first. Values are compared exactly in
    float64, so selections whose values differ only by rounding are not ties.

    Args:
        weights: Item weights ``[n]``: a tensor, ndarray or sequence of non-negative
            integers (or floats that are integers).
        capacity: The weight budget, an integer >= 0.

    Raises:
        ValueError: If ``weights`` or ``capacity`` is invalid, or (on call) if
            theta's last dim is not ``n``, or theta is not finite or so large that
            a sum of n values overflows float64.

    Example:
        >>> import torch, combgrad as cg
        >>> solver = cg.solvers.get("knapsack", weights=[3, 4, 2], capacity=5)
        >>> solver(torch.tensor([4.0, 5.0, 3.0]))
        tensor([1., 0., 1.])
    """

    name = "knapsack"
    sense = "max"
    event_ndim = 1

    def __init__(self, *, weights: torch.Tensor | np.ndarray | Sequence[float], capacity: int) -> None:
        self.weights = _check_weights(weights)
        self.capacity = check_positive_int("knapsack", "capacity", capacity, minimum=0)
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
        if theta.numel():
            # A selection's value, a sum of up to n scores, must not overflow float64.
            limit = float(np.finfo(np.float64).max) / event_shape[0]
            largest = float(theta.detach().abs().max())
            if largest > limit:
                raise ValueError(
                    f"knapsack: theta's magnitude must be at most {limit:.3g} for {event_shape[0]} "
                    f"items (float64 sums), got {largest:.3g}; rescale theta"
                )

    def solve_batch(self, theta: np.ndarray) -> np.ndarray:
        return _knapsack_batch(theta, self.weights, self._table_capacity)

    def __repr__(self) -> str:
        return f"Knapsack(weights={self.weights.tolist()}, capacity={self.capacity})"


register("knapsack", Knapsack)

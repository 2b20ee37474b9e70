"""``shortest_path``: the cheapest path between two cells of a vertex-weighted grid.

This is the solver of the Warcraft shortest-path benchmark (Vlastelica et al.,
2020): every cell of an ``H x W`` map has a cost, a path moves between
neighbouring cells (4 or 8 of them), and its cost is the sum of the costs of all
the cells it visits, both ends included. The kernel is Dijkstra's algorithm with a
binary heap, compiled by numba and run over the batch by
:func:`combgrad.solvers.parallel.run_batch` (serial for small batches, threads
for large ones): the ``"numba"`` backend. The ``"torch"`` backend runs on
theta's own device (a GPU, or the CPU): batched Bellman-Ford sweeps (every cell
takes the cheapest of its neighbours' distances plus its own cost, all cells of
all instances at once) until nothing changes, then a predecessor walk back from
the target, vectorised across the batch.

References:
    E. W. Dijkstra. A note on two problems in connexion with graphs.
    Numerische Mathematik 1, 269-271, 1959.

    M. Vlastelica, A. Paulus, V. Musil, G. Martius, M. Rolinek. Differentiation of
    Blackbox Combinatorial Solvers. ICLR 2020.

    R. Bellman. On a routing problem. Quarterly of Applied Mathematics 16(1),
    87-90, 1958.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from numba import njit, prange

from .._checks import check_choice
from .base import BatchSolver, check_sum_magnitude
from .parallel import chunk_range, run_batch
from .registry import register

# Row and column steps to the neighbours of a cell. Their order does not change
# the result: a cell's predecessor depends only on the order in which cells are
# settled (see ShortestPath's tie rule), not on the order of relaxation.
_STEPS = {
    4: np.array([[-1, 0], [0, -1], [0, 1], [1, 0]], dtype=np.int64),
    8: np.array(
        [[-1, -1], [-1, 0], [-1, 1], [0, -1], [0, 1], [1, -1], [1, 0], [1, 1]], dtype=np.int64
    ),
}


@njit(cache=True, inline="always")
def _before(key_a: float, cell_a: int, key_b: float, cell_b: int) -> bool:
    # The heap orders entries by (distance, row-major cell index); the index makes
    # the settling order, and hence the returned path, deterministic.
    return key_a < key_b or (key_a == key_b and cell_a < cell_b)


@njit(cache=True)
def _heap_push(keys, cells, size, key, cell):
    position = size
    while position > 0:
        parent = (position - 1) >> 1
        if _before(keys[parent], cells[parent], key, cell):
            break
        keys[position] = keys[parent]
        cells[position] = cells[parent]
        position = parent
    keys[position] = key
    cells[position] = cell
    return size + 1


@njit(cache=True)
def _heap_pop(keys, cells, size):
    key = keys[0]
    cell = cells[0]
    size -= 1
    last_key = keys[size]
    last_cell = cells[size]
    position = 0
    while True:
        child = 2 * position + 1
        if child >= size:
            break
        right = child + 1
        if right < size and _before(keys[right], cells[right], keys[child], cells[child]):
            child = right
        if not _before(keys[child], cells[child], last_key, last_cell):
            break
        keys[position] = keys[child]
        cells[position] = cells[child]
        position = child
    keys[position] = last_key
    cells[position] = last_cell
    return key, cell, size


@njit(cache=True)
def _dijkstra_grid(costs, clip, source, target, offsets, out, cost, distance, predecessor, settled, keys, cells):
    """One instance: marks the path from ``source`` to ``target`` in ``out [H, W]``.

    The grid is held with a one-cell border, ``(H + 2) x (W + 2)`` row-major, whose
    cells count as settled: neighbours are then ``cell + offsets[k]`` with no
    bounds checks (about 15% faster than checking rows and columns). Padded
    indices keep the row-major order of the real cells, so the tie rule is
    unchanged. ``cost``, ``distance``, ``predecessor``, ``settled`` (padded size)
    and the heap arrays ``keys``, ``cells`` (``len(offsets) * H * W + 1``, one
    push per relaxation at most) are scratch buffers owned by the calling thread.
    """
    height, width = costs.shape
    stride = width + 2
    for cell in range((height + 2) * stride):
        settled[cell] = True
    for row in range(height):
        for col in range(width):
            cell = (row + 1) * stride + col + 1
            value = costs[row, col]
            cost[cell] = 0.0 if clip and value < 0.0 else value
            distance[cell] = np.inf
            predecessor[cell] = -1
            settled[cell] = False
    start = (source[0] + 1) * stride + source[1] + 1
    goal = (target[0] + 1) * stride + target[1] + 1
    distance[start] = cost[start]
    size = _heap_push(keys, cells, 0, cost[start], start)
    while size > 0:
        current, cell, size = _heap_pop(keys, cells, size)
        if settled[cell]:
            continue  # a stale entry left behind by a later improvement
        settled[cell] = True
        if cell == goal:
            break
        for step in range(offsets.shape[0]):
            neighbour = cell + offsets[step]
            if settled[neighbour]:
                continue
            candidate = current + cost[neighbour]
            # Strict improvement only: among equally cheap predecessors the one
            # settled first keeps the neighbour.
            if candidate < distance[neighbour]:
                distance[neighbour] = candidate
                predecessor[neighbour] = cell
                size = _heap_push(keys, cells, size, candidate, neighbour)
    cell = goal
    while cell != -1:
        out[cell // stride - 1, cell % stride - 1] = 1
        cell = predecessor[cell]


@njit(cache=True)
def _solve_range(costs, clip, source, target, steps, out, start, stop):
    """Instances ``start:stop`` of ``costs [B, H, W]`` into the zeroed uint8 masks ``out [B, H, W]``."""
    height, width = costs.shape[1:]
    padded = (height + 2) * (width + 2)
    offsets = steps[:, 0] * (width + 2) + steps[:, 1]
    # Scratch buffers are allocated once per range instead of once per instance.
    cost = np.empty(padded, dtype=np.float64)
    distance = np.empty(padded, dtype=np.float64)
    predecessor = np.empty(padded, dtype=np.int64)
    settled = np.empty(padded, dtype=np.bool_)
    keys = np.empty(steps.shape[0] * height * width + 1, dtype=np.float64)
    cells = np.empty(steps.shape[0] * height * width + 1, dtype=np.int64)
    for index in range(start, stop):
        _dijkstra_grid(
            costs[index], clip, source, target, offsets, out[index],
            cost, distance, predecessor, settled, keys, cells,
        )


@njit(cache=True, parallel=True)
def _solve_chunks(costs, clip, source, target, steps, out, chunks):
    """The batch cut into ``chunks`` contiguous ranges, one per thread (see :mod:`.parallel`)."""
    for chunk in prange(chunks):
        start, stop = chunk_range(chunk, out.shape[0], chunks)
        _solve_range(costs, clip, source, target, steps, out, start, stop)


# Estimated serial time of one relaxation (one neighbour of one cell), heap work
# included: 8-10 ns on 12x12 and 30x30 grids (benchmarks/threads.py --calibrate).
SECONDS_PER_RELAXATION = 9e-9


# The torch backend checks for convergence every this many sweeps: each check
# is a host sync (a comparison read back from the device), a sweep is a few
# element-wise kernels.
CHECK_EVERY = 8


def _torch_distances(
    costs: torch.Tensor, source: tuple[int, int], neighbourhood: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bellman-Ford sweeps over ``costs [B, H, W]`` (already clipped at 0) on their device.

    Everything is held negated, ``-distance`` and ``-cost``, on the padded grid
    ``(H + 2) x (W + 2)`` flattened row-major, whose border cells cost ``-inf``:
    a sweep is then a running maximum over contiguous shifted slices of one
    buffer (no bounds checks, no gather), and border cells stay ``-inf``. The
    8-neighbour maximum is separable (a 3-wide maximum along rows, then along
    columns: four element-wise kernels instead of eight). Negating is exact in
    IEEE arithmetic, so ``-(d + c) == (-d) - c`` and the distances are the ones
    a plain minimum would give. The cell's own value takes part in the
    maximum; that is harmless, as ``d + c >= d`` for ``c >= 0``.

    A Jacobi sweep ``t`` makes ``distance[v]`` the cheapest cost over paths of
    at most ``t`` steps, so the sweeps stop once one changes nothing (checked
    every :data:`CHECK_EVERY` sweeps: after ``k`` further sweeps the distances
    are unchanged exactly when none of them changed anything, since they only
    decrease), and at the latest after ``H * W`` sweeps (a shortest path has
    fewer steps).

    Returns:
        ``(negative_distance, level, negative_cost)``, each ``[B, (H + 2) * (W + 2)]``:
        ``level`` (int32) is the sweep of each cell's last improvement (0 for the
        source); the walk uses it to never step back onto a zero-cost plateau.
    """
    batch, height, width = costs.shape
    stride = width + 2
    size = (height + 2) * stride
    negative_cost = torch.full((batch, height + 2, stride), -math.inf, dtype=costs.dtype, device=costs.device)
    torch.neg(costs, out=negative_cost[:, 1:-1, 1:-1])
    negative_cost = negative_cost.reshape(batch, size)
    negative_distance = torch.full_like(negative_cost, -math.inf)
    start = (source[0] + 1) * stride + source[1] + 1
    negative_distance[:, start] = negative_cost[:, start]
    level = torch.zeros((batch, size), dtype=torch.int32, device=costs.device)
    # [low, high) runs from the first real cell to the last one: slices shifted
    # by one cell and one row in either direction stay inside the buffer.
    low, high = stride + 1, size - stride - 1
    inner = high - low
    distance_inner = negative_distance[:, low:high]
    cost_inner = negative_cost[:, low:high]
    level_inner = level[:, low:high]
    across = torch.empty((batch, size - 2), dtype=costs.dtype, device=costs.device)
    candidate = torch.empty((batch, inner), dtype=costs.dtype, device=costs.device)
    better = torch.empty((batch, inner), dtype=torch.bool, device=costs.device)
    row, col = source
    # No cell can settle before its hop distance from the source, so the first
    # check comes only after that many sweeps.
    if neighbourhood == 8:
        first_check = max(row, height - 1 - row, col, width - 1 - col)
    else:
        first_check = max(row, height - 1 - row) + max(col, width - 1 - col)
    snapshot: torch.Tensor | None = None
    for sweep in range(1, height * width + CHECK_EVERY + 1):
        if neighbourhood == 8:
            # across[i] = max over cells i - 1, i, i + 1 of the padded grid (index i + 1).
            torch.maximum(negative_distance[:, :-2], negative_distance[:, 2:], out=across)
            torch.maximum(across, negative_distance[:, 1:-1], out=across)
            # candidate[i] (cell low + i) = max of across over the rows above, at and below.
            torch.maximum(across[:, low - stride - 1 : high - stride - 1], across[:, low + stride - 1 : high + stride - 1], out=candidate)
            torch.maximum(candidate, across[:, low - 1 : high - 1], out=candidate)
        else:
            torch.maximum(negative_distance[:, low - stride : high - stride], negative_distance[:, low + stride : high + stride], out=candidate)
            torch.maximum(candidate, negative_distance[:, low - 1 : high - 1], out=candidate)
            torch.maximum(candidate, negative_distance[:, low + 1 : high + 1], out=candidate)
        candidate.add_(cost_inner)
        torch.gt(candidate, distance_inner, out=better)
        torch.maximum(distance_inner, candidate, out=distance_inner)
        level_inner.masked_fill_(better, sweep)
        if sweep >= first_check and (sweep - first_check) % CHECK_EVERY == 0:
            if snapshot is not None and torch.equal(distance_inner, snapshot):
                break
            snapshot = distance_inner.clone()
    return negative_distance, level, negative_cost


def _torch_walk(
    negative_distance: torch.Tensor,
    level: torch.Tensor,
    negative_cost: torch.Tensor,
    shape: tuple[int, int],
    source: tuple[int, int],
    target: tuple[int, int],
    neighbourhood: int,
) -> torch.Tensor:
    """The path masks ``[B, H, W]`` (bool), traced from ``target`` back to ``source``.

    At each step every instance moves, at once, to the first neighbour ``u`` of
    its current cell ``v`` (in row-major order) with ``d[u] + c[v] == d[v]``
    (in the sweeps' own arithmetic) and ``(d[u], level[u]) < (d[v], level[v])``.
    The neighbour through which ``v`` last improved satisfies both (for
    ``d[u] == d[v]`` its distance was already final then, so its level is
    lower), so a step always exists; the pair strictly decreases along the
    walk, so it never cycles on zero-cost plateaus and reaches the source in
    fewer than ``H * W`` steps.
    """
    height, width = shape
    batch = negative_distance.shape[0]
    device = negative_distance.device
    stride = width + 2
    steps = torch.as_tensor(_STEPS[neighbourhood], device=device)
    offsets = steps[:, 0] * stride + steps[:, 1]
    start = (source[0] + 1) * stride + source[1] + 1
    current = torch.full((batch, 1), (target[0] + 1) * stride + target[1] + 1, dtype=torch.int64, device=device)
    on_path = torch.zeros(negative_distance.shape, dtype=torch.bool, device=device)
    on_path.scatter_(1, current, True)
    for step in range(height * width):
        if step % CHECK_EVERY == 0 and not bool((current != start).any()):
            break  # one host sync every few steps, not one per step
        neighbours = current + offsets
        here = negative_distance.gather(1, current)
        there = negative_distance.gather(1, neighbours)
        # there > here is d[u] < d[v]; a lower level is only needed where they are equal.
        allowed = ((there + negative_cost.gather(1, current)) == here) & (
            (there > here) | (level.gather(1, neighbours) < level.gather(1, current))
        )
        # argmax returns the first maximal entry: the first allowed neighbour.
        previous = neighbours.gather(1, allowed.to(torch.uint8).argmax(1, keepdim=True))
        current = torch.where(current == start, current, previous)
        on_path.scatter_(1, current, True)
    return on_path.reshape(batch, height + 2, stride)[:, 1:-1, 1:-1]


def _check_cell(argument: str, value: object) -> tuple[int, int]:
    if (
        isinstance(value, (str, bytes))
        or not isinstance(value, Sequence)
        or len(value) != 2
        or not all(
            isinstance(index, (int, np.integer)) and not isinstance(index, bool) and index >= 0
            for index in value
        )
    ):
        raise ValueError(
            f"shortest_path: {argument} must be a (row, col) pair of non-negative integers, "
            f"got {value!r}"
        )
    return int(value[0]), int(value[1])


class ShortestPath(BatchSolver):
    """Cheapest path on a vertex-weighted grid, for each instance of ``costs [*, H, W]``.

    Sense "min". A path is a sequence of cells from ``source`` to ``target`` in
    which each cell neighbours the previous one (4 or 8 neighbours); its cost is
    the sum of the costs of every cell on it, both ends included. The output ``y``
    has costs' shape, dtype and device and holds 1 on the cells of the path and 0
    elsewhere, so ``(costs * y).sum((-2, -1))`` is the path's cost.

    Tie rule: Dijkstra settles, at each step, the unsettled cell with the
    smallest ``(tentative distance, row-major index r * W + c)``, and a cell's
    predecessor changes only on a strict improvement. Hence the predecessor of
    each cell on the returned path is the *first settled* neighbour through which
    the cell reaches its (floating-point) shortest distance. The search stops as
    soon as the target is settled.

    The ``"torch"`` backend returns a path of the same cost (both backends find
    the minimum over paths of the left-to-right floating-point sum of their
    cells' costs; the torch one sums float32 and narrower inputs in float32,
    numba every input in float64), but may pick another one among equally cheap
    paths. Its tie rule: walking back from the target, the predecessor of each
    cell ``v`` is its first neighbour ``u`` in row-major order with
    ``d[u] + c[v] == d[v]`` and, where ``d[u] == d[v]`` (zero costs), ``u``
    reached by fewer Bellman-Ford sweeps. On the CPU, 1 thread, it takes about
    2-2.6x numba's time (``benchmarks/gpu.py --dry``), so ``"auto"`` picks it only
    off the CPU: it is meant for GPUs.

    Negative costs, which perturbation-based gradient estimators produce, break
    Dijkstra; with ``negative="clip"`` (the default) they are read as 0 (the input
    is not modified), with ``negative="raise"`` they raise ValueError. Zero costs
    are allowed. Either way negative costs are never solved as given, so the
    solver has ``accepts_negative = False`` (``spo_plus`` refuses it).

    Args:
        source: ``(row, col)`` of the first cell; default the top-left ``(0, 0)``.
        target: ``(row, col)`` of the last cell; default ``None`` means the
            bottom-right ``(H - 1, W - 1)`` of each call's grid.
        neighbourhood: 8 (default; king moves, diagonals included) or 4.
        negative: ``"clip"`` (default) or ``"raise"``.
        backend: ``"auto"`` (default: ``"torch"`` for a theta off the CPU, else
            ``"numba"``), ``"numba"`` (Dijkstra on the host; a CUDA theta is
            copied there and back) or ``"torch"`` (Bellman-Ford sweeps on theta's
            own device, CPU included).

    Raises:
        ValueError: On invalid options; at call time on costs with fewer than 2
            dims, an empty grid, NaN/inf, a source or target outside the grid,
            negative costs when ``negative="raise"``, or costs so large (above
            about 1e308 / (2 H W)) that a path's cost overflows float64.

    Example:
        >>> import torch, combgrad as cg
        >>> costs = torch.tensor([[1., 9., 1.], [1., 9., 1.], [1., 1., 1.]])
        >>> cg.solvers.get("shortest_path", neighbourhood=4)(costs)
        tensor([[1., 0., 0.],
                [1., 0., 0.],
                [1., 1., 1.]])
    """

    name = "shortest_path"
    sense = "min"
    event_ndim = 2
    # Negative costs are clipped or refused, never solved as given (spo_plus reads this).
    accepts_negative = False

    backends = ("numba", "torch")

    def __init__(
        self,
        *,
        source: tuple[int, int] = (0, 0),
        target: tuple[int, int] | None = None,
        neighbourhood: int = 8,
        negative: str = "clip",
        backend: str = "auto",
    ) -> None:
        self.source = _check_cell("source", source)
        self.target = None if target is None else _check_cell("target", target)
        self.neighbourhood = int(check_choice("shortest_path", "neighbourhood", neighbourhood, (4, 8)))
        self.negative = check_choice("shortest_path", "negative", negative, ("clip", "raise"))
        self.set_backend(backend)

    def _target(self, height: int, width: int) -> tuple[int, int]:
        return (height - 1, width - 1) if self.target is None else self.target

    def check_event(self, theta: torch.Tensor, event_shape: tuple[int, ...]) -> None:
        height, width = event_shape
        if height < 1 or width < 1:
            raise ValueError(
                f"shortest_path: costs must have H >= 1 and W >= 1 in [*, H, W], "
                f"got shape {tuple(theta.shape)}"
            )
        for argument, (row, col) in (("source", self.source), ("target", self._target(height, width))):
            if row >= height or col >= width:
                raise ValueError(
                    f"shortest_path: {argument} must lie inside the {height} x {width} grid "
                    f"(0 <= row < {height}, 0 <= col < {width}), got ({row}, {col})"
                )
        if self.negative == "raise" and theta.numel() and bool((theta < 0).any()):
            raise ValueError(
                f"shortest_path: costs must be >= 0 with negative='raise', got minimum "
                f"{float(theta.min()):.6g}; use negative='clip' to read negative costs as 0"
            )
        # A path visits each cell at most once, so its cost, and every tentative
        # distance, is a sum of at most H * W costs.
        check_sum_magnitude(
            "shortest_path", "costs", theta, height * width, f"a path on a {height} x {width} grid"
        )

    def solve_batch(self, theta: np.ndarray) -> np.ndarray:
        batch, height, width = theta.shape
        arguments = (
            theta,
            self.negative == "clip",
            np.array(self.source, dtype=np.int64),
            np.array(self._target(height, width), dtype=np.int64),
            _STEPS[self.neighbourhood],
        )
        out = np.zeros((batch, height, width), dtype=np.uint8)
        work = SECONDS_PER_RELAXATION * height * width * self.neighbourhood
        return run_batch(_solve_range, _solve_chunks, arguments, out, work)

    def solve_torch(self, theta: torch.Tensor) -> torch.Tensor:
        height, width = theta.shape[1:]
        # float64 stays float64; narrower dtypes are summed in float32 (float16
        # sums of a path's costs would round too coarsely, and overflow at 65504).
        dtype = torch.float64 if theta.dtype == torch.float64 else torch.float32
        target = self._target(height, width)
        # Clipping is a no-op under negative="raise": check_event refused negatives.
        costs = theta.to(dtype).clamp(min=0.0)
        distances = _torch_distances(costs, self.source, self.neighbourhood)
        if dtype == torch.float32:
            # float32 path sums of costs near float32's maximum (1e38 on a 12x12
            # grid) overflow; such a batch is solved again in float64, whose sums
            # check_sum_magnitude keeps finite. One host read per call.
            goal = (target[0] + 1) * (width + 2) + target[1] + 1
            if not bool(torch.isfinite(distances[0][:, goal]).all()):
                distances = _torch_distances(costs.to(torch.float64), self.source, self.neighbourhood)
        return _torch_walk(*distances, (height, width), self.source, target, self.neighbourhood)

    def __repr__(self) -> str:
        return (
            f"ShortestPath(source={self.source}, target={self.target}, "
            f"neighbourhood={self.neighbourhood}, negative={self.negative!r}, backend={self.backend!r})"
        )


register("shortest_path", ShortestPath)

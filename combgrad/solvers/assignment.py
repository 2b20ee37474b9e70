"""``assignment``: the linear assignment (maximum-weight matching) of a score matrix.

Both kernels are the shortest augmenting path method with potentials (Jonker
and Volgenant), exact for any real scores. The "numba" kernel runs it per
instance, over the batch by :func:`combgrad.solvers.parallel.run_batch` (serial
for small batches, threads for large ones); the "torch" kernel runs the same
searches for the whole batch at once on theta's device, row by row, each search
step a masked minimum over ``[B, m]`` distances.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit, prange

from .base import BatchSolver, check_sum_magnitude
from .parallel import chunk_range, run_batch
from .registry import register


@njit(cache=True)
def _assign_one(
    theta: np.ndarray,
    out: np.ndarray,
    u: np.ndarray,
    v: np.ndarray,
    col_of_row: np.ndarray,
    row_of_col: np.ndarray,
    came_from: np.ndarray,
    distance: np.ndarray,
    row_seen: np.ndarray,
    col_settled: np.ndarray,
) -> None:
    """Write into ``out [n, m]`` (zeros, n <= m) the 0/1 assignment maximizing <theta, y>.

    Shortest augmenting paths with row and column potentials ``u``, ``v``: rows are
    matched one at a time, each by a Dijkstra search over the reduced costs
    ``-theta[i, j] - u[i] - v[j] >= 0`` that stops at the first free column it
    settles; the potentials are then updated from the search's distances so that
    reduced costs stay non-negative and matched edges tight. One row costs O(n m),
    the whole O(n^2 m). A square instance starts from Jonker and Volgenant's column
    reduction, which matches most rows before any search (measured 1.3x faster at
    n = 30); a rectangular one cannot, as its free columns must keep ``v = 0``.

    The other arguments are scratch buffers owned by the calling thread (``[n]``
    or ``[m]``); ``came_from[j]`` is the row whose edge reached column ``j``.
    """
    n, m = theta.shape
    u[:] = 0.0
    v[:] = 0.0
    col_of_row[:] = -1
    row_of_col[:] = -1
    if n == m:
        # Column reduction: v[j] is column j's least cost, and its best row takes
        # it if still free (the lowest row index among equal scores).
        for j in range(m):
            best_row = 0
            for i in range(1, n):
                if theta[i, j] > theta[best_row, j]:
                    best_row = i
            v[j] = -theta[best_row, j]
            if col_of_row[best_row] < 0:
                col_of_row[best_row] = j
                row_of_col[j] = best_row
    for start in range(n):
        if col_of_row[start] >= 0:
            continue
        distance[:] = np.inf
        row_seen[:] = False
        col_settled[:] = False
        radius = 0.0  # distance of the column settled last
        row = start
        sink = -1
        while sink < 0:
            row_seen[row] = True
            u_row = u[row]
            best = np.inf
            best_col = -1
            for j in range(m):
                if col_settled[j]:
                    continue
                reduced = radius - theta[row, j] - u_row - v[j]
                if reduced < distance[j]:
                    distance[j] = reduced
                    came_from[j] = row
                # Tie rule: least distance, then a free column (it ends the search
                # at once), then the lowest column index.
                if distance[j] < best or (
                    distance[j] == best and row_of_col[j] < 0 and row_of_col[best_col] >= 0
                ):
                    best = distance[j]
                    best_col = j
            radius = best
            col_settled[best_col] = True
            if row_of_col[best_col] < 0:
                sink = best_col
            else:
                row = row_of_col[best_col]
        # Potentials move by how far inside the final radius each settled node lies.
        u[start] += radius
        for i in range(n):
            if row_seen[i] and i != start:
                u[i] += radius - distance[col_of_row[i]]
        for j in range(m):
            if col_settled[j]:
                v[j] -= radius - distance[j]
        # Augment: flip the matched and unmatched edges along the path to the sink.
        j = sink
        while True:
            i = came_from[j]
            row_of_col[j] = i
            previous = col_of_row[i]
            col_of_row[i] = j
            if i == start:
                break
            j = previous
    for i in range(n):
        out[i, col_of_row[i]] = 1.0


@njit(cache=True)
def _solve_range(theta: np.ndarray, out: np.ndarray, start: int, stop: int) -> None:
    """Instances ``start:stop`` of ``theta [B, n, m]`` (n <= m) into the zeroed ``out [B, n, m]``."""
    n, m = theta.shape[1:]
    # Scratch buffers are allocated once per range rather than once per instance.
    u = np.empty(n)
    v = np.empty(m)
    col_of_row = np.empty(n, np.int64)
    row_of_col = np.empty(m, np.int64)
    came_from = np.empty(m, np.int64)
    distance = np.empty(m)
    row_seen = np.empty(n, np.bool_)
    col_settled = np.empty(m, np.bool_)
    for index in range(start, stop):
        _assign_one(
            theta[index], out[index], u, v, col_of_row, row_of_col, came_from, distance, row_seen, col_settled
        )


@njit(cache=True, parallel=True)
def _solve_chunks(theta: np.ndarray, out: np.ndarray, chunks: int) -> None:
    """The batch cut into ``chunks`` contiguous ranges, one per thread (see :mod:`.parallel`)."""
    for chunk in prange(chunks):
        start, stop = chunk_range(chunk, out.shape[0], chunks)
        _solve_range(theta, out, start, stop)


# The torch kernel asks the device whether every search has ended after 1, 2
# and 4 steps and then once per this many steps: a host sync per 8 steps of
# about 24 kernel launches each is cheap on a GPU, and it ends most searches of
# a small batch long before their worst case (a large batch nearly always holds
# one search that needs it).
STEPS_PER_CHECK = 8


def _assign_torch(theta: torch.Tensor) -> torch.Tensor:
    """The torch kernel: 0/1 assignments ``y [B, n, m]`` of ``theta [B, n, m]`` (n <= m), all at once.

    :func:`_assign_one` without the column reduction, vectorised over the batch:
    rows ``0, 1, ..., n - 1`` are matched in turn, every instance's search for row
    ``k`` advancing one settled column per step, with the same reduced costs,
    potential updates and tie rule (least distance, a free column, the lowest
    index). The search for row ``k`` ends within ``k + 1`` steps, as only ``k``
    columns are matched, so the loops are bounded whatever the arithmetic does;
    an instance whose search has ended keeps choosing its sink, which changes
    nothing. Without the reduction every row starts from zero potentials, which
    is what rectangular instances need anyway. Half precision is widened to
    float32; float32 and float64 stay.
    """
    if theta.dtype not in (torch.float32, torch.float64):
        theta = theta.float()
    batch, n, m = theta.shape
    device = theta.device
    infinity = torch.tensor(float("inf"), dtype=theta.dtype, device=device)
    u = torch.zeros(batch, n, dtype=theta.dtype, device=device)
    v = torch.zeros(batch, m, dtype=theta.dtype, device=device)
    col_of_row = torch.full((batch, n), -1, dtype=torch.long, device=device)
    row_of_col = torch.full((batch, m), -1, dtype=torch.long, device=device)
    for start in range(n):
        distance = torch.full((batch, m), float("inf"), dtype=theta.dtype, device=device)
        came_from = torch.zeros(batch, m, dtype=torch.long, device=device)
        col_settled = torch.zeros(batch, m, dtype=torch.bool, device=device)
        # Columns a search may still update: unsettled, in a search that goes on.
        open_columns = torch.ones(batch, m, dtype=torch.bool, device=device)
        # Tie rank of a column among the nearest: 2 if free, 1 if matched. Columns
        # change hands only when augmenting, so this holds for the whole search.
        free_rank = (row_of_col < 0).to(torch.int32) + 1
        radius = torch.zeros(batch, dtype=theta.dtype, device=device)
        row = torch.full((batch, 1), start, dtype=torch.long, device=device)
        sink = torch.zeros(batch, 1, dtype=torch.long, device=device)
        searching = torch.ones(batch, 1, dtype=torch.bool, device=device)
        steps = 0
        while steps < start + 1:
            if (steps in (1, 2, 4) or (steps and steps % STEPS_PER_CHECK == 0)) and not bool(searching.any()):
                break
            steps += 1
            # gather, not theta[rows, row]: torch's CPU advanced indexing of a 3-D
            # tensor measured 1000x slower (12 ms against 10 us at B = 300).
            scores = theta.gather(1, row[:, :, None].expand(batch, 1, m)).squeeze(1)
            # The same order of operations as numba's reduced cost, so float64
            # instances see the same values.
            reduced = (radius[:, None] - scores) - u.gather(1, row) - v
            improve = (reduced < distance) & open_columns
            distance = torch.where(improve, reduced, distance)
            came_from = torch.where(improve, row, came_from)
            key = torch.where(open_columns, distance, infinity)
            nearest = key.amin(dim=1, keepdim=True)
            # Tie rule: least distance, then a free column, then the lowest index
            # (argmax returns the first of equal maxima).
            column = torch.where(key == nearest, free_rank, 0).argmax(dim=1, keepdim=True)
            column = torch.where(searching, column, sink)
            radius = torch.where(searching[:, 0], nearest[:, 0], radius)
            col_settled.scatter_(1, column, True)
            open_columns.scatter_(1, column, False)
            matched_row = row_of_col.gather(1, column)
            matched = matched_row >= 0
            # A free column ends the search at once; an ended search's column
            # is its sink, which is free, so it stays ended.
            sink = torch.where(matched, sink, column)
            row = torch.where(matched, matched_row, row)
            searching = matched
            open_columns &= matched
        sink = sink[:, 0]
        # Potentials move by how far inside the final radius each settled node
        # lies. The rows the search went through besides `start` are exactly
        # those whose matched column it settled.
        u[:, start] += radius
        matched_column = col_of_row.clamp(min=0)
        others = (col_of_row >= 0) & col_settled.gather(1, matched_column)
        u = torch.where(others, u + (radius[:, None] - distance.gather(1, matched_column)), u)
        v = torch.where(col_settled, v - (radius[:, None] - distance), v)
        # Augment along the search tree from the sink back to row `start`: a path
        # with at most as many rows as the search settled columns.
        rows = torch.arange(batch, device=device)
        column = sink
        augmenting = torch.ones(batch, dtype=torch.bool, device=device)
        for _ in range(steps):
            row = came_from[rows, column]
            row_of_col[rows, column] = torch.where(augmenting, row, row_of_col[rows, column])
            previous = col_of_row[rows, row]
            col_of_row[rows, row] = torch.where(augmenting, column, previous)
            augmenting = augmenting & (row != start)
            column = previous.clamp(min=0)
    y = torch.zeros(batch, n, m, dtype=theta.dtype, device=device)
    return y.scatter_(2, col_of_row[:, :, None], 1.0)


# Estimated serial time of an n x m instance: about 0.45 ns per n * n * m at
# n = m = 30, plus 0.2 us per instance (benchmarks/threads.py --calibrate).
SECONDS_PER_STEP = 0.5e-9
SECONDS_PER_INSTANCE = 0.2e-6


class Assignment(BatchSolver):
    """The 0/1 assignment ``y [*, n, m]`` maximizing ``<theta, y>`` for scores ``theta [*, n, m]``.

    Each row is matched to a distinct column; for a square ``theta`` the result is a
    permutation matrix, for a rectangular one every row (``n < m``) or every column
    (``n > m``) is matched, ``min(n, m)`` ones in all. Sense "max"; solve a
    minimum-cost assignment by passing ``-costs``. Exact, O(n^2 m) per instance
    (shortest augmenting paths with potentials, Jonker and Volgenant's scheme).

    Backends: ``"numba"`` (per instance, threads over the batch; the faster one
    on the CPU, so ``"auto"`` picks it there) and ``"torch"`` (the same searches
    vectorised across the batch on theta's device, no host copy; ``"auto"`` picks
    it for a CUDA theta). The torch kernel is exact too, not an approximation
    such as an auction with a final epsilon: it is the numba algorithm minus the
    column reduction, run with float64 potentials for float64 theta (float32
    otherwise, where the optimum is reached up to float32 rounding).

    Ties: the result is a deterministic function of the instance's values (it does
    not depend on the batch position or the thread count). For a square instance,
    each column in index order first takes its best row (the lowest row index among
    equal scores) if that row is still free; the rows left over, in index order
    (all rows of a rectangular instance, or all columns after transposing when
    ``n > m``), are then matched by augmenting searches that settle columns by least
    reduced distance, a free column before a matched one, then the lowest column
    index. With all scores equal the result is the identity ``y[i, i] = 1``. Among
    several optimal assignments the one returned is the one this rule reaches, not
    in general the lexicographically smallest. The torch backend skips the column
    reduction: it matches every row in index order by the same searches, so on
    ties it may return another optimal assignment than numba's (with all scores
    equal it returns the identity too).

    Args:
        backend: ``"auto"`` (the default: ``"torch"`` for a CUDA theta, else
            ``"numba"``), ``"numba"`` or ``"torch"``: which kernel solves the batch.

    Raises:
        ValueError: On an unknown backend; (on call) if theta is not finite, has fewer than 2 dims, an empty
            row or column dim, or values so large (above about 1e300 / (n + m)) that
            the float64 potentials could overflow.

    Example:
        >>> import torch, combgrad as cg
        >>> solver = cg.solvers.get("assignment")
        >>> solver(torch.tensor([[1.0, 5.0], [4.0, 3.0]]))
        tensor([[0., 1.],
                [1., 0.]])
        >>> cg.solvers.get("assignment", backend="torch")(torch.tensor([[1.0, 5.0], [4.0, 3.0]]))
        tensor([[0., 1.],
                [1., 0.]])

    References:
        R. Jonker and A. Volgenant, "A shortest augmenting path algorithm for dense
        and sparse linear assignment problems", Computing 38, 325-340, 1987.
    """

    name = "assignment"
    sense = "max"
    event_ndim = 2
    backends = ("numba", "torch")

    def __init__(self, *, backend: str = "auto") -> None:
        self.set_backend(backend)

    def check_event(self, theta: torch.Tensor, event_shape: tuple[int, ...]) -> None:
        rows, columns = event_shape
        if rows < 1 or columns < 1:
            raise ValueError(
                "assignment: theta must have at least one row and one column [*, n, m], "
                f"got shape {tuple(theta.shape)}"
            )
        # The potentials accumulate up to about (n + m) times the largest score
        # (and differences of them twice that).
        check_sum_magnitude(
            "assignment", "theta", theta, 2 * (rows + columns),
            f"a {rows}x{columns} instance (its dual potentials)",
        )

    def solve_batch(self, theta: np.ndarray) -> np.ndarray:
        transposed = theta.shape[1] > theta.shape[2]
        if transposed:
            # More rows than columns: match every column instead.
            theta = np.ascontiguousarray(theta.transpose(0, 2, 1))
        _, n, m = theta.shape
        out = np.zeros_like(theta)
        work = SECONDS_PER_STEP * n * n * m + SECONDS_PER_INSTANCE
        run_batch(_solve_range, _solve_chunks, (theta,), out, work)
        return out.transpose(0, 2, 1) if transposed else out

    def solve_torch(self, theta: torch.Tensor) -> torch.Tensor:
        if theta.shape[1] > theta.shape[2]:
            # More rows than columns: match every column instead.
            return _assign_torch(theta.transpose(1, 2)).transpose(1, 2)
        return _assign_torch(theta)

    def __repr__(self) -> str:
        return "Assignment()" if self.backend == "auto" else f"Assignment(backend={self.backend!r})"


register("assignment", Assignment)

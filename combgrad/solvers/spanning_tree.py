"""``spanning_tree``: the minimum (or maximum) spanning tree of a dense weighted graph.

Each instance is a complete undirected graph on ``n`` vertices given by its
weight matrix; both kernels are Prim's algorithm in its dense ``O(n^2)``
form (no heap: on a complete graph a linear scan per step is optimal). The
"numba" kernel runs it per instance, over the batch by
:func:`combgrad.solvers.parallel.run_batch` (serial for small batches, threads
for large ones); the "torch" kernel runs its ``n - 1`` steps once for the whole
batch, each step a masked minimum over ``[B, n]`` keys on theta's device.

References:
    R. C. Prim. Shortest connection networks and some generalizations.
    Bell System Technical Journal 36(6), 1389-1401, 1957.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit, prange

from .._checks import check_sense
from .base import BatchSolver, check_sum_magnitude
from .parallel import chunk_range, run_batch
from .registry import register


@njit(cache=True)
def _prim(weights, sign, out, best, parent, in_tree):
    """One instance: writes the tree's adjacency into ``out [n, n]`` (zeros on entry).

    ``sign`` is 1.0 for a minimum and -1.0 for a maximum tree; ``best``, ``parent``
    and ``in_tree`` (``n``) are scratch buffers owned by the calling thread.
    """
    n = weights.shape[0]
    for vertex in range(n):
        best[vertex] = np.inf
        parent[vertex] = -1
        in_tree[vertex] = False
    added = 0  # the tree grows from vertex 0
    in_tree[0] = True
    for _ in range(n - 1):
        chosen = -1
        chosen_weight = np.inf
        for vertex in range(n):
            if in_tree[vertex]:
                continue
            # Both triangles count: <weights, y> over a symmetric adjacency y is
            # the tree's weight under w[u, v] + w[v, u], so no symmetry is needed.
            weight = sign * (weights[added, vertex] + weights[vertex, added])
            # Strict improvement only: among equal connections the vertex that
            # joined the tree first stays the parent.
            if weight < best[vertex]:
                best[vertex] = weight
                parent[vertex] = added
            # Strict comparison again: among equal keys the lowest index joins.
            if chosen == -1 or best[vertex] < chosen_weight:
                chosen = vertex
                chosen_weight = best[vertex]
        in_tree[chosen] = True
        out[chosen, parent[chosen]] = 1
        out[parent[chosen], chosen] = 1
        added = chosen


@njit(cache=True)
def _solve_range(weights, sign, out, start, stop):
    """Instances ``start:stop`` of ``weights [B, n, n]`` into the zeroed uint8 adjacencies ``out``."""
    n = weights.shape[1]
    # Scratch buffers are allocated once per range rather than once per instance.
    best = np.empty(n, dtype=np.float64)
    parent = np.empty(n, dtype=np.int64)
    in_tree = np.empty(n, dtype=np.bool_)
    for index in range(start, stop):
        _prim(weights[index], sign, out[index], best, parent, in_tree)


@njit(cache=True, parallel=True)
def _solve_chunks(weights, sign, out, chunks):
    """The batch cut into ``chunks`` contiguous ranges, one per thread (see :mod:`.parallel`)."""
    for chunk in prange(chunks):
        start, stop = chunk_range(chunk, out.shape[0], chunks)
        _solve_range(weights, sign, out, start, stop)


def _prim_torch(weights: torch.Tensor, sign: float) -> torch.Tensor:
    """The torch kernel: Prim on every instance of ``weights [B, n, n]`` at once; 0/1 ``y [B, n, n]``.

    The same steps and tie rule as :func:`_prim`, vectorised over the batch. Keys
    are the half-sums ``w[u, v] / 2 + w[v, u] / 2``: halving is exact (short of
    subnormals), so they order edges exactly as numba's ``w[u, v] + w[v, u]``,
    ties included, and cannot overflow. Half precision is widened to float32,
    whose range and precision the keys need; float32 and float64 stay as they are.
    """
    if weights.dtype not in (torch.float32, torch.float64):
        weights = weights.float()
    batch, n, _ = weights.shape
    keys = (weights * (0.5 * sign)) + (weights.transpose(1, 2) * (0.5 * sign))
    # A vertex that has joined gets key +inf in `best` (never chosen again) and
    # in its column of `keys` (never improved again: inf < inf is false), which
    # replaces a separate in-tree mask: two fewer kernels per step on a GPU.
    keys[:, :, 0] = float("inf")
    best = keys[:, 0, :].clone()  # step 0: every vertex's best connection is to the root, vertex 0
    parent = torch.zeros(batch, n, dtype=torch.long, device=weights.device)
    for step in range(n - 1):
        # argmin returns the first minimum: the lowest index among equal keys joins.
        chosen = best.argmin(dim=1, keepdim=True)
        if step == n - 2:
            break  # every vertex has joined; no key is read again
        best.scatter_(1, chosen, float("inf"))
        keys.scatter_(2, chosen[:, :, None].expand(batch, n, 1), float("inf"))
        # gather, not keys[rows, chosen]: torch's CPU advanced indexing of a 3-D
        # tensor measured up to 1000x slower.
        row = keys.gather(1, chosen[:, :, None].expand(batch, 1, n)).squeeze(1)
        # Strict improvement only: among equal connections the vertex that joined
        # first stays the parent. Equal keys are equal numbers, so the minimum
        # holds the same values as a strict update.
        parent = torch.where(row < best, chosen, parent)
        best = torch.minimum(best, row)
    y = torch.zeros(batch, n, n, dtype=weights.dtype, device=weights.device)
    # Vertex v > 0 hangs from parent[v]; vertex 0 has none. A tree has no 2-cycle,
    # so the child-to-parent entries and their transposes never overlap.
    y[:, 1:].scatter_(2, parent[:, 1:, None], 1.0)
    return y + y.transpose(1, 2)


# Estimated serial time of one step of the dense Prim scan (one vertex examined
# for one joining vertex): about 3.7 ns at n = 30 (benchmarks/threads.py --calibrate).
SECONDS_PER_STEP = 4e-9


class SpanningTree(BatchSolver):
    """Minimum (or maximum) spanning tree of each instance of ``weights [*, n, n]``.

    The output ``y`` has weights' shape, dtype and device: the symmetric 0/1
    adjacency matrix of the tree, with a zero diagonal and ``n - 1`` edges (each
    stored twice), optimizing the linear objective ``<weights, y>`` like every
    solver. Over symmetric ``y`` that objective gives edge ``{i, j}`` the weight
    ``w[i, j] + w[j, i]``, so a symmetric matrix is solved as its usual spanning
    tree (``(weights * y).sum((-2, -1)) / 2`` is then the tree's weight), and an
    asymmetric one, such as a perturbed symmetric matrix inside a gradient
    estimator, as the tree of its symmetric part. The diagonal is ignored.

    Tie rule (Prim from vertex 0): at each step the vertex outside the tree with
    the best connection to the tree joins, the lowest index among equals; its
    tree edge goes to the tree vertex that joined first among those offering that
    best weight. With ``sense="max"`` the same rule runs on the negated
    weights. Both backends follow this rule; in float64 they return the same
    tree. The torch backend compares float32 weights in float32 (and widens
    float16/bfloat16 to float32), so where two connections differ by less than
    float32 rounding it may pick another tree of equal weight up to that rounding.

    Backends: ``"numba"`` (compiled Prim per instance, threads over the batch;
    the faster one on the CPU, so ``"auto"`` picks it there) and ``"torch"``
    (the ``n - 1`` steps vectorised across the batch, on theta's device without
    a host copy; ``"auto"`` picks it for a CUDA theta).

    Args:
        sense: ``"min"`` (default) for a minimum tree, ``"max"`` for a maximum one.
        backend: ``"auto"`` (the default: ``"torch"`` for a CUDA theta, else
            ``"numba"``), ``"numba"`` or ``"torch"``: which kernel solves the batch.

    Raises:
        ValueError: On an invalid sense or backend; at call time on weights that are not
            ``[*, n, n]`` with ``n >= 1``, not finite, or so large (above about
            1e308 / (4 (n - 1))) that a tree's weight overflows float64.

    Example:
        >>> import torch, combgrad as cg
        >>> weights = torch.tensor([[0., 1., 4.], [1., 0., 2.], [4., 2., 0.]])
        >>> cg.solvers.get("spanning_tree")(weights)
        tensor([[0., 1., 0.],
                [1., 0., 1.],
                [0., 1., 0.]])
        >>> cg.solvers.get("spanning_tree", backend="torch")(weights).equal(cg.solvers.get("spanning_tree")(weights))
        True
    """

    name = "spanning_tree"
    event_ndim = 2
    backends = ("numba", "torch")

    def __init__(self, *, sense: str = "min", backend: str = "auto") -> None:
        self.sense = check_sense("spanning_tree", sense)
        self.set_backend(backend)

    def check_event(self, theta: torch.Tensor, event_shape: tuple[int, ...]) -> None:
        rows, cols = event_shape
        if rows != cols or rows < 1:
            raise ValueError(
                f"spanning_tree: weights must be square [*, n, n] with n >= 1, "
                f"got shape {tuple(theta.shape)}"
            )
        # Each step compares w[u, v] + w[v, u], and the objective <weights, y> adds
        # 2 (n - 1) weights: both must stay finite (1e308 gave a self-loop before).
        check_sum_magnitude("spanning_tree", "weights", theta, 2 * (rows - 1), f"a tree on {rows} vertices")

    def solve_batch(self, theta: np.ndarray) -> np.ndarray:
        batch, n, _ = theta.shape
        out = np.zeros((batch, n, n), dtype=np.uint8)
        arguments = (theta, 1.0 if self.sense == "min" else -1.0)
        return run_batch(_solve_range, _solve_chunks, arguments, out, SECONDS_PER_STEP * n * n)

    def solve_torch(self, theta: torch.Tensor) -> torch.Tensor:
        return _prim_torch(theta, 1.0 if self.sense == "min" else -1.0)

    def __repr__(self) -> str:
        if self.backend == "auto":
            return f"SpanningTree(sense={self.sense!r})"
        return f"SpanningTree(sense={self.sense!r}, backend={self.backend!r})"


register("spanning_tree", SpanningTree)

"""``spanning_tree``: the minimum (or maximum) spanning tree of a dense weighted graph.

Each instance is a complete undirected graph on ``n`` vertices given by its
weight matrix; the kernel is Prim's algorithm in its dense ``O(n^2)``
form (no heap: on a complete graph a linear scan per step is optimal), compiled
by numba and run over the batch on several threads.

References:
    R. C. Prim. Shortest connection networks and some generalizations.
    Bell System Technical Journal 36(6), 1389-1401, 1957.
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from numba import njit, prange

from .._checks import check_sense
from .base import BatchSolver
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


@njit(cache=True, parallel=True)
def _prim_batch(weights, sign, chunks):
    """All instances of ``weights [B, n, n]``; returns uint8 adjacencies ``[B, n, n]``.

    The batch is cut into ``chunks`` contiguous pieces run in parallel.
    """
    batch, n, _ = weights.shape
    out = np.zeros((batch, n, n), dtype=np.uint8)
    # Scratch buffers are allocated once per chunk rather than once per instance.
    chunks = max(1, min(batch, chunks))
    for chunk in prange(chunks):
        best = np.empty(n, dtype=np.float64)
        parent = np.empty(n, dtype=np.int64)
        in_tree = np.empty(n, dtype=np.bool_)
        for index in range(chunk * batch // chunks, (chunk + 1) * batch // chunks):
            _prim(weights[index], sign, out[index], best, parent, in_tree)
    return out


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
    weights.

    Args:
        sense: ``"min"`` (default) for a minimum tree, ``"max"`` for a maximum one.

    Raises:
        ValueError: On an invalid sense; at call time on weights that are not
            ``[*, n, n]`` with ``n >= 1`` or not finite.

    Example:
        >>> import torch, combgrad as cg
        >>> weights = torch.tensor([[0., 1., 4.], [1., 0., 2.], [4., 2., 0.]])
        >>> cg.solvers.get("spanning_tree")(weights)
        tensor([[0., 1., 0.],
                [1., 0., 1.],
                [0., 1., 0.]])
    """

    name = "spanning_tree"
    event_ndim = 2

    def __init__(self, *, sense: str = "min") -> None:
        self.sense = check_sense("spanning_tree", sense)

    def check_event(self, theta: torch.Tensor, event_shape: tuple[int, ...]) -> None:
        rows, cols = event_shape
        if rows != cols or rows < 1:
            raise ValueError(
                f"spanning_tree: weights must be square [*, n, n] with n >= 1, "
                f"got shape {tuple(theta.shape)}"
            )

    def solve_batch(self, theta: np.ndarray) -> np.ndarray:
        # One contiguous chunk of the batch per thread (numba's prange schedule is
        # static), read here because numba.get_num_threads inside the kernel stops
        # numba from caching it.
        chunks = numba.get_num_threads()
        return _prim_batch(theta, 1.0 if self.sense == "min" else -1.0, chunks)

    def __repr__(self) -> str:
        return f"SpanningTree(sense={self.sense!r})"


register("spanning_tree", SpanningTree)

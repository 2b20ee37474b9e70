"""``graph_shortest_path``: the cheapest source-to-target path of an edge-weighted graph.

The graph is fixed at construction (an ``[m, 2]`` list of (tail, head) edges);
each call solves one cost vector ``theta [*, m]`` per instance and returns the
0/1 mask of the edges on the cheapest path. This is the shortest path of
predict-then-optimize benchmarks (PyEPO's 5x5 grid, whose arcs go right and
down) and of Berthet et al.'s perturbed-shortest-path example.

The structure is analysed once, at construction: the part of the graph that
lies on some source-to-target walk (nodes reachable from the source that reach
the target), whether that part is acyclic (a DAG), a topological order and its
longest path. Two host kernels, numba-compiled and run over the batch by
:func:`combgrad.solvers.parallel.run_batch` (the ``"numba"`` backend):

* on a DAG, a dynamic programme over the topological order, exact for costs of
  any sign (so SPO+'s ``2 theta - theta_true`` and unclipped perturbations are
  solved as given);
* otherwise Dijkstra's algorithm with a binary heap, for non-negative costs
  (negative ones are clipped at 0 or refused).

The ``"torch"`` backend runs on theta's own device: batched Bellman-Ford sweeps
over the arc list (one gather, one add and one ``scatter_reduce`` amin per sweep),
then a predecessor walk back from the target, vectorised across the batch.

References:
    E. W. Dijkstra. A note on two problems in connexion with graphs.
    Numerische Mathematik 1, 269-271, 1959.

    R. Bellman. On a routing problem. Quarterly of Applied Mathematics 16(1),
    87-90, 1958.

    A. N. Elmachtoub, P. Grigas. Smart "Predict, then Optimize". Management
    Science 68(1), 9-26, 2022 (the edge-weighted grid benchmark).

    B. Tang, E. B. Khalil. PyEPO: A PyTorch-based End-to-End Predict-then-Optimize
    Library for Linear and Integer Programming. 2022.
"""

from __future__ import annotations

import numbers
from collections import deque

import numpy as np
import torch
from numba import njit, prange

from .._checks import check_bool, check_choice, check_positive_int
from .base import BatchSolver, check_sum_magnitude
from .parallel import chunk_range, run_batch
from .registry import register

OWNER = "graph_shortest_path"


@njit(cache=True, inline="always")
def _before(distance_a, hops_a, node_a, distance_b, hops_b, node_b):
    # Heap order: (distance, hops, node). Distance and hops define the result;
    # the node index only makes the settling order deterministic.
    if distance_a != distance_b:
        return distance_a < distance_b
    if hops_a != hops_b:
        return hops_a < hops_b
    return node_a < node_b


@njit(cache=True)
def _heap_push(distances, hops, nodes, size, distance, hop, node):
    position = size
    while position > 0:
        parent = (position - 1) >> 1
        if _before(distances[parent], hops[parent], nodes[parent], distance, hop, node):
            break
        distances[position] = distances[parent]
        hops[position] = hops[parent]
        nodes[position] = nodes[parent]
        position = parent
    distances[position] = distance
    hops[position] = hop
    nodes[position] = node
    return size + 1


@njit(cache=True)
def _heap_pop(distances, hops, nodes, size):
    distance, hop, node = distances[0], hops[0], nodes[0]
    size -= 1
    last_distance, last_hop, last_node = distances[size], hops[size], nodes[size]
    position = 0
    while True:
        child = 2 * position + 1
        if child >= size:
            break
        right = child + 1
        if right < size and _before(distances[right], hops[right], nodes[right], distances[child], hops[child], nodes[child]):
            child = right
        if not _before(distances[child], hops[child], nodes[child], last_distance, last_hop, last_node):
            break
        distances[position] = distances[child]
        hops[position] = hops[child]
        nodes[position] = nodes[child]
        position = child
    distances[position] = last_distance
    hops[position] = last_hop
    nodes[position] = last_node
    return distance, hop, node, size


@njit(cache=True)
def _dijkstra(costs, clip, source, target, offsets, heads, edges, out, distance, hops, edge_in, node_in, settled, heap_distance, heap_hops, heap_nodes):
    """One instance: marks the cheapest path's edges in ``out [m]`` (Dijkstra, costs >= 0).

    The graph is the out-arc CSR ``offsets [n + 1]``, ``heads``, ``edges`` (arc ->
    edge index). Keys are ``(distance, hops)`` compared lexicographically, so each
    node gets the fewest edges among its cheapest paths; ``edge_in[v]`` is the
    lowest edge index among the arcs ``u -> v`` with ``(d[u] + c, h[u] + 1) ==
    (d[v], h[v])``. Every such ``u`` has a smaller key than ``v`` and is settled
    before it, so the rule does not depend on the order of relaxation. The
    remaining arrays are scratch owned by the calling thread.
    """
    nodes = offsets.shape[0] - 1
    for node in range(nodes):
        distance[node] = np.inf
        hops[node] = 0
        edge_in[node] = -1
        settled[node] = False
    distance[source] = 0.0
    size = _heap_push(heap_distance, heap_hops, heap_nodes, 0, 0.0, 0, source)
    while size > 0:
        current, hop, node, size = _heap_pop(heap_distance, heap_hops, heap_nodes, size)
        if settled[node]:
            continue  # a stale entry left behind by a later improvement
        settled[node] = True
        if node == target:
            break
        for arc in range(offsets[node], offsets[node + 1]):
            head = heads[arc]
            if settled[head]:
                continue
            cost = costs[edges[arc]]
            if clip and cost < 0.0:
                cost = 0.0
            candidate = current + cost
            if candidate < distance[head] or (candidate == distance[head] and hop + 1 < hops[head]):
                distance[head] = candidate
                hops[head] = hop + 1
                edge_in[head] = edges[arc]
                node_in[head] = node
                size = _heap_push(heap_distance, heap_hops, heap_nodes, size, candidate, hop + 1, head)
            elif candidate == distance[head] and hop + 1 == hops[head] and edges[arc] < edge_in[head]:
                edge_in[head] = edges[arc]
                node_in[head] = node
    node = target
    while node != source:
        out[edge_in[node]] = 1
        node = node_in[node]


@njit(cache=True)
def _dag(costs, source, target, order, offsets, tails, edges, out, distance, hops, edge_in, node_in):
    """One instance on a DAG: the same path as the tie rule of :class:`GraphShortestPath`, any cost signs.

    ``order`` is a topological order of the graph's relevant nodes (source
    first); ``offsets``, ``tails``, ``edges`` the in-arc CSR, each node's arcs in
    increasing edge index. Each node takes the lexicographically smallest
    ``(d[u] + c, h[u] + 1)`` over its in-arcs, the first (lowest edge index)
    on a tie, which is the rule Dijkstra and the torch backend follow.
    """
    for position in range(order.shape[0]):
        distance[order[position]] = np.inf
        hops[order[position]] = 0
    distance[source] = 0.0
    for position in range(order.shape[0]):
        node = order[position]
        if node == source:
            continue
        best, best_hops, best_edge, best_tail = np.inf, 0, -1, -1
        for arc in range(offsets[node], offsets[node + 1]):
            tail = tails[arc]
            if distance[tail] == np.inf:
                continue
            candidate = distance[tail] + costs[edges[arc]]
            if candidate < best or (candidate == best and hops[tail] + 1 < best_hops):
                best, best_hops, best_edge, best_tail = candidate, hops[tail] + 1, edges[arc], tail
        distance[node] = best
        hops[node] = best_hops
        edge_in[node] = best_edge
        node_in[node] = best_tail
    node = target
    while node != source:
        out[edge_in[node]] = 1
        node = node_in[node]


@njit(cache=True)
def _solve_range(costs, clip, dag, source, target, order, out_offsets, out_heads, out_edges, in_offsets, in_tails, in_edges, out, start, stop):
    """Instances ``start:stop`` of ``costs [B, m]`` into the zeroed uint8 masks ``out [B, m]``."""
    nodes = out_offsets.shape[0] - 1
    arcs = out_heads.shape[0]
    # Scratch buffers once per range, not once per instance.
    distance = np.empty(nodes, dtype=np.float64)
    hops = np.empty(nodes, dtype=np.int64)
    edge_in = np.empty(nodes, dtype=np.int64)
    node_in = np.empty(nodes, dtype=np.int64)
    settled = np.empty(nodes, dtype=np.bool_)
    heap_distance = np.empty(arcs + 1, dtype=np.float64)  # one push per relaxation at most
    heap_hops = np.empty(arcs + 1, dtype=np.int64)
    heap_nodes = np.empty(arcs + 1, dtype=np.int64)
    for index in range(start, stop):
        if source == target:
            continue  # the empty path
        if dag:
            _dag(costs[index], source, target, order, in_offsets, in_tails, in_edges, out[index], distance, hops, edge_in, node_in)
        else:
            _dijkstra(
                costs[index], clip, source, target, out_offsets, out_heads, out_edges, out[index],
                distance, hops, edge_in, node_in, settled, heap_distance, heap_hops, heap_nodes,
            )


@njit(cache=True, parallel=True)
def _solve_chunks(costs, clip, dag, source, target, order, out_offsets, out_heads, out_edges, in_offsets, in_tails, in_edges, out, chunks):
    """The batch cut into ``chunks`` contiguous ranges, one per thread (see :mod:`.parallel`)."""
    for chunk in prange(chunks):
        start, stop = chunk_range(chunk, out.shape[0], chunks)
        _solve_range(costs, clip, dag, source, target, order, out_offsets, out_heads, out_edges, in_offsets, in_tails, in_edges, out, start, stop)


# Estimated serial time per relevant arc of one instance, heap work included:
# 4.4-5.2 ns measured on the random 1,000-node, 6,000-arc digraph of
# benchmarks/graph_shortest_path.py (a batch of 32 in 0.84-1.0 ms, one thread).
SECONDS_PER_ARC = 5e-9

# The torch backend checks convergence on graphs with cycles every this many
# sweeps: each check is a host read, a sweep is a few kernels.
CHECK_EVERY = 8


def _csr(keys: np.ndarray, order_by: np.ndarray, nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """``(offsets [nodes + 1], permutation)`` grouping arcs by ``keys``, each group in increasing ``order_by``."""
    permutation = np.lexsort((order_by, keys))
    offsets = np.zeros(nodes + 1, dtype=np.int64)
    np.cumsum(np.bincount(keys, minlength=nodes), out=offsets[1:])
    return offsets, permutation


def _reachable(start: int, tails: np.ndarray, heads: np.ndarray, nodes: int) -> np.ndarray:
    """Boolean ``[nodes]``: reachable from ``start`` along the arcs ``tails -> heads`` (breadth first)."""
    offsets, permutation = _csr(tails, np.arange(tails.shape[0]), nodes)
    targets = heads[permutation]
    seen = np.zeros(nodes, dtype=bool)
    seen[start] = True
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for head in targets[offsets[node] : offsets[node + 1]]:
            if not seen[head]:
                seen[head] = True
                queue.append(int(head))
    return seen


def _check_edges(edges: object) -> np.ndarray:
    """``edges`` as an int64 ``[m, 2]`` array of non-negative (tail, head) pairs without self-loops."""
    expected = "an integer array [m, 2] of (tail, head) pairs with m >= 1"
    if isinstance(edges, torch.Tensor):
        if edges.dtype.is_floating_point or edges.dtype.is_complex or edges.dtype == torch.bool:
            raise ValueError(f"{OWNER}: edges must be {expected}, got a tensor of dtype {edges.dtype}")
        array = edges.detach().cpu().numpy()
    else:
        try:
            array = np.asarray(edges)
        except ValueError:  # ragged nested lists
            raise ValueError(f"{OWNER}: edges must be {expected}, got a ragged {type(edges).__name__}") from None
    if array.ndim != 2 or array.shape[1] != 2 or array.shape[0] < 1:
        raise ValueError(f"{OWNER}: edges must be {expected}, got shape {array.shape}")
    if array.dtype.kind not in "iu":
        raise ValueError(f"{OWNER}: edges must be {expected}, got dtype {array.dtype}")
    if array.dtype.kind == "u" and array.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{OWNER}: edges must hold node indices below 2**63, got {array.max()}")
    array = array.astype(np.int64)
    negative = np.flatnonzero((array < 0).any(axis=1))
    if negative.size:
        index = int(negative[0])
        raise ValueError(
            f"{OWNER}: edges must hold non-negative node indices, got edge {index} = {tuple(array[index].tolist())}"
        )
    loops = np.flatnonzero(array[:, 0] == array[:, 1])
    if loops.size:
        index = int(loops[0])
        raise ValueError(
            f"{OWNER}: edges must not contain self-loops (a loop is never on a cheapest path, and a "
            f"negative one would be a negative cycle), got edge {index} = {tuple(array[index].tolist())}"
        )
    return array


def _check_node(argument: str, value: object, nodes: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= int(value) < nodes:
        raise ValueError(f"{OWNER}: {argument} must be a node index in [0, {nodes - 1}], got {value!r}")
    return int(value)


class GraphShortestPath(BatchSolver):
    """Cheapest source-to-target path of a fixed graph, for each cost vector ``theta [*, m]``.

    Sense "min". ``theta[..., e]`` is the cost of edge ``e = edges[e] = (tail,
    head)``; the output ``y`` has theta's shape, dtype and device and holds 1 on
    the edges of the cheapest path from ``source`` to ``target`` and 0
    elsewhere, so ``(theta * y).sum(-1)`` is its cost. With ``directed=False``
    every edge can be used both ways (its mask entry is 1 either way).

    Structure, checked and analysed once, at construction: node indices are
    non-negative integers below ``num_nodes``; self-loops are refused (never on
    a cheapest path, a negative cycle if negative); parallel edges, including
    ``(u, v)`` next to ``(v, u)`` when undirected, are allowed (the cheaper one is
    used, the lower index on a tie); the target must be reachable from the
    source; ``source == target`` gives the empty path (an all-zero mask).

    Negative costs: where the part of the graph between source and target (the
    nodes reachable from the source that reach the target) is acyclic, the
    solver runs a dynamic programme over its topological order and solves
    costs of any sign exactly, and ``accepts_negative`` is True (so
    ``spo_plus`` may use it). Otherwise it runs Dijkstra, and negative costs
    are read as 0 with ``negative="clip"`` (the default; the input is not
    modified) or raise ValueError with ``negative="raise"``; then
    ``accepts_negative`` is False. An undirected graph with an edge between
    source and target always has cycles (each edge is a 2-cycle).

    Tie rule, the same on both backends: among the cheapest paths (costs summed
    in float64 from the source) the solver takes one with the fewest edges, and
    among those the one traced back from the target by taking, at each node
    ``v``, the lowest-index edge ``(u, v)`` with ``d(u) + c == d(v)`` and
    ``h(u) + 1 == h(v)`` (``d``: cheapest cost, ``h``: fewest edges on a cheapest
    path). Both backends compute in float64 whatever theta's dtype, so their
    outputs are identical.

    The ``"torch"`` backend runs Bellman-Ford sweeps on theta's device: on a DAG
    exactly as many sweeps as its longest path has edges, with no host read; on
    a graph with cycles it checks convergence every 8 sweeps (one host read
    each) and reads the longest path found once for the walk. It is meant for
    GPUs; ``"auto"`` picks it only off the CPU.

    Args:
        edges: Integer ``[m, 2]`` (tail, head) pairs: a numpy array, tensor or
            nested list.
        num_nodes: Number of nodes; default ``None`` means the largest index in
            ``edges`` plus 1.
        source: Index of the first node (default 0).
        target: Index of the last node; default ``None`` means the last node,
            ``num_nodes - 1``.
        directed: Whether edges go from tail to head only (default True);
            False lets every edge be used both ways.
        negative: ``"clip"`` (default) or ``"raise"``: what negative costs
            become on a graph with cycles (a DAG solves them as given).
        backend: ``"auto"`` (default: ``"torch"`` for a theta off the CPU, else
            ``"numba"``), ``"numba"`` (the DAG programme or Dijkstra on the
            host) or ``"torch"`` (Bellman-Ford on theta's device, CPU included).

    Raises:
        ValueError: On a bad ``edges`` (shape, dtype, a negative or out-of-range
            index, a self-loop), a ``source`` or ``target`` outside the graph, an
            unreachable target, an invalid option; at call time on a theta whose
            last dim is not ``m``, NaN/inf, negative costs on a graph with cycles
            with ``negative="raise"``, or costs so large that a path's cost
            overflows float64.

    Example:
        >>> import torch, combgrad as cg
        >>> edges = [[0, 1], [1, 3], [0, 2], [2, 3]]        # two routes from 0 to 3
        >>> solver = cg.solvers.get("graph_shortest_path", edges=edges)
        >>> theta = torch.tensor([[1., 1., 1., 2.], [-3., 4., 1., 2.]])
        >>> solver(theta)
        tensor([[1., 1., 0., 0.],
                [1., 1., 0., 0.]])
        >>> solver.accepts_negative  # a DAG: -3 + 4 < 1 + 2 was solved as given
        True
        >>> undirected = cg.solvers.get("graph_shortest_path", edges=edges, directed=False)
        >>> undirected(theta)  # cycles: -3 is clipped to 0, and 0 + 4 > 1 + 2
        tensor([[1., 1., 0., 0.],
                [0., 0., 1., 1.]])
    """

    name = OWNER
    sense = "min"
    event_ndim = 1
    backends = ("numba", "torch")

    def __init__(
        self,
        *,
        edges: object,
        num_nodes: int | None = None,
        source: int = 0,
        target: int | None = None,
        directed: bool = True,
        negative: str = "clip",
        backend: str = "auto",
    ) -> None:
        array = _check_edges(edges)
        largest = int(array.max())
        if num_nodes is None:
            nodes = largest + 1
        else:
            nodes = check_positive_int(OWNER, "num_nodes", num_nodes)
            if largest >= nodes:
                index = int(np.flatnonzero((array >= nodes).any(axis=1))[0])
                raise ValueError(
                    f"{OWNER}: edges must hold node indices below num_nodes={nodes}, "
                    f"got edge {index} = {tuple(array[index].tolist())}"
                )
        self.edges = array
        self.num_nodes = nodes
        self.source = _check_node("source", source, nodes)
        self.target = nodes - 1 if target is None else _check_node("target", target, nodes)
        self.directed = check_bool(OWNER, "directed", directed)
        self.negative = check_choice(OWNER, "negative", negative, ("clip", "raise"))
        self.set_backend(backend)
        self._analyse()
        self._device_tensors: dict[torch.device, dict[str, torch.Tensor]] = {}

    def _analyse(self) -> None:
        """The relevant arcs, their CSR forms, acyclicity, a topological order and the longest path."""
        nodes, edges = self.num_nodes, self.edges
        index = np.arange(edges.shape[0], dtype=np.int64)
        tails, heads, arc_edges = edges[:, 0], edges[:, 1], index
        if not self.directed:
            tails = np.concatenate([edges[:, 0], edges[:, 1]])
            heads = np.concatenate([edges[:, 1], edges[:, 0]])
            arc_edges = np.concatenate([index, index])
        forward = _reachable(self.source, tails, heads, nodes)
        if not forward[self.target]:
            raise ValueError(
                f"{OWNER}: target must be reachable from source, got target={self.target} unreachable "
                f"from source={self.source} (directed={self.directed}, {nodes} nodes, {edges.shape[0]} edges)"
            )
        # Only nodes on some source-to-target walk matter: the others cannot be
        # on the path, and cycles or negative costs among them change nothing.
        relevant = forward & _reachable(self.target, heads, tails, nodes)
        keep = relevant[tails] & relevant[heads]
        if self.source == self.target:
            keep[:] = False
        tails, heads, arc_edges = tails[keep], heads[keep], arc_edges[keep]
        self.relevant_nodes = int(relevant.sum())
        out_offsets, out_order = _csr(tails, arc_edges, nodes)
        in_offsets, in_order = _csr(heads, arc_edges, nodes)
        self._out = (out_offsets, heads[out_order], arc_edges[out_order])
        self._in = (in_offsets, tails[in_order], arc_edges[in_order])
        self._arcs = (tails, heads, arc_edges)
        # Kahn's algorithm over the relevant arcs, the smallest ready node first.
        degree = np.bincount(heads, minlength=nodes)
        ready = deque(int(node) for node in np.flatnonzero(relevant & (degree == 0)))
        order: list[int] = []
        longest = np.zeros(nodes, dtype=np.int64)
        out_heads = self._out[1]
        while ready:
            node = ready.popleft()
            order.append(node)
            for head in out_heads[out_offsets[node] : out_offsets[node + 1]]:
                longest[head] = max(longest[head], longest[node] + 1)
                degree[head] -= 1
                if degree[head] == 0:
                    ready.append(int(head))
        self.is_dag = len(order) == self.relevant_nodes
        self.order = np.asarray(order if self.is_dag else [], dtype=np.int64)
        # The most edges on any path from the source: Bellman-Ford's sweep count on a DAG.
        self.longest_path = int(longest.max()) if self.is_dag else self.relevant_nodes - 1
        # Negative costs are solved as given exactly when the DAG programme runs.
        self.accepts_negative = self.is_dag

    def check_event(self, theta: torch.Tensor, event_shape: tuple[int, ...]) -> None:
        edges = self.edges.shape[0]
        if event_shape[0] != edges:
            raise ValueError(
                f"{OWNER}: theta must have one cost per edge, [*, {edges}], got shape {tuple(theta.shape)}"
            )
        if not self.is_dag and self.negative == "raise" and theta.numel() and bool((theta < 0).any()):
            raise ValueError(
                f"{OWNER}: theta must be >= 0 with negative='raise' on a graph with cycles, got minimum "
                f"{float(theta.min()):.6g}; use negative='clip' to read negative costs as 0"
            )
        # A path, and every tentative distance, sums at most relevant_nodes - 1 costs.
        check_sum_magnitude(
            OWNER, "theta", theta, self.longest_path, f"a path of up to {self.longest_path} edges"
        )

    def solve_batch(self, theta: np.ndarray) -> np.ndarray:
        out = np.zeros(theta.shape, dtype=np.uint8)
        arguments = (
            theta, self.negative == "clip", self.is_dag, self.source, self.target, self.order,
            *self._out, *self._in,
        )
        work = SECONDS_PER_ARC * max(1, self._arcs[0].shape[0])
        return run_batch(_solve_range, _solve_chunks, arguments, out, work)

    def _tensors(self, device: torch.device) -> dict[str, torch.Tensor]:
        """The arc arrays and the padded in-arc table on ``device``, built once per device."""
        if device not in self._device_tensors:
            tails, heads, arc_edges = self._arcs
            offsets = self._in[0]
            degree = np.diff(offsets)
            width = max(1, int(degree.max()) if degree.size else 1)
            # table[v, k]: the k-th in-arc of v (in increasing edge index), -1 past its in-degree.
            table = np.full((self.num_nodes, width), -1, dtype=np.int64)
            in_arcs = np.lexsort((arc_edges, heads))
            position = np.arange(in_arcs.shape[0]) - offsets[heads[in_arcs]]
            table[heads[in_arcs], position] = in_arcs
            self._device_tensors[device] = {
                name: torch.as_tensor(value, device=device)
                for name, value in (("tails", tails), ("heads", heads), ("edges", arc_edges), ("table", table))
            }
        return self._device_tensors[device]

    def solve_torch(self, theta: torch.Tensor) -> torch.Tensor:
        batch = theta.shape[0]
        device = theta.device
        mask = torch.zeros(theta.shape, dtype=torch.int32, device=device)
        if self.source == self.target:
            return mask.to(theta.dtype)
        arrays = self._tensors(device)
        tails, heads, arc_edges, table = arrays["tails"], arrays["heads"], arrays["edges"], arrays["table"]
        # float64 on every device: the numba kernels' arithmetic, hence the same path.
        costs = theta.to(torch.float64)
        if not self.is_dag:
            costs = costs.clamp(min=0.0)  # a no-op under negative="raise" (check_event refused negatives)
        arc_costs = costs.index_select(1, arc_edges)
        distance = torch.full((batch, self.num_nodes), torch.inf, dtype=torch.float64, device=device)
        distance[:, self.source] = 0.0
        level = torch.zeros((batch, self.num_nodes), dtype=torch.int64, device=device)
        index = heads.expand(batch, -1)
        snapshot: torch.Tensor | None = None
        # A Jacobi sweep t makes distance[v] the cheapest over paths of at most t
        # edges, and level[v] the sweep of its last improvement: the fewest edges
        # on a cheapest path, the h of the tie rule.
        for sweep in range(1, self.longest_path + 1):
            candidate = distance.index_select(1, tails) + arc_costs
            updated = distance.scatter_reduce(1, index, candidate, reduce="amin", include_self=True)
            level.masked_fill_(updated < distance, sweep)
            distance = updated
            if not self.is_dag and sweep % CHECK_EVERY == 0:
                if snapshot is not None and torch.equal(distance, snapshot):
                    break
                snapshot = distance.clone()
        steps = self.longest_path if self.is_dag else int(level[:, self.target].max())
        current = torch.full((batch, 1), self.target, dtype=torch.int64, device=device)
        for _ in range(steps):
            arcs = table[current.squeeze(1)]  # [B, D], -1 past each node's in-degree
            valid = arcs >= 0
            arcs = arcs.clamp(min=0)
            arc_tails = tails[arcs]
            arc_edge = arc_edges[arcs]
            allowed = (
                valid
                & (distance.gather(1, arc_tails) + costs.gather(1, arc_edge) == distance.gather(1, current))
                & (level.gather(1, arc_tails) + 1 == level.gather(1, current))
            )
            # argmax returns the first maximal entry: the lowest-index allowed arc.
            pick = allowed.to(torch.uint8).argmax(1, keepdim=True)
            active = current != self.source
            mask.scatter_add_(1, arc_edge.gather(1, pick), active.to(torch.int32))
            current = torch.where(active, arc_tails.gather(1, pick), current)
        return mask.to(theta.dtype)

    def __repr__(self) -> str:
        return (
            f"GraphShortestPath(num_nodes={self.num_nodes}, edges={self.edges.shape[0]}, source={self.source}, "
            f"target={self.target}, directed={self.directed}, negative={self.negative!r}, backend={self.backend!r})"
        )


register(OWNER, GraphShortestPath)

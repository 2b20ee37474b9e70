"""Tests for combgrad/solvers/graph_shortest_path.py against networkx, PyEPO and the perturbations seed."""

from __future__ import annotations

import math

import networkx as nx
import numpy as np
import pytest
import torch

import combgrad as cg
from combgrad.solvers.graph_shortest_path import GraphShortestPath

BACKENDS = ("numba", "torch")


def random_graph(rng: np.random.Generator, nodes: int, edges: int, *, dag: bool = False) -> np.ndarray:
    """Random edges [m, 2] (parallel edges possible) plus a chain 0 -> 1 -> ... so that the last node is reachable."""
    pairs = []
    while len(pairs) < edges:
        tail, head = rng.integers(0, nodes, size=2)
        if tail == head:
            continue
        if dag and tail > head:
            tail, head = head, tail
        pairs.append((tail, head))
    chain = [(node, node + 1) for node in range(nodes - 1)]
    order = rng.permutation(len(pairs) + len(chain))
    return np.array(pairs + chain, dtype=np.int64)[order]


def networkx_graph(edges: np.ndarray, costs: np.ndarray, directed: bool) -> nx.Graph:
    """networkx graph with, for parallel edges, the cheapest one's cost."""
    graph = nx.DiGraph() if directed else nx.Graph()
    for (tail, head), cost in zip(edges.tolist(), costs.tolist()):
        if not graph.has_edge(tail, head) or graph[tail][head]["weight"] > cost:
            graph.add_edge(tail, head, weight=cost)
    return graph


def assert_path(mask: np.ndarray, edges: np.ndarray, source: int, target: int, directed: bool) -> None:
    """The marked edges form one simple source -> target path (oriented tail -> head when directed)."""
    assert set(np.unique(mask).tolist()) <= {0.0, 1.0}
    chosen = [tuple(edges[index]) for index in np.flatnonzero(mask)]
    node, visited = source, {source}
    remaining = list(chosen)
    while node != target:
        step = [edge for edge in remaining if edge[0] == node or (not directed and edge[1] == node)]
        assert len(step) == 1, f"no unique way on from node {node}: {step}"
        edge = step[0]
        remaining.remove(edge)
        node = edge[1] if edge[0] == node else edge[0]
        assert node not in visited
        visited.add(node)
    assert not remaining


def reference_tie_rule(edges: np.ndarray, costs: np.ndarray, source: int, target: int, directed: bool) -> np.ndarray:
    """The documented tie rule in plain Python, for exactly summed (integer) costs.

    d: cheapest cost, h: fewest edges on a cheapest path (breadth first over the
    tight arcs); then back from the target, the lowest-index edge (u, v) with
    d(u) + c == d(v) and h(u) + 1 == h(v).
    """
    arcs = [(int(a), int(b), index) for index, (a, b) in enumerate(edges.tolist())]
    if not directed:
        arcs += [(b, a, index) for a, b, index in arcs]
    distance = nx.single_source_bellman_ford_path_length(
        networkx_graph(edges, costs, directed), source
    )
    tight = [(a, b, index) for a, b, index in arcs if a in distance and b in distance and distance[a] + costs[index] == distance[b]]
    hops = {source: 0}
    frontier = [source]
    while frontier:
        following = []
        for a, b, _ in tight:
            if a in frontier and b not in hops:
                hops[b] = hops[a] + 1
                following.append(b)
        frontier = following
    mask = np.zeros(len(edges))
    node = target
    while node != source:
        edge = min(
            (index, a) for a, b, index in tight if b == node and a in hops and hops[a] + 1 == hops[node]
        )
        mask[edge[0]] = 1
        node = edge[1]
    return mask


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("directed", [True, False])
def test_random_graphs_match_networkx(backend: str, directed: bool) -> None:
    rng = np.random.default_rng(0 if directed else 1)
    for trial in range(100):
        nodes = int(rng.integers(2, 12))
        edges = random_graph(rng, nodes, int(rng.integers(0, 3 * nodes)))
        solver = cg.solvers.get("graph_shortest_path", edges=edges, directed=directed, backend=backend)
        costs = rng.random((3, len(edges)))
        masks = solver(torch.from_numpy(costs)).numpy()
        for costs_row, mask in zip(costs, masks):
            graph = networkx_graph(edges, costs_row, directed)
            expected = nx.shortest_path_length(graph, 0, nodes - 1, weight="weight")
            assert_path(mask, edges, 0, nodes - 1, directed)
            assert math.isclose(float(costs_row @ mask), expected, rel_tol=1e-12, abs_tol=1e-12), trial


@pytest.mark.parametrize("backend", BACKENDS)
def test_dags_with_negative_costs_match_bellman_ford(backend: str) -> None:
    rng = np.random.default_rng(2)
    for trial in range(100):
        nodes = int(rng.integers(2, 12))
        edges = random_graph(rng, nodes, int(rng.integers(0, 3 * nodes)), dag=True)
        source = int(rng.integers(0, nodes - 1))
        solver = cg.solvers.get("graph_shortest_path", edges=edges, source=source, backend=backend)
        assert solver.is_dag and solver.accepts_negative
        costs = rng.normal(size=(3, len(edges)))
        masks = solver(torch.from_numpy(costs)).numpy()
        for costs_row, mask in zip(costs, masks):
            graph = networkx_graph(edges, costs_row, True)
            expected = nx.bellman_ford_path_length(graph, source, nodes - 1, weight="weight")
            assert_path(mask, edges, source, nodes - 1, True)
            assert math.isclose(float(costs_row @ mask), expected, rel_tol=1e-9, abs_tol=1e-12), trial


@pytest.mark.parametrize("directed", [True, False])
def test_tie_rule_and_identical_backends(directed: bool) -> None:
    """Small integer costs (zeros included) make many ties; both backends follow the documented rule."""
    rng = np.random.default_rng(3)
    for trial in range(100):
        nodes = int(rng.integers(2, 10))
        edges = random_graph(rng, nodes, int(rng.integers(0, 3 * nodes)), dag=trial % 2 == 0)
        costs = rng.integers(0 if not directed or trial % 2 else -2, 3, size=(4, len(edges))).astype(np.float64)
        results = {
            backend: cg.solvers.get("graph_shortest_path", edges=edges, directed=directed, backend=backend)(
                torch.from_numpy(costs)
            )
            for backend in BACKENDS
        }
        assert torch.equal(results["numba"], results["torch"]), trial
        for costs_row, mask in zip(costs, results["numba"].numpy()):
            np.testing.assert_array_equal(mask, reference_tie_rule(edges, costs_row, 0, nodes - 1, directed))


def test_random_1000_node_graph_both_backends() -> None:
    rng = np.random.default_rng(4)
    edges = random_graph(rng, 1000, 5000)
    costs = rng.random((2, len(edges)))
    masks = [
        cg.solvers.get("graph_shortest_path", edges=edges, backend=backend)(torch.from_numpy(costs))
        for backend in BACKENDS
    ]
    assert torch.equal(masks[0], masks[1])
    for costs_row, mask in zip(costs, masks[0].numpy()):
        expected = nx.shortest_path_length(networkx_graph(edges, costs_row, True), 0, 999, weight="weight")
        assert math.isclose(float(costs_row @ mask), expected, rel_tol=1e-12)


def grid_arcs(rows: int, cols: int) -> list[tuple[int, int]]:
    """PyEPO's arc order on a grid: per row, the rightward arcs, then (but the last row) the downward ones."""
    arcs = []
    for row in range(rows):
        arcs += [(row * cols + col, row * cols + col + 1) for col in range(cols - 1)]
        if row < rows - 1:
            arcs += [(row * cols + col, (row + 1) * cols + col) for col in range(cols)]
    return arcs


def test_pyepo_grid_arcs_and_solutions() -> None:
    pytest.importorskip("pyepo")
    pytest.importorskip("gurobipy")
    from pyepo.model.grb import shortestPathModel

    model = shortestPathModel(grid=(5, 5))
    assert [tuple(arc) for arc in model.arcs] == grid_arcs(5, 5)
    rng = np.random.default_rng(5)
    costs = rng.random((20, 40))
    for backend in BACKENDS:
        solver = cg.solvers.get("graph_shortest_path", edges=grid_arcs(5, 5), backend=backend)
        assert solver.is_dag
        masks = solver(torch.from_numpy(costs)).numpy()
        for costs_row, mask in zip(costs, masks):
            model.setObj(costs_row)
            solution, objective = model.solve()
            # Continuous random costs: the optimum is unique almost surely.
            np.testing.assert_array_equal(mask, np.round(solution))
            # Gurobi's objective carries its optimality tolerance (about 1e-8 here).
            assert math.isclose(float(costs_row @ mask), objective, rel_tol=1e-6)


def test_grid_without_pyepo_matches_networkx() -> None:
    """The same 5x5 grid in PyEPO's arc order, checked with networkx (runs where PyEPO is absent too)."""
    arcs = np.array(grid_arcs(5, 5))
    costs = np.random.default_rng(6).random((32, 40))
    masks = cg.solvers.get("graph_shortest_path", edges=arcs)(torch.from_numpy(costs)).numpy()
    for costs_row, mask in zip(costs, masks):
        assert_path(mask, arcs, 0, 24, True)
        assert mask.sum() == 8  # every monotone path right and down has 4 + 4 arcs
        expected = nx.shortest_path_length(networkx_graph(arcs, costs_row, True), 0, 24, weight="weight")
        assert math.isclose(float(costs_row @ mask), expected, rel_tol=1e-12)


# The perturbations seed (Berthet et al. 2020) draws its 9-node graph only as a
# picture; its printed perturbed solution names the edges used, and the text
# gives the four top-right costs (nodes 4, 5, 6, 8): [0.4, 0.1, 0.1, 0.1]. The
# gradient of the weight on 6 -> 8 is negative for the first cost only, so the
# first cost is edge 6-8 and the three 0.1 edges form the detour 6-5-4-8. The
# left part's costs are chosen here (not given by the seed) so that, as in its
# printed solution, 0-2-7-6 is the usual route and 2-5 is almost never used.
SEED_EDGES = [(6, 8), (4, 8), (4, 5), (5, 6), (0, 2), (0, 3), (2, 3), (2, 7), (3, 7), (6, 7), (2, 5), (1, 4)]
SEED_COSTS = [0.4, 0.1, 0.1, 0.1, 0.2, 0.2, 0.1, 0.2, 0.25, 0.1, 1.0, 0.3]


def test_perturbations_seed_shortest_path() -> None:
    """Weight 0.079 on edge 6-8 and gradient [-2.10, 2.08, 2.04, 2.04] w.r.t. the four top-right costs.

    The seed's two printed numbers fit one model: the cost difference of the two
    routes from 6 to 8 (0.4 against 0.3) perturbed by a normal of sd 0.05 * sqrt(2):
    P(6-8) = Phi(-0.1 / 0.0707) = 0.0786 and |dP/dc| = phi(1.414) / 0.0707 = 2.076
    (a sd of 0.1, four edges each perturbed with sigma 0.05, would give 0.159 and
    2.42). That is per-edge noise 0.05 / sqrt(2) (the seed's solver reads each
    undirected edge from two independently perturbed entries of its weight
    matrix, averaged), which this test uses. Tolerances: with 200,000 samples
    the weight's Monte Carlo sd is sqrt(0.079 * 0.921 / 2e5) = 6e-4 and each
    gradient entry's about 10 / sqrt(2e5) = 0.023; the tolerances (0.004 and
    0.12, about 6 and 5 sd) also cover the seed's own Monte Carlo error (its
    entries spread 2.04-2.10 around the closed form 2.076).
    """
    sigma = 0.05 / math.sqrt(2)
    layer = cg.DifferentiableSolver(
        "graph_shortest_path", estimator="perturbation", samples=200_000, noise_scale=sigma,
        edges=SEED_EDGES, directed=False, target=8,
    )
    theta = torch.tensor(SEED_COSTS, dtype=torch.float64, requires_grad=True)
    torch.manual_seed(0)
    weights = layer(theta)
    weights[0].backward()  # the weight on edge 6-8
    weights = weights.detach()
    assert abs(float(weights[0]) - 0.079) < 0.004
    closed_form = 0.1 / (2 * sigma)
    assert abs(float(weights[0]) - 0.5 * math.erfc(closed_form / math.sqrt(2))) < 0.004
    gradient = theta.grad[:4].numpy()
    np.testing.assert_allclose(gradient, [-2.0993764, 2.076386, 2.042395, 2.0411625], atol=0.12)
    # The usual route, as in the seed's printed solution (weights above 0.5 there).
    for edge in [(0, 2), (2, 7), (6, 7), (5, 6), (4, 5), (4, 8)]:
        assert float(weights[SEED_EDGES.index(edge)]) > 0.5
    assert float(weights[SEED_EDGES.index((2, 5))]) < 0.01


def test_source_equals_target_is_the_empty_path() -> None:
    for backend in BACKENDS:
        solver = cg.solvers.get("graph_shortest_path", edges=[[0, 1], [1, 0]], source=1, target=1, backend=backend)
        assert torch.equal(solver(torch.ones(2, 2)), torch.zeros(2, 2))


def test_parallel_edges_take_the_cheaper_then_the_lower_index() -> None:
    edges = [[0, 1], [0, 1], [1, 0]]
    for backend in BACKENDS:
        directed = cg.solvers.get("graph_shortest_path", edges=edges, backend=backend)
        assert directed(torch.tensor([2.0, 1.0, 0.0])).tolist() == [0.0, 1.0, 0.0]
        assert directed(torch.tensor([1.0, 1.0, 0.0])).tolist() == [1.0, 0.0, 0.0]
        undirected = cg.solvers.get("graph_shortest_path", edges=edges, directed=False, backend=backend)
        assert undirected(torch.tensor([2.0, 1.0, 0.5])).tolist() == [0.0, 0.0, 1.0]


@pytest.mark.parametrize("backend", BACKENDS)
def test_negative_costs_on_cycles_clip_or_raise(backend: str) -> None:
    edges = [[0, 1], [1, 2], [0, 2], [2, 1]]  # 1 <-> 2 is a cycle
    clip = cg.solvers.get("graph_shortest_path", edges=edges, backend=backend)
    assert not clip.is_dag and not clip.accepts_negative
    theta = torch.tensor([1.0, -5.0, 0.5, 0.0])
    # Clipped: 0-1-2 costs 1 + 0 against 0.5 for 0-2.
    assert clip(theta).tolist() == [0.0, 0.0, 1.0, 0.0]
    assert theta.tolist() == [1.0, -5.0, 0.5, 0.0]  # the input is not modified
    refuse = cg.solvers.get("graph_shortest_path", edges=edges, negative="raise", backend=backend)
    with pytest.raises(ValueError, match="theta must be >= 0 with negative='raise' on a graph with cycles"):
        refuse(theta)


def test_cycles_off_the_source_target_part_keep_a_dag() -> None:
    # 2 <-> 3 is a cycle, but 3 reaches no target path: the relevant part 0 -> 1 -> 4 is acyclic.
    solver = cg.solvers.get("graph_shortest_path", edges=[[0, 1], [1, 4], [0, 2], [2, 3], [3, 2]])
    assert solver.is_dag and solver.accepts_negative
    assert solver(torch.tensor([-1.0, -1.0, -9.0, -9.0, -9.0])).tolist() == [1.0, 1.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_shape_dtype_and_device(backend: str, device: str) -> None:
    edges = torch.tensor(grid_arcs(3, 3))
    solver = cg.solvers.get("graph_shortest_path", edges=edges, backend=backend)
    theta = torch.rand(2, 3, 12, dtype=torch.float32, device=device)
    y = solver(theta)
    assert y.shape == theta.shape and y.dtype == theta.dtype and y.device == theta.device
    assert torch.equal(y.sum(-1).cpu(), torch.full((2, 3), 4.0))
    expected = cg.solvers.get("graph_shortest_path", edges=edges, backend="numba")(theta.cpu())
    assert torch.equal(y.cpu(), expected)


def test_imle_through_both_backends(imle_through_both_backends) -> None:
    edges = random_graph(np.random.default_rng(7), 8, 16)
    theta = torch.rand(4, len(edges), dtype=torch.float64) + 0.1
    imle_through_both_backends("graph_shortest_path", theta, edges=edges, noise="normal")


def test_options_and_registry() -> None:
    assert "graph_shortest_path" in cg.solvers.names()
    options = cg.solvers.options("graph_shortest_path")
    assert {"edges", "num_nodes", "source", "target", "directed", "negative", "backend"} <= set(options)
    solver = cg.solvers.get("graph_shortest_path", edges=np.array([[0, 1], [1, 2]], dtype=np.uint8), num_nodes=5, target=2)
    assert solver.num_nodes == 5 and solver.target == 2
    assert isinstance(solver, GraphShortestPath) and "num_nodes=5" in repr(solver)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"edges": [0, 1]}, r"edges must be an integer array \[m, 2\].*got shape \(2,\)"),
        ({"edges": np.zeros((0, 2), dtype=int)}, r"got shape \(0, 2\)"),
        ({"edges": [[0, 1, 2]]}, r"got shape \(1, 3\)"),
        ({"edges": [[0, 1], [1]]}, "got a ragged list"),
        ({"edges": [[0.0, 1.0]]}, "got dtype float64"),
        ({"edges": torch.tensor([[0.0, 1.0]])}, "got a tensor of dtype torch.float32"),
        ({"edges": [[True, False]]}, "got dtype bool"),
        ({"edges": [[0, 1], [-1, 1]]}, r"non-negative node indices, got edge 1 = \(-1, 1\)"),
        ({"edges": [[0, 1], [1, 1]]}, r"must not contain self-loops .* got edge 1 = \(1, 1\)"),
        ({"edges": [[0, 1], [1, 5]], "num_nodes": 4}, r"below num_nodes=4, got edge 1 = \(1, 5\)"),
        ({"edges": [[0, 1]], "num_nodes": 0}, "num_nodes must be an integer >= 1, got 0"),
        ({"edges": [[0, 1]], "source": 2}, r"source must be a node index in \[0, 1\], got 2"),
        ({"edges": [[0, 1]], "target": -1}, r"target must be a node index in \[0, 1\], got -1"),
        ({"edges": [[0, 1]], "target": True}, "target must be a node index"),
        ({"edges": [[1, 0]]}, "target must be reachable from source, got target=1 unreachable from source=0"),
        ({"edges": [[0, 1]], "directed": 1}, "directed must be True or False, got 1"),
        ({"edges": [[0, 1]], "negative": "zero"}, r"negative must be one of \['clip', 'raise'\]"),
        ({"edges": [[0, 1]], "backend": "cuda"}, "backend must be one of"),
    ],
)
def test_bad_options(options: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        cg.solvers.get("graph_shortest_path", **options)


def test_bad_theta() -> None:
    solver = cg.solvers.get("graph_shortest_path", edges=[[0, 1], [1, 2]])
    with pytest.raises(ValueError, match=r"theta must have one cost per edge, \[\*, 2\], got shape \(3,\)"):
        solver(torch.ones(3))
    with pytest.raises(ValueError, match="finite"):
        solver(torch.tensor([1.0, math.nan]))
    with pytest.raises(ValueError, match="magnitudes at most .* for a path of up to 2 edges"):
        solver(torch.tensor([1e308, 1.0], dtype=torch.float64))


def test_torch_backend_reads_the_host_only_where_documented(monkeypatch) -> None:
    """On a DAG the torch kernel makes no host read; with cycles, one per convergence check plus one for the walk."""
    from _devices import SyncCounter

    rng = np.random.default_rng(8)
    dag = cg.solvers.get("graph_shortest_path", edges=grid_arcs(5, 5), backend="torch")
    cyclic = cg.solvers.get("graph_shortest_path", edges=grid_arcs(5, 5), directed=False, backend="torch")
    theta = torch.from_numpy(rng.random((16, 40)))
    expected = [solver(theta) for solver in (dag, cyclic)]  # warm the per-device arc tensors
    counter = SyncCounter()
    with counter.count(monkeypatch):
        on_dag = dag.solve_torch(theta)
    assert (counter.reads, counter.copies) == (0, 0)
    with counter.count(monkeypatch):
        on_cycles = cyclic.solve_torch(theta)
    # 24 relevant nodes: at most 23 sweeps, checks at sweeps 8 and 16, then the walk's one read.
    assert 1 <= counter.reads <= 3 and counter.copies == 0
    assert torch.equal(on_dag, expected[0]) and torch.equal(on_cycles, expected[1])


def test_spo_plus_takes_the_dag_solver_and_refuses_the_cyclic_one() -> None:
    """On a DAG 2 theta - theta_true may be negative and is solved as given: SPO+'s subgradient in closed form."""
    rng = np.random.default_rng(9)
    theta = torch.from_numpy(rng.normal(size=(8, 40))).requires_grad_()
    theta_true = torch.from_numpy(rng.random((8, 40)))
    dag = cg.solvers.get("graph_shortest_path", edges=grid_arcs(5, 5))
    loss = cg.losses.spo_plus(theta, theta_true, solver=dag)
    loss.sum().backward()
    expected = 2 * (dag(theta_true) - dag(2 * theta.detach() - theta_true))  # min: -2 (w*(2t - c) - w*(c))
    assert torch.equal(theta.grad, expected) and bool((loss >= -1e-12).all())
    cyclic = cg.solvers.get("graph_shortest_path", edges=grid_arcs(5, 5), directed=False)
    with pytest.raises(ValueError, match="accepts_negative"):
        cg.losses.spo_plus(theta, theta_true, solver=cyclic)

"""Tests for combgrad/solvers/spanning_tree.py against networkx and the documented tie rule."""

from __future__ import annotations

import itertools

import networkx as nx
import numpy as np
import pytest
import torch

import combgrad as cg
from combgrad.solvers import SpanningTree


def random_weights(rng: np.random.Generator, batch: int, n: int) -> np.ndarray:
    weights = rng.normal(size=(batch, n, n))
    return (weights + weights.transpose(0, 2, 1)) / 2


def networkx_weight(weights: np.ndarray, sense: str) -> float:
    graph = nx.Graph()
    graph.add_nodes_from(range(weights.shape[0]))
    for i, j in itertools.combinations(range(weights.shape[0]), 2):
        graph.add_edge(i, j, weight=weights[i, j])
    tree = (nx.minimum_spanning_tree if sense == "min" else nx.maximum_spanning_tree)(graph)
    return tree.size(weight="weight")


def assert_spanning_tree(adjacency: np.ndarray) -> None:
    n = adjacency.shape[0]
    assert set(np.unique(adjacency)) <= {0.0, 1.0}
    np.testing.assert_array_equal(adjacency, adjacency.T)
    assert not adjacency.diagonal().any()
    assert adjacency.sum() == 2 * (n - 1)
    assert nx.is_connected(nx.from_numpy_array(adjacency))


def tie_rule_adjacency(weights: np.ndarray, sense: str) -> np.ndarray:
    """Plain-Python Prim following the documented rule, for exact comparison on ties."""
    signed = weights if sense == "min" else -weights
    n = weights.shape[0]
    tree = [0]
    adjacency = np.zeros((n, n))
    while len(tree) < n:
        # Rule: the best weight; then the lowest new vertex; then its earliest-joined parent.
        best = min(signed[u, v] for u in tree for v in range(n) if v not in tree)
        vertex = min(v for u in tree for v in range(n) if v not in tree and signed[u, v] == best)
        parent = next(u for u in tree if signed[u, vertex] == best)
        adjacency[vertex, parent] = adjacency[parent, vertex] = 1
        tree.append(vertex)
    return adjacency


@pytest.mark.parametrize("sense", ["min", "max"])
@pytest.mark.parametrize("n", [2, 5, 17, 30])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weight_matches_networkx(sense, n, seed):
    weights = random_weights(np.random.default_rng(seed), 4, n)
    y = cg.solvers.get("spanning_tree", sense=sense)(torch.from_numpy(weights)).numpy()
    for instance, adjacency in zip(weights, y):
        assert_spanning_tree(adjacency)
        expected = networkx_weight(instance, sense)
        assert (instance * adjacency).sum() / 2 == pytest.approx(expected, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("sense", ["min", "max"])
@pytest.mark.parametrize("seed", [0, 1])
def test_ties_follow_documented_rule(sense, seed):
    # Weights in {0, 1, 2} make equal edges common, so the exact adjacency, not
    # only the total weight, pins down the tie rule.
    rng = np.random.default_rng(seed)
    weights = rng.integers(0, 3, size=(5, 9, 9)).astype(np.float64)
    weights = np.triu(weights, 1) + np.triu(weights, 1).transpose(0, 2, 1)
    y = SpanningTree(sense=sense)(torch.from_numpy(weights)).numpy()
    for instance, adjacency in zip(weights, y):
        np.testing.assert_array_equal(adjacency, tie_rule_adjacency(instance, sense))
        assert (instance * adjacency).sum() / 2 == networkx_weight(instance, sense)


def test_constant_weights_give_a_star_on_vertex_zero():
    # All edges tie: each new vertex is the lowest index left, and its parent the
    # earliest-joined tree vertex, which is always vertex 0.
    y = SpanningTree()(torch.ones(5, 5))
    expected = torch.zeros(5, 5)
    expected[0, 1:] = expected[1:, 0] = 1
    assert torch.equal(y, expected)


def test_diagonal_is_ignored():
    weights = torch.from_numpy(random_weights(np.random.default_rng(3), 1, 8))[0]
    solver = SpanningTree()
    shifted = weights.clone()
    shifted.diagonal().copy_(torch.linspace(-100, 100, 8, dtype=torch.float64))
    assert torch.equal(solver(weights), solver(shifted))


def test_single_vertex():
    assert torch.equal(SpanningTree()(torch.tensor([[7.0]])), torch.zeros(1, 1))


def test_deterministic_and_batch_dims():
    weights = torch.from_numpy(random_weights(np.random.default_rng(4), 6, 10)).reshape(2, 3, 10, 10)
    solver = SpanningTree(sense="max")
    y = solver(weights)
    assert y.shape == weights.shape
    assert torch.equal(y, solver(weights))
    for index in itertools.product(range(2), range(3)):
        assert torch.equal(y[index], solver(weights[index]))


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_dtype_and_device_preserved_and_input_unchanged(dtype):
    weights = torch.from_numpy(random_weights(np.random.default_rng(5), 3, 6)).to(dtype)
    before = weights.clone()
    y = SpanningTree()(weights)
    assert y.dtype == dtype and y.device == weights.device
    assert torch.equal(weights, before)


def test_empty_batch():
    assert SpanningTree()(torch.ones(0, 4, 4)).shape == (0, 4, 4)


@pytest.mark.parametrize("sense", ["min", "max"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_asymmetric_weights_solve_the_linear_objective(sense, seed):
    # <w, y> over symmetric y only sees w + w^T, so an asymmetric matrix (a
    # perturbed one, inside an estimator) is solved as its symmetric part.
    rng = np.random.default_rng(seed)
    weights = torch.from_numpy(rng.normal(size=(7, 7)))
    y = SpanningTree(sense=sense)(weights)
    y_symmetric_part = SpanningTree(sense=sense)((weights + weights.T) / 2)
    assert torch.equal(y, y_symmetric_part)
    assert_spanning_tree(y.numpy())
    reference = (nx.minimum_spanning_tree if sense == "min" else nx.maximum_spanning_tree)(
        nx.from_numpy_array((weights + weights.T).numpy())
    )
    assert float((weights * y).sum()) == pytest.approx(reference.size(weight="weight"))


def test_registry_entry():
    solver = cg.solvers.get("spanning_tree", sense="max")
    assert isinstance(solver, SpanningTree)
    assert (solver.name, solver.sense, solver.event_ndim) == ("spanning_tree", "max", 2)
    assert cg.solvers.get("spanning_tree").sense == "min"


def test_bad_sense_raises():
    with pytest.raises(ValueError, match=r"spanning_tree: sense must be 'min' or 'max', got 'maximum'"):
        SpanningTree(sense="maximum")


def test_keyword_only_options():
    with pytest.raises(TypeError):
        SpanningTree("max")


@pytest.mark.parametrize(
    "weights, match",
    [
        (torch.ones(4), r"must have at least 2 dims"),
        (torch.ones(3, 4), r"must be square \[\*, n, n\] with n >= 1, got shape \(3, 4\)"),
        (torch.ones(2, 0, 0), r"must be square \[\*, n, n\] with n >= 1, got shape \(2, 0, 0\)"),
        (torch.tensor([[0.0, float("nan")], [float("nan"), 0.0]]), r"must be finite"),
        (torch.ones(3, 3, dtype=torch.int32), r"must be a floating tensor"),
    ],
)
def test_bad_weights_raise(weights, match):
    with pytest.raises(ValueError, match=match):
        SpanningTree()(weights)


def test_weights_whose_sums_overflow_are_refused():
    # Guards issue 8 item 5: weights of 1e308 gave a self-loop with vertex 0
    # isolated, because w[u, v] + w[v, u] overflowed to inf.
    weights = torch.full((4, 4), 1e308, dtype=torch.float64)
    with pytest.raises(
        ValueError, match=r"spanning_tree: weights must have magnitudes at most 1\.5e\+307 for a tree on 4 vertices"
    ):
        cg.solvers.get("spanning_tree")(weights)
    with pytest.raises(ValueError, match="magnitudes at most"):
        cg.solvers.get("spanning_tree", sense="max")(-weights)


def test_largest_accepted_weights_still_give_a_tree():
    limit = float(np.finfo(np.float64).max) / (2 * 2 * 3)
    weights = torch.full((4, 4), limit, dtype=torch.float64)
    tree = cg.solvers.get("spanning_tree")(weights)
    assert tree.sum() == 6 and torch.equal(tree, tree.T) and tree.diagonal().sum() == 0
    assert tree[0].sum() == 3  # a star on vertex 0, the documented tie rule
    assert torch.isfinite((tree * weights).sum())


def test_single_vertex_accepts_any_finite_weight():
    assert cg.solvers.get("spanning_tree")(torch.tensor([[1e308]], dtype=torch.float64)).tolist() == [[0.0]]


# --- the torch backend (issue 10): agreement with the numba kernel on every device


def tree_weight(weights: torch.Tensor, adjacency: torch.Tensor) -> torch.Tensor:
    """<w, y> per instance, in float64."""
    return (weights.double() * adjacency.double()).sum((-2, -1))


@pytest.mark.parametrize("sense", ["min", "max"])
@pytest.mark.parametrize("n, batch", [(2, 200), (3, 200), (5, 300), (12, 300), (30, 300)])
def test_torch_backend_returns_the_numba_tree_in_float64(device, sense, n, batch):
    # 2 x 1300 random instances (asymmetric, as inside an estimator). In float64
    # both kernels compare the same keys with the same rule, so the trees are equal,
    # not only their weights.
    generator = torch.Generator().manual_seed(n)
    weights = torch.randn(batch, n, n, generator=generator, dtype=torch.float64)
    numba = SpanningTree(sense=sense, backend="numba")(weights)
    y = SpanningTree(sense=sense, backend="torch")(weights.to(device))
    assert y.device.type == device and y.dtype == torch.float64
    assert torch.equal(y.cpu(), numba)


@pytest.mark.parametrize("sense", ["min", "max"])
@pytest.mark.parametrize("n", [4, 9, 16])
def test_torch_backend_follows_the_tie_rule_on_integer_weights(device, sense, n):
    # Weights in {0, 1, 2}: many equal connections, so this pins the tie rule.
    generator = torch.Generator().manual_seed(100 + n)
    weights = torch.randint(0, 3, (300, n, n), generator=generator).double()
    numba = SpanningTree(sense=sense, backend="numba")(weights)
    assert torch.equal(SpanningTree(sense=sense, backend="torch")(weights.to(device)).cpu(), numba)
    for instance, adjacency in zip(weights[:3].numpy(), numba[:3].numpy()):
        symmetric = (instance + instance.T) / 2
        np.testing.assert_array_equal(adjacency, tie_rule_adjacency(symmetric, sense))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("sense", ["min", "max"])
def test_torch_backend_in_lower_precision_gives_optimal_weight(device, dtype, sense):
    # float32 keys (float16/bfloat16 are widened to float32) may order two
    # connections within float32 rounding differently from numba's float64 keys:
    # each of the n - 1 choices can then lose at most the rounding of one key,
    # 2 max|w| 2**-24 with margin, so the tree's weight (2 keys per edge in
    # <w, y>) is within 4 (n - 1) max|w| 2**-23 of the optimum.
    n = 20
    generator = torch.Generator().manual_seed(7)
    weights = torch.randn(400, n, n, generator=generator).to(dtype)
    y = SpanningTree(sense=sense, backend="torch")(weights.to(device)).cpu()
    assert y.dtype == dtype
    for adjacency in y[:20].double().numpy():
        assert_spanning_tree(adjacency)
    optimum = tree_weight(weights, SpanningTree(sense=sense, backend="numba")(weights))
    tolerance = 4 * (n - 1) * float(weights.double().abs().max()) * 2.0**-23
    assert (tree_weight(weights, y) - optimum).abs().max() <= tolerance


def test_torch_backend_edge_cases(device):
    solver = SpanningTree(backend="torch")
    assert torch.equal(solver(torch.tensor([[7.0]], device=device)).cpu(), torch.zeros(1, 1))
    assert solver(torch.ones(0, 4, 4, device=device)).shape == (0, 4, 4)
    star = torch.zeros(5, 5)
    star[0, 1:] = star[1:, 0] = 1
    assert torch.equal(solver(torch.ones(5, 5, device=device)).cpu(), star)
    # Batch dims, an unchanged input, and the largest accepted weights (whose
    # full sums w + w^T would overflow float32, but not the half-sums).
    weights = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(1)).to(device)
    before = weights.clone()
    y = solver(weights)
    assert y.shape == weights.shape and torch.equal(weights, before)
    assert torch.equal(y[1, 2], solver(weights[1, 2]))
    huge = torch.full((4, 4), 3e38, device=device)
    huge[0, 1] = huge[1, 0] = 1e38
    tree = solver(huge).cpu()
    assert tree[0, 1] == 1 and tree.sum() == 6


def test_auto_backend_is_numba_on_the_cpu_and_torch_elsewhere():
    solver = cg.solvers.get("spanning_tree")
    assert solver.backends == ("numba", "torch") and solver.backend == "auto"
    assert solver.backend_for(torch.device("cpu")) == "numba"
    assert solver.backend_for(torch.device("cuda")) == "torch"
    assert repr(cg.solvers.get("spanning_tree", backend="torch")) == "SpanningTree(sense='min', backend='torch')"


def test_unknown_backend_raises():
    with pytest.raises(ValueError, match=r"spanning_tree: backend must be one of \['auto', 'numba', 'torch'\], got 'triton'"):
        SpanningTree(backend="triton")


def test_an_estimator_through_the_torch_backend_matches_numba(device, imle_through_both_backends):
    # I-MLE draws its noise under a fixed seed, and in float64 the backends
    # return the same trees, so forward and gradient agree exactly.
    imle_through_both_backends("spanning_tree", torch.randn(4, 6, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64).to(device))

"""Tests for combgrad/solvers/tsp.py: CP-SAT tours against brute force over all tours."""

from __future__ import annotations

import functools
import itertools
import time

import networkx as nx
import numpy as np
import pytest
import torch

import combgrad as cg
from combgrad import SolverError
from combgrad.solvers.tsp import AUTO_RESOLUTION, TSP


@functools.lru_cache(maxsize=None)
def all_tours(n: int) -> np.ndarray:
    """The edge masks [(n-1)!/2, m] of every tour of K_n (node 0 first, one direction each)."""
    index = {edge: k for k, edge in enumerate(itertools.combinations(range(n), 2))}
    masks = []
    for order in itertools.permutations(range(1, n)):
        if order[0] > order[-1]:
            continue  # the same tour travelled backwards
        cycle = (0, *order, 0)
        mask = np.zeros(len(index))
        for a, b in zip(cycle, cycle[1:]):
            mask[index[min(a, b), max(a, b)]] = 1
        masks.append(mask)
    return np.array(masks)


def assert_tours(y: np.ndarray, n: int) -> None:
    """Every row is the edge mask of one Hamiltonian cycle of K_n."""
    edges = list(itertools.combinations(range(n), 2))
    for row in y:
        assert set(np.unique(row).tolist()) <= {0.0, 1.0}
        graph = nx.Graph([edges[k] for k in np.flatnonzero(row)])
        assert graph.number_of_nodes() == n and graph.number_of_edges() == n
        assert all(degree == 2 for _, degree in graph.degree()) and nx.is_connected(graph)


def assert_optimal(y: np.ndarray, theta: np.ndarray, n: int) -> None:
    """The tour's cost is the brute-force optimum within the documented rounding bound."""
    best = (theta @ all_tours(n).T).min(axis=1)
    got = (theta * y).sum(axis=1)
    m = n * (n - 1) // 2
    resolution = min(AUTO_RESOLUTION, 2**60 // (2 * m))
    tolerance = n * np.abs(theta).max(axis=1) / resolution + 1e-12
    assert (got >= best - 1e-12).all() and (got - best <= tolerance).all(), (got - best, tolerance)


@pytest.mark.parametrize("n", [3, 4, 5, 6, 7, 8])
@pytest.mark.parametrize("costs", ["uniform", "euclidean", "signed"])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_brute_force(n: int, costs: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    solver = cg.solvers.get("tsp", num_nodes=n)
    if costs == "uniform":
        theta = rng.uniform(0, 1, size=(6, solver.num_edges))
    elif costs == "euclidean":
        points = rng.uniform(0, 1, size=(6, n, 2))
        i, j = solver.edges.T
        theta = np.linalg.norm(points[:, i] - points[:, j], axis=-1)
    else:  # negative costs too: every tour has n edges, so a shift changes nothing
        theta = rng.normal(size=(6, solver.num_edges))
    y = solver(torch.from_numpy(theta)).numpy()
    assert y.shape == theta.shape
    assert_tours(y, n)
    assert_optimal(y, theta, n)


@pytest.mark.parametrize("n", [5, 8])
def test_integer_costs_with_ties_are_exactly_optimal(n: int) -> None:
    """Costs in {1, 2, 3}: many tied tours. Distinct tour costs differ by >= 1, i.e. by
    >= 2**30 / 3 after scaling, while rounding moves a tour by <= n / 2: the optimum
    of the rounded costs is exactly optimal."""
    rng = np.random.default_rng(3)
    solver = cg.solvers.get("tsp", num_nodes=n)
    theta = rng.integers(1, 4, size=(8, solver.num_edges)).astype(np.float64)
    y = solver(torch.from_numpy(theta)).numpy()
    assert_tours(y, n)
    np.testing.assert_array_equal((theta * y).sum(axis=1), (theta @ all_tours(n).T).min(axis=1))
    assert torch.equal(solver(torch.from_numpy(theta)), torch.from_numpy(y))  # deterministic


def test_edges_follow_itertools_combinations() -> None:
    solver = cg.solvers.get("tsp", num_nodes=5)
    assert solver.edges.tolist() == [list(edge) for edge in itertools.combinations(range(5), 2)]
    assert solver.num_edges == 10


def test_matches_pyepo_dfj_model_with_gurobi() -> None:
    """PyEPO's own TSP (DFJ with lazy subtour cuts, Gurobi) on 12 nodes, same edge order."""
    pytest.importorskip("pyepo")
    pytest.importorskip("gurobipy")
    from pyepo.model.grb import tspDFJModel

    rng = np.random.default_rng(0)
    reference = tspDFJModel(12)
    solver = cg.solvers.get("tsp", num_nodes=12)
    assert [tuple(edge) for edge in solver.edges.tolist()] == list(reference.edges)
    theta = rng.uniform(0, 1, size=(4, solver.num_edges))
    y = solver(torch.from_numpy(theta)).numpy()
    assert_tours(y, 12)
    for row, tour in zip(theta, y):
        reference.setObj(row)
        _, objective = reference.solve()
        assert abs(float(row @ tour) - objective) <= 1e-6 * objective


def test_pool_and_thread_executor_agree_with_serial() -> None:
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(5)
    solver = cg.solvers.get("tsp", num_nodes=9)
    theta = torch.from_numpy(rng.uniform(0, 1, size=(2, 5, solver.num_edges)))
    serial = solver(theta)
    pooled = cg.solvers.get("tsp", num_nodes=9, workers=2)(theta)
    assert pooled.shape == theta.shape and torch.equal(serial, pooled)
    with ThreadPoolExecutor(2) as threads:
        on_threads = cg.solvers.get("tsp", num_nodes=9, executor=threads)
        assert "executor=ThreadPoolExecutor" in repr(on_threads)
        assert torch.equal(on_threads(theta), serial)


def test_time_limit_that_cannot_prove_optimality_raises_naming_the_instance() -> None:
    solver = cg.solvers.get("tsp", num_nodes=60, time_limit=0.001)
    theta = torch.from_numpy(np.random.default_rng(0).uniform(0, 1, size=(3, solver.num_edges)))
    started = time.monotonic()
    with pytest.raises(SolverError, match=r"^tsp: instance 0: CP-SAT did not prove optimality within time_limit=0\.001 s"):
        solver(theta)
    assert time.monotonic() - started < 10


def test_batch_shape_dtype_and_input_are_preserved() -> None:
    solver = cg.solvers.get("tsp", num_nodes=4)
    theta = torch.tensor([[[1.0, 9.0, 1.0, 1.0, 9.0, 1.0]], [[9.0, 1.0, 1.0, 1.0, 1.0, 9.0]]], dtype=torch.float32)
    before = theta.clone()
    y = solver(theta)
    assert y.shape == (2, 1, 6) and y.dtype == torch.float32
    assert torch.equal(y, torch.tensor([[[1.0, 0.0, 1.0, 1.0, 0.0, 1.0]], [[0.0, 1.0, 1.0, 1.0, 1.0, 0.0]]]))
    assert torch.equal(theta, before)


def test_triangle_uses_every_edge() -> None:
    assert torch.equal(cg.solvers.get("tsp", num_nodes=3)(torch.tensor([5.0, -1.0, 2.0])), torch.ones(3))


def test_solver_contract() -> None:
    solver = cg.solvers.get("tsp", num_nodes=5)
    assert isinstance(solver, TSP) and isinstance(solver, cg.solvers.Solver)
    assert (solver.name, solver.sense, solver.event_ndim) == ("tsp", "min", 1)
    assert "tsp" in cg.solvers.names()
    assert set(cg.solvers.options("tsp")) >= {"num_nodes", "workers", "executor", "timeout", "time_limit"}


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"num_nodes": 2}, r"tsp: num_nodes must be an integer >= 3, got 2"),
        ({"num_nodes": 4.0}, r"tsp: num_nodes must be an integer >= 3, got 4.0"),
        ({"num_nodes": 4, "workers": -1}, r"tsp: workers must be an integer >= 0, got -1"),
        ({"num_nodes": 4, "time_limit": 0}, r"tsp: time_limit must be a finite number > 0, got 0"),
        ({"num_nodes": 4, "timeout": float("nan")}, r"tsp: timeout must be a finite number > 0"),
    ],
)
def test_bad_options_are_refused(options: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        cg.solvers.get("tsp", **options)


def test_missing_num_nodes_is_refused() -> None:
    with pytest.raises(TypeError, match="num_nodes"):
        cg.solvers.get("tsp")


@pytest.mark.parametrize(
    ("theta", "error", "match"),
    [
        (torch.ones(2, 5), ValueError, r"tsp: theta's last dim must be n \(n - 1\) / 2 = 6 \(one cost per edge of 4 nodes\), got shape \(2, 5\)"),
        (torch.tensor([1.0, float("nan"), 0.0, 1.0, 1.0, 1.0]), ValueError, r"tsp: theta must be finite"),
        (torch.ones(6, dtype=torch.int64), ValueError, r"tsp: theta must be a floating tensor"),
        ([1.0] * 6, TypeError, r"tsp: theta must be a torch.Tensor, got list"),
    ],
)
def test_bad_theta_is_refused(theta, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        cg.solvers.get("tsp", num_nodes=4)(theta)


def test_ortools_is_imported_on_first_use_not_by_the_solver_module() -> None:
    import ast
    from pathlib import Path

    import combgrad.solvers.tsp as tsp

    tree = ast.parse(Path(tsp.__file__).read_text())
    top_level = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    assert not any("ortools" in (getattr(node, "module", None) or "") for node in top_level)
    assert not any(alias.name.startswith("ortools") for node in top_level for alias in node.names)


def test_timeout_names_the_unfinished_instances() -> None:
    """workers=0 checks the call's deadline between instances: after the first 12-node
    search (milliseconds) a 1 us deadline has passed (perhaps already before it)."""
    solver = cg.solvers.get("tsp", num_nodes=12, timeout=1e-6)
    theta = torch.from_numpy(np.random.default_rng(2).uniform(0, 1, size=(3, solver.num_edges)))
    with pytest.raises(SolverError, match=r"^tsp: timeout=1e-06 s exceeded with instances [01]\.\.2 unfinished"):
        solver(theta)

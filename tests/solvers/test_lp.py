"""Tests for combgrad/solvers/lp.py: GLOP LPs against scipy's linprog (HiGHS), networkx for flows."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
import torch
from scipy.optimize import linprog

import combgrad as cg
from combgrad import SolverError
from combgrad.solvers.lp import LP

# GLOP's and HiGHS's optimality tolerances are about 1e-7 relative on reduced
# costs and feasibility; on these well-scaled LPs both land on the exact optimum
# to ~1e-12, so 1e-7 is a safe bound that a wrong vertex (off by O(1)) fails.
RELATIVE = 1e-7
FEASIBLE = 1e-7


def random_lp(rng: np.random.Generator, n: int, inequalities: int, equalities: int, box: str) -> dict:
    """Constraints that a random point x0 satisfies, so the LP is feasible.

    box "finite": 0 <= x <= u (bounded); "lower": x >= l (defaults: x >= 0 when
    l is None) with a row sum(x) <= C so that the feasible set stays bounded;
    "free": per-variable bounds with some None/inf entries and a bounding row.
    """
    options: dict = {}
    if box == "finite":
        lower, upper = np.zeros(n), rng.uniform(0.5, 3, size=n)
        options.update(lower=lower, upper=upper)
    elif box == "lower":
        lower, upper = np.zeros(n), np.full(n, np.inf)
    else:
        lower = np.where(rng.random(n) < 0.5, -np.inf, -1.0)
        upper = np.where(rng.random(n) < 0.5, np.inf, 2.0)
        # None entries and infinities both mean no bound
        options.update(lower=[None if np.isinf(v) else v for v in lower], upper=upper)
    x0 = np.clip(rng.uniform(-1, 2, size=n), np.maximum(lower, -1), np.minimum(upper, 2))
    A = rng.normal(size=(inequalities, n))
    b = A @ x0 + rng.uniform(0, 1, size=inequalities)
    if box != "finite":
        # |x_j| <= 10 for all j, as two rows: keeps the LP bounded for any theta.
        A = np.vstack([A, np.eye(n), -np.eye(n)])
        b = np.concatenate([b, np.full(2 * n, 10.0)])
    options.update(A=A, b=b)
    if equalities:
        A_eq = rng.normal(size=(equalities, n))
        options.update(A_eq=A_eq, b_eq=A_eq @ x0)
    return options


def bounds_of(value, default: float, n: int) -> np.ndarray:
    if value is None:
        return np.full(n, default)
    if isinstance(value, list):
        value = [default if v is None else v for v in value]
    return np.broadcast_to(np.asarray(value, dtype=float), (n,))


def reference(theta: np.ndarray, options: dict, sense: str, n: int) -> np.ndarray:
    """The optimal objective value of each instance, by scipy's HiGHS."""
    lower = bounds_of(options.get("lower", 0.0), -np.inf, n)
    upper = bounds_of(options.get("upper"), np.inf, n)
    bounds = [(None if np.isinf(low) else low, None if np.isinf(high) else high) for low, high in zip(lower, upper)]
    values = []
    for row in theta:
        c = row if sense == "min" else -row
        result = linprog(c, A_ub=options.get("A"), b_ub=options.get("b"), A_eq=options.get("A_eq"), b_eq=options.get("b_eq"), bounds=bounds, method="highs")
        assert result.status == 0, result.message
        values.append(result.fun if sense == "min" else -result.fun)
    return np.array(values)


def assert_feasible(x: np.ndarray, options: dict, n: int) -> None:
    if options.get("A") is not None:
        assert (x @ np.asarray(options["A"]).T <= np.asarray(options["b"]) + FEASIBLE).all()
    if options.get("A_eq") is not None:
        assert np.abs(x @ np.asarray(options["A_eq"]).T - np.asarray(options["b_eq"])).max() <= FEASIBLE
    assert (x >= bounds_of(options.get("lower", 0.0), -np.inf, n) - FEASIBLE).all()
    assert (x <= bounds_of(options.get("upper"), np.inf, n) + FEASIBLE).all()


@pytest.mark.parametrize("sense", ["min", "max"])
@pytest.mark.parametrize(
    ("n", "inequalities", "equalities", "box"),
    [(5, 3, 0, "finite"), (8, 4, 2, "finite"), (12, 6, 3, "lower"), (6, 2, 1, "free"), (20, 10, 0, "lower"), (10, 0, 4, "finite")],
)
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_scipy_highs(sense: str, n: int, inequalities: int, equalities: int, box: str, seed: int) -> None:
    """24 problems x 12 instances = 288 random feasible LPs."""
    rng = np.random.default_rng(seed)
    options = random_lp(rng, n, inequalities, equalities, box)
    solver = cg.solvers.get("lp", sense=sense, **options)
    theta = rng.normal(size=(12, n))
    x = solver(torch.from_numpy(theta)).numpy()
    assert x.shape == theta.shape
    assert_feasible(x, options, n)
    best = reference(theta, options, sense, n)
    got = (theta * x).sum(axis=1)
    np.testing.assert_allclose(got, best, rtol=RELATIVE, atol=RELATIVE)


def grid_flow(height: int, width: int) -> tuple[list[tuple[int, int]], np.ndarray, np.ndarray]:
    """A grid's arcs (right and down from each node, in node order; PyEPO orders them by row) and
    the flow equalities from node 0 to the last."""
    arcs = []
    for i in range(height):
        for j in range(width):
            node = i * width + j
            if j + 1 < width:
                arcs.append((node, node + 1))
            if i + 1 < height:
                arcs.append((node, node + width))
    incidence = np.zeros((height * width, len(arcs)))
    for k, (tail, head) in enumerate(arcs):
        incidence[tail, k] -= 1
        incidence[head, k] += 1
    supply = np.zeros(height * width)
    supply[0], supply[-1] = -1, 1
    return arcs, incidence, supply


@pytest.mark.parametrize("upper", [1, None])
def test_shortest_path_flow_lp_is_an_exact_0_1_shortest_path(upper) -> None:
    arcs, incidence, supply = grid_flow(5, 5)
    solver = cg.solvers.get("lp", A_eq=incidence, b_eq=supply, upper=upper)
    rng = np.random.default_rng(0)
    costs = rng.uniform(0.1, 2, size=(32, len(arcs)))
    x = solver(torch.from_numpy(costs)).numpy()
    assert set(np.unique(x).tolist()) <= {0.0, 1.0}  # exactly, after the documented snap
    for row, y in zip(costs, x):
        graph = nx.DiGraph()
        graph.add_weighted_edges_from((tail, head, cost) for (tail, head), cost in zip(arcs, row))
        best = nx.shortest_path_length(graph, 0, 24, weight="weight")
        assert abs(float(row @ y) - best) <= 1e-12 * best
        # the chosen arcs form one path from 0 to 24: flow conservation holds exactly
        np.testing.assert_array_equal(incidence @ y, supply)


def test_ties_are_broken_per_instance_not_by_the_batch() -> None:
    """Integer costs on a grid tie many paths; every instance is solved from scratch,
    so its vertex does not depend on the other instances or their order."""
    _, incidence, supply = grid_flow(4, 4)
    solver = cg.solvers.get("lp", A_eq=incidence, b_eq=supply, upper=1)
    rng = np.random.default_rng(1)
    costs = torch.from_numpy(rng.integers(1, 3, size=(16, incidence.shape[1])).astype(np.float64))
    batch = solver(costs)
    assert torch.equal(solver(costs.flip(0)), batch.flip(0))
    assert torch.equal(torch.cat([solver(row)[None] for row in costs]), batch)
    assert set(batch.unique().tolist()) <= {0.0, 1.0}


def test_fractional_vertices_are_returned_as_they_are() -> None:
    solver = cg.solvers.get("lp", A=[[3.0, 3.0]], b=[1.0], sense="max")
    y = solver(torch.tensor([1.0, 0.0], dtype=torch.float64))
    assert torch.allclose(y, torch.tensor([1 / 3, 0.0], dtype=torch.float64), rtol=0, atol=1e-15)


def test_scale_of_theta_does_not_matter() -> None:
    options = random_lp(np.random.default_rng(3), 6, 3, 1, "finite")
    solver = cg.solvers.get("lp", **options)
    theta = torch.from_numpy(np.random.default_rng(4).normal(size=(8, 6)))
    y = solver(theta)
    for factor in (1e-300, 1e300, 5e-324):
        scaled = torch.sign(theta) * factor if factor < 1e-320 else theta * factor
        expected = solver(torch.sign(theta)) if factor < 1e-320 else y
        assert torch.equal(solver(scaled), expected)


def test_zero_objective_gives_a_feasible_point() -> None:
    options = random_lp(np.random.default_rng(5), 6, 3, 2, "finite")
    x = cg.solvers.get("lp", **options)(torch.zeros(3, 6, dtype=torch.float64)).numpy()
    assert_feasible(x, options, 6)


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize(
    "options",
    [
        {"A": [[1.0, 1.0, 1.0]], "b": [-1.0]},  # x >= 0 cannot sum to -1
        {"A_eq": [[1.0, 1.0, 0.0]], "b_eq": [3.0], "upper": 1.0},  # two x <= 1 cannot sum to 3
        {"A": [[1.0, 0.0, 0.0]], "b": [1.0], "lower": [2.0, 0.0, 0.0]},  # 2 <= x0 <= 1
    ],
    ids=["inequality", "equality", "bounds"],
)
def test_infeasible_problem_raises_naming_the_instance_and_the_kind(workers: int, options: dict) -> None:
    solver = cg.solvers.get("lp", workers=workers, **options)
    with pytest.raises(SolverError, match=r"^lp: instance 0: infeasible"):
        solver(torch.randn(5, 3))


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("sense", ["min", "max"])
def test_unbounded_instance_raises_naming_its_index_and_the_kind(workers: int, sense: str) -> None:
    """x >= 0 with no upper bound: only instance 2 pushes x0 to infinity."""
    solver = cg.solvers.get("lp", A=[[0.0, 1.0]], b=[1.0], sense=sense, workers=workers)
    sign = 1.0 if sense == "max" else -1.0
    theta = torch.tensor([[-sign, sign], [-sign, -sign], [sign, sign], [-sign, -sign]])
    best = "minimum" if sense == "min" else "maximum"
    with pytest.raises(SolverError, match=rf"^lp: instance 2: unbounded: <theta, x> has no finite {best}"):
        solver(theta)
    assert torch.equal(solver(theta[:2]), torch.tensor([[0.0, 1.0], [0.0, 0.0]]))


def test_free_variable_unbounded_both_ways() -> None:
    solver = cg.solvers.get("lp", lower=[None, 0.0], upper=[None, 1.0])
    with pytest.raises(SolverError, match=r"^lp: instance 1: unbounded"):
        solver(torch.tensor([[0.0, 1.0], [1.0, 1.0]]))
    assert torch.equal(solver(torch.tensor([0.0, -1.0])), torch.tensor([0.0, 1.0]))


@pytest.mark.parametrize("sense", ["min", "max"])
def test_pool_and_thread_executor_agree_with_serial(sense: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(7)
    options = random_lp(rng, 15, 8, 3, "finite")
    theta = torch.from_numpy(rng.normal(size=(3, 8, 15)))
    serial = cg.solvers.get("lp", sense=sense, **options)(theta)
    pooled = cg.solvers.get("lp", sense=sense, workers=2, **options)(theta)
    assert pooled.shape == theta.shape and torch.equal(serial, pooled)
    with ThreadPoolExecutor(2) as threads:
        solver = cg.solvers.get("lp", sense=sense, executor=threads, **options)
        assert "executor=ThreadPoolExecutor" in repr(solver)
        assert torch.equal(solver(theta), serial)


def test_time_limit_is_passed_to_glop() -> None:
    """A 0.001 s limit cannot solve a dense 400 x 400 LP (about 0.3 s here): SolverError naming it."""
    rng = np.random.default_rng(0)
    A = rng.uniform(0, 1, size=(400, 400))
    solver = cg.solvers.get("lp", A=A, b=A.sum(1) * 0.3, sense="max", time_limit=0.001)
    with pytest.raises(SolverError, match=r"^lp: instance 0: GLOP did not prove optimality within time_limit=0\.001 s"):
        solver(torch.from_numpy(rng.uniform(0, 1, size=(2, 400))))


def test_batch_shape_dtype_and_input_are_preserved() -> None:
    solver = cg.solvers.get("lp", A=[[1.0, 1.0, 1.0, 1.0]], b=[2.0], upper=1.0, sense="max")
    theta = torch.tensor([[[3.0, -1.0, 2.0, 5.0]], [[-1.0, -2.0, -3.0, 0.5]]], dtype=torch.float32)
    before = theta.clone()
    y = solver(theta)
    assert y.shape == (2, 1, 4) and y.dtype == torch.float32
    assert torch.equal(y, torch.tensor([[[1.0, 0.0, 0.0, 1.0]], [[0.0, 0.0, 0.0, 1.0]]]))
    assert torch.equal(theta, before)


def test_solver_contract_and_options() -> None:
    solver = cg.solvers.get("lp", A=[[1, 2]], b=[2])
    assert isinstance(solver, LP) and isinstance(solver, cg.solvers.Solver)
    assert (solver.name, solver.sense, solver.event_ndim, solver.n) == ("lp", "min", 1, 2)
    assert "lp" in cg.solvers.names()
    options = cg.solvers.options("lp")
    assert options["upper"].default is None and "no bound" in options["upper"].description


def test_n_from_bounds_alone() -> None:
    solver = cg.solvers.get("lp", lower=[0, -1, 2], upper=3, sense="max")
    y = solver(torch.tensor([[1.0, -1.0, 0.5], [-1.0, 1.0, -2.0]]))
    assert torch.equal(y, torch.tensor([[3.0, -1.0, 3.0], [0.0, 3.0, 2.0]]))


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"A": [1, 2], "b": [1]}, r"lp: A must have 2 dims \[m, n\], got shape \(2,\)"),
        ({"A": [[1, 2]], "b": [[1]]}, r"lp: b must have 1 dims \[m\], got shape \(1, 1\)"),
        ({"A": [[1, 2]], "b": [1, 2]}, r"lp: b must have one entry per row of A \(1\), got shape \(2,\)"),
        ({"A": [[1, 2]]}, r"lp: A was given without b"),
        ({"b_eq": [1]}, r"lp: b_eq was given without A_eq"),
        ({"A": [[1, 2]], "b": [1], "A_eq": [[1, 2, 3]], "b_eq": [1]}, r"lp: A_eq must have n=2 columns .* got shape \(1, 3\)"),
        ({"A": [[1, float("nan")]], "b": [1]}, r"lp: A must be finite"),
        ({"A": [[1, 2]], "b": [float("inf")]}, r"lp: b must be finite"),
        ({"A": [["a", "b"]], "b": [1]}, r"lp: A must be a numeric array"),
        ({"A": [[1, 2]], "b": [1], "lower": 2, "upper": 1}, r"lp: lower must be <= upper, got lower=2.0 > upper=1.0 for variable 0"),
        ({"A": [[1, 2]], "b": [1], "lower": float("nan")}, r"lp: lower must not contain NaN"),
        ({"A": [[1, 2]], "b": [1], "lower": float("inf")}, r"lp: lower must not be inf"),
        ({"A": [[1, 2]], "b": [1], "upper": -float("inf")}, r"lp: upper must not be -inf"),
        ({"A": [[1, 2]], "b": [1], "lower": [[0, 0]]}, r"lp: lower must be a number, an array \[n\] or None"),
        ({"A": [[1, 2]], "b": [1], "upper": "x"}, r"lp: upper must be a number, an array \[n\] or None"),
        ({"A": [[1, 2]], "b": [1], "upper": [1, 2, 3]}, r"lp: upper must have n=2 entries"),
        ({"lower": [0, 0], "upper": [1, 1, 1]}, r"lp: lower and upper must have the same length"),
        ({"lower": 0, "upper": 1}, r"lp: cannot tell the number of variables n"),
        ({"A": [[1, 2]], "b": [1], "sense": "maximize"}, r"lp: sense must be 'min' or 'max', got 'maximize'"),
        ({"A": [[1, 2]], "b": [1], "workers": -1}, r"lp: workers must be an integer >= 0, got -1"),
        ({"A": [[1, 2]], "b": [1], "time_limit": 0}, r"lp: time_limit must be a finite number > 0, got 0"),
        ({"A": [[1, 2]], "b": [1], "timeout": -1.0}, r"lp: timeout must be a finite number > 0, got -1.0"),
    ],
)
def test_bad_options_are_refused(options: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        cg.solvers.get("lp", **options)


def test_workers_and_executor_together_are_refused() -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as threads, pytest.raises(ValueError, match=r"lp: give workers=2 .* not both"):
        cg.solvers.get("lp", A=[[1, 2]], b=[1], workers=2, executor=threads)


@pytest.mark.parametrize(
    ("theta", "error", "match"),
    [
        (torch.ones(2, 4), ValueError, r"lp: theta's last dim must be n=3 \(the number of variables\), got shape \(2, 4\)"),
        (torch.tensor([1.0, float("nan"), 0.0]), ValueError, r"lp: theta must be finite"),
        (torch.ones(3, dtype=torch.int64), ValueError, r"lp: theta must be a floating tensor"),
        ([1.0, 2.0, 3.0], TypeError, r"lp: theta must be a torch.Tensor, got list"),
    ],
)
def test_bad_theta_is_refused(theta, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        cg.solvers.get("lp", A=[[1, 1, 1]], b=[2])(theta)


def test_ortools_is_imported_on_first_use_not_by_the_solver_module() -> None:
    import ast
    from pathlib import Path

    import combgrad.solvers.lp as lp

    tree = ast.parse(Path(lp.__file__).read_text())
    top_level = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    assert not any("ortools" in (getattr(node, "module", None) or "") for node in top_level)
    assert not any(alias.name.startswith("ortools") for node in top_level for alias in node.names)


def test_a_zero_coefficient_after_a_nonzero_one_is_honoured() -> None:
    """OR-Tools' set_objective_coefficients skips zeros: without clearing, instance 1
    was solved with instance 0's coefficient of x0 (and returned [3, 0.5])."""
    solver = cg.solvers.get("lp", A=[[1.0, 2.0]], b=[4.0], upper=3.0, sense="max")
    y = solver(torch.tensor([[1.0, 1.0], [0.0, 1.0]], dtype=torch.float64))
    torch.testing.assert_close(y, torch.tensor([[3.0, 0.5], [0.0, 2.0]], dtype=torch.float64), rtol=0, atol=1e-12)


def test_timeout_names_the_unfinished_instances() -> None:
    """workers=0 checks the call's deadline between instances: after the first one of a
    dense LP (milliseconds) a 1 us deadline has passed (perhaps already before it)."""
    rng = np.random.default_rng(1)
    A = rng.uniform(0, 1, size=(60, 60))
    solver = cg.solvers.get("lp", A=A, b=A.sum(1), sense="max", timeout=1e-6)
    with pytest.raises(SolverError, match=r"^lp: timeout=1e-06 s exceeded with instances [01]\.\.3 unfinished"):
        solver(torch.from_numpy(rng.uniform(0, 1, size=(4, 60))))

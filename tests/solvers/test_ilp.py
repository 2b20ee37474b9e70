"""Tests for combgrad/solvers/ilp.py: CP-SAT ILPs against brute-force enumeration."""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time

import numpy as np
import pytest
import torch

import combgrad as cg
from combgrad import SolverError
from combgrad.solvers.ilp import AUTO_RESOLUTION, ILP


def all_points(lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Every integer point of the box, [K, n]."""
    ranges = [range(int(low), int(high) + 1) for low, high in zip(lower, upper)]
    return np.array(list(itertools.product(*ranges)), dtype=np.float64)


def feasible_points(lower, upper, A=None, b=None, A_eq=None, b_eq=None) -> np.ndarray:
    points = all_points(lower, upper)
    keep = np.ones(len(points), dtype=bool)
    if A is not None:
        keep &= (points @ np.asarray(A, dtype=float).T <= np.asarray(b) + 1e-9).all(axis=1)
    if A_eq is not None:
        keep &= (np.abs(points @ np.asarray(A_eq, dtype=float).T - np.asarray(b_eq)) < 1e-9).all(axis=1)
    return points[keep]


def brute_force_optimum(theta: np.ndarray, points: np.ndarray, sense: str) -> np.ndarray:
    """The optimal objective value of each instance theta [B, n] over ``points``."""
    values = theta @ points.T
    return values.min(axis=1) if sense == "min" else values.max(axis=1)


def assert_optimal(y, theta, points, sense, lower, upper, scale=None) -> None:
    """y is one of ``points`` and its objective is optimal within the documented rounding bound."""
    y = y.numpy().astype(np.float64)
    theta = theta.numpy().astype(np.float64)
    assert np.array_equal(y, np.rint(y)), "x must be integral"
    is_point = (np.abs(y[:, None, :] - points[None]) < 1e-9).all(-1).any(-1)
    assert is_point.all(), "x must be feasible"
    best = brute_force_optimum(theta, points, sense)
    got = (theta * y).sum(axis=1)
    # Documented bound: |<theta, x> - opt| <= sum_j (u_j - l_j) / (2 s_i).
    width = float(np.sum(np.broadcast_to(upper, y.shape[1:]) - np.broadcast_to(lower, y.shape[1:])))
    if scale is None:
        magnitude = int(np.maximum(np.abs(lower), np.abs(upper)).sum() if np.ndim(lower) else 0)
        resolution = AUTO_RESOLUTION  # small instances: the 2**60 cap does not bind
        assert magnitude * resolution <= 2**60
        s = resolution / np.abs(theta).max(axis=1)
    else:
        s = np.full(len(theta), scale)
    tolerance = width / (2 * s) + 1e-9
    gap = got - best if sense == "min" else best - got
    assert (gap >= -1e-9).all() and (gap <= tolerance).all(), (gap, tolerance)


def random_problem(rng: np.random.Generator, n: int, low: int, high: int, inequalities: int, equalities: int):
    """Random integer constraints that a random point of the box satisfies."""
    x0 = rng.integers(low, high + 1, size=n)
    A = rng.integers(-3, 4, size=(inequalities, n))
    b = A @ x0 + rng.integers(0, 3, size=inequalities)
    A_eq = rng.integers(-2, 3, size=(equalities, n))
    b_eq = A_eq @ x0
    options = {"lower": low, "upper": high}
    if inequalities:
        options.update(A=A, b=b)
    if equalities:
        options.update(A_eq=A_eq, b_eq=b_eq)
    return options


@pytest.mark.parametrize("sense", ["min", "max"])
@pytest.mark.parametrize(
    ("n", "low", "high", "inequalities", "equalities"),
    [(10, 0, 1, 3, 0), (8, 0, 1, 2, 1), (6, -2, 2, 2, 0), (5, 0, 3, 1, 2), (4, -1, 3, 0, 1)],
)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_brute_force(sense, n, low, high, inequalities, equalities, seed) -> None:
    rng = np.random.default_rng(seed)
    options = random_problem(rng, n, low, high, inequalities, equalities)
    solver = cg.solvers.get("ilp", sense=sense, **options)
    theta = torch.from_numpy(rng.normal(size=(6, n)))
    points = feasible_points(np.full(n, low), np.full(n, high), options.get("A"), options.get("b"), options.get("A_eq"), options.get("b_eq"))
    assert_optimal(solver(theta), theta, points, sense, low, high)


@pytest.mark.parametrize("sense", ["min", "max"])
@pytest.mark.parametrize("seed", [0, 1])
def test_per_variable_bounds(sense: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    lower = np.array([0, -2, 1, 0, -1])
    upper = np.array([1, 0, 3, 2, 1])
    A = rng.integers(-2, 3, size=(2, 5))
    b = A @ lower + 2
    solver = cg.solvers.get("ilp", A=A, b=b, lower=lower, upper=torch.tensor(upper), sense=sense)
    theta = torch.from_numpy(rng.normal(size=(5, 5)))
    assert_optimal(solver(theta), theta, feasible_points(lower, upper, A, b), sense, lower, upper)


@pytest.mark.parametrize("n", [8, 12])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_knapsack_matches_brute_force(n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    weights = rng.integers(1, 21, size=n)
    capacity = int(weights.sum() // 2)
    solver = cg.solvers.get("ilp", A=weights[None], b=[capacity], sense="max")
    theta = torch.from_numpy(rng.uniform(0, 1, size=(4, n)))
    points = feasible_points(np.zeros(n), np.ones(n), weights[None], [capacity])
    y = solver(theta)
    assert_optimal(y, theta, points, "max", 0, 1)
    assert (y.numpy() @ weights <= capacity).all()


@pytest.mark.parametrize("sense", ["min", "max"])
@pytest.mark.parametrize("seed", [0, 1])
def test_integer_theta_with_unit_scale_is_exactly_optimal(sense: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    options = random_problem(rng, 7, 0, 2, 2, 1)
    solver = cg.solvers.get("ilp", sense=sense, objective_scale=1, **options)
    theta = torch.from_numpy(rng.integers(-50, 51, size=(5, 7)).astype(np.float64))
    points = feasible_points(np.zeros(7), np.full(7, 2), options["A"], options["b"], options["A_eq"], options["b_eq"])
    y = solver(theta)
    np.testing.assert_array_equal((theta * y).sum(1).numpy(), brute_force_optimum(theta.numpy(), points, sense))


def test_constraint_scale_makes_decimal_data_exact() -> None:
    weights = np.array([0.5, 1.2, 0.7, 2.1, 0.3])
    capacity = 2.4
    scaled = cg.solvers.get("ilp", A=[weights], b=[capacity], sense="max", constraint_scale=10)
    integral = cg.solvers.get("ilp", A=[np.rint(weights * 10)], b=[24], sense="max")
    theta = torch.rand(8, 5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(scaled(theta), integral(theta))
    points = feasible_points(np.zeros(5), np.ones(5), [weights * 10], [24])
    assert_optimal(scaled(theta), theta, points, "max", 0, 1)


def test_zero_objective_gives_a_feasible_point() -> None:
    options = random_problem(np.random.default_rng(3), 6, 0, 1, 2, 1)
    y = cg.solvers.get("ilp", **options)(torch.zeros(2, 6))
    points = feasible_points(np.zeros(6), np.ones(6), options["A"], options["b"], options["A_eq"], options["b_eq"])
    assert (np.abs(y.numpy()[:, None] - points[None]).max(-1) == 0).any(-1).all()


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize(
    "options",
    [
        {"A": [[1, 1, 1]], "b": [-1]},  # x >= 0 cannot sum to -1
        {"A_eq": [[1, 1, 0]], "b_eq": [3]},  # two binaries cannot sum to 3
        {"A": [[0, 0, 0]], "b": [-1]},  # 0 <= -1
    ],
    ids=["inequality", "equality", "empty_row"],
)
def test_infeasible_instance_raises_naming_its_index(workers: int, options: dict) -> None:
    solver = cg.solvers.get("ilp", workers=workers, **options)
    with pytest.raises(SolverError, match=r"^ilp: instance 0: infeasible"):
        solver(torch.randn(5, 3))


@pytest.mark.parametrize("sense", ["min", "max"])
def test_pool_agrees_with_serial(sense: str) -> None:
    rng = np.random.default_rng(7)
    weights = rng.integers(1, 101, size=30)
    options = {"A": weights[None], "b": [int(weights.sum() // 2)], "sense": sense}
    theta = torch.from_numpy(rng.normal(size=(3, 8, 30)))
    serial = cg.solvers.get("ilp", **options)(theta)
    pooled = cg.solvers.get("ilp", workers=2, **options)(theta)
    assert pooled.shape == theta.shape
    assert torch.equal(serial, pooled)


@pytest.mark.parametrize("sense", ["min", "max"])
def test_thread_executor_agrees_with_serial_and_is_listed_as_an_option(sense: str) -> None:
    """Issue 11: executor= (the Dask cluster cases are in tests/test_executors.py)."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(8)
    weights = rng.integers(1, 101, size=30)
    options = {"A": weights[None], "b": [int(weights.sum() // 2)], "sense": sense}
    theta = torch.from_numpy(rng.normal(size=(5, 6, 30)))
    with ThreadPoolExecutor(2) as threads:
        solver = cg.solvers.get("ilp", executor=threads, **options)
        assert "executor=ThreadPoolExecutor" in repr(solver)
        assert torch.equal(solver(theta), cg.solvers.get("ilp", **options)(theta))
    assert "dask.distributed.Client" in cg.solvers.options("ilp")["executor"].description


def test_batch_shape_dtype_and_input_are_preserved() -> None:
    solver = cg.solvers.get("ilp", A=[[1, 1, 1, 1]], b=[2], sense="max")
    theta = torch.tensor([[[3.0, -1.0, 2.0, 5.0]], [[-1.0, -2.0, -3.0, 0.5]]], dtype=torch.float32)
    before = theta.clone()
    y = solver(theta)
    assert y.shape == (2, 1, 4) and y.dtype == torch.float32
    assert torch.equal(y, torch.tensor([[[1.0, 0.0, 0.0, 1.0]], [[0.0, 0.0, 0.0, 1.0]]]))
    assert torch.equal(theta, before)
    assert torch.equal(solver(theta), y)  # deterministic


def test_solver_contract() -> None:
    solver = cg.solvers.get("ilp", A=[[1, 2]], b=[2])
    assert isinstance(solver, ILP) and isinstance(solver, cg.solvers.Solver)
    assert (solver.name, solver.sense, solver.event_ndim, solver.n) == ("ilp", "min", 1, 2)
    assert "ilp" in cg.solvers.names()


def test_n_from_bounds_alone() -> None:
    solver = cg.solvers.get("ilp", lower=[0, -1, 2], upper=3, sense="max")
    y = solver(torch.tensor([[1.0, -1.0, 0.5], [-1.0, 1.0, -2.0]]))
    assert torch.equal(y, torch.tensor([[3.0, -1.0, 3.0], [0.0, 3.0, 2.0]]))


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"A": [1, 2], "b": [1]}, r"ilp: A must have 2 dims \[m, n\], got shape \(2,\)"),
        ({"A": [[1, 2]], "b": [[1]]}, r"ilp: b must have 1 dims \[m\], got shape \(1, 1\)"),
        ({"A": [[1, 2]], "b": [1, 2]}, r"ilp: b must have one entry per row of A \(1\), got shape \(2,\)"),
        ({"A": [[1, 2]]}, r"ilp: A was given without b"),
        ({"b_eq": [1]}, r"ilp: b_eq was given without A_eq"),
        ({"A": [[1, 2]], "b": [1], "A_eq": [[1, 2, 3]], "b_eq": [1]}, r"ilp: A_eq must have n=2 columns .* got shape \(1, 3\)"),
        ({"A": [[1, 0.5]], "b": [1]}, r"ilp: A must hold integers after multiplying by constraint_scale=1.0 .* got 0.5 at index \(0, 1\)"),
        ({"A": [[1, 2]], "b": [1.5]}, r"ilp: b must hold integers .* got 1.5 at index 0"),
        ({"A": [[1, float("nan")]], "b": [1]}, r"ilp: A must be finite"),
        ({"A": [["a", "b"]], "b": [1]}, r"ilp: A must be a numeric array"),
        ({"A": [[1, 2]], "b": [1], "lower": 2, "upper": 1}, r"ilp: lower must be <= upper, got lower=2 > upper=1 for variable 0"),
        ({"A": [[1, 2]], "b": [1], "upper": float("inf")}, r"ilp: upper must be finite"),
        ({"A": [[1, 2]], "b": [1], "upper": 0.5}, r"ilp: upper must hold integers"),
        ({"A": [[1, 2]], "b": [1], "lower": [[0, 0]]}, r"ilp: lower must be an integer or an array \[n\]"),
        ({"lower": [0, 0], "upper": [1, 1, 1]}, r"ilp: lower and upper must have the same length"),
        ({"lower": 0, "upper": 1}, r"ilp: cannot tell the number of variables n"),
        ({"A": [[1, 2]], "b": [1], "sense": "maximize"}, r"ilp: sense must be 'min' or 'max', got 'maximize'"),
        ({"A": [[1, 2]], "b": [1], "workers": -1}, r"ilp: workers must be an integer >= 0, got -1"),
        ({"A": [[1, 2]], "b": [1], "objective_scale": 0}, r"ilp: objective_scale must be a finite number > 0, got 0"),
        ({"A": [[1, 2]], "b": [1], "objective_scale": float("nan")}, r"ilp: objective_scale must be a finite number > 0"),
        ({"A": [[1, 2]], "b": [1], "constraint_scale": -1}, r"ilp: constraint_scale must be a finite number > 0, got -1"),
        ({"A": [[2**52, 2**52]], "b": [1], "upper": 2**20}, r"ilp: CP-SAT cannot represent this problem"),
        ({"lower": np.full(2000, -(2**53)), "upper": 2**53}, r"ilp: the bounds are too wide"),
        ({"A": [[1, 2]], "b": [1], "upper": 2**54}, r"ilp: upper must hold integers of magnitude <= 2\*\*53"),
        ({"A": [[1, 2]], "b": [1], "time_limit": 0}, r"ilp: time_limit must be a finite number > 0, got 0"),
        ({"A": [[1, 2]], "b": [1], "time_limit": float("inf")}, r"ilp: time_limit must be a finite number > 0, got inf"),
        ({"A": [[1, 2]], "b": [1], "timeout": -1.0}, r"ilp: timeout must be a finite number > 0, got -1.0"),
        ({"A": [[1, 2]], "b": [1], "timeout": "10"}, r"ilp: timeout must be a finite number > 0, got '10'"),
    ],
)
def test_bad_options_are_refused(options: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        cg.solvers.get("ilp", **options)


@pytest.mark.parametrize(
    ("theta", "error", "match"),
    [
        (torch.ones(2, 4), ValueError, r"ilp: theta's last dim must be n=3 \(the number of variables\), got shape \(2, 4\)"),
        (torch.tensor([1.0, float("inf"), 0.0]), ValueError, r"ilp: theta must be finite"),
        (torch.ones(3, dtype=torch.int64), ValueError, r"ilp: theta must be a floating tensor"),
        ([1.0, 2.0, 3.0], TypeError, r"ilp: theta must be a torch.Tensor, got list"),
    ],
)
def test_bad_theta_is_refused(theta, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        cg.solvers.get("ilp", A=[[1, 1, 1]], b=[2])(theta)


def test_fixed_objective_scale_overflow_names_the_instance() -> None:
    solver = cg.solvers.get("ilp", A=[[1, 1, 1]], b=[2], objective_scale=2.0**40)
    theta = torch.zeros(3, 3)
    theta[2, 1] = 2.0**30
    with pytest.raises(ValueError, match=r"objective_scale=1099511627776.0 makes instance 2's objective too large"):
        solver(theta)


@pytest.mark.parametrize("tiny", [1e-300, 1e-310, 5e-324], ids=["1e-300", "subnormal", "smallest"])
@pytest.mark.parametrize("seed", [0, 1])
def test_tiny_objective_is_solved_like_its_scaled_copy(tiny: float, seed: int) -> None:
    """Issue 8, smaller defects: below about 6e-300 the automatic scale overflowed to inf
    and CP-SAT rejected the model."""
    rng = np.random.default_rng(seed)
    options = random_problem(rng, 6, 0, 1, 2, 1)
    solver = cg.solvers.get("ilp", **options)
    signs = torch.from_numpy(rng.normal(size=(4, 6)))
    # At 5e-324 only 0 and +-5e-324 exist: an objective of signs.
    theta = torch.sign(signs) * tiny if tiny < 1e-320 else signs * tiny
    y = solver(theta)
    points = feasible_points(np.zeros(6), np.ones(6), options["A"], options["b"], options["A_eq"], options["b_eq"])
    assert_optimal(y, theta / tiny, points, "min", 0, 1)


def test_fixed_scale_that_rounds_the_objective_to_zero_gives_a_feasible_point() -> None:
    options = random_problem(np.random.default_rng(4), 6, 0, 1, 2, 1)
    solver = cg.solvers.get("ilp", objective_scale=1.0, **options)
    y = solver(torch.full((2, 6), 1e-300, dtype=torch.float64))  # rounds to an all-zero objective
    points = feasible_points(np.zeros(6), np.ones(6), options["A"], options["b"], options["A_eq"], options["b_eq"])
    assert (np.abs(y.numpy()[:, None] - points[None]).max(-1) == 0).any(-1).all()


def market_split(m: int = 4, seed: int = 0) -> dict:
    """Cornuejols and Dawande's market split feasibility problem: m equations over
    10 (m - 1) binaries. CP-SAT proves nothing about m=4, seed 0 within 20 s here,
    so it stands for an instance that never finishes."""
    rng = np.random.default_rng(seed)
    A = rng.integers(0, 100, size=(m, 10 * (m - 1)))
    return {"A_eq": A, "b_eq": A.sum(axis=1) // 2}


def test_time_limit_names_the_instance_whose_optimum_is_not_proven() -> None:
    """Issue 8 item 3: an unproven optimum raises, naming the instance."""
    solver = cg.solvers.get("ilp", time_limit=0.2, **market_split())
    started = time.monotonic()
    with pytest.raises(SolverError, match=r"^ilp: instance 0: CP-SAT did not prove optimality within time_limit=0\.2 s \(status UNKNOWN\)"):
        solver(torch.zeros(3, 30))
    assert time.monotonic() - started < 10  # one instance's 0.2 s, not an unbounded search


def test_timeout_of_a_pooled_call_names_the_unfinished_instances_and_the_next_call_works() -> None:
    """Issue 8 item 3: a call with workers used to wait for a never-ending search forever."""
    hard = cg.solvers.get("ilp", workers=2, timeout=1.0, **market_split())
    with pytest.raises(SolverError, match=r"^ilp: timeout=1\.0 s exceeded with instances 0\.\.3 unfinished"):
        hard(torch.zeros(4, 30))
    easy = cg.solvers.get("ilp", A=[[1, 1, 1]], b=[1], sense="max", workers=2, timeout=60.0)
    started = time.monotonic()
    assert torch.equal(easy(torch.tensor([[1.0, 3.0, 2.0]])), torch.tensor([[0.0, 1.0, 0.0]]))
    assert time.monotonic() - started < 30  # fresh workers, not queued behind the hung search


def test_ctrl_c_during_a_serial_search_is_a_keyboard_interrupt_not_a_solver_error() -> None:
    """Issue 8 item 3: CP-SAT's own SIGINT handler ended the search early, and the
    non-optimal status then read as a SolverError."""
    solver = cg.solvers.get("ilp", time_limit=2.0, **market_split())
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            solver(torch.zeros(1, 30))
    finally:
        timer.cancel()
    # Python's own handler is still in place for the next Ctrl-C.
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_ortools_is_imported_on_first_use_not_by_the_solver_module() -> None:
    import ast
    from pathlib import Path

    import combgrad.solvers.ilp as ilp

    tree = ast.parse(Path(ilp.__file__).read_text())
    top_level = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    assert not any("ortools" in (getattr(node, "module", None) or "") for node in top_level)
    assert not any(alias.name.startswith("ortools") for node in top_level for alias in node.names)

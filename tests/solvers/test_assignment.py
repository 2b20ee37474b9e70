"""Tests for combgrad/solvers/assignment.py against scipy's linear_sum_assignment."""

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

import combgrad as cg
from combgrad.solvers.assignment import Assignment


def scipy_value(theta: np.ndarray) -> float:
    rows, columns = linear_sum_assignment(theta, maximize=True)
    return float(theta[rows, columns].sum())


def assert_matching(y: np.ndarray, rows: int, columns: int) -> None:
    """y [B, n, m] is 0/1 with at most one 1 per row and column, min(n, m) in all."""
    assert set(np.unique(y)) <= {0.0, 1.0}
    assert (y.sum(-1) <= 1).all() and (y.sum(-2) <= 1).all()
    assert (y.sum((-2, -1)) == min(rows, columns)).all()


@pytest.mark.parametrize("n", [1, 2, 5, 20, 50])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_scipy_on_random_scores(n, seed):
    rng = np.random.default_rng(seed)
    theta = rng.normal(size=(6, n, n))
    y = cg.solvers.get("assignment")(torch.from_numpy(theta)).numpy()
    assert_matching(y, n, n)
    # A permutation matrix: exactly one 1 in every row and column.
    assert (y.sum(-1) == 1).all() and (y.sum(-2) == 1).all()
    for instance, solution in zip(theta, y):
        assert (instance * solution).sum() == pytest.approx(scipy_value(instance), abs=1e-9)


@pytest.mark.parametrize("n", [2, 5, 20, 50])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("levels", [2, 3])
def test_matches_scipy_on_integer_scores_with_ties(n, seed, levels):
    rng = np.random.default_rng(100 + seed)
    theta = rng.integers(0, levels, size=(6, n, n)).astype(np.float64)
    y = Assignment()(torch.from_numpy(theta)).numpy()
    assert_matching(y, n, n)
    for instance, solution in zip(theta, y):
        # Integer data: the optimum is an exact integer, no tolerance needed.
        assert (instance * solution).sum() == scipy_value(instance)


@pytest.mark.parametrize("shape", [(1, 5), (5, 1), (3, 7), (7, 3), (20, 35), (35, 20)])
@pytest.mark.parametrize("seed", [0, 1])
def test_rectangular_matches_scipy(shape, seed):
    rng = np.random.default_rng(seed)
    theta = np.concatenate(
        [rng.normal(size=(4, *shape)), rng.integers(-1, 2, size=(4, *shape)).astype(np.float64)]
    )
    y = Assignment()(torch.from_numpy(theta)).numpy()
    assert_matching(y, *shape)
    for instance, solution in zip(theta, y):
        assert (instance * solution).sum() == pytest.approx(scipy_value(instance), abs=1e-9)


def test_minimum_cost_assignment_through_negated_costs():
    rng = np.random.default_rng(7)
    costs = rng.uniform(1, 10, size=(12, 12))
    y = Assignment()(torch.from_numpy(-costs)).numpy()
    rows, columns = linear_sum_assignment(costs)
    assert (costs * y).sum() == pytest.approx(costs[rows, columns].sum(), abs=1e-9)


@pytest.mark.parametrize("shape", [(4, 4), (3, 5), (5, 3)])
def test_all_equal_scores_give_the_identity(shape):
    y = Assignment()(torch.full(shape, 0.5))
    assert torch.equal(y, torch.eye(*shape))


def test_tie_rule_does_not_depend_on_batch_position():
    rng = np.random.default_rng(3)
    instances = rng.integers(0, 2, size=(16, 10, 10)).astype(np.float64)
    together = Assignment()(torch.from_numpy(instances))
    shuffled = Assignment()(torch.from_numpy(instances[::-1].copy()))
    assert torch.equal(together, shuffled.flip(0))
    for index in range(len(instances)):
        alone = Assignment()(torch.from_numpy(instances[index]))
        assert torch.equal(alone, together[index])


def test_batch_dims_dtype_and_input_unchanged():
    generator = torch.Generator().manual_seed(0)
    theta = torch.randn(2, 3, 6, 6, generator=generator, dtype=torch.float32)
    before = theta.clone()
    y = Assignment()(theta)
    assert y.shape == theta.shape and y.dtype == torch.float32
    assert torch.equal(theta, before)
    for i in range(2):
        for j in range(3):
            assert torch.equal(y[i, j], Assignment()(theta[i, j]))


def test_float64_input_not_modified_and_empty_batch():
    theta = torch.randn(3, 4, 4, dtype=torch.float64)
    before = theta.clone()
    Assignment()(theta)
    assert torch.equal(theta, before)
    empty = Assignment()(torch.zeros(0, 4, 4))
    assert empty.shape == (0, 4, 4)


def test_solver_attributes_and_registry():
    solver = cg.solvers.get("assignment")
    assert isinstance(solver, Assignment)
    assert (solver.name, solver.sense, solver.event_ndim) == ("assignment", "max", 2)
    assert "assignment" in cg.solvers.names()
    assert isinstance(solver, cg.solvers.Solver)


@pytest.mark.parametrize(
    "theta, error, match",
    [
        (torch.zeros(4), ValueError, "at least 2 dims"),
        (torch.zeros(2, 0, 3), ValueError, "at least one row and one column"),
        (torch.zeros(2, 3, 0), ValueError, "at least one row and one column"),
        (torch.tensor([[0.0, float("nan")], [1.0, 2.0]]), ValueError, "finite"),
        (torch.tensor([[0.0, float("inf")], [1.0, 2.0]]), ValueError, "finite"),
        (torch.zeros(3, 3, dtype=torch.int64), ValueError, "floating"),
        (torch.tensor([[1e308, 0.0], [0.0, 1.0]], dtype=torch.float64), ValueError, "magnitude"),
        (np.zeros((3, 3)), TypeError, "torch.Tensor"),
    ],
)
def test_bad_inputs(theta, error, match):
    with pytest.raises(error, match=match):
        Assignment()(theta)


def test_unknown_option_is_refused():
    with pytest.raises(TypeError, match="solver 'assignment': unknown option 'sense'; accepted options: none"):
        cg.solvers.get("assignment", sense="min")

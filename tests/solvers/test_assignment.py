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
    with pytest.raises(TypeError, match="solver 'assignment': unknown option 'sense'; accepted options: backend"):
        cg.solvers.get("assignment", sense="min")


# --- the torch backend (issue 10): agreement with the numba kernel on every device


def assignment_value(theta: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """<theta, y> per instance, in float64."""
    return (theta.double() * y.double()).sum((-2, -1))


@pytest.mark.parametrize(
    "shape, batch",
    [((1, 1), 50), ((1, 6), 100), ((6, 1), 100), ((2, 2), 200), ((5, 5), 300), ((4, 9), 200),
     ((9, 4), 200), ((12, 12), 200), ((30, 30), 60)],
)
@pytest.mark.parametrize("kind", ["normal", "integers"])
def test_torch_backend_reaches_the_numba_optimum(device, shape, batch, kind):
    # 2 x 1410 random instances; integer scores in {0, 1, 2} make many optimal
    # assignments, where the backends may pick different ones (the torch kernel
    # skips the column reduction), so the values are compared. They are equal
    # exactly: integer data sums exactly, and on real data both kernels reach the
    # same optimum by float64 searches that differ only in order (abs 1e-12 covers it).
    generator = torch.Generator().manual_seed(sum(shape) + batch)
    if kind == "normal":
        theta = torch.randn(batch, *shape, generator=generator, dtype=torch.float64)
    else:
        theta = torch.randint(0, 3, (batch, *shape), generator=generator).double()
    y = Assignment(backend="torch")(theta.to(device))
    assert y.device.type == device and y.dtype == torch.float64
    y = y.cpu()
    assert_matching(y.numpy(), *shape)
    expected = assignment_value(theta, Assignment(backend="numba")(theta))
    difference = (assignment_value(theta, y) - expected).abs().max()
    assert difference == 0 if kind == "integers" else difference <= 1e-12
    if shape[0] != shape[1]:
        # Rectangular instances run the same searches in both kernels (numba has no
        # column reduction there), so even the tied assignments agree.
        assert torch.equal(y, Assignment(backend="numba")(theta))


def test_torch_backend_matches_scipy():
    rng = np.random.default_rng(21)
    theta = rng.normal(size=(20, 15, 15))
    y = Assignment(backend="torch")(torch.from_numpy(theta)).numpy()
    for instance, solution in zip(theta, y):
        assert (instance * solution).sum() == pytest.approx(scipy_value(instance), abs=1e-9)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_torch_backend_in_lower_precision_gives_optimal_value(device, dtype):
    # float32 potentials (float16/bfloat16 widened): each of the n searches sums
    # at most 2 n reduced costs of magnitude <= 4 max|theta|, rounding each by
    # 2**-24 relative, so the assignment found is optimal up to n * 8 n max|theta|
    # 2**-24 (a loose bound; observed errors are 0 on these instances).
    n = 16
    theta = torch.randn(300, n, n, generator=torch.Generator().manual_seed(3)).to(dtype)
    y = Assignment(backend="torch")(theta.to(device)).cpu()
    assert y.dtype == dtype
    assert_matching(y.double().numpy(), n, n)
    optimum = assignment_value(theta, Assignment(backend="numba")(theta))
    tolerance = 8 * n * n * float(theta.double().abs().max()) * 2.0**-24
    assert (optimum - assignment_value(theta, y)).max() <= tolerance


def test_torch_backend_edge_cases(device):
    solver = Assignment(backend="torch")
    for shape in [(4, 4), (3, 5), (5, 3)]:
        assert torch.equal(solver(torch.full(shape, 0.5, device=device)).cpu(), torch.eye(*shape))
    assert solver(torch.zeros(0, 4, 4, device=device)).shape == (0, 4, 4)
    theta = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(0)).to(device)
    before = theta.clone()
    y = solver(theta)
    assert y.shape == theta.shape and torch.equal(theta, before)
    assert torch.equal(y[1, 2], solver(theta[1, 2]))


def test_torch_backend_early_exit_keeps_the_answer(monkeypatch):
    # Checking for finished searches after every step, or never, gives the same
    # assignments: the check only skips steps in which every search is masked.
    import combgrad.solvers.assignment as module

    theta = torch.randint(0, 4, (100, 14, 14), generator=torch.Generator().manual_seed(5)).double()
    default = Assignment(backend="torch")(theta)
    for steps in (1, 10**9):
        monkeypatch.setattr(module, "STEPS_PER_CHECK", steps)
        assert torch.equal(Assignment(backend="torch")(theta), default)


def test_backends_repr_and_unknown_backend():
    solver = cg.solvers.get("assignment")
    assert solver.backends == ("numba", "torch") and solver.backend_for(torch.device("cpu")) == "numba"
    assert solver.backend_for(torch.device("cuda")) == "torch"
    assert repr(solver) == "Assignment()"
    assert repr(Assignment(backend="numba")) == "Assignment(backend='numba')"
    with pytest.raises(ValueError, match=r"assignment: backend must be one of \['auto', 'numba', 'torch'\], got 'auction'"):
        Assignment(backend="auction")
    with pytest.raises(TypeError):
        Assignment("torch")


def test_an_estimator_through_the_torch_backend_matches_numba(device, imle_through_both_backends):
    # Normal scores have a unique optimum almost surely, so the backends return
    # the same assignments under I-MLE's seeded noise: forward and gradient agree.
    imle_through_both_backends("assignment", torch.randn(4, 5, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64).to(device))

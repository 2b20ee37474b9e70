"""Tests for combgrad/solvers/knapsack.py against brute force over all subsets."""

import itertools

import numpy as np
import pytest
import torch

import combgrad as cg
from combgrad.solvers.knapsack import Knapsack


def brute_force(values: np.ndarray, weights: np.ndarray, capacity: int) -> tuple[float, np.ndarray]:
    """The best value, and the optimal selection minimizing (y[n-1], ..., y[0]) lexicographically."""
    n = len(values)
    # Rows of `keys` are (y[n-1], ..., y[0]) in lexicographic order.
    keys = np.array(list(itertools.product((0, 1), repeat=n)))
    selections = keys[:, ::-1]
    totals = selections @ values
    totals[selections @ weights > capacity] = -np.inf
    best = totals.max()
    return float(best), selections[np.argmax(totals == best)]


@pytest.mark.parametrize("n", [1, 2, 5, 8, 12])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_matches_brute_force_on_random_instances(n, seed):
    rng = np.random.default_rng(seed)
    weights = rng.integers(0, 10, size=n)
    capacity = int(rng.integers(0, weights.sum() + 2))
    values = rng.normal(size=(5, n))
    y = Knapsack(weights=weights, capacity=capacity)(torch.from_numpy(values)).numpy()
    assert set(np.unique(y)) <= {0.0, 1.0}
    assert (y @ weights <= capacity).all()
    assert not (y * (values <= 0)).any()
    for instance, solution in zip(values, y):
        assert solution @ instance == pytest.approx(brute_force(instance, weights, capacity)[0], abs=1e-12)


@pytest.mark.parametrize("n", [3, 6, 10, 12])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tie_rule_matches_brute_force_on_integer_values(n, seed):
    # Small integer values and weights make many optimal selections, compared exactly.
    rng = np.random.default_rng(50 + seed)
    weights = rng.integers(0, 4, size=n)
    capacity = int(rng.integers(0, weights.sum() + 1))
    values = rng.integers(-1, 3, size=(4, n)).astype(np.float64)
    y = Knapsack(weights=weights, capacity=capacity)(torch.from_numpy(values)).numpy()
    for instance, solution in zip(values, y):
        best_value, best_selection = brute_force(instance, weights, capacity)
        assert solution @ instance == best_value
        assert solution.tolist() == best_selection.tolist()


def test_equal_items_are_taken_lowest_index_first():
    solver = Knapsack(weights=[2, 2, 2, 2, 2], capacity=5)
    assert solver(torch.ones(5)).tolist() == [1.0, 1.0, 0.0, 0.0, 0.0]


def test_non_positive_values_are_never_taken():
    solver = Knapsack(weights=[0, 1, 1, 0], capacity=10)
    y = solver(torch.tensor([0.0, -1.0, 2.0, -0.5]))
    assert y.tolist() == [0.0, 0.0, 1.0, 0.0]


def test_capacity_zero_takes_only_weightless_items():
    solver = Knapsack(weights=[0, 1, 0, 3], capacity=0)
    assert solver(torch.tensor([1.0, 5.0, 2.0, 4.0])).tolist() == [1.0, 0.0, 1.0, 0.0]


def test_capacity_above_total_weight_takes_every_positive_item():
    solver = Knapsack(weights=[3, 5, 7], capacity=10**12)
    assert solver(torch.tensor([1.0, -2.0, 3.0])).tolist() == [1.0, 0.0, 1.0]


@pytest.mark.parametrize(
    "weights",
    [[3, 4, 2], (3, 4, 2), np.array([3, 4, 2]), np.array([3.0, 4.0, 2.0]),
     torch.tensor([3, 4, 2]), torch.tensor([3.0, 4.0, 2.0]), np.array([3, 4, 2], dtype=np.uint8)],
)
def test_weights_accept_tensors_sequences_and_arrays(weights):
    solver = cg.solvers.get("knapsack", weights=weights, capacity=np.int64(5))
    assert solver.capacity == 5 and solver.weights.tolist() == [3, 4, 2]
    assert solver(torch.tensor([4.0, 5.0, 3.0])).tolist() == [1.0, 0.0, 1.0]


def test_weights_are_copied_from_the_caller():
    weights = np.array([1, 2, 3])
    solver = Knapsack(weights=weights, capacity=3)
    weights[:] = 100
    assert solver(torch.tensor([1.0, 1.0, 1.0])).tolist() == [1.0, 1.0, 0.0]


def test_batch_dims_dtype_and_input_unchanged():
    rng = np.random.default_rng(4)
    weights = rng.integers(1, 6, size=7)
    theta = torch.from_numpy(rng.normal(size=(2, 3, 7))).float()
    before = theta.clone()
    solver = Knapsack(weights=weights, capacity=10)
    y = solver(theta)
    assert y.shape == theta.shape and y.dtype == torch.float32
    assert torch.equal(theta, before)
    for i in range(2):
        for j in range(3):
            assert torch.equal(y[i, j], solver(theta[i, j]))
    assert solver(torch.zeros(0, 7)).shape == (0, 7)


def test_solver_attributes_and_registry():
    solver = cg.solvers.get("knapsack", weights=[1, 2], capacity=2)
    assert isinstance(solver, Knapsack)
    assert (solver.name, solver.sense, solver.event_ndim) == ("knapsack", "max", 1)
    assert "knapsack" in cg.solvers.names()
    assert repr(solver) == "Knapsack(weights=[1, 2], capacity=2)"


@pytest.mark.parametrize(
    "weights, capacity, match",
    [
        ([[1, 2], [3, 4]], 3, "1-D"),
        ([], 3, "at least one item"),
        ([1, -2, 3], 3, "non-negative"),
        ([1.5, 2.0], 3, r"weights must hold integers .*got 1.5 at index 0; pass constraint_scale=10\*\*k"),
        ([1.0, float("nan")], 3, "finite"),
        ([1.0, float("inf")], 3, "finite"),
        ([True, False], 3, "dtype bool"),
        (["a", "b"], 3, "integers"),
        ([1, 2**60], 3, "magnitude <= 2\\*\\*53"),
        ([1.0, 2.0**60], 3, "magnitude <= 2\\*\\*53"),
        (torch.tensor([1.0, 0.5]), 3, "weights must hold integers"),
        ([1, 2], -1, "capacity must be an integer >= 0, got -1"),
        ([1, 2], 2.5, "capacity must hold integers"),
        ([1, 2], -2.0, "capacity must be a finite number >= 0, got -2.0"),
        ([1, 2], True, "capacity must be a finite number >= 0, got True"),
        ([1, 2], None, "capacity must be a finite number >= 0, got None"),
        ([1, 2], 2**60, "capacity must be an integer of magnitude <= 2\\*\\*53"),
        ([2**26] * 4, 2**40, "table cells"),
    ],
)
def test_bad_options(weights, capacity, match):
    with pytest.raises(ValueError, match=match):
        Knapsack(weights=weights, capacity=capacity)


def test_options_are_keyword_only_and_required():
    with pytest.raises(TypeError):
        Knapsack([1, 2], 3)
    with pytest.raises(TypeError, match="capacity"):
        cg.solvers.get("knapsack", weights=[1, 2])


@pytest.mark.parametrize(
    "theta, error, match",
    [
        (torch.zeros(2, 4), ValueError, "last dim must equal len\\(weights\\)=3"),
        (torch.zeros(()), ValueError, "at least 1 dims"),
        (torch.tensor([1.0, float("nan"), 0.0]), ValueError, "finite"),
        (torch.tensor([1, 2, 3]), ValueError, "floating"),
        ([1.0, 2.0, 3.0], TypeError, "torch.Tensor"),
        (torch.tensor([1e308, 1e308, 0.0], dtype=torch.float64), ValueError, "magnitude"),
    ],
)
def test_bad_theta(theta, error, match):
    with pytest.raises(error, match=match):
        Knapsack(weights=[1, 2, 3], capacity=3)(theta)


def test_constraint_scale_reads_decimal_data_as_the_integers_it_stands_for():
    # Guards issue 8 item 16: 100 * 4.61 is 461.00000000000006, which np.ceil (the
    # old docstring's advice) turned into 462; nearest-integer rounding gives 461.
    solver = Knapsack(weights=[4.61, 2.5, 1.0], capacity=7.11, constraint_scale=100)
    assert solver.weights.tolist() == [461, 250, 100]
    assert solver.capacity == 711
    # 4.61 + 2.5 = 7.11 fits exactly; 462 + 250 would not.
    assert solver(torch.tensor([5.0, 4.0, 1.0])).tolist() == [1.0, 1.0, 0.0]
    assert np.ceil(100 * 4.61) == 462  # the defect the scale replaces


def test_constraint_scale_matches_pre_scaled_integers():
    rng = np.random.default_rng(3)
    decimals = rng.integers(1, 500, size=12) / 100
    capacity = float(np.round(decimals.sum() / 2, 2))
    values = torch.from_numpy(rng.uniform(-1, 1, size=(6, 12)))
    scaled = Knapsack(weights=decimals, capacity=capacity, constraint_scale=100)
    integers = Knapsack(weights=np.rint(decimals * 100).astype(int), capacity=int(round(capacity * 100)))
    assert torch.equal(scaled(values), integers(values))


def test_integral_float_capacity_is_accepted_like_integral_float_weights():
    assert Knapsack(weights=[1.0, 2.0], capacity=2.0).capacity == 2


@pytest.mark.parametrize(
    "options, match",
    [
        ({"weights": [4.615], "capacity": 5, "constraint_scale": 100}, r"weights must hold integers after multiplying by constraint_scale=100.*got 4.615"),
        ({"weights": [1], "capacity": 0.005, "constraint_scale": 100}, r"capacity must hold integers after multiplying by constraint_scale=100"),
        ({"weights": [1], "capacity": 1, "constraint_scale": 0}, r"constraint_scale must be a finite number > 0, got 0"),
        ({"weights": [1], "capacity": 1, "constraint_scale": float("inf")}, r"constraint_scale must be a finite number > 0"),
        ({"weights": [1], "capacity": 1, "constraint_scale": "100"}, r"constraint_scale must be a finite number > 0, got '100'"),
    ],
)
def test_bad_constraint_scale_data(options, match):
    with pytest.raises(ValueError, match=match):
        Knapsack(**options)


def test_theta_whose_selection_value_overflows_is_refused():
    # Three values of 1e308 / 3 sum to 1e308 but two of 1e308 overflow; the
    # limit is float64 max / (2 n).
    solver = Knapsack(weights=[1, 1, 1], capacity=3)
    assert solver(torch.tensor([1e307, 1e307, 0.0], dtype=torch.float64)).tolist() == [1.0, 1.0, 0.0]
    with pytest.raises(ValueError, match=r"knapsack: theta must have magnitudes at most 3e\+307 for a selection of 3 items"):
        solver(torch.tensor([4e307, 0.0, 0.0], dtype=torch.float64))


# --- the torch backend (issue 10): agreement with the numba kernel on every device


@pytest.mark.parametrize("seed", range(6))
def test_torch_backend_returns_the_numba_selection_in_float64(device, seed):
    # 6 x 25 random solvers x 40 instances = 6000 instances, half with real
    # values, half with small integers (many ties, and values <= 0). In float64
    # both kernels make the same additions and strict comparisons, so the
    # selections are equal, not only their values.
    rng = np.random.default_rng(200 + seed)
    for _ in range(25):
        n = int(rng.integers(1, 16))
        weights = rng.integers(0, 10, size=n)
        capacity = int(rng.integers(0, weights.sum() + 3))
        values = torch.from_numpy(
            np.concatenate([rng.normal(size=(20, n)), rng.integers(-1, 3, size=(20, n)).astype(np.float64)])
        )
        numba = Knapsack(weights=weights, capacity=capacity, backend="numba")(values)
        y = Knapsack(weights=weights, capacity=capacity, backend="torch")(values.to(device))
        assert y.device.type == device and y.dtype == torch.float64
        assert torch.equal(y.cpu(), numba), (weights, capacity)


@pytest.mark.parametrize("n", [3, 8, 12])
def test_torch_backend_matches_brute_force_ties(n):
    rng = np.random.default_rng(60 + n)
    weights = rng.integers(0, 4, size=n)
    capacity = int(rng.integers(0, weights.sum() + 1))
    values = rng.integers(-1, 3, size=(6, n)).astype(np.float64)
    y = Knapsack(weights=weights, capacity=capacity, backend="torch")(torch.from_numpy(values)).numpy()
    for instance, solution in zip(values, y):
        best_value, best_selection = brute_force(instance, weights, capacity)
        assert solution @ instance == best_value
        assert solution.tolist() == best_selection.tolist()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_torch_backend_in_lower_precision_gives_optimal_value(device, dtype):
    # float32 sums (float16/bfloat16 widened to float32) of at most n values each
    # round by at most n |value|max 2**-24; a selection the float32 DP prefers
    # can thus be worse than the optimum by at most twice that, 2**-22 n max|v| with margin.
    rng = np.random.default_rng(9)
    n = 30
    weights = rng.integers(1, 20, size=n)
    capacity = int(weights.sum() // 3)
    values = torch.from_numpy(rng.normal(size=(300, n))).to(dtype)
    y = Knapsack(weights=weights, capacity=capacity, backend="torch")(values.to(device)).cpu()
    assert y.dtype == dtype
    assert (y.double().numpy() @ weights <= capacity).all()
    optimum = (Knapsack(weights=weights, capacity=capacity, backend="numba")(values).double() * values.double()).sum(-1)
    achieved = (y.double() * values.double()).sum(-1)
    tolerance = n * float(values.double().abs().max()) * 2.0**-22
    assert (optimum - achieved).max() <= tolerance and (achieved - optimum).max() <= tolerance


def test_torch_backend_edge_cases(device):
    solver = Knapsack(weights=[0, 1, 0, 3], capacity=0, backend="torch")
    assert solver(torch.tensor([1.0, 5.0, 2.0, 4.0], device=device)).tolist() == [1.0, 0.0, 1.0, 0.0]
    assert solver(torch.zeros(0, 4, device=device)).shape == (0, 4)
    every = Knapsack(weights=[3, 5, 7], capacity=10**12, backend="torch")
    assert every(torch.tensor([1.0, -2.0, 3.0], device=device)).tolist() == [1.0, 0.0, 1.0]
    equal = Knapsack(weights=[2, 2, 2, 2, 2], capacity=5, backend="torch")
    assert equal(torch.ones(5, device=device)).tolist() == [1.0, 1.0, 0.0, 0.0, 0.0]
    decimal = Knapsack(weights=[4.61, 2.5, 1.0], capacity=7.11, constraint_scale=100, backend="torch")
    assert decimal(torch.tensor([5.0, 4.0, 1.0], device=device)).tolist() == [1.0, 1.0, 0.0]
    theta = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(0)).to(device)
    before = theta.clone()
    y = Knapsack(weights=[1, 2, 3, 1], capacity=4, backend="torch")(theta)
    assert y.shape == theta.shape and torch.equal(theta, before)


def test_torch_backend_solves_large_batches_in_chunks(monkeypatch):
    # A chunk limit of 3 instances' tables cuts 10 instances into 4 chunks.
    import combgrad.solvers.knapsack as module

    rng = np.random.default_rng(11)
    weights = rng.integers(1, 6, size=7)
    solver = Knapsack(weights=weights, capacity=12, backend="torch")
    monkeypatch.setattr(module, "MAX_TORCH_CHUNK_CELLS", 3 * 7 * 13)
    chunks = []
    kernel = module._knapsack_torch
    monkeypatch.setattr(module, "_knapsack_torch", lambda values, *rest: chunks.append(len(values)) or kernel(values, *rest))
    values = torch.from_numpy(rng.normal(size=(10, 7)))
    assert torch.equal(solver(values), Knapsack(weights=weights, capacity=12, backend="numba")(values))
    assert chunks == [3, 3, 3, 1]


def test_auto_backend_repr_and_unknown_backend():
    solver = cg.solvers.get("knapsack", weights=[1, 2], capacity=2)
    assert solver.backends == ("numba", "torch") and solver.backend_for(torch.device("cpu")) == "numba"
    assert solver.backend_for(torch.device("cuda")) == "torch"
    assert repr(Knapsack(weights=[1, 2], capacity=2, backend="torch")) == "Knapsack(weights=[1, 2], capacity=2, backend='torch')"
    with pytest.raises(ValueError, match=r"knapsack: backend must be one of \['auto', 'numba', 'torch'\], got 'gpu'"):
        Knapsack(weights=[1, 2], capacity=2, backend="gpu")


def test_an_estimator_through_the_torch_backend_matches_numba(device, imle_through_both_backends):
    # I-MLE draws its noise under a fixed seed, and in float64 the backends
    # return the same selections, so forward and gradient agree exactly.
    theta = torch.randn(5, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64).to(device)
    imle_through_both_backends("knapsack", theta, weights=[3, 1, 4, 1, 5, 2], capacity=7)

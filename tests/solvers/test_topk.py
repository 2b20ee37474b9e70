"""Tests for combgrad/solvers/topk.py against torch.topk and brute force."""

import itertools

import numpy as np
import pytest
import torch

import combgrad as cg
from combgrad.solvers.topk import TopK


@pytest.mark.parametrize("n, k", [(1, 1), (5, 1), (5, 3), (5, 5), (50, 7), (200, 100)])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_torch_topk_on_distinct_scores(n, k, seed, dtype):
    generator = torch.Generator().manual_seed(seed)
    theta = torch.randn(4, 3, n, generator=generator, dtype=dtype)
    y = TopK(k=k)(theta)
    assert y.shape == theta.shape and y.dtype == dtype
    reference = torch.zeros_like(theta).scatter_(-1, torch.topk(theta, k, dim=-1).indices, 1.0)
    assert torch.equal(y, reference)


def brute_force_topk(theta: np.ndarray, k: int) -> np.ndarray:
    """The k-subset of greatest sum; among equal sums the lexicographically first index tuple."""
    best, chosen = -np.inf, None
    for subset in itertools.combinations(range(len(theta)), k):  # lexicographic order
        total = theta[list(subset)].sum()
        if total > best:
            best, chosen = total, subset
    y = np.zeros_like(theta)
    y[list(chosen)] = 1.0
    return y


@pytest.mark.parametrize("n, k", [(4, 2), (6, 3), (8, 1), (8, 5)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ties_go_to_the_lower_index(n, k, seed):
    # Integer scores from a small range give many ties; sums are exact.
    rng = np.random.default_rng(seed)
    theta = rng.integers(0, 3, size=(20, n)).astype(np.float64)
    y = TopK(k=k)(torch.from_numpy(theta)).numpy()
    for instance, solution in zip(theta, y):
        assert np.array_equal(solution, brute_force_topk(instance, k))


@pytest.mark.parametrize("n, k", [(100, 37), (64, 1), (64, 63)])
@pytest.mark.parametrize("seed", [0, 1])
def test_ties_match_a_stable_sort_on_long_rows(n, k, seed):
    rng = np.random.default_rng(10 + seed)
    theta = rng.integers(-2, 3, size=(30, n)).astype(np.float64)
    y = TopK(k=k)(torch.from_numpy(theta)).numpy()
    # A stable sort of -theta lists equal scores in index order.
    order = np.argsort(-theta, axis=-1, kind="stable")[:, :k]
    reference = np.zeros_like(theta)
    np.put_along_axis(reference, order, 1.0, axis=-1)
    assert np.array_equal(y, reference)


def test_all_equal_scores_take_the_first_k():
    assert TopK(k=3)(torch.zeros(6)).tolist() == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]


def test_input_unchanged_batch_dims_and_empty_batch():
    generator = torch.Generator().manual_seed(5)
    theta = torch.randn(2, 3, 9, generator=generator, dtype=torch.float64)
    before = theta.clone()
    y = TopK(k=4)(theta)
    assert torch.equal(theta, before)
    for i in range(2):
        for j in range(3):
            assert torch.equal(y[i, j], TopK(k=4)(theta[i, j]))
    assert TopK(k=2)(torch.zeros(0, 5)).shape == (0, 5)


def test_solver_attributes_registry_and_repr():
    solver = cg.solvers.get("topk", k=np.int64(2))
    assert isinstance(solver, TopK) and solver.k == 2
    assert (solver.name, solver.sense, solver.event_ndim) == ("topk", "max", 1)
    assert repr(solver) == "TopK(k=2, backend='auto')"


@pytest.mark.parametrize("k", [0, -1, 1.5, 2.0, True, None, "2"])
def test_bad_k(k):
    with pytest.raises(ValueError, match="topk: k must be an integer >= 1"):
        TopK(k=k)


def test_k_is_required_and_keyword_only():
    with pytest.raises(TypeError, match="k"):
        cg.solvers.get("topk")
    with pytest.raises(TypeError):
        TopK(2)


@pytest.mark.parametrize(
    "theta, error, match",
    [
        (torch.zeros(4, 2), ValueError, "last dim must be at least k=3"),
        (torch.zeros(()), ValueError, "at least 1 dims"),
        (torch.tensor([0.0, float("nan"), 1.0]), ValueError, "finite"),
        (torch.tensor([0.0, float("inf"), 1.0]), ValueError, "finite"),
        (torch.tensor([1, 2, 3]), ValueError, "floating"),
        (np.zeros(5), TypeError, "torch.Tensor"),
    ],
)
def test_bad_inputs(theta, error, match):
    with pytest.raises(error, match=match):
        TopK(k=3)(theta)


# The numba backend against the torch one and brute force: both take the lower
# index first among equal scores, so the outputs are identical.
# CPU always; the CUDA half is skipped without CUDA (benchmarks/device_check.sh runs -k cuda).

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "n, k",
    # The numba kernel uses a heap where min(k, n - k + 1) <= 100, quickselect above.
    [(1, 1), (5, 1), (5, 3), (5, 5), (50, 7), (50, 26), (200, 100), (300, 150), (1000, 10), (1000, 500), (1000, 990)],
)
@pytest.mark.parametrize("ties", [False, True])
def test_numba_and_torch_backends_agree(ties, n, k, dtype, device):
    # 2 x 11 x 2 cases of 100 instances: 4400 on the CPU.
    generator = torch.Generator().manual_seed(n + k + 1000 * ties)
    if ties:
        theta = torch.randint(-2, 3, (100, n), generator=generator).to(dtype)
    else:
        theta = torch.randn(100, n, generator=generator, dtype=dtype)
    theta = theta.to(device)
    by_numba = TopK(k=k, backend="numba")(theta)
    by_torch = TopK(k=k, backend="torch")(theta)
    assert by_numba.device == theta.device and by_numba.dtype == dtype
    assert torch.equal(by_numba, by_torch)
    assert torch.equal(by_numba.sum(-1), torch.full((100,), float(k), dtype=dtype, device=device))


@pytest.mark.parametrize("n, k", [(4, 2), (6, 3), (8, 1), (8, 5), (8, 8)])
def test_numba_backend_ties_match_brute_force(n, k):
    rng = np.random.default_rng(n * 10 + k)
    theta = rng.integers(0, 3, size=(40, n)).astype(np.float64)
    y = TopK(k=k, backend="numba")(torch.from_numpy(theta)).numpy()
    for instance, solution in zip(theta, y):
        assert np.array_equal(solution, brute_force_topk(instance, k))


def test_numba_backend_batch_dims_empty_and_input_unchanged():
    theta = torch.randn(2, 3, 9, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    before = theta.clone()
    y = TopK(k=4, backend="numba")(theta)
    assert torch.equal(theta, before) and torch.equal(y, TopK(k=4, backend="torch")(theta))
    assert TopK(k=2, backend="numba")(torch.zeros(0, 5)).shape == (0, 5)
    assert TopK(k=3, backend="numba")(torch.zeros(6)).tolist() == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="last dim must be at least k=3"):
        TopK(k=3, backend="numba")(torch.zeros(4, 2))


def test_backend_option():
    # numba first: "auto" picks numba on the CPU (measured faster for small k, README), torch off it.
    assert TopK(k=1).backends == ("numba", "torch")
    assert TopK(k=1).backend_for(torch.device("cpu")) == "numba"
    assert TopK(k=1).backend_for(torch.device("cuda")) == "torch"
    assert TopK(k=1, backend="numba").backend_for(torch.device("cuda")) == "numba"
    assert TopK(k=1, backend="torch").backend_for(torch.device("cpu")) == "torch"
    assert repr(TopK(k=2, backend="numba")) == "TopK(k=2, backend='numba')"
    assert cg.solvers.options("topk")["backend"].default == "auto"
    with pytest.raises(ValueError, match=r"topk: backend must be one of \['auto', 'numba', 'torch'\], got 'triton'"):
        TopK(k=1, backend="triton")


@pytest.mark.parametrize("seed", range(5))
def test_quickselect_finds_the_sorted_entry_or_gives_up(seed):
    from combgrad.solvers.topk import _quickselect

    rng = np.random.default_rng(seed)
    row = rng.integers(-3, 4, size=257).astype(np.float64) if seed % 2 else rng.normal(size=257)
    for position in (0, 1, 128, 255, 256):
        found, value = _quickselect(row.copy(), position, 44)
        assert found and value == np.sort(row)[position]
    # No rounds left: it reports failure, and the solver then falls back to the heap.
    assert _quickselect(row.copy(), 128, 0) == (False, 0.0)

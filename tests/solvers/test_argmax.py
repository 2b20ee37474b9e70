"""Tests for combgrad/solvers/argmax.py."""

import numpy as np
import pytest
import torch

import combgrad as cg
from combgrad.solvers.argmax import Argmax


@pytest.mark.parametrize("n", [1, 2, 7, 100])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_one_hot_of_the_largest_entry(n, seed, dtype):
    generator = torch.Generator().manual_seed(seed)
    theta = torch.randn(3, 5, n, generator=generator, dtype=dtype)
    y = Argmax()(theta)
    assert y.shape == theta.shape and y.dtype == dtype
    assert torch.equal(y.sum(-1), torch.ones(3, 5, dtype=dtype))
    # Independent reference: the chosen entry equals the maximum, per numpy.
    reference = np.max(theta.numpy(), axis=-1)
    assert np.array_equal((y * theta).sum(-1).numpy(), reference)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_ties_go_to_the_lower_index(seed):
    rng = np.random.default_rng(seed)
    theta = rng.integers(0, 3, size=(50, 6)).astype(np.float64)
    y = Argmax()(torch.from_numpy(theta)).numpy()
    # Brute force: the first index whose value equals the maximum.
    first = np.array([next(i for i, v in enumerate(row) if v == row.max()) for row in theta])
    assert np.array_equal(y.argmax(-1), first)
    assert (y.sum(-1) == 1).all()


def test_input_unchanged_and_empty_batch():
    theta = torch.tensor([[0.1, 2.0, 2.0], [3.0, -1.0, 0.0]])
    before = theta.clone()
    y = Argmax()(theta)
    assert torch.equal(theta, before)
    assert y.tolist() == [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]
    assert Argmax()(torch.zeros(0, 4)).shape == (0, 4)


def test_output_is_detached_from_autograd():
    theta = torch.randn(4, 3, requires_grad=True)
    assert not Argmax()(theta).requires_grad


def test_solver_attributes_and_registry():
    solver = cg.solvers.get("argmax")
    assert isinstance(solver, Argmax)
    assert (solver.name, solver.sense, solver.event_ndim) == ("argmax", "max", 1)


@pytest.mark.parametrize(
    "theta, error, match",
    [
        (torch.zeros(3, 0), ValueError, "at least 1 entry"),
        (torch.zeros(()), ValueError, "at least 1 dims"),
        (torch.tensor([0.0, float("nan")]), ValueError, "finite"),
        (torch.tensor([0.0, float("-inf")]), ValueError, "finite"),
        (torch.tensor([1, 2]), ValueError, "floating"),
        ([0.0, 1.0], TypeError, "torch.Tensor"),
    ],
)
def test_bad_inputs(theta, error, match):
    with pytest.raises(error, match=match):
        Argmax()(theta)


# The numba backend against the torch one: both return the first maximal index,
# so the outputs are identical (float32 scores convert exactly to numba's float64).
# CPU always; the CUDA half is skipped without CUDA (benchmarks/device_check.sh runs -k cuda).

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n", [1, 2, 7, 100, 1000])
@pytest.mark.parametrize("ties", [False, True])
def test_numba_and_torch_backends_agree(ties, n, dtype, device):
    # 2 x 5 x 2 cases of 300 instances: 6000 on the CPU.
    generator = torch.Generator().manual_seed(n + 1000 * ties)
    if ties:
        theta = torch.randint(0, 3, (300, n), generator=generator).to(dtype)
    else:
        theta = torch.randn(300, n, generator=generator, dtype=dtype)
    theta = theta.to(device)
    by_numba = Argmax(backend="numba")(theta)
    by_torch = Argmax(backend="torch")(theta)
    assert by_numba.device == theta.device and by_numba.dtype == dtype
    assert torch.equal(by_numba, by_torch)
    assert torch.equal((by_numba * theta).sum(-1), theta.amax(-1))


def test_numba_backend_batch_dims_empty_and_input_unchanged():
    theta = torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    before = theta.clone()
    y = Argmax(backend="numba")(theta)
    assert torch.equal(theta, before) and torch.equal(y, Argmax(backend="torch")(theta))
    assert Argmax(backend="numba")(torch.zeros(0, 4)).shape == (0, 4)
    with pytest.raises(ValueError, match="at least 1 entry"):
        Argmax(backend="numba")(torch.zeros(3, 0))


def test_backend_option():
    # torch first: "auto" keeps torch on the CPU (measured faster or on par, README).
    assert Argmax().backends == ("torch", "numba")
    assert Argmax().backend_for(torch.device("cpu")) == "torch"
    assert Argmax(backend="numba").backend_for(torch.device("cuda")) == "numba"
    assert repr(Argmax(backend="numba")) == "Argmax(backend='numba')"
    assert cg.solvers.options("argmax")["backend"].default == "auto"
    with pytest.raises(ValueError, match=r"argmax: backend must be one of \['auto', 'torch', 'numba'\], got 'gpu'"):
        Argmax(backend="gpu")
    with pytest.raises(TypeError):
        Argmax("numba")

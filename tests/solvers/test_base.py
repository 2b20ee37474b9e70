"""Tests for combgrad/solvers/base.py: the shared validation, batching and round trip."""

import numpy as np
import pytest
import torch

import combgrad as cg
from combgrad.solvers import Argmax, BatchSolver, Solver


class RecordingSolver(BatchSolver):
    """Marks the positive entries of ``theta [*, n, m]`` and records what the kernel saw."""

    name = "recording"
    sense = "max"
    event_ndim = 2

    def __init__(self) -> None:
        self.seen = []
        self.events = []

    def check_event(self, theta, event_shape):
        self.events.append(event_shape)
        if event_shape[-1] == 7:
            raise ValueError("recording: no 7 columns")

    def solve_batch(self, theta):
        self.seen.append((theta.shape, theta.dtype, theta.flags.c_contiguous))
        y = (theta > 0).astype(np.float64)
        theta[...] = -123.0  # a careless kernel: the caller's tensor must not see this
        return y


class TorchSolver(BatchSolver):
    """A torch-native solver: ``solve_flat`` runs on theta's own device."""

    name = "torch_native"
    sense = "min"
    event_ndim = 1

    def __init__(self) -> None:
        self.devices = []

    def solve_flat(self, theta):
        self.devices.append((theta.device, theta.dtype, tuple(theta.shape)))
        return (theta < 0).to(theta.dtype)


def test_batch_dims_are_flattened_and_restored():
    solver = RecordingSolver()
    theta = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(0))
    y = solver(theta)
    assert solver.seen == [((6, 4, 5), np.float64, True)]
    assert solver.events == [(4, 5)]
    assert y.shape == theta.shape
    assert torch.equal(y, (theta > 0).float())


def test_single_instance_without_batch_dims():
    solver = RecordingSolver()
    theta = torch.tensor([[1.0, -1.0], [-2.0, 2.0]])
    assert solver(theta).tolist() == [[1.0, 0.0], [0.0, 1.0]]
    assert solver.seen[0][0] == (1, 2, 2)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_output_has_theta_dtype_and_input_is_not_modified(dtype):
    solver = RecordingSolver()
    theta = torch.randn(3, 2, 4, generator=torch.Generator().manual_seed(1)).to(dtype)
    before = theta.clone()
    y = solver(theta)
    assert y.dtype == dtype and y.device == theta.device
    assert torch.equal(theta, before)
    assert y.data_ptr() != theta.data_ptr()
    assert torch.equal(y, (before > 0).to(dtype))


def test_non_contiguous_input_is_solved_as_its_values():
    solver = RecordingSolver()
    base = torch.randn(4, 3, 2, dtype=torch.float64)
    theta = base.transpose(0, 2)  # [2, 3, 4], non-contiguous
    before = base.clone()
    y = solver(theta)
    assert solver.seen[0][2]  # the kernel gets a C-contiguous array
    assert torch.equal(y, (theta > 0).double())
    assert torch.equal(base, before)


def test_empty_batch_skips_the_kernel():
    solver = RecordingSolver()
    y = solver(torch.zeros(0, 3, 4))
    assert y.shape == (0, 3, 4) and solver.seen == []
    y = solver(torch.zeros(2, 0, 3, 4))
    assert y.shape == (2, 0, 3, 4) and solver.seen == []


def test_empty_event_dim_reaches_the_kernel():
    # reshape(-1, 0) is ambiguous; the batch size must be explicit.
    solver = RecordingSolver()
    y = solver(torch.zeros(3, 2, 0))
    assert y.shape == (3, 2, 0)
    assert solver.seen[0][0] == (3, 2, 0)


def test_output_is_detached():
    theta = torch.randn(2, 3, 3, requires_grad=True)
    y = RecordingSolver()(theta)
    assert not y.requires_grad and theta.grad is None


def test_check_event_is_called_and_its_error_propagates():
    with pytest.raises(ValueError, match="recording: no 7 columns"):
        RecordingSolver()(torch.zeros(2, 7))


@pytest.mark.parametrize(
    "theta, error, match",
    [
        ([[1.0]], TypeError, "recording: theta must be a torch.Tensor, got list"),
        (torch.zeros(3), ValueError, r"at least 2 dims \[\*, <event>\], got shape \(3,\)"),
        (torch.zeros(2, 2, dtype=torch.int32), ValueError, "floating tensor, got dtype torch.int32"),
        (torch.zeros(2, 2, dtype=torch.bool), ValueError, "floating tensor"),
        (torch.tensor([[0.0, float("nan")]]), ValueError, "must be finite"),
        (torch.tensor([[float("-inf"), 0.0]]), ValueError, "must be finite"),
    ],
)
def test_theta_validation(theta, error, match):
    solver = RecordingSolver()
    with pytest.raises(error, match=match):
        solver(theta)
    assert solver.seen == []


def test_torch_native_solver_runs_on_the_flat_batch():
    solver = TorchSolver()
    theta = torch.tensor([[[1.0, -2.0]], [[-3.0, 4.0]]])
    y = solver(theta)
    assert solver.devices == [(torch.device("cpu"), torch.float32, (2, 2))]
    assert y.tolist() == [[[0.0, 1.0]], [[1.0, 0.0]]]


def test_solve_batch_must_be_implemented():
    class Incomplete(BatchSolver):
        name, sense, event_ndim = "incomplete", "max", 1

    with pytest.raises(NotImplementedError):
        Incomplete()(torch.zeros(3))
    assert repr(Incomplete()) == "Incomplete(name='incomplete', sense='max')"


def test_solver_protocol():
    assert isinstance(Argmax(), Solver)
    assert isinstance(RecordingSolver(), Solver)
    assert not isinstance(object(), Solver)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_input_is_solved_on_cpu_and_returned_on_its_device():
    theta = torch.randn(4, 2, 3, device="cuda", dtype=torch.float32)
    solver = RecordingSolver()
    y = solver(theta)
    assert y.device == theta.device and y.dtype == torch.float32
    assert solver.seen[0][1] == np.float64
    assert torch.equal(y.cpu(), (theta.cpu() > 0).float())
    torch_solver = TorchSolver()
    y = torch_solver(theta[:, 0])
    assert torch_solver.devices[0][0].type == "cuda" and y.device == theta.device


def test_huge_finite_values_whose_sum_overflows_are_accepted():
    # check_theta's fast path sums theta; an overflowing sum must fall back to
    # the exact element-wise check rather than report a non-finite input.
    theta = torch.tensor([1e308, 1e308, -1.0], dtype=torch.float64)
    assert cg.solvers.get("argmax")(theta).tolist() == [1.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="must be finite"):
        cg.solvers.get("argmax")(torch.tensor([1e308, float("inf"), -1.0], dtype=torch.float64))


class TwoKernelSolver(BatchSolver):
    """Both kernels; each marks which one ran."""

    name = "two_kernels"
    sense = "max"
    event_ndim = 1
    backends = ("numba", "torch")

    def __init__(self, backend="auto"):
        self.set_backend(backend)
        self.ran: list[str] = []

    def solve_batch(self, theta):
        self.ran.append("numba")
        return np.zeros_like(theta)

    def solve_torch(self, theta):
        self.ran.append("torch")
        return torch.zeros_like(theta)


@pytest.mark.parametrize("backend, expected", [("auto", "numba"), ("numba", "numba"), ("torch", "torch")])
def test_backend_chooses_the_kernel_on_the_cpu(backend, expected):
    solver = TwoKernelSolver(backend)
    solver(torch.ones(2, 3))
    assert solver.ran == [expected] and solver.backend_for(torch.device("cpu")) == expected


def test_auto_backend_prefers_torch_off_the_cpu():
    assert TwoKernelSolver().backend_for(torch.device("meta")) == "torch"
    assert TwoKernelSolver("numba").backend_for(torch.device("meta")) == "numba"


def test_bad_backends_list_what_exists():
    with pytest.raises(ValueError, match=r"two_kernels: backend must be one of \['auto', 'numba', 'torch'\], got 'cuda'"):
        TwoKernelSolver("cuda")

    class HostOnly(TwoKernelSolver):
        backends = ("numba",)

    with pytest.raises(ValueError, match="two_kernels: backend 'torch' is not available for this solver; available: auto, numba"):
        HostOnly("torch")


def test_solve_prechecked_skips_only_the_finiteness_read():
    # Estimators check their input once and call solve_prechecked for the scores
    # they built; the solver's event checks must still run there.
    solver = TwoKernelSolver()
    assert solver.solve_prechecked(torch.ones(2, 3)).shape == (2, 3)
    assert solver.solve_prechecked(torch.ones(0, 3)).shape == (0, 3) and solver.ran == ["numba"]
    with pytest.raises(ValueError, match="shortest_path: costs must be non-negative|negative"):
        cg.solvers.get("shortest_path", negative="raise").solve_prechecked(-torch.ones(1, 3, 3))

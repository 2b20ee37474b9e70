"""Fixtures shared by the estimator tests."""

import pathlib
import sys

import pytest
import torch

from combgrad.solvers import BatchSolver


class CountingSolver:
    """Wraps a solver and records the shape of every call (to check ONE batched call)."""

    def __init__(self, solver):
        self.solver = solver
        self.name = solver.name
        self.sense = solver.sense
        self.event_ndim = solver.event_ndim
        self.calls = []

    def __call__(self, theta):
        self.calls.append(tuple(theta.shape))
        return self.solver(theta)


class Argmin(BatchSolver):
    """One-hot of the smallest entry of ``theta [*, n]``: a "min" solver for closed-form tests."""

    name = "test_argmin"
    sense = "min"
    event_ndim = 1

    def solve_flat(self, theta):
        index = theta.argmin(dim=-1, keepdim=True)
        return torch.zeros_like(theta).scatter_(-1, index, 1.0)


@pytest.fixture
def counting():
    return CountingSolver


@pytest.fixture
def argmin():
    return Argmin()


# The device fixtures (tests/_devices.py): tests/ is not a package, so its folder
# goes on sys.path; the conftests of other folders can do the same.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from _devices import device, device_pair, syncs  # noqa: E402,F401


class TorchArgmax(BatchSolver):
    """One-hot of the largest entry of ``theta [*, n]`` through the torch backend only, counting kernel calls.

    A solver of this test suite's own (not the registry's argmax, whose
    backends other work changes), so that host-read counts see only the
    estimator's reads.
    """

    name = "test_torch_argmax"
    sense = "max"
    event_ndim = 1
    backends = ("torch",)

    def __init__(self):
        self.kernel_calls = 0

    def solve_torch(self, theta):
        self.kernel_calls += 1
        index = theta.argmax(dim=-1, keepdim=True)
        return torch.zeros_like(theta).scatter_(-1, index, 1.0)


@pytest.fixture
def torch_argmax():
    return TorchArgmax()

"""Fixtures shared by the estimator tests."""

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

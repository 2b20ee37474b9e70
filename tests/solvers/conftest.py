"""Fixtures of the solver tests: the devices (tests/_devices.py) and the backend-agreement check."""

import pathlib
import sys

import pytest
import torch

import combgrad as cg

# The device fixtures (tests/_devices.py), as the other test folders' conftests import them.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from _devices import device  # noqa: E402,F401


@pytest.fixture
def imle_through_both_backends():
    """``check(solver, theta, **options)``: I-MLE's forward and gradient through numba and torch agree exactly.

    Under a fixed seed I-MLE draws the same noise for both backends; on inputs
    whose optimum is unique almost surely (normal float64 scores) both return
    the same solutions, so forward and gradient must be equal to the bit, and
    the gradient must not be zero (else the check would prove nothing).
    """

    def check(solver: str, theta: torch.Tensor, **options) -> None:
        weights = torch.arange(float(theta[0].numel()), dtype=theta.dtype, device=theta.device).reshape(theta.shape[1:])
        results = []
        for backend in ("numba", "torch"):
            layer = cg.DifferentiableSolver(solver, estimator="imle", backend=backend, samples=3, **options)
            leaf = theta.detach().clone().requires_grad_()
            torch.manual_seed(1)
            y = layer(leaf)
            (y * weights).sum().backward()
            results.append((y.detach().cpu(), leaf.grad.cpu()))
        (y_numba, grad_numba), (y_torch, grad_torch) = results
        assert torch.equal(y_numba, y_torch) and torch.equal(grad_numba, grad_torch)
        assert grad_numba.abs().sum() > 0

    return check

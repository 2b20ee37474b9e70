"""Tests for combgrad/gradients/ste.py.

STE's forward is piecewise constant (no gradcheck); its backward is checked to
be exactly the identity in score space.
"""

import pytest
import torch

import combgrad as cg


@pytest.mark.parametrize("seed", [0, 1])
def test_identity_for_a_max_solver(seed, counting):
    generator = torch.Generator().manual_seed(seed)
    theta = torch.randn(3, 8, generator=generator, requires_grad=True)
    dy = torch.randn(3, 8, generator=generator)
    solver = counting(cg.solvers.get("topk", k=3))
    y = cg.gradients.get("ste")(theta, solver)
    assert torch.equal(y.detach(), cg.solvers.get("topk", k=3)(theta.detach()))
    (grad,) = torch.autograd.grad(y, theta, dy)
    assert torch.equal(grad, dy)
    assert solver.calls == [(3, 8)]  # nothing solved in backward


@pytest.mark.parametrize("seed", [0, 1])
def test_negated_identity_for_a_min_solver(seed):
    generator = torch.Generator().manual_seed(seed)
    costs = torch.rand(2, 5, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    dy = torch.randn(2, 5, 5, generator=generator, dtype=torch.float64)
    solver = cg.solvers.get("shortest_path")
    y = cg.gradients.get("ste")(costs, solver)
    assert torch.equal(y.detach(), solver(costs.detach()))
    (grad,) = torch.autograd.grad(y, costs, dy)
    assert torch.equal(grad, -dy)


def test_no_options():
    with pytest.raises(TypeError, match="estimator 'ste': unknown option 'lam'; accepted options: none"):
        cg.gradients.get("ste", lam=1.0)


def test_nonfinite_incoming_gradient_is_refused_not_passed_through():
    """Guards issue 8 (smaller defects): STE would silently pass a NaN loss gradient to the model."""
    theta = torch.randn(2, 5, requires_grad=True)
    y = cg.gradients.get("ste")(theta, cg.solvers.get("topk", k=2))
    with pytest.raises(ValueError, match="ste: the gradient flowing back into the layer's output is NaN or inf; check the loss"):
        y.backward(torch.full_like(y, float("nan")))

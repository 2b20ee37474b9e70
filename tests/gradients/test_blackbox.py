"""Tests for combgrad/gradients/blackbox.py.

Blackbox differentiation is piecewise constant in theta (no gradcheck); its
backward is checked exactly against Vlastelica et al.'s formula written in cost
space for a "min" solver and against I-MLE without noise divided by lam.
"""

import pytest
import torch

import combgrad as cg


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("lam", [0.5, 4.0])
def test_min_solver_matches_the_papers_cost_space_formula(seed, lam, counting):
    generator = torch.Generator().manual_seed(seed)
    w = torch.rand(3, 6, 6, generator=generator, dtype=torch.float64, requires_grad=True)
    dy = torch.randn(3, 6, 6, generator=generator, dtype=torch.float64)
    solver = cg.solvers.get("shortest_path")
    counted = counting(solver)
    y = cg.gradients.get("blackbox", lam=lam)(w, counted)
    (grad,) = torch.autograd.grad(y, w, dy)
    # w' = w + lam dy, grad_w = -(y(w) - y(w')) / lam.
    expected = -(solver(w.detach()) - solver(w.detach() + lam * dy)) / lam
    assert torch.equal(grad, expected)
    assert counted.calls == [(3, 6, 6), (3, 6, 6)]


@pytest.mark.parametrize("solver_name", ["topk", "shortest_path"])
@pytest.mark.parametrize("seed", [0, 1])
def test_equals_noiseless_imle_divided_by_lam(solver_name, seed):
    generator = torch.Generator().manual_seed(seed)
    if solver_name == "topk":
        solver, theta = cg.solvers.get("topk", k=2), torch.randn(4, 9, generator=generator, dtype=torch.float64)
    else:
        solver, theta = cg.solvers.get("shortest_path"), torch.rand(4, 5, 5, generator=generator, dtype=torch.float64)
    dy = torch.randn(theta.shape, generator=generator, dtype=torch.float64)
    grads = []
    for estimator in (
        cg.gradients.get("blackbox", lam=2.0),
        cg.gradients.get("imle", noise="none", lam=2.0, divide_by_lam=True),
        cg.gradients.get("imle", noise="none", lam=2.0, divide_by_lam=False),
    ):
        leaf = theta.clone().requires_grad_()
        y = estimator(leaf, solver)
        assert torch.equal(y.detach(), solver(theta))
        grads.append(torch.autograd.grad(y, leaf, dy)[0])
    assert torch.equal(grads[0], grads[1])
    assert torch.equal(grads[0], grads[2] / 2.0)
    assert grads[0].abs().sum() > 0


@pytest.mark.parametrize("lam", [0, -1.0, float("nan"), "1"])
def test_bad_lam(lam):
    with pytest.raises(ValueError, match="blackbox: lam must be a finite number > 0"):
        cg.gradients.get("blackbox", lam=lam)


def test_nonfinite_incoming_gradient_names_blackbox():
    """Guards issue 8 (smaller defects): it used to say 'shortest_path: theta must be finite'."""
    w = torch.rand(1, 4, 4, requires_grad=True)
    y = cg.gradients.get("blackbox")(w, cg.solvers.get("shortest_path"))
    with pytest.raises(ValueError, match="blackbox: the gradient flowing back into the layer's output is NaN or inf"):
        y.backward(torch.full_like(y, float("nan")))

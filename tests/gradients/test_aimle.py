"""Tests for combgrad/gradients/aimle.py.

Like I-MLE, AIMLE is piecewise constant in theta (no gradcheck); it is checked
exactly against I-MLE run with the lam that AIMLE computes, against the
central-difference formula, and against its documented beta update rule.
"""

import pytest
import torch

import combgrad as cg


def problem(solver_name, seed, batch=1):
    generator = torch.Generator().manual_seed(seed)
    if solver_name == "topk":
        solver = cg.solvers.get("topk", k=3)
        theta = torch.randn(batch, 10, generator=generator, dtype=torch.float64)
    else:
        solver = cg.solvers.get("shortest_path")
        theta = torch.rand(batch, 6, 6, generator=generator, dtype=torch.float64)
    dy = torch.randn(theta.shape, generator=generator, dtype=torch.float64)
    return solver, theta, dy


def run(estimator, solver, theta, dy, seed=0):
    theta = theta.clone().requires_grad_()
    y = estimator(theta, solver, generator=torch.Generator().manual_seed(seed))
    (grad,) = torch.autograd.grad(y, theta, dy)
    return y.detach(), grad


@pytest.mark.parametrize("solver_name", ["topk", "shortest_path"])
@pytest.mark.parametrize("noise_name", ["none", "gumbel", "sum_of_gamma"])
@pytest.mark.parametrize("scale", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_frozen_aimle_equals_imle_with_the_computed_lam(solver_name, noise_name, scale, seed):
    solver, theta, dy = problem(solver_name, seed)
    beta = 0.3
    options = {"samples": 4, "noise": noise_name, "temperature": 0.5, "scale": scale}
    aimle = cg.gradients.get("aimle", beta=beta, beta_update_step=0.0, symmetric=False, **options)
    y, grad = run(aimle, solver, theta, dy, seed=seed)
    # One instance: ||s|| and ||dy|| are the Euclidean norms over its event dims.
    lam = beta * torch.linalg.vector_norm(theta).item() / torch.linalg.vector_norm(dy).item()
    imle = cg.gradients.get("imle", lam=lam, **options)
    y_imle, grad_imle = run(imle, solver, theta, dy, seed=seed)
    assert torch.equal(y, y_imle)
    assert torch.allclose(grad, grad_imle, atol=1e-12)
    assert aimle.beta.item() == beta  # frozen


@pytest.mark.parametrize("solver_name", ["topk", "shortest_path"])
def test_lam_is_per_instance_in_a_batch(solver_name):
    solver, theta, dy = problem(solver_name, 3, batch=5)
    aimle = cg.gradients.get("aimle", noise="none", beta=0.5, beta_update_step=0.0)
    _, grad = run(aimle, solver, theta, dy)
    for index in range(5):
        lam = 0.5 * torch.linalg.vector_norm(theta[index]).item() / torch.linalg.vector_norm(dy[index]).item()
        imle = cg.gradients.get("imle", noise="none", lam=lam)
        _, expected = run(imle, solver, theta[index : index + 1], dy[index : index + 1])
        assert torch.allclose(grad[index : index + 1], expected, atol=1e-12)


@pytest.mark.parametrize("solver_name", ["topk", "shortest_path"])
def test_symmetric_is_the_central_difference_in_one_call(counting, solver_name):
    solver, theta, dy = problem(solver_name, 4, batch=3)
    counted = counting(solver)
    aimle = cg.gradients.get("aimle", noise="none", beta=0.8, beta_update_step=0.0, symmetric=True)
    _, grad = run(aimle, counted, theta, dy)
    event = theta.shape[1:]
    assert counted.calls == [(3, *event), (2 * 3, *event)]  # forward; both sides in one backward call
    sign = 1 if solver.sense == "max" else -1
    s = sign * theta
    dims = tuple(range(1, theta.ndim))
    lam = 0.8 * torch.linalg.vector_norm(theta, dim=dims) / torch.linalg.vector_norm(dy, dim=dims)
    lam = lam.reshape(-1, *([1] * len(event)))

    def y_star(scores):
        return solver(sign * scores)

    expected = (y_star(s + lam * dy) - y_star(s - lam * dy)) / 2
    assert torch.allclose(grad, sign * expected, atol=1e-12)
    assert grad.abs().sum() > 0


def test_beta_update_rule_with_momentum():
    solver = cg.solvers.get("argmax")
    theta = torch.tensor([[0.0, 1.0, 0.5]])
    dy = torch.tensor([[-1.0, 1.0, 0.0]])
    aimle = cg.gradients.get(
        "aimle", noise="none", beta=2.0, beta_update_step=0.1, beta_update_momentum=0.5, target_norm=1.0
    )
    # lam = 2 * ||s|| / ||dy|| = 1.58: the target moves the 1 from index 1 to index 0,
    # so the gradient has 2 non-zero entries > target 1 and beta steps down.
    _, grad = run(aimle, solver, theta, dy)
    assert torch.equal(grad, torch.tensor([[-1.0, 1.0, 0.0]]))
    assert aimle.nonzero.item() == 2.0
    assert aimle.velocity.item() == pytest.approx(-0.1)
    assert aimle.beta.item() == pytest.approx(1.9)
    run(aimle, solver, theta, dy)  # velocity = 0.5 * -0.1 - 0.1
    assert aimle.velocity.item() == pytest.approx(-0.15)
    assert aimle.beta.item() == pytest.approx(1.75)
    # Far too small a beta changes no solution: 0 non-zero entries < 1, beta steps up.
    small = cg.gradients.get("aimle", noise="none", beta=0.01, beta_update_step=0.1)
    _, grad = run(small, solver, theta, dy)
    assert grad.abs().sum() == 0 and small.nonzero.item() == 0.0
    assert small.beta.item() == pytest.approx(0.11)


def test_beta_never_goes_negative():
    solver = cg.solvers.get("argmax")
    aimle = cg.gradients.get("aimle", noise="none", beta=2.0, beta_update_step=5.0, target_norm=1.0)
    theta = torch.tensor([[0.0, 1.0, 0.5]])
    run(aimle, solver, theta, torch.tensor([[-1.0, 1.0, 0.0]]))
    assert aimle.beta.item() == 0.0


def test_state_changes_across_steps_and_round_trips_through_state_dict():
    solver, theta, dy = problem("shortest_path", 5, batch=4)
    aimle = cg.gradients.get("aimle", samples=2, noise="gumbel", beta=1.0, beta_update_step=0.05)
    betas = [aimle.beta.item()]
    for step in range(4):
        run(aimle, solver, theta, dy, seed=step)
        betas.append(aimle.beta.item())
    assert len(set(betas)) > 1
    assert set(aimle.state_dict()) == {"beta", "velocity", "nonzero"}

    restored = cg.gradients.get("aimle", samples=2, noise="gumbel", beta=1.0, beta_update_step=0.05)
    assert restored.beta.item() == 1.0
    restored.load_state_dict(aimle.state_dict())
    for name in ("beta", "velocity", "nonzero"):
        assert torch.equal(getattr(restored, name), getattr(aimle, name))
    first, second = run(aimle, solver, theta, dy, seed=9), run(restored, solver, theta, dy, seed=9)
    assert torch.equal(first[1], second[1])
    assert aimle.beta.item() == restored.beta.item()


def test_eval_mode_records_but_does_not_adapt():
    solver, theta, dy = problem("topk", 6, batch=2)
    aimle = cg.gradients.get("aimle", noise="none", beta=1.0, beta_update_step=0.5).eval()
    _, grad = run(aimle, solver, theta, dy)
    assert aimle.beta.item() == 1.0 and aimle.velocity.item() == 0.0
    assert aimle.nonzero.item() == (grad != 0).sum(-1).double().mean().item()


def test_zero_upstream_gradient_gives_zero_without_nan():
    solver, theta, dy = problem("topk", 7, batch=3)
    dy[1] = 0.0
    for scale in (False, True):
        aimle = cg.gradients.get("aimle", noise="none", beta=1.0, beta_update_step=0.0, scale=scale)
        _, grad = run(aimle, solver, theta, dy)
        assert bool(torch.isfinite(grad).all())
        assert grad[1].abs().sum() == 0 and grad[0].abs().sum() > 0


def test_forward_is_imles_and_reproducible():
    solver, theta, dy = problem("topk", 8, batch=3)
    aimle = cg.gradients.get("aimle", samples=3, noise="sum_of_gamma", beta_update_step=0.0)
    imle = cg.gradients.get("imle", samples=3, noise="sum_of_gamma")
    assert torch.equal(run(aimle, solver, theta, dy, seed=1)[0], run(imle, solver, theta, dy, seed=1)[0])
    torch.manual_seed(0)
    y1 = aimle(theta, solver)
    torch.manual_seed(0)
    assert torch.equal(y1, aimle(theta, solver))


def test_buffers_follow_the_module_and_show_in_repr():
    aimle = cg.gradients.get("aimle", beta=0.25)
    assert aimle.beta.dtype == torch.float64
    assert "current beta=0.25" in repr(aimle) and "symmetric=False" in repr(aimle)
    layer = cg.DifferentiableSolver("topk", estimator="aimle", k=2)
    assert {"estimator.beta", "estimator.velocity", "estimator.nonzero"} <= set(layer.state_dict())


@pytest.mark.parametrize(
    "options, match",
    [
        ({"samples": 0}, "aimle: samples must be an integer >= 1, got 0"),
        ({"noise": "laplace"}, "aimle: noise must be one of .*got 'laplace'"),
        ({"beta": -1.0}, "aimle: beta must be a finite number >= 0, got -1.0"),
        ({"target_norm": -1}, "aimle: target_norm must be a finite number >= 0, got -1"),
        ({"beta_update_step": -0.1}, "aimle: beta_update_step must be a finite number >= 0, got -0.1"),
        ({"beta_update_momentum": 1.0}, "aimle: beta_update_momentum must be a finite number >= 0 and < 1.0, got 1.0"),
        ({"symmetric": "yes"}, "aimle: symmetric must be True or False, got 'yes'"),
        ({"temperature": -1}, "aimle: temperature must be a finite number >= 0, got -1"),
    ],
)
def test_bad_options(options, match):
    with pytest.raises(ValueError, match=match):
        cg.gradients.get("aimle", **options)

"""Tests for combgrad/gradients/imle.py.

I-MLE's forward is piecewise constant in theta, so float64 gradcheck does not
apply; its backward is checked exactly against the defining formula
``y*(s + tau eps) - y*(s - lam dy + tau_t eps)`` recomputed here with the solver
called directly (``y*(s) = solver(s)`` for "max", ``solver(-s)`` for "min").
"""

import pytest
import torch

import combgrad as cg
from combgrad.gradients import noise


def random_problem(solver_name, seed, batch=4):
    generator = torch.Generator().manual_seed(seed)
    if solver_name == "topk":
        solver = cg.solvers.get("topk", k=3)
        theta = torch.randn(batch, 10, generator=generator, dtype=torch.float64)
    else:
        solver = cg.solvers.get("shortest_path")
        theta = torch.rand(batch, 6, 6, generator=generator, dtype=torch.float64)
    dy = torch.randn(theta.shape, generator=generator, dtype=torch.float64)
    return solver, theta, dy


def score_solution(solver, scores):
    """y*(s) computed with the solver directly (the independent reference)."""
    return solver(scores) if solver.sense == "max" else solver(-scores)


def gradient(estimator, solver, theta, dy, generator=None):
    theta = theta.clone().requires_grad_()
    y = estimator(theta, solver, generator=generator)
    (grad,) = torch.autograd.grad(y, theta, dy)
    return y.detach(), grad


@pytest.mark.parametrize("solver_name", ["topk", "shortest_path"])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("lam", [0.5, 3.0])
@pytest.mark.parametrize("scale", [False, True])
def test_noiseless_imle_is_the_target_difference(solver_name, seed, lam, scale):
    solver, theta, dy = random_problem(solver_name, seed)
    estimator = cg.gradients.get("imle", noise="none", lam=lam, scale=scale, samples=3)
    y, grad = gradient(estimator, solver, theta, dy)
    sign = 1 if solver.sense == "max" else -1
    s = sign * theta
    assert torch.equal(y, solver(theta))
    expected = score_solution(solver, s) - score_solution(solver, s - lam * dy)
    if scale:
        expected = expected / lam
    assert torch.equal(grad, sign * expected)
    assert grad.abs().sum() > 0  # lam and dy are large enough to change some solutions


@pytest.mark.parametrize("noise_name", ["gumbel", "normal", "sum_of_gamma"])
@pytest.mark.parametrize("target_temperature", [None, 0.0, 2.0])
def test_backward_reuses_the_forward_draws(noise_name, target_temperature):
    solver, theta, dy = random_problem("topk", 5)
    samples, temperature, lam = 6, 0.7, 2.0
    estimator = cg.gradients.get(
        "imle",
        samples=samples,
        noise=noise_name,
        temperature=temperature,
        target_temperature=target_temperature,
        lam=lam,
    )
    y, grad = gradient(estimator, solver, theta, dy, generator=torch.Generator().manual_seed(11))
    # Re-draw the same eps from the same seed; sum_of_gamma's k defaults to topk's k = 3.
    eps = noise.sample(
        noise_name, (samples, *theta.shape), k=3, dtype=theta.dtype, generator=torch.Generator().manual_seed(11)
    )
    tau_t = temperature if target_temperature is None else target_temperature
    inputs = solver(theta + temperature * eps)
    targets = solver(theta - lam * dy + tau_t * eps)
    assert torch.equal(y, inputs.mean(0))
    assert torch.allclose(grad, (inputs - targets).mean(0), atol=1e-12)


def test_explicit_k_overrides_the_solvers_k():
    solver, theta, dy = random_problem("topk", 6)
    estimator = cg.gradients.get("imle", noise="sum_of_gamma", k=1, iterations=4, samples=2)
    y, _ = gradient(estimator, solver, theta, dy, generator=torch.Generator().manual_seed(0))
    eps = noise.sum_of_gamma(
        (2, *theta.shape), k=1, iterations=4, dtype=theta.dtype, generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(y, solver(theta + eps).mean(0))


def test_one_batched_solver_call_each_way(counting):
    solver = counting(cg.solvers.get("shortest_path"))
    theta = torch.rand(2, 3, 5, 5, requires_grad=True)
    y = cg.gradients.get("imle", samples=4, noise="gumbel")(theta, solver)
    assert y.shape == theta.shape
    y.backward(torch.randn_like(y))
    assert solver.calls == [(4 * 6, 5, 5), (4 * 6, 5, 5)]


def test_noise_none_solves_once_whatever_the_samples(counting):
    solver = counting(cg.solvers.get("topk", k=2))
    theta = torch.randn(3, 7, requires_grad=True)
    y = cg.gradients.get("imle", samples=10, noise="none")(theta, solver)
    y.backward(torch.ones_like(y))
    assert solver.calls == [(3, 7), (3, 7)]


def test_reproducible_under_manual_seed_and_generator():
    solver, theta, dy = random_problem("shortest_path", 7)
    estimator = cg.gradients.get("imle", samples=3)
    torch.manual_seed(0)
    first = gradient(estimator, solver, theta, dy)
    torch.manual_seed(0)
    second = gradient(estimator, solver, theta, dy)
    third = gradient(estimator, solver, theta, dy, generator=torch.Generator().manual_seed(0))
    fourth = gradient(estimator, solver, theta, dy, generator=torch.Generator().manual_seed(0))
    for a, b in [(first, second), (third, fourth)]:
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    other = gradient(estimator, solver, theta, dy, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(third[0], other[0])


def test_float32_and_batch_shapes():
    solver = cg.solvers.get("topk", k=2)
    theta = torch.randn(2, 3, 8, requires_grad=True)
    y = cg.gradients.get("imle", samples=2, noise="gumbel")(theta, solver)
    assert y.dtype == torch.float32 and y.shape == (2, 3, 8)
    y.sum().backward()
    assert theta.grad.dtype == torch.float32


@pytest.mark.parametrize(
    "options, match",
    [
        ({"samples": 0}, "imle: samples must be an integer >= 1, got 0"),
        (
            {"noise": "uniform"},
            "imle: noise must be one of \\['gumbel', 'normal', 'sum_of_gamma', 'none'\\], got 'uniform'",
        ),
        ({"k": 0}, "imle: k must be an integer >= 1, got 0"),
        ({"iterations": 0}, "imle: iterations must be an integer >= 1, got 0"),
        ({"temperature": -0.1}, "imle: temperature must be a finite number >= 0, got -0.1"),
        ({"target_temperature": float("nan")}, "imle: target_temperature must be a finite number >= 0, got nan"),
        ({"lam": 0.0}, "imle: lam must be a finite number > 0, got 0.0"),
        ({"scale": None}, "imle: scale must be True or False, got None"),
    ],
)
def test_bad_options(options, match):
    with pytest.raises(ValueError, match=match):
        cg.gradients.get("imle", **options)
    with pytest.raises(TypeError, match="estimator 'imle': unknown option 'sigma'; accepted options: "):
        cg.gradients.get("imle", sigma=1.0)

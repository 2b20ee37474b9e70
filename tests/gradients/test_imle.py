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

from _pyepo_grid import PyEPOGridDP  # tests/ is on sys.path (conftest)


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
@pytest.mark.parametrize("divide_by_lam", [False, True])
def test_noiseless_imle_is_the_target_difference(solver_name, seed, lam, divide_by_lam):
    solver, theta, dy = random_problem(solver_name, seed)
    estimator = cg.gradients.get("imle", noise="none", lam=lam, divide_by_lam=divide_by_lam, samples=3)
    y, grad = gradient(estimator, solver, theta, dy)
    sign = 1 if solver.sense == "max" else -1
    s = sign * theta
    assert torch.equal(y, solver(theta))
    expected = score_solution(solver, s) - score_solution(solver, s - lam * dy)
    if divide_by_lam:
        expected = expected / lam
    assert torch.equal(grad, sign * expected)
    assert grad.abs().sum() > 0  # lam and dy are large enough to change some solutions


@pytest.mark.parametrize("noise_name", ["gumbel", "normal", "sum_of_gamma"])
@pytest.mark.parametrize("target_noise_scale", [None, 0.0, 2.0])
def test_backward_reuses_the_forward_draws(noise_name, target_noise_scale):
    solver, theta, dy = random_problem("topk", 5)
    samples, noise_scale, lam = 6, 0.7, 2.0
    estimator = cg.gradients.get(
        "imle",
        samples=samples,
        noise=noise_name,
        noise_scale=noise_scale,
        target_noise_scale=target_noise_scale,
        lam=lam,
    )
    y, grad = gradient(estimator, solver, theta, dy, generator=torch.Generator().manual_seed(11))
    # Re-draw the same eps from the same seed; sum_of_gamma's k defaults to topk's k = 3.
    eps = noise.sample(
        noise_name, (samples, *theta.shape), k=3, dtype=theta.dtype, generator=torch.Generator().manual_seed(11)
    )
    tau_t = noise_scale if target_noise_scale is None else target_noise_scale
    inputs = solver(theta + noise_scale * eps)
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
        ({"noise_scale": -0.1}, "imle: noise_scale must be a finite number >= 0, got -0.1"),
        ({"target_noise_scale": float("nan")}, "imle: target_noise_scale must be a finite number >= 0, got nan"),
        ({"lam": 0.0}, "imle: lam must be a finite number > 0, got 0.0"),
        ({"divide_by_lam": None}, "imle: divide_by_lam must be True or False, got None"),
        ({"sample_in_eval": "no"}, "imle: sample_in_eval must be True or False, got 'no'"),
    ],
)
def test_bad_options(options, match):
    with pytest.raises(ValueError, match=match):
        cg.gradients.get("imle", **options)
    with pytest.raises(TypeError, match="estimator 'imle': unknown option 'sigma'; accepted options: "):
        cg.gradients.get("imle", sigma=1.0)


def test_deprecated_names_keep_their_meaning():
    """Guards issue 9 item 7: temperature -> noise_scale, target_temperature -> target_noise_scale, scale -> divide_by_lam."""
    solver, theta, dy = random_problem("topk", 12)
    with pytest.warns(DeprecationWarning) as caught:
        old = cg.gradients.get("imle", samples=3, noise="gumbel", temperature=0.4, target_temperature=0.2, scale=True)
    assert {str(warning.message).split("'")[1] for warning in caught} == {"temperature", "target_temperature", "scale"}
    new = cg.gradients.get("imle", samples=3, noise="gumbel", noise_scale=0.4, target_noise_scale=0.2, divide_by_lam=True)
    assert old.options == new.options
    first = gradient(old, solver, theta, dy, generator=torch.Generator().manual_seed(0))
    second = gradient(new, solver, theta, dy, generator=torch.Generator().manual_seed(0))
    assert torch.equal(first[1], second[1])
    with pytest.raises(cg.errors.OptionError, match="'scale' is the old name of 'divide_by_lam'"):
        cg.gradients.IMLE(scale=True, divide_by_lam=True)


def test_one_option_set_sweeps_across_perturbation_based_estimators():
    """Guards issue 9 item 7: samples, noise and noise_scale mean the same in perturbation, imle and aimle."""
    sweep = {"samples": 3, "noise": "normal", "noise_scale": 0.5}
    theta = torch.randn(2, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    solver = cg.solvers.get("argmax")
    outputs = []
    for name in ("perturbation", "imle", "aimle"):
        estimator = cg.gradients.get(name, **sweep)
        assert (estimator.options.samples, estimator.options.noise, estimator.options.noise_scale) == (3, "normal", 0.5)
        outputs.append(estimator(theta, solver, generator=torch.Generator().manual_seed(1)))
    # Same draws, same scale: the same perturbed mean from all three.
    assert torch.equal(outputs[0], outputs[1]) and torch.equal(outputs[1], outputs[2])


@pytest.mark.parametrize("divide_by_lam", [False, True])
def test_reduce_false_returns_samples_with_one_target_each(divide_by_lam):
    """Guards issue 8 item 10: [S, *theta.shape] out; theta's gradient sums the per-sample I-MLE gradients."""
    solver, theta, _ = random_problem("topk", 13, batch=3)
    samples, lam = 5, 2.0
    dy = torch.randn(samples, *theta.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    estimator = cg.gradients.get(
        "imle", samples=samples, noise="gumbel", lam=lam, reduce=False, divide_by_lam=divide_by_lam
    )
    y, grad = gradient(estimator, solver, theta, dy, generator=torch.Generator().manual_seed(2))
    eps = noise.sample("gumbel", (samples, *theta.shape), dtype=theta.dtype, generator=torch.Generator().manual_seed(2))
    inputs = solver(theta + eps)
    assert y.shape == (samples, *theta.shape) and torch.equal(y, inputs)
    expected = (inputs - solver(theta - lam * dy + eps)).sum(0) / (lam if divide_by_lam else 1.0)
    assert torch.allclose(grad, expected, atol=1e-12) and grad.abs().sum() > 0


def test_reduce_false_mean_loss_differs_from_the_loss_of_the_mean():
    """mean_i L(y_i) (reduce=False) and L(mean_i y_i) (reduce=True) are different objectives.

    With the same draws, taking y.mean(0) of the unreduced output is the reduced
    estimator with lam / S (the 1/S of the mean is in each dy_i), times S.
    """
    solver, theta, dy = random_problem("shortest_path", 14, batch=2)
    samples = 4
    unreduced = cg.gradients.get("imle", samples=samples, noise="gumbel", lam=8.0, reduce=False)
    leaf = theta.clone().requires_grad_()
    y = unreduced(leaf, solver, generator=torch.Generator().manual_seed(3))
    (via_mean,) = torch.autograd.grad(y.mean(0), leaf, dy)
    reduced = cg.gradients.get("imle", samples=samples, noise="gumbel", lam=8.0 / samples)
    _, expected = gradient(reduced, solver, theta, dy, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(via_mean, samples * expected, atol=1e-12) and via_mean.abs().sum() > 0
    # A loss that is not linear in y: the two objectives then differ beyond the scaling.
    target = solver(theta.flip(-1))
    leaf = theta.clone().requires_grad_()
    per_sample = unreduced(leaf, solver, generator=torch.Generator().manual_seed(3))
    mean_of_losses = ((per_sample - target) ** 2).sum((-2, -1)).mean(0).sum()
    (grad_mean_of_losses,) = torch.autograd.grad(mean_of_losses, leaf)
    leaf = theta.clone().requires_grad_()
    mean = cg.gradients.get("imle", samples=samples, noise="gumbel", lam=8.0)(leaf, solver, generator=torch.Generator().manual_seed(3))
    (grad_loss_of_mean,) = torch.autograd.grad(((mean - target) ** 2).sum(), leaf)
    assert not torch.allclose(grad_mean_of_losses, grad_loss_of_mean)


@pytest.mark.parametrize("reduce", [True, False])
def test_eval_mode_returns_the_exact_solution(counting, reduce):
    """Guards issue 8 item 13: eval() is deterministic (like dropout); sample_in_eval=True keeps sampling."""
    solver = counting(cg.solvers.get("topk", k=2))
    theta = torch.randn(3, 7, generator=torch.Generator().manual_seed(0), requires_grad=True)
    exact = cg.solvers.get("topk", k=2)(theta.detach())
    layer = cg.DifferentiableSolver(solver, cg.gradients.get("imle", samples=6, reduce=reduce)).eval()
    y = layer(theta)
    assert torch.equal(y, exact if reduce else exact.expand(6, 3, 7))
    assert solver.calls == [(3, 7)]  # one noise-free solve, not six samples
    y.backward(torch.randn_like(y))  # noise-free backward: the target difference
    assert theta.grad is not None and bool(torch.isfinite(theta.grad).all())
    sampling = cg.DifferentiableSolver(solver, cg.gradients.get("imle", samples=6, sample_in_eval=True)).eval()
    assert not torch.equal(sampling(theta, generator=torch.Generator().manual_seed(1)), exact)
    assert not torch.equal(layer.train()(theta, generator=torch.Generator().manual_seed(1)), exact)


def test_nonfinite_incoming_gradient_names_the_estimator_not_the_solver():
    """Guards issue 8 (smaller defects): it used to say 'shortest_path: theta must be finite'."""
    solver, theta, dy = random_problem("shortest_path", 15)
    dy[1, 2, 3] = float("inf")
    with pytest.raises(ValueError, match="imle: the gradient flowing back into the layer's output is NaN or inf; check the loss"):
        gradient(cg.gradients.get("imle"), solver, theta, dy)


# --- symmetric=True: the central difference (PyEPO's implicitMLE(two_sides=True)) ---


def test_symmetric_is_the_central_difference_by_hand_on_a_tiny_topk():
    """top-2 of s = [3, 2, 1, 0], dy = [1, 0, -1, 0], lam = 1.5, no noise:
    s + lam dy = [4.5, 2, -0.5, 0] -> {0, 1};  s - lam dy = [1.5, 2, 2.5, 0] -> {1, 2};
    g = ([1, 1, 0, 0] - [0, 1, 1, 0]) / 2 = [0.5, 0, -0.5, 0], divided by lam: [1/3, 0, -1/3, 0]."""
    theta = torch.tensor([3.0, 2.0, 1.0, 0.0], requires_grad=True)
    dy = torch.tensor([1.0, 0.0, -1.0, 0.0])
    solver = cg.solvers.get("topk", k=2)
    for divide_by_lam, expected in [(False, [0.5, 0.0, -0.5, 0.0]), (True, [1 / 3, 0.0, -1 / 3, 0.0])]:
        estimator = cg.gradients.get("imle", noise="none", lam=1.5, symmetric=True, divide_by_lam=divide_by_lam)
        y, grad = gradient(estimator, solver, theta.detach(), dy)
        assert torch.equal(y, torch.tensor([1.0, 1.0, 0.0, 0.0]))
        assert torch.allclose(grad, torch.tensor(expected))
    # The one-sided target on the same problem differs: y*(s) - y*(s - lam dy) = [1, 0, -1, 0].
    _, one_sided = gradient(cg.gradients.get("imle", noise="none", lam=1.5), solver, theta.detach(), dy)
    assert torch.equal(one_sided, torch.tensor([1.0, 0.0, -1.0, 0.0]))


@pytest.mark.parametrize("solver_name", ["topk", "shortest_path"])
@pytest.mark.parametrize("reduce", [True, False])
def test_symmetric_with_noise_is_the_formula_with_the_forward_draws(solver_name, reduce, counting):
    solver, theta, dy = random_problem(solver_name, 7)
    samples, tau, tau_t, lam = 4, 0.8, 0.5, 2.0
    if not reduce:
        dy = torch.randn(samples, *theta.shape, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    counted = counting(solver)
    estimator = cg.gradients.get(
        "imle", noise="normal", samples=samples, noise_scale=tau, target_noise_scale=tau_t, lam=lam,
        symmetric=True, divide_by_lam=True, reduce=reduce,
    )
    y, grad = gradient(estimator, counted, theta, dy, generator=torch.Generator().manual_seed(9))
    eps = noise.normal((samples, *theta.shape), dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    sign = 1 if solver.sense == "max" else -1
    s = sign * theta
    step = lam * (dy if not reduce else dy.unsqueeze(0))
    sides = score_solution(solver, s + step + tau_t * eps) - score_solution(solver, s - step + tau_t * eps)
    per_sample = sides / (2 * lam)
    expected = sign * (per_sample.mean(0) if reduce else per_sample.sum(0))
    assert torch.allclose(grad, expected, atol=1e-12) and grad.abs().sum() > 0
    # One batched call each way: forward's samples, then both sides of every sample together.
    event = theta.shape[1:]
    assert counted.calls == [(samples * theta.shape[0], *event), (2 * samples * theta.shape[0], *event)]


def test_symmetric_matches_pyepo_implicit_mle_two_sides():
    """PyEPO's implicitMLE(two_sides=True) on its 5x5 shortestPathModel (Gurobi), with the same noise.

    PyEPO draws its own noise from its ``distribution`` object, so the test gives it one that
    returns a fixed tensor ``noise [b, S, d]``; combgrad's draws are patched to the same values in
    score space: PyEPO perturbs costs ``c + sigma * noise``, combgrad scores ``s + sigma * eps`` with
    ``s = -c``, so ``eps = -noise``. The solver here is an exact DP over PyEPO's arcs (they point
    right and down, so node order is a topological order), independent of Gurobi.
    """
    pytest.importorskip("pyepo")
    pytest.importorskip("gurobipy")
    from pyepo.func import implicitMLE
    from pyepo.model.grb import shortestPathModel

    optmodel = shortestPathModel(grid=(5, 5))
    arcs = list(optmodel.arcs)

    batch, samples, sigma, lam = 3, 4, 1.0, 2.0
    generator = torch.Generator().manual_seed(0)
    costs = torch.rand(batch, 40, generator=generator, dtype=torch.float64) * 2 + 0.1
    dy = torch.randn(batch, 40, generator=generator, dtype=torch.float64)
    fixed = torch.randn(batch, samples, 40, generator=generator, dtype=torch.float64)

    class FixedNoise:
        def sample(self, size, device=None, dtype=None):
            assert tuple(size) == tuple(fixed.shape)
            return fixed.to(dtype=dtype)

    pyepo_layer = implicitMLE(optmodel, n_samples=samples, sigma=sigma, lambd=lam, distribution=FixedNoise(), two_sides=True)
    reference_costs = costs.clone().requires_grad_()
    reference_y = pyepo_layer(reference_costs)
    (reference_grad,) = torch.autograd.grad(reference_y, reference_costs, dy)

    import combgrad.gradients.perturb_and_map as perturb_and_map

    patched = pytest.MonkeyPatch()
    patched.setattr(perturb_and_map, "draw_noise", lambda *args, **kwargs: -fixed.transpose(0, 1))
    try:
        estimator = cg.gradients.get(
            "imle", samples=samples, noise="normal", noise_scale=sigma, lam=lam, symmetric=True, divide_by_lam=True
        )
        y, grad = gradient(estimator, PyEPOGridDP(arcs), costs, dy)
    finally:
        patched.undo()
    assert torch.allclose(y, reference_y.detach().to(torch.float64), atol=1e-6)
    # PyEPO divides by 2 lam + 1e-? (its _EPS); the rest is the same central difference.
    assert torch.allclose(grad, reference_grad.to(torch.float64), rtol=1e-5, atol=1e-7)
    assert grad.abs().sum() > 0


def test_symmetric_option_is_checked():
    with pytest.raises(ValueError, match="imle: symmetric must be True or False, got 'yes'"):
        cg.gradients.get("imle", symmetric="yes")
    assert cg.gradients.get("imle").options.symmetric is False

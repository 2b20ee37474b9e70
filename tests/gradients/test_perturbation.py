"""Tests for combgrad/gradients/perturbation.py.

The perturbation estimator's forward with fixed noise is piecewise constant, so
float64 gradcheck does not apply. Instead its Jacobian is compared with closed
forms of the smoothed function it estimates: ``softmax(theta / sigma)`` for
Gumbel-perturbed argmax and the probit ``Phi((t0 - t1) / (sigma sqrt 2))`` for a
normal-perturbed two-way argmax, within 5 Monte Carlo standard errors computed
from the same draws; and with an independent recomputation of the estimator's
formula from the same draws (exact).
"""

import math

import pytest
import torch

import combgrad as cg
from combgrad.gradients import noise
from combgrad.gradients.base import draw_noise

SEED_THETA = [-0.6, 1.9, -0.2, 1.1, -1.0]


def jacobian(y, theta):
    eye = torch.eye(y.numel(), dtype=y.dtype).reshape(-1, *y.shape)
    return torch.stack([torch.autograd.grad(y, theta, row, retain_graph=True)[0] for row in eye])


def softmax_jacobian(theta, sigma):
    p = torch.softmax(theta / sigma, -1)
    return (torch.diag(p) - p[:, None] * p[None, :]) / sigma


def perturbed_argmax_terms(theta, sigma, samples, seed, noise_name, sign=1):
    """Per-sample forward values and Jacobian terms, recomputed independently from the same draws."""
    z = draw_noise(noise_name, samples, theta, generator=torch.Generator().manual_seed(seed))
    scores = sign * theta
    y = torch.nn.functional.one_hot((scores + sigma * z).argmax(-1), theta.shape[-1]).to(theta.dtype)
    weight = noise.log_density_gradient(noise_name, z)
    terms = sign * y[:, :, None] * weight[:, None, :] / sigma  # d y_j / d theta_l
    return y, terms


@pytest.mark.parametrize("solver_name", ["topk", "argmax"])
def test_gumbel_perturbed_argmax_is_softmax_with_softmax_jacobian(solver_name):
    sigma, samples, seed = 0.5, 100_000, 0
    theta = torch.tensor(SEED_THETA, dtype=torch.float64, requires_grad=True)
    solver = cg.solvers.get("topk", k=1) if solver_name == "topk" else cg.solvers.get("argmax")
    estimator = cg.gradients.get("perturbation", samples=samples, noise_scale=sigma, noise="gumbel")
    y = estimator(theta, solver, generator=torch.Generator().manual_seed(seed))
    softmax = torch.softmax(theta.detach() / sigma, -1)
    # The seeds' reference values.
    assert torch.allclose(softmax.float(), torch.tensor([0.0055, 0.8152, 0.0122, 0.1646, 0.0025]), atol=5e-5)

    y_samples, terms = perturbed_argmax_terms(theta.detach(), sigma, samples, seed, "gumbel")
    assert torch.allclose(y.detach(), y_samples.mean(0))
    forward_error = 5 * torch.sqrt(softmax * (1 - softmax) / samples)
    assert bool(((y.detach() - softmax).abs() <= forward_error + 1e-12).all())

    estimate = jacobian(y, theta)
    assert torch.allclose(estimate, terms.mean(0), atol=1e-12)
    standard_error = terms.std(0) / math.sqrt(samples)
    error = (estimate - softmax_jacobian(theta.detach(), sigma)).abs()
    assert bool((error <= 5 * standard_error + 1e-6).all()), (error, standard_error)
    assert error.max() < 0.03


def test_normal_perturbed_two_way_argmax_is_a_probit():
    sigma, samples, seed = 0.7, 100_000, 1
    theta = torch.tensor([0.3, -0.2], dtype=torch.float64, requires_grad=True)
    estimator = cg.gradients.get("perturbation", samples=samples, noise_scale=sigma, noise="normal")
    y = estimator(theta, cg.solvers.get("argmax"), generator=torch.Generator().manual_seed(seed))
    d = (theta[0] - theta[1]).item() / (sigma * math.sqrt(2))
    p0 = 0.5 * (1 + math.erf(d / math.sqrt(2)))
    assert abs(y[0].item() - p0) < 5 * math.sqrt(p0 * (1 - p0) / samples)
    density = math.exp(-d * d / 2) / math.sqrt(2 * math.pi) / (sigma * math.sqrt(2))
    expected = torch.tensor([[density, -density], [-density, density]], dtype=torch.float64)
    _, terms = perturbed_argmax_terms(theta.detach(), sigma, samples, seed, "normal")
    estimate = jacobian(y, theta)
    assert torch.allclose(estimate, terms.mean(0), atol=1e-12)
    assert bool(((estimate - expected).abs() <= 5 * terms.std(0) / math.sqrt(samples) + 1e-6).all())


def test_min_solver_works_in_score_space(argmin):
    sigma, samples, seed = 0.5, 100_000, 2
    theta = torch.tensor(SEED_THETA, dtype=torch.float64, requires_grad=True)
    estimator = cg.gradients.get("perturbation", samples=samples, noise_scale=sigma, noise="gumbel")
    y = estimator(theta, argmin, generator=torch.Generator().manual_seed(seed))
    softmin = torch.softmax(-theta.detach() / sigma, -1)
    assert bool(((y.detach() - softmin).abs() <= 5 * torch.sqrt(softmin * (1 - softmin) / samples) + 1e-12).all())
    # y = softmax(-theta / sigma), so dy/dtheta = -J_softmax(-theta).
    _, terms = perturbed_argmax_terms(theta.detach(), sigma, samples, seed, "gumbel", sign=-1)
    estimate = jacobian(y, theta)
    assert torch.allclose(estimate, terms.mean(0), atol=1e-12)
    expected = -softmax_jacobian(-theta.detach(), sigma)
    assert bool(((estimate - expected).abs() <= 5 * terms.std(0) / math.sqrt(samples) + 1e-6).all())


def test_variance_reduction_keeps_the_mean_and_lowers_the_variance():
    theta = torch.tensor(SEED_THETA, dtype=torch.float64, requires_grad=True)
    # An upstream gradient with a common offset, as losses often give: <y_i, dy> then
    # varies little around its mean, which the leave-one-out baseline removes.
    dy = torch.tensor([1.5, 2.0, 1.2, 2.5, 1.0], dtype=torch.float64)
    expected = dy @ softmax_jacobian(theta.detach(), 0.5)
    gradients = {}
    for reduce in (False, True):
        estimator = cg.gradients.get(
            "perturbation", samples=200, noise_scale=0.5, noise="gumbel", variance_reduction=reduce
        )
        runs = []
        for seed in range(60):
            y = estimator(theta, cg.solvers.get("argmax"), generator=torch.Generator().manual_seed(seed))
            runs.append(torch.autograd.grad(y, theta, dy)[0])
        gradients[reduce] = torch.stack(runs)
    plain, reduced = gradients[False], gradients[True]
    # Same forward draws, so the mean over 60 runs of 200 samples estimates the same value;
    # the reduced estimator's total variance is far smaller (measured: 1.2% of the plain one).
    assert reduced.var(0).sum() < 0.1 * plain.var(0).sum()
    assert torch.allclose(reduced.mean(0), expected, atol=5 * (reduced.std(0).max().item() / math.sqrt(60)))


def test_one_solver_call_forward_and_none_in_backward(counting):
    solver = counting(cg.solvers.get("topk", k=2))
    theta = torch.randn(3, 4, 6, requires_grad=True)
    y = cg.gradients.get("perturbation", samples=7)(theta, solver)
    assert y.shape == theta.shape and y.dtype == theta.dtype
    assert torch.allclose(y.sum(-1), torch.full((3, 4), 2.0))
    y.backward(torch.randn_like(y))
    assert solver.calls == [(7 * 12, 6)]
    assert theta.grad.shape == theta.shape


def test_reproducible_under_manual_seed_and_generator():
    theta = torch.randn(4, 6, generator=torch.Generator().manual_seed(0), requires_grad=True)
    dy = torch.randn(4, 6, generator=torch.Generator().manual_seed(1))
    estimator = cg.gradients.get("perturbation", samples=5, noise="normal")
    solver = cg.solvers.get("topk", k=2)

    def run(seed=None, generator_seed=None):
        if seed is not None:
            torch.manual_seed(seed)
        generator = None if generator_seed is None else torch.Generator().manual_seed(generator_seed)
        y = estimator(theta, solver, generator=generator)
        return y.detach(), torch.autograd.grad(y, theta, dy)[0]

    for first, second in [(run(seed=3), run(seed=3)), (run(generator_seed=4), run(generator_seed=4))]:
        assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert not torch.equal(run(generator_seed=4)[1], run(generator_seed=5)[1])


@pytest.mark.parametrize(
    "options, match",
    [
        ({"samples": 0}, "perturbation: samples must be an integer >= 1, got 0"),
        ({"samples": 2.5}, "perturbation: samples must be an integer >= 1, got 2.5"),
        ({"noise_scale": 0.0}, "perturbation: noise_scale must be a finite number > 0, got 0.0"),
        ({"noise_scale": -1.0}, "perturbation: noise_scale must be a finite number > 0, got -1.0"),
        ({"noise_scale": float("inf")}, "perturbation: noise_scale must be a finite number > 0, got inf"),
        ({"reduce": "no"}, "perturbation: reduce must be True or False, got 'no'"),
        ({"sample_in_eval": None}, "perturbation: sample_in_eval must be True or False, got None"),
        ({"noise": "sum_of_gamma"}, "perturbation: noise must be one of \\['gumbel', 'normal'\\], got 'sum_of_gamma'"),
        ({"noise": "cauchy"}, "perturbation: noise must be one of .* got 'cauchy'"),
        ({"variance_reduction": True, "samples": 1}, "variance_reduction=True needs samples >= 2"),
        ({"variance_reduction": "yes"}, "perturbation: variance_reduction must be True or False"),
    ],
)
def test_bad_options(options, match):
    with pytest.raises(ValueError, match=match):
        cg.gradients.get("perturbation", **options)


def test_options_are_frozen():
    estimator = cg.gradients.get("perturbation", noise_scale=0.3)
    with pytest.raises(AttributeError):
        estimator.options.noise_scale = 1.0
    assert estimator.options.noise_scale == 0.3


def test_default_noise_is_the_centred_normal():
    """Guards issue 8 item 8: standard Gumbel noise (mean 0.5772) biased "min" solvers toward longer paths."""
    estimator = cg.gradients.get("perturbation")
    assert estimator.options.noise == "normal"
    theta = torch.randn(3, 6, generator=torch.Generator().manual_seed(0))
    y = estimator(theta, cg.solvers.get("argmax"), generator=torch.Generator().manual_seed(1))
    draws = noise.normal((10, 3, 6), generator=torch.Generator().manual_seed(1))
    assert torch.equal(y, cg.solvers.get("argmax")(theta + draws).mean(0))


def test_sigma_is_a_deprecated_alias_of_noise_scale():
    """Guards issue 9 item 7: one name, noise_scale, with the old one warning."""
    with pytest.warns(DeprecationWarning, match="perturbation: option 'sigma' is deprecated, use 'noise_scale'"):
        estimator = cg.gradients.get("perturbation", sigma=0.3)
    assert estimator.options.noise_scale == 0.3
    with pytest.warns(DeprecationWarning, match="'sigma' is deprecated"):
        assert cg.gradients.Perturbation(sigma=0.4).options.noise_scale == 0.4
    with pytest.raises(cg.errors.OptionError, match="'sigma' is the old name of 'noise_scale'; pass only 'noise_scale'"):
        cg.gradients.get("perturbation", sigma=0.3, noise_scale=0.3)


def test_reduce_false_returns_the_samples_and_their_mean_is_the_reduced_estimator():
    """Guards issue 8 item 10: ``reduce=False`` gives [S, *theta.shape]; y.mean(0) is exactly reduce=True."""
    theta = torch.tensor([SEED_THETA, SEED_THETA[::-1]], dtype=torch.float64, requires_grad=True)
    dy = torch.randn(2, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    solver = cg.solvers.get("topk", k=2)
    grads = {}
    for reduce in (True, False):
        for variance_reduction in (False, True):
            estimator = cg.gradients.get(
                "perturbation", samples=6, reduce=reduce, variance_reduction=variance_reduction
            )
            y = estimator(theta, solver, generator=torch.Generator().manual_seed(3))
            if not reduce:
                assert y.shape == (6, 2, 5)
                assert bool(((y == 0) | (y == 1)).all()) and torch.equal(y.sum(-1), torch.full((6, 2), 2.0))
                y = y.mean(0)
            grads[reduce, variance_reduction] = torch.autograd.grad(y, theta, dy)[0]
    for variance_reduction in (False, True):
        assert torch.allclose(grads[False, variance_reduction], grads[True, variance_reduction], atol=1e-12)
        assert grads[True, variance_reduction].abs().sum() > 0


def test_reduce_false_gradient_of_the_mean_per_sample_loss():
    """mean_i L(y_i) with one incoming gradient per sample: 1/sigma sum_i <y_i, dy_i> grad_nu(Z_i)."""
    theta = torch.tensor(SEED_THETA, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([0.0, 0.0, 0.0, 1.0, 0.0], dtype=torch.float64)
    estimator = cg.gradients.get("perturbation", samples=4, noise_scale=0.7, reduce=False)
    y = estimator(theta, cg.solvers.get("argmax"), generator=torch.Generator().manual_seed(4))
    loss = ((y - target) ** 2).sum(-1).mean()  # mean over samples of a per-sample loss
    (grad,) = torch.autograd.grad(loss, theta)
    z = noise.normal((4, 5), dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    dy = 2 * (y.detach() - target) / 4
    expected = ((y.detach() * dy).sum(-1, keepdim=True) * z).sum(0) / 0.7
    assert torch.allclose(grad, expected, atol=1e-12) and grad.abs().sum() > 0


@pytest.mark.parametrize("reduce", [True, False])
def test_eval_mode_returns_the_exact_solution(reduce):
    """Guards issue 8 item 13: eval() is deterministic like dropout; sample_in_eval=True samples."""
    theta = torch.randn(3, 6, generator=torch.Generator().manual_seed(5), requires_grad=True)
    exact = cg.solvers.get("topk", k=2)(theta.detach())
    layer = cg.DifferentiableSolver("topk", estimator="perturbation", k=2, samples=5, reduce=reduce).eval()
    y = layer(theta)
    assert torch.equal(y, exact if reduce else exact.expand(5, 3, 6))
    (grad,) = torch.autograd.grad(y.sum(), theta)
    assert torch.equal(grad, torch.zeros_like(grad))  # the derivative of the exact, piecewise-constant y*
    sampling = cg.DifferentiableSolver("topk", estimator="perturbation", k=2, samples=5, sample_in_eval=True).eval()
    assert not torch.equal(sampling(theta, generator=torch.Generator().manual_seed(0)), exact)
    assert not torch.equal(layer.train()(theta, generator=torch.Generator().manual_seed(0)), exact)


def test_nonfinite_incoming_gradient_is_named():
    """Guards issue 8 (smaller defects): a NaN loss gradient names the estimator and the loss."""
    theta = torch.randn(2, 4, requires_grad=True)
    y = cg.gradients.get("perturbation")(theta, cg.solvers.get("argmax"))
    with pytest.raises(ValueError, match="perturbation: the gradient flowing back into the layer's output is NaN or inf; check the loss"):
        y.backward(torch.full_like(y, float("inf")))


# --- multiplicative perturbation (Dalle et al. 2022): theta * exp(sigma Z - sigma^2 / 2) ---


def multiplicative_two_way(theta, sigma, sense):
    """Closed form of a multiplicatively perturbed two-way argmax (argmin for "min") and its Jacobian.

    ``theta_0 e^{sigma Z_0} > theta_1 e^{sigma Z_1}`` iff ``Z_0 - Z_1 > log(theta_1 / theta_0) / sigma``
    (the ``-sigma^2/2`` cancels), and ``Z_0 - Z_1 ~ N(0, 2)``: ``P = Phi(d)`` with
    ``d = sign * (log theta_0 - log theta_1) / (sigma sqrt 2)``.
    """
    sign = 1.0 if sense == "max" else -1.0
    d = sign * (math.log(theta[0]) - math.log(theta[1])) / (sigma * math.sqrt(2))
    p0 = 0.5 * (1 + math.erf(d / math.sqrt(2)))
    density = sign * math.exp(-d * d / 2) / math.sqrt(2 * math.pi) / (sigma * math.sqrt(2))
    row = torch.tensor([density / theta[0], -density / theta[1]], dtype=torch.float64)
    return torch.tensor([p0, 1 - p0], dtype=torch.float64), torch.stack([row, -row])


@pytest.mark.parametrize("sense", ["max", "min"])
def test_multiplicative_two_way_argmax_matches_its_closed_form(sense, argmin):
    sigma, samples, seed = 0.6, 200_000, 11
    theta = torch.tensor([1.3, 0.8], dtype=torch.float64, requires_grad=True)
    solver = cg.solvers.get("argmax") if sense == "max" else argmin
    estimator = cg.gradients.get("perturbation", samples=samples, noise_scale=sigma, multiplicative=True)
    y = estimator(theta, solver, generator=torch.Generator().manual_seed(seed))
    expected_y, expected_jacobian = multiplicative_two_way(theta.tolist(), sigma, sense)
    p = expected_y[0].item()
    assert abs(y[0].item() - p) < 5 * math.sqrt(p * (1 - p) / samples)
    # The estimator recomputed from the same draws: E[y Z^T] / (sigma theta), no score sign.
    z = draw_noise("normal", samples, theta.detach(), generator=torch.Generator().manual_seed(seed))
    perturbed = theta.detach() * torch.exp(sigma * z - sigma**2 / 2)
    index = perturbed.argmax(-1) if sense == "max" else perturbed.argmin(-1)
    y_samples = torch.nn.functional.one_hot(index, 2).to(torch.float64)
    terms = y_samples[:, :, None] * z[:, None, :] / (sigma * theta.detach())
    estimate = jacobian(y, theta)
    assert torch.allclose(estimate, terms.mean(0), atol=1e-12)
    # 5 Monte Carlo standard errors of the same draws: a 1-in-1.7-million miss per entry.
    standard_error = terms.std(0) / math.sqrt(samples)
    assert bool(((estimate - expected_jacobian).abs() <= 5 * standard_error + 1e-9).all())
    assert expected_jacobian.abs().min() > 0.1  # the check is not vacuous


def test_multiplicative_gradient_matches_finite_differences_with_common_random_numbers():
    """Three-way argmax (no simple closed form): the Jacobian against central differences of the
    Monte Carlo mean taken with the SAME draws at theta +- h e_j (common random numbers)."""
    sigma, samples, h = 0.5, 400_000, 0.04
    theta = torch.tensor([1.0, 1.4, 0.7], dtype=torch.float64, requires_grad=True)
    estimator = cg.gradients.get("perturbation", samples=samples, noise_scale=sigma, multiplicative=True)
    y = estimator(theta, cg.solvers.get("argmax"), generator=torch.Generator().manual_seed(12))
    estimate = jacobian(y, theta)
    z = draw_noise("normal", samples, theta.detach(), generator=torch.Generator().manual_seed(12))
    factor = torch.exp(sigma * z - sigma**2 / 2)

    def mean_solution(t):
        return torch.nn.functional.one_hot((t * factor).argmax(-1), 3).to(torch.float64).mean(0)

    columns = []
    for j in range(3):
        step = torch.zeros(3, dtype=torch.float64)
        step[j] = h
        columns.append((mean_solution(theta.detach() + step) - mean_solution(theta.detach() - step)) / (2 * h))
    finite_difference = torch.stack(columns, dim=1)  # [i, j] = d y_i / d theta_j
    # Error budget per entry: the estimator's 5 SE (about 0.01 here) plus the difference's
    # flip-count noise, 5 sqrt(|J| / (2 h S)) < 0.015, plus an O(h^2) bias well below 0.01.
    assert (estimate - finite_difference).abs().max() < 0.04, (estimate, finite_difference)
    assert finite_difference.abs().max() > 0.3


def test_multiplicative_keeps_a_min_solvers_costs_positive(counting):
    solver = counting(cg.solvers.get("shortest_path", negative="raise"))
    recorded = []
    inner = solver.solver

    def recording(theta):
        recorded.append(theta.min().item())
        return inner(theta)

    solver.solver = recording
    costs = torch.rand(2, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64) + 0.05
    costs.requires_grad_(True)
    estimator = cg.gradients.get("perturbation", samples=50, noise_scale=2.0, multiplicative=True)
    y = estimator(costs, solver, generator=torch.Generator().manual_seed(1))
    y.backward(torch.randn_like(y))
    assert recorded and min(recorded) > 0  # additive noise of scale 2 would have gone negative
    assert bool(torch.isfinite(costs.grad).all()) and costs.grad.abs().sum() > 0


@pytest.mark.parametrize("bad", [0.0, -0.5])
def test_multiplicative_refuses_nonpositive_theta(bad):
    theta = torch.tensor([[1.0, bad, 2.0]])
    estimator = cg.gradients.get("perturbation", multiplicative=True)
    with pytest.raises(ValueError, match=r"perturbation: theta must be > 0 everywhere with multiplicative=True .* got min"):
        estimator(theta, cg.solvers.get("argmax"))
    with pytest.raises(ValueError, match="perturbation: theta must be finite"):
        estimator(torch.tensor([[1.0, float("nan")]]), cg.solvers.get("argmax"))


def test_multiplicative_options():
    with pytest.raises(ValueError, match="perturbation: multiplicative=True needs noise='normal'"):
        cg.gradients.get("perturbation", multiplicative=True, noise="gumbel")
    with pytest.raises(ValueError, match="perturbation: multiplicative must be True or False, got 1"):
        cg.gradients.get("perturbation", multiplicative=1)
    assert cg.gradients.get("perturbation").options.multiplicative is False


@pytest.mark.parametrize("variance_reduction", [False, True])
def test_multiplicative_reduce_false_mean_is_the_reduced_estimator(variance_reduction):
    theta = torch.rand(2, 5, generator=torch.Generator().manual_seed(6), dtype=torch.float64) + 0.1
    theta.requires_grad_(True)
    dy = torch.randn(2, 5, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    grads = []
    for reduce in (True, False):
        estimator = cg.gradients.get("perturbation", samples=6, multiplicative=True, reduce=reduce,
                                     variance_reduction=variance_reduction)
        y = estimator(theta, cg.solvers.get("topk", k=2), generator=torch.Generator().manual_seed(8))
        grads.append(torch.autograd.grad(y if reduce else y.mean(0), theta, dy)[0])
    assert torch.allclose(grads[0], grads[1], atol=1e-12) and grads[0].abs().sum() > 0

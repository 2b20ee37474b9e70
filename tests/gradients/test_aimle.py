"""Tests for combgrad/gradients/aimle.py.

Like I-MLE, AIMLE is piecewise constant in theta (no gradcheck); it is checked
exactly against I-MLE run with the lam that AIMLE computes, against the
central-difference formula, and against an independent port of the reference
implementation's update rule (EdinburghNLP/torch-adaptive-imle) run on a fixed
sequence of inputs and incoming gradients.
"""

import warnings

import pytest
import torch

import combgrad as cg
from combgrad.gradients import noise


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


def test_defaults_follow_the_reference_implementation():
    """Guards issue 8 item 9: divide by lam, batch norms, EMA 0.9 of the count."""
    options = cg.gradients.get("aimle").options
    assert options.divide_by_lam is True and options.norm == "batch" and options.nonzero_decay == 0.9
    # Multiplying the incoming gradient by 100 divides lam by 100: with division by
    # lam the gradient grows 100-fold (it was unchanged without it).
    solver, theta, dy = problem("topk", 0, batch=3)
    base = run(cg.gradients.get("aimle", noise="none", beta_update_step=0.0), solver, theta, dy)[1]
    scaled = run(cg.gradients.get("aimle", noise="none", beta_update_step=0.0), solver, theta, 100 * dy)[1]
    assert base.abs().sum() > 0
    assert torch.allclose(scaled, 100 * base, rtol=1e-12)


@pytest.mark.parametrize("solver_name", ["topk", "shortest_path"])
@pytest.mark.parametrize("noise_name", ["none", "gumbel", "sum_of_gamma"])
@pytest.mark.parametrize("divide_by_lam", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_frozen_aimle_equals_imle_with_the_computed_lam(solver_name, noise_name, divide_by_lam, seed):
    solver, theta, dy = problem(solver_name, seed, batch=3)
    beta = 0.3
    options = {"samples": 4, "noise": noise_name, "noise_scale": 0.5, "divide_by_lam": divide_by_lam}
    aimle = cg.gradients.get("aimle", beta=beta, beta_update_step=0.0, symmetric=False, **options)
    y, grad = run(aimle, solver, theta, dy, seed=seed)
    # Batch norms: ||s|| and ||dy|| over the whole batch, one lam.
    lam = beta * torch.linalg.vector_norm(theta).item() / torch.linalg.vector_norm(dy).item()
    imle = cg.gradients.get("imle", lam=lam, **options)
    y_imle, grad_imle = run(imle, solver, theta, dy, seed=seed)
    assert torch.equal(y, y_imle)
    assert torch.allclose(grad, grad_imle, atol=1e-12)
    assert aimle.beta.item() == beta  # frozen


@pytest.mark.parametrize("solver_name", ["topk", "shortest_path"])
def test_norm_instance_gives_each_instance_its_own_lam(solver_name):
    """``norm="instance"`` keeps combgrad's earlier per-instance norms."""
    solver, theta, dy = problem(solver_name, 3, batch=5)
    aimle = cg.gradients.get("aimle", noise="none", beta=0.5, beta_update_step=0.0, norm="instance")
    _, grad = run(aimle, solver, theta, dy)
    batch = cg.gradients.get("aimle", noise="none", beta=0.5, beta_update_step=0.0)
    assert not torch.allclose(grad, run(batch, solver, theta, dy)[1])
    for index in range(5):
        lam = 0.5 * torch.linalg.vector_norm(theta[index]).item() / torch.linalg.vector_norm(dy[index]).item()
        imle = cg.gradients.get("imle", noise="none", lam=lam, divide_by_lam=True)
        _, expected = run(imle, solver, theta[index : index + 1], dy[index : index + 1])
        assert torch.allclose(grad[index : index + 1], expected, atol=1e-12)


@pytest.mark.parametrize("solver_name", ["topk", "shortest_path"])
@pytest.mark.parametrize("norm", ["batch", "instance"])
def test_symmetric_is_the_central_difference_in_one_call(counting, solver_name, norm):
    solver, theta, dy = problem(solver_name, 4, batch=3)
    counted = counting(solver)
    aimle = cg.gradients.get("aimle", noise="none", beta=0.8, beta_update_step=0.0, symmetric=True, norm=norm)
    _, grad = run(aimle, counted, theta, dy)
    event = theta.shape[1:]
    assert counted.calls == [(3, *event), (2 * 3, *event)]  # forward; both sides in one backward call
    sign = 1 if solver.sense == "max" else -1
    s = sign * theta
    if norm == "batch":
        lam = 0.8 * torch.linalg.vector_norm(theta) / torch.linalg.vector_norm(dy)
    else:
        dims = tuple(range(1, theta.ndim))
        lam = 0.8 * torch.linalg.vector_norm(theta, dim=dims) / torch.linalg.vector_norm(dy, dim=dims)
        lam = lam.reshape(-1, *([1] * len(event)))

    def y_star(scores):
        return solver(sign * scores)

    expected = (y_star(s + lam * dy) - y_star(s - lam * dy)) / (2 * lam)
    assert torch.allclose(grad, sign * expected, atol=1e-12)
    assert grad.abs().sum() > 0


class ReferenceAdaptiveTarget:
    """An independent port of the reference's update rule (torch-adaptive-imle, imle/target.py).

    ``AdaptiveTargetDistribution``: the step is ``beta * ||theta|| / ||dy||`` over
    the whole batch (0 if ``||dy|| = 0``); ``process`` takes the unscaled
    differences ``[B, S, ...]``, keeps an EMA (decay 0.9, start 1.0) of
    ``count_nonzero / (B * S)``, moves beta up by the step if the EMA is below
    the target and down otherwise (with heavy-ball momentum, beta kept >= 0),
    and divides the differences by the step (by 1 where it is 0).
    """

    def __init__(self, beta, step, momentum, target_norm, decay=0.9):
        self.beta, self.step, self.momentum, self.target_norm, self.decay = beta, step, momentum, target_norm, decay
        self.grad_norm, self.previous_update = 1.0, 0.0

    def magnitude(self, theta, dy):
        norm_dy = torch.linalg.norm(dy.reshape(-1)).item()
        return 0.0 if norm_dy <= 0.0 else self.beta * torch.linalg.norm(theta.reshape(-1)).item() / norm_dy

    def process(self, theta, dy, difference):
        batch, samples = difference.shape[:2]
        magnitude = self.magnitude(theta, dy)
        self.grad_norm = self.decay * self.grad_norm + (1 - self.decay) * (
            torch.count_nonzero(difference).item() / (batch * samples)
        )
        update = (self.step if self.grad_norm < self.target_norm else -self.step) + self.momentum * self.previous_update
        self.beta = max(self.beta + update, 0.0)
        self.previous_update = update
        return difference / (magnitude if magnitude > 0.0 else 1.0)


def reference_step(solver, target, theta, dy, noise_bs, tau, tau_t, symmetric):
    """One backward of the reference aimle on ``theta [B, ...]``, ``dy [B, S, ...]``, ``noise [B, S, ...]``.

    The reference perturbs the solver's own input (costs for a "min" solver) by
    ``+ tau * noise``, moves it by ``-+ step * dy`` and negates the gradient for
    minimisation; the mean over samples is its returned gradient.
    """
    minimisation = solver.sense == "min"
    theta_bs = theta.unsqueeze(1).expand_as(noise_bs)
    step = target.magnitude(theta, dy)

    def moved(direction):
        return theta_bs + (1 if minimisation else -1) * direction * step * dy

    right = solver(moved(1.0) + tau_t * noise_bs)
    left = solver(moved(-1.0) + tau_t * noise_bs) if symmetric else solver(theta_bs + tau_t * noise_bs)
    difference = (left - right) / (2.0 if symmetric else 1.0)
    gradient = target.process(theta, dy, difference).mean(1)
    return -gradient if minimisation else gradient


@pytest.mark.parametrize("solver_name", ["topk", "shortest_path"])
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("samples", [1, 3])
def test_matches_a_port_of_the_reference_update_rule(solver_name, symmetric, samples):
    """Guards issue 8 item 9: same gradients and same beta as the reference, step after step.

    The reference returns all samples and averages their gradients; combgrad's
    ``reduce=False`` returns them too but sums (autograd's rule), so its
    gradient is ``samples`` times the reference's. combgrad perturbs scores
    ``s = -theta`` of a "min" solver, i.e. adds ``-noise`` to its costs.
    """
    solver = cg.solvers.get("topk", k=3) if solver_name == "topk" else cg.solvers.get("shortest_path")
    sign = 1 if solver.sense == "max" else -1
    target_norm = 3.0 if solver_name == "topk" else 6.0
    aimle = cg.gradients.get(
        "aimle", samples=samples, noise="gumbel", noise_scale=0.5, beta=0.4, beta_update_step=0.05,
        beta_update_momentum=0.3, target_norm=target_norm, symmetric=symmetric, reduce=False,
    )
    reference = ReferenceAdaptiveTarget(beta=0.4, step=0.05, momentum=0.3, target_norm=target_norm)
    sequence = torch.Generator().manual_seed(42)
    betas, moved = [], 0
    for step in range(8):
        _, theta, _ = problem(solver_name, 100 + step, batch=4)
        dy = torch.randn(samples, *theta.shape, generator=sequence, dtype=torch.float64)
        leaf = theta.clone().requires_grad_()
        y = aimle(leaf, solver, generator=torch.Generator().manual_seed(step))
        (grad,) = torch.autograd.grad(y, leaf, dy)
        eps = noise.sample("gumbel", (samples, *theta.shape), dtype=theta.dtype, generator=torch.Generator().manual_seed(step))
        assert torch.equal(y, solver(theta + sign * 0.5 * eps))  # the forward's samples
        expected = reference_step(
            solver, reference, theta, dy.movedim(0, 1), sign * eps.movedim(0, 1), 0.5, 0.5, symmetric
        )
        assert torch.allclose(grad, samples * expected, atol=1e-10)
        assert aimle.beta.item() == pytest.approx(reference.beta, abs=1e-12)
        assert aimle.nonzero.item() == pytest.approx(reference.grad_norm, abs=1e-12)
        betas.append(reference.beta)
        moved += int(grad.abs().sum() > 0)
    assert len(set(betas)) > 2  # beta moved: the rule was exercised
    assert moved >= 4  # and most steps had a non-zero gradient to compare


def test_beta_update_rule_with_momentum():
    solver = cg.solvers.get("argmax")
    theta = torch.tensor([[0.0, 1.0, 0.5]])
    dy = torch.tensor([[-1.0, 1.0, 0.0]])
    aimle = cg.gradients.get(
        "aimle", noise="none", beta=2.0, beta_update_step=0.1, beta_update_momentum=0.5, target_norm=1.0,
        divide_by_lam=False,
    )
    # lam = 2 * ||s|| / ||dy|| = 1.58: the target moves the 1 from index 1 to index 0,
    # so the gradient has 2 non-zero entries; the EMA 0.9 * 1 + 0.1 * 2 = 1.1 > 1: beta steps down.
    _, grad = run(aimle, solver, theta, dy)
    assert torch.equal(grad, torch.tensor([[-1.0, 1.0, 0.0]]))
    assert aimle.nonzero.item() == pytest.approx(1.1)
    assert aimle.velocity.item() == pytest.approx(-0.1)
    assert aimle.beta.item() == pytest.approx(1.9)
    run(aimle, solver, theta, dy)  # EMA 1.19; velocity = 0.5 * -0.1 - 0.1
    assert aimle.nonzero.item() == pytest.approx(1.19)
    assert aimle.velocity.item() == pytest.approx(-0.15)
    assert aimle.beta.item() == pytest.approx(1.75)
    # Far too small a beta changes no solution: EMA 0.9 < 1, beta steps up.
    small = cg.gradients.get("aimle", noise="none", beta=0.01, beta_update_step=0.1)
    _, grad = run(small, solver, theta, dy)
    assert grad.abs().sum() == 0 and small.nonzero.item() == pytest.approx(0.9)
    assert small.beta.item() == pytest.approx(0.11)


def test_beta_decreases_when_the_count_equals_the_target():
    """The reference steps down unless the count is strictly below the target."""
    solver = cg.solvers.get("argmax")
    theta, dy = torch.tensor([[0.0, 1.0, 0.5]]), torch.tensor([[-1.0, 1.0, 0.0]])
    aimle = cg.gradients.get("aimle", noise="none", beta=2.0, beta_update_step=0.1, target_norm=2.0, nonzero_decay=0.0)
    run(aimle, solver, theta, dy)
    assert aimle.nonzero.item() == 2.0  # decay 0: the latest count, equal to the target
    assert aimle.beta.item() == pytest.approx(1.9)


def test_count_is_per_sample_before_averaging():
    """Guards issue 8 item 9: two samples whose differences cancel still count their entries."""
    solver = cg.solvers.get("argmax")
    theta = torch.tensor([[0.0, 0.0]])
    dy = torch.tensor([[0.0, 0.0]])
    aimle = cg.gradients.get("aimle", noise="none", nonzero_decay=0.0, beta_update_step=0.1)
    run(aimle, solver, theta, dy)
    assert aimle.nonzero.item() == 0.0  # dy = 0 gives lam = 0, no entry moves
    per_sample = torch.tensor([[[1.0, -1.0]], [[-1.0, 1.0]]])  # [S=2, B=1, 2]: the mean is 0
    assert cg.gradients.aimle.nonzero_count(per_sample, 1).item() == 2.0
    assert cg.gradients.aimle.nonzero_count(per_sample.mean(0, keepdim=True), 1).item() == 0.0


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
    assert restored.beta.item() == 1.0 and restored.nonzero.item() == 1.0
    restored.load_state_dict(aimle.state_dict())
    for name in ("beta", "velocity", "nonzero"):
        assert torch.equal(getattr(restored, name), getattr(aimle, name))
    first, second = run(aimle, solver, theta, dy, seed=9), run(restored, solver, theta, dy, seed=9)
    assert torch.equal(first[1], second[1])
    assert aimle.beta.item() == restored.beta.item()


@pytest.mark.parametrize("sample_in_eval", [False, True])
def test_eval_mode_does_not_adapt(sample_in_eval):
    solver, theta, dy = problem("topk", 6, batch=2)
    aimle = cg.gradients.get("aimle", noise="none", beta=1.0, beta_update_step=0.5, sample_in_eval=sample_in_eval)
    aimle.eval()
    _, grad = run(aimle, solver, theta, dy)
    assert grad.abs().sum() > 0
    assert aimle.beta.item() == 1.0 and aimle.velocity.item() == 0.0 and aimle.nonzero.item() == 1.0


def test_eval_mode_returns_the_exact_solution_through_a_layer():
    """Guards issue 8 item 13 for aimle (sum-of-gamma noise by default)."""
    layer = cg.DifferentiableSolver("topk", estimator="aimle", k=2, samples=8)
    theta = torch.randn(3, 6, generator=torch.Generator().manual_seed(0))
    exact = cg.solvers.get("topk", k=2)(theta)
    assert not torch.equal(layer(theta, generator=torch.Generator().manual_seed(1)), exact)
    layer.eval()
    assert torch.equal(layer(theta), exact)


@pytest.mark.parametrize("norm", ["batch", "instance"])
@pytest.mark.parametrize("divide_by_lam", [False, True])
def test_zero_upstream_gradient_gives_zero_without_nan(norm, divide_by_lam):
    solver, theta, dy = problem("topk", 7, batch=3)
    dy[1] = 0.0
    aimle = cg.gradients.get(
        "aimle", noise="none", beta=1.0, beta_update_step=0.0, divide_by_lam=divide_by_lam, norm=norm
    )
    _, grad = run(aimle, solver, theta, dy)
    assert bool(torch.isfinite(grad).all())
    assert grad[1].abs().sum() == 0 and grad[0].abs().sum() > 0
    _, none = run(aimle, solver, theta, torch.zeros_like(dy))
    assert torch.equal(none, torch.zeros_like(none))


def test_different_target_noise_scale_solves_the_left_side_at_it():
    """The reference's left side is y*(s + tau_t eps), not the forward's y*(s + tau eps)."""
    solver, theta, dy = problem("topk", 9, batch=2)
    aimle = cg.gradients.get(
        "aimle", samples=3, noise="gumbel", noise_scale=2.0, target_noise_scale=0.1, beta_update_step=0.0,
        divide_by_lam=False,
    )
    _, grad = run(aimle, solver, theta, dy, seed=4)
    eps = noise.sample("gumbel", (3, *theta.shape), dtype=theta.dtype, generator=torch.Generator().manual_seed(4))
    lam = torch.linalg.vector_norm(theta) / torch.linalg.vector_norm(dy)
    expected = (solver(theta + 0.1 * eps) - solver(theta - lam * dy + 0.1 * eps)).mean(0)
    assert torch.allclose(grad, expected, atol=1e-12)


def test_reduce_false_returns_the_samples_and_sums_their_gradients():
    """Guards issue 8 item 10 for aimle: [S, *theta.shape] out, one target per sample."""
    solver, theta, _ = problem("topk", 10, batch=2)
    samples = 4
    dy = torch.randn(samples, *theta.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    aimle = cg.gradients.get(
        "aimle", samples=samples, noise="gumbel", reduce=False, beta_update_step=0.0, divide_by_lam=False
    )
    y, grad = run(aimle, solver, theta, dy, seed=5)
    eps = noise.sample("gumbel", (samples, *theta.shape), dtype=theta.dtype, generator=torch.Generator().manual_seed(5))
    assert y.shape == (samples, *theta.shape) and torch.equal(y, solver(theta + eps))
    lam = torch.linalg.vector_norm(theta) / torch.linalg.vector_norm(dy)  # whole batch, all samples
    expected = (solver(theta + eps) - solver(theta - lam * dy + eps)).sum(0)
    assert torch.allclose(grad, expected, atol=1e-12) and grad.abs().sum() > 0


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


def test_deprecated_names_still_work():
    """Guards issue 9 item 7: temperature, target_temperature and scale warn and keep their meaning."""
    with pytest.warns(DeprecationWarning) as caught:
        old = cg.gradients.get("aimle", temperature=0.3, target_temperature=0.2, scale=False)
    messages = sorted(str(warning.message) for warning in caught)
    assert messages == [
        "aimle: option 'scale' is deprecated, use 'divide_by_lam' (same meaning)",
        "aimle: option 'target_temperature' is deprecated, use 'target_noise_scale' (same meaning)",
        "aimle: option 'temperature' is deprecated, use 'noise_scale' (same meaning)",
    ]
    assert (old.options.noise_scale, old.options.target_noise_scale, old.options.divide_by_lam) == (0.3, 0.2, False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cg.gradients.get("aimle", noise_scale=0.3)  # the new names do not warn


def test_nonfinite_incoming_gradient_names_the_estimator_not_the_solver():
    """Guards issue 8 (smaller defects): it used to say 'shortest_path: theta must be finite'."""
    solver, theta, dy = problem("shortest_path", 11, batch=2)
    dy[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="aimle: the gradient flowing back into the layer's output is NaN or inf"):
        run(cg.gradients.get("aimle"), solver, theta, dy)


@pytest.mark.parametrize(
    "options, match",
    [
        ({"samples": 0}, "aimle: samples must be an integer >= 1, got 0"),
        ({"noise": "laplace"}, "aimle: noise must be one of .*got 'laplace'"),
        ({"beta": -1.0}, "aimle: beta must be a finite number >= 0, got -1.0"),
        ({"target_norm": -1}, "aimle: target_norm must be a finite number >= 0, got -1"),
        ({"beta_update_step": -0.1}, "aimle: beta_update_step must be a finite number >= 0, got -0.1"),
        ({"beta_update_momentum": 1.0}, "aimle: beta_update_momentum must be a finite number >= 0 and < 1.0, got 1.0"),
        ({"nonzero_decay": 1.0}, "aimle: nonzero_decay must be a finite number >= 0 and < 1.0, got 1.0"),
        ({"norm": "sample"}, "aimle: norm must be one of \\['batch', 'instance'\\], got 'sample'"),
        ({"symmetric": "yes"}, "aimle: symmetric must be True or False, got 'yes'"),
        ({"noise_scale": -1}, "aimle: noise_scale must be a finite number >= 0, got -1"),
        ({"reduce": 1}, "aimle: reduce must be True or False, got 1"),
    ],
)
def test_bad_options(options, match):
    with pytest.raises(ValueError, match=match):
        cg.gradients.get("aimle", **options)

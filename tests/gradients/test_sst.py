"""Tests for combgrad/gradients/sst.py (and the shared combgrad/gradients/relaxation.py).

The reference is the relaxation written out here, ``softmax((theta + sigma G) / tau)`` with the
same seeded Gumbel draws, differentiated by autograd; the hard forward is compared with a
one-hot argmax of the same perturbed scores.
"""

import pytest
import torch

import combgrad as cg
from combgrad.errors import OptionError
from combgrad.gradients.base import draw_noise
from combgrad.gradients.sst import SST


def perturbed_scores(theta, samples, seed, sigma=1.0):
    draws = draw_noise("gumbel", samples, theta.detach(), generator=torch.Generator().manual_seed(seed))
    return theta.detach() + sigma * draws


def one_hot_argmax(scores):
    return torch.nn.functional.one_hot(scores.argmax(-1), scores.shape[-1]).to(scores.dtype)


@pytest.mark.parametrize("reduce", [True, False])
@pytest.mark.parametrize("hard", [True, False])
def test_forward_and_backward_are_the_gumbel_softmax_relaxation(reduce, hard):
    samples, tau, sigma, seed = 5, 0.7, 0.8, 0
    theta = torch.randn(3, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64, requires_grad=True)
    dy_shape = (samples, 3, 6) if not reduce else (3, 6)
    dy = torch.randn(dy_shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    estimator = cg.gradients.get("sst", samples=samples, tau=tau, noise_scale=sigma, hard=hard, reduce=reduce)
    y = estimator(theta, cg.solvers.get("argmax"), generator=torch.Generator().manual_seed(seed))
    (grad,) = torch.autograd.grad(y, theta, dy)

    # The reference: autograd of the relaxation, with the same draws.
    reference_theta = theta.detach().clone().requires_grad_()
    draws = draw_noise("gumbel", samples, theta.detach(), generator=torch.Generator().manual_seed(seed))
    soft = torch.softmax((reference_theta + sigma * draws) / tau, dim=-1)
    hard_y = one_hot_argmax(theta.detach() + sigma * draws)
    reference_y = hard_y + soft - soft.detach() if hard else soft  # straight-through: hard value, soft gradient
    if reduce:
        reference_y = reference_y.mean(0)
    (reference_grad,) = torch.autograd.grad(reference_y, reference_theta, dy)
    assert torch.allclose(y, reference_y.detach(), atol=1e-12)
    assert torch.allclose(grad, reference_grad, atol=1e-12) and grad.abs().sum() > 0
    if hard:
        assert bool(((y == 0) | (y == 1)).all()) if not reduce else torch.allclose(y.sum(-1), torch.ones(3, dtype=torch.float64))


def test_small_tau_relaxation_tends_to_the_hard_sample():
    theta = torch.randn(4, 7, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    hard = cg.gradients.get("sst", samples=3, reduce=False)(theta, cg.solvers.get("argmax"),
                                                           generator=torch.Generator().manual_seed(4))
    for tau, tolerance in [(1.0, None), (1e-3, 1e-6)]:
        soft = cg.gradients.get("sst", samples=3, reduce=False, hard=False, tau=tau)(
            theta, cg.solvers.get("argmax"), generator=torch.Generator().manual_seed(4)
        )
        assert torch.allclose(soft.sum(-1), torch.ones(3, 4, dtype=torch.float64))
        if tolerance is None:
            assert (soft - hard).abs().max() > 0.1  # a real relaxation at tau = 1
        else:
            assert torch.allclose(soft, hard, atol=tolerance)
    assert torch.equal(hard, one_hot_argmax(perturbed_scores(theta, 3, 4)))


def test_eval_mode_is_the_exact_argmax_with_the_softmax_gradient():
    theta = torch.tensor([0.2, 1.0, -0.5], requires_grad=True)
    layer = cg.DifferentiableSolver("argmax", estimator="sst", tau=0.5, samples=4).eval()
    y = layer(theta)
    assert torch.equal(y.detach(), torch.tensor([0.0, 1.0, 0.0]))
    y.backward(torch.tensor([1.0, 0.0, 0.0]))
    reference = theta.detach().clone().requires_grad_()
    torch.softmax(reference / 0.5, -1)[0].backward()
    assert torch.allclose(theta.grad, reference.grad)
    sampling = cg.DifferentiableSolver("argmax", estimator="sst", sample_in_eval=True, samples=50).eval()
    assert sampling(theta, generator=torch.Generator().manual_seed(0)).detach().max() < 1.0  # samples differ


def test_one_solver_call_forward_none_backward(counting):
    solver = counting(cg.solvers.get("argmax"))
    theta = torch.randn(2, 3, 5, requires_grad=True)
    y = cg.gradients.get("sst", samples=4)(theta, solver)
    y.backward(torch.randn_like(y))
    assert solver.calls == [(4 * 6, 5)]
    relaxed = counting(cg.solvers.get("argmax"))
    cg.gradients.get("sst", samples=4, hard=False)(theta, relaxed)
    assert relaxed.calls == []  # the soft forward needs no solver


def test_refuses_other_solvers_and_accepts_top_1():
    estimator = cg.gradients.get("sst")
    with pytest.raises(ValueError, match="sst: the Gumbel-softmax relaxation needs an argmax solver .*got 'topk'; for top-k use relaxed_topk"):
        estimator(torch.randn(5), cg.solvers.get("topk", k=2))
    with pytest.raises(ValueError, match="sst: .* got 'shortest_path'; use an estimator for any solver"):
        estimator(torch.rand(3, 3), cg.solvers.get("shortest_path"))
    assert estimator(torch.randn(5), cg.solvers.get("topk", k=1)).sum() == 1

    class Timed:  # the training loop's timer copies name, sense and event_ndim, and keeps .solver
        def __init__(self, solver):
            self.solver, self.name, self.sense, self.event_ndim = solver, solver.name, solver.sense, solver.event_ndim

        def __call__(self, theta):
            return self.solver(theta)

    assert estimator(torch.randn(5), Timed(cg.solvers.get("topk", k=1))).sum() == 1


def test_bad_inputs_and_options():
    with pytest.raises(ValueError, match="sst: tau must be a finite number > 0, got 0"):
        cg.gradients.get("sst", tau=0)
    with pytest.raises(ValueError, match="sst: hard must be True or False, got 'yes'"):
        cg.gradients.get("sst", hard="yes")
    with pytest.raises(ValueError, match="sst: noise must be one of \\['gumbel', 'normal', 'none'\\], got 'sum_of_gamma'"):
        cg.gradients.get("sst", noise="sum_of_gamma")
    with pytest.raises(OptionError, match="estimator 'sst': unknown option 'temperature'"):
        cg.gradients.get("sst", temperature=0.5)
    with pytest.raises(ValueError, match="sst: theta must be finite"):
        cg.gradients.get("sst")(torch.tensor([0.0, float("inf")]), cg.solvers.get("argmax"))
    y = cg.gradients.get("sst")(torch.zeros(3, requires_grad=True), cg.solvers.get("argmax"))
    with pytest.raises(ValueError, match="sst: the gradient flowing back into the layer's output is NaN"):
        y.backward(torch.full_like(y, float("nan")))
    assert isinstance(cg.gradients.get("sst"), SST)
    defaults = cg.gradients.get("sst").options
    assert (defaults.samples, defaults.noise, defaults.noise_scale, defaults.tau, defaults.hard) == (1, "gumbel", 1.0, 1.0, True)

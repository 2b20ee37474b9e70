"""Tests for combgrad/gradients/relaxed_topk.py.

The reference relaxation (Xie & Ermon 2019, Algorithm 1) is written out here as a plain loop
over the k steps, with the same seeded Gumbel draws, and differentiated by autograd.
"""

import itertools

import pytest
import torch

import combgrad as cg
from combgrad.gradients.base import draw_noise
from combgrad.gradients.relaxed_topk import RelaxedTopK, relaxed_topk_relaxation


def reference_relaxation(r, tau, k):
    khot, alpha = [], r
    for _ in range(k):
        a = torch.softmax(alpha / tau, dim=-1)
        khot.append(a)
        alpha = alpha + torch.log1p(-a)  # no floor needed at these temperatures
    return torch.stack(khot).sum(0)


def k_hot_topk(scores, k):
    return torch.zeros_like(scores).scatter_(-1, scores.topk(k, dim=-1).indices, 1.0)


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("reduce", [True, False])
@pytest.mark.parametrize("hard", [True, False])
def test_forward_and_backward_are_the_relaxation(k, reduce, hard):
    samples, tau, seed = 4, 0.6, 0
    theta = torch.randn(2, 7, generator=torch.Generator().manual_seed(1), dtype=torch.float64, requires_grad=True)
    dy = torch.randn((samples, 2, 7) if not reduce else (2, 7), generator=torch.Generator().manual_seed(2),
                     dtype=torch.float64)
    estimator = cg.gradients.get("relaxed_topk", samples=samples, tau=tau, hard=hard, reduce=reduce)
    y = estimator(theta, cg.solvers.get("topk", k=k), generator=torch.Generator().manual_seed(seed))
    (grad,) = torch.autograd.grad(y, theta, dy)

    reference_theta = theta.detach().clone().requires_grad_()
    draws = draw_noise("gumbel", samples, theta.detach(), generator=torch.Generator().manual_seed(seed))
    soft = reference_relaxation(reference_theta + draws, tau, k)
    reference_y = k_hot_topk(theta.detach() + draws, k) + soft - soft.detach() if hard else soft
    if reduce:
        reference_y = reference_y.mean(0)
    (reference_grad,) = torch.autograd.grad(reference_y, reference_theta, dy)
    assert torch.allclose(y, reference_y.detach(), atol=1e-12)
    assert torch.allclose(grad, reference_grad, atol=1e-10) and grad.abs().sum() > 0


@pytest.mark.parametrize("k", [1, 2, 4])
def test_relaxation_sums_to_k_and_tends_to_the_topk_as_tau_goes_to_zero(k):
    r = torch.randn(5, 9, generator=torch.Generator().manual_seed(30 + k), dtype=torch.float64)  # seeds without near-ties
    for tau in (2.0, 0.5):
        soft = relaxed_topk_relaxation(r, tau, k)
        assert torch.allclose(soft.sum(-1), torch.full((5,), float(k), dtype=torch.float64))
        assert bool((soft >= 0).all())
    # Not a projection onto the k-subset polytope: at tau = 1 an entry can exceed 1 (documented).
    assert relaxed_topk_relaxation(torch.tensor([5.0, 0.0, -1.0, -2.0]), 1.0, 3)[0] > 1.8
    ordered = r.sort(-1, descending=True).values
    assert (ordered[:, k - 1] - ordered[:, k]).min() > 1e-3  # no near-tie at the k-th place: exp(-1e-3 / tau) ~ 0
    assert torch.allclose(relaxed_topk_relaxation(r, 1e-5, k), k_hot_topk(r, k), atol=1e-6)
    # At a temperature where 1 - a underflows, the floor keeps values and gradients finite.
    point = r.clone().requires_grad_()
    (grad,) = torch.autograd.grad(relaxed_topk_relaxation(point, 1e-4, k).sum(), point)
    assert bool(torch.isfinite(grad).all())


def test_top_1_is_the_gumbel_softmax_and_argmax_is_accepted():
    theta = torch.randn(3, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    options = {"samples": 3, "tau": 0.8, "hard": False, "reduce": False}
    ours = cg.gradients.get("relaxed_topk", **options)(theta, cg.solvers.get("argmax"),
                                                       generator=torch.Generator().manual_seed(1))
    sst = cg.gradients.get("sst", **options)(theta, cg.solvers.get("argmax"), generator=torch.Generator().manual_seed(1))
    assert torch.allclose(ours, sst, atol=1e-12)


def test_hard_forward_is_the_topk_of_the_perturbed_scores_with_the_solvers_ties():
    theta = torch.zeros(2, 6, dtype=torch.float64)  # all tied without noise: the lower indices win
    y = cg.gradients.get("relaxed_topk", noise="none")(theta, cg.solvers.get("topk", k=2))
    assert torch.equal(y, torch.tensor([[1.0, 1.0, 0, 0, 0, 0]] * 2, dtype=torch.float64))
    theta = torch.randn(4, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    y = cg.gradients.get("relaxed_topk", samples=5, reduce=False, noise_scale=0.5)(
        theta, cg.solvers.get("topk", k=3), generator=torch.Generator().manual_seed(3))
    draws = draw_noise("gumbel", 5, theta, generator=torch.Generator().manual_seed(3))
    assert torch.equal(y, k_hot_topk(theta + 0.5 * draws, 3))


def test_gumbel_top_k_samples_subsets_without_replacement():
    """With tau -> 0 the relaxation is the top-k of Gumbel-perturbed scores: a k-subset drawn
    without replacement with probabilities softmax(theta). P({i, j}) = p_i p_j / (1 - p_i) +
    p_j p_i / (1 - p_j); 40 000 draws: 5 standard errors (< 0.012) as tolerance."""
    theta = torch.tensor([0.5, -0.2, 1.0, 0.0], dtype=torch.float64)
    samples = 40_000
    y = cg.gradients.get("relaxed_topk", samples=samples, reduce=False)(
        theta, cg.solvers.get("topk", k=2), generator=torch.Generator().manual_seed(5))
    p = torch.softmax(theta, 0)
    for i, j in itertools.combinations(range(4), 2):
        expected = (p[i] * p[j] / (1 - p[i]) + p[j] * p[i] / (1 - p[j])).item()
        frequency = (y[:, i] * y[:, j]).mean().item()
        assert abs(frequency - expected) < 5 * (expected * (1 - expected) / samples) ** 0.5


def test_refuses_other_solvers_and_bad_options():
    estimator = cg.gradients.get("relaxed_topk")
    assert isinstance(estimator, RelaxedTopK)
    with pytest.raises(ValueError, match="relaxed_topk: the relaxed top-k needs a topk \\(or argmax\\) solver, got 'spanning_tree'"):
        estimator(torch.randn(4, 4), cg.solvers.get("spanning_tree"))
    with pytest.raises(ValueError, match="relaxed_topk: tau must be a finite number > 0, got -1"):
        cg.gradients.get("relaxed_topk", tau=-1)
    with pytest.raises(ValueError, match="relaxed_topk: noise_scale must be a finite number >= 0, got -1"):
        cg.gradients.get("relaxed_topk", noise_scale=-1)
    with pytest.raises(ValueError, match="relaxed_topk: samples must be an integer >= 1, got 0"):
        cg.gradients.get("relaxed_topk", samples=0)


def test_k_larger_than_the_event_is_refused_for_the_soft_forward_too():
    for hard in (True, False):
        with pytest.raises(ValueError, match="theta's last dim must be at least k=3, got shape \\(2, 2\\)"):
            cg.gradients.get("relaxed_topk", hard=hard)(torch.randn(2, 2), cg.solvers.get("topk", k=3))

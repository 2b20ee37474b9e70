"""Tests for combgrad/gradients/losses.py.

With its noise fixed (a generator re-seeded on every call), the Monte Carlo
Fenchel-Young value is a piecewise-linear function of theta whose kinks are
crossed by a finite-difference step with negligible probability, so float64
gradcheck applies; so it does to SPO+ (piecewise linear) and Hamming (linear).
Statistical tolerances are 5 standard errors computed from the same draws.
"""

import itertools
import math

import networkx as nx
import pytest
import torch

import combgrad as cg
from combgrad.gradients import noise
from combgrad.gradients.base import draw_noise


def fixed_noise_fenchel_young(y_true, seed=0, **options):
    def loss(theta):
        return cg.losses.fenchel_young(theta, y_true, generator=torch.Generator().manual_seed(seed), **options)

    return loss


@pytest.mark.parametrize("seed", [0, 1])
def test_fenchel_young_gradient_is_softmax_minus_target(seed):
    sigma, samples = 0.5, 100_000
    generator = torch.Generator().manual_seed(seed)
    theta = torch.randn(3, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    y_true = torch.nn.functional.one_hot(torch.tensor([0, 3, 1]), 5).double()
    loss = cg.losses.fenchel_young(
        theta, y_true, solver="topk", k=1, sigma=sigma, noise="gumbel", samples=samples,
        generator=torch.Generator().manual_seed(seed),
    )
    assert loss.shape == (3,)
    (grad,) = torch.autograd.grad(loss.sum(), theta)
    softmax = torch.softmax(theta.detach() / sigma, -1)
    error = 5 * torch.sqrt(softmax * (1 - softmax) / samples) + 1e-12
    assert bool(((grad - (softmax - y_true)).abs() <= error).all())


def test_fenchel_young_value_matches_the_closed_form_for_argmax():
    # F(s) = E max_i (s_i + sigma Z_i) = sigma logsumexp(s / sigma) + sigma * Euler's gamma.
    sigma, samples, seed = 0.5, 100_000, 3
    theta = torch.tensor([[-0.6, 1.9, -0.2, 1.1, -1.0]], dtype=torch.float64)
    y_true = torch.tensor([[0.0, 0.0, 0.0, 1.0, 0.0]], dtype=torch.float64)
    value = cg.losses.fenchel_young(
        theta, y_true, solver="argmax", sigma=sigma, samples=samples, generator=torch.Generator().manual_seed(seed)
    )
    closed = sigma * torch.logsumexp(theta / sigma, -1) + sigma * noise.EULER_GAMMA - (theta * y_true).sum(-1)
    # The same draws give the per-sample terms, hence the standard error.
    z = draw_noise("gumbel", samples, theta, generator=torch.Generator().manual_seed(seed))
    perturbed = theta + sigma * z
    terms = perturbed.max(-1).values - (perturbed * y_true).sum(-1)  # [S, 1]
    assert torch.allclose(value, terms.mean(0) + sigma * noise.EULER_GAMMA)
    assert abs(value.item() - closed.item()) < 5 * terms.std().item() / math.sqrt(samples)
    assert value.item() > 0


def test_fenchel_young_for_a_min_solver_differentiates_costs(argmin):
    sigma, samples = 1.0, 100_000
    costs = torch.tensor([[0.5, -0.3, 1.2, 0.0]], dtype=torch.float64, requires_grad=True)
    y_true = torch.tensor([[0.0, 0.0, 0.0, 1.0]], dtype=torch.float64)
    loss = cg.losses.fenchel_young(
        costs, y_true, solver=argmin, sigma=sigma, samples=samples, generator=torch.Generator().manual_seed(0)
    )
    (grad,) = torch.autograd.grad(loss.sum(), costs)
    softmin = torch.softmax(-costs.detach() / sigma, -1)
    # Score space s = -costs: dL/ds = softmin - y_true, so dL/dcosts = -(softmin - y_true).
    assert bool(((grad + (softmin - y_true)).abs() <= 5 * torch.sqrt(softmin * (1 - softmin) / samples)).all())
    costs = costs.detach()
    closed = sigma * torch.logsumexp(-costs / sigma, -1) + sigma * noise.EULER_GAMMA + (costs * y_true).sum(-1)
    assert abs(loss.item() - closed.item()) < 0.02


@pytest.mark.parametrize("noise_name", ["gumbel", "normal"])
@pytest.mark.parametrize("seed", range(4))
def test_fenchel_young_is_non_negative_for_feasible_targets(noise_name, seed):
    generator = torch.Generator().manual_seed(seed)
    theta = torch.randn(6, 10, generator=generator, dtype=torch.float64)
    subsets = torch.rand(6, 10, generator=generator).argsort(-1)[:, :3]
    y_true = torch.zeros(6, 10, dtype=torch.float64).scatter_(-1, subsets, 1.0)
    loss = cg.losses.fenchel_young(theta, y_true, solver="topk", k=3, noise=noise_name, samples=3, generator=generator)
    # Every per-sample term is >= 0; the offset sigma E[Z] sum(y_true) is 3 * 0.577 (Gumbel) or 0.
    floor = 3 * noise.mean(noise_name)
    assert bool((loss >= floor - 1e-12).all())
    costs = 5 + torch.rand(4, 6, 6, generator=generator, dtype=torch.float64)
    paths = cg.solvers.get("shortest_path")(torch.rand(4, 6, 6, generator=generator, dtype=torch.float64))
    loss = cg.losses.fenchel_young(
        costs, paths, solver="shortest_path", sigma=0.5, noise=noise_name, generator=generator
    )
    assert bool((loss >= -1e-9).all())


def test_fenchel_young_gradcheck_with_fixed_noise():
    generator = torch.Generator().manual_seed(0)
    theta = torch.randn(2, 6, generator=generator, dtype=torch.float64, requires_grad=True)
    y_true = torch.tensor([[1.0, 1.0, 0, 0, 0, 0], [0, 0, 0, 1.0, 0, 1.0]], dtype=torch.float64)
    loss = fixed_noise_fenchel_young(y_true, solver="topk", k=2, sigma=0.7, samples=5)
    assert torch.autograd.gradcheck(loss, (theta,))
    costs = torch.rand(1, 4, 4, generator=generator, dtype=torch.float64).add(1).requires_grad_()
    path = cg.solvers.get("shortest_path")(torch.rand(1, 4, 4, generator=generator, dtype=torch.float64))
    loss = fixed_noise_fenchel_young(path, solver="shortest_path", sigma=0.3, noise="normal", samples=4)
    assert torch.autograd.gradcheck(loss, (costs,))


def test_fenchel_young_one_solver_call_and_reproducible(counting):
    solver = counting(cg.solvers.get("topk", k=2))
    theta = torch.randn(4, 7)
    y_true = cg.solvers.get("topk", k=2)(torch.randn(4, 7))
    seeded = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    first = cg.losses.fenchel_young(theta, y_true, solver=solver, samples=9, generator=seeded())
    assert solver.calls == [(36, 7)]
    second = cg.losses.fenchel_young(theta, y_true, solver=solver, samples=9, generator=seeded())
    torch.manual_seed(2)
    third = cg.losses.fenchel_young(theta, y_true, solver=solver, samples=9)
    torch.manual_seed(2)
    assert torch.equal(third, cg.losses.fenchel_young(theta, y_true, solver=solver, samples=9))
    assert torch.equal(first, second)


def test_fenchel_young_bad_inputs():
    theta, y_true = torch.randn(2, 4), torch.zeros(2, 4)
    with pytest.raises(ValueError, match="fenchel_young: sigma must be a finite number > 0, got 0"):
        cg.losses.fenchel_young(theta, y_true, solver="argmax", sigma=0)
    with pytest.raises(ValueError, match="fenchel_young: samples must be an integer >= 1, got 0"):
        cg.losses.fenchel_young(theta, y_true, solver="argmax", samples=0)
    with pytest.raises(ValueError, match="fenchel_young: noise must be one of \\['gumbel', 'normal'\\], got 'none'"):
        cg.losses.fenchel_young(theta, y_true, solver="argmax", noise="none")
    with pytest.raises(ValueError, match="fenchel_young: y_true must have the shape of the prediction \\(2, 4\\)"):
        cg.losses.fenchel_young(theta, torch.zeros(4), solver="argmax")
    with pytest.raises(TypeError, match="fenchel_young: solver options \\['k'\\] need a solver name"):
        cg.losses.fenchel_young(theta, y_true, solver=cg.solvers.get("argmax"), k=1)
    with pytest.raises(TypeError, match="solver 'topk': unknown option 'kk'; accepted options: k"):
        cg.losses.fenchel_young(theta, y_true, solver="topk", kk=1)


def grid_paths(height, width, neighbourhood):
    """All simple paths from the top-left to the bottom-right cell, as 0/1 masks (brute force)."""
    graph = nx.grid_2d_graph(height, width)
    if neighbourhood == 8:
        for r, c in itertools.product(range(height - 1), range(width - 1)):
            graph.add_edge((r, c), (r + 1, c + 1))
            graph.add_edge((r + 1, c), (r, c + 1))
    masks = []
    for path in nx.all_simple_paths(graph, (0, 0), (height - 1, width - 1)):
        mask = torch.zeros(height, width, dtype=torch.float64)
        for cell in path:
            mask[cell] = 1.0
        masks.append(mask)
    return torch.stack(masks)


@pytest.mark.parametrize("neighbourhood", [4, 8])
@pytest.mark.parametrize("seed", range(3))
def test_spo_plus_matches_brute_force(neighbourhood, seed):
    generator = torch.Generator().manual_seed(seed)
    paths = grid_paths(3, 3, neighbourhood)  # [P, 3, 3]
    c_true = torch.rand(5, 3, 3, generator=generator, dtype=torch.float64)
    # c_hat in [0.5, 1.5] keeps 2 c_hat - c >= 0, where the solver is exact (no clipping).
    c_hat = (0.5 + torch.rand(5, 3, 3, generator=generator, dtype=torch.float64)).requires_grad_()
    loss = cg.losses.spo_plus(c_hat, c_true, solver="shortest_path", neighbourhood=neighbourhood)
    value = lambda costs: (costs.unsqueeze(1) * paths).sum((-2, -1))  # [5, P]
    best_true = value(c_true).argmin(-1)
    w_true = paths[best_true]
    expected = (
        value(c_true - 2 * c_hat.detach()).max(-1).values
        + 2 * (c_hat.detach() * w_true).sum((-2, -1))
        - value(c_true).min(-1).values
    )
    assert torch.allclose(loss.detach(), expected)
    assert bool((loss >= -1e-12).all())
    (grad,) = torch.autograd.grad(loss.sum(), c_hat)
    w_hat = paths[value(2 * c_hat.detach() - c_true).argmin(-1)]
    assert torch.allclose(grad, 2 * (w_true - w_hat))


def test_spo_plus_is_zero_at_the_truth_and_passes_gradcheck():
    generator = torch.Generator().manual_seed(4)
    c_true = torch.rand(3, 5, 5, generator=generator, dtype=torch.float64)
    at_truth = cg.losses.spo_plus(c_true.clone(), c_true, solver="shortest_path")
    assert torch.equal(at_truth, torch.zeros(3, dtype=torch.float64))
    c_hat = (0.5 + torch.rand(3, 5, 5, generator=generator, dtype=torch.float64)).requires_grad_()
    solver = cg.solvers.get("shortest_path")
    with_y = cg.losses.spo_plus(c_hat, c_true, solver=solver, y_true=solver(c_true))
    assert torch.equal(with_y, cg.losses.spo_plus(c_hat, c_true, solver=solver))
    # One small instance keeps gradcheck's 2 solves per input entry cheap.
    small = c_hat.detach()[:1, :3, :3].clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda c: cg.losses.spo_plus(c, c_true[:1, :3, :3], solver=solver), (small,))


def test_spo_plus_bad_inputs():
    with pytest.raises(ValueError, match="spo_plus: solver must have sense 'min'.*got 'max'"):
        cg.losses.spo_plus(torch.randn(2, 4), torch.randn(2, 4), solver="topk", k=1)
    with pytest.raises(ValueError, match="spo_plus: c_true must have the shape of the prediction"):
        cg.losses.spo_plus(torch.rand(2, 3, 3), torch.rand(3, 3), solver="shortest_path")
    with pytest.raises(ValueError, match="spo_plus: y_true must have the shape"):
        cg.losses.spo_plus(torch.rand(3, 3), torch.rand(3, 3), solver="shortest_path", y_true=torch.zeros(2, 2))


@pytest.mark.parametrize("seed", range(3))
def test_hamming_counts_differences(seed):
    generator = torch.Generator().manual_seed(seed)
    y = (torch.rand(4, 5, 5, generator=generator) > 0.5).float()
    y_true = (torch.rand(4, 5, 5, generator=generator) > 0.5).float()
    assert torch.equal(cg.losses.hamming(y, y_true), (y != y_true).sum((1, 2)).float())
    assert torch.equal(cg.losses.hamming(y, y_true, event_ndim=1), (y != y_true).sum(-1).float())
    soft = torch.rand(4, 5, 5, generator=generator)
    assert torch.allclose(cg.losses.hamming(soft, y_true), (soft - y_true).abs().sum((1, 2)))
    assert cg.losses.hamming(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0])).shape == ()


def test_hamming_gradcheck_and_errors():
    y = torch.rand(3, 4, dtype=torch.float64, requires_grad=True)
    y_true = (torch.rand(3, 4) > 0.5).double()
    assert torch.autograd.gradcheck(lambda y: cg.losses.hamming(y, y_true), (y,))
    with pytest.raises(ValueError, match="hamming: y_true must have the shape of the prediction \\(3, 4\\), got"):
        cg.losses.hamming(y, y_true[0])
    with pytest.raises(ValueError, match="hamming: event_ndim must be an integer in \\[0, 2\\], got 3"):
        cg.losses.hamming(y, y_true, event_ndim=3)
    with pytest.raises(TypeError, match="hamming: y must be a torch.Tensor"):
        cg.losses.hamming([1.0], y_true)

"""Tests for combgrad/gradients/losses/ (fenchel_young, spo_plus, hamming).

With its noise fixed (a generator re-seeded on every call), the Monte Carlo
Fenchel-Young value is a piecewise-linear function of theta whose kinks are
crossed by a finite-difference step with negligible probability, so float64
gradcheck applies; so it does to SPO+ (piecewise linear) and Hamming (linear).
Statistical tolerances are 5 standard errors computed from the same draws.
"""

import itertools
import math
import warnings

import networkx as nx
import pytest
import torch

import combgrad as cg
from combgrad.errors import OptionError
from combgrad.gradients.base import draw_noise
from combgrad.solvers import BatchSolver

from _pyepo_grid import PyEPOGridDP  # tests/ is on sys.path (conftest)


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
        theta, y_true, solver="topk", k=1, noise_scale=sigma, noise="gumbel", samples=samples,
        generator=torch.Generator().manual_seed(seed),
    )
    assert loss.shape == (3,)
    (grad,) = torch.autograd.grad(loss.sum(), theta)
    softmax = torch.softmax(theta.detach() / sigma, -1)
    error = 5 * torch.sqrt(softmax * (1 - softmax) / samples) + 1e-12
    assert bool(((grad - (softmax - y_true)).abs() <= error).all())


@pytest.mark.parametrize("noise_name", ["normal", "gumbel"])
def test_fenchel_young_gradient_is_the_mean_perturbed_solution_minus_the_target(noise_name):
    """The Omega(y_true) fix (issue 8 item 6) changes the value, never the gradient."""
    samples, sigma, seed = 7, 0.8, 5
    theta = torch.randn(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1), requires_grad=True)
    y_true = cg.solvers.get("topk", k=2)(torch.randn(4, 6, dtype=torch.float64))
    loss = cg.losses.fenchel_young(
        theta, y_true, solver="topk", k=2, noise_scale=sigma, noise=noise_name, samples=samples,
        generator=torch.Generator().manual_seed(seed),
    )
    (grad,) = torch.autograd.grad(loss.sum(), theta)
    z = draw_noise(noise_name, samples, theta.detach(), generator=torch.Generator().manual_seed(seed))
    solutions = cg.solvers.get("topk", k=2)(theta.detach() + sigma * z)
    assert torch.allclose(grad, solutions.mean(0) - y_true)


def test_fenchel_young_value_matches_the_closed_form_for_argmax():
    # F(s) = E max_i (s_i + sigma Z_i) = sigma logsumexp(s / sigma) + sigma gamma for Gumbel
    # noise, and Omega(y_true) = -sigma gamma: the loss is sigma logsumexp(s / sigma) - <s, y_true>.
    sigma, samples, seed = 0.5, 100_000, 3
    theta = torch.tensor([[-0.6, 1.9, -0.2, 1.1, -1.0]], dtype=torch.float64)
    y_true = torch.tensor([[0.0, 0.0, 0.0, 1.0, 0.0]], dtype=torch.float64)
    value = cg.losses.fenchel_young(
        theta, y_true, solver="argmax", noise_scale=sigma, noise="gumbel", samples=samples,
        generator=torch.Generator().manual_seed(seed),
    )
    closed = sigma * torch.logsumexp(theta / sigma, -1) - (theta * y_true).sum(-1)
    # The same draws give the per-sample terms, hence the standard error.
    z = draw_noise("gumbel", samples, theta, generator=torch.Generator().manual_seed(seed))
    perturbed = theta + sigma * z
    terms = perturbed.max(-1).values - (perturbed * y_true).sum(-1)  # [S, 1]
    assert torch.allclose(value, terms.mean(0))
    assert abs(value.item() - closed.item()) < 5 * terms.std().item() / math.sqrt(samples)
    assert value.item() > 0


@pytest.mark.parametrize("noise_name", ["gumbel", "normal"])
def test_fenchel_young_of_a_confident_correct_prediction_is_zero(noise_name):
    """Issue 8 item 6: the old value was sigma E[Z] sum(y_true), 0.5772 per chosen entry with Gumbel noise."""
    theta = torch.tensor([[0.0, 60.0, 0.0, 0.0], [60.0, 0.0, 60.0, 0.0]], dtype=torch.float64)
    y_true = torch.tensor([[0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 1.0, 0.0]], dtype=torch.float64)
    # A gap of 60 noise scales: the perturbed top-k equals the target in every draw (a Gumbel
    # or normal draw above 30 has probability below 1e-13).
    for k in (1, 2):
        value = cg.losses.fenchel_young(
            theta[k - 1 :k], y_true[k - 1 :k], solver="topk", k=k, noise=noise_name, samples=50,
            generator=torch.Generator().manual_seed(0),
        )
        assert torch.equal(value, torch.zeros(1, dtype=torch.float64))


def test_fenchel_young_for_a_min_solver_differentiates_costs(argmin):
    sigma, samples = 1.0, 100_000
    costs = torch.tensor([[0.5, -0.3, 1.2, 0.0]], dtype=torch.float64, requires_grad=True)
    y_true = torch.tensor([[0.0, 0.0, 0.0, 1.0]], dtype=torch.float64)
    loss = cg.losses.fenchel_young(
        costs, y_true, solver=argmin, noise_scale=sigma, noise="gumbel", samples=samples,
        generator=torch.Generator().manual_seed(0),
    )
    (grad,) = torch.autograd.grad(loss.sum(), costs)
    softmin = torch.softmax(-costs.detach() / sigma, -1)
    # Score space s = -costs: dL/ds = softmin - y_true, so dL/dcosts = -(softmin - y_true).
    assert bool(((grad + (softmin - y_true)).abs() <= 5 * torch.sqrt(softmin * (1 - softmin) / samples)).all())
    costs = costs.detach()
    closed = sigma * torch.logsumexp(-costs / sigma, -1) + (costs * y_true).sum(-1)
    # The terms are bounded by the spread of 4 Gumbel draws; 0.02 is above 5 standard errors.
    assert abs(loss.item() - closed.item()) < 0.02


@pytest.mark.parametrize("noise_name", ["gumbel", "normal"])
@pytest.mark.parametrize("seed", range(4))
def test_fenchel_young_is_non_negative_for_feasible_targets(noise_name, seed):
    """Every per-sample term is >= 0 with an exact solver; the old offset made the floor 3 * 0.577."""
    generator = torch.Generator().manual_seed(seed)
    theta = torch.randn(6, 10, generator=generator, dtype=torch.float64)
    subsets = torch.rand(6, 10, generator=generator).argsort(-1)[:, :3]
    y_true = torch.zeros(6, 10, dtype=torch.float64).scatter_(-1, subsets, 1.0)
    loss = cg.losses.fenchel_young(theta, y_true, solver="topk", k=3, noise=noise_name, samples=3, generator=generator)
    assert bool((loss >= 0).all())
    # Costs >= 5 with noise 0.5: no perturbed cost gets near 0, where shortest_path would clip.
    costs = 5 + torch.rand(4, 6, 6, generator=generator, dtype=torch.float64)
    paths = cg.solvers.get("shortest_path")(torch.rand(4, 6, 6, generator=generator, dtype=torch.float64))
    loss = cg.losses.fenchel_young(
        costs, paths, solver="shortest_path", noise_scale=0.5, noise=noise_name, generator=generator
    )
    assert bool((loss >= -1e-9).all())


def test_fenchel_young_default_noise_is_normal():
    """Issue 8 item 8: Gumbel's mean biases "min" solvers whose solutions differ in size."""
    theta, y_true = torch.randn(3, 6), cg.solvers.get("topk", k=2)(torch.randn(3, 6))
    seeded = lambda: torch.Generator().manual_seed(4)  # noqa: E731
    default = cg.losses.fenchel_young(theta, y_true, solver="topk", k=2, generator=seeded())
    normal = cg.losses.fenchel_young(theta, y_true, solver="topk", k=2, noise="normal", generator=seeded())
    gumbel = cg.losses.fenchel_young(theta, y_true, solver="topk", k=2, noise="gumbel", generator=seeded())
    assert torch.equal(default, normal) and not torch.equal(default, gumbel)


def test_fenchel_young_gradcheck_with_fixed_noise():
    generator = torch.Generator().manual_seed(0)
    theta = torch.randn(2, 6, generator=generator, dtype=torch.float64, requires_grad=True)
    y_true = torch.tensor([[1.0, 1.0, 0, 0, 0, 0], [0, 0, 0, 1.0, 0, 1.0]], dtype=torch.float64)
    loss = fixed_noise_fenchel_young(y_true, solver="topk", k=2, noise_scale=0.7, samples=5)
    assert torch.autograd.gradcheck(loss, (theta,))
    costs = torch.rand(1, 4, 4, generator=generator, dtype=torch.float64).add(1).requires_grad_()
    path = cg.solvers.get("shortest_path")(torch.rand(1, 4, 4, generator=generator, dtype=torch.float64))
    loss = fixed_noise_fenchel_young(path, solver="shortest_path", noise_scale=0.3, noise="normal", samples=4)
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


def test_fenchel_young_sigma_is_a_deprecated_alias_of_noise_scale():
    """Issue 9 item 7: one name for the noise scale across estimators and losses."""
    theta, y_true = torch.randn(2, 5), torch.eye(5)[:2]
    seeded = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    new = cg.losses.fenchel_young(theta, y_true, solver="argmax", noise_scale=0.3, generator=seeded())
    with pytest.warns(DeprecationWarning, match="fenchel_young: option 'sigma' is deprecated, use 'noise_scale'"):
        old = cg.losses.fenchel_young(theta, y_true, solver="argmax", sigma=0.3, generator=seeded())
    assert torch.equal(new, old)
    with pytest.raises(OptionError, match="'sigma' is the old name of 'noise_scale'; pass only 'noise_scale'"):
        cg.losses.fenchel_young(theta, y_true, solver="argmax", sigma=0.3, noise_scale=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new name warns about nothing
        cg.losses.fenchel_young(theta, y_true, solver="argmax", noise_scale=0.3)


def test_fenchel_young_unknown_options_name_the_option_and_list_the_accepted_ones():
    """Issue 8 item 15 / smaller defects: lam gave a bare TypeError from TopK.__init__."""
    theta, y_true = torch.randn(2, 4), torch.zeros(2, 4)
    with pytest.raises(OptionError, match=(
        # topk's own options (k, and backend where it has backends) come from its signature.
        "fenchel_young: solver 'topk': unknown option 'lam'; accepted options: k[a-z, ]*; "
        "fenchel_young's own options: generator, multiplicative, noise, noise_scale, samples, solver"
    )):
        cg.losses.fenchel_young(theta, y_true, solver="topk", k=1, lam=10.0)
    with pytest.raises(TypeError, match="unknown option 'kk'"):  # OptionError is a TypeError
        cg.losses.fenchel_young(theta, y_true, solver="topk", kk=1)
    with pytest.raises(OptionError, match=(
        "fenchel_young: unknown option 'k'; fenchel_young takes generator, multiplicative, noise, noise_scale, samples, "
        "solver, and solver options only with a registry name"
    )):
        cg.losses.fenchel_young(theta, y_true, solver=cg.solvers.get("argmax"), k=1)


def test_fenchel_young_bad_inputs():
    theta, y_true = torch.randn(2, 4), torch.zeros(2, 4)
    with pytest.raises(ValueError, match="fenchel_young: noise_scale must be a finite number > 0, got 0"):
        cg.losses.fenchel_young(theta, y_true, solver="argmax", noise_scale=0)
    with pytest.raises(ValueError, match="fenchel_young: samples must be an integer >= 1, got 0"):
        cg.losses.fenchel_young(theta, y_true, solver="argmax", samples=0)
    with pytest.raises(ValueError, match="fenchel_young: noise must be one of \\['normal', 'gumbel'\\], got 'none'"):
        cg.losses.fenchel_young(theta, y_true, solver="argmax", noise="none")
    with pytest.raises(ValueError, match="fenchel_young: y_true must have the shape of the prediction \\(2, 4\\)"):
        cg.losses.fenchel_young(theta, torch.zeros(4), solver="argmax")
    # Smaller defects of issue 8: NaN targets and meta tensors were accepted.
    with pytest.raises(ValueError, match="fenchel_young: y_true must be finite, got NaN or inf values"):
        cg.losses.fenchel_young(theta, torch.full((2, 4), math.nan), solver="argmax")
    with pytest.raises(ValueError, match="fenchel_young: theta must hold values .*got a meta tensor"):
        cg.losses.fenchel_young(theta.to("meta"), y_true, solver="argmax")
    with pytest.raises(ValueError, match="fenchel_young: y_true must hold values .*got a meta tensor"):
        cg.losses.fenchel_young(theta, y_true.to("meta"), solver="argmax")
    with pytest.raises(TypeError, match="fenchel_young: y_true must be a torch.Tensor, got list"):
        cg.losses.fenchel_young(theta, [[0.0] * 4] * 2, solver="argmax")


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


def spo_plus_by_definition(theta, theta_true, solutions, sense):
    """SPO+ from its definition, by enumerating ``solutions [P, *event]`` (brute force).

    min: max_w <c - 2 c_hat, w> + 2 <c_hat, w*(c)> - <c, w*(c)>;
    max: max_w <2 c_hat - c, w> - 2 <c_hat, w*(c)> + <c, w*(c)>, w* the maximizer.
    Also returns the subgradient 2 sign (w*(2 c_hat - c) - w*(c)).
    """
    dims = tuple(range(-(solutions.ndim - 1), 0))
    value = lambda costs: (costs.unsqueeze(1) * solutions).sum(dims)  # [B, P]  # noqa: E731
    if sense == "min":
        w_true = solutions[value(theta_true).argmin(-1)]
        loss = (
            value(theta_true - 2 * theta).max(-1).values
            + 2 * (theta * w_true).sum(dims)
            - (theta_true * w_true).sum(dims)
        )
        w_hat = solutions[value(2 * theta - theta_true).argmin(-1)]
        return loss, 2 * (w_true - w_hat)
    w_true = solutions[value(theta_true).argmax(-1)]
    loss = (
        value(2 * theta - theta_true).max(-1).values
        - 2 * (theta * w_true).sum(dims)
        + (theta_true * w_true).sum(dims)
    )
    w_hat = solutions[value(2 * theta - theta_true).argmax(-1)]
    return loss, 2 * (w_hat - w_true)


@pytest.mark.parametrize("neighbourhood", [4, 8])
@pytest.mark.parametrize("seed", range(3))
def test_spo_plus_matches_brute_force_on_shortest_paths(neighbourhood, seed):
    generator = torch.Generator().manual_seed(seed)
    paths = grid_paths(3, 3, neighbourhood)  # [P, 3, 3]
    c_true = torch.rand(5, 3, 3, generator=generator, dtype=torch.float64)
    # c_hat in [0.5, 1.5] keeps 2 c_hat - c >= 0, which the grid shortest path needs.
    c_hat = (0.5 + torch.rand(5, 3, 3, generator=generator, dtype=torch.float64)).requires_grad_()
    loss = cg.losses.spo_plus(c_hat, c_true, solver="shortest_path", neighbourhood=neighbourhood)
    expected, subgradient = spo_plus_by_definition(c_hat.detach(), c_true, paths, "min")
    assert torch.allclose(loss.detach(), expected)
    assert bool((loss >= -1e-12).all())
    (grad,) = torch.autograd.grad(loss.sum(), c_hat)
    assert torch.allclose(grad, subgradient)


def subsets(n):
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=n)), dtype=torch.float64)  # [2^n, n]


@pytest.mark.parametrize("seed", range(4))
def test_spo_plus_for_max_matches_the_definition_on_knapsack(seed):
    """Issue 8 item 7: "max" solvers are accepted (they were refused); brute force over all subsets."""
    generator = torch.Generator().manual_seed(seed)
    n = 7
    weights = torch.randint(1, 10, (n,), generator=generator)
    capacity = int(weights.sum()) // 2
    feasible = subsets(n)
    feasible = feasible[(feasible * weights).sum(-1) <= capacity]
    values = torch.rand(6, n, generator=generator, dtype=torch.float64)
    # Predictions around the values: 2 theta - theta_true is often negative, which knapsack takes as it is.
    guess = (values + torch.randn(6, n, generator=generator, dtype=torch.float64)).requires_grad_()
    loss = cg.losses.spo_plus(guess, values, solver="knapsack", weights=weights.tolist(), capacity=capacity)
    expected, subgradient = spo_plus_by_definition(guess.detach(), values, feasible, "max")
    assert bool(((2 * guess - values) < 0).any())
    assert torch.allclose(loss.detach(), expected)
    assert bool((loss >= -1e-12).all())
    (grad,) = torch.autograd.grad(loss.sum(), guess)
    assert torch.allclose(grad, subgradient)
    at_truth = cg.losses.spo_plus(values, values, solver="knapsack", weights=weights.tolist(), capacity=capacity)
    assert torch.equal(at_truth, torch.zeros(6, dtype=torch.float64))


@pytest.mark.parametrize("seed", range(3))
def test_spo_plus_for_min_matches_the_definition_on_an_ilp(seed):
    """A set cover ilp ("min", negative costs accepted): brute force over all 0/1 vectors."""
    generator = torch.Generator().manual_seed(seed)
    n, m = 6, 4
    cover = (torch.rand(m, n, generator=generator) < 0.5).to(torch.int64)
    cover[torch.arange(m), torch.randint(0, n, (m,), generator=generator)] = 1  # every row coverable
    solver = cg.solvers.get("ilp", A=(-cover).tolist(), b=[-1] * m, sense="min")
    feasible = subsets(n)
    feasible = feasible[((feasible @ cover.double().T) >= 1).all(-1)]
    costs = 0.2 + torch.rand(5, n, generator=generator, dtype=torch.float64)
    guess = torch.randn(5, n, generator=generator, dtype=torch.float64).requires_grad_()
    loss = cg.losses.spo_plus(guess, costs, solver=solver)
    expected, subgradient = spo_plus_by_definition(guess.detach(), costs, feasible, "min")
    # ilp rounds the objective to integers at a scale of 2**30 / max|theta|: ties closer than that are
    # absent from random costs, and the values agree to that precision.
    assert torch.allclose(loss.detach(), expected, atol=1e-6)
    (grad,) = torch.autograd.grad(loss.sum(), guess)
    assert torch.allclose(grad, subgradient)


class ClippingArgmin(BatchSolver):
    """A "min" solver that declares it would clip negative costs, as the grid shortest path does."""

    name = "clipping_argmin"
    sense = "min"
    event_ndim = 1
    accepts_negative = False

    def solve_flat(self, theta):
        index = theta.clamp_min(0).argmin(dim=-1, keepdim=True)
        return torch.zeros_like(theta).scatter_(-1, index, 1.0)


def test_spo_plus_refuses_a_solver_that_would_clip():
    """Issue 8 item 7: clipped 2 c_hat - c made SPO+ negative with a wrong subgradient."""
    solver = ClippingArgmin()
    c_true = torch.tensor([[1.0, 2.0, 3.0]])
    with pytest.raises(ValueError, match=(
        "spo_plus: solver 'clipping_argmin' does not accept negative costs .* 2 \\* theta - theta_true "
        "has entries down to -0.8; use a solver that accepts negative costs \\(.*ilp.*knapsack.*\\)"
    )):
        cg.losses.spo_plus(torch.tensor([[0.1, 1.0, 3.0]]), c_true, solver=solver)
    with pytest.raises(ValueError, match="theta_true has entries down to -1"):
        cg.losses.spo_plus(torch.tensor([[1.0, 1.0, 1.0]]), torch.tensor([[-1.0, 1.0, 1.0]]), solver=solver)
    # Non-negative inputs pass, and a known y_true spares the check (and the solve) of theta_true.
    assert cg.losses.spo_plus(torch.tensor([[1.0, 2.0, 3.0]]), c_true, solver=solver).item() == 0.0
    y_true = torch.tensor([[1.0, 0.0, 0.0]])
    loss = cg.losses.spo_plus(torch.tensor([[1.0, 1.0, 1.0]]), torch.tensor([[-1.0, 1.0, 1.0]]),
                              solver=solver, y_true=y_true)
    assert torch.isfinite(loss).all()
    # The grid shortest path declares the attribute (treated as True where absent).
    if getattr(cg.solvers.get("shortest_path"), "accepts_negative", True) is False:
        with pytest.raises(ValueError, match="spo_plus: solver 'shortest_path' does not accept negative costs"):
            cg.losses.spo_plus(torch.full((1, 3, 3), 0.1), torch.ones(1, 3, 3), solver="shortest_path")


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


def test_spo_plus_old_argument_names_are_deprecated_aliases():
    """Issue 9 item 7: spo_plus(theta, theta_true, *, solver, y_true=None); theta_hat/c_true still work."""
    c_true, c_hat = torch.rand(2, 3, 3) + 0.5, torch.rand(2, 3, 3) + 0.5
    new = cg.losses.spo_plus(c_hat, c_true, solver="shortest_path")
    assert torch.equal(new, cg.losses.spo_plus(theta=c_hat, theta_true=c_true, solver="shortest_path"))
    with pytest.warns(DeprecationWarning, match="spo_plus: option 'theta_hat' is deprecated, use 'theta'"):
        with pytest.warns(DeprecationWarning, match="option 'c_true' is deprecated, use 'theta_true'"):
            old = cg.losses.spo_plus(theta_hat=c_hat, c_true=c_true, solver="shortest_path")
    assert torch.equal(new, old)
    with pytest.raises(OptionError, match="'theta_hat' is the old name of 'theta'; pass only 'theta'"):
        cg.losses.spo_plus(c_hat, c_true, theta_hat=c_hat, solver="shortest_path")
    with pytest.raises(OptionError, match="spo_plus: missing argument theta_true"):
        cg.losses.spo_plus(c_hat, solver="shortest_path")


def test_spo_plus_bad_inputs():
    with pytest.raises(ValueError, match="spo_plus: theta_true must have the shape of the prediction"):
        cg.losses.spo_plus(torch.rand(2, 3, 3), torch.rand(3, 3), solver="shortest_path")
    with pytest.raises(ValueError, match="spo_plus: y_true must have the shape"):
        cg.losses.spo_plus(torch.rand(3, 3), torch.rand(3, 3), solver="shortest_path", y_true=torch.zeros(2, 2))
    with pytest.raises(ValueError, match="spo_plus: theta_true must be finite, got NaN or inf values"):
        cg.losses.spo_plus(torch.rand(3, 3), torch.full((3, 3), math.inf), solver="shortest_path")
    with pytest.raises(ValueError, match="spo_plus: y_true must be finite"):
        cg.losses.spo_plus(torch.rand(3, 3), torch.rand(3, 3), solver="shortest_path", y_true=torch.full((3, 3), math.nan))
    with pytest.raises(ValueError, match="spo_plus: theta must hold values .*meta tensor"):
        cg.losses.spo_plus(torch.rand(3, 3, device="meta"), torch.rand(3, 3), solver="shortest_path")
    with pytest.raises(OptionError, match="spo_plus: solver 'shortest_path': unknown option 'lam'.*spo_plus's own options"):
        cg.losses.spo_plus(torch.rand(3, 3), torch.rand(3, 3), solver="shortest_path", lam=1.0)


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
    # Smaller defects of issue 8: a NaN target and meta tensors.
    with pytest.raises(ValueError, match="hamming: y_true must be finite, got NaN or inf values"):
        cg.losses.hamming(y, torch.full((3, 4), math.nan))
    with pytest.raises(ValueError, match="hamming: y must hold values .*meta tensor"):
        cg.losses.hamming(y.detach().to("meta"), y_true)


# --- fenchel_young(multiplicative=True): theta * exp(sigma Z - sigma^2/2) (Dalle et al. 2022) ---


def phi(x):
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def test_multiplicative_fenchel_young_matches_its_closed_form_on_a_two_way_argmax():
    """Two-way argmax, s > 0: with e_j = exp(sigma Z_j - sigma^2/2), tilting Z_0 by e_0 shifts its
    mean by sigma, so E[e_0 1{s_0 e_0 > s_1 e_1}] = Phi((sigma - c) / sqrt 2) with
    c = log(s_1 / s_0) / sigma, and E[e_1 1{...}] = Phi((sigma + c) / sqrt 2). The gradient is that
    vector minus y_true, and F(s) = <s, grad F(s)> (F is positively homogeneous)."""
    sigma, samples = 0.8, 200_000
    theta = torch.tensor([1.5, 1.0], dtype=torch.float64, requires_grad=True)
    y_true = torch.tensor([0.0, 1.0], dtype=torch.float64)
    loss = cg.losses.fenchel_young(
        theta, y_true, solver="argmax", multiplicative=True, noise_scale=sigma, samples=samples,
        generator=torch.Generator().manual_seed(0),
    )
    (grad,) = torch.autograd.grad(loss, theta)
    c = math.log(theta[1].item() / theta[0].item()) / sigma
    expected_f = torch.tensor([phi((sigma - c) / math.sqrt(2)), phi((sigma + c) / math.sqrt(2))], dtype=torch.float64)
    expected_value = (theta.detach() * expected_f).sum() - theta.detach() @ y_true
    # Per-sample terms from the same draws give the standard errors (5 SE: a 1-in-1.7-million miss).
    z = draw_noise("normal", samples, theta.detach(), generator=torch.Generator().manual_seed(0))
    e = torch.exp(sigma * z - sigma**2 / 2)
    y = torch.nn.functional.one_hot((theta.detach() * e).argmax(-1), 2).to(torch.float64)
    gradient_terms = e * y
    value_terms = (theta.detach() * e * (y - y_true)).sum(-1)
    assert torch.allclose(grad, gradient_terms.mean(0) - y_true, atol=1e-12)  # InferOpt's mean e_i y_i - y_true
    assert bool(((grad - (expected_f - y_true)).abs() <= 5 * gradient_terms.std(0) / math.sqrt(samples)).all())
    assert abs(loss.item() - expected_value.item()) <= 5 * value_terms.std().item() / math.sqrt(samples)
    assert expected_value > 0.3


def test_multiplicative_fenchel_young_matches_pyepo_perturbed_fenchel_young_mul():
    """PyEPO's perturbedFenchelYoungMul (a "min" model, its 5x5 shortestPathModel) with the same noise.

    PyEPO draws torch.randn((b, S, d)) from a generator seeded with its ``seed``; combgrad's draws
    are patched to those values ([S, b, d]). Multiplication commutes with the score sign, so
    ``Z`` is the same in both (no negation). The gradient is identical; the values differ by the
    known ``<theta, y_true (mean_i e_i - 1)>``: combgrad's terms ``<s e_i, y_i - y_true>`` are each
    >= 0, PyEPO's ``F - <theta, y_true>`` has the same expectation (E e = 1)."""
    pytest.importorskip("pyepo")
    pytest.importorskip("gurobipy")
    from pyepo.func import perturbedFenchelYoungMul
    from pyepo.model.grb import shortestPathModel

    import sys

    # The package exports the function under the module's name, so take the module itself.
    fenchel_young_module = sys.modules["combgrad.gradients.losses.fenchel_young"]

    optmodel = shortestPathModel(grid=(5, 5))
    arcs = list(optmodel.arcs)
    graph_solver = PyEPOGridDP(arcs)
    batch, samples, sigma, seed = 3, 5, 0.7, 135
    generator = torch.Generator().manual_seed(1)
    costs = torch.rand(batch, 40, generator=generator, dtype=torch.float64) * 2 + 0.1
    true_paths = graph_solver(costs.flip(0))  # feasible targets that differ from the predictions' paths
    noise = torch.randn((batch, samples, 40), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)

    reference = perturbedFenchelYoungMul(optmodel, n_samples=samples, sigma=sigma, seed=seed, reduction="none")
    reference_costs = costs.clone().requires_grad_()
    reference_loss = reference(reference_costs, true_paths)
    (reference_grad,) = torch.autograd.grad(reference_loss.sum(), reference_costs)

    patched = pytest.MonkeyPatch()
    patched.setattr(fenchel_young_module, "draw_noise", lambda *args, **kwargs: noise.transpose(0, 1))
    try:
        ours = costs.clone().requires_grad_()
        loss = cg.losses.fenchel_young(ours, true_paths, solver=graph_solver, multiplicative=True,
                                       noise_scale=sigma, samples=samples)
        (grad,) = torch.autograd.grad(loss.sum(), ours)
    finally:
        patched.undo()
    assert torch.allclose(grad, reference_grad.to(torch.float64), atol=1e-6)
    e = torch.exp(sigma * noise - sigma**2 / 2)  # [b, S, d]
    shift = (costs * true_paths * (e.mean(1) - 1)).sum(-1)
    assert torch.allclose(loss, reference_loss.detach().to(torch.float64) + shift, atol=1e-5)
    assert bool((loss >= 0).all()) and grad.abs().sum() > 0




@pytest.mark.parametrize("seed", [0, 1, 2])
def test_multiplicative_fenchel_young_is_non_negative_and_zero_when_confident(seed):
    generator = torch.Generator().manual_seed(seed)
    theta = torch.rand(4, 6, generator=generator, dtype=torch.float64) + 0.05
    y_true = cg.solvers.get("topk", k=2)(torch.randn(4, 6, generator=generator, dtype=torch.float64))
    loss = cg.losses.fenchel_young(theta, y_true, solver="topk", k=2, multiplicative=True, samples=3, generator=generator)
    assert loss.shape == (4,) and bool((loss >= 0).all()) and loss.sum() > 0
    confident = torch.where(y_true > 0, 1e4, 1.0).to(torch.float64)
    value = cg.losses.fenchel_young(confident, y_true, solver="topk", k=2, multiplicative=True, noise_scale=0.3)
    assert torch.equal(value, torch.zeros(4, dtype=torch.float64))


def test_multiplicative_fenchel_young_bad_inputs():
    y_true = torch.tensor([[0.0, 1.0, 0.0]])
    with pytest.raises(ValueError, match="fenchel_young: theta must be > 0 everywhere with multiplicative=True"):
        cg.losses.fenchel_young(torch.tensor([[1.0, -1.0, 2.0]]), y_true, solver="argmax", multiplicative=True)
    with pytest.raises(ValueError, match="fenchel_young: multiplicative=True needs noise='normal'"):
        cg.losses.fenchel_young(torch.ones(1, 3), y_true, solver="argmax", multiplicative=True, noise="gumbel")
    with pytest.raises(ValueError, match="fenchel_young: multiplicative must be True or False, got 'yes'"):
        cg.losses.fenchel_young(torch.ones(1, 3), y_true, solver="argmax", multiplicative="yes")

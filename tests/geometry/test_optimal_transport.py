"""Tests for combgrad/geometry/optimal_transport.py: reference values, POT, gradients, memory, errors."""

from __future__ import annotations

import doctest
import importlib

import numpy as np
import pytest
import torch

import combgrad as cg
from combgrad.geometry.optimal_transport import SinkhornResult

# The package exports the function `sinkhorn`, which shadows the module's attribute name.
optimal_transport_module = importlib.import_module("combgrad.geometry.optimal_transport")

ot = pytest.importorskip("ot")

TIGHT = {"tol": 1e-12, "max_iter": 100_000}


def seed_points(batch: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The seeds' five points [i, 0] against [i, 1] (optionally shifted by 1..batch)."""
    x = torch.tensor([[float(i), 0.0] for i in range(5)])
    if batch is None:
        return x, x + torch.tensor([0.0, 1.0])
    shifts = torch.arange(1, batch + 1, dtype=torch.float32)
    y = x.expand(batch, 5, 2).clone()
    y[..., 1] = shifts[:, None]
    return x.expand(batch, 5, 2).clone(), y


def random_problem(n: int, m: int, seed: int, batch: tuple[int, ...] = ()):
    """Random weights and a squared-distance cost between unit-square points (float64)."""
    rng = np.random.default_rng(seed)
    x = rng.random((*batch, n, 2))
    y = rng.random((*batch, m, 2))
    a = rng.random((*batch, n)) + 0.1
    b = rng.random((*batch, m)) + 0.1
    a /= a.sum(-1, keepdims=True)
    b /= b.sum(-1, keepdims=True)
    C = ((x[..., :, None, :] - y[..., None, :, :]) ** 2).sum(-1)
    return a, b, C


# --- the seeds' reference values -------------------------------------------------------


@pytest.mark.parametrize("eps, expected", [(0.1, 1.000), (1.0, 1.408)])
def test_seed_five_points(eps, expected):
    x, y = seed_points()
    dist, P, C = cg.geometry.SinkhornDistance(eps=eps, max_iter=100, reduction=None)(x, y)
    assert dist.shape == () and P.shape == (5, 5) and C.shape == (5, 5)
    assert round(dist.item(), 3) == pytest.approx(expected, abs=1e-9)
    torch.testing.assert_close(C, torch.cdist(x, y) ** 2)
    torch.testing.assert_close(P.sum(0), torch.full((5,), 0.2), atol=1e-4, rtol=0)
    if eps == 0.1:  # the walkthrough's coupling: each point moves straight up
        torch.testing.assert_close(P, torch.eye(5) / 5, atol=1e-4, rtol=0)


def test_seed_batch_of_shifted_pairs():
    x, y = seed_points(batch=4)
    dist, P, C = cg.geometry.SinkhornDistance(eps=0.1, max_iter=100)(x, y)
    assert P.shape == (4, 5, 5) and C.shape == (4, 5, 5)
    torch.testing.assert_close(dist, torch.tensor([1.0, 4.0, 9.0, 16.0]), atol=2e-3, rtol=0)
    mean, _, _ = cg.geometry.SinkhornDistance(eps=0.1, max_iter=100, reduction="mean")(x, y)
    total, _, _ = cg.geometry.SinkhornDistance(eps=0.1, max_iter=100, reduction="sum")(x, y)
    torch.testing.assert_close(mean, dist.mean())
    torch.testing.assert_close(total, dist.sum())


# --- agreement with POT and with exact OT ------------------------------------------------


@pytest.mark.parametrize("n, m", [(1, 4), (7, 9), (30, 20)])
@pytest.mark.parametrize("eps", [1.0, 0.1, 0.02])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_pot_log_sinkhorn(n, m, eps, seed):
    a, b, C = random_problem(n, m, seed)
    plan_ref = ot.sinkhorn(a, b, C, eps, method="sinkhorn_log", stopThr=1e-13, numItermax=100_000)
    cost_ref = ot.sinkhorn2(a, b, C, eps, method="sinkhorn_log", stopThr=1e-13, numItermax=100_000)
    kl = float((plan_ref * np.log(plan_ref / np.outer(a, b))).sum())
    out = cg.geometry.sinkhorn(torch.tensor(a), torch.tensor(b), torch.tensor(C), eps, **TIGHT)
    assert isinstance(out, SinkhornResult)
    np.testing.assert_allclose(out.plan.numpy(), plan_ref, atol=1e-10)
    assert out.cost.item() == pytest.approx(float(cost_ref), rel=1e-9, abs=1e-12)
    # value is the regularized objective <P, C> + eps KL(P | a b^T).
    assert out.value.item() == pytest.approx(float(cost_ref) + eps * kl, rel=1e-9, abs=1e-12)
    assert out.error.item() < 1e-12
    # the potentials give the plan: P = a b^T exp((f + g - C) / eps)
    rebuilt = np.outer(a, b) * np.exp((out.f.numpy()[:, None] + out.g.numpy()[None, :] - C) / eps)
    np.testing.assert_allclose(rebuilt, plan_ref, atol=1e-10)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_float32_matches_pot(seed):
    a, b, C = random_problem(50, 40, seed)
    cost_ref = float(ot.sinkhorn2(a, b, C, 0.05, method="sinkhorn_log", stopThr=1e-13, numItermax=100_000))
    out = cg.geometry.sinkhorn(torch.tensor(a, dtype=torch.float32), torch.tensor(b, dtype=torch.float32),
                               torch.tensor(C, dtype=torch.float32), 0.05, tol=1e-5)
    assert out.value.dtype == torch.float32 and out.error.item() < 1e-5
    assert out.cost.item() == pytest.approx(cost_ref, rel=1e-4)


@pytest.mark.parametrize("seed", [0, 1])
def test_approaches_exact_transport_as_eps_shrinks(seed):
    a, b, C = random_problem(12, 10, seed)
    exact = float(ot.emd2(a, b, C))
    # 0 <= <P_eps, C> - OT <= eps KL(P_opt | a b^T) <= eps min(H(a), H(b)): the entropic
    # plan is feasible, and it beats the optimal plan on the regularized objective.
    entropy = min(-(a * np.log(a)).sum(), -(b * np.log(b)).sum())
    gaps = []
    for eps in [0.3, 0.1, 0.03, 0.01, 0.003]:
        out = cg.geometry.sinkhorn(torch.tensor(a), torch.tensor(b), torch.tensor(C), eps, tol=1e-10,
                                   max_iter=200_000)
        gaps.append(out.cost.item() - exact)
        assert -1e-9 <= gaps[-1] <= eps * entropy
    assert all(later < earlier for earlier, later in zip(gaps, gaps[1:]))
    assert gaps[-1] < 0.01 * gaps[0]


# --- gradients ---------------------------------------------------------------------------


def test_gradcheck_value_float64():
    generator = torch.Generator().manual_seed(0)
    C = torch.rand(2, 4, 5, dtype=torch.float64, generator=generator, requires_grad=True)
    a = torch.softmax(torch.randn(2, 4, dtype=torch.float64, generator=generator), -1).requires_grad_()
    b = torch.softmax(torch.randn(5, dtype=torch.float64, generator=generator), -1).requires_grad_()

    def value(a, b, C):
        return cg.geometry.sinkhorn(a, b, C, 0.2, **TIGHT).value

    assert torch.autograd.gradcheck(value, (a, b, C), eps=1e-6, atol=1e-8, rtol=1e-6)


def test_envelope_gradients_are_plan_and_centred_potentials():
    a, b, C = (torch.tensor(t, requires_grad=True) for t in random_problem(6, 8, 3))
    out = cg.geometry.sinkhorn(a, b, C, 0.1, **TIGHT)
    out.value.backward()
    torch.testing.assert_close(C.grad, out.plan)
    torch.testing.assert_close(a.grad, out.f - (out.f * a).sum())
    torch.testing.assert_close(b.grad, out.g - (out.g * b).sum())
    # outputs other than value and cost carry no gradient
    assert not (out.plan.requires_grad or out.f.requires_grad or out.g.requires_grad)


@pytest.mark.parametrize("seed", [0, 1])
def test_gradient_matches_finite_differences_of_value(seed):
    """SinkhornDistance's gradient in x is the derivative of OT_eps(x) (central differences)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(6, 2, dtype=torch.float64, generator=generator, requires_grad=True)
    y = torch.rand(5, 2, dtype=torch.float64, generator=generator)
    eps = 0.05
    dist, _, _ = cg.geometry.SinkhornDistance(eps=eps, **TIGHT)(x, y)
    dist.backward()

    def regularized_value(points):
        return cg.geometry.sinkhorn(None, None, torch.cdist(points, y) ** 2, eps, **TIGHT).value.item()

    step = 1e-6
    numeric = torch.zeros_like(x)
    for index in np.ndindex(*x.shape):
        shift = torch.zeros_like(x)
        shift[index] = step
        numeric[index] = (regularized_value(x.detach() + shift) - regularized_value(x.detach() - shift)) / (2 * step)
    torch.testing.assert_close(x.grad, numeric, atol=1e-7, rtol=1e-6)


def test_divergence_gradient_matches_finite_differences():
    generator = torch.Generator().manual_seed(4)
    x = torch.rand(5, 2, dtype=torch.float64, generator=generator, requires_grad=True)
    y = torch.rand(4, 2, dtype=torch.float64, generator=generator, requires_grad=True)
    a = torch.softmax(torch.randn(5, dtype=torch.float64, generator=generator), 0).requires_grad_()
    b = torch.full((4,), 0.25, dtype=torch.float64)

    def divergence(x, y, a):
        return cg.geometry.sinkhorn_divergence(x, y, 0.1, a=a, b=b, **TIGHT)

    assert torch.autograd.gradcheck(divergence, (x, y, a), eps=1e-6, atol=1e-8, rtol=1e-6)


# --- batching, symmetric problems, the divergence ------------------------------------


@pytest.mark.parametrize("eps_scaling", [None, 0.5])
def test_batch_matches_loop(eps_scaling):
    a, b, C = (torch.tensor(t) for t in random_problem(9, 7, 5, batch=(2, 3)))
    batched = cg.geometry.sinkhorn(a, b, C, 0.05, tol=1e-11, max_iter=100_000, eps_scaling=eps_scaling)
    assert batched.value.shape == (2, 3) and batched.plan.shape == (2, 3, 9, 7)
    for index in np.ndindex(2, 3):
        single = cg.geometry.sinkhorn(a[index], b[index], C[index], 0.05, tol=1e-11, max_iter=100_000)
        torch.testing.assert_close(batched.value[index], single.value, atol=1e-10, rtol=1e-9)
        torch.testing.assert_close(batched.plan[index], single.plan, atol=1e-10, rtol=1e-8)


def test_batched_points_match_loop():
    generator = torch.Generator().manual_seed(6)
    x = torch.rand(3, 8, 3, generator=generator)
    y = torch.rand(3, 6, 3, generator=generator)
    module = cg.geometry.SinkhornDistance(eps=0.05, max_iter=2000, tol=1e-6)
    dist, P, C = module(x, y)
    for i in range(3):
        dist_i, P_i, C_i = module(x[i], y[i])
        torch.testing.assert_close(dist[i], dist_i)
        torch.testing.assert_close(P[i], P_i)
        torch.testing.assert_close(C[i], C_i)


def test_shared_weights_broadcast_over_batch():
    a, b, C = (torch.tensor(t) for t in random_problem(4, 6, 7, batch=(3,)))
    shared = cg.geometry.sinkhorn(a[0], b[0], C, 0.1, **TIGHT)
    expanded = cg.geometry.sinkhorn(a[0].expand(3, 4), b[0].expand(3, 6), C, 0.1, **TIGHT)
    torch.testing.assert_close(shared.value, expanded.value)


def test_zero_weights_give_zero_rows():
    a = torch.tensor([0.5, 0.0, 0.5], dtype=torch.float64)
    b = torch.tensor([0.25, 0.75], dtype=torch.float64)
    C = torch.tensor([[0.0, 1.0], [2.0, 0.5], [1.0, 0.0]], dtype=torch.float64)
    out = cg.geometry.sinkhorn(a, b, C, 0.1, **TIGHT)
    assert torch.equal(out.plan[1], torch.zeros(2, dtype=torch.float64))
    # a point without mass is the same as no point
    kept = [0, 2]
    reference = ot.sinkhorn(a[kept].numpy(), b.numpy(), C[kept].numpy(), 0.1, method="sinkhorn_log", stopThr=1e-13)
    np.testing.assert_allclose(out.plan[kept].numpy(), reference, atol=1e-12)
    assert torch.isfinite(out.f).all() and torch.isfinite(out.value)


@pytest.mark.parametrize("eps_scaling", [None, 0.5])
def test_small_eps_does_not_overflow(eps_scaling):
    # C / eps reaches 400: the float32 kernel exp(-C / eps) is 0, the log domain is fine.
    a, b, C = random_problem(20, 20, 8)
    C = 100.0 * C
    out = cg.geometry.sinkhorn(*(torch.tensor(t, dtype=torch.float32) for t in (a, b, C)), 0.3,
                               max_iter=5000, tol=1e-4, eps_scaling=eps_scaling)
    assert torch.isfinite(out.value) and torch.isfinite(out.plan).all() and out.error.item() < 1e-4
    reference = float(ot.sinkhorn2(a, b, C, 0.3, method="sinkhorn_log", stopThr=1e-12, numItermax=100_000))
    assert out.cost.item() == pytest.approx(reference, rel=1e-3)
    assert out.cost.item() >= float(ot.emd2(a, b, C)) * (1 - 1e-4)


def test_symmetric_update_matches_plain_solver():
    generator = torch.Generator().manual_seed(9)
    x = torch.rand(2, 10, 2, dtype=torch.float64, generator=generator)
    C = torch.cdist(x, x) ** 2
    options = optimal_transport_module.SinkhornOptions.create("test", 0.05, 100_000, 1e-12, None)
    symmetric = optimal_transport_module._run("test", None, None, C, options, symmetric=True)
    plain = cg.geometry.sinkhorn(None, None, C, 0.05, **TIGHT)
    torch.testing.assert_close(symmetric.value, plain.value, atol=1e-10, rtol=1e-10)
    assert symmetric.iterations < plain.iterations


def test_divergence_properties():
    generator = torch.Generator().manual_seed(10)
    x = torch.rand(3, 12, 2, generator=generator, dtype=torch.float64)
    y = torch.rand(3, 9, 2, generator=generator, dtype=torch.float64)
    same = cg.geometry.sinkhorn_divergence(x, x, 0.1, **TIGHT)
    torch.testing.assert_close(same, torch.zeros(3, dtype=torch.float64), atol=1e-10, rtol=0)
    different = cg.geometry.sinkhorn_divergence(x, y, 0.1, **TIGHT)
    assert different.shape == (3,) and bool((different > 0).all())
    shifted = cg.geometry.sinkhorn_divergence(x[0], x[0] + torch.tensor([1.0, 0.0], dtype=torch.float64), 0.1,
                                              **TIGHT)
    assert shifted.shape == () and shifted.item() == pytest.approx(1.0, rel=1e-9)  # a translation costs |t|^2
    # against a direct computation from POT's log-domain solver
    for i in range(3):
        terms = []
        for u, v in ((x[i], y[i]), (x[i], x[i]), (y[i], y[i])):
            wu = np.full(len(u), 1 / len(u))
            wv = np.full(len(v), 1 / len(v))
            C = ot.dist(u.numpy(), v.numpy())
            P = ot.sinkhorn(wu, wv, C, 0.1, method="sinkhorn_log", stopThr=1e-13, numItermax=100_000)
            terms.append((P * C).sum() + 0.1 * (P * np.log(P / np.outer(wu, wv))).sum())
        assert different[i].item() == pytest.approx(terms[0] - 0.5 * (terms[1] + terms[2]), rel=1e-8, abs=1e-12)


@pytest.mark.parametrize("p", [1.0, 1.5, 3.0])
def test_power_cost(p):
    generator = torch.Generator().manual_seed(11)
    x = torch.rand(6, 3, dtype=torch.float64, generator=generator)
    y = torch.rand(7, 3, dtype=torch.float64, generator=generator)
    dist, P, C = cg.geometry.SinkhornDistance(eps=0.05, p=p, **TIGHT)(x, y)
    torch.testing.assert_close(C, torch.cdist(x, y) ** p)
    reference = ot.sinkhorn2(np.full(6, 1 / 6), np.full(7, 1 / 7), C.numpy(), 0.05, method="sinkhorn_log",
                             stopThr=1e-13, numItermax=100_000)
    assert dist.item() == pytest.approx(float(reference), rel=1e-9)


def test_stops_at_max_iter_and_reports_error():
    a, b, C = (torch.tensor(t) for t in random_problem(30, 30, 12))
    with pytest.warns(cg.ConvergenceWarning, match="max_iter=3"):
        out = cg.geometry.sinkhorn(a, b, C, 0.005, max_iter=3, tol=1e-12)
    assert out.iterations == 3 and not bool(out.converged) and out.error.item() > 1e-12
    # the reported error is the actual marginal error of the returned plan
    actual = max((out.plan.sum(-1) - a).abs().sum().item(), (out.plan.sum(-2) - b).abs().sum().item())
    assert out.error.item() == pytest.approx(actual, rel=1e-6)


# --- memory ----------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::combgrad.ConvergenceWarning")  # 20 iterations, on purpose
def test_peak_memory_is_at_most_three_cost_matrices(allocation_peak):
    B, N, M = 8, 200, 150
    x = torch.rand(B, N, 2, requires_grad=True)
    y = torch.rand(B, M, 2, requires_grad=True)
    cube = B * N * M * 4  # bytes of one float32 [B, N, M] tensor

    def forward_backward():
        dist, P, C = cg.geometry.SinkhornDistance(eps=0.05, max_iter=20)(x, y)  # C, P stay alive
        dist.sum().backward()

    peak, alive = allocation_peak(forward_backward)
    assert peak > 0, "the profiler recorded no allocations"
    assert sum(size >= cube for size in alive) <= 3  # C, the plan, the gradient of C
    # everything else is [B, N + M, D + 2]-sized, under 0.15 of a cube here
    assert peak <= 3.15 * cube


# --- bad inputs ------------------------------------------------------------------------


def test_bad_points():
    module = cg.geometry.SinkhornDistance()
    with pytest.raises(ValueError, match="same batch size"):
        module(torch.rand(2, 4, 2), torch.rand(3, 4, 2))
    with pytest.raises(ValueError, match="same batch size"):
        module(torch.rand(4, 2), torch.rand(1, 4, 2))
    with pytest.raises(ValueError, match="same feature size D, got 2 and 3"):
        module(torch.rand(4, 2), torch.rand(4, 3))
    with pytest.raises(ValueError, match="x must be finite"):
        module(torch.tensor([[0.0, float("nan")]]), torch.rand(3, 2))
    with pytest.raises(ValueError, match="y must be finite"):
        module(torch.rand(3, 2), torch.tensor([[0.0, float("inf")]]))
    with pytest.raises(ValueError, match=r"shape \[N, D\] or \[B, N, D\]"):
        module(torch.rand(1, 2, 4, 2), torch.rand(1, 2, 4, 2))
    with pytest.raises(ValueError, match="C must be finite"):  # squares overflow float32
        module(torch.tensor([[3e30, 0.0]]), torch.tensor([[-3e30, 0.0]]))
    with pytest.raises(ValueError, match="same batch size"):
        cg.geometry.sinkhorn_divergence(torch.rand(2, 4, 2), torch.rand(4, 2), 0.1)


@pytest.mark.parametrize("eps", [0.0, -1.0, float("nan"), float("inf"), "0.1", True])
def test_bad_eps(eps):
    with pytest.raises(ValueError, match="eps must be a finite number > 0"):
        cg.geometry.SinkhornDistance(eps=eps)
    with pytest.raises(ValueError, match="eps must be a finite number > 0"):
        cg.geometry.sinkhorn(None, None, torch.rand(3, 3), eps)
    with pytest.raises(ValueError, match="eps must be a finite number > 0"):
        cg.geometry.sinkhorn_divergence(torch.rand(3, 2), torch.rand(3, 2), eps)


def test_bad_weights():
    C = torch.rand(3, 4)
    with pytest.raises(ValueError, match="a must sum to one"):
        cg.geometry.sinkhorn(torch.ones(3), None, C, 0.1)
    with pytest.raises(ValueError, match="b must sum to one"):
        cg.geometry.sinkhorn(None, torch.full((4,), 0.3), C, 0.1)
    with pytest.raises(ValueError, match="a must be non-negative"):
        cg.geometry.sinkhorn(torch.tensor([0.6, 0.6, -0.2]), None, C, 0.1)
    with pytest.raises(ValueError, match=r"a must have shape \(3,\) or \(2, 3\)"):
        cg.geometry.sinkhorn(torch.full((4,), 0.25), None, torch.rand(2, 3, 4), 0.1)
    with pytest.raises(ValueError, match="a must be finite"):
        cg.geometry.sinkhorn(torch.tensor([float("nan"), 0.5, 0.5]), None, C, 0.1)
    with pytest.raises(ValueError, match="b must sum to one"):
        cg.geometry.sinkhorn_divergence(torch.rand(3, 2), torch.rand(4, 2), 0.1, b=torch.ones(4))


def test_bad_cost_and_options():
    with pytest.raises(ValueError, match="C must be finite"):
        cg.geometry.sinkhorn(None, None, torch.tensor([[0.0, float("inf")]]), 0.1)
    with pytest.raises(ValueError, match=r"C must have shape \[\*B, N, M\]"):
        cg.geometry.sinkhorn(None, None, torch.rand(3), 0.1)
    with pytest.raises(ValueError, match=r"C must have shape \[\*B, N, M\]"):
        cg.geometry.sinkhorn(None, None, torch.rand(3, 0), 0.1)
    with pytest.raises(ValueError, match="C must be a floating tensor"):
        cg.geometry.sinkhorn(None, None, torch.ones(2, 2, dtype=torch.int64), 0.1)
    with pytest.raises(TypeError, match="C must be a torch.Tensor"):
        cg.geometry.sinkhorn(None, None, [[0.0, 1.0]], 0.1)
    with pytest.raises(ValueError, match="max_iter must be an integer >= 1"):
        cg.geometry.sinkhorn(None, None, torch.rand(2, 2), 0.1, max_iter=0)
    with pytest.raises(ValueError, match="tol must be a finite number > 0"):
        cg.geometry.sinkhorn(None, None, torch.rand(2, 2), 0.1, tol=0.0)
    with pytest.raises(ValueError, match=r"eps_scaling must be a finite number > 0 and < 1"):
        cg.geometry.sinkhorn(None, None, torch.rand(2, 2), 0.1, eps_scaling=1.0)
    with pytest.raises(ValueError, match="reduction must be one of"):
        cg.geometry.SinkhornDistance(reduction="max")
    with pytest.raises(ValueError, match="p must be >= 1"):
        cg.geometry.SinkhornDistance(p=0.5)


def test_docstring_examples_run():
    results = doctest.testmod(optimal_transport_module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert results.attempted >= 3 and results.failed == 0


def test_positional_arguments_follow_the_seed_signature():
    # SinkhornDistance(eps, max_iter, reduction), as in the walkthrough the API comes from.
    x = torch.tensor([[float(i), 0.0] for i in range(5)])
    y = torch.tensor([[float(i), 1.0] for i in range(5)])
    dist, _, _ = cg.geometry.SinkhornDistance(1.0, 100, None)(x, y)
    assert dist.item() == pytest.approx(1.408, abs=1e-3)


# --- hardening (issue 8 item 1): an honest error, low precision, NaN, B = 0, strides ---


def marginal_error_float64(plan: torch.Tensor, a: torch.Tensor | None = None, b: torch.Tensor | None = None):
    """The L1 marginal error of ``plan [*B, N, M]`` per instance, recomputed in float64."""
    plan = plan.detach().double()
    n, m = plan.shape[-2:]
    a = torch.full((n,), 1.0 / n, dtype=torch.float64) if a is None else a.double()
    b = torch.full((m,), 1.0 / m, dtype=torch.float64) if b is None else b.double()
    rows = (plan.sum(-1) - a).abs().sum(-1)
    columns = (plan.sum(-2) - b).abs().sum(-1)
    return torch.maximum(rows, columns)


def far_apart_clouds(distance: float, n: int = 50, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 2, generator=generator)
    return x, torch.rand(n, 2, generator=generator) + distance


# eps = 1e-3 on these clouds needs more than 3000 iterations in any precision: these
# tests check the values and the honesty of the error, not convergence.
@pytest.mark.filterwarnings("ignore::combgrad.ConvergenceWarning")
def test_far_apart_float32_clouds_give_a_true_plan_and_an_honest_error():
    """Guards issue 8 item 1: float32 clouds 300 apart at eps=1e-3 returned 8.96e6 with
    P.sum() == 50 and a reported error of 0 (C / eps ~ 2e8 does not fit float32)."""
    x, y = far_apart_clouds(300.0)
    dist, P, C = cg.geometry.SinkhornDistance(eps=1e-3, max_iter=3000)(x, y)
    dist64, _, _ = cg.geometry.SinkhornDistance(eps=1e-3, max_iter=3000)(x.double(), y.double())
    assert dist64.item() == pytest.approx(1.80e5, rel=1e-2)
    # C itself is rounded to float32 (1e-7 relative): the OT value moves by about as much.
    assert dist.item() == pytest.approx(dist64.item(), rel=1e-5)
    assert P.sum().item() == pytest.approx(1.0, abs=1e-4)
    out = cg.geometry.sinkhorn(None, None, C, 1e-3, max_iter=3000)
    actual = marginal_error_float64(out.plan)
    # The reported error is the returned plan's own (float32 sums: within 1e-6 absolute).
    torch.testing.assert_close(out.error.double(), actual, atol=1e-6, rtol=1e-3)
    assert bool(out.converged) == (out.error.item() < 1e-5)


@pytest.mark.parametrize("dtype, eps", [(torch.float16, 1e-2), (torch.bfloat16, 0.1), (torch.bfloat16, 1e-2)])
def test_half_precision_is_solved_in_float32(dtype, eps):
    """Guards issue 8 item 1: float16 failed from eps ~ 1e-2 and bfloat16 at eps = 0.1."""
    x, y = far_apart_clouds(1.0, n=40, seed=1)
    x, y = x.to(dtype), y.to(dtype)
    dist, P, C = cg.geometry.SinkhornDistance(eps=eps, max_iter=5000)(x, y)
    assert dist.dtype == P.dtype == C.dtype == dtype
    # The reference solves the same (rounded) points in float64.
    reference, P64, _ = cg.geometry.SinkhornDistance(eps=eps, max_iter=5000)(x.double(), y.double())
    resolution = 4 * torch.finfo(dtype).eps  # the output's own rounding
    assert dist.item() == pytest.approx(reference.item(), rel=resolution)
    assert P.double().sum().item() == pytest.approx(1.0, rel=resolution)
    assert (P.double() - P64).abs().max().item() < resolution / 40
    out = cg.geometry.sinkhorn(None, None, C, eps, max_iter=5000)
    assert out.value.dtype == dtype and bool(out.converged)


@pytest.mark.parametrize(
    "C, eps, converges",
    [
        (torch.full((3, 3), 1e36), 1e-3, True),  # C / eps overflows float32: every entry -inf
        (torch.tensor([[0.0, 1e36], [1e36, 0.0]]), 1e-3, True),
        (torch.tensor([[3e38, -3e38], [-3e38, 3e38]]), 1.0, True),  # C - min(C) overflows float32
        # C / eps ~ 1e39 is unregularized transport: Sinkhorn cannot get there, but says so.
        (torch.rand(4, 5, generator=torch.Generator().manual_seed(0)) * 1e36, 1e-3, False),
    ],
)
def test_finite_costs_never_give_nan(C, eps, converges):
    """Guards issue 8 item 1: C = 1e36 (float32) gave NaN from a row of -inf (-inf - -inf)."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", cg.ConvergenceWarning)
        out = cg.geometry.sinkhorn(None, None, C, eps, max_iter=2000)
    for tensor in (out.value, out.cost, out.plan, out.f, out.g, out.error):
        assert torch.isfinite(tensor).all()
    assert out.plan.dtype == torch.float32
    assert bool(out.converged) == converges and len(caught) == (0 if converges else 1)
    assert out.plan.double().sum().item() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.filterwarnings("ignore::combgrad.ConvergenceWarning")
def test_far_apart_float16_clouds_do_not_give_nan():
    """Guards issue 8 item 1: float16 clouds 10 apart at eps=1e-3 returned NaN."""
    x, y = far_apart_clouds(10.0, n=30, seed=2)
    dist, P, C = cg.geometry.SinkhornDistance(eps=1e-3, max_iter=3000)(x.half(), y.half())
    assert torch.isfinite(dist) and torch.isfinite(P).all()
    reference, _, _ = cg.geometry.SinkhornDistance(eps=1e-3, max_iter=3000)(x.half().double(), y.half().double())
    assert dist.item() == pytest.approx(reference.item(), rel=2e-3)


def test_max_iter_above_tol_warns_and_reports_per_instance():
    """Guards issue 8 item 1: stopping at max_iter above tol was silent."""
    _, _, easy = random_problem(8, 8, 20)
    _, _, hard = random_problem(8, 8, 21)
    # The same loop runs both; eps 1.0 converges in a few iterations, 1e-3 (via 1000 x C) does not.
    C = torch.stack([torch.tensor(easy), 1000.0 * torch.tensor(hard)])
    with pytest.warns(cg.ConvergenceWarning, match=r"max_iter=20 .*marginal error [0-9.e+-]+ above tol=1e-05"):
        out = cg.geometry.sinkhorn(None, None, C, 1.0, max_iter=20)
    assert out.converged.dtype == torch.bool and out.converged.shape == (2,)
    assert out.converged.tolist() == [True, False]
    assert out.error[0].item() < 1e-5 < out.error[1].item()
    with pytest.warns(cg.ConvergenceWarning, match="SinkhornDistance"):
        cg.geometry.SinkhornDistance(eps=1e-3, max_iter=5)(torch.rand(6, 2), torch.rand(6, 2))
    with pytest.warns(cg.ConvergenceWarning, match="sinkhorn_divergence"):
        cg.geometry.sinkhorn_divergence(torch.rand(6, 2), torch.rand(6, 2), 1e-3, max_iter=5)


def test_converged_solve_does_not_warn():
    import warnings

    x, y = seed_points()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = cg.geometry.sinkhorn(None, None, torch.cdist(x, y) ** 2, 0.1)
    assert out.converged.shape == () and bool(out.converged)


@pytest.mark.parametrize("dim", [2, 3, 10])
@pytest.mark.parametrize("n", [10, 100, 500])
def test_default_max_iter_reaches_tol_on_unit_clouds(dim, n):
    """Guards issue 8 item 1: the default max_iter (100) stopped above tol on unit-cube
    clouds at the default eps (10 points in 10 dims need ~400 iterations)."""
    import warnings

    for seed in range(5):
        generator = torch.Generator().manual_seed(seed)
        x, y = torch.rand(2, n, dim, generator=generator).unbind(0)
        with warnings.catch_warnings():
            warnings.simplefilter("error", cg.ConvergenceWarning)
            _, P, _ = cg.geometry.SinkhornDistance()(x, y)
        assert marginal_error_float64(P).item() < 1e-5


def test_transposed_cost_matrix():
    """Guards issue 8 item 1: a non-contiguous C raised 'view size is not compatible'."""
    generator = torch.Generator().manual_seed(3)
    C = torch.rand(2, 7, 5, generator=generator).transpose(-1, -2)
    assert not C.is_contiguous()
    out = cg.geometry.sinkhorn(None, None, C, 0.1)
    reference = cg.geometry.sinkhorn(None, None, C.contiguous(), 0.1)
    for ours, theirs in zip(out[:6], reference[:6]):
        torch.testing.assert_close(ours, theirs)
    leaf = C.detach().clone().transpose(-1, -2).requires_grad_()  # a transposed leaf
    cg.geometry.sinkhorn(None, None, leaf.transpose(-1, -2), 0.1).value.sum().backward()
    torch.testing.assert_close(leaf.grad.transpose(-1, -2), out.plan)


def test_empty_batch_returns_empty_results():
    """Guards issue 8 item 1: a B = 0 batch was refused (solvers return empty results)."""
    C = torch.rand(0, 3, 4, requires_grad=True)
    out = cg.geometry.sinkhorn(None, None, C, 0.1)
    assert out.value.shape == out.cost.shape == out.error.shape == out.converged.shape == (0,)
    assert out.plan.shape == (0, 3, 4) and out.f.shape == (0, 3) and out.g.shape == (0, 4)
    out.value.sum().backward()
    assert C.grad.shape == (0, 3, 4)
    x, y = torch.rand(0, 3, 2, requires_grad=True), torch.rand(0, 4, 2)
    dist, P, C = cg.geometry.SinkhornDistance()(x, y)
    assert dist.shape == (0,) and P.shape == (0, 3, 4) and C.shape == (0, 3, 4)
    assert cg.geometry.SinkhornDistance(reduction="sum")(x, y)[0].item() == 0.0
    assert cg.geometry.sinkhorn_divergence(x, y, 0.1).shape == (0,)


def test_an_optimistic_estimate_is_not_taken_for_convergence():
    """Guards issue 8 item 1 at the solver: on the unshifted float32 cost of clouds 300
    apart the free error estimate reads 0 from iteration ~160 while the plan's mass is
    ~80; the solver must report the plan's own error and that rounding stalled it."""
    x, y = far_apart_clouds(300.0)
    C = (torch.cdist(x, y) ** 2).unsqueeze(0)  # deliberately not shifted (the public path shifts it)
    a = torch.full((1, 50), 0.02)
    options = optimal_transport_module.SinkhornOptions.create("test", 1e-3, 3000, 1e-5, None)
    solution = optimal_transport_module._solve(a, a, C, options, False)
    assert solution.stalled and solution.iterations < 3000
    torch.testing.assert_close(solution.error.double(), marginal_error_float64(solution.plan), rtol=1e-4, atol=0)
    assert solution.error.item() > 1.0
    with pytest.warns(cg.ConvergenceWarning, match=r"stalled after \d+ iterations .* solve in float64"):
        optimal_transport_module._warn_not_converged(
            "sinkhorn", options, solution.error, solution.error < options.tol, solution.iterations, True,
            torch.float32, 1,
        )


# --- devices and host reads ------------------------------------------------------------


def test_error_is_read_every_check_every_iterations(syncs):
    a, b, C = (torch.from_numpy(t) for t in random_problem(30, 40, seed=3))
    every = cg.geometry.sinkhorn(a, b, C, eps=0.01, tol=1e-8, check_every=1)
    reads_every = syncs.reads
    syncs.reads = 0
    sparse = cg.geometry.sinkhorn(a, b, C, eps=0.01, tol=1e-8)  # check_every=10
    reads_sparse = syncs.reads
    assert every.iterations > 50  # enough iterations for the reads to matter
    # The default stops at the first multiple of 10 at or after check_every=1's stop
    # (the error only falls), reading the error ~10x less often.
    assert sparse.iterations % 10 == 0 and every.iterations <= sparse.iterations < every.iterations + 10
    assert reads_sparse < reads_every / 4
    assert bool(sparse.converged.all()) and float(sparse.error.max()) < 1e-8
    torch.testing.assert_close(sparse.value, every.value, atol=1e-8, rtol=0)


def test_few_iteration_problems_stop_within_a_factor_two():
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    quick = cg.geometry.sinkhorn(None, None, torch.cdist(x, x) ** 2, eps=10.0, check_every=1)
    default = cg.geometry.sinkhorn(None, None, torch.cdist(x, x) ** 2, eps=10.0)
    assert quick.iterations < 10 and quick.iterations <= default.iterations < 2 * quick.iterations


@pytest.mark.parametrize("check_every", [0, 1.5, True])
def test_check_every_must_be_a_positive_int(check_every):
    with pytest.raises(ValueError, match=r"sinkhorn: check_every must be"):
        cg.geometry.sinkhorn(None, None, torch.zeros(2, 2), eps=1.0, check_every=check_every)
    with pytest.raises(ValueError, match=r"SinkhornDistance: check_every must be"):
        cg.geometry.SinkhornDistance(check_every=check_every)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_sinkhorn_heads_on_every_device(device, dtype):
    x, y = (torch.randn(2, 6, 2, generator=torch.Generator().manual_seed(s)) for s in (0, 1))
    results = {}
    for where in dict.fromkeys(("cpu", device)):
        xd = x.to(where, dtype).requires_grad_(True)
        dist, P, C = cg.geometry.SinkhornDistance(eps=0.5, reduction="sum")(xd, y.to(where, dtype))
        divergence = cg.geometry.sinkhorn_divergence(xd, y.to(where, dtype), eps=0.5).sum()
        (dist + divergence).backward()
        for value in (dist, P, C, divergence, xd.grad):
            assert value.device.type == where and value.dtype == dtype
        results[where] = [t.detach().cpu().double() for t in (dist, P, divergence, xd.grad)]
    # The same algorithm on both devices: reductions in another order round differently.
    tolerance = 1e-5 if dtype in (torch.float32, torch.float64) else 2e-2
    for on_device, on_cpu in zip(results[device], results["cpu"]):
        torch.testing.assert_close(on_device, on_cpu, atol=tolerance, rtol=tolerance)

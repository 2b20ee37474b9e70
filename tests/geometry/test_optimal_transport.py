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
    out = cg.geometry.sinkhorn(a, b, C, 0.005, max_iter=3, tol=1e-12)
    assert out.iterations == 3 and out.error.item() > 1e-12
    # the reported error is the actual marginal error of the returned plan
    actual = max((out.plan.sum(-1) - a).abs().sum().item(), (out.plan.sum(-2) - b).abs().sum().item())
    assert out.error.item() == pytest.approx(actual, rel=1e-6)


# --- memory ----------------------------------------------------------------------------


def allocation_peak(fn) -> tuple[int, int]:
    """Peak bytes allocated while ``fn`` runs, and how many allocations were alive then."""
    profiler_events = pytest.importorskip("torch._C._profiler")
    if not hasattr(profiler_events, "_EventType"):
        pytest.skip("this torch's profiler does not expose allocation events")
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events, stack = [], list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        event = stack.pop()
        if event.tag == profiler_events._EventType.Allocation:
            events.append((event.start_time_ns, event.extra_fields.alloc_size, event.extra_fields.ptr))
        stack.extend(event.children)
    alive: dict[int, int] = {}
    total = peak = 0
    peak_alive: list[int] = []
    for _, size, pointer in sorted(events):
        if size > 0:
            alive[pointer] = size
        else:
            alive.pop(pointer, None)
        total += size
        if total > peak:
            peak, peak_alive = total, list(alive.values())
    return peak, peak_alive


def test_peak_memory_is_at_most_three_cost_matrices():
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
    with pytest.raises(ValueError, match=r"eps_scaling must be in \(0, 1\)"):
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

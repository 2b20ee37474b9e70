"""Tests for combgrad/geometry/pqe.py: Poisson Quasimetric Embeddings."""

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from combgrad.geometry import PQE

VARIANTS = [
    pytest.param(("lebesgue", "halfline"), id="LH"),
    pytest.param(("gaussian", "halfline"), id="GH"),
    pytest.param(("gaussian", "gaussian"), id="GG"),
]


def make_pqe(variant, *, discounted=False, groups=8, processes=4, seed=0):
    torch.manual_seed(seed)
    measure, shape = variant
    return PQE(groups, processes, measure=measure, shape=shape, discounted=discounted).double()


def random_latents(count, size, seed, scale=1.0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(count, size, dtype=torch.float64, generator=generator) * scale


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("discounted", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_quasimetric_properties(variant, discounted, seed):
    pqe = make_pqe(variant, discounted=discounted, seed=seed)
    u, v, w = random_latents(3 * 300, 32, seed).split(300)
    with torch.no_grad():
        d_uv, d_vu, d_uw, d_vw, d_uu = pqe(u, v), pqe(v, u), pqe(u, w), pqe(v, w), pqe(u, u)
    assert d_uv.shape == (300,)
    if discounted:
        assert torch.all((d_uv > 0) & (d_uv <= 1))
        torch.testing.assert_close(d_uu, torch.ones_like(d_uu), rtol=0, atol=1e-15)
        # Discounted triangle inequality: gamma^d(u,w) >= gamma^d(u,v) * gamma^d(v,w).
        assert torch.all(d_uw >= d_uv * d_vw - 1e-12)
    else:
        assert torch.all(d_uv >= 0)
        torch.testing.assert_close(d_uu, torch.zeros_like(d_uu), rtol=0, atol=1e-15)
        assert torch.all(d_uw <= d_uv + d_vw + 1e-12)
    # Asymmetric: some pairs differ clearly in the two directions.
    assert (d_uv - d_vu).abs().max() > 1e-3


@pytest.mark.parametrize("variant", VARIANTS)
def test_triangle_inequality_on_near_ties_and_large_latents(variant):
    # Latents near each other (set differences near 0, where rounding could break
    # the inequality) and far out (Gaussian masses underflow).
    pqe = make_pqe(variant)
    base = random_latents(200, 32, 5)
    u = base
    v = base + 1e-6 * random_latents(200, 32, 6)
    w = base + 1e-3 * random_latents(200, 32, 7)
    far = random_latents(200, 32, 8, scale=30.0)
    with torch.no_grad():
        for a, b, c in ((u, v, w), (w, u, v), (far, u, w), (u, far, v)):
            d_ab, d_bc, d_ac = pqe(a, b), pqe(b, c), pqe(a, c)
            assert torch.isfinite(d_ac).all()
            assert torch.all(d_ac <= d_ab + d_bc + 1e-12)


def test_lebesgue_halfline_closed_form():
    # PQE-LH: E[pi_j] = 1 - exp(mean_i min(v_i - u_i, 0)), mixed by the learned weights.
    pqe = make_pqe(("lebesgue", "halfline"), groups=3, processes=2)
    u = torch.tensor([0.0, 0.0, 1.0, 2.0, 0.0, 5.0], dtype=torch.float64)
    v = torch.tensor([1.0, -1.0, 0.0, 0.0, 0.0, 5.0], dtype=torch.float64)
    expected_groups = torch.tensor([1 - np.exp(-0.5), 1 - np.exp((-1 - 2) / 2), 0.0], dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(pqe.expected_quasipartitions(u, v), expected_groups)
        weights = pqe.mixture_weights.matrix()[0]
        assert torch.all(weights >= 0)
        torch.testing.assert_close(pqe(u, v), (weights * expected_groups).sum())


def _gaussian_measure_set_differences(u, v, variance, shape):
    """mu(A(u) - A(v)) by numerical integration, independent of the closed forms."""
    density = stats.norm(scale=np.sqrt(variance)).pdf
    if shape == "halfline":
        # A(u) = (-inf, u]: the difference is the interval (v, u].
        return integrate.quad(density, v, u)[0] if u > v else 0.0
    # A(u) = region under the unit Gaussian density centred at u.
    gap = lambda t: density(t) * max(stats.norm.pdf(t - u) - stats.norm.pdf(t - v), 0.0)  # noqa: E731
    middle = (u + v) / 2  # the integrand has a kink there
    return integrate.quad(gap, -np.inf, middle)[0] + integrate.quad(gap, middle, np.inf)[0]


@pytest.mark.parametrize("shape", ["halfline", "gaussian"])
def test_gaussian_measure_matches_numerical_integration_and_scipy_cdf(shape):
    groups, processes = 2, 3
    pqe = make_pqe(("gaussian", shape), groups=groups, processes=processes, seed=3)
    with torch.no_grad():
        pqe.measure_log_variance.copy_(torch.linspace(-1, 1, groups * processes).view(groups, processes))
    u, v = random_latents(2, groups * processes, 11).unbind(0)
    variances = pqe.measure_log_variance.exp().reshape(-1).detach().numpy()
    u_minus_v = np.array(
        [_gaussian_measure_set_differences(a, b, s, shape) for a, b, s in zip(u, v, variances)]
    )
    v_minus_u = np.array(
        [_gaussian_measure_set_differences(b, a, s, shape) for a, b, s in zip(u, v, variances)]
    )
    scales = pqe.rate_scales.matrix().detach().numpy()
    rate_u = (scales @ u_minus_v).reshape(groups, processes) / processes
    rate_v = (scales @ v_minus_u).reshape(groups, processes) / processes
    expected = 1 - stats.skellam.cdf(0, rate_u, rate_v).prod(axis=-1)
    with torch.no_grad():
        ours = pqe.expected_quasipartitions(u, v).numpy()
    np.testing.assert_allclose(ours, expected, rtol=1e-7, atol=1e-12)
    assert np.all(expected > 1e-3)


def test_expected_quasipartition_matches_poisson_process_simulation():
    # The definition: pi = 1 unless every process counts at most as many points in
    # A(u) as in A(v); counts in the two set differences are independent Poissons.
    groups, processes = 2, 4
    pqe = make_pqe(("gaussian", "gaussian"), groups=groups, processes=processes, seed=4)
    u, v = random_latents(2, groups * processes, 12, scale=1.5).unbind(0)
    with torch.no_grad():
        a, b = pqe._set_difference_measures(u, v)
        scales = pqe.rate_scales.matrix()
        rate_u = ((scales @ a) / processes).view(groups, processes).numpy()
        rate_v = ((scales @ b) / processes).view(groups, processes).numpy()
        expected = pqe.expected_quasipartitions(u, v).numpy()
    rng = np.random.default_rng(0)
    samples = 200_000
    count_u = rng.poisson(rate_u, size=(samples, groups, processes))
    count_v = rng.poisson(rate_v, size=(samples, groups, processes))
    simulated = 1 - np.all(count_u <= count_v, axis=-1).mean(axis=0)
    # Binomial standard error <= 0.5 / sqrt(samples) = 1.1e-3; 5 of them never fail by chance.
    np.testing.assert_allclose(simulated, expected, atol=5 * 0.5 / np.sqrt(samples))


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("discounted", [False, True])
def test_gradcheck(variant, discounted):
    pqe = make_pqe(variant, discounted=discounted, groups=3, processes=2)
    u, v = random_latents(2 * 4, 6, 13).split(4)
    u.requires_grad_()
    v.requires_grad_()
    assert torch.autograd.gradcheck(pqe, (u, v))


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("discounted", [False, True])
def test_gradients_reach_every_parameter(variant, discounted):
    pqe = make_pqe(variant, discounted=discounted)
    u, v = random_latents(2 * 64, 32, 14).split(64)
    pqe(u, v).sum().backward()
    for name, parameter in pqe.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_discounted_output_starts_between_half_and_three_quarters(variant, seed):
    torch.manual_seed(seed)
    measure, shape = variant
    pqe = PQE(16, measure=measure, shape=shape, discounted=True)
    u, v = torch.randn(2, 2000, 64).unbind(0)
    with torch.no_grad():
        d = pqe(u, v)
    assert 0.5 <= d.mean().item() <= 0.75
    assert ((d >= 0.5) & (d <= 0.75)).float().mean() > 0.9


def test_discounted_gradient_is_finite_for_extreme_logits():
    pqe = make_pqe(("lebesgue", "halfline"), discounted=True)
    with torch.no_grad():
        pqe.discount_logits.bias.add_(-1e3)  # sigmoid(beta) underflows to 0
    u, v = random_latents(2 * 8, 32, 15).split(8)
    u.requires_grad_()
    d = pqe(u, v)
    d.sum().backward()
    assert torch.all(d >= 0) and torch.isfinite(u.grad).all()


def test_broadcasting_pairwise_and_dtypes():
    torch.manual_seed(0)
    pqe = PQE(16)
    x = torch.randn(5, 64)
    pairwise = pqe(x[:, None], x)
    assert pairwise.shape == (5, 5)
    torch.testing.assert_close(pairwise.diagonal(), torch.zeros(5))
    torch.testing.assert_close(pairwise[1, 3], pqe(x[1], x[3]))
    assert pqe(x[0], x[1]).shape == ()
    # A float32 module accepts float64 latents and answers in float64.
    assert pqe(x.double(), x.double().flip(0)).dtype == torch.float64


def test_repr_names_the_configuration():
    text = repr(PQE(4, 2, measure="gaussian", shape="gaussian", discounted=True))
    assert (
        "num_quasipartition_mixtures=4" in text and "shape='gaussian'" in text and "discounted=True" in text
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(measure="lebesgue", shape="gaussian"), "would be symmetric"),
        (dict(measure="counting"), "measure must be one of"),
        (dict(shape="box"), "shape must be one of"),
        (dict(discounted=1), "discounted must be True or False"),
        (
            dict(num_poisson_processes_per_quasipartition=0),
            "num_poisson_processes_per_quasipartition must be",
        ),
    ],
)
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PQE(4, **kwargs)


def test_bad_mixture_count():
    with pytest.raises(ValueError, match="num_quasipartition_mixtures must be an integer >= 1, got 0"):
        PQE(0)


@pytest.mark.parametrize(
    "u, v, error, match",
    [
        (
            torch.zeros(3, 63),
            torch.zeros(3, 64),
            ValueError,
            "u must have last dim .* = 64, got shape \\(3, 63\\)",
        ),
        (torch.zeros(3, 64), torch.zeros(65), ValueError, "v must have last dim .* = 64"),
        (torch.zeros(()), torch.zeros(64), ValueError, "u must have last dim"),
        (torch.zeros(3, 64), torch.zeros(4, 64), ValueError, "broadcastable"),
        (torch.zeros(3, 64, dtype=torch.int64), torch.zeros(3, 64), ValueError, "floating"),
        (np.zeros((3, 64)), torch.zeros(3, 64), TypeError, "u must be a torch.Tensor"),
    ],
)
def test_bad_latents(u, v, error, match):
    pqe = PQE(16)
    with pytest.raises(error, match=match):
        pqe(u, v)


def test_positional_arguments_follow_the_seed_signature():
    pqe = PQE(8, 4, "gaussian", "gaussian", True)
    assert (pqe.measure, pqe.shape, pqe.discounted) == ("gaussian", "gaussian", True)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("discounted", [False, True])
@pytest.mark.parametrize("dtype, scale", [(torch.float32, 1e19), (torch.float32, 1e30), (torch.float64, 1e160)])
def test_huge_latents_give_finite_parameter_gradients(variant, discounted, dtype, scale):
    """Guards issue 8 (smaller defects): PQE-GG parameter gradients went NaN for |latents|
    above ~1e19 in float32 (u^2 overflowed inside a density that is 0 there anyway)."""
    pqe = make_pqe(variant, discounted=discounted).to(dtype)
    generator = torch.Generator().manual_seed(3)
    u = (torch.randn(16, 32, dtype=torch.float64, generator=generator) * scale).to(dtype).requires_grad_()
    v = (torch.randn(16, 32, dtype=torch.float64, generator=generator) * scale).to(dtype).requires_grad_()
    distance = pqe(u, v)
    distance.sum().backward()
    assert torch.isfinite(distance).all()
    for name, parameter in pqe.named_parameters():
        assert torch.isfinite(parameter.grad).all(), name
    assert torch.isfinite(u.grad).all() and torch.isfinite(v.grad).all()


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("discounted", [False, True])
def test_pqe_on_every_device(variant, discounted, device):
    head = make_pqe(variant, discounted=discounted).float()
    u, v = (random_latents(16, head.latent_size, seed).float() for seed in (0, 1))
    on_cpu = head(u, v)
    moved = head.to(device)
    ud = u.to(device).requires_grad_(True)
    distance = moved(ud, v.to(device))
    distance.sum().backward()
    assert distance.device.type == device and ud.grad.device.type == device
    assert all(p.grad.device.type == device for p in moved.parameters() if p.grad is not None)
    # float32 on both; a GPU without fast float64 also sums the Poisson CDF in float32.
    torch.testing.assert_close(distance.detach().cpu(), on_cpu.detach(), rtol=1e-4, atol=1e-5)

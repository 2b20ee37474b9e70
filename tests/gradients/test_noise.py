"""Tests for combgrad/gradients/noise.py.

Statistical tests draw with fixed generator seeds, so they are deterministic; each
tolerance is a stated multiple (5 or more) of the estimate's standard error, so a
correct sampler passes for all but a vanishing fraction of seeds.
"""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from combgrad.gradients import noise


def generator(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("concentration", [0.05, 0.2, 0.5, 1.0, 2.5, 7.0])
def test_gamma_mean_variance_and_distribution(concentration):
    count = 100_000
    draws = noise.gamma((count,), concentration, dtype=torch.float64, generator=generator(1))
    assert draws.dtype == torch.float64 and draws.shape == (count,)
    assert bool((draws >= 0).all())
    # Gamma(a, 1): mean a, variance a, fourth central moment 3a^2 + 6a.
    mean_error = 5 * math.sqrt(concentration / count)
    variance_error = 5 * math.sqrt((2 * concentration**2 + 6 * concentration) / count)
    assert abs(draws.mean().item() - concentration) < mean_error
    assert abs(draws.var().item() - concentration) < variance_error
    # P(KS > t) <= 2 exp(-2 n t^2): below 2e-7 for n = 1e5 exact draws and t = 0.009.
    statistic = stats.kstest(draws.numpy(), stats.gamma(concentration).cdf).statistic
    assert statistic < 0.009


def test_gamma_follows_the_generator_and_the_global_seed():
    first = noise.gamma((1000,), 0.3, generator=generator(5))
    assert torch.equal(first, noise.gamma((1000,), 0.3, generator=generator(5)))
    assert not torch.equal(first, noise.gamma((1000,), 0.3, generator=generator(6)))
    torch.manual_seed(3)
    global_first = noise.gamma((1000,), 0.3)
    torch.manual_seed(3)
    assert torch.equal(global_first, noise.gamma((1000,), 0.3))


def test_gumbel_moments_and_distribution():
    count = 200_000
    draws = noise.gumbel((count,), dtype=torch.float64, generator=generator(2))
    assert abs(draws.mean().item() - noise.EULER_GAMMA) < 5 * math.sqrt(math.pi**2 / 6 / count)
    # P(KS > 0.006) <= 2 exp(-2 * 2e5 * 0.006^2) ~ 1e-6.
    assert stats.kstest(draws.numpy(), stats.gumbel_r.cdf).statistic < 0.006
    assert bool(torch.isfinite(draws).all())


def test_normal_distribution():
    draws = noise.normal((200_000,), dtype=torch.float64, generator=generator(3))
    assert stats.kstest(draws.numpy(), stats.norm.cdf).statistic < 0.006


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("k, iterations", [(1, 10), (3, 10), (5, 40), (12, 10), (4, 1)])
def test_sum_of_gamma_mean_and_variance(k, iterations, dtype):
    count = 40_000
    draws = noise.sum_of_gamma((count,), k=k, iterations=iterations, dtype=dtype, generator=generator(4)).double()
    # Sum of independent Gamma(1/k, rate i/k), i = 1..s: mean sum 1/i, variance sum k/i^2.
    expected_mean = (sum(1 / i for i in range(1, iterations + 1)) - math.log(iterations)) / k
    expected_variance = sum(1 / i**2 for i in range(1, iterations + 1)) / k
    assert noise.mean("sum_of_gamma", k=k, iterations=iterations) == pytest.approx(expected_mean)
    assert abs(draws.mean().item() - expected_mean) < 5 * math.sqrt(expected_variance / count)
    # Standard error of a sample variance, bounded generously by 4 * variance / sqrt(n).
    assert abs(draws.var().item() - expected_variance) < 5 * 4 * expected_variance / math.sqrt(count)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("k, iterations", [(1, 3), (3, 5), (1, 10), (12, 10), (20, 3), (3, 40)])
def test_k_sum_of_gamma_draws_add_up_to_a_gumbel(k, iterations, dtype):
    """The closed form that guards the mixture sampler (issue 8 item 14), in float32 too.

    (12, 10) and (20, 3) have iterations < k, where a mixture shape can fall below 1.
    """
    count = 50_000
    draws = noise.sum_of_gamma((count, k), k=k, iterations=iterations, dtype=dtype, generator=generator(7))
    total = draws.double().sum(-1).numpy()
    # The k draws add up to sum_{i<=s} E_i / i - log s with E_i ~ Exp(1), which is
    # distributed as max(E_1..E_s) - log s (Renyi): CDF (1 - exp(-x) / s)^s, which
    # tends to the Gumbel's exp(-exp(-x)). P(KS > 0.012) <= 2 exp(-2 n 0.012^2) < 1e-6.
    s = iterations

    def exact_cdf(x):
        return np.clip(1 - np.exp(-x) / s, 0, 1) ** s

    assert stats.kstest(total, exact_cdf).statistic < 0.012
    grid = np.linspace(-3, 8, 1000)
    assert np.abs(exact_cdf(grid) - stats.gumbel_r.cdf(grid)).max() < 0.4 / s


def test_none_is_zeros_and_sample_dispatches():
    assert torch.equal(noise.none((2, 3), dtype=torch.float64), torch.zeros(2, 3, dtype=torch.float64))
    assert torch.equal(
        noise.sample("gumbel", (4,), generator=generator(0)), noise.gumbel((4,), generator=generator(0))
    )
    assert torch.equal(
        noise.sample("sum_of_gamma", (4,), k=2, iterations=3, generator=generator(0)),
        noise.sum_of_gamma((4,), k=2, iterations=3, generator=generator(0)),
    )
    assert torch.equal(noise.sample("normal", (4,), generator=generator(0)), noise.normal((4,), generator=generator(0)))


@pytest.mark.parametrize("name", ["gumbel", "normal", "sum_of_gamma", "none"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_draws_have_the_requested_dtype_and_device(name, dtype):
    draws = noise.sample(name, (3, 2), k=2, dtype=dtype, device="cpu", generator=generator(0))
    assert draws.dtype == dtype and draws.device.type == "cpu" and draws.shape == (3, 2)
    assert bool(torch.isfinite(draws).all())


def test_log_density_gradient_has_mean_zero():
    for name in ("gumbel", "normal"):
        z = noise.sample(name, (200_000,), dtype=torch.float64, generator=generator(8))
        weight = noise.log_density_gradient(name, z)
        # Both weights have unit variance (Exp(1) - 1 and N(0, 1)).
        assert abs(weight.mean().item()) < 5 / math.sqrt(200_000)
    z = torch.tensor([-1.0, 0.0, 2.0])
    assert torch.allclose(noise.log_density_gradient("gumbel", z), 1 - torch.exp(-z))
    assert torch.equal(noise.log_density_gradient("normal", z), z)


def test_means():
    assert noise.mean("gumbel") == pytest.approx(np.euler_gamma)
    assert noise.mean("normal") == 0.0 and noise.mean("none") == 0.0


def test_bad_arguments():
    with pytest.raises(ValueError, match="noise must be one of .*got 'uniform'"):
        noise.sample("uniform", (2,))
    with pytest.raises(ValueError, match="sum_of_gamma: k must be an integer >= 1, got 0"):
        noise.sum_of_gamma((2,), k=0)
    with pytest.raises(ValueError, match="sum_of_gamma: iterations must be an integer >= 1, got 0"):
        noise.sum_of_gamma((2,), k=1, iterations=0)
    with pytest.raises(ValueError, match="gamma: concentration must be a finite number > 0, got -1"):
        noise.gamma((2,), -1.0)
    with pytest.raises(ValueError, match="noise must be one of \\['gumbel', 'normal'\\], got 'none'"):
        noise.log_density_gradient("none", torch.zeros(1))
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        noise.mean("sum_of_gamma", k=0)


@pytest.mark.parametrize("k, iterations", [(1, 5), (2, 7), (12, 10), (3, 40)])
def test_sum_of_gamma_mixture_weights_match_a_convolution_of_negative_binomials(k, iterations):
    """P(J = j) from the FFT of its generating function against scipy's NB pmfs convolved."""
    weights = noise._mixture_weights(k, iterations)
    size = weights.size
    reference = np.ones(1)
    for i in range(1, iterations):
        reference = np.convolve(reference, stats.nbinom(1 / k, i / iterations).pmf(np.arange(size)))[:size]
    assert abs(weights.sum() - 1) < 1e-12
    assert np.abs(weights - reference).max() < 1e-14
    # The table keeps all but at most 1e-17 per left-out entry of the mass (round-off included).
    assert 1 - reference.sum() < 1e-12


@pytest.mark.parametrize("iterations", [1, 2, 10])
def test_one_sum_of_gamma_draw_with_k_1_is_a_shifted_maximum_of_exponentials(iterations):
    """For k = 1, one draw is max(E_1..E_s) - log s, CDF (1 - exp(-(x + log s)))^s (Renyi)."""
    draws = noise.sum_of_gamma((100_000,), k=1, iterations=iterations, dtype=torch.float64, generator=generator(9))

    def exact_cdf(x):
        return np.clip(1 - np.exp(-(x + math.log(iterations))), 0, 1) ** iterations

    # P(KS > 0.009) <= 2 exp(-2 * 1e5 * 0.009^2) < 1e-7.
    assert stats.kstest(draws.numpy(), exact_cdf).statistic < 0.009


def test_sum_of_gamma_is_reproducible_and_follows_the_generator():
    first = noise.sum_of_gamma((3, 500), k=4, iterations=6, generator=generator(5))
    assert torch.equal(first, noise.sum_of_gamma((3, 500), k=4, iterations=6, generator=generator(5)))
    assert not torch.equal(first, noise.sum_of_gamma((3, 500), k=4, iterations=6, generator=generator(6)))
    torch.manual_seed(3)
    global_first = noise.sum_of_gamma((700,), k=2)
    torch.manual_seed(3)
    assert torch.equal(global_first, noise.sum_of_gamma((700,), k=2))
    assert noise.sum_of_gamma((0, 4), k=2).shape == (0, 4)


def test_gamma_rejection_reads_the_host_once(monkeypatch):
    """No per-round host sync (issue 8 item 14): one nonzero call, the final check, per draw.

    At this seed no entry is left after the batch of redraws, so the fallback loop does not run.
    """
    calls = []
    nonzero = torch.nonzero

    def counting_nonzero(*args, **kwargs):
        calls.append(1)
        return nonzero(*args, **kwargs)

    monkeypatch.setattr(noise.torch, "nonzero", counting_nonzero)
    noise.sum_of_gamma((20, 5000), k=3, iterations=10, generator=generator(0))
    assert len(calls) == 1


def test_gamma_fallback_loop_keeps_the_distribution(monkeypatch):
    """With a redraw batch of 8 slots most rejected entries overflow it and the fallback loop runs."""
    monkeypatch.setattr(noise, "_REJECTION_BOUND", 0.0)
    draws = noise.gamma((100_000,), 1.5, dtype=torch.float64, generator=generator(2))
    assert bool(torch.isfinite(draws).all()) and bool((draws > 0).all())
    # P(KS > 0.009) <= 2 exp(-2 * 1e5 * 0.009^2) < 1e-7.
    assert stats.kstest(draws.numpy(), stats.gamma(1.5).cdf).statistic < 0.009

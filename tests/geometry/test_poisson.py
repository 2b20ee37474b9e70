"""Tests for combgrad/geometry/poisson.py: P[Poisson(x) <= Poisson(y)] and its gradients."""

import numpy as np
import pytest
import torch
from scipy import stats

from combgrad.geometry import poisson_le_probability
from combgrad.geometry.poisson import PoissonLessEqual

LOG_GRID = np.logspace(-6, 3, 19)


def scipy_le(x, y):
    """Independent reference: the Skellam CDF at 0, P[X - Y <= 0]."""
    return stats.skellam.cdf(0, np.asarray(x, dtype=float), np.asarray(y, dtype=float))


@pytest.mark.parametrize(
    "x, y, value, grad_x, grad_y",
    [
        (1.0, 1.0, 0.654254, -0.308508, 0.215269),
        (0.5, 2.0, 0.918108, -0.187120, 0.065284),
        (2.0, 0.5, 0.269012, -0.187120, 0.261135),
        (10.0, 12.0, 0.703492, -0.078266, 0.069797),
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_reference_values_and_gradients(x, y, value, grad_x, grad_y, dtype):
    rate_x = torch.tensor(x, dtype=dtype, requires_grad=True)
    rate_y = torch.tensor(y, dtype=dtype, requires_grad=True)
    probability = poisson_le_probability(rate_x, rate_y)
    probability.backward()
    assert probability.dtype == dtype
    assert probability.item() == pytest.approx(value, abs=1e-6)
    assert rate_x.grad.item() == pytest.approx(grad_x, abs=1e-6)
    assert rate_y.grad.item() == pytest.approx(grad_y, abs=1e-6)


def test_matches_scipy_on_log_grid_float64():
    x, y = np.meshgrid(LOG_GRID, LOG_GRID, indexing="ij")
    ours = poisson_le_probability(torch.tensor(x), torch.tensor(y)).numpy()
    reference = scipy_le(x, y)
    # scipy is accurate to ~4e-14 relative down to 1e-250 and returns 0 below ~1e-290
    # (checked against 80-digit mpmath sums of the Skellam pmf); ours to ~1e-14.
    resolved = reference > 1e-250
    np.testing.assert_allclose(ours[resolved], reference[resolved], rtol=1e-11, atol=0)
    np.testing.assert_allclose(ours[~resolved], reference[~resolved], rtol=0, atol=1e-250)
    # Both tails are in the grid: values near 1 and values far below float32's range.
    assert reference.max() > 1 - 1e-12 and 0 < reference[resolved].min() < 1e-200


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_scipy_on_random_rates_float64(seed):
    rng = np.random.default_rng(seed)
    x = 10 ** rng.uniform(-6, 3, 200)
    # Half of the pairs near the diagonal, where the window is widest; half at any ratio.
    y = np.where(np.arange(200) < 100, x * 10 ** rng.uniform(-0.5, 0.5, 200), 10 ** rng.uniform(-6, 3, 200))
    ours = poisson_le_probability(torch.tensor(x), torch.tensor(y)).numpy()
    reference = scipy_le(x, y)
    resolved = reference > 1e-250
    np.testing.assert_allclose(ours[resolved], reference[resolved], rtol=1e-11, atol=0)
    np.testing.assert_allclose(ours[~resolved], reference[~resolved], rtol=0, atol=1e-250)


def test_matches_noncentral_chi_square():
    x, y = np.meshgrid(LOG_GRID[::3], LOG_GRID[::3], indexing="ij")
    ours = poisson_le_probability(torch.tensor(x), torch.tensor(y)).numpy()
    # P[X > Y] is the CDF of a non-central chi-square (2 dof, non-centrality 2y) at 2x.
    np.testing.assert_allclose(ours, stats.ncx2.sf(2 * x, 2, 2 * y), rtol=1e-10, atol=1e-250)


def test_matches_scipy_float32():
    x, y = np.meshgrid(LOG_GRID, LOG_GRID, indexing="ij")
    ours = poisson_le_probability(torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32))
    assert ours.dtype == torch.float32
    # The rates themselves are rounded to float32 (relative 6e-8), which moves the
    # probability by at most rate * |gradient| * 6e-8 <= ~1e-6.
    reference = scipy_le(x.astype(np.float32), y.astype(np.float32))
    np.testing.assert_allclose(ours.numpy(), reference, rtol=1e-5, atol=1e-37)


def test_gradients_match_skellam_pmf():
    # d/dx P[X <= Y] = -P[X = Y] and d/dy P[X <= Y] = P[X = Y + 1]: independent closed
    # forms through scipy's Skellam pmf.
    x, y = np.meshgrid(LOG_GRID, LOG_GRID, indexing="ij")
    rate_x = torch.tensor(x, requires_grad=True)
    rate_y = torch.tensor(y, requires_grad=True)
    poisson_le_probability(rate_x, rate_y).sum().backward()
    for ours, reference in (
        (-rate_x.grad, stats.skellam.pmf(0, x, y)),
        (rate_y.grad, stats.skellam.pmf(1, x, y)),
    ):
        # scipy's pmf underflows to 0 early (1e-44 comes back as 0), so tiny values are
        # compared absolutely.
        resolved = reference > 1e-30
        np.testing.assert_allclose(ours.numpy()[resolved], reference[resolved], rtol=1e-9, atol=0)
        np.testing.assert_allclose(ours.numpy()[~resolved], reference[~resolved], rtol=0, atol=1e-30)


@pytest.mark.parametrize("scale", [1e-3, 1.0, 30.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_gradcheck(scale, seed):
    generator = torch.Generator().manual_seed(seed)
    x = (torch.rand(3, 4, dtype=torch.float64, generator=generator) * scale + scale / 10).requires_grad_()
    y = (torch.rand(4, dtype=torch.float64, generator=generator) * scale + scale / 10).requires_grad_()
    assert torch.autograd.gradcheck(poisson_le_probability, (x, y))
    assert torch.autograd.gradgradcheck(poisson_le_probability, (x, y))


def test_zero_rates_give_closed_forms_and_finite_gradients():
    x = torch.tensor([0.0, 0.7, 0.0, 3.0], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([1.3, 0.0, 0.0, 0.0], dtype=torch.float64, requires_grad=True)
    probability = poisson_le_probability(x, y)
    probability.sum().backward()
    expected = torch.tensor([1.0, np.exp(-0.7), 1.0, np.exp(-3.0)], dtype=torch.float64)
    torch.testing.assert_close(probability.detach(), expected, rtol=1e-14, atol=1e-15)
    # d/dx = -P[X = Y] = -e^-y at x = 0, -e^-x at y = 0; d/dy = P[X = Y + 1] = x e^-x at y = 0.
    torch.testing.assert_close(
        x.grad, -torch.tensor([np.exp(-1.3), np.exp(-0.7), 1.0, np.exp(-3.0)], dtype=torch.float64)
    )
    torch.testing.assert_close(
        y.grad, torch.tensor([0.0, 0.7 * np.exp(-0.7), 0.0, 3 * np.exp(-3.0)], dtype=torch.float64)
    )


def test_extreme_ratios_stay_in_unit_interval_with_finite_gradients():
    x = torch.tensor([1e-6, 1e3, 1e3, 1e-6, 1e3], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([1e3, 1e-6, 1e3, 1e-6, 999.0], dtype=torch.float64, requires_grad=True)
    probability = poisson_le_probability(x, y)
    probability.sum().backward()
    probability = probability.detach()
    assert torch.all((probability >= 0) & (probability <= 1))
    assert torch.isfinite(x.grad).all() and torch.isfinite(y.grad).all()
    assert probability[0] == pytest.approx(1.0, abs=1e-15)
    assert probability[1] < 1e-300
    # Equal rates: P[X <= Y] = (1 + P[X = Y]) / 2 by symmetry; P[X = Y] = -d/dx.
    assert probability[2].item() == pytest.approx((1 - x.grad[2].item()) / 2, rel=1e-12)
    assert probability[3].item() == pytest.approx((1 - x.grad[3].item()) / 2, rel=1e-12)


def test_broadcasting_shapes_and_gradient_shapes():
    x = torch.rand(5, 1, 3, dtype=torch.float64, requires_grad=True)
    y = torch.rand(4, 1, dtype=torch.float64, requires_grad=True)
    probability = poisson_le_probability(x, y)
    assert probability.shape == (5, 4, 3)
    probability.sum().backward()
    assert x.grad.shape == x.shape and y.grad.shape == y.shape
    # The broadcast gradient of y sums the per-element gradients.
    expanded = y.detach().expand(5, 4, 3).clone().requires_grad_()
    poisson_le_probability(x.detach(), expanded).sum().backward()
    torch.testing.assert_close(y.grad, expanded.grad.sum(dim=(0, 2)).unsqueeze(-1))


def test_empty_input():
    probability = poisson_le_probability(torch.zeros(0, 3), torch.zeros(3))
    assert probability.shape == (0, 3)


def test_autograd_function_propagates_nan_without_validation():
    # The unchecked path used inside PQE must not hang or allocate on NaN rates.
    probability = PoissonLessEqual.apply(torch.tensor([float("nan"), 1.0]), torch.tensor([1.0, float("inf")]))
    assert torch.isnan(probability).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    x = torch.rand(1000, dtype=torch.float64) * 50
    y = torch.rand(1000, dtype=torch.float64) * 50
    on_gpu = poisson_le_probability(x.cuda(), y.cuda())
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), poisson_le_probability(x, y), rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize(
    "x, y, error, match",
    [
        (torch.tensor([-0.1]), torch.tensor([1.0]), ValueError, "rate_x must be finite, >= 0"),
        (torch.tensor([1.0]), torch.tensor([float("nan")]), ValueError, "rate_y must be finite, >= 0"),
        (torch.tensor([float("inf")]), torch.tensor([1.0]), ValueError, "rate_x must be finite, >= 0"),
        (torch.tensor([1]), torch.tensor([1.0]), ValueError, "rate_x must be a floating tensor"),
        (1.0, torch.tensor([1.0]), TypeError, "rate_x must be a torch.Tensor"),
        (torch.ones(2), torch.ones(3), ValueError, "must broadcast"),
        (torch.tensor([2e10]), torch.tensor([1.0]), ValueError, r"rate_x must be finite, >= 0 and <= 1e\+10"),
    ],
)
def test_bad_inputs(x, y, error, match):
    with pytest.raises(error, match=match):
        poisson_le_probability(x, y)


def test_double_backward_is_finite_at_zero_rates():
    """Guards issue 8 (smaller defects): double backward gave -inf/NaN at a zero rate.

    Closed forms from d/dx P = -G_0, d/dy P = x G_1 with G_k = e^(-x-y) F_k(xy),
    F_k' = F_(k+1), F_k(0) = 1/k!: at x = 0, d2/dx2 = e^-y (1 - y), d2/dxdy = e^-y,
    d2/dy2 = 0; at y = 0, d2/dx2 = e^-x, d2/dxdy = e^-x (1 - x), d2/dy2 = x e^-x (x/2 - 1).
    """
    x = torch.tensor([0.0, 0.0, 0.7, 0.0], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([1.0, 2.5, 0.0, 0.0], dtype=torch.float64, requires_grad=True)
    grad_x, grad_y = torch.autograd.grad(poisson_le_probability(x, y).sum(), (x, y), create_graph=True)
    xx, xy = torch.autograd.grad(grad_x.sum(), (x, y), retain_graph=True)
    yx, yy = torch.autograd.grad(grad_y.sum(), (x, y))
    xd, yd = x.detach(), y.detach()
    at_x0 = xd == 0
    expected_xx = torch.where(at_x0, torch.exp(-yd) * (1 - yd), torch.exp(-xd))
    expected_xy = torch.where(at_x0, torch.exp(-yd), torch.exp(-xd) * (1 - xd))
    expected_yy = torch.where(at_x0, torch.zeros_like(xd), xd * torch.exp(-xd) * (xd / 2 - 1))
    torch.testing.assert_close(xx, expected_xx, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(xy, expected_xy, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(yx, expected_xy, rtol=1e-12, atol=1e-15)  # symmetric Hessian
    torch.testing.assert_close(yy, expected_yy, rtol=1e-12, atol=1e-15)
    assert xx[0].item() == pytest.approx(0.0, abs=1e-15)  # the value at (0, 1)


@pytest.mark.parametrize("scale", [1e-4, 0.3, 3.0, 300.0])
def test_second_derivatives_match_differences_of_the_gradients(scale):
    """The analytic Hessian (through _ScaledBessel, incl. the G_2 series below z = 2 and
    the recurrence above) against central differences of the first derivatives."""
    generator = torch.Generator().manual_seed(7)
    x = (torch.rand(6, dtype=torch.float64, generator=generator) + 0.2) * scale
    y = (torch.rand(6, dtype=torch.float64, generator=generator) + 0.2) * scale
    assert torch.autograd.gradgradcheck(poisson_le_probability, (x.requires_grad_(), y.requires_grad_()))


def test_third_derivatives_are_refused():
    x = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([2.0], dtype=torch.float64)
    (grad_x,) = torch.autograd.grad(poisson_le_probability(x, y), x, create_graph=True)
    (second,) = torch.autograd.grad(grad_x, x, create_graph=True)
    with pytest.raises(RuntimeError, match="derivatives beyond the second"):
        torch.autograd.grad(second, x)


def test_memory_grows_like_the_square_root_of_the_rate(allocation_peak):
    """Guards issue 8 (smaller defects): a table over all counts up to the rate made memory
    linear (1.1 GB at 1e7, out of memory at 1e8); the docstring promises square-root growth."""
    peaks = {}
    for rate in (1e6, 1e8):
        x = torch.tensor([rate], dtype=torch.float64)
        y = torch.tensor([rate * (1 + 1e-4)], dtype=torch.float64)
        peaks[rate], _ = allocation_peak(lambda: poisson_le_probability(x, y))
    # A window of ~24 sqrt(rate) counts at 1e8 is 2.4e5 float64 terms (~2 MB each array).
    assert peaks[1e8] < 64 * 2**20
    assert peaks[1e8] < 20 * peaks[1e6]  # 100x the rate: about 10x the memory, not 100x


@pytest.mark.parametrize("rate", [1e4, 1e6, 1e8, 9.9e9])
def test_large_rates_match_scipy(rate):
    # Near the diagonal, where the window is widest and the value far from 0 and 1.
    x = np.full(4, rate)
    y = x * (1 + np.array([0.0, 1.0, -3.0, 5.0]) / np.sqrt(rate))
    ours = poisson_le_probability(torch.tensor(x), torch.tensor(y)).numpy()
    # The log-pmf loses ~1e-16 per unit of sqrt(count) (measured 6e-12 at 1e10).
    np.testing.assert_allclose(ours, scipy_le(x, y), rtol=1e-10, atol=0)


def test_rates_beyond_the_limit_are_refused_on_the_unchecked_path():
    """The autograd function used inside PQE refuses too, instead of asking for 1e75 terms."""
    with pytest.raises(ValueError, match="rates must be at most 1e"):
        PoissonLessEqual.apply(torch.tensor([1e300], dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64))


# --- the device path and devices -------------------------------------------------------

from combgrad.geometry.poisson import _poisson_le_forward, forward_dtype  # noqa: E402


@pytest.mark.parametrize("high", [10.0, 1000.0, 1e6])
def test_device_path_matches_the_host_sorted_path(high, syncs):
    """The GPU's path (one host read, equal blocks), run on the CPU, against the CPU's."""
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(3000, generator=generator, dtype=torch.float64) * high
    y = torch.rand(3000, generator=generator, dtype=torch.float64) * high
    syncs.reads = syncs.copies = 0
    device_path = _poisson_le_forward(x, y, sort_on_host=False)
    assert syncs.reads == 1 and syncs.copies == 0  # the window sizes and the rate limit, in one read
    host_path = _poisson_le_forward(x, y)
    # Different padding adds more exact terms to some rows: rounding only.
    torch.testing.assert_close(device_path, host_path, rtol=1e-13, atol=1e-300)


def test_device_path_refuses_rates_beyond_the_limit():
    with pytest.raises(ValueError, match="rates must be at most 1e"):
        _poisson_le_forward(torch.tensor([1e300], dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64),
                            sort_on_host=False)


@pytest.mark.parametrize("sort_on_host", [True, False])
def test_float32_forward_is_within_1e6_absolute(sort_on_host):
    """The sum as it runs on GPUs without fast float64 (forward_dtype float32)."""
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(4000, generator=generator, dtype=torch.float64) * 1000
    y = torch.rand(4000, generator=generator, dtype=torch.float64) * 1000
    in_float32 = _poisson_le_forward(x.float(), y.float(), sort_on_host=sort_on_host)
    assert in_float32.dtype == torch.float32
    # Measured 6.4e-7 at most on these rates; 1e-6 leaves 1.5x margin.
    torch.testing.assert_close(in_float32.double(), _poisson_le_forward(x, y), atol=1e-6, rtol=0)


def test_forward_dtype():
    assert forward_dtype(torch.device("cpu")) == torch.float64
    assert forward_dtype(torch.device("mps")) == torch.float32  # no float64 there
    if torch.cuda.is_available():
        fast = torch.cuda.get_device_capability() in {(6, 0), (7, 0), (8, 0), (9, 0), (10, 0)}
        assert forward_dtype(torch.device("cuda")) == (torch.float64 if fast else torch.float32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_poisson_on_every_device(device, dtype):
    generator = torch.Generator().manual_seed(2)
    x = (torch.rand(500, generator=generator, dtype=torch.float64) * 50).to(dtype)
    y = (torch.rand(500, generator=generator, dtype=torch.float64) * 50).to(dtype)
    xd = x.to(device).requires_grad_(True)
    probability = poisson_le_probability(xd, y.to(device))
    probability.sum().backward()
    assert probability.device.type == device and probability.dtype == dtype and xd.grad.device.type == device
    # float64 everywhere but a GPU without fast float64, where the sum runs in float32.
    exact = forward_dtype(torch.device(device)) == torch.float64 and dtype == torch.float64
    tolerance = 1e-12 if exact else 2e-6
    torch.testing.assert_close(probability.detach().cpu(), poisson_le_probability(x, y), rtol=tolerance, atol=tolerance)

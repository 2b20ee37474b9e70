"""Tests for combgrad/geometry/iqe.py: Interval Quasimetric Embeddings."""

import numpy as np
import pytest
import torch

from combgrad.geometry import IQE, interval_union_length


def merged_union_length(left, right):
    """Reference: merge the sorted non-empty intervals one by one (no sort-and-cummax)."""
    intervals = sorted((a, b) for a, b in zip(left, right) if b > a)
    total, current_start, current_end = 0.0, None, None
    for start, end in intervals:
        if current_end is None or start > current_end:
            if current_end is not None:
                total += current_end - current_start
            current_start, current_end = start, end
        else:
            current_end = max(current_end, end)
    if current_end is not None:
        total += current_end - current_start
    return total


@pytest.mark.parametrize(
    "u, v, length",
    [([0, 0], [1, 2], 2.0), ([0, 3], [1, 4], 2.0), ([1, 0], [0, 5], 5.0), ([0, 1], [2, 3], 3.0)],
)
def test_component_reference_values(u, v, length):
    u = torch.tensor(u, dtype=torch.float64)
    v = torch.tensor(v, dtype=torch.float64)
    assert interval_union_length(u, v).item() == length
    # A single component: max and mean agree, so the IQE distance is the component.
    assert IQE(2, dim_per_component=2)(u, v).item() == pytest.approx(length)


@pytest.mark.parametrize("dim", [1, 2, 5, 16, 33])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_union_length_matches_interval_merging(dim, seed):
    rng = np.random.default_rng(seed)
    u = rng.normal(size=(50, dim))
    # Integer-rounded endpoints too, so touching and nested intervals occur.
    v = np.where(
        rng.random((50, dim)) < 0.5, rng.normal(size=(50, dim)), np.round(u + rng.integers(-2, 3, (50, dim)))
    )
    ours = interval_union_length(torch.tensor(u), torch.tensor(v)).numpy()
    reference = [merged_union_length(a, b) for a, b in zip(u, v)]
    np.testing.assert_allclose(ours, reference, rtol=1e-12, atol=1e-12)


def test_union_length_gradient_marks_exposed_endpoints():
    # Intervals [0, 2] and [1, 3]: union [0, 3]; only the outer ends move its length.
    u = torch.tensor([0.0, 1.0], requires_grad=True)
    v = torch.tensor([2.0, 3.0], requires_grad=True)
    interval_union_length(u, v).backward()
    assert u.grad.tolist() == [-1.0, 0.0]
    assert v.grad.tolist() == [0.0, 1.0]


def test_max_mean_mix_follows_the_learned_weight():
    iqe = IQE(4, dim_per_component=2).double()
    u = torch.zeros(4, dtype=torch.float64)
    v = torch.tensor([1.0, 0.0, 3.0, 2.0], dtype=torch.float64)  # components 1 and 3
    with torch.no_grad():
        assert iqe(u, v).item() == pytest.approx(0.5 * 3 + 0.5 * 2)  # alpha starts at 1/2
        iqe.alpha_logit.fill_(50.0)
        assert iqe(u, v).item() == pytest.approx(3.0)
        iqe.alpha_logit.fill_(-50.0)
        assert iqe(u, v).item() == pytest.approx(2.0)
    iqe.alpha_logit.data.fill_(0.3)
    iqe(u, v).backward()
    # d/dlogit = sigmoid'(0.3) * (max - mean).
    sigmoid = 1 / (1 + np.exp(-0.3))
    assert iqe.alpha_logit.grad.item() == pytest.approx(sigmoid * (1 - sigmoid) * (3.0 - 2.0))


@pytest.mark.parametrize("dim_per_component", [4, 16])
@pytest.mark.parametrize("seed", [0, 1])
def test_quasimetric_properties(dim_per_component, seed):
    torch.manual_seed(seed)
    iqe = IQE(32, dim_per_component=dim_per_component).double()
    with torch.no_grad():
        iqe.alpha_logit.fill_(torch.randn(()).item())
        u, v, w = torch.randn(3, 400, 32, dtype=torch.float64).unbind(0)
        d_uv, d_vu, d_uw, d_vw = iqe(u, v), iqe(v, u), iqe(u, w), iqe(v, w)
        assert torch.all(d_uv >= 0)
        assert torch.all(iqe(u, u) == 0)
        assert torch.all(d_uw <= d_uv + d_vw + 1e-12)
        assert (d_uv - d_vu).abs().max() > 1e-2


@pytest.mark.parametrize("seed", [0, 1])
def test_gradcheck_away_from_ties(seed):
    # Continuous random latents have no tied endpoints (probability 0), where the
    # union length is differentiable.
    torch.manual_seed(seed)
    iqe = IQE(12, dim_per_component=4).double()
    u = torch.randn(3, 12, dtype=torch.float64, requires_grad=True)
    v = torch.randn(3, 12, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(iqe, (u, v))
    assert torch.autograd.gradcheck(interval_union_length, (u, v))


def test_broadcasting_pairwise():
    torch.manual_seed(0)
    iqe = IQE(32, dim_per_component=8)
    x = torch.randn(6, 32)
    pairwise = iqe(x[:, None], x)
    assert pairwise.shape == (6, 6)
    assert torch.all(pairwise.diagonal() == 0)
    torch.testing.assert_close(pairwise[2, 4], iqe(x[2], x[4]))


def test_repr():
    assert "input_size=32, dim_per_component=8" in repr(IQE(32, dim_per_component=8))


@pytest.mark.parametrize(
    "args, match",
    [
        ((30, 16), "input_size must be a multiple of dim_per_component=16, got 30"),
        ((0, 16), "input_size must be an integer >= 1"),
        ((16, 0), "dim_per_component must be an integer >= 1"),
        ((16.0, 16), "input_size must be an integer"),
    ],
)
def test_bad_constructor_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        IQE(*args)


@pytest.mark.parametrize(
    "u, v, error, match",
    [
        (
            torch.zeros(2, 31),
            torch.zeros(2, 32),
            ValueError,
            "u must have last dim input_size=32, got shape \\(2, 31\\)",
        ),
        (torch.zeros(2, 32), torch.zeros(3, 32), ValueError, "broadcastable"),
        (torch.zeros(2, 32, dtype=torch.int32), torch.zeros(2, 32), ValueError, "floating"),
        (torch.zeros(2, 32), [0.0] * 32, TypeError, "v must be a torch.Tensor"),
    ],
)
def test_bad_latents(u, v, error, match):
    with pytest.raises(error, match=match):
        IQE(32)(u, v)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_iqe_on_every_device(device, dtype):
    head = IQE(32, dim_per_component=8).to(dtype)
    generator = torch.Generator().manual_seed(0)
    u, v = (torch.randn(10, 32, generator=generator, dtype=dtype) for _ in range(2))
    on_cpu = head(u, v)
    moved = head.to(device)
    ud = u.to(device).requires_grad_(True)
    distance = moved(ud, v.to(device))
    distance.sum().backward()
    assert distance.device.type == device and distance.dtype == dtype
    assert ud.grad.device.type == device and moved.alpha_logit.grad.device.type == device
    torch.testing.assert_close(distance.detach().cpu(), on_cpu.detach())

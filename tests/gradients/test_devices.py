"""Estimators and losses on every device: results on theta's device, one host read per pass.

Parametrised over the available devices (tests/_devices.py): the CPU half runs
everywhere, the CUDA half where torch sees a GPU. Host reads are counted on the
CPU through ``torch.Tensor.item``/``__bool__``/``float``/``int``/``tolist`` (the
``syncs`` fixture), a proxy that fails on a CPU-only CI when a hot path gains a
read that would stall a CUDA stream.
"""

import pytest
import torch

import combgrad as cg
from combgrad.gradients.aimle import adaptive_lam

ESTIMATORS = {
    "perturbation": {"samples": 4, "noise": "gumbel"},
    "imle": {"samples": 3, "noise": "gumbel"},
    "aimle": {"samples": 3, "noise": "gumbel"},
    "aimle_symmetric": {"samples": 3, "noise": "gumbel", "symmetric": True},
    "aimle_target_scale": {"samples": 3, "noise": "gumbel", "target_noise_scale": 0.5},
    "blackbox": {},
    "ste": {},
}


def _estimator(key):
    return cg.gradients.get(key.split("_")[0], **ESTIMATORS[key])


def _step(estimator, solver, theta, dy, generator=None):
    theta = theta.clone().requires_grad_(True)
    y = estimator(theta, solver, generator=generator)
    y.backward(dy)
    return y.detach(), theta.grad


@pytest.mark.parametrize("key", sorted(ESTIMATORS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_estimator_stays_on_device_and_agrees_with_cpu(key, dtype, device_pair, torch_argmax):
    device, generator_device = device_pair
    theta = torch.randn(5, 7, generator=torch.Generator().manual_seed(1), dtype=dtype)
    dy = torch.randn(5, 7, generator=torch.Generator().manual_seed(2), dtype=dtype)
    estimator = _estimator(key).to(device)
    y, grad = _step(estimator, torch_argmax, theta.to(device), dy.to(device),
                    torch.Generator(generator_device).manual_seed(0))
    for value in (y, grad):
        assert value.device.type == device and value.dtype == dtype and bool(torch.isfinite(value).all())
    if key.startswith("aimle"):
        assert estimator.beta.device.type == device
    # A seeded generator on another device gives the same draws (drawn there, moved),
    # so a CUDA theta with a CPU generator reproduces the CPU result exactly.
    if generator_device == "cpu":
        reference = _estimator(key)
        y_cpu, grad_cpu = _step(reference, torch_argmax, theta, dy, torch.Generator().manual_seed(0))
        torch.testing.assert_close(y.cpu(), y_cpu)
        torch.testing.assert_close(grad.cpu(), grad_cpu)


@pytest.mark.parametrize("key", sorted(ESTIMATORS))
def test_estimator_reads_the_host_once_per_pass(key, torch_argmax, syncs):
    estimator = _estimator(key)
    theta = torch.randn(4, 6, generator=torch.Generator().manual_seed(0), requires_grad=True)
    generator = torch.Generator().manual_seed(3)
    syncs.reads = 0
    y = estimator(theta, torch_argmax, generator=generator)
    forward_reads, forward_calls = syncs.reads, torch_argmax.kernel_calls
    y.backward(torch.randn(4, 6, generator=torch.Generator().manual_seed(1)))
    # One finiteness read of the solver input per pass (theta's in forward; the
    # incoming gradient's in backward, with the solver input or alone when backward
    # solves nothing), and one batched solver call.
    assert forward_reads == 1 and forward_calls == 1
    assert syncs.reads - forward_reads == 1
    solves_in_backward = key not in ("perturbation", "ste")
    assert torch_argmax.kernel_calls - forward_calls == int(solves_in_backward)
    assert syncs.copies == 0


def test_losses_read_the_host_once_per_checked_input(torch_argmax, syncs):
    theta = torch.randn(4, 6, generator=torch.Generator().manual_seed(0), requires_grad=True)
    y_true = torch.nn.functional.one_hot(torch.arange(4), 6).float()
    syncs.reads = 0
    cg.losses.fenchel_young(theta, y_true, solver=torch_argmax, samples=5, generator=torch.Generator().manual_seed(0))
    assert syncs.reads == 2 and torch_argmax.kernel_calls == 1  # y_true's check, the solver input's
    syncs.reads = 0
    cg.losses.spo_plus(theta, torch.randn(4, 6), solver=torch_argmax)
    # theta's and theta_true's checks, then both solves in one call checked once (for an overflow).
    assert syncs.reads == 3 and torch_argmax.kernel_calls == 2


@pytest.mark.parametrize("loss", ["fenchel_young", "spo_plus"])
def test_losses_stay_on_device(loss, device_pair, torch_argmax):
    device, generator_device = device_pair
    theta = torch.randn(3, 5, generator=torch.Generator().manual_seed(0), device="cpu").to(device).requires_grad_(True)
    if loss == "fenchel_young":
        target = torch.nn.functional.one_hot(torch.arange(3), 5).float().to(device)
        value = cg.losses.fenchel_young(theta, target, solver=torch_argmax, samples=4,
                                        generator=torch.Generator(generator_device).manual_seed(0))
    else:
        value = cg.losses.spo_plus(theta, torch.randn(3, 5).to(device), solver=torch_argmax)
    value.sum().backward()
    assert value.device.type == device and theta.grad.device.type == device
    assert bool(torch.isfinite(theta.grad).all())


def test_nonfinite_inputs_still_get_their_own_errors(torch_argmax):
    estimator = cg.gradients.get("imle", noise="gumbel")
    with pytest.raises(ValueError, match=r"imle: theta must be finite, got NaN or inf values"):
        estimator(torch.tensor([[0.0, float("nan")]]), torch_argmax)
    theta = torch.zeros(1, 2, requires_grad=True)
    y = estimator(theta, torch_argmax)
    with pytest.raises(ValueError, match=r"imle: the gradient flowing back into the layer's output is NaN or inf"):
        y.backward(torch.tensor([[float("inf"), 0.0]]))
    # Finite theta, but theta + noise overflows float16: the error says so.
    big = torch.full((1, 2), 6e4, dtype=torch.float16)
    with pytest.raises(ValueError, match=r"imle: the solver input built from theta overflowed torch.float16"):
        cg.gradients.get("imle", noise="normal", noise_scale=1e5)(big, torch_argmax)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("norm", ["batch", "instance"])
def test_aimle_low_precision_norms_do_not_overflow(dtype, norm, device, torch_argmax):
    # A 30x30 map of costs near 10 (flattened): the squares sum to 9e4 per instance,
    # past float16's 65504, so a float16 norm (and lam) would be inf.
    theta = (10 + torch.rand(2, 900, generator=torch.Generator().manual_seed(0))).to(device, dtype)
    dy = torch.randn(2, 900, generator=torch.Generator().manual_seed(1)).to(device, dtype)
    lam = adaptive_lam(theta, dy, torch.tensor(1.0, dtype=torch.float64), 1, norm)
    reference = adaptive_lam(theta.double(), dy.double(), torch.tensor(1.0, dtype=torch.float64), 1, norm)
    assert lam.dtype == torch.float32 and lam.device.type == device
    # float16/bfloat16 inputs carry ~1e-3/1e-2 relative rounding; the norms average it down.
    torch.testing.assert_close(lam.double(), reference, rtol=1e-2, atol=0)
    estimator = cg.gradients.get("aimle", noise="gumbel", norm=norm).to(device)
    grad = _step(estimator, torch_argmax, theta, dy, torch.Generator(device).manual_seed(0))[1]
    assert grad.dtype == dtype and bool(torch.isfinite(grad).all())
    assert bool(torch.isfinite(estimator.beta)) and estimator.beta.device.type == device


def test_aimle_update_makes_no_host_read(syncs):
    estimator = cg.gradients.get("aimle", beta_update_step=0.1)
    syncs.reads = 0
    estimator.adapt(torch.tensor([[[1.0, -1.0, 0.0]]]), 1)
    estimator.adapt(torch.tensor([[[0.0, 0.0, 0.0]]]), 1)
    assert syncs.reads == 0
    # nonzero: 0.9 + 0.1 * 2 = 1.1 >= 1 (beta down), then 0.99 < 1 (beta up again).
    assert estimator.beta.item() == pytest.approx(1.0) and estimator.nonzero.item() == pytest.approx(0.99)


def _cuda_syncs(action):
    """The synchronising CUDA operations ``action()`` makes, as torch's sync debug mode reports them."""
    import warnings

    torch.cuda.synchronize()
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            action()
    finally:
        torch.cuda.set_sync_debug_mode(previous)
    return [str(w.message) for w in caught if "synchroniz" in str(w.message)]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
@pytest.mark.parametrize("key", sorted(ESTIMATORS))
def test_cuda_estimator_syncs_once_per_pass(key, torch_argmax):
    """On a real GPU, the count the CPU proxy above stands for: at most one sync per pass."""
    estimator = _estimator(key).to("cuda")
    theta = torch.randn(64, 50, device="cuda", requires_grad=True)
    dy = torch.randn(64, 50, device="cuda")
    generator = torch.Generator("cuda").manual_seed(0)
    _step(estimator, torch_argmax, theta.detach(), dy, generator)  # warm-up: lazy CUDA initialisation
    outputs = []
    forward = _cuda_syncs(lambda: outputs.append(estimator(theta, torch_argmax, generator=generator)))
    backward = _cuda_syncs(lambda: outputs[0].backward(dy))
    assert len(forward) <= 1, forward
    assert len(backward) <= 1, backward

"""The discrete-VAE training run behind ``combgrad vae``: :func:`train`.

The AIMLE seed's ``torch-vae-cli`` experiment on binarised digits: an MLP encoder
gives ``m`` groups of ``n`` scores, the ``topk`` solver through any registered
estimator turns each group into a k-hot code, and an MLP decoder reconstructs
the image from the code. The loss is the reference's negative ELBO
(:func:`~.model.negative_elbo`: Bernoulli reconstruction plus each group's KL to
the uniform prior). Test metrics use the exact top-k code of each image (the
estimator's layer in ``eval()`` mode). Outputs under ``config.out``:

* ``checkpoint.pt``: model, optimizer, estimator state (AIMLE's buffers), random
  states and history, replaced atomically after every epoch; ``resume=True``
  continues a stopped run to the same result as an uninterrupted one.
* ``metrics.json``: see :func:`train`.
* ``reconstructions.png`` (test images and their reconstructions) and ``curves.png``.

References:
    M. Niepert, P. Minervini, L. Franceschi. Implicit MLE: Backpropagating Through
    Discrete Exponential Family Distributions. NeurIPS 2021.

    P. Minervini, L. Franceschi, M. Niepert. Adaptive Perturbation-Based Gradient
    Estimation for Discrete Latent Variable Models. AAAI 2023.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from .._digits import binarise, load
from .._digits_run import fit, topk_layer
from .._training import atomic_write_json, epoch_line, resolve_device, seed_everything
from .config import VaeConfig
from .model import DiscreteVAE, negative_elbo
from .plots import plot_losses, plot_reconstructions


def evaluate(
    model: DiscreteVAE, select: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, *, batch_size: int = 1000
) -> dict[str, float]:
    """Mean per-image ``loss`` (negative ELBO), ``reconstruction`` and ``kl`` over ``images [M, P]``.

    Call with the layer in ``eval()`` mode for the exact codes.

    Example:
        >>> import combgrad as cg
        >>> model = DiscreteVAE(pixels=4, groups=2, group_size=3, hidden=4).eval()
        >>> select = cg.differentiable(solver="topk", estimator="ste", k=1)
        >>> sorted(evaluate(model, select, torch.ones(5, 4)))
        ['kl', 'loss', 'reconstruction']
    """
    sums = torch.zeros(3, dtype=torch.float64, device=images.device)
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = images[start : start + batch_size]
            scores, _, reconstruction = model(x, select)
            sums += torch.stack([part.sum().double() for part in negative_elbo(scores, reconstruction, x)])
    loss, nll, kl = (float(value) / max(len(images), 1) for value in sums.cpu())
    return {"loss": loss, "reconstruction": nll, "kl": kl}


def train(
    config: VaeConfig,
    *,
    log: Callable[[str], None] = print,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train and evaluate one discrete-VAE run; write checkpoint, metrics.json and plots to ``config.out``.

    Args:
        config: The run's :class:`~.config.VaeConfig`.
        log: Where progress lines go.
        on_epoch_end: ``on_epoch_end(epoch, record)`` after each epoch's checkpoint
            (epoch from 1); an exception there stops the run as a kill would, and a
            later ``resume=True`` run continues it.

    Returns:
        The content of ``metrics.json``: ``method`` (the estimator), ``config`` (with
        the options in effect), ``history`` (one record per epoch: training ``loss``,
        times, ``test``: ``loss`` = negative ELBO, ``reconstruction`` and ``kl`` in
        nats per image, from the exact codes), ``final`` (``{"test": ...}`` of the
        last epoch), ``timing`` (``train_seconds``, ``solver_seconds``,
        ``solver_share``, ``eval_seconds``, ``wall_seconds_this_run``) and ``data``.

    Raises:
        ValueError: On a device this machine lacks, bad estimator options, unreadable
            MNIST files, or (with ``resume``) a checkpoint that is unreadable or holds
            another configuration.
        ModuleNotFoundError: If scikit-learn (the bundled digits) is missing.

    Example:
        >>> import tempfile
        >>> config = VaeConfig(out=tempfile.mkdtemp(), estimator="ste", hidden=8, epochs=1, progress=False,
        ...                    plots=False)
        >>> result = train(config, log=lambda line: None)
        >>> sorted(result["final"]["test"]), result["data"]["counts"]
        (['kl', 'loss', 'reconstruction'], {'train': 1438, 'test': 359})
    """
    started = time.perf_counter()
    owner = "vae"
    device = resolve_device(config.device, owner=owner)
    # The layer before the data: bad options fail at once (it draws no random numbers).
    layer, solver = topk_layer(owner, config.estimator, config.resolved_options(), int(config.k or 0))
    data = load(config.data)
    train_x = torch.from_numpy(binarise(data.train_images).reshape(len(data.train_images), -1)).to(device)
    test_x = torch.from_numpy(binarise(data.test_images).reshape(len(data.test_images), -1)).to(device)

    seed_everything(config.seed)
    model = DiscreteVAE(pixels=data.pixels, groups=int(config.groups or 0), group_size=int(config.group_size or 0),
                        hidden=int(config.hidden or 0)).to(device)
    layer.to(device)
    out = Path(config.out)

    def loss_of(batch: Sequence[torch.Tensor]) -> torch.Tensor:
        scores, _, reconstruction = model(batch[0], layer)
        return negative_elbo(scores, reconstruction, batch[0])[0].mean()

    epochs = int(config.epochs or 0)
    fitted = fit(
        owner=owner, out=out, identity=config.identity(), resume=config.resume, seed=config.seed, epochs=epochs,
        batch_size=int(config.batch_size or 0), lr=float(config.lr or 0), model=model, layer=layer, solver=solver,
        train_tensors=(train_x,), loss_of=loss_of, evaluate=lambda: {"test": evaluate(model, layer, test_x)},
        describe=_describe(epochs), device=device, progress=config.progress, log=log, on_epoch_end=on_epoch_end,
    )
    result: dict[str, Any] = {
        "method": config.estimator,
        "config": {**asdict(config), "options": config.resolved_options(), "device": str(device)},
        "history": fitted.history,
        "final": {"test": fitted.history[-1]["test"]},
        "timing": {**fitted.timing, "wall_seconds_this_run": 0.0},
        "data": {"source": data.source, "counts": data.counts(), "pixels": data.pixels, "side": data.side},
    }
    if config.plots:
        shown = test_x[:12]
        with torch.no_grad():
            _, _, reconstruction = model(shown, layer)
        side = data.side
        plot_reconstructions(
            shown.reshape(-1, side, side).cpu().numpy(), torch.sigmoid(reconstruction).reshape(-1, side, side).cpu().numpy(),
            out / "reconstructions.png",
            title=f"{config.estimator}: {config.groups} groups of {config.group_size}, {config.k} active",
        )
        plot_losses(fitted.history, out / "curves.png", title=f"discrete VAE on {data.source}, {config.estimator}")
    result["timing"]["wall_seconds_this_run"] = time.perf_counter() - started
    atomic_write_json(result, out / "metrics.json")
    return result


def _describe(epochs: int) -> Callable[[dict[str, Any]], str]:
    """The per-epoch log line (runs without a progress bar)."""

    def describe(record: dict[str, Any]) -> str:
        test = record["test"]
        return epoch_line(
            record, epochs,
            f"test negative ELBO {test['loss']:.3f} (reconstruction {test['reconstruction']:.3f}, KL {test['kl']:.3f})",
        )

    return describe


__all__ = ["evaluate", "train"]

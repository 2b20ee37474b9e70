"""The L2X training run behind ``combgrad l2x``: :func:`train`.

A selector network scores the pixels of each image, the ``topk`` solver
through any registered estimator selects ``k`` of them, and a classifier
trained jointly reads the image with every other pixel zeroed (Chen et al.
2018's instance-wise feature selection, with the k-subset sampler replaced by
the estimator, as in the I-MLE and AIMLE papers' L2X experiments). Outputs under
``config.out``:

* ``checkpoint.pt``: model, optimizer, estimator state (AIMLE's buffers), random
  states and history, replaced atomically after every epoch; ``resume=True``
  continues a stopped run to the same result as an uninterrupted one.
* ``metrics.json``: see :func:`train`.
* ``selections.npy``: ``[M, k]`` int16, the pixels selected in each test image
  (ascending), for the agreement across runs (:func:`~.evaluation.mean_jaccard`).
* ``selections.png`` (test digits with their selected pixels) and ``curves.png``.

References:
    J. Chen, L. Song, M. J. Wainwright, M. I. Jordan. Learning to Explain: An
    Information-Theoretic Perspective on Model Interpretation. ICML 2018.

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

import numpy as np
import torch
from torch.nn import functional as F

from .._digits import load
from .._digits_run import fit, topk_layer
from .._training import atomic_write, atomic_write_json, epoch_line, plot_curves, resolve_device, seed_everything
from .config import L2xConfig
from .evaluation import evaluate
from .model import L2XModel
from .plots import plot_selections


def _loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy; with one mask per sample (``[S, B, C]``), over samples and examples."""
    if logits.ndim == 3:
        labels = labels.expand(logits.shape[0], -1)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))


def train(
    config: L2xConfig,
    *,
    log: Callable[[str], None] = print,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train and evaluate one L2X run; write checkpoint, metrics.json, selections.npy and plots.

    Args:
        config: The run's :class:`~.config.L2xConfig`.
        log: Where progress lines go.
        on_epoch_end: ``on_epoch_end(epoch, record)`` after each epoch's checkpoint
            (epoch from 1); an exception there stops the run as a kill would, and a
            later ``resume=True`` run continues it.

    Returns:
        The content of ``metrics.json``: ``method`` (the estimator), ``config`` (with
        the options in effect), ``history`` (one record per epoch: ``loss``, times,
        ``test``: ``accuracy`` and ``loss`` of the classifier on the exact top-k
        pixels), ``final`` (``{"test": ...}`` of the last epoch), ``timing``
        (``train_seconds``, ``solver_seconds``, ``solver_share``, ``eval_seconds``,
        ``wall_seconds_this_run``), ``data`` (source, counts, pixels) and
        ``selections`` (the file of the test selections).

    Raises:
        ValueError: On a device this machine lacks, bad estimator options, a ``k``
            not below the pixel count, unreadable MNIST files, or (with ``resume``)
            a checkpoint that is unreadable or holds another configuration.
        ModuleNotFoundError: If scikit-learn (the bundled digits) is missing.

    Example:
        >>> import tempfile
        >>> config = L2xConfig(out=tempfile.mkdtemp(), estimator="ste", hidden=8, epochs=1, progress=False,
        ...                    plots=False)
        >>> result = train(config, log=lambda line: None)
        >>> sorted(result["final"]["test"]), result["data"]["counts"]
        (['accuracy', 'loss'], {'train': 1438, 'test': 359})
    """
    started = time.perf_counter()
    owner = "l2x"
    device = resolve_device(config.device, owner=owner)
    # The layer before the data: bad options fail at once (it draws no random numbers).
    layer, solver = topk_layer(owner, config.estimator, config.resolved_options(), config.k)
    data = load(config.data)
    if config.k >= data.pixels:
        raise ValueError(f"{owner}: k must be an integer < {data.pixels} (the pixels of an image), got {config.k}")
    train_x = torch.from_numpy(data.train_images.reshape(len(data.train_images), -1)).to(device)
    train_y = torch.from_numpy(data.train_labels).to(device)
    test_x = torch.from_numpy(data.test_images.reshape(len(data.test_images), -1)).to(device)
    test_y = torch.from_numpy(data.test_labels).to(device)

    seed_everything(config.seed)
    model = L2XModel(pixels=data.pixels, classes=10, hidden=int(config.hidden or 0)).to(device)
    layer.to(device)
    out = Path(config.out)

    def loss_of(batch: Sequence[torch.Tensor]) -> torch.Tensor:
        logits, _ = model(batch[0], layer)
        return _loss(logits, batch[1])

    def evaluate_test() -> dict[str, Any]:
        metrics, _ = evaluate(model, layer, test_x, test_y, config.k)
        return {"test": metrics}

    epochs = int(config.epochs or 0)
    fitted = fit(
        owner=owner, out=out, identity=config.identity(), resume=config.resume, seed=config.seed, epochs=epochs,
        batch_size=int(config.batch_size or 0), lr=float(config.lr or 0), model=model, layer=layer, solver=solver,
        train_tensors=(train_x, train_y), loss_of=loss_of, evaluate=evaluate_test, describe=_describe(epochs),
        device=device, progress=config.progress, log=log, on_epoch_end=on_epoch_end,
    )
    _, selections = evaluate(model, layer, test_x, test_y, config.k)
    chosen = selections.cpu().numpy().astype(np.int16)
    atomic_write(out / "selections.npy", lambda handle: np.save(handle, chosen))
    result: dict[str, Any] = {
        "method": config.estimator,
        "config": {**asdict(config), "options": config.resolved_options(), "device": str(device)},
        "history": fitted.history,
        "final": {"test": fitted.history[-1]["test"]},
        "timing": {**fitted.timing, "wall_seconds_this_run": 0.0},
        "data": {"source": data.source, "counts": data.counts(), "pixels": data.pixels, "side": data.side},
        "selections": "selections.npy",
    }
    if config.plots:
        shown = min(24, len(test_x))
        with torch.no_grad():
            logits, _ = model(test_x[:shown], layer)
        plot_selections(
            data.test_images[:shown], chosen[:shown], logits.argmax(-1).cpu().numpy(), data.test_labels[:shown],
            out / "selections.png", title=f"{config.estimator}: {config.k} selected pixels (red) per test digit",
        )
        plot_curves(fitted.history, out / "curves.png", rates={"accuracy": "accuracy"}, splits=("test",),
                    title=f"L2X on {data.source}, k={config.k}, {config.estimator}")
    result["timing"]["wall_seconds_this_run"] = time.perf_counter() - started
    atomic_write_json(result, out / "metrics.json")
    return result


def _describe(epochs: int) -> Callable[[dict[str, Any]], str]:
    """The per-epoch log line (runs without a progress bar)."""

    def describe(record: dict[str, Any]) -> str:
        return epoch_line(record, epochs, f"test accuracy {record['test']['accuracy']:.3f}")

    return describe


__all__ = ["train"]

"""The NRI training run behind ``combgrad nri``: :func:`train` tells one run's story.

The encoder reads each system's trajectories and scores every pair of particles;
the scores go through ``cg.differentiable(solver="spanning_tree", sense="max",
estimator=...)`` (a perturbed tree in training, the exact maximum spanning tree in
evaluation), and the decoder predicts the trajectory's next steps passing messages
along that tree. The objective is the reconstruction term of NRI's ELBO: the negative
log-likelihood of the predicted steps under a Gaussian of unit variance (in units of
the training set's standard deviation of positions and of velocities), up to its
constant, i.e. half the squared error summed over a system's steps, particles and
features, averaged over the systems. (Summed per system as in NRI rather than averaged
over its entries, so that the upstream gradient of a tree is not 360 times smaller:
I-MLE's and blackbox's ``lam`` are relative to it.) The KL term is left out: against a
uniform prior over trees it is, up to a constant, the negative entropy of the
perturb-and-MAP distribution, which has no closed form (the stochastic-softmax-trick
code behind the seed's runs estimates a KL from its Gumbel draws; any estimator here
trains on the reconstruction alone). Val and test are evaluated after every epoch.
Outputs under ``config.out``:

* ``data/``: the simulated springs systems (:mod:`.data`), reused when the settings match.
* ``checkpoint.pt``: model (encoder, decoder and the estimator's adaptive state),
  optimizer, scheduler, random states and history, replaced atomically after every
  epoch; with ``resume=True`` a stopped run continues to the same result as an
  uninterrupted one.
* ``metrics.json``: configuration, per-epoch history, final val/test metrics
  (``edge_accuracy``, ``precision``, ``recall``, ``reconstruction_mse``), timings.
* ``trees.png`` (true and learned trees of a few test systems) and ``curves.png``.

References:
    T. Kipf, E. Fetaya, K.-C. Wang, M. Welling, R. Zemel. Neural Relational
    Inference for Interacting Systems. ICML 2018.

    M. B. Paulus, D. Choi, D. Tarlow, A. Krause, C. J. Maddison. Gradient Estimation
    with Stochastic Softmax Tricks. NeurIPS 2020.

    P. Minervini, L. Franceschi, M. Niepert. Adaptive Perturbation-Based Gradient
    Estimation for Discrete Latent Variable Models. AAAI 2023.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...adapters import differentiable
from ...solvers import get as get_solver
from .._training import (
    epoch_line,
    Checkpoint,
    Progress,
    Stateful,
    TimedSolver,
    atomic_write_json,
    learning_rate_schedule,
    optimise_epoch,
    plot_curves,
    resolve_device,
    run_epochs,
    seed_everything,
    share,
    totals,
)
from .config import NriConfig
from .data import FEATURES, NriSplit, prepare_data
from .evaluation import edge_metrics, summary
from .model import NRIModel
from .plots import plot_trees

EVAL_BATCH_SIZE = 500


def feature_scale(split: NriSplit) -> torch.Tensor:
    """``[4]``: the standard deviation of positions (both axes pooled) and of velocities in ``split``.

    Inputs and targets are divided by it, so that positions and velocities weigh alike
    in the squared error (NRI rescales each to ``[-1, 1]`` for the same reason).

    Example:
        >>> import numpy as np
        >>> split = NriSplit(np.ones((2, 3, 4, 4), dtype=np.float32), np.zeros((2, 4, 4), dtype=np.uint8))
        >>> feature_scale(split).tolist()  # constant features: a scale of 1, not 0
        [1.0, 1.0, 1.0, 1.0]
    """
    trajectories = torch.from_numpy(split.trajectories).to(torch.float64)
    position, velocity = trajectories[..., :2].std(), trajectories[..., 2:].std()
    scale = torch.stack([position, position, velocity, velocity]).to(torch.float32)
    return torch.where(scale > 0, scale, torch.ones_like(scale))


def build_layer(config: NriConfig, solver: Any) -> nn.Module:
    """The latent-graph layer: ``solver`` (a max spanning tree) through the configured estimator.

    Raises:
        ValueError: On an option the estimator does not take or an invalid value.

    Example:
        >>> layer = build_layer(NriConfig(estimator="imle", options={"lam": 5.0}),
        ...                     get_solver("spanning_tree", sense="max"))
        >>> type(layer).__name__
        'DifferentiableSolver'
    """
    try:
        layer = differentiable(solver=solver, estimator=config.estimator, **config.resolved_options())
        # One call on a small instance refuses now, not after the data are simulated, an
        # estimator that cannot drive this solver (sst and relaxed_topk need argmax or
        # top-k). It changes no state (estimators adapt in backward) and its random draws
        # are reseeded before training.
        with torch.no_grad():
            layer(torch.ones(1, config.particles, config.particles))
    except TypeError as error:  # an unexpected keyword: the user's option, not a bug
        raise ValueError(f"nri: {error}") from error
    if isinstance(solver, TimedSolver):  # the probe is no part of the run's solver time
        solver.seconds, solver.calls, solver.instances = 0.0, 0, 0
    return layer


def _order(count: int, seed: int, epoch: int) -> torch.Tensor:
    """Epoch ``epoch``'s batch order, a function of ``(seed, epoch)`` alone (so a resumed run sees the same)."""
    return torch.randperm(count, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))


def evaluate_split(model: NRIModel, trajectories: torch.Tensor, trees: torch.Tensor) -> dict[str, float]:
    """Edge metrics of the exact trees (``model.eval()``) and the reconstruction MSE on one split.

    Args:
        model: The model (put in ``eval()`` mode here and left so).
        trajectories: Scaled trajectories ``[N, T, n, 4]`` on the model's device.
        trees: True adjacencies ``[N, n, n]``.

    Returns:
        ``edge_accuracy``, ``precision``, ``recall`` and ``reconstruction_mse`` (mean
        over systems, steps, particles and features of the scaled squared error).
    """
    model.eval()
    parts: dict[str, list[torch.Tensor]] = {}
    with torch.no_grad():
        for start in range(0, len(trajectories), EVAL_BATCH_SIZE):
            batch = trajectories[start : start + EVAL_BATCH_SIZE]
            predictions, tree, _ = model(batch)
            values = edge_metrics(tree, trees[start : start + EVAL_BATCH_SIZE])
            values["reconstruction_mse"] = ((predictions - batch[:, 1:]) ** 2).mean(dim=(1, 2, 3)).to(torch.float64)
            for name, value in values.items():
                parts.setdefault(name, []).append(value)
    return summary({name: torch.cat(value) for name, value in parts.items()})


def train(
    config: NriConfig,
    *,
    log: Callable[[str], None] = print,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train and evaluate one NRI run; write checkpoint, metrics.json and plots to ``config.out``.

    Args:
        config: The run's :class:`~.config.NriConfig`.
        log: Where progress lines go.
        on_epoch_end: Called as ``on_epoch_end(epoch, record)`` after each epoch's
            checkpoint is written (``epoch`` counts from 1); an exception raised there
            stops the run as a kill would, and a later ``resume=True`` run continues it.

    Returns:
        The content of ``metrics.json``: ``method`` (the estimator), ``config``,
        ``history`` (one record per epoch: loss, lr, times, val and test metrics),
        ``final`` (``{"val": ..., "test": ...}`` of the last epoch: ``edge_accuracy``,
        ``precision``, ``recall`` (equal for trees), ``reconstruction_mse``),
        ``timing`` (``train_seconds``, ``solver_seconds``, ``solver_share``,
        ``eval_seconds``, ``data_seconds``, ``wall_seconds_this_run``) and ``data``.

    Raises:
        ValueError: On a device this machine lacks, bad estimator options, or (with
            ``resume``) a checkpoint that is unreadable or holds another
            configuration; all before any training.

    Example:
        >>> import tempfile
        >>> config = NriConfig(out=tempfile.mkdtemp(), n_train=16, n_val=4, n_test=4, epochs=1, batch_size=8,
        ...                    encoder_hidden=8, decoder_hidden=8, progress=False, plots=False)
        >>> result = train(config, log=lambda line: None)
        >>> sorted(result["final"]["test"])
        ['edge_accuracy', 'precision', 'recall', 'reconstruction_mse']
    """
    threads = torch.get_num_threads()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    try:
        return _train(config, log, on_epoch_end)
    finally:
        torch.set_num_threads(threads)


def _train(
    config: NriConfig, log: Callable[[str], None], on_epoch_end: Callable[[int, dict[str, Any]], None] | None
) -> dict[str, Any]:
    """:func:`train` with torch's thread count set."""
    started = time.perf_counter()
    device = resolve_device(config.device, owner="nri")
    out = Path(config.out)
    checkpoint = Checkpoint(out / "checkpoint.pt", owner="nri", identity=config.identity())
    saved = checkpoint.read() if config.resume else None
    # The layer before the data, so that bad options fail at once (its probe's random
    # draws are reseeded before training).
    solver = TimedSolver(get_solver("spanning_tree", sense="max"))
    layer = build_layer(config, solver)

    out.mkdir(parents=True, exist_ok=True)
    splits, simulated = prepare_data(out / "data", config.counts(), config.physics(), config.data_seed)
    data_seconds = time.perf_counter() - started
    if simulated:
        log(f"simulated {sum(config.counts().values())} springs systems in {data_seconds:.1f} s under {out / 'data'}")
    scale = feature_scale(splits["train"]).to(device)
    tensors = {
        name: (torch.from_numpy(split.trajectories).to(device) / scale, torch.from_numpy(split.trees).to(device))
        for name, split in splits.items()
    }

    seed_everything(config.seed)
    model = NRIModel(
        layer, steps=config.steps, features=FEATURES, encoder_hidden=int(config.encoder_hidden or 0),
        decoder_hidden=int(config.decoder_hidden or 0), prediction_steps=int(config.prediction_steps or 1),
    ).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=float(config.lr or 0))
    batch_size = int(config.batch_size or 0)
    epochs = int(config.epochs or 0)
    train_x, _ = tensors["train"]
    steps_per_epoch = math.ceil(len(train_x) / batch_size)
    scheduler = learning_rate_schedule(optimizer, "cosine", epochs=epochs, steps_per_epoch=steps_per_epoch)
    states: dict[str, Stateful | None] = {"model": model, "optimizer": optimizer, "scheduler": scheduler}
    history: list[dict[str, Any]]
    start_epoch, history = 0, []
    if saved is not None:
        start_epoch, history = checkpoint.restore(saved, states, device)
        log(f"resuming {checkpoint.path} after epoch {start_epoch} of {epochs}")
    elif config.resume:
        log(f"no checkpoint at {checkpoint.path}: starting from scratch")

    def loss_of(batch: Any) -> torch.Tensor:
        predictions, _, _ = model(batch[0])
        return 0.5 * ((predictions - batch[0][:, 1:]) ** 2).sum(dim=(1, 2, 3)).mean()

    def train_epoch(epoch: int, progress: Progress) -> dict[str, Any]:
        model.train()
        order = _order(len(train_x), config.seed, epoch).to(device)
        batches = ((train_x[order[start : start + batch_size]],) for start in range(0, len(order), batch_size))
        solver.seconds = 0.0
        start = time.perf_counter()
        loss = optimise_epoch(batches, loss_of, optimizer, scheduler, progress)
        seconds = time.perf_counter() - start
        return {"loss": loss, "lr": optimizer.param_groups[0]["lr"], "train_seconds": seconds,
                "solver_seconds": solver.seconds, "solver_share": share(solver.seconds, seconds)}

    def evaluate(epoch: int) -> dict[str, Any]:
        start = time.perf_counter()
        records = {name: evaluate_split(model, *tensors[name]) for name in ("val", "test")}
        return {"eval_seconds": time.perf_counter() - start, **records}

    def save(epochs_done: int, history: list[dict[str, Any]]) -> None:
        checkpoint.save(epoch=epochs_done, history=history, states=states, device=device)

    history = run_epochs(
        epochs=epochs, steps_per_epoch=steps_per_epoch, train_epoch=train_epoch, evaluate=evaluate, save=save,
        describe=_describe(epochs), postfix=_postfix, start_epoch=start_epoch, history=history,
        progress=config.progress, log=log, on_epoch_end=on_epoch_end,
    )
    if not history:
        raise ValueError(f"nri: {checkpoint.path} holds no epochs to report")
    spent = totals(history, ["train_seconds", "solver_seconds", "eval_seconds"])
    result: dict[str, Any] = {
        "method": config.estimator,
        "config": {**asdict(config), "options": config.resolved_options(), "device": str(device)},
        "history": history,
        "final": {"val": history[-1]["val"], "test": history[-1]["test"]},
        "timing": {
            "data_seconds": data_seconds,
            "train_seconds": spent["train_seconds"],
            "solver_seconds": spent["solver_seconds"],
            "solver_share": share(spent["solver_seconds"], spent["train_seconds"]),
            "eval_seconds": spent["eval_seconds"],
            "wall_seconds_this_run": 0.0,  # set just before writing
        },
        "data": {"root": str(out / "data"), "counts": config.counts(), "physics": asdict(config.physics())},
    }
    if config.plots:
        _plot(config, model, splits["test"], tensors["test"][0], history, out)
    result["timing"]["wall_seconds_this_run"] = time.perf_counter() - started
    atomic_write_json(result, out / "metrics.json")
    return result


def _describe(epochs: int) -> Callable[[dict[str, Any]], str]:
    """The per-epoch log line (runs without a progress bar)."""

    def describe(record: dict[str, Any]) -> str:
        return epoch_line(
            record, epochs, f"val edge accuracy {record['val']['edge_accuracy']:.3f}, "
            f"test edge accuracy {record['test']['edge_accuracy']:.3f}"
        )

    return describe


def _postfix(record: dict[str, Any]) -> dict[str, str]:
    return {"loss": f"{record['loss']:.4f}", "val_acc": f"{record['val']['edge_accuracy']:.3f}"}


def _plot(
    config: NriConfig, model: NRIModel, test: NriSplit, scaled: torch.Tensor, history: list[dict[str, Any]], out: Path
) -> None:
    """``trees.png`` (up to six test systems) and ``curves.png``."""
    shown = min(6, len(test))
    model.eval()
    with torch.no_grad():
        _, learned, _ = model(scaled[:shown])
    plot_trees(
        test.trajectories[:shown], test.trees[:shown], learned.cpu().numpy(), out / "trees.png",
        title=f"{config.estimator}: test systems (true edges grey, learned: green right, red wrong)",
    )
    plot_curves(
        history, out / "curves.png", rates={"edge_accuracy": "edge accuracy", "precision": "precision"},
        title=f"NRI, {config.estimator}, {config.particles} particles, T={config.steps}",
    )


__all__ = ["build_layer", "evaluate_split", "feature_scale", "train"]

"""The run glue shared by the two top-k tasks on digits (``combgrad vae``, ``combgrad l2x``).

Both train a network whose scores go through the ``topk`` solver and any
registered estimator, on images resident on the run's device, with the shared
loop, checkpoints and resume of :mod:`combgrad.tasks._training`. What is common
lives here once: building the top-k layer (:func:`topk_layer`), the per-epoch
batch order (:func:`shuffled_order`), and the whole epoch loop with its
checkpoint and resume (:func:`fit`). Each task keeps its model, loss, metrics
and plots.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._checks import check_bool, check_number, check_positive_int
from ..adapters import differentiable
from ..gradients import names as gradient_names
from ..gradients import options as gradient_options
from ..solvers import get as get_solver
from ._training import (
    Checkpoint,
    Progress,
    Stateful,
    TimedSolver,
    learning_rate_schedule,
    optimise_epoch,
    run_epochs,
    share,
    synchronize,
    totals,
)


def check_estimator(owner: str, estimator: object) -> str:
    """``estimator`` if it is a registered estimator name, else ValueError listing them.

    Example:
        >>> check_estimator("l2x", "aimle")
        'aimle'
    """
    known = sorted(gradient_names())
    if not isinstance(estimator, str) or estimator not in known:
        raise ValueError(f"{owner}: estimator must be a registered estimator ({', '.join(known)}), got {estimator!r}")
    return estimator


def complete_run_settings(config: Any, owner: str, preset: Mapping[str, Any], sized: Sequence[str]) -> None:
    """Check the settings both digits tasks share and fill those left at None, in place.

    ``sized`` names the integer settings (network sizes, epochs, batch size) that
    take ``preset``'s value when None; ``lr`` does too. Every value is stored as a
    plain Python number, since a checkpoint records them and loads with weights_only.

    Raises:
        ValueError: Naming the setting, on a value that is not what it must be.
    """
    for name in sized:
        value = preset[name] if getattr(config, name) is None else getattr(config, name)
        setattr(config, name, check_positive_int(owner, name, value))
    config.lr = check_number(owner, "lr", preset["lr"] if config.lr is None else config.lr, positive=True)
    config.seed = check_positive_int(owner, "seed", config.seed, minimum=0)
    if config.data is not None and not isinstance(config.data, str):
        raise ValueError(f"{owner}: data must be a folder name or None, got {config.data!r}")
    for name in ("resume", "progress", "plots"):
        setattr(config, name, check_bool(owner, name, getattr(config, name)))
    if not isinstance(config.options, dict):
        raise ValueError(f"{owner}: options must be a dict, got {type(config.options).__name__}")
    check_estimator(owner, config.estimator)


def resolved_options(
    estimator: str, defaults: Mapping[str, Mapping[str, Any]], options: Mapping[str, Any], k: int
) -> dict[str, Any]:
    """The estimator options in effect: the task's ``defaults[estimator]``, then ``options``.

    An estimator that takes ``k`` (the sum-of-gamma noise's shape) gets the
    subset size unless ``options`` sets it: I-MLE's rule, ``k`` is the size of a
    solution.

    Example:
        >>> resolved_options("imle", {"imle": {"lam": 10.0}}, {"samples": 2}, 8)
        {'lam': 10.0, 'samples': 2, 'k': 8}
    """
    resolved = {**defaults.get(estimator, {}), **options}
    if "k" not in resolved and "k" in gradient_options(estimator):
        resolved["k"] = k
    return resolved


def topk_layer(owner: str, estimator: str, options: Mapping[str, Any], k: int) -> tuple[nn.Module, TimedSolver]:
    """The differentiable top-k layer (``[*, n] -> k-hot [*, n]``) and its timed solver.

    Raises:
        ValueError: On an option the estimator does not take or a bad value, named
            by the estimator (the user's mistake, reported before any training).

    Example:
        >>> layer, solver = topk_layer("l2x", "ste", {}, 2)
        >>> layer(torch.tensor([0.1, 0.9, 0.5])), solver.calls
        (tensor([0., 1., 1.]), 1)
    """
    solver = TimedSolver(get_solver("topk", k=k))
    try:
        layer = differentiable(solver=solver, estimator=estimator, **options)
    except TypeError as error:  # an unexpected keyword (OptionError is both): the user's option
        raise ValueError(f"{owner}: {error}") from error
    return layer, solver


def shuffled_order(count: int, seed: int, epoch: int) -> torch.Tensor:
    """The training order of epoch ``epoch``: a permutation of ``range(count)`` that depends on
    ``(seed, epoch)`` alone, so a resumed run sees the order an uninterrupted one saw.

    Example:
        >>> bool(torch.equal(shuffled_order(5, 0, 1), shuffled_order(5, 0, 1)))
        True
    """
    return torch.randperm(count, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))


def batches(tensors: Sequence[torch.Tensor], order: torch.Tensor, batch_size: int) -> Iterator[tuple[torch.Tensor, ...]]:
    """Consecutive batches of ``tensors`` (same first dim) in ``order``; the last may be smaller.

    Example:
        >>> [b[0].tolist() for b in batches([torch.arange(5)], torch.tensor([4, 3, 2, 1, 0]), 2)]
        [[4, 3], [2, 1], [0]]
    """
    order = order.to(tensors[0].device)
    for start in range(0, len(order), batch_size):
        chosen = order[start : start + batch_size]
        yield tuple(tensor[chosen] for tensor in tensors)


@dataclass
class Fitted:
    """What :func:`fit` returns: the history and the timing of the run so far."""

    history: list[dict[str, Any]]
    timing: dict[str, float]
    resumed_from: int


def fit(
    *,
    owner: str,
    out: Path,
    identity: Mapping[str, Any],
    resume: bool,
    seed: int,
    epochs: int,
    batch_size: int,
    lr: float,
    model: nn.Module,
    layer: nn.Module,
    solver: TimedSolver,
    train_tensors: Sequence[torch.Tensor],
    loss_of: Callable[[Sequence[torch.Tensor]], torch.Tensor],
    evaluate: Callable[[], dict[str, Any]],
    describe: Callable[[dict[str, Any]], str],
    device: torch.device,
    progress: bool,
    log: Callable[[str], None],
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
) -> Fitted:
    """Train ``model`` (and ``layer``'s state) for ``epochs`` with Adam; checkpoint after every epoch.

    ``model`` must be freshly made after ``seed_everything(seed)`` (the caller's
    job, so that its initial weights depend on the seed alone). With ``resume``
    the run continues from ``out/checkpoint.pt`` when it exists, with the
    model, optimizer, scheduler, layer (AIMLE's buffers) and random states as
    they were, to the same result as an uninterrupted run.

    Args:
        owner: The task's name (error messages).
        out: Output folder (``checkpoint.pt`` goes there).
        identity: The settings a resumed run must share with its checkpoint.
        resume: Continue from the checkpoint if there is one.
        seed: Seed of the batch order.
        epochs: Total epochs.
        batch_size: Examples per step.
        lr: Adam's learning rate (constant).
        model: The network, on ``device``.
        layer: The top-k layer (its state is checkpointed).
        solver: Its timed solver (solver seconds per epoch).
        train_tensors: Training tensors on ``device`` (same first dim).
        loss_of: Scalar loss of one batch of ``train_tensors``.
        evaluate: The epoch record's evaluation fields (e.g. ``{"test": {...}}``).
        describe: One log line per epoch (without a progress bar).
        device: The run's device.
        progress: Show a tqdm bar.
        log: Where log lines go.
        on_epoch_end: ``on_epoch_end(epoch, record)`` after each checkpoint (epoch from 1).

    Raises:
        ValueError: With ``resume``, on a checkpoint that is unreadable or holds
            another configuration; or if it holds no epochs to report.

    Example:
        >>> import tempfile
        >>> model, (layer, solver) = nn.Linear(3, 3), topk_layer("demo", "ste", {}, 1)
        >>> x = torch.rand(8, 3)
        >>> fitted = fit(owner="demo", out=Path(tempfile.mkdtemp()), identity={}, resume=False, seed=0, epochs=2,
        ...              batch_size=4, lr=0.1, model=model, layer=layer, solver=solver, train_tensors=(x,),
        ...              loss_of=lambda batch: -(layer(model(batch[0])) * batch[0]).mean(),
        ...              evaluate=lambda: {"test": {}}, describe=str, device=torch.device("cpu"), progress=False,
        ...              log=lambda line: None)
        >>> [record["epoch"] for record in fitted.history], solver.calls
        ([1, 2], 4)
    """
    checkpoint = Checkpoint(out / "checkpoint.pt", owner=owner, identity=identity)
    saved = checkpoint.read() if resume else None
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    count = len(train_tensors[0])
    steps_per_epoch = max(1, math.ceil(count / batch_size))
    scheduler = learning_rate_schedule(optimizer, "constant", epochs=epochs, steps_per_epoch=steps_per_epoch)
    states: dict[str, Stateful | None] = {"model": model, "optimizer": optimizer, "scheduler": scheduler,
                                          "layer": layer}
    history: list[dict[str, Any]]
    start_epoch, history = 0, []
    if saved is not None:
        start_epoch, history = checkpoint.restore(saved, states, device)
        log(f"resuming {checkpoint.path} after epoch {start_epoch} of {epochs}")
    elif resume:
        log(f"no checkpoint at {checkpoint.path}: starting from scratch")

    def train_epoch(epoch: int, bar: Progress) -> dict[str, Any]:
        model.train()
        layer.train()
        solver.seconds = 0.0
        start = time.perf_counter()
        loss = optimise_epoch(
            batches(train_tensors, shuffled_order(count, seed, epoch), batch_size), loss_of, optimizer, scheduler,
            bar, log_every=max(1, steps_per_epoch),
        )
        synchronize(device)
        seconds = time.perf_counter() - start
        solver_seconds = solver.seconds
        return {"loss": loss, "train_seconds": seconds, "solver_seconds": solver_seconds,
                "solver_share": share(solver_seconds, seconds)}

    def evaluate_epoch(epoch: int) -> dict[str, Any]:
        model.eval()
        layer.eval()
        start = time.perf_counter()
        with torch.no_grad():
            fields = evaluate()
        return {**fields, "eval_seconds": time.perf_counter() - start}

    def save(epochs_done: int, records: list[dict[str, Any]]) -> None:
        checkpoint.save(epoch=epochs_done, history=records, states=states, device=device)

    out.mkdir(parents=True, exist_ok=True)
    history = run_epochs(
        epochs=epochs, steps_per_epoch=steps_per_epoch, train_epoch=train_epoch, evaluate=evaluate_epoch, save=save,
        describe=describe, start_epoch=start_epoch, history=history, progress=progress, log=log,
        on_epoch_end=on_epoch_end,
    )
    if not history:
        raise ValueError(f"{owner}: {checkpoint.path} holds no epochs to report")
    model.eval()
    layer.eval()
    spent = totals(history, ["train_seconds", "solver_seconds", "eval_seconds"])
    timing = {
        "train_seconds": spent["train_seconds"],
        "solver_seconds": spent["solver_seconds"],
        "solver_share": share(spent["solver_seconds"], spent["train_seconds"]),
        "eval_seconds": spent["eval_seconds"],
    }
    return Fitted(history=history, timing=timing, resumed_from=start_epoch)


__all__ = ["Fitted", "batches", "check_estimator", "fit", "resolved_options", "shuffled_order", "topk_layer"]

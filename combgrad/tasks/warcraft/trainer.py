"""The Warcraft training run behind ``combgrad warcraft``: :func:`train` tells one run's story.

A cost network reads each map, its costs go through ``cg.differentiable(solver=
"shortest_path", estimator=...)`` into the Hamming loss against the true path (or
into the Fenchel–Young loss, or the direct baseline predicts the path mask with a
per-cell BCE); val and test are evaluated after every epoch. The parts live in
their own modules: settings in :mod:`.config`, data and batches in :mod:`.batches`,
networks in :mod:`.model`, metrics and prediction in :mod:`.evaluation`, and the
task-independent loop, checkpoints, schedules and atomic writes in
:mod:`combgrad.tasks._training`. Under torchrun the same run trains with
DistributedDataParallel (see :func:`train`). Outputs under ``config.out``, all
written by rank 0 alone in a distributed run:

* ``checkpoint.pt``: model, optimizer, scheduler, estimator state (AIMLE's buffers),
  random states (every rank's in a distributed run) and history, replaced
  atomically after every epoch; with
  ``resume=True`` a stopped run continues from it to the same result as an
  uninterrupted run.
* ``metrics.json``: configuration, per-epoch history, final val/test metrics,
  timings (with the share of training time spent in solver calls).
* ``paths.png`` (sample test maps with true and predicted paths and costs) and
  ``curves.png`` (loss and val/test rates per epoch).

References:
    M. Vlastelica, A. Paulus, V. Musil, G. Martius, M. Rolinek. Differentiation of
    Blackbox Combinatorial Solvers. ICLR 2020.

    M. Niepert, P. Minervini, L. Franceschi. Implicit MLE: Backpropagating Through
    Discrete Exponential Family Distributions. NeurIPS 2021.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ...adapters import differentiable
from ...gradients import losses
from ...solvers import get as get_solver
from .._training import (
    epoch_line,
    Checkpoint,
    World,
    average_buffers,
    barrier,
    broadcast_buffers,
    broadcast_object,
    gather_objects,
    local_batch_size,
    process_group,
    rng_state,
    set_rng_state,
    shard,
    sum_over_processes,
    summarise,
    synchronize,
    world_from_environment,
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
from . import data as data_module
from .batches import ResidentSplit, channel_statistics, prepare_data, shuffled_order
from .config import TrainConfig
from .data import WarcraftSplit
from .evaluation import Predictor
from .model import build_model
from .plots import plot_paths

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def build_loss(config: TrainConfig, solver: Any, device: torch.device) -> tuple[nn.Module | None, Loss]:
    """The training loss ``loss(output [B, k, k], true_paths [B, k, k]) -> scalar``, and its
    estimator layer (None for Fenchel–Young and the direct baseline).

    Example:
        >>> layer, loss = build_loss(TrainConfig(estimator="blackbox"), get_solver("shortest_path"),
        ...                          torch.device("cpu"))
        >>> float(loss(torch.ones(1, 3, 3), torch.eye(3)[None]))
        0.0
    """
    options = config.resolved_options()
    if config.direct:
        return None, lambda logits, paths: F.binary_cross_entropy_with_logits(logits, paths)
    try:
        if config.loss == "fy":
            # One call on a 2x2 map checks the options now rather than after the data
            # are made (the random numbers it draws are reseeded before training).
            losses.fenchel_young(torch.ones(1, 2, 2), torch.eye(2)[None], solver=solver, **options)
            return None, lambda costs, paths: losses.fenchel_young(costs, paths, solver=solver, **options).mean()
        layer = differentiable(solver=solver, estimator=config.estimator, **options).to(device)
    except TypeError as error:  # an unexpected keyword: the user's option, not a bug
        raise ValueError(f"warcraft: {error}") from error
    return layer, lambda costs, paths: losses.hamming(layer(costs), paths).mean()


def train(
    config: TrainConfig,
    *,
    log: Callable[[str], None] = print,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train and evaluate one Warcraft run; write checkpoint, metrics.json and plots to ``config.out``.

    Started by ``torchrun --nproc-per-node N`` (``WORLD_SIZE > 1`` in the
    environment), the run trains with DistributedDataParallel: Gloo on the CPU,
    NCCL on CUDA with one GPU per process; ``batch_size`` stays the global batch,
    each process solving its own ``batch_size / N`` maps of it
    (:mod:`combgrad.tasks._training.distributed`). Rank 0 alone reads the
    checkpoint and writes every output; the others receive what they need from it.

    Args:
        config: The run's :class:`~.config.TrainConfig`.
        log: Where progress lines go (rank 0's only in a distributed run).
        on_epoch_end: Called as ``on_epoch_end(epoch, record)`` after each epoch's
            checkpoint is written (``epoch`` counts from 1); an exception raised there
            stops the run as a kill would, and a later ``resume=True`` run continues it.

    Returns:
        The content of ``metrics.json``: ``config``, ``history`` (one record per epoch:
        loss, lr, times, val and test metrics), ``final`` (val and test metrics of the
        last epoch), ``timing`` (seconds; ``solver_share`` is the fraction of the
        training steps' time spent in solver calls, timed with CUDA events on a GPU;
        rank 0's in a distributed run) and ``data`` (root, sizes and the share of maps
        whose optimum is not unique).

    Raises:
        ValueError: On a device this machine lacks, bad estimator options, unreadable
            data, a batch size that the processes cannot share equally, or (with
            ``resume``) a checkpoint that is unreadable or holds another
            configuration; all before any training.

    Example:
        >>> import tempfile
        >>> config = TrainConfig(out=tempfile.mkdtemp(), n_train=20, n_val=10, n_test=10, epochs=1,
        ...                      batch_size=10, progress=False, plots=False)
        >>> result = train(config, log=lambda line: None)
        >>> sorted(result["final"]["test"])
        ['cost_optimal', 'exact', 'regret', 'valid']
    """
    started = time.perf_counter()
    world = world_from_environment(owner="warcraft")
    device = resolve_device(config.device, owner="warcraft")
    if world.distributed:
        local_batch_size(config.batch_size, world, owner="warcraft")  # refuse before joining the group
    with process_group(world, device) as device:
        return _train(config, world, device, started, log if world.main else _quiet, on_epoch_end)


def _quiet(line: str) -> None:
    """The log of processes other than rank 0."""


def _read_checkpoint(checkpoint: Checkpoint, world: World) -> dict[str, Any] | None:
    """Rank 0 reads the checkpoint; every process gets its content (or rank 0's error)."""
    content: dict[str, Any] | None = None
    problem: str | None = None
    if world.main:
        try:
            content = checkpoint.read()
        except ValueError as error:
            if not world.distributed:
                raise
            problem = str(error)
    content, problem = broadcast_object((content, problem), world)
    if problem is not None:
        raise ValueError(problem)
    return content


def _train(
    config: TrainConfig,
    world: World,
    device: torch.device,
    started: float,
    log: Callable[[str], None],
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None,
) -> dict[str, Any]:
    """:func:`train` inside the process group (``world``), on this process's ``device``."""
    out = Path(config.out)
    checkpoint = Checkpoint(out / "checkpoint.pt", owner="warcraft", identity=config.identity())
    saved = _read_checkpoint(checkpoint, world) if config.resume else None
    # The estimator before the data (it draws no random numbers): bad options fail at once.
    solver, eval_solver = TimedSolver(get_solver("shortest_path")), TimedSolver(get_solver("shortest_path"))
    layer, loss_fn = build_loss(config, solver, device)
    if world.main:
        out.mkdir(parents=True, exist_ok=True)
        data_root, splits = prepare_data(config, log=log)
    barrier(world)  # a synthetic set is generated by rank 0 alone; the others then load it
    if not world.main:
        data_root, splits = prepare_data(config, log=log)
    data_seconds = time.perf_counter() - started

    seed_everything(config.seed)
    model = build_model(config.model, config.size, direct=config.direct, channels=config.channels).to(device)
    mean, std = channel_statistics(splits["train"].maps)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    batch_size = local_batch_size(config.batch_size, world, owner="warcraft")
    train_data = ResidentSplit(splits["train"], device)
    steps_per_epoch = math.ceil(len(shard(torch.arange(len(train_data)), world)) / batch_size)
    scheduler = learning_rate_schedule(optimizer, config.schedule, epochs=config.epochs, steps_per_epoch=steps_per_epoch)
    predictor = Predictor(
        model, mean, std, direct=config.direct, normalise=config.normalise, solver=eval_solver, device=device
    )
    trained: nn.Module = model
    if world.distributed:
        from torch.nn.parallel import DistributedDataParallel

        trained = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    network = Predictor(  # the same network, through DDP's gradient averaging when distributed
        trained, mean, std, direct=config.direct, normalise=config.normalise, solver=eval_solver, device=device
    )
    states: dict[str, Stateful | None] = {"model": model, "optimizer": optimizer, "scheduler": scheduler,
                                          "layer": layer}
    history: list[dict[str, Any]]
    start_epoch, history = 0, []
    if saved is not None:
        start_epoch, history = checkpoint.restore(saved, states, device)
        _restore_rank_rng(saved, world, device, log)
        log(f"resuming {checkpoint.path} after epoch {start_epoch} of {config.epochs}")
    else:
        if config.resume:
            log(f"no checkpoint at {checkpoint.path}: starting from scratch")
        if world.rank:  # every process draws its own estimator noise; rank 0's is a plain run's
            seed_everything((config.seed + 1_000_003 * world.rank) % 2**32)

    def train_epoch(epoch: int, progress: Progress) -> dict[str, Any]:
        model.train()
        order = shard(shuffled_order(len(train_data), config.seed, epoch), world)
        solver.seconds = 0.0
        start = time.perf_counter()
        loss = optimise_epoch(
            train_data.batches(order, batch_size),
            lambda batch: loss_fn(network.output(network.images(batch[0])), batch[1]),
            optimizer, scheduler, progress, log_every=config.log_every,
            after_step=(lambda: average_buffers(layer, world)) if world.distributed else None,
            reduce=lambda total: sum_over_processes(total, world),
        )
        synchronize(device)
        seconds = time.perf_counter() - start
        return {"loss": loss, "lr": optimizer.param_groups[0]["lr"], "train_seconds": seconds,
                "solver_seconds": solver.seconds, "solver_share": share(solver.seconds, seconds)}

    def evaluate(epoch: int) -> dict[str, Any]:
        start, eval_solver.seconds = time.perf_counter(), 0.0
        broadcast_buffers(model, world)  # one model everywhere: rank 0's batch-norm statistics
        val = _evaluate(predictor, splits["val"], config.eval_batch_size, world)
        test = _evaluate(predictor, splits["test"], config.eval_batch_size, world)
        return {"eval_seconds": time.perf_counter() - start, "eval_solver_seconds": eval_solver.seconds,
                "val": val, "test": test}

    def save(epochs_done: int, history: list[dict[str, Any]]) -> None:
        ranks_rng = gather_objects(rng_state(device), world) if world.distributed else None
        if not world.main:
            return
        extra: dict[str, Any] = {"standardisation": {"mean": mean, "std": std}}
        if ranks_rng is not None:
            extra["ranks_rng"] = ranks_rng
        checkpoint.save(epoch=epochs_done, history=history, states=states, device=device, extra=extra)

    history = run_epochs(
        epochs=config.epochs, steps_per_epoch=steps_per_epoch, train_epoch=train_epoch, evaluate=evaluate,
        save=save, describe=_describe(config.epochs), postfix=_postfix, start_epoch=start_epoch,
        history=history, progress=config.progress and world.main, log=log, on_epoch_end=on_epoch_end,
    )
    if not history:  # resumed a finished run with nothing left to train
        raise ValueError(f"warcraft: {checkpoint.path} holds no epochs to report")
    result = _result(config, device, history, data_root, splits, data_seconds, world)
    if world.main:
        if config.plots:
            _plot(config, predictor, splits["test"], history, out)
        result["timing"]["wall_seconds_this_run"] = time.perf_counter() - started
        atomic_write_json(result, out / "metrics.json")
    barrier(world)  # no process leaves (and tears the group down) before rank 0 has written
    return result


def _restore_rank_rng(saved: dict[str, Any], world: World, device: torch.device, log: Callable[[str], None]) -> None:
    """Each process continues its own random streams from a distributed run's checkpoint.

    The checkpoint's main ``rng`` entry is rank 0's (restored already); the others'
    are under ``extra["ranks_rng"]``. With another number of processes than the run
    that wrote it, the other ranks draw fresh streams: the run continues, but not
    exactly as the uninterrupted one would.
    """
    ranks_rng = saved["extra"].get("ranks_rng")
    if not world.distributed:
        return
    if isinstance(ranks_rng, list) and len(ranks_rng) == world.size:
        if world.rank:
            set_rng_state(ranks_rng[world.rank], device)
        return
    log(f"the checkpoint was written by {len(ranks_rng) if isinstance(ranks_rng, list) else 1} processes, "
        f"not {world.size}: the other ranks' random streams start afresh")
    if world.rank:
        seed_everything((int(saved["epoch"]) * 1_000_003 + world.rank) % 2**32)


def _evaluate(predictor: Predictor, split: WarcraftSplit, batch_size: int, world: World) -> dict[str, float]:
    """The split's mean metrics; a distributed run evaluates one contiguous block per process."""
    if not world.distributed:
        return predictor.evaluate(split, batch_size)
    block = math.ceil(len(split) / world.size)
    mine = predictor.per_example(split, batch_size, start=world.rank * block, stop=(world.rank + 1) * block)
    parts = gather_objects(mine, world)
    return summarise({name: torch.cat([part[name] for part in parts]) for name in mine})


def _describe(epochs: int) -> Callable[[dict[str, Any]], str]:
    """The per-epoch log line (runs without a progress bar)."""

    def describe(record: dict[str, Any]) -> str:
        return epoch_line(
            record, epochs, f"val cost-optimal {record['val']['cost_optimal']:.3f}, "
            f"test cost-optimal {record['test']['cost_optimal']:.3f}"
        )

    return describe


def _postfix(record: dict[str, Any]) -> dict[str, str]:
    return {"loss": f"{record['loss']:.3f}", "val_opt": f"{record['val']['cost_optimal']:.3f}"}


def _result(
    config: TrainConfig,
    device: torch.device,
    history: list[dict[str, Any]],
    data_root: Path,
    splits: dict[str, WarcraftSplit],
    data_seconds: float,
    world: World,
) -> dict[str, Any]:
    """The content of ``metrics.json`` (see :func:`train`)."""
    spent = totals(history, ["train_seconds", "solver_seconds", "eval_seconds"])
    meta = data_module.read_meta(data_root, config.size) or {}
    return {
        "method": config.method(),
        "config": {**asdict(config), "options": config.resolved_options(), "device": str(device),
                   "processes": world.size},
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
        "data": {
            "root": str(data_root),
            "counts": {name: len(split) for name, split in splits.items()},
            "non_unique_optimum": meta.get("non_unique_optimum"),
        },
    }


def _plot(
    config: TrainConfig, predictor: Predictor, test: WarcraftSplit, history: Sequence[dict[str, Any]], out: Path
) -> None:
    """``paths.png`` (up to six test maps) and ``curves.png``."""
    shown = test.head(6)
    costs, predicted = predictor(torch.from_numpy(shown.maps))
    plot_paths(
        shown.maps, shown.shortest_paths, predicted.cpu().numpy(), shown.vertex_weights.astype(np.float64),
        costs.cpu().numpy(),
        out / "paths.png",
        title=f"{config.method()}: test maps (true path white, predicted red)",
        predicted_label="path probability" if config.direct else "predicted cost",
    )
    plot_curves(
        history, out / "curves.png", rates={"cost_optimal": "cost-optimal", "exact": "exact match"},
        title=f"{config.method()} on {config.size}x{config.size}",
    )


__all__ = ["build_loss", "train"]

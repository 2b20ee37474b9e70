"""The predict-then-optimize run behind ``combgrad pto``: :func:`train` tells one run's story.

A linear model (or an MLP) predicts the costs of PyEPO's problems from features;
a method of :mod:`.methods` turns the predictions into a loss through the
problem's solver; the test set's normalized regret is measured after every epoch.
The parts live in their own modules: settings in :mod:`.config`, data in
:mod:`.data` and :mod:`.problems`, the methods in :mod:`.methods`, the metric in
:mod:`.metrics`, and the task-independent loop, checkpoints and atomic writes in
:mod:`combgrad.tasks._training`. Outputs under ``config.out``:

* ``checkpoint.pt``: model, optimizer, the method's layer (AIMLE's buffers), random
  states and history, replaced atomically after every epoch; with ``resume=True``
  a stopped run continues from it to the same result as an uninterrupted run.
* ``metrics.json``: method, configuration, per-epoch history (each entry's
  ``"test"`` holds ``normalized_regret``), final test metrics, timings (seconds
  per epoch and the share of training time spent in solver calls).
* ``curves.png``: training loss and test normalized regret per epoch.

References:
    B. Tang, E. B. Khalil. PyEPO: A PyTorch-based End-to-End Predict-then-Optimize
    Library for Linear and Integer Programming. Mathematical Programming Computation, 2024.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._training import (
    epoch_line,
    Checkpoint,
    Progress,
    Stateful,
    TimedSolver,
    atomic_write_json,
    learning_rate_schedule,
    optimise_epoch,
    resolve_device,
    run_epochs,
    seed_everything,
    share,
    synchronize,
    totals,
)
from .config import PtoConfig
from .methods import build_method
from .metrics import regret
from .model import build_model
from .plots import plot_learning_curve
from .problems import Batch, Problem, Split, build_problem


def epoch_order(count: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled order of ``count`` training instances in ``epoch`` (from 0), from its own generator.

    A function of (seed, epoch) alone, so a resumed run and a run of another library
    given the same order (``benchmarks/pto_table.py``) see the same batches.

    Example:
        >>> bool((epoch_order(5, 0, 1) == epoch_order(5, 0, 1)).all()), sorted(epoch_order(5, 0, 1).tolist())
        (True, [0, 1, 2, 3, 4])
    """
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(count, generator=generator)


def batches(split: Split, order: torch.Tensor, batch_size: int) -> Iterator[Batch]:
    """``split``'s instances in ``order``, ``batch_size`` at a time (the last batch may be smaller).

    Example:
        >>> import combgrad as cg
        >>> solver = cg.solvers.get("knapsack", weights=[1, 1], capacity=1)
        >>> split = Split.label(torch.zeros(5, 1), torch.rand(5, 2), solver)
        >>> [len(batch.costs) for batch in batches(split, epoch_order(5, 0, 0), 2)]
        [2, 2, 1]
    """
    for start in range(0, len(order), batch_size):
        yield split.batch(order[start : start + batch_size].to(split.costs.device))


def predict(model: nn.Module, features: torch.Tensor, batch_size: int) -> torch.Tensor:
    """The model's cost predictions ``[N, m]`` for ``features [N, p]``, in eval mode, without gradients.

    Example:
        >>> predict(torch.nn.Linear(3, 2), torch.zeros(5, 3), batch_size=2).shape
        torch.Size([5, 2])
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return torch.cat([model(features[start : start + batch_size])
                              for start in range(0, len(features), batch_size)])
    finally:
        model.train(was_training)


def evaluate(model: nn.Module, split: Split, solver: Any, batch_size: int) -> dict[str, float]:
    """Test metrics of ``model`` on ``split``: ``normalized_regret`` (PyEPO's), ``regret`` (mean,
    unnormalized) and ``optimal`` (share of instances whose decision has zero regret).

    Example:
        >>> import combgrad as cg
        >>> solver = cg.solvers.get("knapsack", weights=[1, 1], capacity=1)
        >>> split = Split.label(torch.eye(2), torch.tensor([[1.0, 3.0], [2.0, 1.0]]), solver)
        >>> model = torch.nn.Linear(2, 2, bias=False)
        >>> _ = model.weight.data.copy_(torch.eye(2))  # predicts the features: item 0, then item 1
        >>> metrics = evaluate(model, split, solver, batch_size=2)  # regrets 3 - 1 and 2 - 1; optima 3, 2
        >>> round(metrics["normalized_regret"], 6), metrics["regret"], metrics["optimal"]
        (0.6, 1.5, 0.0)
    """
    costs = predict(model, split.features, batch_size)
    per_instance = regret(solver, costs, split.costs, normalized=False, reduction="none",
                          objective_true=split.objectives)
    magnitude = split.objectives.abs()
    return {
        "normalized_regret": float(per_instance.sum() / (magnitude.sum() + 1e-7)),
        "regret": float(per_instance.mean()),
        # Zero up to float64 rounding of the objectives' sums.
        "optimal": float((per_instance <= 1e-9 * (1 + magnitude)).to(torch.float64).mean()),
    }


def train(
    config: PtoConfig,
    *,
    log: Callable[[str], None] = print,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train and evaluate one predict-then-optimize run; write checkpoint, metrics.json and plot.

    Args:
        config: The run's :class:`~.config.PtoConfig`.
        log: Where progress lines go.
        on_epoch_end: Called as ``on_epoch_end(epoch, record)`` after each epoch's
            checkpoint is written (``epoch`` from 1); an exception raised there stops
            the run as a kill would, and a later ``resume=True`` run continues it.

    Returns:
        The content of ``metrics.json``: ``method``, ``config``, ``history`` (one record
        per epoch: loss, lr, times, ``"test": {"normalized_regret", "regret", "optimal"}``),
        ``final`` (``{"test": ...}`` of the last epoch), ``timing`` (seconds;
        ``seconds_per_epoch`` is the median training time of an epoch, ``solver_share``
        the fraction of it spent in solver calls) and ``data`` (problem, counts, and the
        edges or weights it was made with).

    Raises:
        ValueError: On a device this machine lacks, bad method options, or (with
            ``resume``) a checkpoint that is unreadable or holds another
            configuration; all before any training.

    Example:
        >>> import tempfile
        >>> config = PtoConfig(out=tempfile.mkdtemp(), problem="knapsack", method="spo+", n_train=32,
        ...                    n_test=16, num_items=8, epochs=1, progress=False, plots=False)
        >>> result = train(config, log=lambda line: None)
        >>> sorted(result["final"]["test"]), result["method"]
        (['normalized_regret', 'optimal', 'regret'], 'spo+')
    """
    started = time.perf_counter()
    device = resolve_device(config.device, owner="pto")
    out = Path(config.out)
    checkpoint = Checkpoint(out / "checkpoint.pt", owner="pto", identity=config.identity())
    saved = checkpoint.read() if config.resume else None
    problem = build_problem(config)
    train_split, test_split = problem.train.to(device), problem.test.to(device)
    solver, eval_solver = TimedSolver(problem.solver), TimedSolver(problem.solver)
    layer, loss_fn = build_method(config.method, solver, config.options, train_split)
    if isinstance(layer, nn.Module):
        layer = layer.to(device)
    _check_method(config, loss_fn, train_split)
    data_seconds = time.perf_counter() - started

    seed_everything(config.seed)
    model = build_model(config.model, config.num_feat, problem.num_costs, hidden=config.hidden).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    steps_per_epoch = math.ceil(len(train_split) / config.batch_size)
    scheduler = learning_rate_schedule(optimizer, "constant", epochs=config.epochs, steps_per_epoch=steps_per_epoch)
    states: dict[str, Stateful | None] = {"model": model, "optimizer": optimizer, "scheduler": scheduler,
                                          "layer": layer}
    history: list[dict[str, Any]]
    start_epoch, history = 0, []
    if saved is not None:
        start_epoch, history = checkpoint.restore(saved, states, device)
        log(f"resuming {checkpoint.path} after epoch {start_epoch} of {config.epochs}")
    elif config.resume:
        log(f"no checkpoint at {checkpoint.path}: starting from scratch")
    out.mkdir(parents=True, exist_ok=True)

    def train_epoch(epoch: int, progress: Progress) -> dict[str, Any]:
        model.train()
        if isinstance(layer, nn.Module):
            layer.train()
        solver.seconds = 0.0
        start = time.perf_counter()
        loss = optimise_epoch(
            batches(train_split, epoch_order(len(train_split), config.seed, epoch), config.batch_size),
            lambda batch: loss_fn(model(batch[0]), Batch(*batch)),
            optimizer, scheduler, progress,
        )
        synchronize(device)
        seconds = time.perf_counter() - start
        return {"loss": loss, "lr": optimizer.param_groups[0]["lr"], "train_seconds": seconds,
                "solver_seconds": solver.seconds, "solver_share": share(solver.seconds, seconds)}

    def evaluate_epoch(epoch: int) -> dict[str, Any]:
        start, eval_solver.seconds = time.perf_counter(), 0.0
        test = evaluate(model, test_split, eval_solver, config.eval_batch_size)
        return {"eval_seconds": time.perf_counter() - start, "eval_solver_seconds": eval_solver.seconds,
                "test": test}

    def save(epochs_done: int, history: list[dict[str, Any]]) -> None:
        checkpoint.save(epoch=epochs_done, history=history, states=states, device=device)

    history = run_epochs(
        epochs=config.epochs, steps_per_epoch=steps_per_epoch, train_epoch=train_epoch, evaluate=evaluate_epoch,
        save=save, describe=_describe(config.epochs), postfix=_postfix, start_epoch=start_epoch,
        history=history, progress=config.progress, log=log, on_epoch_end=on_epoch_end,
    )
    if not history:
        raise ValueError(f"pto: {checkpoint.path} holds no epochs to report")
    result = _result(config, device, history, problem, data_seconds)
    if config.plots:
        plot_learning_curve(history, out / "curves.png",
                            title=f"{config.method} on {config.problem} (deg {config.deg}, noise {config.noise})")
    result["timing"]["wall_seconds_this_run"] = time.perf_counter() - started
    atomic_write_json(result, out / "metrics.json")
    return result


def _check_method(config: PtoConfig, loss_fn: Callable[[torch.Tensor, Batch], torch.Tensor], train: Split) -> None:
    """One loss on two training instances, so that a bad option fails now, before training.

    Its random draws do not matter: the run is seeded after it.
    """
    batch = train.batch(torch.arange(min(2, len(train)), device=train.costs.device))
    try:
        with torch.no_grad():
            loss_fn(batch.costs.to(torch.float32), batch)
    except TypeError as error:
        raise ValueError(f"pto: method {config.method!r}: {error}") from error


def _describe(epochs: int) -> Callable[[dict[str, Any]], str]:
    """The per-epoch log line (runs without a progress bar)."""

    def describe(record: dict[str, Any]) -> str:
        return epoch_line(record, epochs, f"test normalized regret {record['test']['normalized_regret']:.4f}")

    return describe


def _postfix(record: dict[str, Any]) -> dict[str, str]:
    return {"loss": f"{record['loss']:.3f}", "test_regret": f"{record['test']['normalized_regret']:.4f}"}


def _result(
    config: PtoConfig, device: torch.device, history: list[dict[str, Any]], problem: Problem, data_seconds: float
) -> dict[str, Any]:
    """The content of ``metrics.json`` (see :func:`train`)."""
    spent = totals(history, ["train_seconds", "solver_seconds", "eval_seconds"])
    return {
        "method": config.method,
        "config": {**asdict(config), "options": config.resolved_options(), "device": str(device)},
        "history": history,
        "final": {"test": history[-1]["test"]},
        "timing": {
            "data_seconds": data_seconds,
            "train_seconds": spent["train_seconds"],
            "seconds_per_epoch": statistics.median(record["train_seconds"] for record in history),
            "solver_seconds": spent["solver_seconds"],
            "solver_share": share(spent["solver_seconds"], spent["train_seconds"]),
            "eval_seconds": spent["eval_seconds"],
            "wall_seconds_this_run": 0.0,  # set just before writing
        },
        "data": {"problem": problem.name, "counts": {"train": len(problem.train), "test": len(problem.test)},
                 "solver": getattr(problem.solver, "name", type(problem.solver).__name__), **problem.details},
    }


__all__ = ["batches", "epoch_order", "evaluate", "predict", "train"]

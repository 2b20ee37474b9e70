"""The training loop: optimisation steps within an epoch, and epochs with evaluation,
checkpoints, resume, a progress bar and an ``on_epoch_end`` hook.

A task supplies what is its own (how a batch gives a loss, how a model is
evaluated, which states a checkpoint holds) and :func:`run_epochs` does the rest
the same way for every task: after each epoch it appends one record to the
history, writes the checkpoint, logs one line when there is no progress bar, and
calls ``on_epoch_end``. An exception raised there stops the run as a kill would;
the checkpoint written just before lets a resumed run continue to the same result.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import torch

from ..._checks import check_positive_int


class Progress(Protocol):
    """The part of a tqdm bar the loop uses."""

    def update(self, n: int = 1) -> Any: ...  # noqa: D102

    def set_postfix(self, **values: Any) -> Any: ...  # noqa: D102


def optimise_epoch(
    batches: Iterable[Sequence[torch.Tensor]],
    loss_of: Callable[[Sequence[torch.Tensor]], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    progress: Progress,
    *,
    log_every: int = 50,
    after_step: Callable[[], None] | None = None,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> float:
    """One pass of optimisation steps; returns the example-weighted mean loss.

    The loss is summed on its own device and read back (one host sync) only every
    ``log_every`` steps, for the progress bar, and once at the end: on a GPU a read
    per step would stall the queue of kernels at every step.

    Args:
        batches: Tuples of tensors; the first tensor's first dim is the batch size.
        loss_of: Scalar loss of one batch (a mean over its examples).
        optimizer: Stepped after each backward pass.
        scheduler: Stepped after each optimisation step.
        progress: Advanced by one per step; its running mean loss is refreshed
            every ``log_every`` steps and after the last one.
        log_every: Steps between two reads of the running loss (``>= 1``).
        after_step: Called after each optimisation step (e.g. to average an
            estimator's adaptive state across processes).
        reduce: Applied to the float64 ``[loss sum, example count]`` of this process
            before the mean is taken (e.g. a sum over the processes of a
            distributed run, so that every process returns the global mean).

    Example:
        >>> from types import SimpleNamespace
        >>> weight = torch.zeros(1, requires_grad=True)
        >>> optimizer = torch.optim.SGD([weight], lr=0.5)
        >>> scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
        >>> bar = SimpleNamespace(update=lambda n=1: None, set_postfix=lambda **values: None)
        >>> batches = [(torch.ones(2),), (torch.ones(4),)]
        >>> optimise_epoch(batches, lambda b: ((weight - b[0]) ** 2).mean(), optimizer, scheduler, bar)
        0.3333333333333333
        >>> weight.item()  # the first step's loss 1 (2 examples) moved it; the second's is 0 (4 examples)
        1.0
    """
    log_every = check_positive_int("optimise_epoch", "log_every", log_every)
    loss_sum: torch.Tensor | None = None
    seen = 0
    steps = 0
    for batch in batches:
        loss = loss_of(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if after_step is not None:
            after_step()
        count = len(batch[0])
        weighted = loss.detach().to(_accumulator_dtype(loss.device)) * count
        loss_sum = weighted if loss_sum is None else loss_sum + weighted
        seen += count
        steps += 1
        progress.update(1)
        if steps % log_every == 0:
            progress.set_postfix(loss=f"{float(loss_sum) / seen:.3f}")
    if loss_sum is None:
        loss_sum = torch.zeros((), dtype=torch.float64)
    total = torch.stack([loss_sum, torch.full_like(loss_sum, seen)])
    if reduce is not None:
        total = reduce(total)
    loss_total, count_total = (float(value) for value in total.cpu())
    mean = loss_total / max(count_total, 1.0)
    if steps % log_every != 0:
        progress.set_postfix(loss=f"{mean:.3f}")
    return mean


def _accumulator_dtype(device: torch.device) -> torch.dtype:
    """float64 for summing losses, except where the device has none (Apple's MPS)."""
    return torch.float32 if device.type == "mps" else torch.float64


def run_epochs(
    *,
    epochs: int,
    steps_per_epoch: int,
    train_epoch: Callable[[int, Progress], dict[str, Any]],
    evaluate: Callable[[int], dict[str, Any]],
    save: Callable[[int, list[dict[str, Any]]], None],
    describe: Callable[[dict[str, Any]], str],
    postfix: Callable[[dict[str, Any]], dict[str, str]] | None = None,
    start_epoch: int = 0,
    history: Sequence[dict[str, Any]] = (),
    progress: bool = True,
    log: Callable[[str], None] = print,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run epochs ``start_epoch + 1 .. epochs``; return the whole history.

    Args:
        epochs: The run's total number of epochs.
        steps_per_epoch: Optimisation steps per epoch (the progress bar's unit).
        train_epoch: ``train_epoch(epoch, progress)`` trains epoch ``epoch`` (from 0)
            and returns its record's training fields (loss, lr, timings, ...).
        evaluate: ``evaluate(epoch)`` returns the record's evaluation fields.
        save: ``save(finished_epochs, history)`` writes the checkpoint.
        describe: The one-line summary of a record (logged without a progress bar).
        postfix: The progress bar's postfix after an epoch (default: unchanged).
        start_epoch: Epochs already finished (a resumed run's).
        history: Their records.
        progress: Show a tqdm bar; else log ``describe(record)`` per epoch.
        log: Where log lines go.
        on_epoch_end: Called as ``on_epoch_end(epoch, record)`` (epoch from 1)
            after the checkpoint is written.

    Returns:
        One record per epoch: ``{"epoch": n, **training fields, **evaluation fields}``.

    Example:
        >>> records = run_epochs(
        ...     epochs=2, steps_per_epoch=1, train_epoch=lambda epoch, bar: {"loss": 1.0 / (epoch + 1)},
        ...     evaluate=lambda epoch: {"accuracy": 0.5}, save=lambda epoch, history: None,
        ...     describe=str, progress=False, log=lambda line: None)
        >>> [record["loss"] for record in records], records[-1]["epoch"]
        ([1.0, 0.5], 2)
    """
    from tqdm.auto import tqdm

    history = list(history)
    bar = tqdm(
        total=(epochs - start_epoch) * steps_per_epoch, disable=not progress, unit="step", dynamic_ncols=True
    )
    try:
        for epoch in range(start_epoch, epochs):
            bar.set_description(f"epoch {epoch + 1}/{epochs}")
            record: dict[str, Any] = {"epoch": epoch + 1, **train_epoch(epoch, bar)}
            record.update(evaluate(epoch))
            history.append(record)
            if postfix is not None:
                bar.set_postfix(**postfix(record))
            save(epoch + 1, history)
            if not progress:
                log(describe(record))
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1, record)
    finally:
        bar.close()
    return history


def epoch_line(record: dict[str, Any], epochs: int, metrics: str) -> str:
    """The one log line of an epoch (runs without a progress bar): its loss, the task's
    ``metrics`` text, and the training time with the solver's share.

    Example:
        >>> record = {"epoch": 2, "loss": 0.12345, "train_seconds": 0.0213, "solver_share": 0.25}
        >>> epoch_line(record, 5, "test accuracy 0.961")
        'epoch 2/5: loss 0.1235, test accuracy 0.961, 0.0213 s (solver 25.0%)'
    """
    return (
        f"epoch {record['epoch']}/{epochs}: loss {record['loss']:.4f}, {metrics}, "
        f"{record['train_seconds']:.3g} s (solver {100 * record['solver_share']:.1f}%)"
    )


__all__ = ["Progress", "epoch_line", "optimise_epoch", "run_epochs"]

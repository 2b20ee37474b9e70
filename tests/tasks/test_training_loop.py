"""Tests of combgrad/tasks/_training/loop.py, schedules.py, devices.py, timing.py and metrics.py."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import combgrad as cg
from combgrad.tasks import _training as tr

TRAINING = Path(tr.__file__).parent


class _Stop(Exception):
    pass


def test_run_epochs_saves_before_the_hook_and_resumes_where_it_stopped() -> None:
    saved: list[int] = []
    events: list[str] = []

    def train_epoch(epoch: int, bar) -> dict:
        events.append(f"train {epoch}")
        return {"loss": float(epoch)}

    def hook(epoch: int, record: dict) -> None:
        events.append(f"hook {epoch}")
        if epoch == 2:
            raise _Stop

    common = dict(epochs=3, steps_per_epoch=1, train_epoch=train_epoch, evaluate=lambda epoch: {"val": epoch},
                  save=lambda epoch, history: saved.append(epoch), describe=lambda r: f"epoch {r['epoch']}",
                  progress=False)
    lines: list[str] = []
    with pytest.raises(_Stop):
        tr.run_epochs(**common, log=lines.append, on_epoch_end=hook)
    assert saved == [1, 2] and events == ["train 0", "hook 1", "train 1", "hook 2"] and lines == ["epoch 1", "epoch 2"]
    history = tr.run_epochs(**common, start_epoch=2, history=[{"epoch": 1}, {"epoch": 2}], log=lines.append)
    assert [record["epoch"] for record in history] == [1, 2, 3] and history[-1] == {"epoch": 3, "loss": 2.0, "val": 2}
    assert saved == [1, 2, 3]


def test_optimise_epoch_weights_the_loss_by_batch_size() -> None:
    weight = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([weight], lr=0.0)  # lr 0: the loss stays what it is
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    steps: list[int] = []
    bar = SimpleNamespace(update=lambda n=1: steps.append(n), set_postfix=lambda **values: None)
    batches = [(torch.full((1,), 3.0),), (torch.full((3,), 1.0),)]
    loss = tr.optimise_epoch(batches, lambda batch: ((weight - batch[0]) ** 2).mean(), optimizer, scheduler, bar)
    assert loss == pytest.approx((1 * 9.0 + 3 * 1.0) / 4) and steps == [1, 1]


def _reads_of_an_epoch(host_reads, steps: int, log_every: int) -> tuple[list[str], list]:
    weight = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([weight], lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    shown: list = []
    bar = SimpleNamespace(update=lambda n=1: None, set_postfix=lambda **values: shown.append(values["loss"]))
    batches = [(torch.full((2,), float(step)),) for step in range(steps)]
    with host_reads(TRAINING) as reads:
        tr.optimise_epoch(batches, lambda batch: ((weight - batch[0]) ** 2).mean(), optimizer, scheduler, bar,
                          log_every=log_every)
    return reads, shown


def test_optimise_epoch_reads_the_loss_every_log_every_steps_not_every_step(host_reads) -> None:
    """Issue 10: no per-step host sync. A read per step (``float(loss)``, as before) makes
    the count grow with the steps; now it depends only on how often the bar is refreshed."""
    few, shown_few = _reads_of_an_epoch(host_reads, 3, log_every=1000)
    many, shown_many = _reads_of_an_epoch(host_reads, 30, log_every=1000)
    assert len(many) == len(few) <= 3, many
    assert len(shown_few) == len(shown_many) == 1  # the running loss shown once, at the end
    logged, shown = _reads_of_an_epoch(host_reads, 30, log_every=10)
    assert len(shown) == 3 and len(logged) == len(few) + 3, logged  # steps 10, 20, 30 (the last one reused)
    with pytest.raises(ValueError, match="optimise_epoch: log_every must be an integer >= 1, got 0"):
        _reads_of_an_epoch(host_reads, 1, log_every=0)


def test_optimise_epoch_hooks_and_the_reduction_of_the_totals() -> None:
    weight = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([weight], lr=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    bar = SimpleNamespace(update=lambda n=1: None, set_postfix=lambda **values: None)
    after: list[int] = []
    reduced: list[torch.Tensor] = []

    def twice(total: torch.Tensor) -> torch.Tensor:  # as if a second process had seen 4 examples of loss 5
        reduced.append(total.clone())
        return total + torch.tensor([4 * 5.0, 4.0], dtype=total.dtype)

    loss = tr.optimise_epoch([(torch.full((2,), 1.0),), (torch.full((2,), 3.0),)],
                             lambda batch: ((weight - batch[0]) ** 2).mean(), optimizer, scheduler, bar,
                             after_step=lambda: after.append(1), reduce=twice)
    assert after == [1, 1]
    assert reduced[0].tolist() == [2 * 1.0 + 2 * 9.0, 4.0] and reduced[0].dtype == torch.float64
    assert loss == pytest.approx((20.0 + 20.0) / 8)
    assert tr.optimise_epoch([], lambda batch: batch[0], optimizer, scheduler, bar) == 0.0


def test_schedules() -> None:
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    cosine = tr.learning_rate_schedule(optimizer, "cosine", epochs=2, steps_per_epoch=2)
    rates = []
    for _ in range(4):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        cosine.step()
    assert rates == pytest.approx([1.0, 0.8535534, 0.5, 0.1464466])
    with pytest.raises(ValueError, match="schedule: name must be one of"):
        tr.learning_rate_schedule(optimizer, "step", epochs=1, steps_per_epoch=1)


def test_devices() -> None:
    assert tr.resolve_device("cpu") == torch.device("cpu")
    assert tr.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="warcraft: device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got 'gpu!'"):
        tr.resolve_device("gpu!", owner="warcraft")
    with pytest.raises(ValueError, match="device must hold values"):
        tr.resolve_device("meta")
    tr.synchronize(torch.device("cpu"))  # a no-op on the CPU
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match="device must be one of cuda:0"):
            tr.resolve_device(f"cuda:{torch.cuda.device_count()}")
    else:
        # Guards issue 8 (smaller defects): this was an AssertionError traceback.
        with pytest.raises(ValueError, match="CUDA is not available here"):
            tr.resolve_device("cuda:0")


def test_timed_solver_counts_calls_and_instances() -> None:
    timed = tr.TimedSolver(cg.solvers.get("shortest_path"))
    y = timed(torch.rand(3, 2, 5, 5))
    assert y.shape == (3, 2, 5, 5) and timed.calls == 1 and timed.instances == 6 and timed.seconds > 0
    assert timed.sense == "min" and timed.event_ndim == 2 and timed.name == "shortest_path"
    topk = tr.TimedSolver(cg.solvers.get("topk", k=2))
    topk(torch.rand(4, 7))
    assert topk.instances == 4



def test_timed_solver_is_transparent_to_sum_of_gamma_noise() -> None:
    """Sum-of-gamma noise reads ``k`` from the solver: through the wrapper it must see the
    top-k's k (it saw the default 1 before, a different noise), so the same seed gives
    the same gradient wrapped or not."""
    theta = torch.randn(3, 8)
    gradients = []
    for solver in (cg.solvers.get("topk", k=3), tr.TimedSolver(cg.solvers.get("topk", k=3))):
        layer = cg.differentiable(solver=solver, estimator="imle", noise="sum_of_gamma", samples=4)
        leaf = theta.clone().requires_grad_()
        layer(leaf, generator=torch.Generator().manual_seed(0)).sum().backward()
        gradients.append(leaf.grad)
    assert tr.TimedSolver(cg.solvers.get("topk", k=3)).k == 3
    torch.testing.assert_close(gradients[0], gradients[1], rtol=0, atol=0)


class _Event:
    """Stands in for a CUDA event: a timestamp in milliseconds, and a count of host waits."""

    waits = 0

    def __init__(self, milliseconds: float) -> None:
        self.milliseconds = milliseconds

    def elapsed_time(self, end: _Event) -> float:
        return end.milliseconds - self.milliseconds

    def synchronize(self) -> None:
        _Event.waits += 1


def test_timed_solver_reads_cuda_events_once_when_the_time_is_asked_for() -> None:
    """The CPU twin of the CUDA timing: pending (start, end) event pairs are summed, with
    one wait, only when ``seconds`` is read; assigning 0 drops them."""
    timed = tr.TimedSolver(cg.solvers.get("shortest_path"))
    timed._pending += [(_Event(0.0), _Event(250.0)), (_Event(300.0), _Event(800.0))]
    _Event.waits = 0
    assert timed.seconds == pytest.approx(0.75) and _Event.waits == 1
    assert timed.seconds == pytest.approx(0.75) and _Event.waits == 1  # read once, then kept
    timed._pending.append((_Event(0.0), _Event(1000.0)))
    timed.seconds = 0.0
    assert timed.seconds == 0.0 and _Event.waits == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_timed_solver_times_cuda_calls_with_events() -> None:
    timed = tr.TimedSolver(cg.solvers.get("shortest_path"))
    timed(torch.rand(64, 12, 12, device="cuda"))
    assert len(timed._pending) == 1 and timed.seconds > 0 and not timed._pending


def test_metrics_helpers() -> None:
    assert tr.summarise({"a": torch.tensor([1.0, float("nan"), 3.0])}) == {"a": 2.0}
    assert tr.totals([{"t": 1}, {"t": 2}], ["t"]) == {"t": 3.0}
    assert tr.share(1.0, 0.0) == 0.0


def test_the_shared_run_infrastructure_imports_no_task() -> None:
    """Guards issue 9 item 1: a second task must reuse _training without importing Warcraft."""
    import subprocess
    import sys

    code = (
        "import sys, combgrad.tasks._training as t; "
        "print(sorted(m for m in sys.modules if m.startswith('combgrad.tasks.') and not m.startswith('combgrad.tasks._training')))"
    )
    printed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert printed.strip() == "[]"
    import combgrad

    assert combgrad.tasks.warcraft.train.__module__ == "combgrad.tasks.warcraft.trainer"


def test_timed_solver_passes_prechecked_calls_through_and_times_them(monkeypatch) -> None:
    # Estimators call solve_prechecked to skip the solver's finiteness read; the
    # wrapper must keep that saving and still count the call.
    inner = cg.solvers.get("shortest_path")
    timed = tr.TimedSolver(inner)
    checks = []
    monkeypatch.setattr("combgrad.solvers.base.check_theta", lambda *args, **kwargs: checks.append(1))
    y = cg.gradients.get("imle", noise="none")(torch.ones(3, 4, 4), timed)
    assert y.shape == (3, 4, 4) and timed.calls == 1 and timed.instances == 3 and checks == []

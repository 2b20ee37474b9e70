"""Tests of combgrad/tasks/warcraft/trainer.py: training, resume, and errors before any work."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from combgrad.tasks.warcraft import config as wc
from combgrad.tasks.warcraft import data as wd
from combgrad.tasks.warcraft import trainer as wt


def _tiny(out: Path, data: Path, **overrides) -> wc.TrainConfig:
    settings = dict(
        out=str(out), data=str(data), n_train=16, n_val=8, n_test=8, channels=4, epochs=2,
        batch_size=8, lr=1e-2, progress=False, plots=False,
    )
    settings.update(overrides)
    return wc.TrainConfig(**settings)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("warcraft-data")
    wd.generate_dataset(root, 12, n_train=16, n_val=8, n_test=8, seed=0)
    return root


class _Killed(Exception):
    pass


@pytest.mark.parametrize(
    "estimator, loss, options",
    [("aimle", "hamming", {"samples": 2}), ("perturbation", "fy", {"samples": 3}), ("direct", "hamming", {})],
)
def test_resume_gives_the_uninterrupted_result(
    tmp_path: Path, tiny_data: Path, estimator: str, loss: str, options: dict, device: str
) -> None:
    """On every available device (issue 10: resume crashed on CUDA), one tiny run stopped
    after its first epoch and resumed ends as the uninterrupted one."""
    uninterrupted = wt.train(
        _tiny(tmp_path / "a", tiny_data, estimator=estimator, loss=loss, options=options, device=device), log=lambda line: None
    )

    def kill_after_first(epoch: int, record: dict) -> None:
        if epoch == 1:
            raise _Killed

    stopped = _tiny(tmp_path / "b", tiny_data, estimator=estimator, loss=loss, options=options, device=device)
    with pytest.raises(_Killed):
        wt.train(stopped, log=lambda line: None, on_epoch_end=kill_after_first)
    assert (tmp_path / "b" / "checkpoint.pt").exists() and not (tmp_path / "b" / "metrics.json").exists()
    lines: list[str] = []
    resumed = wt.train(
        _tiny(tmp_path / "b", tiny_data, estimator=estimator, loss=loss, options=options, device=device, resume=True),
        log=lines.append,
    )
    assert any("resuming" in line and "after epoch 1" in line for line in lines)
    assert len(resumed["history"]) == 2
    for a, b in zip(uninterrupted["history"], resumed["history"]):
        for key in ("epoch", "loss", "lr", "val", "test"):
            assert json.dumps(a[key]) == json.dumps(b[key]), key  # dumps: NaN regret equals NaN
    first = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    second = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    for name, tensor in first["states"]["model"].items():
        assert torch.equal(tensor, second["states"]["model"][name]), name
    if estimator == "aimle":
        # The estimator's adaptive state is saved, restored and continued too.
        first_layer, second_layer = first["states"]["layer"], second["states"]["layer"]
        assert first_layer and all(torch.equal(v, second_layer[k]) for k, v in first_layer.items())
    written = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert written["final"]["test"]["cost_optimal"] == uninterrupted["final"]["test"]["cost_optimal"]
    assert written["config"]["device"].startswith(device)


def test_an_epoch_makes_no_host_read_per_step(tmp_path: Path, tiny_data: Path, host_reads) -> None:
    """Issue 10: no per-step host sync in the trainer. The CPU proxy counts the tensor
    reads (``float``, ``.item()``, ``.cpu()``, ...) that the task code makes while an
    epoch trains; the count must not grow with the number of steps (a read per step,
    as ``float(loss)`` was, makes 2 and 6 steps differ). The solver's own host work
    on the CPU is not the trainer's and is not counted."""
    import combgrad.tasks

    folder = Path(combgrad.tasks.__file__).parent
    counts = {}
    for steps, data_count in ((2, 16), (6, 48)):
        data = tmp_path / f"data{data_count}"
        wd.generate_dataset(data, 12, n_train=data_count, n_val=2, n_test=2, seed=0)
        original = wt.optimise_epoch
        reads: list[str] = []

        def counted(*args, **kwargs):
            with host_reads(folder) as calls:
                loss = original(*args, **kwargs)
            reads.extend(calls)
            return loss

        wt.optimise_epoch = counted
        try:
            result = wt.train(_tiny(tmp_path / f"run{steps}", data, n_train=data_count, n_val=2, n_test=2,
                                    estimator="imle", epochs=1, log_every=1000), log=lambda line: None)
        finally:
            wt.optimise_epoch = original
        assert result["history"][0]["loss"] > 0
        counts[steps] = reads
    # Per epoch: the order read once by the batches (cpu, numpy) and the loss totals once
    # at the end (cpu, two floats).
    assert len(counts[2]) == len(counts[6]) <= 5, counts


def test_the_training_split_is_read_where_it_lies(tiny_data: Path) -> None:
    from combgrad.tasks.warcraft import batches as wb

    split = wd.load_split(tiny_data, 12, "train")
    resident = wb.ResidentSplit(split, torch.device("cpu"))
    assert resident.where == "host" and len(resident) == 16
    assert resident.maps.data_ptr() == torch.from_numpy(split.maps).data_ptr()  # on the CPU: no copy
    order = wb.shuffled_order(16, 0, 1)
    for (maps, paths), (maps_ref, paths_ref) in zip(resident.batches(order, 5),
                                                   wb.training_batches(split, order, 5, torch.device("cpu"))):
        assert torch.equal(maps, maps_ref) and torch.equal(paths, paths_ref) and paths.dtype == torch.float32
    assert wb.placement(100, torch.device("cuda"), free_bytes=200) == "device"
    assert wb.placement(101, torch.device("cuda"), free_bytes=200) == "pinned"
    with pytest.raises(ValueError, match="warcraft: where must be one of auto, device, pinned, host, got 'disk'"):
        wb.ResidentSplit(split, torch.device("cpu"), where="disk")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("where", ["device", "pinned"])
def test_the_training_split_on_cuda_gives_the_host_batches(tiny_data: Path, where: str) -> None:
    from combgrad.tasks.warcraft import batches as wb

    split = wd.load_split(tiny_data, 12, "train")
    resident = wb.ResidentSplit(split, torch.device("cuda"), where=where)
    order = wb.shuffled_order(16, 0, 1)
    for (maps, paths), (maps_ref, paths_ref) in zip(resident.batches(order, 5),
                                                   wb.training_batches(split, order, 5, torch.device("cpu"))):
        assert maps.is_cuda and torch.equal(maps.cpu(), maps_ref) and torch.equal(paths.cpu(), paths_ref)


def test_resume_refuses_a_different_configuration(tmp_path: Path, tiny_data: Path) -> None:
    wt.train(_tiny(tmp_path, tiny_data, estimator="blackbox", epochs=1), log=lambda line: None)
    with pytest.raises(ValueError, match=r"cannot resume from .*checkpoint\.pt: its configuration differs in \['estimator'\]"):
        wt.train(_tiny(tmp_path, tiny_data, estimator="ste", epochs=1, resume=True), log=lambda line: None)


@pytest.mark.slow
def test_train_end_to_end_on_generated_data(tmp_path: Path) -> None:
    config = wc.TrainConfig(
        out=str(tmp_path), n_train=24, n_val=8, n_test=8, channels=4, epochs=1, batch_size=12,
        estimator="imle", progress=True, plots=True,
    )
    result = wt.train(config, log=lambda line: None)
    for name in ("metrics.json", "checkpoint.pt", "paths.png", "curves.png", "data/12x12/train_maps.npy"):
        assert (tmp_path / name).is_file(), name
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["data"]["counts"] == {"train": 24, "val": 8, "test": 8}
    assert 0.0 <= metrics["final"]["test"]["cost_optimal"] <= 1.0
    assert metrics["final"]["test"]["valid"] == 1.0  # solver outputs are always paths
    assert 0.0 < metrics["timing"]["solver_share"] < 1.0
    assert metrics["config"]["options"]["lam"] == wc.ESTIMATOR_DEFAULTS["imle"]["lam"]
    assert result["history"][0]["epoch"] == 1
    # A second run with the same settings reuses the cached data set.
    lines: list[str] = []
    wt.train(config, log=lines.append)
    assert not any("generated" in line for line in lines)


def test_the_papers_schedule_and_the_resnet_resume_with_a_safe_load(tmp_path: Path, tiny_data: Path) -> None:
    """Guards issue 8 item 2: every state of a run (MultiStepLR's milestones, batch-norm
    buffers, all random states) loads with ``weights_only=True``."""
    config = _tiny(tmp_path, tiny_data, estimator="blackbox", model="resnet", schedule="papers", epochs=1)
    wt.train(config, log=lambda line: None)
    content = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert content["epoch"] == 1 and isinstance(content["rng"]["numpy"]["key"], torch.Tensor)
    lines: list[str] = []
    again = wt.train(_tiny(tmp_path, tiny_data, estimator="blackbox", model="resnet", schedule="papers",
                           epochs=1, resume=True), log=lines.append)
    assert any("resuming" in line for line in lines) and len(again["history"]) == 1


class _Payload:
    """A pickle that, when unpickled, writes a marker file (stands in for any code)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def _checkpoint_files(tmp_path: Path) -> dict[str, bytes]:
    """The kinds of unusable checkpoint.pt the issue names, as file contents."""
    import io

    planted = io.BytesIO()
    torch.save({"config": {}, "payload": _Payload(tmp_path / "pwned")}, planted)
    foreign = io.BytesIO()
    torch.save(torch.nn.Linear(2, 2).state_dict(), foreign)  # a valid torch file of something else
    good = io.BytesIO()
    torch.save({"format": "combgrad.tasks.checkpoint/1", "epoch": 1}, good)  # missing keys
    return {
        "malicious": planted.getvalue(),
        "pickle": pickle.dumps(_Payload(tmp_path / "pwned")),
        "empty": b"",
        "truncated": planted.getvalue()[: len(planted.getvalue()) // 2],
        "foreign": foreign.getvalue(),
        "missing keys": good.getvalue(),
    }


@pytest.mark.parametrize("kind", ["malicious", "pickle", "empty", "truncated", "foreign", "missing keys"])
def test_an_unusable_checkpoint_is_refused_naming_the_file_before_any_work(tmp_path: Path, kind: str) -> None:
    """Guards issue 8 item 2 and the "checkpoint missing keys" defect: ``--resume`` unpickled
    checkpoint.pt (a planted file ran its code) and a file missing keys gave ``error: config``."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(_checkpoint_files(tmp_path)[kind])
    config = wc.TrainConfig(out=str(out), n_train=4, n_val=2, n_test=2, estimator="blackbox", resume=True,
                            progress=False, plots=False)
    with pytest.raises(ValueError, match=r"warcraft: cannot resume from .*run/checkpoint\.pt: ") as caught:
        wt.train(config, log=lambda line: None)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "pwned").exists()  # the planted code never ran
    # Refused before any work: no synthetic data generated, no metrics written.
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_missing_cuda_device_is_refused_before_any_work(tmp_path: Path) -> None:
    """Guards issue 8 (smaller defects): ``--device cuda`` without CUDA was an AssertionError traceback."""
    config = wc.TrainConfig(out=str(tmp_path / "run"), device="cuda", n_train=4, n_val=2, n_test=2)
    with pytest.raises(ValueError, match="warcraft: device 'cuda' was asked for, but CUDA is not available"):
        wt.train(config, log=lambda line: None)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("count, size", [(7, 2), (8, 3), (2, 4)])
def test_a_sharded_evaluation_joins_to_the_one_process_figures(
    monkeypatch: pytest.MonkeyPatch, count: int, size: int
) -> None:
    """Each process evaluates one contiguous block; joined in rank order, the blocks give
    the metrics of the whole split (odd sizes, and more processes than maps)."""
    from combgrad.tasks._training import World
    from combgrad.tasks.warcraft.evaluation import Predictor
    from combgrad.tasks.warcraft.model import SmallCNN

    torch.manual_seed(0)
    split = wd.generate_split(12, count, seed=2)
    predictor = Predictor(SmallCNN(12, channels=4), torch.zeros(3), torch.ones(3) * 60)
    block = -(-count // size)
    blocks = [predictor.per_example(split, 3, start=rank * block, stop=(rank + 1) * block) for rank in range(size)]
    assert sum(len(part["exact"]) for part in blocks) == count
    for rank in range(size):  # as process ``rank``: its own block, the others' from the gather
        mine: list[dict] = []

        def gather(value: dict, world: World) -> list[dict]:
            mine.append(value)
            return [value if other == world.rank else blocks[other] for other in range(world.size)]

        monkeypatch.setattr(wt, "gather_objects", gather)
        joined = wt._evaluate(predictor, split, 3, World(rank=rank, size=size))
        assert len(mine[0]["exact"]) == len(blocks[rank]["exact"])
        assert json.dumps(joined) == json.dumps(predictor.evaluate(split, 3))

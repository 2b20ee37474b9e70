"""Tests of benchmarks/latent_table.py: aggregation, the L2X agreement, skips and read-back, on a stub task."""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "latent_table.py"


@pytest.fixture(scope="module")
def table():
    spec = importlib.util.spec_from_file_location("latent_table", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["latent_table"] = module  # its dataclasses look their module up while being made
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("latent_table", None)


def test_mean_sd(table) -> None:
    assert table.mean_sd([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert table.mean_sd([4.0]) == (4.0, 0.0)
    assert all(value != value for value in table.mean_sd([]))  # NaN


def test_selection_agreement_over_pairs(table, tmp_path: Path) -> None:
    folders = []
    for number, rows in enumerate(([[0, 1], [2, 3]], [[0, 1], [2, 4]], [[5, 6], [2, 3]])):
        folder = tmp_path / f"run{number}"
        folder.mkdir()
        np.save(folder / "selections.npy", np.array(rows, dtype=np.int16))
        folders.append(folder)
    pairs = table.selection_agreement(folders)
    # (1 + 1/3) / 2, (1 + 0) / 2 and (0 + 1/3) / 2
    assert pairs == pytest.approx([2 / 3, 1 / 2, 1 / 6])


@dataclass
class _StubConfig:
    out: str = ""
    estimator: str = "imle"
    seed: int = 0
    device: str = "auto"
    progress: bool = True
    plots: bool = True
    epochs: int = 2
    options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.estimator == "ste":
            raise ValueError("stub: ste cannot drive this solver")

    def identity(self) -> dict:
        return {key: value for key, value in asdict(self).items() if key in ("estimator", "seed", "epochs")}


def test_main_on_a_stub_task(table, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    calls: list[tuple[str, int]] = []

    def train(config: _StubConfig, log) -> dict:
        calls.append((config.estimator, config.seed))
        out = Path(config.out)
        out.mkdir(parents=True, exist_ok=True)
        result = {"config": asdict(config), "history": [{}] * config.epochs,
                  "final": {"test": {"accuracy": 0.5 + 0.1 * config.seed}},
                  "timing": {"train_seconds": 1.0, "solver_share": 0.2, "wall_seconds_this_run": 1.5}}
        np.save(out / "selections.npy", np.array([[0, 1 + config.seed]]))
        (out / "metrics.json").write_text(json.dumps(result))
        return result

    stub = types.ModuleType("stub_task")
    stub.StubConfig = _StubConfig
    stub.train = train
    monkeypatch.setitem(sys.modules, "stub_task", stub)
    metric = table.Metric("accuracy", "test accuracy", 3, True)
    monkeypatch.setitem(table.TASKS, "l2x", table.Task("stub_task", "StubConfig", (metric,), "stub"))
    arguments = ["--task", "l2x", "--estimators", "imle", "ste", "not_registered", "--seeds", "0", "1",
                 "--runs", str(tmp_path)]
    assert table.main(arguments) == 0
    assert calls == [("imle", 0), ("imle", 1)]
    results = json.loads((tmp_path / "latent_table.json").read_text())
    row = results["tasks"]["l2x"]["estimators"]["imle"]
    assert row["accuracy"] == pytest.approx([0.55, 0.1 * 2 ** -0.5])
    assert row["agreement_pairs"] == pytest.approx([1 / 3])  # {0, 1} and {0, 2}
    notes = results["tasks"]["l2x"]["notes"]
    assert any("ste: skipped, stub: ste cannot drive" in note for note in notes)
    assert any("not_registered: skipped, not registered" in note for note in notes)
    markdown = (tmp_path / "latent_table.md").read_text()
    assert "| imle | 0.550 ± 0.071 | 0.333 ± 0.000 | 1 ± 0 |" in markdown
    # A second invocation reads the finished runs back instead of training them again.
    assert table.main(arguments) == 0
    assert calls == [("imle", 0), ("imle", 1)]
    assert "read back" in capsys.readouterr().out

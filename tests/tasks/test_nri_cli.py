"""Tests of combgrad/tasks/nri/{trainer,command,config}.py: ``combgrad nri`` end to end, resume, bad settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from combgrad.cli import main
from combgrad.tasks.nri import NriConfig, train
from combgrad.tasks.nri.config import FULL

TINY = ["--n-train", "24", "--n-val", "8", "--n-test", "8", "--epochs", "2", "--batch-size", "8",
        "--encoder-hidden", "8", "--decoder-hidden", "8", "--particles", "5", "--steps", "4",
        "--prediction-steps", "3", "--quiet"]


def _tiny(out: Path, **overrides) -> NriConfig:
    settings = dict(out=str(out), n_train=24, n_val=8, n_test=8, epochs=2, batch_size=8, encoder_hidden=8,
                    decoder_hidden=8, particles=5, steps=4, prediction_steps=3, progress=False, plots=False)
    settings.update(overrides)
    return NriConfig(**settings)  # type: ignore[arg-type]


@pytest.mark.slow  # about 10 s, mostly matplotlib's first import and figure
def test_the_command_writes_metrics_plots_and_prints_a_table(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    assert main(["nri", *TINY, "--out", str(out), "--estimator", "aimle"]) == 0
    printed = capsys.readouterr().out
    assert "edge accuracy" in printed and "precision = recall" in printed and "test" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == "aimle" and len(metrics["history"]) == 2
    final = metrics["final"]["test"]
    assert set(final) == {"edge_accuracy", "precision", "recall", "reconstruction_mse"}
    assert final["precision"] == pytest.approx(final["recall"])  # trees against trees
    assert 0 <= final["edge_accuracy"] <= 1 and final["reconstruction_mse"] > 0
    assert set(metrics["history"][0]["test"]) == set(final)
    assert {"train_seconds", "solver_seconds", "solver_share", "wall_seconds_this_run"} <= set(metrics["timing"])
    assert metrics["config"]["options"]["k"] == 4  # sum-of-gamma k: the tree's n - 1 edges
    for name in ("trees.png", "curves.png", "checkpoint.pt", "data/meta.json", "data/test_trees.npy"):
        assert (out / name).exists(), name
    assert (out / "trees.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class _Killed(Exception):
    pass


@pytest.mark.parametrize("estimator, options", [("aimle", {}), ("perturbation", {"samples": 2})])
def test_resume_gives_the_uninterrupted_result(tmp_path: Path, estimator: str, options: dict, device: str) -> None:
    """On every available device (the CUDA half runs the solver's torch backend on the GPU)."""
    uninterrupted = train(_tiny(tmp_path / "a", estimator=estimator, options=options, device=device),
                          log=lambda line: None)

    def kill_after_first(epoch: int, record: dict) -> None:
        if epoch == 1:
            raise _Killed

    with pytest.raises(_Killed):
        train(_tiny(tmp_path / "b", estimator=estimator, options=options, device=device), log=lambda line: None,
              on_epoch_end=kill_after_first)
    assert not (tmp_path / "b" / "metrics.json").exists()
    lines: list[str] = []
    resumed = train(_tiny(tmp_path / "b", estimator=estimator, options=options, device=device, resume=True),
                    log=lines.append)
    assert any("resuming" in line and "after epoch 1" in line for line in lines)
    for a, b in zip(uninterrupted["history"], resumed["history"], strict=True):
        for key in ("epoch", "loss", "lr", "val", "test"):
            assert json.dumps(a[key]) == json.dumps(b[key]), key
    first = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["states"]["model"]
    second = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["states"]["model"]
    assert first.keys() == second.keys()
    for name, tensor in first.items():
        assert torch.equal(tensor, second[name]), name
    if estimator == "aimle":  # the estimator's adaptive state travels in the model's state dict
        assert any(name.startswith("layer.") for name in first)
    assert resumed["config"]["device"].startswith(device)


def test_the_command_resumes_and_refuses_another_configuration(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = str(tmp_path / "run")
    assert main(["nri", *TINY, "--out", out, "--epochs", "1"]) == 0
    assert main(["nri", *TINY, "--out", out, "--epochs", "2", "--resume"]) == 2
    assert "its configuration differs in ['epochs']" in capsys.readouterr().err
    assert main(["nri", *TINY, "--out", out, "--epochs", "1", "--resume"]) == 0
    assert "resuming" in capsys.readouterr().err


def test_the_data_are_simulated_once_per_setting(tmp_path: Path) -> None:
    lines: list[str] = []
    train(_tiny(tmp_path, epochs=1), log=lines.append)
    train(_tiny(tmp_path, epochs=1), log=lines.append)
    assert sum("simulated" in line for line in lines) == 1
    train(_tiny(tmp_path, epochs=1, data_seed=1), log=lines.append)
    assert sum("simulated" in line for line in lines) == 2


def test_the_torch_thread_count_is_restored(tmp_path: Path) -> None:
    before = torch.get_num_threads()
    train(_tiny(tmp_path, epochs=1, threads=1), log=lambda line: None)
    assert torch.get_num_threads() == before


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--lr", "0"], "nri: lr must be a finite number > 0, got 0.0"),
        (["--epochs", "0"], "nri: epochs must be an integer >= 1, got 0"),
        (["--particles", "2"], "nri: particles must be an integer >= 3, got 2"),
        (["--prediction-steps", "4"], "nri: prediction_steps must be an integer <= steps - 1 = 3, got 4"),
        (["--estimator", "imle_typo"], "nri: estimator must be a registered estimator"),
        (["-O", "lamda=3", "--estimator", "imle"], "lamda"),
        (["--strength", "-1"], "nri: strength must be a finite number > 0"),
        (["--device", "cuda:99"], "nri: device"),
        (["--estimator", "sst"], "needs an argmax solver"),  # an estimator that cannot drive a tree
    ],
)
def test_bad_settings_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, arguments: list[str], message: str
) -> None:
    out = tmp_path / "run"
    assert main(["nri", *TINY, "--out", str(out), *arguments]) == 2
    error = capsys.readouterr().err
    assert error.startswith("combgrad nri: error: ") and message in error and error.count("\n") == 1
    assert not (out / "data").exists()  # refused before any work


def test_the_full_preset_fills_what_is_not_given() -> None:
    config = NriConfig(full=True, epochs=3)
    assert config.n_train == FULL["train"] and config.encoder_hidden == 256 and config.lr == FULL["lr"]
    assert config.epochs == 3
    default = NriConfig()
    assert (default.n_train, default.encoder_hidden, default.batch_size) == (2000, 64, 32)
    assert default.prediction_steps == 9 and NriConfig(steps=5).prediction_steps == 4  # one rollout: steps - 1

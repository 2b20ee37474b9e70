"""Tests of combgrad/cli.py: the ``list``, ``demo``, ``warcraft`` and ``warcraft-data`` subcommands."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from combgrad import cli
from combgrad.tasks._training.arguments import key_value
from combgrad.tasks.warcraft import data as wd


def test_warcraft_data_writes_the_original_format_deterministically(tmp_path: Path, capsys) -> None:
    for name in ("a", "b"):
        assert cli.main(["warcraft-data", "--size", "12", "--n", "6", "--n-val", "2", "--n-test", "3",
                         "--seed", "4", "--out", str(tmp_path / name)]) == 0
    output = capsys.readouterr().out
    assert "train 6 maps, val 2 maps, test 3 maps" in output and "optimum not unique" in output
    files = sorted(p.name for p in (tmp_path / "a" / "12x12").iterdir())
    assert files == sorted(["meta.json"] + [f"{s}_{f}.npy" for s in wd.SPLITS for f in wd.FIELDS])
    for name in files:
        assert (tmp_path / "a" / "12x12" / name).read_bytes() == (tmp_path / "b" / "12x12" / name).read_bytes()
    assert wd.load_split(tmp_path / "a", 12, "test").maps.shape == (3, 96, 96, 3)
    # An existing data set is kept unless --overwrite is given.
    assert cli.main(["warcraft-data", "--n", "2", "--out", str(tmp_path / "a")]) == 2
    assert "already exists" in capsys.readouterr().err


def test_warcraft_data_parts(tmp_path: Path) -> None:
    assert cli.main(["warcraft-data", "--size", "18", "--n", "5", "--n-val", "1", "--n-test", "1",
                     "--parts", "2", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "18x18" / "train_maps_part1.npy").is_file()
    assert wd.load_split(tmp_path, 18, "train").maps.shape == (5, 144, 144, 3)


def test_warcraft_option_parsing() -> None:
    assert key_value("lam=20") == ("lam", 20)
    assert key_value("noise=gumbel") == ("noise", "gumbel")
    assert key_value("symmetric=True") == ("symmetric", True)
    with pytest.raises(Exception, match="expected KEY=VALUE"):
        key_value("lam")
    args = cli.build_parser().parse_args(["warcraft", "-O", "lam=5", "-O", "samples=2", "--n", "10"])
    assert dict(args.option) == {"lam": 5, "samples": 2} and args.n_train == 10


def test_warcraft_reports_bad_settings(tmp_path: Path, capsys) -> None:
    assert cli.main(["warcraft", "--out", str(tmp_path), "--data", str(tmp_path / "missing")]) == 2
    assert "missing data folder" in capsys.readouterr().err
    assert cli.main(["warcraft", "--out", str(tmp_path), "--epochs", "0"]) == 2
    assert "epochs must be an integer >= 1" in capsys.readouterr().err
    # Unknown estimators and estimator options fail before any data are generated.
    assert cli.main(["warcraft", "--out", str(tmp_path), "--estimator", "imle2"]) == 2
    assert "estimator must be one of" in capsys.readouterr().err
    assert cli.main(["warcraft", "--out", str(tmp_path), "--estimator", "blackbox", "-O", "lamb=3"]) == 2
    assert "lamb" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()
    with pytest.raises(SystemExit):
        cli.main(["warcraft", "--size", "13"])


def _one_error_line(capsys, command: str) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"combgrad {command}: error: "), captured.err
    assert "Traceback" not in captured.err
    return lines[0]


def test_warcraft_refuses_a_bad_log_interval_before_any_work(tmp_path: Path, capsys) -> None:
    assert cli.main(["warcraft", "--out", str(tmp_path / "run"), "--log-every", "0"]) == 2
    assert "warcraft: log_every must be an integer >= 1, got 0" in _one_error_line(capsys, "warcraft")
    assert not (tmp_path / "run").exists()


def test_python_dash_m_combgrad_is_the_command() -> None:
    """``python -m combgrad`` (what ``torchrun ... -m combgrad warcraft`` runs) is the ``combgrad`` command."""
    import subprocess
    import sys

    finished = subprocess.run([sys.executable, "-m", "combgrad", "warcraft", "--help"], capture_output=True,
                              text=True, timeout=120)
    assert finished.returncode == 0 and "--log-every" in finished.stdout and "torchrun" in finished.stdout
    refused = subprocess.run([sys.executable, "-m", "combgrad", "warcraft", "--epochs", "0", "--out", "unused"],
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "epochs must be an integer >= 1" in refused.stderr


@pytest.mark.parametrize("value", ["inf", "nan", "-1"])
def test_warcraft_refuses_a_bad_learning_rate_before_any_work(tmp_path: Path, capsys, value: str) -> None:
    """Guards issue 8 (smaller defects): ``--lr inf`` was accepted and failed after data generation."""
    assert cli.main(["warcraft", "--out", str(tmp_path / "run"), "--lr", value]) == 2
    assert "lr must be a finite number > 0" in _one_error_line(capsys, "warcraft")
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_warcraft_refuses_a_missing_cuda_device(tmp_path: Path, capsys) -> None:
    """Guards issue 8 (smaller defects): ``--device cuda`` without CUDA was an AssertionError traceback."""
    assert cli.main(["warcraft", "--out", str(tmp_path / "run"), "--device", "cuda"]) == 2
    assert "CUDA is not available" in _one_error_line(capsys, "warcraft")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated", b"\x80\x04K\x01."])
def test_warcraft_resume_reports_an_unusable_checkpoint_in_one_line(tmp_path: Path, capsys, content: bytes) -> None:
    """Guards issue 8 item 2: an empty, truncated or foreign checkpoint gave a traceback."""
    (tmp_path / "checkpoint.pt").write_bytes(content)
    assert cli.main(["warcraft", "--out", str(tmp_path), "--resume", "--n", "4", "--quiet"]) == 2
    line = _one_error_line(capsys, "warcraft")
    assert f"cannot resume from {tmp_path / 'checkpoint.pt'}" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def test_warcraft_names_a_corrupt_data_file(tmp_path: Path, capsys) -> None:
    """Guards issue 8 (smaller defects): a 0-byte .npy gave an EOFError traceback."""
    assert cli.main(["warcraft-data", "--n", "2", "--n-val", "1", "--n-test", "1", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    (tmp_path / "12x12" / "train_maps.npy").write_bytes(b"")
    assert cli.main(["warcraft", "--data", str(tmp_path), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    assert "train_maps.npy" in _one_error_line(capsys, "warcraft")


def test_warcraft_data_reports_bad_counts(tmp_path: Path, capsys) -> None:
    assert cli.main(["warcraft-data", "--n", "-1", "--out", str(tmp_path)]) == 2
    assert "count must be an integer >= 0" in _one_error_line(capsys, "warcraft-data")
    assert cli.main(["warcraft-data", "--parts", "0", "--n", "1", "--out", str(tmp_path)]) == 2
    assert "parts must be an integer >= 1" in _one_error_line(capsys, "warcraft-data")


def test_each_subcommand_is_one_parser_function() -> None:
    """The subcommands come from SUBCOMMANDS, so one more (``combgrad list``) is one more entry,
    and the tasks' from their own ``command.py``, one per name in TASK_COMMANDS."""
    import argparse

    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command")
    for add in cli.SUBCOMMANDS:
        add(commands)
    assert sorted(commands.choices) == ["demo", "list", "warcraft", "warcraft-data"]
    every = ["demo", "l2x", "list", "nri", "pto", "vae", "warcraft", "warcraft-data"]
    assert sorted(cli.build_parser()._subparsers._group_actions[0].choices) == every


@pytest.mark.slow
def test_warcraft_runs_end_to_end_with_tiny_settings(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    argv = ["warcraft", "--n-train", "16", "--n-val", "8", "--n-test", "8", "--epochs", "1",
            "--batch-size", "8", "--channels", "4", "--estimator", "blackbox", "-O", "lam=10",
            "--out", str(out), "--quiet", "--device", "cpu", "--log-every", "1"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "blackbox on synthetic 12x12 maps (16 train), 1 epochs, cpu" in printed
    assert "test" in printed and "cost-optimal" in printed and "solver" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["options"] == {"lam": 10}
    assert metrics["config"]["log_every"] == 1 and metrics["config"]["processes"] == 1
    for name in ("checkpoint.pt", "paths.png", "curves.png", "data/12x12/test_maps.npy"):
        assert (out / name).is_file(), name
    # Resuming a finished run trains nothing more and reports the same figures.
    assert cli.main(argv + ["--resume"]) == 0
    again = json.loads((out / "metrics.json").read_text())
    assert again["final"] == metrics["final"]
    assert np.isclose(again["final"]["test"]["cost_optimal"], metrics["final"]["test"]["cost_optimal"])


def test_demo_solves_with_every_built_in_solver(capsys) -> None:
    assert cli.main(["demo", "--batch", "4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    solved = {line.split()[0] for line in lines[1:]}
    built_in = {"argmax", "topk", "shortest_path", "spanning_tree", "assignment", "knapsack", "ilp", "lp",
                "graph_shortest_path", "ranks", "tsp"}
    assert solved == built_in
    assert all(float(line.split()[-1]) >= 0 for line in lines[1:])


def test_list_prints_every_solver_and_estimator_with_its_options(capsys) -> None:
    import combgrad as cg

    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    for name in cg.solvers.names() + cg.gradients.names():
        assert f"\n  {name}" in out
    assert "k=<required>" in out and "neighbourhood=8" in out and "lam=10.0" in out
    assert "noise_scale=1.0" in out


def test_list_filters_by_kind_and_name(capsys) -> None:
    assert cli.main(["list", "estimators", "--name", "blackbox"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("estimators:\n  blackbox\n    lam=10.0") and "solvers:" not in out


def test_a_busy_machine_gets_fewer_torch_threads_for_the_command_and_main_restores_them(monkeypatch) -> None:
    """Torch's threads wait for each other at every parallel operation; with other processes
    on the cores a command runs 5-80x slower, so it starts with the free cores only."""
    import os

    import torch

    from combgrad.solvers import parallel

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    cores = os.cpu_count() or 1
    if min(before, parallel.usable_cores()) < 2:
        pytest.skip("needs torch on at least 2 usable cores")
    seen = []
    monkeypatch.setattr(cli, "_list", lambda args: seen.append(torch.get_num_threads()) or 0)
    monkeypatch.setattr(parallel, "_running_tasks", lambda: cores)  # all cores but one busy elsewhere
    assert cli.main(["list"]) == 0
    assert seen == [1] and torch.get_num_threads() == before

    monkeypatch.setattr(parallel, "_running_tasks", lambda: 1)  # an idle machine: torch as it was
    assert cli.main(["list"]) == 0
    assert seen[-1] == before

    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user's choice is kept
    monkeypatch.setattr(parallel, "_running_tasks", lambda: cores)
    assert cli.main(["list"]) == 0
    assert seen[-1] == before

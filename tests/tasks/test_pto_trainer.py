"""Tests of combgrad/tasks/pto (config, methods, trainer, command): ``combgrad pto`` end to end,
resume, the method table, and settings refused with one line and exit status 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import combgrad as cg
from combgrad.cli import main
from combgrad.tasks.pto import PtoConfig, train
from combgrad.tasks.pto.methods import METHODS, build_method, method_names
from combgrad.tasks.pto.problems import Split, build_problem

TINY = ["--n-train", "64", "--n-test", "32", "--epochs", "2", "--quiet"]


def _tiny(out: Path, **overrides) -> PtoConfig:
    settings = dict(out=str(out), problem="knapsack", num_items=10, n_train=64, n_test=32, epochs=2, progress=False,
                    plots=False)
    settings.update(overrides)
    return PtoConfig(**settings)


def _needs(problem: str) -> None:
    name = {"shortest_path": "graph_shortest_path", "tsp": "tsp"}.get(problem)
    if name is not None and name not in cg.solvers.names():
        # Committed before its line in combgrad/solvers/__init__.py: importing it registers it.
        pytest.importorskip(f"combgrad.solvers.{name}")
    if name is not None and name not in cg.solvers.names():
        pytest.skip(f"the {name} solver is not registered yet")


@pytest.mark.parametrize("problem", ["knapsack", "shortest_path", "tsp"])
def test_command_end_to_end(tmp_path: Path, problem: str, capsys: pytest.CaptureFixture[str]) -> None:
    _needs(problem)
    out = tmp_path / "run"
    size = ["--num-nodes", "6"] if problem == "tsp" else []  # CP-SAT on 6 cities: a few ms per instance
    assert main(["pto", "--problem", problem, "--method", "spo+", *TINY, *size, "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert (out / "curves.png").stat().st_size > 0 and (out / "checkpoint.pt").exists()
    assert metrics["method"] == "spo+" and len(metrics["history"]) == 2
    regrets = [record["test"]["normalized_regret"] for record in metrics["history"]]
    assert all(0 <= value < 2 for value in regrets) and metrics["final"]["test"]["normalized_regret"] == regrets[-1]
    assert metrics["timing"]["seconds_per_epoch"] > 0 and 0 <= metrics["timing"]["solver_share"] <= 1
    assert metrics["data"]["counts"] == {"train": 64, "test": 32}
    printed = capsys.readouterr().out
    assert "normalized regret" in printed and f"{regrets[-1]:.4f}" in printed


def test_training_lowers_the_regret(tmp_path: Path) -> None:
    """SPO+ on a linear knapsack problem (deg 1, no noise) learns: the test regret after 5 epochs
    is below half the untrained model's (measured 0.53 -> 0.06 on these settings)."""
    config = _tiny(tmp_path, deg=1, noise=0.0, n_train=200, epochs=5, lr=5e-2)
    result = train(config, log=lambda line: None)
    problem = build_problem(config)
    torch.manual_seed(config.seed)
    untrained = cg.tasks.pto.trainer.evaluate(torch.nn.Linear(5, 10), problem.test, problem.solver, 100)
    assert result["final"]["test"]["normalized_regret"] < 0.5 * untrained["normalized_regret"]


class _Killed(Exception):
    pass


@pytest.mark.parametrize("method", ["spo+", "aimle", "nce"])
def test_resume_gives_the_uninterrupted_result(tmp_path: Path, method: str) -> None:
    """Stopped after epoch 1 and resumed, a run ends as the uninterrupted one (weights, estimator
    state such as AIMLE's buffers, a solution pool's content and random streams are saved)."""
    if method not in method_names():
        pytest.skip(f"{method} is not available")
    options = {"samples": 2} if method == "aimle" else {}
    uninterrupted = train(_tiny(tmp_path / "a", method=method, options=options), log=lambda line: None)

    def kill_after_first(epoch: int, record: dict) -> None:
        if epoch == 1:
            raise _Killed

    with pytest.raises(_Killed):
        train(_tiny(tmp_path / "b", method=method, options=options), log=lambda line: None,
              on_epoch_end=kill_after_first)
    assert not (tmp_path / "b" / "metrics.json").exists()
    lines: list[str] = []
    resumed = train(_tiny(tmp_path / "b", method=method, options=options, resume=True), log=lines.append)
    assert any("resuming" in line for line in lines)
    for key in ("loss",):
        assert [r[key] for r in resumed["history"]] == [r[key] for r in uninterrupted["history"]]
    assert resumed["final"] == uninterrupted["final"]


def test_command_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--resume`` of a finished run trains nothing more and reports the same result;
    ``--resume`` with another setting is refused with one line."""
    common = ["pto", "--problem", "knapsack", "--num-items", "10", *TINY, "--out", str(tmp_path / "run")]
    assert main(common) == 0
    whole = json.loads((tmp_path / "run" / "metrics.json").read_text())
    capsys.readouterr()
    assert main([*common, "--resume"]) == 0
    assert "resuming" in capsys.readouterr().err
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["final"] == whole["final"]
    assert main([*common, "--resume", "--lr", "0.5"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "configuration differs in ['lr']" in error[0]


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--lr", "-1"], "lr must be a finite number > 0"),
        (["--n-train", "0"], "n_train must be an integer >= 1"),
        (["--noise", "-0.5"], "noise must be"),
        (["--deg", "0"], "deg must be an integer >= 1"),
        (["--method", "dbb", "-O", "bogus=1"], "unexpected option 'bogus'"),
        (["--method", "pfy", "-O", "samples=0"], "samples"),
        (["--device", "cuda:99"], "device"),
    ],
)
def test_bad_settings_exit_2_with_one_line(
    tmp_path: Path, arguments: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["pto", "--problem", "knapsack", *TINY, "--out", str(tmp_path / "bad"), *arguments])
    error = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(error) == 1 and error[0].startswith("combgrad pto: error: ") and message in error[0]
    assert not (tmp_path / "bad" / "metrics.json").exists()


def test_resume_refuses_another_configuration(tmp_path: Path) -> None:
    train(_tiny(tmp_path, epochs=1), log=lambda line: None)
    with pytest.raises(ValueError, match=r"configuration differs in \['lr'\]"):
        train(_tiny(tmp_path, epochs=1, lr=0.5, resume=True), log=lambda line: None)


def test_config_checks() -> None:
    with pytest.raises(ValueError, match="pto: problem must be one of"):
        PtoConfig(problem="vrp")
    with pytest.raises(ValueError, match="pto: method must be one of"):
        PtoConfig(method="spo")
    with pytest.raises(ValueError, match="pto: model must be one of"):
        PtoConfig(model="cnn")
    with pytest.raises(ValueError, match="options must be a dict"):
        PtoConfig(options=[("lam", 1)])  # type: ignore[arg-type]
    assert PtoConfig(method="dbb", options={"lam": 5.0}).resolved_options() == {"lam": 5.0}
    assert PtoConfig(method="imle").resolved_options()["k"] == 5


def test_methods_table_defaults_are_pyepos() -> None:
    assert METHODS["dbb"].defaults == {"lam": 20.0}
    assert METHODS["pfy"].defaults == {"noise_scale": 1.0, "samples": 10, "noise": "normal"}
    assert {key: METHODS["imle"].defaults[key] for key in ("lam", "noise_scale", "samples", "k", "divide_by_lam")} == {
        "lam": 10.0, "noise_scale": 1.0, "samples": 10, "k": 5, "divide_by_lam": True}
    assert {"spo+", "dbb", "pfy", "imle", "aimle", "2s"} <= set(method_names())


def _pair() -> tuple[object, Split]:
    solver = cg.solvers.get("knapsack", weights=[3, 4, 2], capacity=5)
    costs = torch.tensor([[4.0, 5.0, 3.0], [1.0, 6.0, 1.0]], dtype=torch.float64)
    return solver, Split.label(torch.zeros(2, 1), costs, solver)


def test_method_losses_by_hand() -> None:
    """Closed forms on two instances: dbb's L1 objective loss, 2s's MSE, spo+'s value."""
    solver, train_split = _pair()
    batch = train_split.batch(torch.arange(2))
    prediction = torch.tensor([[1.0, 5.0, 1.0], [1.0, 6.0, 1.0]], requires_grad=True)
    _, dbb = build_method("dbb", solver, {}, train_split)
    # First instance takes item 1 (true value 5, optimum 7); second is optimal: mean |5 - 7|, |6 - 6| = 1.
    assert float(dbb(prediction, batch).detach()) == 1.0
    _, two_stage = build_method("2s", solver, {}, train_split)
    assert float(two_stage(prediction, batch).detach()) == pytest.approx(((prediction.detach() - batch.costs) ** 2).mean().item())
    _, spo = build_method("spo+", solver, {}, train_split)
    expected = cg.losses.spo_plus(prediction, batch.costs.float(), solver=solver).mean()
    assert float(spo(prediction, batch).detach()) == pytest.approx(float(expected.detach()))


def test_pyepo_dbb_loss_gradient_matches() -> None:
    """dbb's gradient equals PyEPO's blackboxOpt + L1 objective loss on the same batch."""
    pytest.importorskip("gurobipy")
    from pyepo.func import blackboxOpt
    from pyepo.model.grb import knapsackModel

    from combgrad.tasks.pto.data import knapsack_data

    features, values, weights, capacities = knapsack_data(16, num_items=8, deg=2, noise_width=0.5, seed=2)
    solver = cg.solvers.get("knapsack", weights=weights[0], capacity=float(capacities[0]), constraint_scale=100)
    split = Split.label(features, values, solver)
    batch = split.batch(torch.arange(16))
    prediction = (values + torch.randn(16, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3)
    ours = prediction.float().clone().requires_grad_(True)
    _, loss = build_method("dbb", solver, {}, split)
    loss(ours, batch).backward()
    theirs = prediction.float().clone().requires_grad_(True)
    layer = blackboxOpt(knapsackModel(weights.numpy(), capacities.numpy()), lambd=20)
    objective = (layer(theirs) * values.float()).sum(1, keepdim=True)
    torch.nn.L1Loss()(objective, batch.objectives.float()[:, None]).backward()
    assert ours.grad is not None and theirs.grad is not None and ours.grad.abs().sum() > 0
    torch.testing.assert_close(ours.grad, theirs.grad)


def test_two_dimensional_knapsack_labels_match_brute_force() -> None:
    """dim 2 goes through the ``ilp`` solver: its labels are the brute-force optima over all 2^8 subsets."""
    import itertools

    import numpy as np

    problem = build_problem(PtoConfig(problem="knapsack", dim=2, num_items=8, n_train=12, n_test=4, capacity=15))
    assert problem.solver.name == "ilp" and problem.solver.sense == "max"
    weights, capacities = np.array(problem.details["weights"]), np.array(problem.details["capacities"])
    subsets = np.array(list(itertools.product((0, 1), repeat=8)), float)
    feasible = subsets[(subsets @ weights.T <= capacities + 1e-9).all(1)]
    best = (problem.train.costs.numpy() @ feasible.T).max(1)
    np.testing.assert_allclose(problem.train.objectives.numpy(), best)


def test_mlp_model_trains(tmp_path: Path) -> None:
    result = train(_tiny(tmp_path, model="mlp", hidden=8, method="pfy", options={"samples": 2}, epochs=1),
                   log=lambda line: None)
    assert result["config"]["model"] == "mlp" and 0 <= result["final"]["test"]["normalized_regret"] < 2

"""Tests of combgrad/tasks/warcraft/trainer.py: metrics, configuration, training, resume."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
import torch

import combgrad as cg
from combgrad.tasks.warcraft import data as wd
from combgrad.tasks.warcraft import trainer as wt


def _networkx_connects(mask: np.ndarray) -> bool:
    cells = [tuple(cell) for cell in np.argwhere(mask > 0)]
    graph = nx.Graph()
    graph.add_nodes_from(cells)
    for a, b in itertools.combinations(cells, 2):
        if max(abs(a[0] - b[0]), abs(a[1] - b[1])) == 1:
            graph.add_edge(a, b)
    end = (mask.shape[0] - 1, mask.shape[1] - 1)
    return (0, 0) in graph and end in graph and nx.has_path(graph, (0, 0), end)


@pytest.mark.parametrize("density", [0.35, 0.5, 0.65])
def test_connects_corners_against_networkx(density: float) -> None:
    rng = np.random.default_rng(int(100 * density))
    masks = (rng.random((200, 6, 7)) < density).astype(np.float32)
    expected = np.array([_networkx_connects(mask) for mask in masks])
    assert 0 < expected.sum() < len(expected)
    np.testing.assert_array_equal(wt.connects_corners(torch.from_numpy(masks)).numpy(), expected)


def test_path_metrics_count_ties_as_cost_optimal() -> None:
    weights = torch.ones(1, 3, 3, dtype=torch.float64)
    weights[0, 1, 1] = 5.0  # two optimal paths: around the centre on either side
    true = torch.tensor([[[1, 1, 0], [0, 0, 1], [0, 0, 1]]], dtype=torch.float32)
    other = torch.tensor([[[1, 0, 0], [1, 0, 0], [0, 1, 1]]], dtype=torch.float32)
    through = torch.tensor([[[1, 0, 0], [0, 1, 0], [0, 0, 1]]], dtype=torch.float32)
    metrics = wt.path_metrics(torch.cat([true, other, through]), true.expand(3, 3, 3), weights.expand(3, 3, 3))
    assert metrics["exact"].tolist() == [True, False, False]
    assert metrics["cost_optimal"].tolist() == [True, True, False]
    assert metrics["regret"].tolist() == [0.0, 0.0, 3.0]
    assert metrics["valid"].all()


def test_path_metrics_reject_masks_that_are_not_paths() -> None:
    weights = torch.ones(2, 3, 3, dtype=torch.float64)
    true = torch.eye(3).expand(2, 3, 3)
    # The empty mask is cheaper than any path and the broken one is as cheap as the optimum.
    masks = torch.stack([torch.zeros(3, 3), torch.tensor([[1.0, 0, 0], [0, 0, 0], [0, 1, 1]])])
    metrics = wt.path_metrics(masks, true, weights)
    assert metrics["valid"].tolist() == [False, False]
    assert metrics["cost_optimal"].tolist() == [False, False]
    assert torch.isnan(metrics["regret"]).all()
    summary = wt.summarise(metrics)
    assert summary["valid"] == 0.0 and np.isnan(summary["regret"])


def test_path_metrics_tolerance_is_relative() -> None:
    weights = torch.full((1, 2, 2), 1000.0, dtype=torch.float64)
    true = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    longer = torch.tensor([[[1.0, 1.0], [0.0, 1.0]]])
    cheap = weights.clone()
    cheap[0, 0, 1] = 1e-4  # the longer path costs 1e-4 more: 5e-8 relative, inside 1e-6
    assert bool(wt.path_metrics(longer, true, cheap)["cost_optimal"])
    cheap[0, 0, 1] = 0.01  # 5e-6 relative: outside
    assert not bool(wt.path_metrics(longer, true, cheap)["cost_optimal"])


@pytest.mark.parametrize("seed", [0, 1])
def test_normalise_costs_keeps_the_paths_and_fixes_the_scale(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    costs = torch.rand(20, 12, 12, generator=generator, dtype=torch.float64) * 9 + 0.1
    scaled = costs * torch.rand(20, 1, 1, generator=generator, dtype=torch.float64) * 100
    normalised = wt.normalise_costs(scaled)
    torch.testing.assert_close(normalised.mean(dim=(-2, -1)), torch.ones(20, dtype=torch.float64))
    torch.testing.assert_close(normalised, wt.normalise_costs(costs))
    solver = cg.solvers.get("shortest_path")
    optimum = (costs * solver(costs)).sum(dim=(-2, -1))
    torch.testing.assert_close((costs * solver(normalised)).sum(dim=(-2, -1)), optimum)


def test_channel_statistics_match_numpy() -> None:
    maps = torch.randint(0, 256, (7, 5, 4, 3), dtype=torch.uint8)
    mean, std = wt.channel_statistics(maps, chunk=3)
    reference = maps.numpy().reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(mean.numpy(), reference.mean(0), rtol=1e-6)
    np.testing.assert_allclose(std.numpy(), reference.std(0), rtol=1e-5)


def test_timed_solver_counts_calls_and_instances() -> None:
    timed = wt.TimedSolver(cg.solvers.get("shortest_path"))
    y = timed(torch.rand(3, 2, 5, 5))
    assert y.shape == (3, 2, 5, 5) and timed.calls == 1 and timed.instances == 6 and timed.seconds > 0
    assert timed.sense == "min" and timed.event_ndim == 2


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="loss must be one of"):
        wt.TrainConfig(loss="mse")
    with pytest.raises(ValueError, match="model must be one of"):
        wt.TrainConfig(model="vgg")
    with pytest.raises(ValueError, match="epochs must be an integer >= 1"):
        wt.TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="lr must be a number > 0"):
        wt.TrainConfig(lr=0.0)
    with pytest.raises(ValueError, match="schedule must be one of"):
        wt.TrainConfig(schedule="step")
    with pytest.raises(ValueError, match="direct baseline takes no estimator options"):
        wt.TrainConfig(estimator="direct", options={"lam": 1.0})
    with pytest.raises(ValueError, match="estimator must be one of .*'direct'.*got 'imle2'"):
        wt.TrainConfig(estimator="imle2")
    with pytest.raises(ValueError, match="device must be"):
        wt.resolve_device("gpu!")
    assert wt.TrainConfig(loss="fy").method() == "perturbation+fy"
    assert wt.TrainConfig(estimator="blackbox", options={"lam": 3.0}).resolved_options() == {"lam": 3.0}
    assert wt.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def _tiny(out: Path, data: Path, **overrides) -> wt.TrainConfig:
    settings = dict(
        out=str(out), data=str(data), n_train=16, n_val=8, n_test=8, channels=4, epochs=2,
        batch_size=8, lr=1e-2, progress=False, plots=False,
    )
    settings.update(overrides)
    return wt.TrainConfig(**settings)


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
    tmp_path: Path, tiny_data: Path, estimator: str, loss: str, options: dict
) -> None:
    uninterrupted = wt.train(
        _tiny(tmp_path / "a", tiny_data, estimator=estimator, loss=loss, options=options), log=lambda line: None
    )

    def kill_after_first(epoch: int, record: dict) -> None:
        if epoch == 1:
            raise _Killed

    stopped = _tiny(tmp_path / "b", tiny_data, estimator=estimator, loss=loss, options=options)
    with pytest.raises(_Killed):
        wt.train(stopped, log=lambda line: None, on_epoch_end=kill_after_first)
    assert (tmp_path / "b" / "checkpoint.pt").exists() and not (tmp_path / "b" / "metrics.json").exists()
    lines: list[str] = []
    resumed = wt.train(
        _tiny(tmp_path / "b", tiny_data, estimator=estimator, loss=loss, options=options, resume=True),
        log=lines.append,
    )
    assert any("resuming" in line and "after epoch 1" in line for line in lines)
    assert len(resumed["history"]) == 2
    for a, b in zip(uninterrupted["history"], resumed["history"]):
        for key in ("epoch", "loss", "lr", "val", "test"):
            assert json.dumps(a[key]) == json.dumps(b[key]), key  # dumps: NaN regret equals NaN
    first = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=False)
    second = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)
    for name, tensor in first["model"].items():
        assert torch.equal(tensor, second["model"][name]), name
    if estimator == "aimle":
        # The estimator's adaptive state is saved, restored and continued too.
        assert first["layer"] and all(torch.equal(v, second["layer"][k]) for k, v in first["layer"].items())
    written = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert written["final"]["test"]["cost_optimal"] == uninterrupted["final"]["test"]["cost_optimal"]


def test_resume_refuses_a_different_configuration(tmp_path: Path, tiny_data: Path) -> None:
    wt.train(_tiny(tmp_path, tiny_data, estimator="blackbox", epochs=1), log=lambda line: None)
    with pytest.raises(ValueError, match=r"configuration differs in \['estimator'\]"):
        wt.train(_tiny(tmp_path, tiny_data, estimator="ste", epochs=1, resume=True), log=lambda line: None)


@pytest.mark.slow
def test_train_end_to_end_on_generated_data(tmp_path: Path) -> None:
    config = wt.TrainConfig(
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
    assert metrics["config"]["options"]["lam"] == wt.ESTIMATOR_DEFAULTS["imle"]["lam"]
    assert result["history"][0]["epoch"] == 1
    # A second run with the same settings reuses the cached data set.
    lines: list[str] = []
    wt.train(config, log=lines.append)
    assert not any("generated" in line for line in lines)

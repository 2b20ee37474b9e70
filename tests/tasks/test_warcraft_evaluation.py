"""Tests of combgrad/tasks/warcraft/evaluation.py: path metrics, cost normalisation, the predictor."""

from __future__ import annotations

import itertools

import networkx as nx
import numpy as np
import pytest
import torch

import combgrad as cg
from combgrad.tasks._training import summarise
from combgrad.tasks.warcraft import data as wd
from combgrad.tasks.warcraft import evaluation as we
from combgrad.tasks.warcraft.model import SmallCNN


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
    np.testing.assert_array_equal(we.connects_corners(torch.from_numpy(masks)).numpy(), expected)


def test_path_metrics_count_ties_as_cost_optimal() -> None:
    weights = torch.ones(1, 3, 3, dtype=torch.float64)
    weights[0, 1, 1] = 5.0  # two optimal paths: around the centre on either side
    true = torch.tensor([[[1, 1, 0], [0, 0, 1], [0, 0, 1]]], dtype=torch.float32)
    other = torch.tensor([[[1, 0, 0], [1, 0, 0], [0, 1, 1]]], dtype=torch.float32)
    through = torch.tensor([[[1, 0, 0], [0, 1, 0], [0, 0, 1]]], dtype=torch.float32)
    metrics = we.path_metrics(torch.cat([true, other, through]), true.expand(3, 3, 3), weights.expand(3, 3, 3))
    assert metrics["exact"].tolist() == [True, False, False]
    assert metrics["cost_optimal"].tolist() == [True, True, False]
    assert metrics["regret"].tolist() == [0.0, 0.0, 3.0]
    assert metrics["valid"].all()


def test_path_metrics_reject_masks_that_are_not_paths() -> None:
    weights = torch.ones(2, 3, 3, dtype=torch.float64)
    true = torch.eye(3).expand(2, 3, 3)
    # The empty mask is cheaper than any path and the broken one is as cheap as the optimum.
    masks = torch.stack([torch.zeros(3, 3), torch.tensor([[1.0, 0, 0], [0, 0, 0], [0, 1, 1]])])
    metrics = we.path_metrics(masks, true, weights)
    assert metrics["valid"].tolist() == [False, False]
    assert metrics["cost_optimal"].tolist() == [False, False]
    assert torch.isnan(metrics["regret"]).all()
    summary = summarise(metrics)
    assert summary["valid"] == 0.0 and np.isnan(summary["regret"])


def test_path_metrics_tolerance_is_relative() -> None:
    weights = torch.full((1, 2, 2), 1000.0, dtype=torch.float64)
    true = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    longer = torch.tensor([[[1.0, 1.0], [0.0, 1.0]]])
    cheap = weights.clone()
    cheap[0, 0, 1] = 1e-4  # the longer path costs 1e-4 more: 5e-8 relative, inside 1e-6
    assert bool(we.path_metrics(longer, true, cheap)["cost_optimal"])
    cheap[0, 0, 1] = 0.01  # 5e-6 relative: outside
    assert not bool(we.path_metrics(longer, true, cheap)["cost_optimal"])


@pytest.mark.parametrize("seed", [0, 1])
def test_normalise_costs_keeps_the_paths_and_fixes_the_scale(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    costs = torch.rand(20, 12, 12, generator=generator, dtype=torch.float64) * 9 + 0.1
    scaled = costs * torch.rand(20, 1, 1, generator=generator, dtype=torch.float64) * 100
    normalised = we.normalise_costs(scaled)
    torch.testing.assert_close(normalised.mean(dim=(-2, -1)), torch.ones(20, dtype=torch.float64))
    torch.testing.assert_close(normalised, we.normalise_costs(costs))
    solver = cg.solvers.get("shortest_path")
    optimum = (costs * solver(costs)).sum(dim=(-2, -1))
    torch.testing.assert_close((costs * solver(normalised)).sum(dim=(-2, -1)), optimum)


def test_predictor_evaluates_a_split_in_chunks_like_at_once() -> None:
    """Guards the refactoring that dropped the tensor copy of each split (``_Split``):
    evaluating straight from the numpy split, in chunks, equals one whole-split pass."""
    torch.manual_seed(0)
    split = wd.generate_split(12, 7, seed=2, split="val")
    predictor = we.Predictor(SmallCNN(12, channels=4), torch.full((3,), 120.0), torch.full((3,), 40.0),
                             normalise=True)
    chunked = predictor.evaluate(split, batch_size=3)
    _, paths = predictor(torch.from_numpy(split.maps))
    whole = summarise(we.path_metrics(paths, torch.from_numpy(split.shortest_paths),
                                      torch.from_numpy(split.vertex_weights.astype(np.float64))))
    assert chunked == whole and chunked["valid"] == 1.0
    # The true paths score perfectly.
    perfect = summarise(we.path_metrics(torch.from_numpy(split.shortest_paths),
                                        torch.from_numpy(split.shortest_paths),
                                        torch.from_numpy(split.vertex_weights)))
    assert perfect == {"exact": 1.0, "valid": 1.0, "cost_optimal": 1.0, "regret": 0.0}

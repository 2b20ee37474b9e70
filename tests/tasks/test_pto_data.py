"""Tests of combgrad/tasks/pto/data.py: PyEPO's generators' formulas and orders, and bad inputs.

Against PyEPO (when installed) the tests compare distributions, never the random
stream: each library draws 200 data sets (seeds 0..199) of 100 instances, so that
the random matrix B, drawn once per data set, is averaged over too; the moments of
the 20,000 instances are compared within 5 standard errors estimated from the
spread of the 200 per-seed values (a false alarm has probability < 1e-6).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from combgrad.tasks.pto.data import grid_edges, knapsack_data, shortest_path_data, tsp_data

SEEDS = range(200)


def _moments(draws: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, tuple[float, float]]:
    """Per-seed statistics -> (mean over seeds, standard error): cost mean, cost variance,
    mean correlation between a cost and a feature."""
    stats: dict[str, list[float]] = {"mean": [], "variance": [], "correlation": []}
    for features, costs in draws:
        features, costs = np.asarray(features, np.float64), np.asarray(costs, np.float64)
        stats["mean"].append(costs.mean())
        stats["variance"].append(costs.var(axis=0).mean())
        centred_x = (features - features.mean(0)) / features.std(0)
        centred_c = (costs - costs.mean(0)) / np.maximum(costs.std(0), 1e-12)
        stats["correlation"].append((centred_c.T @ centred_x / len(costs)).mean())
    return {name: (float(np.mean(values)), float(np.std(values) / np.sqrt(len(values))))
            for name, values in stats.items()}


def _assert_same_moments(ours: list, theirs: list) -> None:
    mine, pyepo = _moments(ours), _moments(theirs)
    for name in mine:
        (a, sa), (b, sb) = mine[name], pyepo[name]
        assert abs(a - b) <= 5 * np.hypot(sa, sb), (name, a, b, sa, sb)


@pytest.mark.parametrize("deg, noise", [(1, 0.0), (4, 0.5)])
def test_shortest_path_moments_match_pyepo(deg: int, noise: float) -> None:
    pyepo = pytest.importorskip("pyepo")
    ours = [tuple(t.numpy() for t in shortest_path_data(100, 5, (5, 5), deg, noise, seed)[:2]) for seed in SEEDS]
    theirs = [pyepo.data.shortestpath.genData(100, 5, (5, 5), deg, noise, seed=seed) for seed in SEEDS]
    _assert_same_moments(ours, theirs)


@pytest.mark.parametrize("deg, noise", [(1, 0.0), (4, 0.5)])
def test_knapsack_moments_match_pyepo(deg: int, noise: float) -> None:
    pyepo = pytest.importorskip("pyepo")
    ours, theirs, our_weights, their_weights = [], [], [], []
    for seed in SEEDS:
        features, values, weights, _ = knapsack_data(100, 5, 32, 2, deg, noise, seed)
        ours.append((features.numpy(), values.numpy()))
        our_weights.append(weights.numpy())
        weights, features, values = pyepo.data.knapsack.genData(100, 5, 32, 2, deg, noise, seed=seed)
        theirs.append((features, values))
        their_weights.append(weights)
    _assert_same_moments(ours, theirs)
    mine, reference = np.concatenate(our_weights).ravel(), np.concatenate(their_weights).ravel()
    # Both uniform on 3.00..7.99: the same support, and means within 5 standard errors
    # (sd of the uniform 1.44 over 12,800 weights each: se 0.013).
    assert mine.min() >= 3.0 and mine.max() <= 7.99 and reference.min() >= 3.0 and reference.max() <= 7.99
    assert np.allclose(mine * 100, np.round(mine * 100))
    assert abs(mine.mean() - reference.mean()) < 5 * np.hypot(mine.std(), reference.std()) / np.sqrt(mine.size)


@pytest.mark.parametrize("deg, noise", [(1, 0.0), (2, 0.5)])
def test_tsp_moments_match_pyepo(deg: int, noise: float) -> None:
    pyepo = pytest.importorskip("pyepo")
    ours = [tuple(t.numpy() for t in tsp_data(100, 10, 8, deg, noise, seed)) for seed in SEEDS]
    theirs = [pyepo.data.tsp.genData(100, 10, 8, deg, noise, seed=seed) for seed in SEEDS]
    _assert_same_moments(ours, theirs)


def test_shortest_path_formula_recovers_a_bernoulli_matrix() -> None:
    """deg 1 without noise: 3.5 c - 4 = B x / sqrt(p) exactly, so least squares recovers a 0/1 B."""
    features, costs, edges = shortest_path_data(200, num_feat=4, grid=(3, 4), deg=1, seed=3)
    matrix = np.linalg.lstsq(features.numpy(), (3.5 * costs.numpy() - 4.0) * 2.0, rcond=None)[0].T
    assert matrix.shape == (len(edges), 4)
    assert np.allclose(matrix, np.round(matrix), atol=1e-8) and set(np.round(matrix).ravel()) <= {0.0, 1.0}


def test_noise_is_multiplicative_uniform() -> None:
    """The ratio of noisy to noiseless costs (same seed: B and x are drawn first) is U(0.5, 1.5):
    mean 1 and variance 1/12 within 5 standard errors of 200,000 draws."""
    clean = shortest_path_data(5000, deg=2, noise_width=0.0, seed=7).costs
    noisy = shortest_path_data(5000, deg=2, noise_width=0.5, seed=7).costs
    ratio = (noisy / clean).numpy().ravel()
    assert ratio.min() >= 0.5 and ratio.max() <= 1.5
    assert abs(ratio.mean() - 1.0) < 5 * np.sqrt(1 / 12 / ratio.size)
    assert abs(ratio.var() - 1 / 12) < 5 * np.sqrt(1 / 180 / ratio.size)  # var of (U - 1)^2 is 1/180


def test_arc_order_is_pyepos() -> None:
    pytest.importorskip("gurobipy")
    from pyepo.model.grb import shortestPathModel

    for grid in ((5, 5), (3, 4)):
        assert grid_edges(grid).tolist() == [list(arc) for arc in shortestPathModel(grid).arcs]


def test_tsp_costs_are_in_combinations_order() -> None:
    """deg 1 without noise, c_e = d_e + (B x)_e / sqrt(p) + 3: the intercepts of a regression on x
    are the distances + 3, and only in combinations order do they form a 2-D Euclidean matrix
    (classical scaling has exactly two non-zero eigenvalues, up to the 4-decimal rounding)."""
    n = 7
    features, costs = tsp_data(400, num_feat=3, num_nodes=n, seed=1)
    design = np.hstack([np.ones((400, 1)), features.numpy()])
    distances = np.linalg.lstsq(design, costs.numpy(), rcond=None)[0][0] - 3.0

    def spectrum(order: list[tuple[int, int]]) -> np.ndarray:
        matrix = np.zeros((n, n))
        for (i, j), value in zip(order, distances):
            matrix[i, j] = matrix[j, i] = value
        centring = np.eye(n) - 1.0 / n
        return np.sort(np.abs(np.linalg.eigvalsh(-0.5 * centring @ matrix**2 @ centring)))[::-1]

    right = spectrum(list(itertools.combinations(range(n), 2)))
    assert right[2] < 1e-3 * right[0]
    shuffled = list(itertools.combinations(range(n), 2))
    shuffled[0], shuffled[-1] = shuffled[-1], shuffled[0]
    assert spectrum(shuffled)[2] > 1e-2 * right[0]


def test_outputs_are_float64_and_deterministic() -> None:
    first = knapsack_data(5, seed=11)
    again = knapsack_data(5, seed=11)
    assert all(a.dtype == torch.float64 and torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first.values, knapsack_data(5, seed=12).values)
    assert bool((first.values >= 1).all()) and first.capacities.tolist() == [20.0]
    assert knapsack_data(2, dim=3, capacity=7.5).capacities.tolist() == [7.5] * 3
    assert grid_edges((5, 5)).shape == (40, 2) and tsp_data(2, num_nodes=20).costs.shape == (2, 190)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: shortest_path_data(0), "num_data must be an integer >= 1, got 0"),
        (lambda: shortest_path_data(3, grid=(5,)), "grid must be a pair"),
        (lambda: shortest_path_data(3, grid=(1, 1)), "at least 2 nodes"),
        (lambda: shortest_path_data(3, deg=0), "deg must be an integer >= 1"),
        (lambda: knapsack_data(3, noise_width=-0.1), "noise_width must be"),
        (lambda: knapsack_data(3, dim=0), "dim must be an integer >= 1"),
        (lambda: knapsack_data(3, capacity=float("nan")), "capacity must be"),
        (lambda: tsp_data(3, num_nodes=2), "num_nodes must be an integer >= 3"),
        (lambda: tsp_data(3, seed=-1), "seed must be an integer >= 0"),
    ],
)
def test_bad_inputs(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()

"""Tests of combgrad/tasks/pto/metrics.py: regret against brute force (both senses) and PyEPO."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import combgrad as cg
from combgrad.tasks.pto.data import grid_edges, knapsack_data, shortest_path_data
from combgrad.tasks.pto.metrics import optimal_objective, regret


def _brute_force(feasible: np.ndarray, costs: np.ndarray, sense: str) -> np.ndarray:
    """The best of the ``feasible [K, n]`` solutions for each row of ``costs [N, n]`` (first on ties)."""
    values = costs @ feasible.T
    return feasible[values.argmin(1) if sense == "min" else values.argmax(1)]


def _hand_regret(feasible: np.ndarray, predicted: np.ndarray, costs: np.ndarray, sense: str) -> np.ndarray:
    taken = (_brute_force(feasible, predicted, sense) * costs).sum(1)
    best = (_brute_force(feasible, costs, sense) * costs).sum(1)
    return taken - best if sense == "min" else best - taken


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_regret_of_a_max_problem_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    weights = rng.integers(1, 6, 6)
    capacity = int(weights.sum() // 2)
    feasible = np.array([y for y in itertools.product((0, 1), repeat=6) if np.dot(y, weights) <= capacity], float)
    solver = cg.solvers.get("knapsack", weights=weights.tolist(), capacity=capacity)
    costs = rng.uniform(1, 10, (50, 6))
    predicted = costs + rng.normal(0, 3, (50, 6))
    expected = _hand_regret(feasible, predicted, costs, "max")
    per_instance = regret(solver, torch.tensor(predicted), torch.tensor(costs), normalized=False, reduction="none")
    assert per_instance.dtype == torch.float64 and bool((per_instance >= 0).all())
    np.testing.assert_allclose(per_instance.numpy(), expected, atol=1e-9)
    optimum = (_brute_force(feasible, costs, "max") * costs).sum(1)
    np.testing.assert_allclose(float(regret(solver, torch.tensor(predicted), torch.tensor(costs))),
                               expected.sum() / optimum.sum(), rtol=1e-6)
    np.testing.assert_allclose(regret(solver, torch.tensor(predicted), torch.tensor(costs), reduction="none").numpy(),
                               expected / optimum, rtol=1e-12)
    np.testing.assert_allclose(float(regret(solver, torch.tensor(predicted), torch.tensor(costs), normalized=False,
                                            reduction="mean")), expected.mean(), rtol=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_regret_of_a_min_problem_matches_brute_force(seed: int) -> None:
    """Choose 2 of 5 items at least cost (an ``ilp`` with one equality), every 2-subset enumerated."""
    rng = np.random.default_rng(seed)
    feasible = np.array([y for y in itertools.product((0, 1), repeat=5) if sum(y) == 2], float)
    solver = cg.solvers.get("ilp", A_eq=[[1] * 5], b_eq=[2], sense="min", objective_scale=1e6)
    costs = np.round(rng.uniform(1, 10, (40, 5)), 3)
    predicted = np.round(costs + rng.normal(0, 3, (40, 5)), 3)
    expected = _hand_regret(feasible, predicted, costs, "min")
    per_instance = regret(solver, torch.tensor(predicted), torch.tensor(costs), normalized=False, reduction="none")
    np.testing.assert_allclose(per_instance.numpy(), expected, atol=1e-9)
    assert expected.sum() > 0  # the predictions are wrong somewhere: the check is not vacuous
    exact = regret(solver, torch.tensor(costs), torch.tensor(costs))
    assert float(exact) == 0.0


def test_known_objectives_and_float32_inputs() -> None:
    """objective_true skips the solve and gives the same number; float32 inputs are read in float64."""
    _, values, weights, capacities = knapsack_data(30, num_items=10, deg=2, noise_width=0.5, seed=4)
    solver = cg.solvers.get("knapsack", weights=weights[0], capacity=float(capacities[0]), constraint_scale=100)
    solutions, objectives = optimal_objective(solver, values)
    assert objectives.dtype == torch.float64 and torch.allclose(objectives, (solutions * values).sum(-1))
    guess = values.flip(-1)
    assert torch.equal(regret(solver, guess, values), regret(solver, guess, values, objective_true=objectives))
    assert regret(solver, guess.float(), values.float()).dtype == torch.float64


def _grid_solver(edges: torch.Tensor, nodes: int):
    """The edge-weighted grid's solver: graph_shortest_path, or (before it is registered) an
    ``ilp`` with the flow constraints (in minus out: -1 at the source, +1 at the target)."""
    if "graph_shortest_path" in cg.solvers.names():
        return cg.solvers.get("graph_shortest_path", edges=edges, num_nodes=nodes)
    incidence = np.zeros((nodes, len(edges)), int)
    for index, (tail, head) in enumerate(edges.tolist()):
        incidence[tail, index] -= 1
        incidence[head, index] += 1
    demand = np.zeros(nodes, int)
    demand[0], demand[-1] = -1, 1
    return cg.solvers.get("ilp", A_eq=incidence, b_eq=demand, sense="min")


@pytest.mark.parametrize("problem", ["shortest_path", "knapsack"])
def test_regret_matches_pyepo(problem: str) -> None:
    """The same linear model's predictions scored by pyepo.metric.regret (Gurobi, float32 labels) and here.

    PyEPO computes its labels in float32: agreement to 1e-5 relative (the objectives are
    sums of 8-40 float32 numbers of size 1-20)."""
    pytest.importorskip("pyepo")
    pytest.importorskip("gurobipy")
    from pyepo.data.dataset import optDataset
    from pyepo.metric import regret as pyepo_regret
    from pyepo.model.grb import knapsackModel, shortestPathModel

    if problem == "shortest_path":
        features, costs, edges = shortest_path_data(60, deg=4, noise_width=0.5, seed=5)
        model = shortestPathModel((5, 5))
        solver = _grid_solver(grid_edges((5, 5)), 25)
    else:
        features, costs, weights, capacities = knapsack_data(60, num_items=12, dim=1, deg=4, noise_width=0.5, seed=5)
        model = knapsackModel(weights.numpy(), capacities.numpy())
        solver = cg.solvers.get("knapsack", weights=weights[0], capacity=float(capacities[0]), constraint_scale=100)
    torch.manual_seed(0)
    predictor = torch.nn.Linear(features.shape[1], costs.shape[1])
    # Labels from float32 costs on both sides: the comparison is of the metric, not of the data's precision.
    costs32 = costs.float()
    dataset = optDataset(model, features.float().numpy(), costs32.numpy())
    loader = torch.utils.data.DataLoader(dataset, batch_size=32, shuffle=False)
    theirs = pyepo_regret(predictor, model, loader)
    with torch.no_grad():
        predicted = predictor(features.float())
    ours = float(regret(solver, predicted, costs32))
    assert ours > 0.01  # an untrained model: far from optimal, so the comparison is informative
    assert ours == pytest.approx(theirs, rel=1e-5)
    assert regret(solver, predicted, costs32, normalized=False, reduction="none").numpy() == pytest.approx(
        pyepo_regret(predictor, model, loader, reduction="none"), abs=1e-4)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda s: regret(s, torch.ones(2, 3), torch.ones(2, 4)), ValueError, "cost_true must have the shape"),
        (lambda s: regret(s, torch.ones(2, 3), torch.ones(2, 3), reduction="max"), ValueError, "reduction must be"),
        (lambda s: regret(s, torch.ones(2, 3), torch.ones(2, 3), normalized=1), ValueError, "normalized must be"),
        (lambda s: regret(s, torch.full((1, 3), float("nan")), torch.ones(1, 3)), ValueError, "cost_pred must be finite"),
        (lambda s: regret(s, torch.ones(2, 3), torch.ones(2, 3), objective_true=torch.ones(3)), ValueError,
         "objective_true must have shape"),
        (lambda s: regret(s, [1.0, 2.0, 3.0], torch.ones(3)), TypeError, "cost_pred"),
        (lambda s: regret(s, torch.tensor(1.0), torch.tensor(1.0)), ValueError, "at least 1 dim"),
    ],
)
def test_bad_inputs(call, error: type, match: str) -> None:
    solver = cg.solvers.get("knapsack", weights=[3, 4, 2], capacity=5)
    with pytest.raises(error, match=match):
        call(solver)

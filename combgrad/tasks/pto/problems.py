"""The problems of a predict-then-optimize run: data splits with float64 labels, and their solver."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from ...solvers import get as get_solver
from .config import PtoConfig
from .data import knapsack_data, shortest_path_data, tsp_data
from .metrics import optimal_objective


class Batch(NamedTuple):
    """One batch of a split, as the methods' losses read it.

    Attributes:
        features: ``[B, p]`` float32 model inputs.
        costs: ``[B, m]`` true costs (float64).
        solutions: ``[B, m]`` optimal solutions ``w*(c)`` (float64).
        objectives: ``[B]`` optimal objectives ``<c, w*(c)>`` (float64).
    """

    features: torch.Tensor
    costs: torch.Tensor
    solutions: torch.Tensor
    objectives: torch.Tensor


@dataclass
class Split:
    """Instances with their true costs, optimal solutions and objectives (labels in float64).

    Example:
        >>> import combgrad as cg
        >>> solver = cg.solvers.get("knapsack", weights=[3, 4, 2], capacity=5)
        >>> split = Split.label(torch.zeros(2, 1), torch.tensor([[4.0, 5.0, 3.0], [1.0, 1.0, 9.0]]), solver)
        >>> split.objectives.tolist(), len(split)
        ([7.0, 10.0], 2)
    """

    features: torch.Tensor
    costs: torch.Tensor
    solutions: torch.Tensor
    objectives: torch.Tensor

    @classmethod
    def label(cls, features: torch.Tensor, costs: torch.Tensor, solver: Any) -> Split:
        """The split of ``features [N, p]`` and ``costs [N, m]``, solved once by ``solver`` in float64."""
        costs = costs.to(torch.float64)
        solutions, objectives = optimal_objective(solver, costs)
        return cls(features.to(torch.float32), costs, solutions, objectives)

    def __len__(self) -> int:
        return len(self.costs)

    def to(self, device: torch.device) -> Split:
        """The split on ``device``."""
        return Split(*(tensor.to(device) for tensor in (self.features, self.costs, self.solutions, self.objectives)))

    def batch(self, index: torch.Tensor) -> Batch:
        """The instances at ``index`` as a :class:`Batch`."""
        return Batch(self.features[index], self.costs[index], self.solutions[index], self.objectives[index])


@dataclass
class Problem:
    """A run's data and solver.

    Attributes:
        name: The problem (``shortest_path``, ``knapsack``, ``tsp``).
        solver: The combgrad solver of the problem.
        train: Training split.
        test: Test split.
        details: What the data were made with (edges, weights, capacities, as lists).
    """

    name: str
    solver: Any
    train: Split
    test: Split
    details: dict[str, Any]

    @property
    def num_costs(self) -> int:
        """Cost entries ``m`` per instance."""
        return int(self.train.costs.shape[1])


def make_solver(config: PtoConfig, data: Any) -> Any:
    """The solver of ``config.problem`` for generated ``data`` (see :mod:`.data`).

    * shortest path: ``graph_shortest_path`` over the grid's edges, node 0 to the last
      (a DAG: exact for negative costs too, which SPO+ needs);
    * knapsack: the numba ``knapsack`` DP for one dimension (weights with two
      decimals: ``constraint_scale=100``), CP-SAT ``ilp`` for several;
    * TSP: the CP-SAT ``tsp`` solver.

    Example:
        >>> from combgrad.tasks.pto.data import knapsack_data
        >>> solver = make_solver(PtoConfig(problem="knapsack"), knapsack_data(1, num_items=4))
        >>> solver.name, solver.capacity  # 20 at two decimals
        ('knapsack', 2000)
    """
    if config.problem == "shortest_path":
        return get_solver("graph_shortest_path", edges=data.edges, num_nodes=config.grid * config.grid)
    if config.problem == "knapsack":
        if config.dim == 1:
            return get_solver("knapsack", weights=data.weights[0], capacity=float(data.capacities[0]),
                              constraint_scale=100)
        return get_solver("ilp", A=data.weights, b=data.capacities, sense="max", constraint_scale=100)
    return get_solver("tsp", num_nodes=config.num_nodes)


def build_problem(config: PtoConfig) -> Problem:
    """Generate ``n_train + n_test`` instances (one draw, split in order), label them, make the solver.

    Example:
        >>> problem = build_problem(PtoConfig(problem="knapsack", n_train=8, n_test=4, num_items=6))
        >>> len(problem.train), len(problem.test), problem.num_costs, problem.solver.sense
        (8, 4, 6, 'max')
    """
    count = config.n_train + config.n_test
    details: dict[str, Any]
    if config.problem == "shortest_path":
        data: Any = shortest_path_data(count, config.num_feat, (config.grid, config.grid), config.deg, config.noise,
                                       config.data_seed)
        costs = data.costs
        details = {"edges": data.edges.tolist()}
    elif config.problem == "knapsack":
        data = knapsack_data(count, config.num_feat, config.num_items, config.dim, config.deg, config.noise,
                             config.data_seed, capacity=config.capacity)
        costs = data.values
        details = {"weights": data.weights.tolist(), "capacities": data.capacities.tolist()}
    else:
        data = tsp_data(count, config.num_feat, config.num_nodes, config.deg, config.noise, config.data_seed)
        costs = data.costs
        details = {}
    solver = make_solver(config, data)
    features = data.features
    train = Split.label(features[: config.n_train], costs[: config.n_train], solver)
    test = Split.label(features[config.n_train :], costs[config.n_train :], solver)
    return Problem(config.problem, solver, train, test, details)


__all__ = ["Batch", "Problem", "Split", "build_problem", "make_solver"]

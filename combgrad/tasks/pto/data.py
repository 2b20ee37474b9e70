"""PyEPO's synthetic predict-then-optimize data: shortest path, knapsack, TSP.

Each generator follows the published formulas (Elmachtoub & Grigas 2022 for the
shortest path; Tang & Khalil 2022, PyEPO, for the knapsack and the TSP), so that
results compare with published numbers, but not PyEPO's random stream: the
distributions are the same, the draws are numpy's ``default_rng(seed)``. Every
array is returned as a float64 tensor (PyEPO stores costs in float32; the labels
computed from them here stay in float64, see :mod:`.metrics`).

Shared recipe: features ``x ~ N(0, I_p)``; a fixed random matrix ``B`` (Bernoulli(1/2)
entries, times ``U(-2, 2)`` for the TSP) maps them to ``B x / sqrt(p) + 3``; a
polynomial of degree ``deg`` makes the relation nonlinear (misspecified for a
linear model when ``deg > 1``); multiplicative noise ``U(1 - w, 1 + w)`` with
half-width ``w = noise_width`` blurs it.

References:
    A. N. Elmachtoub, P. Grigas. Smart "Predict, then Optimize". Management
    Science 68(1), 2022.

    B. Tang, E. B. Khalil. PyEPO: A PyTorch-based End-to-End Predict-then-Optimize
    Library for Linear and Integer Programming. Mathematical Programming
    Computation, 2024 (arXiv:2206.14234, 2022).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from ..._checks import check_number, check_positive_int

KNAPSACK_CAPACITY = 20.0
"""Capacity per dimension when ``knapsack_data`` is given none: the value of PyEPO's
tutorials (``caps = [20] * dim``); with weights 3-8 it holds about 4 of the items."""


class ShortestPathData(NamedTuple):
    """What :func:`shortest_path_data` returns (unpacks as a tuple).

    Attributes:
        features: ``[N, p]`` features.
        costs: ``[N, m]`` edge costs, in the order of ``edges``.
        edges: ``[m, 2]`` int64 (tail, head) pairs of the grid, in PyEPO's arc order.
    """

    features: torch.Tensor
    costs: torch.Tensor
    edges: torch.Tensor


class KnapsackData(NamedTuple):
    """What :func:`knapsack_data` returns (unpacks as a tuple).

    Attributes:
        features: ``[N, p]`` features.
        values: ``[N, n]`` item values (integers, as PyEPO rounds them up).
        weights: ``[dim, n]`` item weights, shared by all instances (two decimals, 3.00-7.99).
        capacities: ``[dim]`` capacity of each dimension.
    """

    features: torch.Tensor
    values: torch.Tensor
    weights: torch.Tensor
    capacities: torch.Tensor


class TspData(NamedTuple):
    """What :func:`tsp_data` returns (unpacks as a tuple).

    Attributes:
        features: ``[N, p]`` features.
        costs: ``[N, n(n-1)/2]`` symmetric edge costs in ``itertools.combinations(range(n), 2)`` order.
    """

    features: torch.Tensor
    costs: torch.Tensor


def _check_common(owner: str, num_data: int, num_feat: int, deg: int, noise_width: float, seed: int) -> tuple:
    return (
        check_positive_int(owner, "num_data", num_data),
        check_positive_int(owner, "num_feat", num_feat),
        check_positive_int(owner, "deg", deg),
        check_number(owner, "noise_width", noise_width, nonnegative=True),
        check_positive_int(owner, "seed", seed, minimum=0),
    )


def _noise(rng: np.random.Generator, noise_width: float, shape: tuple[int, int]) -> np.ndarray:
    """Multiplicative noise ``U(1 - w, 1 + w)``."""
    return rng.uniform(1.0 - noise_width, 1.0 + noise_width, shape)


def grid_edges(grid: tuple[int, int]) -> torch.Tensor:
    """The edges ``[m, 2]`` of an ``h x w`` grid in PyEPO's arc order.

    Nodes are numbered row by row (``v = i * w + j``); every edge points right or
    down, so the graph is a DAG from node 0 (north-west) to ``h w - 1`` (south-east).
    Row by row: the ``w - 1`` rightward edges of row ``i``, then (except on the last
    row) the ``w`` downward edges leaving it. ``m = (h - 1) w + (w - 1) h``.

    Example:
        >>> grid_edges((2, 2)).tolist()
        [[0, 1], [0, 2], [1, 3], [2, 3]]
    """
    height, width = _check_grid("grid_edges", grid)
    edges: list[tuple[int, int]] = []
    for i in range(height):
        edges.extend((i * width + j, i * width + j + 1) for j in range(width - 1))
        if i < height - 1:
            edges.extend((i * width + j, (i + 1) * width + j) for j in range(width))
    return torch.tensor(edges, dtype=torch.int64).reshape(-1, 2)


def _check_grid(owner: str, grid: object) -> tuple[int, int]:
    if not isinstance(grid, (tuple, list)) or len(grid) != 2:
        raise ValueError(f"{owner}: grid must be a pair (rows, columns), got {grid!r}")
    height = check_positive_int(owner, "grid[0]", grid[0])
    width = check_positive_int(owner, "grid[1]", grid[1])
    if height * width < 2:
        raise ValueError(f"{owner}: grid must have at least 2 nodes, got {grid!r}")
    return height, width


def shortest_path_data(
    num_data: int,
    num_feat: int = 5,
    grid: tuple[int, int] = (5, 5),
    deg: int = 1,
    noise_width: float = 0.0,
    seed: int = 0,
) -> ShortestPathData:
    """Features and edge costs of the shortest path on an ``h x w`` grid (Elmachtoub & Grigas).

    ``c_j = [(1/sqrt(p) (B x)_j + 3)^deg + 1] / 3.5^deg * eps_j`` with ``B [m, p]``
    Bernoulli(1/2), ``x ~ N(0, I_p)`` and ``eps_j ~ U(1 - noise_width, 1 + noise_width)``;
    the division by ``3.5^deg`` keeps the mean cost near 1 for every degree
    (PyEPO's scaling). The path runs from node 0 to the last node along ``edges``.

    Args:
        num_data: Instances ``N``.
        num_feat: Features ``p``.
        grid: ``(rows, columns)`` of nodes.
        deg: Polynomial degree (1 is a linear relation).
        noise_width: Half-width of the multiplicative noise, >= 0.
        seed: Seed of the draws (``B`` included).

    Returns:
        :class:`ShortestPathData` ``(features [N, p], costs [N, m], edges [m, 2])``, float64
        features and costs.

    Example:
        >>> features, costs, edges = shortest_path_data(3, grid=(5, 5), deg=4, noise_width=0.5)
        >>> features.shape, costs.shape, edges.shape, costs.dtype
        (torch.Size([3, 5]), torch.Size([3, 40]), torch.Size([40, 2]), torch.float64)

    References:
        A. N. Elmachtoub, P. Grigas. Smart "Predict, then Optimize". Management
        Science 68(1), 2022.
    """
    owner = "shortest_path_data"
    num_data, num_feat, deg, noise_width, seed = _check_common(owner, num_data, num_feat, deg, noise_width, seed)
    edges = grid_edges(_check_grid(owner, grid))
    m = len(edges)
    rng = np.random.default_rng(seed)
    matrix = rng.binomial(1, 0.5, (m, num_feat)).astype(np.float64)
    x = rng.standard_normal((num_data, num_feat))
    costs = ((x @ matrix.T / np.sqrt(num_feat) + 3.0) ** deg + 1.0) / 3.5**deg
    costs *= _noise(rng, noise_width, costs.shape)
    return ShortestPathData(torch.from_numpy(x), torch.from_numpy(costs), edges)


def knapsack_data(
    num_data: int,
    num_feat: int = 5,
    num_items: int = 32,
    dim: int = 1,
    deg: int = 1,
    noise_width: float = 0.0,
    seed: int = 0,
    *,
    capacity: float | None = None,
) -> KnapsackData:
    """Features, item values, weights and capacities of a ``dim``-dimensional 0/1 knapsack (PyEPO).

    Weights are shared by all instances: ``W [dim, n]`` uniform on 3.00, 3.01, ...,
    7.99. Values depend on the features:
    ``v_j = ceil(5 [(1/sqrt(p) (B x)_j + 3)^deg + 1] / 3.5^deg * eps_j)`` with
    ``B [n, p]`` Bernoulli(1/2), ``x ~ N(0, I_p)``, ``eps_j ~ U(1 - w, 1 + w)``
    (PyEPO rounds the values up to integers). The problem is
    ``max <v, y>`` s.t. ``W y <= capacities``, ``y`` binary.

    Args:
        num_data: Instances ``N``.
        num_feat: Features ``p``.
        num_items: Items ``n``.
        dim: Knapsack dimensions (resources).
        deg: Polynomial degree.
        noise_width: Half-width of the multiplicative noise, >= 0.
        seed: Seed of the draws.
        capacity: Capacity of every dimension; None is :data:`KNAPSACK_CAPACITY` (20,
            PyEPO's tutorials' value).

    Returns:
        :class:`KnapsackData` ``(features [N, p], values [N, n], weights [dim, n],
        capacities [dim])``, all float64.

    Example:
        >>> features, values, weights, capacities = knapsack_data(4, num_items=10, deg=2)
        >>> values.shape, weights.shape, capacities.tolist(), bool((values == values.ceil()).all())
        (torch.Size([4, 10]), torch.Size([1, 10]), [20.0], True)

    References:
        B. Tang, E. B. Khalil. PyEPO: A PyTorch-based End-to-End Predict-then-Optimize
        Library for Linear and Integer Programming. Mathematical Programming Computation, 2024.
    """
    owner = "knapsack_data"
    num_data, num_feat, deg, noise_width, seed = _check_common(owner, num_data, num_feat, deg, noise_width, seed)
    num_items = check_positive_int(owner, "num_items", num_items)
    dim = check_positive_int(owner, "dim", dim)
    capacity = KNAPSACK_CAPACITY if capacity is None else check_number(owner, "capacity", capacity, nonnegative=True)
    rng = np.random.default_rng(seed)
    weights = rng.integers(300, 800, (dim, num_items)) / 100.0
    matrix = rng.binomial(1, 0.5, (num_items, num_feat)).astype(np.float64)
    x = rng.standard_normal((num_data, num_feat))
    values = 5.0 * ((x @ matrix.T / np.sqrt(num_feat) + 3.0) ** deg + 1.0) / 3.5**deg
    values = np.ceil(values * _noise(rng, noise_width, values.shape))
    return KnapsackData(
        torch.from_numpy(x), torch.from_numpy(values), torch.from_numpy(weights),
        torch.full((dim,), capacity, dtype=torch.float64),
    )


def tsp_data(
    num_data: int,
    num_feat: int = 10,
    num_nodes: int = 20,
    deg: int = 1,
    noise_width: float = 0.0,
    seed: int = 0,
) -> TspData:
    """Features and symmetric edge costs of a travelling salesman problem (PyEPO).

    Each edge cost is a fixed Euclidean distance plus a feature-driven part:
    ``c_e = d_e + (1/sqrt(p) (B x)_e + 3)^deg / 3^(deg - 1) * eps_e``. The nodes'
    coordinates are drawn once: half (``n // 2``) uniform on ``[-2, 2]^2``, the rest
    standard normal; ``B [E, p]`` is Bernoulli(1/2) times ``U(-2, 2)``, ``x ~ N(0, I_p)``,
    ``eps_e ~ U(1 - w, 1 + w)``; costs are rounded to 4 decimals as PyEPO does.
    Edges are ordered as ``itertools.combinations(range(n), 2)``.

    Args:
        num_data: Instances ``N``.
        num_feat: Features ``p``.
        num_nodes: Cities ``n`` (>= 3).
        deg: Polynomial degree.
        noise_width: Half-width of the multiplicative noise, >= 0.
        seed: Seed of the draws.

    Returns:
        :class:`TspData` ``(features [N, p], costs [N, n(n-1)/2])``, float64.

    Example:
        >>> features, costs = tsp_data(2, num_nodes=5)
        >>> features.shape, costs.shape
        (torch.Size([2, 10]), torch.Size([2, 10]))

    References:
        B. Tang, E. B. Khalil. PyEPO: A PyTorch-based End-to-End Predict-then-Optimize
        Library for Linear and Integer Programming. Mathematical Programming Computation, 2024.
    """
    owner = "tsp_data"
    num_data, num_feat, deg, noise_width, seed = _check_common(owner, num_data, num_feat, deg, noise_width, seed)
    num_nodes = check_positive_int(owner, "num_nodes", num_nodes, minimum=3)
    rng = np.random.default_rng(seed)
    half = num_nodes // 2
    coordinates = np.concatenate([rng.uniform(-2.0, 2.0, (half, 2)), rng.standard_normal((num_nodes - half, 2))])
    first, second = np.triu_indices(num_nodes, k=1)  # row-major upper triangle: combinations order
    distances = np.linalg.norm(coordinates[first] - coordinates[second], axis=1)
    count = len(first)
    matrix = rng.binomial(1, 0.5, (count, num_feat)) * rng.uniform(-2.0, 2.0, (count, num_feat))
    x = rng.standard_normal((num_data, num_feat))
    feature_costs = (x @ matrix.T / np.sqrt(num_feat) + 3.0) ** deg / 3.0 ** (deg - 1)
    costs = np.round(distances + feature_costs * _noise(rng, noise_width, feature_costs.shape), 4)
    return TspData(torch.from_numpy(x), torch.from_numpy(costs))


__all__ = [
    "KNAPSACK_CAPACITY",
    "KnapsackData",
    "ShortestPathData",
    "TspData",
    "grid_edges",
    "knapsack_data",
    "shortest_path_data",
    "tsp_data",
]

"""Tests for combgrad/solvers/shortest_path.py against networkx and the documented tie rule."""

from __future__ import annotations

import heapq
import itertools
import zlib

import networkx as nx
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import combgrad as cg
from combgrad.solvers import ShortestPath

STEPS = {
    4: [(-1, 0), (0, -1), (0, 1), (1, 0)],
    8: [(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1) if (dr, dc) != (0, 0)],
}


def neighbours(cell, shape, neighbourhood):
    row, col = cell
    for dr, dc in STEPS[neighbourhood]:
        if 0 <= row + dr < shape[0] and 0 <= col + dc < shape[1]:
            yield row + dr, col + dc


def networkx_cost(costs: np.ndarray, source, target, neighbourhood) -> float:
    """Vertex-weighted path cost by networkx: edge u -> v weighs costs[v], plus costs[source]."""
    graph = nx.DiGraph()
    graph.add_node(source)
    for cell in itertools.product(range(costs.shape[0]), range(costs.shape[1])):
        for other in neighbours(cell, costs.shape, neighbourhood):
            graph.add_edge(cell, other, weight=costs[other])
    return nx.dijkstra_path_length(graph, source, target) + costs[source]


def tie_rule_mask(costs: np.ndarray, source, target, neighbourhood) -> np.ndarray:
    """Plain-Python Dijkstra following the documented rule: settle the smallest
    (distance, row-major index); change a predecessor only on strict improvement."""
    height, width = costs.shape
    distance = {source: costs[source]}
    predecessor = {source: None}
    settled = set()
    heap = [(costs[source], source[0] * width + source[1])]
    while heap:
        current, index = heapq.heappop(heap)
        cell = divmod(index, width)
        if cell in settled:
            continue
        settled.add(cell)
        if cell == target:
            break
        for other in neighbours(cell, costs.shape, neighbourhood):
            candidate = current + costs[other]
            if other not in settled and candidate < distance.get(other, np.inf):
                distance[other] = candidate
                predecessor[other] = cell
                heapq.heappush(heap, (candidate, other[0] * width + other[1]))
    mask = np.zeros(costs.shape)
    cell = target
    while cell is not None:
        mask[cell] = 1
        cell = predecessor[cell]
    return mask


def assert_valid_path(mask: np.ndarray, source, target, neighbourhood) -> None:
    """The marked cells hold source and target and connect them (by the neighbourhood)."""
    assert set(np.unique(mask)) <= {0.0, 1.0}
    assert mask[source] == 1 and mask[target] == 1
    reached, frontier = {source}, [source]
    while frontier:
        cell = frontier.pop()
        for other in neighbours(cell, mask.shape, neighbourhood):
            if mask[other] == 1 and other not in reached:
                reached.add(other)
                frontier.append(other)
    assert target in reached
    assert len(reached) == int(mask.sum()), "cells off the source-target path are marked"


SHAPES = [(12, 12), (17, 23), (30, 30), (1, 1), (1, 7), (7, 1), (2, 5)]


@pytest.mark.parametrize("neighbourhood", [4, 8])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cost_matches_networkx(neighbourhood, shape, seed):
    rng = np.random.default_rng(seed)
    costs = rng.uniform(0.1, 10.0, size=(3, *shape))
    y = cg.solvers.get("shortest_path", neighbourhood=neighbourhood)(torch.from_numpy(costs)).numpy()
    target = (shape[0] - 1, shape[1] - 1)
    for instance, mask in zip(costs, y):
        expected = networkx_cost(instance, (0, 0), target, neighbourhood)
        assert (instance * mask).sum() == pytest.approx(expected, rel=1e-12)
        assert_valid_path(mask, (0, 0), target, neighbourhood)


@pytest.mark.parametrize("neighbourhood", [4, 8])
@pytest.mark.parametrize("seed", [3, 4])
def test_random_source_and_target_match_networkx(neighbourhood, seed):
    rng = np.random.default_rng(seed)
    costs = rng.uniform(0.0, 5.0, size=(13, 19))
    source = tuple(int(i) for i in rng.integers((0, 0), costs.shape))
    target = tuple(int(i) for i in rng.integers((0, 0), costs.shape))
    solver = cg.solvers.get("shortest_path", source=source, target=target, neighbourhood=neighbourhood)
    mask = solver(torch.from_numpy(costs)).numpy()
    assert (costs * mask).sum() == pytest.approx(networkx_cost(costs, source, target, neighbourhood))
    assert_valid_path(mask, source, target, neighbourhood)


@pytest.mark.parametrize("neighbourhood", [4, 8])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ties_follow_documented_rule(neighbourhood, seed):
    # Costs in {0, 1, 2} make ties (and zero-cost plateaus) common, so the exact
    # mask, not only its cost, pins down the tie rule.
    rng = np.random.default_rng(seed)
    costs = rng.integers(0, 3, size=(6, 12, 15)).astype(np.float64)
    y = cg.solvers.get("shortest_path", neighbourhood=neighbourhood)(torch.from_numpy(costs)).numpy()
    for instance, mask in zip(costs, y):
        np.testing.assert_array_equal(mask, tie_rule_mask(instance, (0, 0), (11, 14), neighbourhood))
        assert (instance * mask).sum() == networkx_cost(instance, (0, 0), (11, 14), neighbourhood)


@settings(max_examples=120, deadline=None)
@given(
    data=st.data(),
    height=st.integers(1, 6),
    width=st.integers(1, 6),
    neighbourhood=st.sampled_from([4, 8]),
    backend=st.sampled_from(["numba", "torch"]),
)
def test_small_grids_property(data, height, width, neighbourhood, backend):
    values = data.draw(st.lists(st.integers(-2, 4), min_size=height * width, max_size=height * width))
    costs = np.array(values, dtype=np.float64).reshape(height, width)
    source = (data.draw(st.integers(0, height - 1)), data.draw(st.integers(0, width - 1)))
    target = (data.draw(st.integers(0, height - 1)), data.draw(st.integers(0, width - 1)))
    solver = ShortestPath(source=source, target=target, neighbourhood=neighbourhood, backend=backend)
    mask = solver(torch.from_numpy(costs)).numpy()
    clipped = np.maximum(costs, 0.0)
    assert (clipped * mask).sum() == networkx_cost(clipped, source, target, neighbourhood)
    assert_valid_path(mask, source, target, neighbourhood)
    if backend == "numba":  # the torch backend documents its own tie rule
        np.testing.assert_array_equal(mask, tie_rule_mask(clipped, source, target, neighbourhood))


def test_constant_grid_four_neighbours_goes_along_top_row_then_down():
    # Every cell's cheapest predecessors are its upper and left neighbours, at
    # equal distance; the upper one has the lower row-major index, so it is settled
    # first and kept: traced back from the target, the path climbs to row 0.
    y = ShortestPath(neighbourhood=4)(torch.ones(4, 6))
    expected = torch.zeros(4, 6)
    expected[0, :] = 1
    expected[:, -1] = 1
    assert torch.equal(y, expected)


def test_constant_grid_eight_neighbours_tie_rule():
    # On 3 x 5 every path has at least 5 cells and there are several such paths.
    # Each cell's predecessor is its lowest-index neighbour one step closer to the
    # source: (2,4) <- (1,3) <- (0,2) <- (0,1) <- (0,0).
    y = ShortestPath()(torch.ones(3, 5))
    expected = torch.zeros(3, 5)
    for cell in [(0, 0), (0, 1), (0, 2), (1, 3), (2, 4)]:
        expected[cell] = 1
    assert torch.equal(y, expected)


def test_constant_square_grid_eight_neighbours_is_the_diagonal():
    assert torch.equal(ShortestPath()(torch.full((7, 7), 2.5)), torch.eye(7))


def test_deterministic_and_batch_equals_single():
    costs = torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    solver = ShortestPath()
    y = solver(costs)
    assert y.shape == costs.shape
    assert torch.equal(y, solver(costs))
    for index in itertools.product(range(2), range(3)):
        assert torch.equal(y[index], solver(costs[index]))


def test_larger_batch_than_chunks_equals_single():
    # More instances than chunks, of varied sizes of work, exercise the chunk bounds.
    costs = torch.rand(37, 5, 9, generator=torch.Generator().manual_seed(1))
    solver = ShortestPath(neighbourhood=4)
    y = solver(costs)
    assert torch.equal(y, torch.stack([solver(instance) for instance in costs]))


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_dtype_and_device_preserved_and_input_unchanged(dtype):
    costs = (torch.rand(4, 8, 8, generator=torch.Generator().manual_seed(2)) - 0.3).to(dtype)
    before = costs.clone()
    y = ShortestPath()(costs)
    assert y.dtype == dtype and y.device == costs.device
    assert torch.equal(costs, before)


def test_empty_batch():
    y = ShortestPath()(torch.ones(0, 4, 4))
    assert y.shape == (0, 4, 4)


def test_single_cell_and_source_equals_target():
    assert torch.equal(ShortestPath()(torch.tensor([[3.0]])), torch.tensor([[1.0]]))
    y = ShortestPath(source=(1, 2), target=(1, 2))(torch.rand(3, 4))
    expected = torch.zeros(3, 4)
    expected[1, 2] = 1
    assert torch.equal(y, expected)


def test_zero_costs_allowed():
    y = ShortestPath(negative="raise")(torch.zeros(5, 6))
    assert_valid_path(y.numpy(), (0, 0), (4, 5), 8)


def test_negative_costs_are_clipped_by_default():
    rng = np.random.default_rng(5)
    costs = rng.normal(size=(10, 10))
    original = costs.copy()
    mask = ShortestPath()(torch.from_numpy(costs)).numpy()
    np.testing.assert_array_equal(costs, original)
    clipped = np.maximum(costs, 0.0)
    assert (clipped * mask).sum() == pytest.approx(networkx_cost(clipped, (0, 0), (9, 9), 8))
    assert_valid_path(mask, (0, 0), (9, 9), 8)


def test_negative_costs_raise_when_asked():
    costs = torch.ones(2, 4, 4)
    costs[1, 2, 2] = -0.5
    with pytest.raises(ValueError, match=r"costs must be >= 0 with negative='raise', got minimum -0.5"):
        ShortestPath(negative="raise")(costs)


def test_registry_entry():
    solver = cg.solvers.get("shortest_path", neighbourhood=4)
    assert isinstance(solver, ShortestPath)
    assert (solver.name, solver.sense, solver.event_ndim) == ("shortest_path", "min", 2)
    assert "shortest_path" in cg.solvers.names()


@pytest.mark.parametrize(
    "options, match",
    [
        ({"neighbourhood": 6}, r"neighbourhood must be one of \[4, 8\], got 6"),
        ({"negative": "abs"}, r"negative must be one of \['clip', 'raise'\], got 'abs'"),
        ({"source": (0,)}, r"source must be a \(row, col\) pair of non-negative integers, got \(0,\)"),
        ({"source": (-1, 0)}, r"source must be a \(row, col\) pair .*got \(-1, 0\)"),
        ({"source": (0.5, 0)}, r"source must be a \(row, col\) pair .*got \(0.5, 0\)"),
        ({"source": (True, 0)}, r"source must be a \(row, col\) pair .*got \(True, 0\)"),
        ({"source": "ab"}, r"source must be a \(row, col\) pair .*got 'ab'"),
        ({"target": 3}, r"target must be a \(row, col\) pair .*got 3"),
    ],
)
def test_bad_options_raise(options, match):
    with pytest.raises(ValueError, match=match):
        ShortestPath(**options)


def test_keyword_only_options():
    with pytest.raises(TypeError):
        ShortestPath((0, 0))


@pytest.mark.parametrize(
    "options, shape, match",
    [
        (
            {"source": (3, 0)},
            (3, 4),
            r"source must lie inside the 3 x 4 grid \(0 <= row < 3, 0 <= col < 4\), got \(3, 0\)",
        ),
        ({"source": (0, 4)}, (2, 3, 4), r"source must lie inside the 3 x 4 grid .*got \(0, 4\)"),
        ({"target": (5, 5)}, (3, 4), r"target must lie inside the 3 x 4 grid .*got \(5, 5\)"),
    ],
)
def test_source_or_target_outside_grid_raise(options, shape, match):
    with pytest.raises(ValueError, match=match):
        ShortestPath(**options)(torch.ones(shape))


@pytest.mark.parametrize(
    "costs, match",
    [
        (torch.ones(5), r"costs|theta must have at least 2 dims"),
        (torch.ones(0, 4), r"H >= 1 and W >= 1 .*got shape \(0, 4\)"),
        (torch.ones(2, 3, 0), r"H >= 1 and W >= 1 .*got shape \(2, 3, 0\)"),
        (torch.tensor([[1.0, float("nan")]]), r"must be finite"),
        (torch.tensor([[1.0, float("inf")]]), r"must be finite"),
        (torch.ones(3, 3, dtype=torch.int64), r"must be a floating tensor"),
    ],
)
def test_bad_costs_raise(costs, match):
    with pytest.raises(ValueError, match=match):
        ShortestPath()(costs)


def test_non_tensor_raises():
    with pytest.raises(TypeError, match=r"must be a torch.Tensor, got ndarray"):
        ShortestPath()(np.ones((3, 3)))


def test_costs_whose_path_sum_overflows_are_refused():
    # Guards issue 8 item 5: costs of 1.7e308 gave a "path" of only the target
    # cell, because every tentative distance overflowed to inf.
    costs = torch.full((3, 3), 1.7e308, dtype=torch.float64)
    with pytest.raises(
        ValueError, match=r"shortest_path: costs must have magnitudes at most 9\.99e\+306 for a path on a 3 x 3 grid"
    ):
        ShortestPath()(costs)
    with pytest.raises(ValueError, match="magnitudes at most"):
        ShortestPath(negative="clip")(torch.tensor([[1.0, -1e308], [1.0, 1.0]], dtype=torch.float64))


def test_largest_accepted_costs_still_give_a_connected_path():
    limit = float(np.finfo(np.float64).max) / (2 * 9)
    costs = torch.full((3, 3), limit, dtype=torch.float64)
    path = ShortestPath(neighbourhood=4)(costs)
    assert path.sum() == 5 and path[0, 0] == 1 and path[2, 2] == 1
    assert torch.isfinite((path * costs).sum())


def test_refuses_negative_costs_for_losses_that_need_them():
    # spo_plus reads this attribute (issue 8 item 7); Dijkstra clips or refuses negatives.
    assert ShortestPath().accepts_negative is False
    assert ShortestPath(negative="raise").accepts_negative is False
    assert getattr(cg.solvers.get("shortest_path"), "accepts_negative", True) is False
    assert getattr(cg.solvers.get("spanning_tree"), "accepts_negative", True) is True


# The torch backend (Bellman-Ford sweeps on theta's device) against the numba
# Dijkstra: the same objective on every instance, a valid path, any device.
# CPU always; the CUDA half is skipped without CUDA (benchmarks/device_check.sh runs -k cuda).
TORCH_SHAPES = [(12, 12), (17, 23), (30, 30), (1, 1), (1, 7), (7, 1), (2, 5), (9, 4)]


def random_costs(kind: str, shape, rng) -> np.ndarray:
    """Costs of one of three kinds: continuous, with negatives and zeros (clipped), integer ties."""
    if kind == "uniform":
        return rng.uniform(0.1, 10.0, size=shape)
    if kind == "negative":
        return rng.normal(0.5, 1.0, size=shape)  # about 30% negative: zero-cost plateaus after clipping
    return rng.integers(0, 3, size=shape).astype(np.float64)  # many equally cheap paths


def objective(costs: np.ndarray, masks: np.ndarray) -> np.ndarray:
    return (np.maximum(costs, 0.0) * masks).sum((-2, -1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", ["uniform", "negative", "ties"])
@pytest.mark.parametrize("shape", TORCH_SHAPES)
@pytest.mark.parametrize("neighbourhood", [4, 8])
def test_torch_backend_matches_numba_objective(neighbourhood, shape, kind, dtype, device):
    # 2 x 8 x 3 x 2 cases of 40 instances (16 on 30x30, the slow shape): 3552
    # random instances on the CPU.
    rng = np.random.default_rng(zlib.crc32(repr((neighbourhood, shape, kind)).encode()))
    batch = 16 if shape == (30, 30) else 40
    costs = torch.from_numpy(random_costs(kind, (batch, *shape), rng)).to(dtype)
    numba_masks = ShortestPath(neighbourhood=neighbourhood, backend="numba")(costs).numpy()
    torch_masks = ShortestPath(neighbourhood=neighbourhood, backend="torch")(costs.to(device))
    assert torch_masks.dtype == dtype and torch_masks.device.type == device
    torch_masks = torch_masks.cpu().numpy()
    values = costs.double().numpy()
    # float64: both backends minimise the same float64 left-to-right sums, so
    # the costs agree to rounding of the re-ordered sum. float32: torch sums in
    # float32 (relative error below 900 cells * 6e-8 = 5.4e-5 on a 30x30 path).
    tolerance = 1e-12 if dtype == torch.float64 else 1e-4
    np.testing.assert_allclose(objective(values, torch_masks), objective(values, numba_masks), rtol=tolerance, atol=tolerance)
    target = (shape[0] - 1, shape[1] - 1)
    for mask in torch_masks[:10]:
        assert_valid_path(mask, (0, 0), target, neighbourhood)


@pytest.mark.parametrize("neighbourhood", [4, 8])
@pytest.mark.parametrize("seed", range(6))
def test_torch_backend_random_source_and_target_match_networkx(neighbourhood, seed):
    rng = np.random.default_rng(100 + seed)
    shape = tuple(int(size) for size in rng.integers(1, 16, size=2))
    source = tuple(int(i) for i in rng.integers((0, 0), shape))
    target = tuple(int(i) for i in rng.integers((0, 0), shape))
    costs = rng.normal(1.0, 1.0, size=(30, *shape))
    options = dict(source=source, target=target, neighbourhood=neighbourhood)
    masks = ShortestPath(**options, backend="torch")(torch.from_numpy(costs)).numpy()
    reference = ShortestPath(**options, backend="numba")(torch.from_numpy(costs)).numpy()
    np.testing.assert_allclose(objective(costs, masks), objective(costs, reference), rtol=1e-12, atol=1e-12)
    for instance, mask in zip(costs[:5], masks[:5]):
        clipped = np.maximum(instance, 0.0)
        assert (clipped * mask).sum() == pytest.approx(networkx_cost(clipped, source, target, neighbourhood))
        assert_valid_path(mask, source, target, neighbourhood)


@pytest.mark.parametrize("neighbourhood", [4, 8])
def test_torch_backend_terminates_on_zero_cost_plateaus(neighbourhood):
    # All cells cost 0: every neighbour is "equally cheap", so a walk that only
    # compared distances could cycle; the sweep level rules that out.
    costs = torch.zeros(3, 30, 30)
    costs[1, 10:20, 10:20] = 5.0
    masks = ShortestPath(neighbourhood=neighbourhood, backend="torch")(costs).numpy()
    for mask, instance in zip(masks, costs.numpy()):
        assert_valid_path(mask, (0, 0), (29, 29), neighbourhood)
        assert (mask * instance).sum() == 0.0


def test_torch_backend_tie_rule_on_constant_grids():
    # Walking back from the target, each cell steps to its first (row-major)
    # neighbour one step closer: with 4 neighbours the one above, up to row 0.
    expected = torch.zeros(4, 6)
    expected[0, :] = 1
    expected[:, -1] = 1
    assert torch.equal(ShortestPath(neighbourhood=4, backend="torch")(torch.ones(4, 6)), expected)
    # With 8 neighbours from (3, 5): up-left diagonals to row 0, then left along it.
    expected = torch.zeros(4, 6)
    for cell in [(0, 0), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5)]:
        expected[cell] = 1
    assert torch.equal(ShortestPath(backend="torch")(torch.ones(4, 6)), expected)
    assert torch.equal(ShortestPath(backend="torch")(torch.full((7, 7), 2.5)), torch.eye(7))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_torch_backend_dtype_batch_dims_input_unchanged(dtype):
    costs = (torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(3)) - 0.3).to(dtype)
    before = costs.clone()
    solver = ShortestPath(backend="torch")
    y = solver(costs)
    assert y.dtype == dtype and y.shape == costs.shape
    assert torch.equal(costs, before)
    assert torch.equal(y[1, 2], solver(costs[1, 2]))
    values = costs.double().numpy()
    np.testing.assert_allclose(
        objective(values, y.double().numpy()),
        objective(values, ShortestPath(backend="numba")(costs).double().numpy()),
        rtol=1e-5,
    )


def test_torch_backend_empty_batch_and_single_cell():
    assert ShortestPath(backend="torch")(torch.ones(0, 4, 4)).shape == (0, 4, 4)
    assert ShortestPath(backend="torch")(torch.ones(2, 0, 4, 4)).shape == (2, 0, 4, 4)
    assert torch.equal(ShortestPath(backend="torch")(torch.tensor([[3.0]])), torch.tensor([[1.0]]))
    y = ShortestPath(source=(1, 2), target=(1, 2), backend="torch")(torch.rand(3, 4))
    assert y.sum() == 1 and y[1, 2] == 1


def test_torch_backend_checks_inputs_like_numba():
    costs = torch.ones(2, 4, 4)
    costs[1, 2, 2] = -0.5
    with pytest.raises(ValueError, match=r"costs must be >= 0 with negative='raise', got minimum -0.5"):
        ShortestPath(negative="raise", backend="torch")(costs)
    with pytest.raises(ValueError, match="must be finite"):
        ShortestPath(backend="torch")(torch.tensor([[1.0, float("nan")]]))
    with pytest.raises(ValueError, match=r"target must lie inside the 3 x 4 grid"):
        ShortestPath(target=(5, 5), backend="torch")(torch.ones(3, 4))


def test_backend_option():
    assert ShortestPath().backends == ("numba", "torch")
    assert ShortestPath().backend_for(torch.device("cpu")) == "numba"
    assert ShortestPath().backend_for(torch.device("cuda")) == "torch"
    assert ShortestPath(backend="numba").backend_for(torch.device("cuda")) == "numba"
    assert "backend='torch'" in repr(ShortestPath(backend="torch"))
    assert cg.solvers.options("shortest_path")["backend"].default == "auto"
    with pytest.raises(ValueError, match=r"shortest_path: backend must be one of \['auto', 'numba', 'torch'\], got 'cuda'"):
        ShortestPath(backend="cuda")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_torch_backend_float32_sums_that_overflow_are_redone_in_float64(dtype):
    # Any two cells of 1.5e38-3e38 sum past float32's 3.4e38: float32 sweeps
    # would leave every cell but the source infinite (the walk then indexed
    # outside the grid), so that batch is solved again in float64.
    costs = (torch.rand(4, 12, 12, generator=torch.Generator().manual_seed(7)) + 1.0) * 1.5e38
    costs = costs.to(dtype)
    masks = ShortestPath(neighbourhood=4, backend="torch")(costs).double().numpy()
    values = costs.double().numpy()
    np.testing.assert_allclose(
        objective(values, masks),
        objective(values, ShortestPath(neighbourhood=4, backend="numba")(costs).double().numpy()),
        rtol=1e-12,
    )
    for mask in masks:
        assert_valid_path(mask, (0, 0), (11, 11), 4)

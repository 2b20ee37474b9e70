"""Tests for combgrad/adapters/solution_pool.py: SolutionPool.

The pooled answers are compared with a brute force over the pool written here
(float64 objectives, first best index), the solved ones with the wrapped
solver. The solved share is a Binomial count under a fixed seed; its tolerance
is 5 standard deviations (a false failure has probability below 1e-6 for any
seed, and the seed is fixed, so the test is deterministic).
"""

import math
import pathlib
import sys

import pytest
import torch

import combgrad as cg
from combgrad.errors import OptionError
from combgrad.solvers import BatchSolver

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from _devices import DEVICES  # noqa: E402


class Counting:
    """A solver wrapper that counts the instances it solves."""

    def __init__(self, solver):
        self.solver = solver
        self.name = solver.name
        self.sense = solver.sense
        self.event_ndim = solver.event_ndim
        self.instances = 0
        self.calls = 0

    def __call__(self, theta):
        self.calls += 1
        self.instances += math.prod(theta.shape[: theta.ndim - self.event_ndim])
        return self.solver(theta)


class Argmin(BatchSolver):
    """One-hot of the smallest entry: a "min" solver."""

    name = "test_argmin"
    sense = "min"
    event_ndim = 1

    def solve_flat(self, theta):
        return torch.zeros_like(theta).scatter_(-1, theta.argmin(dim=-1, keepdim=True), 1.0)


def brute_force(theta, pool, sense):
    """The first best pooled solution for each row of ``theta [N, d]`` under float64 objectives."""
    rows = []
    for instance in theta.double().tolist():
        values = [sum(a * b for a, b in zip(instance, solution)) for solution in pool.double().tolist()]
        best = min(values) if sense == "min" else max(values)
        rows.append(pool[values.index(best)])
    return torch.stack(rows)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_solve_ratio_one_equals_the_solver_and_pools_its_unique_solutions(seed):
    theta = torch.randn(6, 5, 7, generator=torch.Generator().manual_seed(seed))
    solver = cg.solvers.get("topk", k=3)
    pool = cg.adapters.SolutionPool(solver)
    expected = solver(theta)
    assert torch.equal(pool(theta), expected)
    assert torch.equal(pool.solutions, torch.unique(expected.reshape(-1, 7), dim=0)[pool_order(expected)])


def pool_order(solutions):
    """Indices that put ``torch.unique``'s sorted rows in order of first appearance."""
    flat = solutions.reshape(-1, solutions.shape[-1])
    unique, inverse = torch.unique(flat, dim=0, return_inverse=True)
    first = [int((inverse == i).nonzero()[0]) for i in range(unique.shape[0])]
    return torch.tensor(sorted(range(unique.shape[0]), key=lambda i: first[i]))


@pytest.mark.parametrize("sense", ["min", "max"])
@pytest.mark.parametrize("seed", [0, 1])
def test_solve_ratio_zero_answers_with_the_brute_force_best_of_the_pool(sense, seed):
    generator = torch.Generator().manual_seed(seed)
    initial = (torch.rand(9, 6, generator=generator) < 0.5).double()
    initial[3] = initial[7]  # a duplicate: dropped, and ties would go to the lower index anyway
    solver = Counting(Argmin() if sense == "min" else cg.solvers.get("argmax"))
    pool = cg.adapters.SolutionPool(solver, solve_ratio=0.0, initial=initial)
    assert len(pool) == len(torch.unique(initial, dim=0))
    # Integer-valued costs make ties between pooled solutions common.
    theta = torch.randint(-2, 3, (4, 5, 6), generator=generator).double()
    y = pool(theta)
    assert solver.calls == 0
    assert torch.equal(y.reshape(-1, 6), brute_force(theta.reshape(-1, 6), pool.solutions, sense))
    best, objective = pool.best(theta)
    assert torch.equal(best, y)
    assert torch.allclose(objective, (theta * y).sum(-1))


def test_best_gives_a_differentiable_objective():
    pool = cg.adapters.SolutionPool("argmax", initial=torch.eye(3))
    theta = torch.tensor([[1.0, 3.0, 2.0]], requires_grad=True)
    _, objective = pool.best(theta)
    objective.sum().backward()
    assert torch.equal(theta.grad, torch.tensor([[0.0, 1.0, 0.0]]))


@pytest.mark.parametrize("ratio", [0.2, 0.7])
def test_the_solved_share_per_instance_matches_solve_ratio(ratio):
    solver = Counting(cg.solvers.get("argmax"))
    pool = cg.adapters.SolutionPool(solver, ratio, torch.eye(5), generator=torch.Generator().manual_seed(0))
    calls, batch = 100, 40
    theta = torch.randn(calls, batch, 5, generator=torch.Generator().manual_seed(1))
    for step in range(calls):
        assert torch.equal(pool(theta[step]), cg.solvers.get("argmax")(theta[step]))  # the pool has every argmax
    total = calls * batch
    assert abs(solver.instances - ratio * total) <= 5 * math.sqrt(total * ratio * (1 - ratio))


def test_the_solved_share_per_batch_is_all_or_nothing():
    ratio, calls, batch = 0.3, 300, 8
    solver = Counting(cg.solvers.get("argmax"))
    pool = cg.adapters.SolutionPool(
        solver, ratio, torch.eye(4), generator=torch.Generator().manual_seed(0), per="batch"
    )
    theta = torch.randn(batch, 4, generator=torch.Generator().manual_seed(1))
    for _ in range(calls):
        pool(theta)
    assert solver.instances == batch * solver.calls
    assert abs(solver.calls - ratio * calls) <= 5 * math.sqrt(calls * ratio * (1 - ratio))


def test_the_same_generator_seed_solves_the_same_instances():
    def solved(seed):
        solver = Counting(cg.solvers.get("argmax"))
        pool = cg.adapters.SolutionPool(solver, 0.5, torch.eye(3), generator=torch.Generator().manual_seed(seed))
        counts = []
        for _ in range(20):
            before = solver.instances
            pool(torch.randn(10, 3, generator=torch.Generator().manual_seed(3)))
            counts.append(solver.instances - before)
        return counts

    assert solved(4) == solved(4)
    assert solved(4) != solved(5)


def test_an_empty_pool_solves_every_instance_whatever_the_ratio():
    solver = Counting(cg.solvers.get("topk", k=2))
    pool = cg.adapters.SolutionPool(solver, solve_ratio=0.0)
    theta = torch.randn(7, 5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(pool(theta), solver.solver(theta))
    assert solver.instances == 7
    assert len(pool) == len(torch.unique(solver.solver(theta), dim=0))
    pool(theta)  # now from the pool only
    assert solver.instances == 7


def test_mixed_batches_solve_some_and_answer_the_rest_from_the_grown_pool():
    solver = Counting(cg.solvers.get("argmax"))
    pool = cg.adapters.SolutionPool(solver, 0.5, torch.eye(6)[:2], generator=torch.Generator().manual_seed(2))
    theta = torch.randn(50, 6, generator=torch.Generator().manual_seed(3))
    y = pool(theta)
    assert 0 < solver.instances < 50
    exact = cg.solvers.get("argmax")(theta)
    solved_rows = (y == exact).all(-1)
    assert int(solved_rows.sum()) >= solver.instances
    # Every answer is the best pooled solution of the grown pool (the solved ones are optimal overall).
    assert torch.equal(y, brute_force(theta, pool.solutions, "max"))


def test_add_deduplicates_against_the_pool_and_within_the_batch_in_order_of_first_appearance():
    pool = cg.adapters.SolutionPool("argmax")
    assert pool.solutions.shape == (0,)
    a, b, c = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0]), torch.tensor([0.0, 0.0, 1.0])
    assert pool.add(torch.stack([b, a, b])) == 2
    assert pool.add(torch.stack([torch.stack([a, c]), torch.stack([c, b])])) == 1  # any leading dims
    assert torch.equal(pool.solutions, torch.stack([b, a, c]))
    assert pool.add(torch.empty(0, 3)) == 0
    assert len(pool) == 3


def test_tolerance_merges_near_duplicates():
    exact = cg.adapters.SolutionPool("argmax", initial=torch.tensor([[1.0, 0.0]]))
    loose = cg.adapters.SolutionPool("argmax", initial=torch.tensor([[1.0, 0.0]]), tolerance=1e-6)
    near = torch.tensor([[1.0 - 1e-7, 1e-7]], dtype=torch.float64)
    assert exact.add(near) == 1
    assert loose.add(near) == 0


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_device_and_dtype_are_kept(device, dtype):
    pool = cg.adapters.SolutionPool("topk", 0.5, torch.eye(4, dtype=torch.float64)[:2], k=1,
                                    generator=torch.Generator().manual_seed(0))
    theta = torch.randn(3, 8, 4, dtype=dtype, device=device)
    y = pool(theta)
    assert y.device == theta.device and y.dtype == dtype and y.shape == theta.shape
    assert pool.solutions.device == theta.device
    best, objective = pool.best(theta)
    assert best.dtype == dtype and objective.shape == (3, 8) and objective.device == theta.device


def test_integer_initial_solutions_are_stored_as_float64():
    pool = cg.adapters.SolutionPool("argmax", 0.0, torch.eye(3, dtype=torch.int64))
    assert pool.solutions.dtype == torch.float64
    assert torch.equal(pool(torch.tensor([[0.0, 0.0, 1.0]])), torch.tensor([[0.0, 0.0, 1.0]]))


def test_the_pool_is_a_solver_for_layers_and_losses():
    pool = cg.adapters.SolutionPool("topk", k=1, initial=torch.eye(3))
    assert isinstance(pool, cg.solvers.Solver) and pool.sense == "max" and pool.event_ndim == 1
    layer = cg.differentiable(solver=pool, estimator="ste")
    theta = torch.tensor([[0.1, 0.9, 0.5]], requires_grad=True)
    y = layer(theta)
    assert torch.equal(y, torch.tensor([[0.0, 1.0, 0.0]]))
    y.sum().backward()
    assert theta.grad is not None
    loss = cg.losses.spo_plus(theta, torch.tensor([[1.0, 0.0, 0.0]]), solver=pool)
    assert loss.shape == (1,) and float(loss.detach()) >= 0
    grid = cg.adapters.SolutionPool("shortest_path")
    assert grid.accepts_negative is False  # spo_plus and pg refuse clipping solvers through the pool too


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"solve_ratio": -0.1}, r"SolutionPool: solve_ratio must be a finite number >= 0 and <= 1.0, got -0.1"),
        ({"solve_ratio": 1.5}, r"solve_ratio must be .* got 1.5"),
        ({"solve_ratio": float("nan")}, r"solve_ratio must be a finite number"),
        ({"solve_ratio": True}, r"solve_ratio must be .* got True"),
        ({"per": "call"}, r"SolutionPool: per must be one of \['instance', 'batch'\], got 'call'"),
        ({"tolerance": -1.0}, r"tolerance must be a finite number >= 0"),
        ({"initial": torch.eye(3)[0]}, r"initial must have 2 dims \[P, \*event\] .* got shape \(3,\)"),
        ({"initial": torch.full((2, 3), float("nan"))}, r"initial must be finite"),
    ],
)
def test_bad_options_are_refused(options, match):
    with pytest.raises(ValueError, match=match):
        cg.adapters.SolutionPool("argmax", **options)


def test_bad_types_and_shapes_are_refused():
    with pytest.raises(TypeError, match=r"SolutionPool: generator must be a torch.Generator or None, got int"):
        cg.adapters.SolutionPool("argmax", generator=0)
    with pytest.raises(TypeError, match=r"SolutionPool: initial must be a torch.Tensor, got list"):
        cg.adapters.SolutionPool("argmax", initial=[[1.0, 0.0]])
    with pytest.raises(OptionError, match=r"SolutionPool: unknown option 'k'"):
        cg.adapters.SolutionPool(cg.solvers.get("argmax"), k=2)
    pool = cg.adapters.SolutionPool("argmax", 0.0, torch.eye(3))
    with pytest.raises(ValueError, match=r"SolutionPool: theta must have the pool's event shape \(3,\) .* got shape \(2, 4\)"):
        pool(torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"solutions must have the pool's event shape \(3,\)"):
        pool.add(torch.zeros(1, 2))
    with pytest.raises(ValueError, match=r"SolutionPool: theta must be finite"):
        pool(torch.tensor([[float("inf"), 0.0, 0.0]]))
    with pytest.raises(ValueError, match=r"SolutionPool: the pool is empty"):
        cg.adapters.SolutionPool("argmax").best(torch.zeros(1, 3))
    with pytest.raises(ValueError, match=r"SolutionPool: theta must be a floating tensor"):
        pool(torch.zeros(1, 3, dtype=torch.int64))


def test_an_empty_batch_gives_an_empty_answer():
    pool = cg.adapters.SolutionPool("argmax", 0.5, torch.eye(3))
    assert pool(torch.zeros(0, 3)).shape == (0, 3)


@pytest.mark.parametrize("tolerance", [0.0, 0.3])
@pytest.mark.parametrize("seed", [0, 1])
def test_dedup_against_a_large_pool_matches_pairwise_l1_distances(tolerance, seed):
    generator = torch.Generator().manual_seed(seed)
    pooled = torch.randint(0, 3, (500, 12), generator=generator).double()
    pooled = pooled[~(torch.cdist(pooled, pooled, p=1.0) <= tolerance).tril(-1).any(1)]  # a deduplicated pool
    # Copies, copies moved by less and by more than the tolerance, integer and fractional rows.
    copies = pooled[torch.randint(0, len(pooled), (20,), generator=generator)]
    candidates = torch.cat([
        copies[:5],
        copies[5:10] + 0.1 * torch.eye(12, dtype=torch.float64)[:5],
        copies[10:15] + 0.5 * torch.eye(12, dtype=torch.float64)[:5],
        torch.rand(5, 12, generator=generator, dtype=torch.float64) * 2,
    ])
    pool = cg.adapters.SolutionPool("argmax", initial=pooled, tolerance=tolerance)
    assert len(pool) == len(pooled)
    known = (torch.cdist(candidates, pooled, p=1.0) <= tolerance).any(1)
    assert torch.equal(pool._known(candidates, pool._pool), known)
    assert bool(known[:5].all()) and known[5:10].tolist() == [tolerance > 0] * 5 and not bool(known[10:15].any())

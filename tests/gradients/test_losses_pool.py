"""Tests for the PyEPO losses combgrad lacked: pg.py, nce.py, cmap.py, ltr.py (and _pool.py).

Three kinds of reference:

* hand-computed values on a three-solution pool (the one-hot vectors), both senses;
* float64 ``gradcheck``: listwise and pointwise LTR and NCE are smooth, and CMAP,
  pairwise LTR and PG are piecewise linear with kinks that random continuous
  inputs miss at gradcheck's step (1e-6);
* PyEPO's own loss modules (``perturbationGradient``, ``NCE``, ``contrastiveMAP``,
  ``listwiseLearningToRank``, ``pairwiseLearningToRank``, ``pointwiseLearningToRank``) with ``reduction="none"``
  (per instance, as combgrad returns), on a tiny optModel that enumerates all
  k-subsets (the same feasible set as ``topk``) and on its Gurobi knapsack:
  same values and gradients within 1e-6 in float64. Random continuous costs
  make ties (where tie rules could differ) a probability-zero event.
"""

import itertools

import numpy as np
import pytest
import torch

import combgrad as cg
from combgrad.errors import OptionError
from combgrad.solvers import BatchSolver

ONE_HOT = torch.eye(3, dtype=torch.float64)


class BottomK(BatchSolver):
    """The k smallest entries of ``theta [*, n]``: a "min" top-k, reference-checked by the PyEPO enumeration."""

    name = "test_bottom_k"
    sense = "min"
    event_ndim = 1

    def __init__(self, k):
        self.k = k

    def solve_flat(self, theta):
        index = theta.topk(self.k, dim=-1, largest=False).indices
        return torch.zeros_like(theta).scatter_(-1, index, 1.0)


def k_subsets(n, k):
    return np.array([np.isin(np.arange(n), chosen).astype(float) for chosen in itertools.combinations(range(n), k)])


def solver_for(sense, k=2):
    return cg.solvers.get("topk", k=k) if sense == "max" else BottomK(k)


# ---------------------------------------------------------------- closed forms


def test_nce_and_cmap_by_hand_for_both_senses():
    theta = torch.tensor([[1.0, 2.0, 4.0]], dtype=torch.float64)
    y_true = ONE_HOT[:1]
    # min: <theta, y_true> - <theta, p> = 1 - (1, 2, 4) = (0, -1, -3)
    assert torch.allclose(cg.losses.nce(theta, y_true, pool=ONE_HOT, sense="min"), torch.tensor([-4 / 3], dtype=torch.float64))
    assert torch.allclose(cg.losses.cmap(theta, y_true, pool=ONE_HOT, sense="min"), torch.tensor([0.0], dtype=torch.float64))
    # max: <theta, p> - <theta, y_true> = (0, 1, 3)
    assert torch.allclose(cg.losses.nce(theta, y_true, pool=ONE_HOT, sense="max"), torch.tensor([4 / 3], dtype=torch.float64))
    assert torch.allclose(cg.losses.cmap(theta, y_true, pool=ONE_HOT, sense="max"), torch.tensor([3.0], dtype=torch.float64))


def test_ltr_by_hand_for_both_senses():
    true = torch.tensor([[1.0, 2.0, 4.0]], dtype=torch.float64)
    pred = torch.tensor([[2.0, 1.0, 4.0]], dtype=torch.float64)
    # pointwise: <true - pred, p> = (-1, 1, 0) -> mean of squares 2/3, either sense
    for sense in ("min", "max"):
        assert torch.allclose(cg.losses.ltr(pred, true, pool=ONE_HOT, kind="pointwise", sense=sense), torch.tensor([2 / 3], dtype=torch.float64))
    # pairwise, min: best by true cost is p0 (cost 1); relu(2 - 1) + relu(2 - 4) = 1, over P - 1 = 2
    assert torch.allclose(cg.losses.ltr(pred, true, pool=ONE_HOT, kind="pairwise", sense="min"), torch.tensor([0.5], dtype=torch.float64))
    # pairwise, max: best by true value is p2 (4); relu(2 - 4) + relu(1 - 4) = 0
    assert torch.allclose(cg.losses.ltr(pred, true, pool=ONE_HOT, kind="pairwise", sense="max"), torch.tensor([0.0], dtype=torch.float64))
    # listwise: cross-entropy of softmax(sign pred / T) against softmax(sign true / T)
    for sense, sign in (("min", -1.0), ("max", 1.0)):
        for temperature in (1.0, 0.5):
            target = torch.softmax(sign * true / temperature, -1)
            expected = -(target * torch.log_softmax(sign * pred / temperature, -1)).sum(-1)
            value = cg.losses.ltr(pred, true, pool=ONE_HOT, sense=sense, temperature=temperature)
            assert torch.allclose(value, expected)
    # listwise at pred = true is the entropy of the true distribution: here with numbers
    entropy = cg.losses.ltr(true, true, pool=ONE_HOT, sense="min")
    p = np.exp(-np.array([1.0, 2.0, 4.0])) / np.exp(-np.array([1.0, 2.0, 4.0])).sum()
    assert entropy.item() == pytest.approx(-(p * np.log(p)).sum(), abs=1e-12)


def test_pairwise_ltr_ties_in_the_true_objective_go_to_the_lowest_pool_index():
    true = torch.tensor([[1.0, 1.0, 4.0]], dtype=torch.float64)  # p0 and p1 tie as the true best
    pred = torch.tensor([[2.0, 1.0, 4.0]], dtype=torch.float64)
    # best is p0 (pred cost 2): relu(2 - 1) = 1 over 2; with p1 as best it would be 0
    assert cg.losses.ltr(pred, true, pool=ONE_HOT, kind="pairwise", sense="min").item() == 0.5


@pytest.mark.parametrize("sense", ["min", "max"])
def test_pg_by_hand_on_a_single_choice(sense):
    solver = cg.solvers.get("argmax") if sense == "max" else BottomK(1)  # pick the best of three
    theta = torch.tensor([[2.0, 1.0, 3.0]], dtype=torch.float64)
    true = torch.tensor([[1.0, -4.0, 2.0]], dtype=torch.float64)
    step = 0.5
    pick = (lambda c: int(c.argmin())) if sense == "min" else (lambda c: int(c.argmax()))
    sign = 1.0 if sense == "min" else -1.0
    t, c = theta[0], true[0]
    w, wm, wp = pick(t), pick(t - step * c), pick(t + step * c)
    backward = sign * (t[w] - (t - step * c)[wm]) / step
    central = sign * ((t + step * c)[wp] - (t - step * c)[wm]) / (2 * step)
    assert cg.losses.pg(theta, true, solver=solver, step=step).item() == pytest.approx(float(backward))
    assert cg.losses.pg(theta, true, solver=solver, step=step, variant="central").item() == pytest.approx(float(central))


@pytest.mark.parametrize("sense", ["min", "max"])
def test_pg_tends_to_the_decision_cost_for_small_steps(sense):
    """``(z(theta) - z(theta - h c)) / h -> <c, y*(theta)>`` (min) and ``-<c, y*(theta)>`` (max)."""
    solver = solver_for(sense)
    generator = torch.Generator().manual_seed(0)
    theta = torch.randn(5, 6, dtype=torch.float64, generator=generator)
    true = torch.randn(5, 6, dtype=torch.float64, generator=generator)
    decision = (true * solver(theta)).sum(-1)
    for variant in ("backward", "central"):
        loss = cg.losses.pg(theta, true, solver=solver, step=1e-7, variant=variant)
        assert torch.allclose(loss, decision if sense == "min" else -decision, atol=1e-6)


# ---------------------------------------------------------------- gradients


def generic_inputs(seed, batch=3, size=5):
    generator = torch.Generator().manual_seed(seed)
    theta = torch.randn(batch, size, dtype=torch.float64, generator=generator, requires_grad=True)
    true = torch.randn(batch, size, dtype=torch.float64, generator=generator)
    return theta, true


@pytest.mark.parametrize("sense", ["min", "max"])
@pytest.mark.parametrize("kind", ["listwise", "pairwise", "pointwise"])
def test_ltr_gradients_match_finite_differences(sense, kind):
    theta, true = generic_inputs(1)
    pool = torch.tensor(k_subsets(5, 2))
    assert torch.autograd.gradcheck(lambda t: cg.losses.ltr(t, true, pool=pool, kind=kind, sense=sense), (theta,))


@pytest.mark.parametrize("sense", ["min", "max"])
@pytest.mark.parametrize("loss", [cg.losses.nce, cg.losses.cmap])
def test_contrastive_gradients_match_finite_differences(sense, loss):
    theta, true = generic_inputs(2)
    pool = torch.tensor(k_subsets(5, 2))
    y_true = solver_for(sense)(true)
    assert torch.autograd.gradcheck(lambda t: loss(t, y_true, pool=pool, sense=sense), (theta,))


@pytest.mark.parametrize("sense", ["min", "max"])
@pytest.mark.parametrize("variant", ["backward", "central"])
def test_pg_gradients_match_finite_differences(sense, variant):
    theta, true = generic_inputs(3)
    solver = solver_for(sense)
    assert torch.autograd.gradcheck(
        lambda t: cg.losses.pg(t, true, solver=solver, step=0.3, variant=variant), (theta,)
    )


# ---------------------------------------------------------------- PyEPO's own losses


def enumeration_model(solutions, sense):
    """A PyEPO optModel that enumerates a fixed feasible set (first best on ties)."""
    pytest.importorskip("pyepo")
    from pyepo import EPO
    from pyepo.model.opt import optModel

    class Enumeration(optModel):
        def __init__(self, solutions, sense):
            self.solutions = np.asarray(solutions, dtype=np.float64)
            self.modelSense = EPO.MINIMIZE if sense == "min" else EPO.MAXIMIZE
            super().__init__()

        def _getModel(self):
            return None, list(range(self.solutions.shape[1]))

        def setObj(self, c):
            self.cost = np.asarray(c, dtype=np.float64)

        def solve(self):
            values = self.solutions @ self.cost
            best = int(np.argmin(values) if self.modelSense == EPO.MINIMIZE else np.argmax(values))
            return self.solutions[best], float(values[best])

    return Enumeration(solutions, sense)


def assert_same_loss_and_gradient(ours, theirs, theta):
    """Per-instance values and the gradient of their sum agree within 1e-6."""
    (our_grad,) = torch.autograd.grad(ours(theta).sum(), theta)
    (their_grad,) = torch.autograd.grad(theirs(theta).sum(), theta)
    assert torch.allclose(ours(theta), theirs(theta), rtol=0, atol=1e-6)
    assert torch.allclose(our_grad, their_grad, rtol=0, atol=1e-6)


@pytest.mark.parametrize("sense", ["min", "max"])
@pytest.mark.parametrize("two_sides", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_pg_matches_pyepo_perturbation_gradient(sense, two_sides, seed):
    pyepo = pytest.importorskip("pyepo")
    model = enumeration_model(k_subsets(6, 3), sense)
    theirs = pyepo.func.perturbationGradient(model, sigma=0.4, two_sides=two_sides, reduction="none")
    theta, true = generic_inputs(seed, batch=8, size=6)
    solver = solver_for(sense, k=3)
    variant = "central" if two_sides else "backward"
    assert_same_loss_and_gradient(
        lambda t: cg.losses.pg(t, true, solver=solver, step=0.4, variant=variant), lambda t: theirs(t, true), theta
    )


def test_pg_matches_pyepo_on_its_gurobi_knapsack():
    pyepo = pytest.importorskip("pyepo")
    pytest.importorskip("gurobipy")
    weights = np.array([[3.0, 4.0, 2.0, 5.0, 1.0, 3.0]])
    model = pyepo.model.grb.knapsackModel(weights=weights, capacity=np.array([8.0]))
    theirs = pyepo.func.perturbationGradient(model, sigma=0.5, reduction="none")
    generator = torch.Generator().manual_seed(4)
    values = torch.rand(6, 6, dtype=torch.float64, generator=generator) * 5
    guess = (torch.rand(6, 6, dtype=torch.float64, generator=generator) * 5).requires_grad_()
    solver = cg.solvers.get("knapsack", weights=weights[0], capacity=8.0)
    assert_same_loss_and_gradient(
        lambda t: cg.losses.pg(t, values, solver=solver, step=0.5), lambda t: theirs(t, values), guess
    )


def pyepo_pool_losses():
    pyepo = pytest.importorskip("pyepo")
    return {
        "nce": pyepo.func.NCE,
        "cmap": pyepo.func.contrastiveMAP,
        "listwise": pyepo.func.listwiseLearningToRank,
        "pairwise": pyepo.func.pairwiseLearningToRank,
        "pointwise": pyepo.func.pointwiseLearningToRank,
    }


@pytest.mark.parametrize("sense", ["min", "max"])
@pytest.mark.parametrize("name", ["nce", "cmap", "listwise", "pairwise", "pointwise"])
def test_pool_losses_match_pyepo_and_grow_the_pool_alike(sense, name):
    """solve_ratio=1: both solve the batch, add its solutions to the training set's, then score the pool."""
    losses = pyepo_pool_losses()  # skips without PyEPO
    from pyepo.data.dataset import optDataset

    model = enumeration_model(k_subsets(6, 3), sense)
    generator = torch.Generator().manual_seed(7)
    train_costs = torch.randn(5, 6, dtype=torch.float64, generator=generator)
    dataset = optDataset(model, np.zeros((5, 1)), train_costs.numpy())
    theirs = losses[name](model, reduction="none", dataset=dataset)
    true_solutions = dataset.sols.double()
    pool = cg.adapters.SolutionPool(solver_for(sense, k=3), initial=true_solutions)
    theta = torch.randn(5, 6, dtype=torch.float64, generator=generator, requires_grad=True)
    if name in ("nce", "cmap"):
        ours = getattr(cg.losses, name)(theta, true_solutions, pool=pool)
        reference = theirs(theta, true_solutions)
    else:
        ours = cg.losses.ltr(theta, train_costs, pool=pool, kind=name)
        reference = theirs(theta, train_costs)
    assert len(pool) == theirs.solpool.shape[0]
    assert torch.allclose(ours, reference, rtol=0, atol=1e-6)
    (our_grad,) = torch.autograd.grad(ours.sum(), theta)
    (their_grad,) = torch.autograd.grad(reference.sum(), theta)
    assert torch.allclose(our_grad, their_grad, rtol=0, atol=1e-6)


def test_a_pool_with_solve_ratio_below_one_grows_only_by_what_it_solves():
    solver = cg.solvers.get("topk", k=2)
    pool = cg.adapters.SolutionPool(solver, 0.0, torch.tensor(k_subsets(5, 2)[:3]))
    theta, true = generic_inputs(5, batch=4)
    cg.losses.cmap(theta, solver(true), pool=pool)
    assert len(pool) == 3  # answered from the pool: nothing new
    growing = cg.adapters.SolutionPool(solver, 1.0, torch.tensor(k_subsets(5, 2)[:3]))
    cg.losses.nce(theta, solver(true), pool=growing)
    new = {tuple(row) for row in solver(theta).tolist()} - {tuple(row) for row in k_subsets(5, 2)[:3].tolist()}
    assert len(growing) == 3 + len(new)


def test_losses_keep_batch_shape_and_device_dtype():
    pool = torch.tensor(k_subsets(4, 2), dtype=torch.float32)
    theta = torch.randn(2, 3, 4)
    true = torch.randn(2, 3, 4)
    y_true = cg.solvers.get("topk", k=2)(true)
    for value in (
        cg.losses.nce(theta, y_true, pool=pool, sense="max"),
        cg.losses.cmap(theta, y_true, pool=pool, sense="max"),
        cg.losses.ltr(theta, true, pool=pool, sense="max"),
        cg.losses.pg(theta, true, solver="topk", k=2),
    ):
        assert value.shape == (2, 3) and value.dtype == torch.float32


# ---------------------------------------------------------------- bad inputs


def test_bad_pools_and_senses_are_refused():
    theta = torch.zeros(2, 3)
    y = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"nce: sense must be 'min' or 'max' with a tensor pool .* got None"):
        cg.losses.nce(theta, y, pool=ONE_HOT)
    with pytest.raises(ValueError, match=r"cmap: sense must be 'min' or 'max', got 'up'"):
        cg.losses.cmap(theta, y, pool=ONE_HOT, sense="up")
    with pytest.raises(ValueError, match=r"ltr: sense must be the pool's sense 'max' \(or None\), got 'min'"):
        cg.losses.ltr(theta, y, pool=cg.adapters.SolutionPool("argmax", initial=torch.eye(3)), sense="min")
    with pytest.raises(ValueError, match=r"nce: theta must end with the pool's event shape \(4,\), got shape \(2, 3\)"):
        cg.losses.nce(theta, y, pool=torch.eye(4), sense="min")
    with pytest.raises(ValueError, match=r"nce: pool must hold at least one solution, got shape \(0, 3\)"):
        cg.losses.nce(theta, y, pool=torch.zeros(0, 3), sense="min")
    with pytest.raises(ValueError, match=r"cmap: pool must have at least 2 dims \[P, \*event\], got shape \(3,\)"):
        cg.losses.cmap(theta, y, pool=torch.ones(3), sense="min")
    with pytest.raises(ValueError, match=r"ltr: pool must be finite"):
        cg.losses.ltr(theta, y, pool=torch.full((2, 3), float("nan")), sense="min")
    with pytest.raises(TypeError, match=r"nce: pool must be a SolutionPool or a tensor \[P, \*event\], got list"):
        cg.losses.nce(theta, y, pool=[[1.0, 0.0, 0.0]], sense="min")
    with pytest.raises(ValueError, match=r"nce: y_true must have the shape of the prediction \(2, 3\), got \(3,\)"):
        cg.losses.nce(theta, torch.zeros(3), pool=ONE_HOT, sense="min")
    with pytest.raises(ValueError, match=r"cmap: theta must be finite"):
        cg.losses.cmap(torch.full((2, 3), float("inf")), y, pool=ONE_HOT, sense="min")


def test_bad_ltr_options_are_refused():
    theta = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"ltr: kind must be one of \['listwise', 'pairwise', 'pointwise'\], got 'listwize'"):
        cg.losses.ltr(theta, theta, pool=ONE_HOT, sense="min", kind="listwize")
    with pytest.raises(ValueError, match=r"ltr: temperature must be a finite number > 0, got 0"):
        cg.losses.ltr(theta, theta, pool=ONE_HOT, sense="min", temperature=0)
    with pytest.raises(ValueError, match=r"ltr: temperature is an option of kind='listwise' only"):
        cg.losses.ltr(theta, theta, pool=ONE_HOT, sense="min", kind="pairwise", temperature=2.0)
    with pytest.raises(ValueError, match=r"ltr: theta_true must be finite"):
        cg.losses.ltr(theta, torch.full((2, 3), float("nan")), pool=ONE_HOT, sense="min")


def test_bad_pg_options_are_refused():
    theta = torch.rand(2, 3)
    with pytest.raises(ValueError, match=r"pg: step must be a finite number > 0, got 0.0"):
        cg.losses.pg(theta, theta, solver="argmax", step=0.0)
    with pytest.raises(ValueError, match=r"pg: variant must be one of \['backward', 'central'\], got 'forward'"):
        cg.losses.pg(theta, theta, solver="argmax", variant="forward")
    with pytest.raises(OptionError, match=r"pg: unknown option 'sigma'; pg takes .*step"):
        cg.losses.pg(theta, theta, solver=cg.solvers.get("argmax"), sigma=0.1)
    with pytest.raises(ValueError, match=r"pg: theta_true must have the shape of the prediction"):
        cg.losses.pg(theta, theta[0], solver="argmax")
    costs = torch.rand(1, 3, 3)
    with pytest.raises(ValueError, match=r"pg: solver 'shortest_path' does not accept negative costs .* smaller step"):
        cg.losses.pg(costs, costs + 1.0, solver="shortest_path", step=2.0)
    # A step small enough to keep theta - step * theta_true >= 0 is fine.
    assert cg.losses.pg(costs + 1.0, costs, solver="shortest_path", step=0.5).shape == (1,)


@pytest.mark.parametrize("sense", ["min", "max"])
def test_pg_through_a_pool_matches_pyepo_answering_from_its_cache(sense):
    """solve_ratio=0: PyEPO's ``_cache_in_pass`` and the pool's answer agree (same pool, no solver call)."""
    pyepo = pytest.importorskip("pyepo")
    from pyepo.data.dataset import optDataset

    model = enumeration_model(k_subsets(6, 3), sense)
    generator = torch.Generator().manual_seed(8)
    train_costs = torch.randn(12, 6, dtype=torch.float64, generator=generator)
    dataset = optDataset(model, np.zeros((12, 1)), train_costs.numpy())
    theirs = pyepo.func.perturbationGradient(model, sigma=0.4, solve_ratio=0.0, reduction="none", dataset=dataset)
    pool = cg.adapters.SolutionPool(solver_for(sense, k=3), 0.0, dataset.sols.double())
    theta = torch.randn(6, 6, dtype=torch.float64, generator=generator, requires_grad=True)
    true = train_costs[:6]
    assert_same_loss_and_gradient(
        lambda t: cg.losses.pg(t, true, solver=pool, step=0.4), lambda t: theirs(t, true), theta
    )
    assert len(pool) == theirs.solpool.shape[0]

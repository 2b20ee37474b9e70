"""Tests for combgrad/adapters/from_pyepo.py: PyEPO's models through combgrad, against the models themselves."""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

pytest.importorskip("pyepo")

import combgrad as cg  # noqa: E402
from combgrad import SolverError  # noqa: E402
from tests.adapters.pool_helpers import WORKERS, deadline  # noqa: E402
from tests.adapters.pyepo_helpers import PickOne  # noqa: E402


def gurobi_models():
    pytest.importorskip("gurobipy")
    from pyepo.model.grb import knapsackModel, shortestPathModel

    rng = np.random.default_rng(0)
    weights = rng.integers(3, 8, size=(2, 16)).astype(np.float64)
    return {
        "shortest_path": (shortestPathModel(grid=(5, 5)), "min"),
        "knapsack": (knapsackModel(weights=weights, capacity=weights.sum(axis=1) / 3), "max"),
    }


def direct(model, costs: np.ndarray) -> np.ndarray:
    """The optimal objective values <c, x> of the solutions the optModel itself returns.

    (Not Gurobi's objVal: it differs from <c, x> by up to ~4e-8 on the 5x5 flow LP,
    Gurobi's own tolerance; the issue's float32-label bias has the same root.)
    """
    values = []
    for row in costs:
        model.setObj(row)
        solution, objective = model.solve()
        assert abs(float(row @ np.asarray(solution)) - objective) <= 1e-6 * max(1.0, abs(objective))
        values.append(float(row @ np.asarray(solution)))
    return np.array(values)


@pytest.mark.parametrize("problem", ["shortest_path", "knapsack"])
def test_same_objective_values_as_the_model_itself(problem: str) -> None:
    model, sense = gurobi_models()[problem]
    solver = cg.adapters.from_pyepo(model)
    assert (solver.sense, solver.event_ndim, solver.num_cost) == (sense, 1, model.num_cost)
    costs = np.random.default_rng(1).uniform(0, 1, size=(2, 6, model.num_cost))
    y = solver(torch.from_numpy(costs))
    assert y.shape == costs.shape and y.dtype == torch.float64
    got = (costs * y.numpy()).sum(-1).reshape(-1)
    np.testing.assert_allclose(got, direct(model, costs.reshape(-1, model.num_cost)), rtol=1e-9, atol=1e-9)


def test_shortest_path_agrees_with_the_native_flow_lp() -> None:
    """PyEPO's Gurobi flow LP and combgrad's GLOP lp on the same arcs give the same paths."""
    model, _ = gurobi_models()["shortest_path"]
    incidence = np.zeros((25, len(model.arcs)))
    for k, (tail, head) in enumerate(model.arcs):
        incidence[tail, k], incidence[head, k] = -1, 1
    supply = np.zeros(25)
    supply[0], supply[-1] = -1, 1
    native = cg.solvers.get("lp", A_eq=incidence, b_eq=supply, upper=1)
    costs = torch.from_numpy(np.random.default_rng(2).uniform(0, 1, size=(16, model.num_cost)))
    assert torch.equal(cg.adapters.from_pyepo(model)(costs).round(), native(costs))


def test_blackbox_gradient_through_differentiable() -> None:
    """Random costs have a unique optimum, so PyEPO's model and the native flow LP give
    the same solutions everywhere and hence the same (non-zero) blackbox gradient."""
    model, _ = gurobi_models()["shortest_path"]
    incidence = np.zeros((25, len(model.arcs)))
    for k, (tail, head) in enumerate(model.arcs):
        incidence[tail, k], incidence[head, k] = -1, 1
    supply = np.zeros(25)
    supply[0], supply[-1] = -1, 1
    costs = torch.from_numpy(np.random.default_rng(3).uniform(0, 1, size=(8, model.num_cost)))
    target = torch.from_numpy(np.random.default_rng(4).normal(size=(8, model.num_cost)))
    gradients = []
    for solver in (cg.adapters.from_pyepo(model), cg.solvers.get("lp", A_eq=incidence, b_eq=supply, upper=1)):
        layer = cg.differentiable(solver=solver, estimator="blackbox", lam=5.0)
        leaf = costs.clone().requires_grad_()
        (layer(leaf) * target).sum().backward()
        gradients.append(leaf.grad)
    assert gradients[0].abs().sum() > 0
    torch.testing.assert_close(gradients[0], gradients[1], rtol=0, atol=1e-9)


@pytest.mark.parametrize("maximize", [False, True])
def test_sense_comes_from_model_sense(maximize: bool) -> None:
    solver = cg.adapters.from_pyepo(PickOne(4, maximize=maximize))
    assert solver.sense == ("max" if maximize else "min")
    y = solver(torch.tensor([[0.3, 0.1, 0.9, 0.5]]))
    expected = [0.0, 0.0, 1.0, 0.0] if maximize else [0.0, 1.0, 0.0, 0.0]
    assert torch.equal(y, torch.tensor([expected]))


def test_ortools_backed_pyepo_model_works_without_gurobi() -> None:
    pytest.importorskip("ortools")
    from pyepo.model.ort import shortestPathModel

    model = shortestPathModel(grid=(3, 3))
    solver = cg.adapters.from_pyepo(model)
    costs = np.random.default_rng(5).uniform(0, 1, size=(5, model.num_cost))
    y = solver(torch.from_numpy(costs)).numpy()
    np.testing.assert_allclose((costs * y).sum(-1), direct(model, costs), rtol=1e-9)


@pytest.mark.parametrize("problem", ["shortest_path", "knapsack"])
def test_workers_and_thread_executor_agree_with_serial(problem: str) -> None:
    """Each worker process and each thread rebuilds the model from opt_model.to_spec()."""
    model, _ = gurobi_models()[problem]
    costs = torch.from_numpy(np.random.default_rng(6).uniform(0, 1, size=(12, model.num_cost)))
    serial = cg.adapters.from_pyepo(model)(costs)
    with deadline(120):
        pooled = cg.adapters.from_pyepo(model, workers=WORKERS)
        assert torch.equal(pooled(costs), serial)
    handler = _c_level_sigint_handler()
    with ThreadPoolExecutor(2) as threads:
        on_threads = cg.adapters.from_pyepo(model, executor=threads)
        assert "executor=threads" in repr(on_threads)
        for _ in range(5):
            assert torch.equal(on_threads(costs), serial)
    # Two threads optimizing at once left Gurobi's own SIGINT handler installed, and the
    # suite's next Ctrl-C test killed the process (exit 130) instead of raising.
    assert _c_level_sigint_handler() == handler


def _c_level_sigint_handler() -> int:
    """The address of the process's SIGINT handler as the C library sees it (Python's
    ``signal.getsignal`` only knows what Python installed)."""
    import ctypes
    import signal

    action = ctypes.create_string_buffer(256)  # larger than any struct sigaction
    assert ctypes.CDLL(None).sigaction(signal.SIGINT, None, action) == 0
    return ctypes.cast(action, ctypes.POINTER(ctypes.c_void_p))[0] or 0


def test_a_failing_solve_names_the_instance() -> None:
    solver = cg.adapters.from_pyepo(PickOne(3, refuse_above=10.0))
    theta = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [1.0, 20.0, 3.0]])
    with pytest.raises(SolverError, match=r"^pyepo:PickOne: instance 2 raised RuntimeError: cost 20.0 above 10.0"):
        solver(theta)


def test_a_failing_solve_in_a_worker_names_the_instance() -> None:
    solver = cg.adapters.from_pyepo(PickOne(3, refuse_above=10.0), workers=WORKERS)
    theta = torch.tensor([[1.0, 2.0, 3.0], [1.0, 20.0, 3.0]])
    with deadline(120), pytest.raises(SolverError, match=r"^pyepo:PickOne: instance 1 raised RuntimeError"):
        solver(theta)


def test_model_with_added_constraints_is_refused_for_workers_but_works_serially() -> None:
    model, _ = gurobi_models()["knapsack"]
    constrained = model.addConstr(np.ones(model.num_cost), 2.0)  # at most two items
    with pytest.raises(ValueError, match=r"from_pyepo: opt_model has constraints added by addConstr"):
        cg.adapters.from_pyepo(constrained, workers=WORKERS)
    y = cg.adapters.from_pyepo(constrained)(torch.rand(4, model.num_cost, generator=torch.Generator().manual_seed(0)))
    assert (y.sum(-1) <= 2).all()


@pytest.mark.parametrize(
    ("theta", "error", "match"),
    [
        (torch.ones(2, 5), ValueError, r"pyepo:PickOne: theta's last dim must be num_cost=3 \(the model's cost vector\), got shape \(2, 5\)"),
        (torch.tensor([1.0, float("nan"), 0.0]), ValueError, r"pyepo:PickOne: theta must be finite"),
    ],
)
def test_bad_theta_is_refused(theta: torch.Tensor, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        cg.adapters.from_pyepo(PickOne(3))(theta)


def test_not_an_opt_model_is_refused() -> None:
    with pytest.raises(TypeError, match=r"from_pyepo: opt_model must be a PyEPO optModel, got function"):
        cg.adapters.from_pyepo(lambda costs: costs)


def test_bad_model_sense_and_options_are_refused() -> None:
    model = PickOne(3)
    model.modelSense = 0
    with pytest.raises(ValueError, match=r"from_pyepo: opt_model.modelSense must be EPO.MINIMIZE or EPO.MAXIMIZE, got 0"):
        cg.adapters.from_pyepo(model)
    with pytest.raises(ValueError, match=r"workers must be an integer >= 0, got -1"):
        cg.adapters.from_pyepo(PickOne(3), workers=-1)
    with ThreadPoolExecutor(1) as threads, pytest.raises(ValueError, match=r"give workers=2 .* not both"):
        cg.adapters.from_pyepo(PickOne(3), workers=2, executor=threads)


def test_missing_pyepo_raises_a_clear_import_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyepo", None)  # import pyepo now raises ImportError
    with pytest.raises(ImportError, match=r"from_pyepo: PyEPO is not installed; install it with `pip install pyepo`"):
        cg.adapters.from_pyepo(object())

"""Tests for combgrad/adapters/differentiable.py."""

import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import combgrad as cg
from combgrad.adapters.differentiable import DifferentiableSolver


def numpy_argmax(theta):
    """A batched user solver on float64 numpy scores [B, n]."""
    return np.eye(theta.shape[-1])[theta.argmax(-1)]


def test_layer_from_a_registry_name_routes_options():
    layer = cg.differentiable(solver="topk", k=5, estimator="imle", samples=10, noise="sum_of_gamma", lam=10.0)
    assert isinstance(layer, DifferentiableSolver) and isinstance(layer, torch.nn.Module)
    assert layer.solver.k == 5
    options = layer.estimator.options
    assert (options.samples, options.noise, options.lam) == (10, "sum_of_gamma", 10.0)
    # k is both top-k's subset size and the sum-of-gamma shape: it goes to both.
    assert options.k == 5
    theta = torch.randn(3, 12, requires_grad=True)
    y = layer(theta)
    assert y.shape == (3, 12) and torch.allclose(y.sum(-1), torch.full((3,), 5.0))
    y.sum().backward()
    assert theta.grad.shape == (3, 12)


def test_default_estimator_is_imle_and_solver_options_reach_the_solver():
    layer = cg.differentiable(solver="shortest_path", neighbourhood=4, lam=3.0)
    assert isinstance(layer.estimator, cg.gradients.IMLE) and layer.estimator.options.lam == 3.0
    assert layer.solver.neighbourhood == 4
    assert "ShortestPath" in repr(layer)


def test_issue_examples_run():
    costs = torch.rand(2, 6, 6, requires_grad=True)
    layer = cg.differentiable(solver="shortest_path", estimator="aimle")
    paths = layer(costs)
    assert paths.shape == (2, 6, 6)
    paths.sum().backward()
    assert costs.grad is not None and "estimator.beta" in layer.state_dict()

    scorer = torch.nn.Linear(4, 10)

    @cg.differentiable(solver="topk", k=5, estimator="imle", samples=10, noise="sum_of_gamma", lam=10.0)
    def select(x):
        return scorer(x)

    mask = select(torch.randn(3, 4))
    assert mask.shape == (3, 10) and torch.allclose(mask.sum(-1), torch.full((3,), 5.0))
    mask.sum().backward()
    assert scorer.weight.grad is not None
    assert select.__name__ == "select" and isinstance(select.layer, DifferentiableSolver)

    @cg.differentiable(estimator="perturbation", sense="max", noise_scale=0.5, samples=100, noise="gumbel")
    def my_solver(theta):
        return numpy_argmax(theta)

    assert isinstance(my_solver, DifferentiableSolver)
    y = my_solver(torch.randn(2, 5))
    assert torch.allclose(y.sum(-1), torch.ones(2))


def test_function_as_solver_is_perturbed_softmax():
    sigma, samples = 0.5, 20_000
    # Gumbel noise: the perturbed argmax is then exactly softmax(theta / sigma).
    layer = cg.differentiable(
        numpy_argmax, estimator="perturbation", sense="max", noise="gumbel", noise_scale=sigma, samples=samples
    )
    assert layer.solver.sense == "max" and layer.solver.event_ndim == 1
    theta = torch.tensor([[-0.6, 1.9, -0.2, 1.1, -1.0]], dtype=torch.float64, requires_grad=True)
    y = layer(theta, generator=torch.Generator().manual_seed(0))
    softmax = torch.softmax(theta.detach() / sigma, -1)
    assert y.dtype == torch.float64
    assert bool(((y.detach() - softmax).abs() <= 5 * torch.sqrt(softmax * (1 - softmax) / samples)).all())


def test_function_as_min_solver_with_event_ndim():
    def cheapest_cell(costs):  # [B, H, W] -> one-hot of the cheapest cell
        flat = costs.reshape(len(costs), -1)
        return np.eye(flat.shape[-1])[flat.argmin(-1)].reshape(costs.shape)

    layer = cg.differentiable(cheapest_cell, estimator="ste", sense="min", event_ndim=2)
    costs = torch.tensor([[[3.0, 1.0], [2.0, 4.0]]], requires_grad=True)
    y = layer(costs)
    assert torch.equal(y.detach(), torch.tensor([[[0.0, 1.0], [0.0, 0.0]]]))
    y.backward(torch.ones_like(y))
    assert torch.equal(costs.grad, -torch.ones_like(costs))  # ste in score space for "min"


def test_a_layer_decorates_and_wrap_keeps_the_layer():
    layer = cg.differentiable(solver="argmax", estimator="ste")
    double = layer(lambda x: 2 * x)
    assert double.layer is layer
    x = torch.tensor([1.0, -3.0, 2.0], requires_grad=True)
    y = double(x)
    assert torch.equal(y.detach(), torch.tensor([0.0, 0.0, 1.0]))
    y.backward(torch.tensor([1.0, 2.0, 3.0]))
    assert torch.equal(x.grad, torch.tensor([2.0, 4.0, 6.0]))  # ste identity through x -> 2x
    wrapped = cg.differentiable(lambda x: -x, solver="argmax", estimator="ste")
    assert torch.equal(wrapped(torch.tensor([1.0, -3.0])), torch.tensor([0.0, 1.0]))


def test_objects_for_solver_and_estimator():
    estimator = cg.gradients.get("blackbox", lam=2.0)
    solver = cg.solvers.get("topk", k=2)
    layer = cg.DifferentiableSolver(solver, estimator)
    assert layer.solver is solver and layer.estimator is estimator
    with pytest.raises(TypeError, match="unexpected option 'lam'; the given Blackbox estimator object takes no"):
        cg.DifferentiableSolver(solver, estimator, lam=3.0)
    with pytest.raises(TypeError, match="unexpected option 'k'"):
        cg.differentiable(solver=solver, estimator="ste", k=3)


def test_unknown_options_are_option_errors():
    """One exception type for options across the library (issue 9 item 2); still a TypeError."""
    with pytest.raises(cg.OptionError, match="differentiable: unexpected option 'bogus'"):
        cg.differentiable(solver="argmax", estimator="ste", bogus=1)
    with pytest.raises(cg.OptionError, match="sense= .* is required when no solver is named"):
        cg.differentiable(numpy_argmax, estimator="ste")


def test_unknown_names_and_options():
    expected = "differentiable: unexpected option 'sigma'; estimator 'imle' takes .*lam.* and solver 'topk' takes"
    with pytest.raises(TypeError, match=expected + " \\['backend', 'k'\\]"):
        cg.differentiable(solver="topk", k=2, sigma=1.0)
    with pytest.raises(TypeError, match="unexpected option 'bogus'.*from_function takes"):
        cg.differentiable(numpy_argmax, sense="max", bogus=1)
    with pytest.raises(KeyError, match="unknown estimator 'imle2'; known: aimle"):
        cg.differentiable(solver="topk", estimator="imle2", k=2)
    with pytest.raises(KeyError, match="unknown solver 'top_k'"):
        cg.differentiable(solver="top_k", k=2)
    with pytest.raises(TypeError, match="sense= \\('min' or 'max'\\) is required when no solver is named"):
        cg.differentiable(numpy_argmax, estimator="ste")
    with pytest.raises(ValueError, match="differentiable: sense must be 'min' or 'max', got 'up'"):
        cg.differentiable(sense="up")
    with pytest.raises(ValueError, match="imle: samples must be an integer >= 1, got 0"):
        cg.differentiable(sense="max", samples=0)  # validated before any function is decorated
    with pytest.raises(ValueError, match="topk: k must be an integer >= 1, got 0"):
        cg.differentiable(solver="topk", k=0)
    with pytest.raises(TypeError, match="estimator must be a registry name or an estimator module, got int"):
        cg.differentiable(solver="argmax", estimator=3)


def test_leftover_options_go_to_a_factory_with_kwargs():
    seen = {}

    def factory(**options):
        seen.update(options)
        return cg.solvers.get("argmax")

    cg.solvers.register("test_kwargs_solver", factory)
    try:
        layer = cg.differentiable(solver="test_kwargs_solver", estimator="ste", colour="blue")
        assert seen == {"colour": "blue"}
        assert torch.equal(layer(torch.tensor([0.0, 1.0])), torch.tensor([0.0, 1.0]))
    finally:
        cg.solvers.unregister("test_kwargs_solver")


def test_each_decorated_function_gets_its_own_estimator_state():
    decorator = cg.differentiable(estimator="aimle", sense="max", noise="none", beta_update_step=0.5)
    first, second = decorator(numpy_argmax), decorator(numpy_argmax)
    assert first.estimator is not second.estimator
    theta = torch.tensor([[0.0, 1.0, 0.5]], requires_grad=True)
    first(theta).backward(torch.tensor([[-1.0, 1.0, 0.0]]))
    assert first.estimator.beta.item() != 1.0 and second.estimator.beta.item() == 1.0


def test_generator_reproducibility_through_the_layer():
    layer = cg.differentiable(solver="topk", k=2, estimator="imle", samples=3, noise="gumbel")
    theta = torch.randn(4, 6)
    first = layer(theta, generator=torch.Generator().manual_seed(1))
    assert torch.equal(first, layer(theta, generator=torch.Generator().manual_seed(1)))
    torch.manual_seed(5)
    again = layer(theta)
    torch.manual_seed(5)
    assert torch.equal(again, layer(theta))


def test_state_dict_round_trip_of_a_model_with_an_aimle_layer():
    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(3, 6)
            self.select = cg.differentiable(solver="topk", k=2, estimator="aimle", noise="gumbel", beta_update_step=0.1)

        def forward(self, x):
            return self.select(self.linear(x))

    model = Model()
    for _ in range(3):
        model(torch.randn(5, 3)).sum().backward()
    assert not math.isclose(model.select.estimator.beta.item(), 1.0)
    restored = Model()
    restored.load_state_dict(model.state_dict())
    assert restored.select.estimator.beta.item() == model.select.estimator.beta.item()


SCRIPT = """
import multiprocessing

import numpy as np
import torch

import combgrad as cg


@cg.differentiable(sense="max", estimator="ste", workers=2)
def my_argmax(theta):  # [B, n] float64 numpy scores
    assert multiprocessing.parent_process() is not None, "must run in a worker"
    return np.eye(theta.shape[-1])[theta.argmax(-1)]


if __name__ == "__main__":
    theta = torch.tensor([[0.1, 0.9, 0.3], [2.0, 1.0, 0.0]] * 4)
    print(my_argmax(theta).argmax(-1).tolist())
"""


def test_decorated_module_level_function_runs_in_workers(tmp_path: Path) -> None:
    """Issue 8 item 12: the decorator rebinds the name, which made pickling the function fail.

    A fresh interpreter runs a script whose module-level function is decorated
    with workers=2, exactly as a user's script would.
    """
    script = tmp_path / "decorated_with_workers.py"
    script.write_text(textwrap.dedent(SCRIPT))
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str([1, 0] * 4)


def test_decorated_function_keeps_its_name_and_is_picklable_with_workers() -> None:
    import pickle

    layer = cg.differentiable(numpy_argmax, sense="max", estimator="ste", workers=2)
    assert layer.solver.name == "numpy_argmax" and layer.solver.workers == 2
    assert pickle.loads(pickle.dumps(layer.solver.fn)) is numpy_argmax

"""Tests for combgrad/gradients/base.py: the score sign, batched solving, option checks."""

import pytest
import torch

import combgrad as cg
from combgrad.gradients import base


def test_score_sign():
    assert base.score_sign("max") == 1 and base.score_sign("min") == -1
    with pytest.raises(ValueError, match="sense must be 'min' or 'max', got 'maximize'"):
        base.score_sign("maximize")


@pytest.mark.parametrize("leading", [(), (3,), (2, 4)])
def test_solve_scores_is_one_call_on_a_flat_batch(counting, argmin, leading):
    solver = counting(argmin)
    scores = torch.randn(*leading, 5, generator=torch.Generator().manual_seed(0))
    y = base.solve_scores(solver, scores)
    assert len(solver.calls) == 1
    assert solver.calls[0] == (max(1, torch.Size(leading).numel()), 5)
    # Score space: argmax of the scores, whatever the solver's sense.
    assert torch.equal(y, torch.nn.functional.one_hot(scores.argmax(-1), 5).to(scores.dtype))


def test_solve_perturbed_broadcasts_sides_against_samples(counting):
    solver = counting(cg.solvers.get("argmax"))
    scores = torch.randn(2, 1, 3, 4)  # two sides, one sample dim, batch 3
    draws = torch.randn(5, 3, 4)
    y = base.solve_perturbed(solver, scores, draws, 0.5)
    assert y.shape == (2, 5, 3, 4) and solver.calls == [(30, 4)]
    assert torch.equal(y, base.solve_scores(cg.solvers.get("argmax"), scores + 0.5 * draws))


def test_event_sum_and_norm():
    values = torch.arange(24.0).reshape(2, 3, 4)
    assert torch.equal(base.event_sum(values, 2), values.sum((1, 2)))
    assert torch.allclose(base.event_norm(values, 1), values.norm(dim=-1))
    assert torch.equal(base.event_sum(values, 0), values)


def test_resolve_solver():
    assert base.resolve_solver("owner", "topk", {"k": 2}).k == 2
    argmax = cg.solvers.get("argmax")
    assert base.resolve_solver("owner", argmax, {}) is argmax
    with pytest.raises(TypeError, match="owner: solver options \\['k'\\] need a solver name"):
        base.resolve_solver("owner", argmax, {"k": 2})
    with pytest.raises(TypeError, match="owner: solver must be a registry name or a solver"):
        base.resolve_solver("owner", 42, {})
    with pytest.raises(KeyError, match="unknown solver 'nope'"):
        base.resolve_solver("owner", "nope", {})


def test_noise_k_defaults_to_the_solvers_k():
    assert base.noise_k(None, cg.solvers.get("topk", k=4)) == 4
    assert base.noise_k(None, cg.solvers.get("argmax")) == 1
    assert base.noise_k(2, cg.solvers.get("topk", k=4)) == 2


@pytest.mark.parametrize("name", ["imle", "aimle", "perturbation", "ste", "blackbox"])
def test_estimators_validate_theta(name):
    estimator = cg.gradients.get(name)
    with pytest.raises(TypeError, match=f"{name}: theta must be a torch.Tensor, got list"):
        estimator([1.0, 2.0], cg.solvers.get("argmax"))
    with pytest.raises(ValueError, match=f"{name}: theta must have at least 2 dims"):
        estimator(torch.ones(3), cg.solvers.get("shortest_path"))
    with pytest.raises(ValueError, match="must be finite"):
        estimator(torch.tensor([1.0, float("nan")]), cg.solvers.get("argmax"))
    assert "(" in repr(estimator)

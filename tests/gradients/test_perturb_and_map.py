"""Tests for combgrad/gradients/perturb_and_map.py: the mechanics I-MLE and AIMLE share.

Each function is checked against the solver called directly on the perturbed
or moved scores (the independent reference).
"""

import ast
from pathlib import Path

import pytest
import torch

import combgrad as cg
from combgrad.gradients import noise, perturb_and_map

GRADIENTS = Path(cg.gradients.__file__).parent


def test_aimle_imports_nothing_from_imle():
    """Guards issue 9 item 4: imle.py is I-MLE only; aimle used to import five of its private helpers."""
    tree = ast.parse((GRADIENTS / "aimle.py").read_text())
    sources = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "imle" not in sources and "perturb_and_map" in sources
    imle_functions = {node.name for node in ast.parse((GRADIENTS / "imle.py").read_text()).body if isinstance(node, ast.FunctionDef)}
    assert imle_functions == set()  # only the options, the Function and the module


def test_options_and_the_target_scale():
    options = perturb_and_map.PerturbAndMAPOptions(noise_scale=0.4)
    assert options.target_scale == 0.4
    assert perturb_and_map.PerturbAndMAPOptions(noise_scale=0.4, target_noise_scale=0.0).target_scale == 0.0
    with pytest.raises(ValueError, match="estimator: k must be an integer >= 1, got 0"):
        perturb_and_map.PerturbAndMAPOptions(k=0)


@pytest.mark.parametrize("noise_name", ["gumbel", "sum_of_gamma"])
def test_perturb_and_solve_is_one_call_on_all_samples(counting, noise_name):
    solver = counting(cg.solvers.get("topk", k=2))
    theta = torch.randn(3, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    # k explicit: the counting wrapper hides topk's own k.
    options = perturb_and_map.PerturbAndMAPOptions(samples=4, noise=noise_name, noise_scale=0.5, k=2)
    sign, scores, draws, solutions = perturb_and_map.perturb_and_solve(
        theta, solver, options, torch.Generator().manual_seed(1)
    )
    eps = noise.sample(noise_name, (4, 3, 6), k=2, dtype=theta.dtype, generator=torch.Generator().manual_seed(1))
    assert sign == 1 and torch.equal(scores, theta) and torch.equal(draws, eps)
    assert torch.equal(solutions, cg.solvers.get("topk", k=2)(theta + 0.5 * eps))
    assert solver.calls == [(12, 6)]


def test_without_noise_or_in_eval_one_zero_draw_stands_for_all_samples(counting):
    solver = counting(cg.solvers.get("argmax"))
    theta = torch.randn(2, 5)
    for options, sample in [
        (perturb_and_map.PerturbAndMAPOptions(samples=7, noise="none"), True),
        (perturb_and_map.PerturbAndMAPOptions(samples=7, noise="gumbel"), False),
    ]:
        _, _, draws, solutions = perturb_and_map.perturb_and_solve(theta, solver, options, None, sample=sample)
        assert torch.equal(draws, torch.zeros(1, 2, 5))
        assert torch.equal(solutions[0], cg.solvers.get("argmax")(theta))
    assert solver.calls == [(2, 5), (2, 5)]


def test_differences_are_per_sample_and_accept_one_gradient_per_sample():
    solver = cg.solvers.get("topk", k=2)
    generator = torch.Generator().manual_seed(2)
    scores = torch.randn(3, 6, generator=generator, dtype=torch.float64)
    draws = torch.randn(4, 3, 6, generator=generator, dtype=torch.float64)
    solutions = solver(scores + draws)
    for dy in (torch.randn(3, 6, generator=generator, dtype=torch.float64),
               torch.randn(4, 3, 6, generator=generator, dtype=torch.float64)):
        forward = perturb_and_map.target_difference(
            solver, scores, dy, draws, solutions, lam=2.0, target_noise_scale=0.5
        )
        assert forward.shape == (4, 3, 6)
        assert torch.equal(forward, solutions - solver(scores - 2.0 * dy + 0.5 * draws))
        central = perturb_and_map.central_difference(solver, scores, dy, draws, lam=2.0, target_noise_scale=0.5)
        expected = (solver(scores + 2.0 * dy + 0.5 * draws) - solver(scores - 2.0 * dy + 0.5 * draws)) / 2
        assert torch.equal(central, expected) and central.abs().sum() > 0


def test_per_instance_lam_broadcasts_over_samples():
    solver = cg.solvers.get("argmax")
    scores = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    dy = torch.tensor([[-1.0, 1.0], [-1.0, 1.0]])
    lam = torch.tensor([[0.1, 5.0]])  # [S'=1, batch=2]: only the second instance moves
    difference = perturb_and_map.target_difference(
        solver, scores, dy, torch.zeros(1, 2, 2), solver(scores).unsqueeze(0), lam=lam, target_noise_scale=0.0
    )
    assert torch.equal(difference, torch.tensor([[[0.0, 0.0], [-1.0, 1.0]]]))


def test_sample_output_and_combine_samples():
    options = perturb_and_map.PerturbAndMAPOptions(samples=3, reduce=False)
    one = torch.tensor([[1.0, 0.0]])
    assert torch.equal(perturb_and_map.sample_output(one.unsqueeze(0), options), one.expand(3, 1, 2))
    per_sample = torch.tensor([[1.0], [2.0], [6.0]])
    assert torch.equal(perturb_and_map.combine_samples(per_sample, True), torch.tensor([3.0]))
    assert torch.equal(perturb_and_map.combine_samples(per_sample, False), torch.tensor([9.0]))

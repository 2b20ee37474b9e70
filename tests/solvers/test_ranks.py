"""Tests for combgrad/solvers/ranks.py: torch.argsort, brute force over permutations, perturbed ranks in closed form."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

import combgrad as cg
from combgrad.solvers.ranks import Ranks

BACKENDS = ("numba", "torch")


def brute_force(theta: np.ndarray) -> np.ndarray:
    """The documented answer by enumeration: the permutation maximizing <theta, y> that ranks equal
    scores in index order (asserted to be unique, so the tie rule names one answer)."""
    n = len(theta)
    best = max(float(theta @ np.array(permutation)) for permutation in itertools.permutations(range(n)))
    candidates = [
        np.array(permutation)
        for permutation in itertools.permutations(range(n))
        if float(theta @ np.array(permutation)) == best
        and all(
            permutation[i] < permutation[j]
            for i in range(n)
            for j in range(i + 1, n)
            if theta[i] == theta[j]
        )
    ]
    assert len(candidates) == 1  # the tie rule picks exactly one maximizer
    return candidates[0]


@pytest.mark.parametrize("backend", BACKENDS)
def test_brute_force_over_all_permutations(backend: str) -> None:
    solver = cg.solvers.get("ranks", backend=backend)
    rng = np.random.default_rng(0)
    for n in range(1, 7):
        # Integer scores in a small range: many ties.
        theta = rng.integers(-2, 3, size=(40, n)).astype(np.float64)
        ranks = solver(torch.from_numpy(theta)).numpy()
        for row, y in zip(theta, ranks):
            np.testing.assert_array_equal(y, brute_force(row))


@pytest.mark.parametrize("backend", BACKENDS)
def test_matches_torch_argsort(backend: str, device: str) -> None:
    theta = torch.randn(3, 5, 100, device=device)
    expected = torch.argsort(torch.argsort(theta, dim=-1, stable=True), dim=-1, stable=True)
    y = cg.solvers.get("ranks", backend=backend)(theta)
    assert y.dtype == theta.dtype and y.device == theta.device and y.shape == theta.shape
    assert torch.equal(y, expected.to(theta.dtype))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_backends_identical_with_ties(dtype: torch.dtype, device: str) -> None:
    theta = torch.randint(-3, 4, (64, 50), device=device).to(dtype)
    theta[0, :2] = torch.tensor([0.0, -0.0])  # -0.0 and 0.0 are equal scores
    results = [cg.solvers.get("ranks", backend=backend)(theta) for backend in BACKENDS]
    assert torch.equal(results[0], results[1])
    assert results[0][0, :2].tolist() == sorted(results[0][0, :2].tolist())
    # A permutation per row.
    assert torch.equal(results[0].sort(-1).values, torch.arange(50.0, device=device).to(dtype).expand(64, 50))


def test_example_and_sense() -> None:
    solver = cg.solvers.get("ranks")
    assert isinstance(solver, Ranks) and repr(solver) == "Ranks(backend='auto')"
    assert solver.sense == "max" and solver.event_ndim == 1
    assert solver(torch.tensor([0.3, -1.0, 2.0, 0.3])).tolist() == [1.0, 0.0, 3.0, 2.0]
    assert "ranks" in cg.solvers.names() and set(cg.solvers.options("ranks")) == {"backend"}


@pytest.mark.parametrize("noise", ["normal", "gumbel"])
def test_perturbed_ranks_closed_form(noise: str) -> None:
    """Berthet et al.'s perturbed ranks with the perturbation estimator: mean and Jacobian in closed form.

    E[rank_i] = sum_{j != i} P(theta_i + sigma Z_i > theta_j + sigma Z_j), and the
    difference of two noises is a normal of sd sigma sqrt(2) (normal noise) or a
    logistic of scale sigma (Gumbel): P = Phi(d / (sigma sqrt 2)) or sigmoid(d / sigma),
    d = theta_i - theta_j; the Jacobian is the corresponding density. (The
    perturbations seed has no ranking example, so the closed form is the reference.)
    Tolerances: with 100,000 samples a rank's Monte Carlo sd is at most
    sqrt(Var rank) / sqrt(1e5) <= 1.5 / 316 = 0.005 (0.03 is 6 sd); a Jacobian
    entry of the score-function estimate has sd about (n - 1) * E|Z| / (sigma sqrt(S))
    <= 0.06 here (0.3 is 5 sd).
    """
    sigma = 0.5
    theta = torch.tensor([0.1, -0.4, 0.9, 0.2, 0.0], dtype=torch.float64)
    layer = cg.DifferentiableSolver("ranks", estimator="perturbation", samples=100_000, noise_scale=sigma, noise=noise)
    difference = theta[:, None] - theta[None, :]  # [i, j] = theta_i - theta_j
    if noise == "normal":
        scale = sigma * math.sqrt(2)
        probability = 0.5 * torch.erfc(-difference / (scale * math.sqrt(2)))
        density = torch.exp(-0.5 * (difference / scale) ** 2) / (scale * math.sqrt(2 * math.pi))
    else:
        probability = torch.sigmoid(difference / sigma)
        density = probability * (1 - probability) / sigma
    off_diagonal = 1 - torch.eye(5, dtype=torch.float64)
    expected_ranks = (probability * off_diagonal).sum(1)
    # d E[rank_i] / d theta_k: sum_j density_ij for k = i, -density_ik otherwise.
    jacobian = torch.diag((density * off_diagonal).sum(1)) - density * off_diagonal
    torch.manual_seed(0)
    leaf = theta.clone().requires_grad_()
    ranks = layer(leaf)
    weights = torch.tensor([1.0, -2.0, 0.5, 0.0, 1.5], dtype=torch.float64)
    (ranks * weights).sum().backward()
    # Gumbel noise has mean 0.577 for every entry alike: the ranks do not move.
    torch.testing.assert_close(ranks.detach(), expected_ranks, atol=0.03, rtol=0)
    torch.testing.assert_close(leaf.grad, weights @ jacobian, atol=0.3, rtol=0)


def test_imle_through_both_backends(imle_through_both_backends) -> None:
    imle_through_both_backends("ranks", torch.randn(4, 7, dtype=torch.float64), noise="normal")


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="backend must be one of"):
        cg.solvers.get("ranks", backend="cuda")
    with pytest.raises(ValueError, match=r"at most 256 entries per instance in torch.bfloat16 .* got shape \(2, 300\)"):
        cg.solvers.get("ranks")(torch.zeros(2, 300, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="finite"):
        cg.solvers.get("ranks")(torch.tensor([1.0, math.inf]))
    with pytest.raises(TypeError):
        cg.solvers.get("ranks", k=3)

"""End-to-end: each estimator learns grid weights whose shortest path is a gold path.

The toy problem of the I-MLE paper (Niepert et al. 2021): from random weights on
an 8x8 grid, gradient descent on the Hamming distance between the layer's output
and a gold path (or, for the perturbation estimator, on the Fenchel-Young loss)
must reach weights whose exact shortest path is the gold path.
"""

import pytest
import torch

import combgrad as cg

SIZE = 8
MAX_STEPS = 150


def gold_path(seed):
    true_costs = 10 * torch.rand(SIZE, SIZE, generator=torch.Generator().manual_seed(1000 + seed), dtype=torch.float64)
    return cg.solvers.get("shortest_path")(true_costs)


def learn(loss_fn, seed):
    """Adam from random parameters; returns the Hamming distance of the exact path at each step.

    The grid weights are ``softplus(parameters)``: positive, as Dijkstra needs (it
    reads negative costs as 0, and zero-cost ties would blur the problem).
    """
    gold = gold_path(seed)
    parameters = torch.randn(SIZE, SIZE, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    parameters.requires_grad_()
    optimizer = torch.optim.Adam([parameters], lr=0.1)
    solver = cg.solvers.get("shortest_path")

    def distance():
        return cg.losses.hamming(solver(torch.nn.functional.softplus(parameters.detach())), gold, event_ndim=2).item()

    distances = [distance()]
    generator = torch.Generator().manual_seed(seed)
    for _ in range(MAX_STEPS):
        loss = loss_fn(torch.nn.functional.softplus(parameters), gold, generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        distances.append(distance())
        if distances[-1] == 0:
            break
    return distances


def layer_loss(estimator, **options):
    layer = cg.differentiable(solver="shortest_path", estimator=estimator, **options)

    def loss(weights, gold, generator):
        return cg.losses.hamming(layer(weights, generator=generator), gold, event_ndim=2)

    return loss


def fenchel_young_loss(weights, gold, generator):
    return cg.losses.fenchel_young(
        weights, gold, solver="shortest_path", noise_scale=0.5, noise="gumbel", samples=10, generator=generator
    )


CASES = {
    "imle": lambda: layer_loss("imle", samples=5, noise="sum_of_gamma", lam=10.0),
    "aimle": lambda: layer_loss("aimle", samples=5, noise="sum_of_gamma"),
    "aimle_symmetric": lambda: layer_loss("aimle", samples=5, noise="gumbel", symmetric=True),
    "blackbox": lambda: layer_loss("blackbox", lam=5.0),
    "perturbation_fenchel_young": lambda: fenchel_young_loss,
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("seed", [0, 1])
def test_learns_the_gold_path(case, seed):
    distances = learn(CASES[case](), seed)
    assert distances[0] > 0, "the random start must not already solve the problem"
    assert distances[-1] == 0, f"{case} did not reach the gold path in {MAX_STEPS} steps: {distances[-10:]}"

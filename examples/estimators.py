"""Compare combgrad's gradient estimators on the I-MLE gold-path toy problem.

A grid's cell weights start random; the goal is weights whose shortest path
(top-left to bottom-right, 8 neighbours) is a given gold path. Each estimator
turns the shortest-path solver into a layer, and Adam minimises the Hamming
distance between the layer's output and the gold path (the perturbation
estimator is also trained on the Fenchel-Young loss, its natural partner).
The table reports, over several seeds, how often the exact shortest path reached
the gold path, in how many steps, and the solver work per step.

Run:
    python examples/estimators.py                 # 8x8 grid, 3 seeds, <= 200 steps
    python examples/estimators.py --size 12 --seeds 5
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

import combgrad as cg


class CountingSolver:
    """A solver wrapper that counts the instances it solves (to show each estimator's cost)."""

    def __init__(self, solver):
        self.solver = solver
        self.name, self.sense, self.event_ndim = solver.name, solver.sense, solver.event_ndim
        self.instances = 0

    def __call__(self, theta: torch.Tensor) -> torch.Tensor:
        self.instances += theta.reshape(-1, *theta.shape[theta.ndim - self.event_ndim :]).shape[0]
        return self.solver(theta)


def estimator_losses(solver: CountingSolver) -> dict[str, Callable]:
    """name -> loss(weights, gold, generator) for each estimator configuration."""

    def hamming_through(estimator: str, **options) -> Callable:
        layer = cg.DifferentiableSolver(solver, cg.gradients.get(estimator, **options))
        def loss(weights, gold, generator):
            return cg.losses.hamming(layer(weights, generator=generator), gold, event_ndim=2)

        return loss

    def fenchel_young(weights, gold, generator):
        return cg.losses.fenchel_young(
            weights, gold, solver=solver, noise_scale=0.5, samples=10, generator=generator
        )

    return {
        "imle (sog, S=5)": hamming_through("imle", samples=5, noise="sum_of_gamma", lam=10.0),
        "imle (no noise)": hamming_through("imle", noise="none", lam=10.0),
        "aimle (S=5)": hamming_through("aimle", samples=5, noise="sum_of_gamma"),
        "aimle symmetric (S=5)": hamming_through("aimle", samples=5, noise="gumbel", symmetric=True),
        "blackbox (lam=5)": hamming_through("blackbox", lam=5.0),
        "ste": hamming_through("ste"),
        "perturbation + hamming (S=10)": hamming_through("perturbation", samples=10, noise_scale=0.5),
        "perturbation + fenchel_young": fenchel_young,
    }


def train(name: str, size: int, steps: int, seed: int, learning_rate: float) -> dict:
    """Train one estimator on one seed; returns its row of results."""
    exact = cg.solvers.get("shortest_path")
    gold_generator = torch.Generator().manual_seed(1000 + seed)
    true_costs = 10 * torch.rand(size, size, generator=gold_generator, dtype=torch.float64)
    gold = exact(true_costs)
    solver = CountingSolver(exact)
    loss_fn = estimator_losses(solver)[name]
    parameters = torch.randn(size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    parameters.requires_grad_()
    optimizer = torch.optim.Adam([parameters], lr=learning_rate)
    generator = torch.Generator().manual_seed(seed)
    distance = cg.losses.hamming(exact(F.softplus(parameters.detach())), gold, event_ndim=2).item()
    start, step = time.perf_counter(), 0
    while distance > 0 and step < steps:
        # softplus keeps the weights positive, as Dijkstra needs.
        loss = loss_fn(F.softplus(parameters), gold, generator)
        optimizer.zero_grad()
        loss.sum().backward()
        optimizer.step()
        step += 1
        distance = cg.losses.hamming(exact(F.softplus(parameters.detach())), gold, event_ndim=2).item()
    elapsed = time.perf_counter() - start
    return {
        "estimator": name,
        "seed": seed,
        "solved": distance == 0,
        "steps": step,
        "final_hamming": distance,
        "instances_per_step": solver.instances / max(step, 1),
        "ms_per_step": 1e3 * elapsed / max(step, 1),
    }


def main(argv: Sequence[str] | None = None) -> list[dict]:
    """Run every estimator on every seed, print the comparison table, return all rows."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=8, help="grid side (default 8)")
    parser.add_argument("--steps", type=int, default=200, help="maximum Adam steps (default 200)")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (default 3)")
    parser.add_argument("--lr", type=float, default=0.1, help="Adam learning rate (default 0.1)")
    args = parser.parse_args(argv)

    names = list(estimator_losses(CountingSolver(cg.solvers.get("shortest_path"))))
    rows = [train(name, args.size, args.steps, seed, args.lr) for name in names for seed in range(args.seeds)]
    print(f"{args.size}x{args.size} gold-path toy, {args.seeds} seeds, at most {args.steps} steps")
    header = (
        f"{'estimator':<32}{'solved':>8}{'mean steps':>12}{'mean hamming':>14}"
        f"{'solves/step':>13}{'ms/step':>9}"
    )
    print(header)
    print("-" * len(header))
    for name in names:
        mine = [row for row in rows if row["estimator"] == name]
        solved = sum(row["solved"] for row in mine)
        print(
            f"{name:<32}{f'{solved}/{len(mine)}':>8}"
            f"{sum(row['steps'] for row in mine) / len(mine):>12.1f}"
            f"{sum(row['final_hamming'] for row in mine) / len(mine):>14.2f}"
            f"{sum(row['instances_per_step'] for row in mine) / len(mine):>13.1f}"
            f"{sum(row['ms_per_step'] for row in mine) / len(mine):>9.1f}"
        )
    return rows


if __name__ == "__main__":
    main()

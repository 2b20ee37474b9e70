"""Sinkhorn distance between the two half-moons, with a picture of the transport plan.

The seeds' walkthrough splits a two-moons data set (30 points) into its two
moons and transports one onto the other with ``SinkhornDistance(eps=0.1)``. The
moons are generated here with numpy (no scikit-learn): the upper moon is the unit
half-circle, the lower one the same half-circle flipped and moved to ``(1, 0.5)``.

Run:
    python examples/sinkhorn_moons.py --out moons.png

It prints ``Sinkhorn distance: 1.797`` for the default settings (converged to a
marginal error below 1e-6). The walkthrough printed 1.714 because its loop stops
as soon as the potentials change by less than 0.1, long before the marginals
match; the exact optimal transport cost (``eps -> 0``) is 1.746.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import numpy as np
import torch

import combgrad as cg


def two_moons(samples: int, noise: float = 0.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaved half-circles: ``upper [samples // 2, 2]`` and ``lower [rest, 2]``."""
    n_upper = samples // 2
    n_lower = samples - n_upper
    t_upper = np.linspace(0.0, np.pi, n_upper)
    t_lower = np.linspace(0.0, np.pi, n_lower)
    upper = np.stack([np.cos(t_upper), np.sin(t_upper)], axis=1)
    lower = np.stack([1.0 - np.cos(t_lower), 0.5 - np.sin(t_lower)], axis=1)
    if noise > 0:
        rng = np.random.default_rng(seed)
        upper = upper + noise * rng.standard_normal(upper.shape)
        lower = lower + noise * rng.standard_normal(lower.shape)
    return upper, lower


def plot_plan(x: np.ndarray, y: np.ndarray, plan: np.ndarray, distance: float, out: str) -> None:
    """Draw each pair (i, j) as a segment whose opacity is ``P_ij / max P``, next to ``P``."""
    import matplotlib

    matplotlib.use("Agg")  # file output only: no display needed
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    weight = plan / plan.max()
    for i, j in zip(*np.nonzero(weight > 1e-3)):  # fainter segments are invisible anyway
        left.plot([x[i, 0], y[j, 0]], [x[i, 1], y[j, 1]], color="black", alpha=float(weight[i, j]), lw=1)
    left.scatter(x[:, 0], x[:, 1], label="upper moon (x)", zorder=3)
    left.scatter(y[:, 0], y[:, 1], label="lower moon (y)", zorder=3)
    left.set_title(f"Transport plan, Sinkhorn distance {distance:.3f}")
    left.set_aspect("equal")
    left.legend(loc="upper right")
    image = right.imshow(plan, cmap="viridis")
    right.set_title("Coupling matrix P")
    right.set_xlabel("j (lower moon)")
    right.set_ylabel("i (upper moon)")
    figure.colorbar(image, ax=right)
    figure.tight_layout()
    figure.savefig(out, dpi=100)
    plt.close(figure)


def main(argv: Sequence[str] | None = None) -> float:
    """Run the example; return the Sinkhorn distance."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="path of the PNG to write")
    parser.add_argument("--samples", type=int, default=30, help="points in both moons together")
    parser.add_argument("--eps", type=float, default=0.1, help="entropic regularization")
    parser.add_argument("--max-iter", type=int, default=1000)
    parser.add_argument("--noise", type=float, default=0.0, help="Gaussian noise added to the points")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    upper, lower = two_moons(args.samples, args.noise, args.seed)
    x = torch.tensor(upper, dtype=torch.float32)
    y = torch.tensor(lower, dtype=torch.float32)
    sinkhorn = cg.geometry.SinkhornDistance(eps=args.eps, max_iter=args.max_iter, tol=1e-6)
    dist, P, C = sinkhorn(x, y)
    print(f"Sinkhorn distance: {dist.item():.3f}")
    plot_plan(upper, lower, P.numpy(), dist.item(), args.out)
    print(f"plan written to {args.out}")
    return dist.item()


if __name__ == "__main__":
    main()

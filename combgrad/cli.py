"""The ``combgrad`` command: ``combgrad demo`` and the task subcommands."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence


def _demo(args: argparse.Namespace) -> int:
    """Solve a batch of random instances with each built-in solver and print a table."""
    import torch

    import combgrad as cg

    generator = torch.Generator().manual_seed(args.seed)
    batch = args.batch
    symmetric = torch.rand(batch, 30, 30, generator=generator)
    item_weights = torch.randint(1, 101, (50,), generator=generator)
    capacity = int(item_weights.sum()) // 2
    problems = {
        "argmax": ({}, torch.randn(batch, 20, generator=generator)),
        "topk": ({"k": 5}, torch.randn(batch, 20, generator=generator)),
        "shortest_path": ({}, torch.rand(batch, 12, 12, generator=generator) * 9 + 0.1),
        "spanning_tree": ({}, symmetric + symmetric.mT),
        "assignment": ({}, torch.rand(batch, 30, 30, generator=generator)),
        "knapsack": (
            {"weights": item_weights, "capacity": capacity},
            torch.rand(batch, 50, generator=generator),
        ),
        "ilp": (
            {"A": item_weights[None].double(), "b": [capacity], "sense": "max"},
            torch.rand(min(batch, 64), 50, generator=generator),
        ),
    }
    print(f"{'solver':<16}{'sense':<7}{'input shape':<18}{'ms / batch':>12}")
    for name, (options, theta) in problems.items():
        if name not in cg.solvers.names():
            continue
        solver = cg.solvers.get(name, **options)
        solver(theta)  # warm-up: numba compiles (or loads its cache) on the first call
        start = time.perf_counter()
        solver(theta)
        elapsed_ms = 1e3 * (time.perf_counter() - start)
        print(f"{name:<16}{solver.sense:<7}{str(tuple(theta.shape)):<18}{elapsed_ms:>12.2f}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``combgrad`` command."""
    parser = argparse.ArgumentParser(prog="combgrad", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="solve random instances with each built-in solver")
    demo.add_argument("--batch", type=int, default=256, help="instances per solver (default 256)")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(run=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``combgrad`` console script."""
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())

"""The ``combgrad pto`` subcommand: train a cost predictor on one of PyEPO's problems, print a summary."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from .._training.arguments import add_run_arguments, key_value
from .config import MODELS, PROBLEMS, PtoConfig
from .methods import METHODS, method_names


def run(args: argparse.Namespace) -> int:
    """Train and evaluate as ``args`` say, then print the test regret and timings; the exit status."""
    from .trainer import train

    config = PtoConfig(
        out=args.out or "",
        problem=args.problem,
        method=args.method,
        options=dict(args.option),
        n_train=args.n_train,
        n_test=args.n_test,
        num_feat=args.num_feat if args.num_feat is not None else (10 if args.problem == "tsp" else 5),
        deg=args.deg,
        noise=args.noise,
        grid=args.grid,
        num_items=args.num_items,
        dim=args.dim,
        capacity=args.capacity,
        num_nodes=args.num_nodes,
        data_seed=args.data_seed,
        model=args.model,
        hidden=args.hidden,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        device=args.device,
        resume=args.resume,
        progress=not args.quiet,
    )
    if not args.out:
        config.out = f"runs/pto/{config.problem}-{config.method}-seed{config.seed}"
    start = time.perf_counter()
    result = train(config, log=lambda line: print(line, file=sys.stderr))
    wall = time.perf_counter() - start
    counts = result["data"]["counts"]
    print(
        f"\n{result['method']} on {config.problem} (deg {config.deg}, noise {config.noise}, {counts['train']} train, "
        f"{config.model} model), {len(result['history'])} epochs, {result['config']['device']}"
    )
    print(f"{'split':<7}{'instances':>10}{'normalized regret':>19}{'mean regret':>13}{'optimal':>9}")
    metrics = result["final"]["test"]
    print(f"{'test':<7}{counts['test']:>10}{metrics['normalized_regret']:>19.4f}{metrics['regret']:>13.4f}"
          f"{100 * metrics['optimal']:>8.1f}%")
    timing = result["timing"]
    print(
        f"time {wall:.1f} s (data {timing['data_seconds']:.1f} s, {timing['seconds_per_epoch']:.2f} s per epoch, "
        f"solver {100 * timing['solver_share']:.1f}% of training)"
    )
    print(f"outputs in {config.out}/: metrics.json, checkpoint.pt, curves.png")
    return 0


def add_command(commands: Any) -> None:
    """Add ``combgrad pto`` to the ``combgrad`` command's subparsers."""
    defaults = PtoConfig()
    pto = commands.add_parser(
        "pto",
        help="predict-then-optimize on PyEPO's problems (shortest path, knapsack, TSP)",
        description="Train a linear model (or an MLP) to predict the costs of PyEPO's synthetic problems "
        "through a loss over the solver, and report the test normalized regret per epoch "
        "(PyEPO's metric, in float64). Methods: "
        + "; ".join(f"{name}: {METHODS[name].summary}" for name in method_names()) + ".",
    )
    pto.add_argument("--problem", default=defaults.problem, choices=PROBLEMS, help=f"default {defaults.problem}")
    pto.add_argument("--method", default=defaults.method, choices=method_names(), help=f"default {defaults.method}")
    pto.add_argument("--option", "-O", action="append", type=key_value, default=[], metavar="KEY=VALUE",
                     help="method option over its PyEPO default, repeatable: -O lam=10 -O samples=5")
    pto.add_argument("--n-train", type=int, default=defaults.n_train, help=f"training instances (default {defaults.n_train})")
    pto.add_argument("--n-test", type=int, default=defaults.n_test, help=f"test instances (default {defaults.n_test})")
    pto.add_argument("--num-feat", type=int, default=None, help="features (default 5; 10 for tsp)")
    pto.add_argument("--deg", type=int, default=defaults.deg, help=f"polynomial degree of the data (default {defaults.deg})")
    pto.add_argument("--noise", type=float, default=defaults.noise,
                     help=f"half-width of the multiplicative noise (default {defaults.noise})")
    pto.add_argument("--grid", type=int, default=defaults.grid, help=f"shortest path: grid side (default {defaults.grid})")
    pto.add_argument("--num-items", type=int, default=defaults.num_items,
                     help=f"knapsack: items (default {defaults.num_items})")
    pto.add_argument("--dim", type=int, default=defaults.dim, help=f"knapsack: dimensions (default {defaults.dim})")
    pto.add_argument("--capacity", type=float, default=None, help="knapsack: capacity per dimension (default 20)")
    pto.add_argument("--num-nodes", type=int, default=defaults.num_nodes,
                     help=f"tsp: cities (default {defaults.num_nodes})")
    pto.add_argument("--data-seed", type=int, default=defaults.data_seed, help="seed of the data")
    pto.add_argument("--model", default=defaults.model, choices=MODELS, help=f"cost predictor (default {defaults.model})")
    pto.add_argument("--hidden", type=int, default=defaults.hidden, help=f"MLP hidden width (default {defaults.hidden})")
    add_run_arguments(pto, out_default="runs/pto/<problem>-<method>-seed<seed>", epochs=defaults.epochs,
                      batch_size=defaults.batch_size, lr=defaults.lr, seed=defaults.seed, device=defaults.device)
    pto.set_defaults(run=run)


__all__ = ["add_command", "run"]

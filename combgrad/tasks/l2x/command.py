"""``combgrad l2x``: train an L2X feature selector on digits and print a summary."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from .._training.arguments import add_estimator_arguments, add_run_arguments


def add_command(commands: Any) -> None:
    """Add the ``l2x`` subcommand to ``commands`` (argparse's subparsers object).

    Example:
        >>> parser = argparse.ArgumentParser(); add_command(parser.add_subparsers(dest="command"))
        >>> args = parser.parse_args(["l2x", "--estimator", "imle", "-O", "lam=5", "--k", "4"])
        >>> args.estimator, args.option, args.k, args.epochs
        ('imle', [('lam', 5)], 4, None)
    """
    from .config import FULL, QUICK, L2xConfig

    defaults = L2xConfig()
    l2x = commands.add_parser(
        "l2x",
        help="L2X: select k pixels per digit through top-k and any estimator, classify from them",
        description="Learning to explain (Chen et al. 2018) on scikit-learn's bundled 8x8 digits (or MNIST's "
        "IDX files with --data): a selector network scores the pixels, the top-k solver through any "
        "estimator keeps k of them, and a classifier reads only those. Reports the test accuracy on the "
        "selected pixels and writes the test selections (OUT/selections.npy) for the agreement across runs.",
    )
    add_run_arguments(l2x, out_default="runs/l2x/<estimator>-k<k>-seed<seed>", epochs=int(QUICK["epochs"]),
                      batch_size=int(QUICK["batch_size"]), lr=float(QUICK["lr"]))
    # Unset sizes stay None, so that L2xConfig fills them from the default or --full preset.
    l2x.set_defaults(epochs=None, batch_size=None, lr=None)
    add_estimator_arguments(l2x, default=defaults.estimator)
    l2x.add_argument("--data", default=None,
                     help="folder with MNIST's IDX files (train-images-idx3-ubyte[.gz], ...); default: the bundled digits")
    l2x.add_argument("--k", type=int, default=defaults.k, help=f"pixels selected per image (default {defaults.k})")
    l2x.add_argument("--hidden", type=int, default=None, help=f"hidden units of both networks (default {QUICK['hidden']})")
    l2x.add_argument("--full", action="store_true",
                     help=f"the GPU preset ({FULL['hidden']} units, {FULL['epochs']} epochs of batch "
                     f"{FULL['batch_size']}) for the settings not given")
    l2x.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Train one run from parsed arguments and print its summary; returns the exit status."""
    from .config import L2xConfig
    from .trainer import train

    config = L2xConfig(
        out=args.out or "", data=args.data, k=args.k, hidden=args.hidden, estimator=args.estimator,
        options=dict(args.option), epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
        device=args.device, resume=args.resume, progress=not args.quiet, full=args.full,
    )
    if not args.out:
        config.out = f"runs/l2x/{config.estimator}-k{config.k}-seed{config.seed}"
    start = time.perf_counter()
    try:
        result = train(config, log=lambda line: print(line, file=sys.stderr))
    except ImportError as error:  # scikit-learn missing: a setup problem, said in one line
        raise OSError(str(error)) from error
    wall = time.perf_counter() - start
    data, test, timing = result["data"], result["final"]["test"], result["timing"]
    print(f"\nL2X, {result['method']}, k={config.k} of {data['pixels']} pixels, on {data['source']} "
          f"({data['counts']['train']} train, {data['counts']['test']} test), {len(result['history'])} epochs")
    print(f"{'split':<7}{'accuracy':>10}{'loss':>9}")
    print(f"{'test':<7}{test['accuracy']:>10.3f}{test['loss']:>9.3f}")
    print(f"time {wall:.0f} s (training {timing['train_seconds']:.0f} s, solver "
          f"{100 * timing['solver_share']:.1f}% of training)")
    print(f"outputs in {config.out}/: metrics.json, selections.npy, checkpoint.pt, selections.png, curves.png")
    return 0


__all__ = ["add_command", "run"]

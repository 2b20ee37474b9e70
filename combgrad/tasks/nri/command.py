"""``combgrad nri``: train neural relational inference with a spanning-tree latent graph and print a summary."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from .._training.arguments import add_estimator_arguments, add_run_arguments


def add_command(commands: Any) -> None:
    """Add the ``nri`` subcommand to ``commands`` (argparse's subparsers object).

    Example:
        >>> parser = argparse.ArgumentParser(); add_command(parser.add_subparsers(dest="command"))
        >>> args = parser.parse_args(["nri", "--estimator", "imle", "-O", "lam=5"])
        >>> args.estimator, args.option, args.particles
        ('imle', [('lam', 5)], 10)
    """
    from .config import COUNTS, FULL, NriConfig

    defaults = NriConfig()
    nri = commands.add_parser(
        "nri",
        help="neural relational inference: learn the spanning tree of springs between particles",
        description="Simulate particles joined by springs along a random spanning tree (the NRI springs "
        "simulator; cached under OUT/data), train an MLP encoder whose pair scores go through the "
        "maximum spanning tree solver and any estimator into an MLP decoder that predicts the "
        "trajectories, and report the test reconstruction MSE and the edge accuracy, precision and "
        "recall of the exact tree against the true one.",
    )
    add_run_arguments(nri, out_default="runs/nri/<estimator>-seed<seed>", epochs=int(defaults.epochs or 0),
                      batch_size=int(defaults.batch_size or 0), lr=float(defaults.lr or 0))
    # Unset run sizes stay None, so that NriConfig fills them from the default or --full preset.
    nri.set_defaults(epochs=None, batch_size=None, lr=None)
    add_estimator_arguments(nri, default=defaults.estimator)
    nri.add_argument("--n-train", type=int, default=None, help=f"training systems (default {COUNTS['train']})")
    nri.add_argument("--n-val", type=int, default=None, help=f"validation systems (default {COUNTS['val']})")
    nri.add_argument("--n-test", type=int, default=None, help=f"test systems (default {COUNTS['test']})")
    nri.add_argument("--data-seed", type=int, default=defaults.data_seed, help="seed of the simulated systems")
    nri.add_argument("--particles", type=int, default=defaults.particles, help="particles (tree vertices) per system")
    nri.add_argument("--steps", type=int, default=defaults.steps, help="observed time steps T")
    nri.add_argument("--strength", type=float, default=defaults.strength, help="spring constant (NRI's 0.1)")
    nri.add_argument("--encoder-hidden", type=int, default=None,
                     help=f"encoder width (default {defaults.encoder_hidden})")
    nri.add_argument("--decoder-hidden", type=int, default=None,
                     help=f"decoder width (default {defaults.decoder_hidden})")
    nri.add_argument("--prediction-steps", type=int, default=None,
                     help="decoder rollout length between true states (default steps - 1: one rollout)")
    nri.add_argument("--threads", type=int, default=defaults.threads,
                     help=f"torch threads on the CPU (default {defaults.threads}: small batches run slower on more)")
    nri.add_argument("--full", action="store_true",
                     help=f"the papers' sizes for a GPU ({FULL['train']} training systems, {FULL['encoder_hidden']} "
                     f"units, {FULL['epochs']} epochs of batch {FULL['batch_size']}, lr {FULL['lr']}) for the "
                     "settings not given")
    nri.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Train one run from parsed arguments, print its summary table; returns the exit status."""
    from .config import NriConfig
    from .trainer import train

    config = NriConfig(
        out=args.out or "", estimator=args.estimator, options=dict(args.option), n_train=args.n_train,
        n_val=args.n_val, n_test=args.n_test, data_seed=args.data_seed, particles=args.particles,
        steps=args.steps, strength=args.strength, encoder_hidden=args.encoder_hidden,
        decoder_hidden=args.decoder_hidden, prediction_steps=args.prediction_steps, seed=args.seed,
        device=args.device, threads=args.threads, resume=args.resume, progress=not args.quiet, full=args.full,
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
    )
    if not args.out:
        config.out = f"runs/nri/{config.estimator}-seed{config.seed}"
    start = time.perf_counter()
    result = train(config, log=lambda line: print(line, file=sys.stderr))
    wall = time.perf_counter() - start
    counts = result["data"]["counts"]
    print(
        f"\nNRI with {result['method']}: {config.particles} particles, T={config.steps}, {counts['train']} "
        f"training systems, {len(result['history'])} epochs, {result['config']['device']}"
    )
    print(f"{'split':<7}{'systems':>8}{'edge accuracy':>15}{'precision = recall':>20}{'reconstruction MSE':>20}")
    for split in ("val", "test"):
        metrics = result["final"][split]
        print(f"{split:<7}{counts[split]:>8}{100 * metrics['edge_accuracy']:>14.1f}%"
              f"{100 * metrics['precision']:>19.1f}%{metrics['reconstruction_mse']:>20.2e}")
    timing = result["timing"]
    print(f"time {wall:.0f} s (training {timing['train_seconds']:.0f} s, solver "
          f"{100 * timing['solver_share']:.1f}% of training); a random tree scores 68% edge accuracy, 20% precision")
    print(f"outputs in {config.out}/: metrics.json, checkpoint.pt, trees.png, curves.png")
    return 0


__all__ = ["add_command", "run"]

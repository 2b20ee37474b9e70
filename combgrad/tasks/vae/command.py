"""``combgrad vae``: train a discrete VAE with k-subset codes on digits and print a summary."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from .._training.arguments import add_estimator_arguments, add_run_arguments


def add_command(commands: Any) -> None:
    """Add the ``vae`` subcommand to ``commands`` (argparse's subparsers object).

    Example:
        >>> parser = argparse.ArgumentParser(); add_command(parser.add_subparsers(dest="command"))
        >>> args = parser.parse_args(["vae", "--estimator", "imle", "-O", "samples=10", "--groups", "4"])
        >>> args.estimator, args.option, args.groups, args.epochs
        ('imle', [('samples', 10)], 4, None)
    """
    from .config import FULL, QUICK, VaeConfig

    defaults = VaeConfig()
    vae = commands.add_parser(
        "vae",
        help="discrete VAE with k-subset codes (top-k through any estimator) on digits",
        description="The I-MLE/AIMLE papers' discrete VAE on scikit-learn's bundled 8x8 digits (or MNIST's IDX "
        "files with --data), pixels binarised at 0.5: an MLP encoder gives GROUPS groups of GROUP_SIZE scores, "
        "the top-k solver through any estimator makes each group a k-hot code, an MLP decoder reconstructs "
        "the image. Reports the test negative ELBO (Bernoulli reconstruction + each group's KL to the uniform "
        "prior, the reference's objective) per epoch, from the exact codes.",
    )
    add_run_arguments(vae, out_default="runs/vae/<estimator>-seed<seed>", epochs=int(QUICK["epochs"]),
                      batch_size=int(QUICK["batch_size"]), lr=float(QUICK["lr"]))
    # Unset sizes stay None, so that VaeConfig fills them from the default or --full preset.
    vae.set_defaults(epochs=None, batch_size=None, lr=None)
    add_estimator_arguments(vae, default=defaults.estimator)
    vae.add_argument("--data", default=None,
                     help="folder with MNIST's IDX files (train-images-idx3-ubyte[.gz], ...); default: the bundled digits")
    vae.add_argument("--groups", type=int, default=None, help=f"latent groups m (default {QUICK['groups']})")
    vae.add_argument("--group-size", type=int, default=None, help=f"scores per group n (default {QUICK['group_size']})")
    vae.add_argument("--k", type=int, default=None, help=f"active entries per group (default {QUICK['k']})")
    vae.add_argument("--hidden", type=int, default=None,
                     help=f"wider hidden layer; the other has half (default {QUICK['hidden']})")
    vae.add_argument("--full", action="store_true",
                     help=f"the AIMLE seed's MNIST run for a GPU ({FULL['groups']} groups of {FULL['group_size']}, "
                     f"k={FULL['k']}, {FULL['hidden']} units, {FULL['epochs']} epochs of batch {FULL['batch_size']}) "
                     "for the settings not given")
    vae.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Train one run from parsed arguments and print its summary; returns the exit status."""
    from .config import VaeConfig
    from .trainer import train

    config = VaeConfig(
        out=args.out or "", data=args.data, groups=args.groups, group_size=args.group_size, k=args.k,
        hidden=args.hidden, estimator=args.estimator, options=dict(args.option), epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=args.device, resume=args.resume,
        progress=not args.quiet, full=args.full,
    )
    if not args.out:
        config.out = f"runs/vae/{config.estimator}-seed{config.seed}"
    start = time.perf_counter()
    try:
        result = train(config, log=lambda line: print(line, file=sys.stderr))
    except ImportError as error:  # scikit-learn missing: a setup problem, said in one line
        raise OSError(str(error)) from error
    wall = time.perf_counter() - start
    data, test, timing = result["data"], result["final"]["test"], result["timing"]
    print(f"\ndiscrete VAE, {result['method']}, {config.groups} groups of {config.group_size} (k={config.k}), on "
          f"{data['source']} ({data['counts']['train']} train, {data['counts']['test']} test), "
          f"{len(result['history'])} epochs")
    print(f"{'split':<7}{'-ELBO':>9}{'recon.':>9}{'KL':>8}   (nats per image)")
    print(f"{'test':<7}{test['loss']:>9.3f}{test['reconstruction']:>9.3f}{test['kl']:>8.3f}")
    print(f"time {wall:.0f} s (training {timing['train_seconds']:.0f} s, solver "
          f"{100 * timing['solver_share']:.1f}% of training)")
    print(f"outputs in {config.out}/: metrics.json, checkpoint.pt, reconstructions.png, curves.png")
    return 0


__all__ = ["add_command", "run"]

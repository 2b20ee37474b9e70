"""Command-line flags that every task's subcommand shares.

A task's ``command.py`` builds its parser with :func:`add_run_arguments` (the run
flags: ``--out``, ``--epochs``, ``--batch-size``, ``--lr``, ``--seed``, ``--device``,
``--resume``, ``--quiet``) and, when it trains through an estimator,
:func:`add_estimator_arguments` (``--estimator`` and repeatable ``-O KEY=VALUE``), so
that the same flag means the same thing in every ``combgrad <task>``.
"""

from __future__ import annotations

import argparse
import ast
from typing import Any


def key_value(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` -> (key, value), the value read as a Python literal when it is one.

    Example:
        >>> key_value("lam=20"), key_value("noise=gumbel")
        (('lam', 20), ('noise', 'gumbel'))
    """
    key, separator, value = text.partition("=")
    if not separator or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. lam=20), got {text!r}")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value  # a bare word such as noise=gumbel


def add_run_arguments(
    parser: argparse.ArgumentParser,
    *,
    out_default: str,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int = 0,
    device: str = "auto",
) -> None:
    """Add the run flags, with this task's defaults shown in ``--help``.

    Args:
        parser: The task's subcommand parser.
        out_default: How the default output folder is described (e.g.
            ``"runs/pto/<problem>-<method>-seed<seed>"``); the task fills it in.
        epochs: Default of ``--epochs``.
        batch_size: Default of ``--batch-size``.
        lr: Default of ``--lr`` (Adam's learning rate).
        seed: Default of ``--seed``.
        device: Default of ``--device``.
    """
    parser.add_argument("--out", default=None, help=f"output folder (default {out_default})")
    parser.add_argument("--epochs", type=int, default=epochs, help=f"default {epochs}")
    parser.add_argument("--batch-size", type=int, default=batch_size, help=f"default {batch_size}")
    parser.add_argument("--lr", type=float, default=lr, help=f"Adam learning rate (default {lr})")
    parser.add_argument("--seed", type=int, default=seed, help=f"seed of the model and the batch order (default {seed})")
    parser.add_argument("--device", default=device, help=f"auto (CUDA when present), cpu, cuda, cuda:N (default {device})")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    parser.add_argument("--quiet", action="store_true", help="no progress bar (one line per epoch instead)")


def add_estimator_arguments(
    parser: argparse.ArgumentParser, *, default: str, choices_help: str = "", option_help: str = "estimator option"
) -> None:
    """Add ``--estimator NAME`` and the repeatable ``--option/-O KEY=VALUE`` (into ``args.option``, a list of pairs).

    Args:
        parser: The task's subcommand parser.
        default: Default estimator name.
        choices_help: What else ``--estimator`` accepts besides the registered
            estimators (e.g. a task's baselines), for ``--help``.
        option_help: What a ``-O`` option configures, for ``--help``.
    """
    parser.add_argument(
        "--estimator",
        default=default,
        help=f"gradient estimator: any registered one (combgrad list estimators){choices_help} (default {default})",
    )
    parser.add_argument(
        "--option", "-O", action="append", type=key_value, default=[], metavar="KEY=VALUE",
        help=f"{option_help}, repeatable: -O lam=20 -O noise=gumbel",
    )

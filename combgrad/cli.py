"""The ``combgrad`` command: ``combgrad list``, ``combgrad demo`` and the task subcommands.

Each subcommand is two functions: ``_add_<name>(commands)`` declares its
arguments and ``_<name>(args) -> exit status`` runs it; :data:`SUBCOMMANDS` lists
the former, so adding a subcommand is adding one pair and one entry. A mistake
of the user's (a bad setting, a missing or unreadable file) ends as one line
``combgrad <command>: error: <message>`` on stderr and exit status 2, before any
work where it can be detected that early.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from .tasks._training.arguments import add_estimator_arguments, add_run_arguments
from .tasks._training.devices import free_cores_for_torch

USER_ERRORS = (ValueError, KeyError, OSError)
"""Errors that report a user's mistake (never a bug's traceback worth showing):
bad settings (ValueError, and OptionError, which is one), unknown names (KeyError),
missing, unreadable or existing files (OSError)."""


def _demo(args: argparse.Namespace) -> int:
    """Solve a batch of random instances with each built-in solver and print a table."""
    import torch

    import combgrad as cg

    generator = torch.Generator().manual_seed(args.seed)
    batch = args.batch
    symmetric = torch.rand(batch, 30, 30, generator=generator)
    item_weights = torch.randint(1, 101, (50,), generator=generator)
    capacity = int(item_weights.sum()) // 2
    # PyEPO's 5x5 shortest-path grid: arcs to the right and downwards, node r * 5 + c.
    grid_edges = [(r * 5 + c, r * 5 + c + 1) for r in range(5) for c in range(4)]
    grid_edges += [(r * 5 + c, (r + 1) * 5 + c) for r in range(4) for c in range(5)]
    problems: dict[str, tuple[dict[str, Any], torch.Tensor]] = {
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
        "lp": (  # the knapsack's LP relaxation
            {"A": item_weights[None].double(), "b": [capacity], "upper": 1.0, "sense": "max"},
            torch.rand(min(batch, 64), 50, generator=generator),
        ),
        "graph_shortest_path": ({"edges": grid_edges}, torch.rand(batch, len(grid_edges), generator=generator)),
        "ranks": ({}, torch.randn(batch, 20, generator=generator)),
        "tsp": ({"num_nodes": 10}, torch.rand(min(batch, 16), 45, generator=generator)),
    }
    print(f"{'solver':<21}{'sense':<7}{'input shape':<18}{'ms / batch':>12}")
    for name, (options, theta) in problems.items():
        if name not in cg.solvers.names():
            continue
        solver = cg.solvers.get(name, **options)
        solver(theta)  # warm-up: numba compiles (or loads its cache) on the first call
        start = time.perf_counter()
        solver(theta)
        elapsed_ms = 1e3 * (time.perf_counter() - start)
        print(f"{name:<21}{solver.sense:<7}{str(tuple(theta.shape)):<18}{elapsed_ms:>12.2f}")
    return 0


def _warcraft(args: argparse.Namespace) -> int:
    """Train and evaluate on Warcraft maps, then print a summary table."""
    from .tasks._training.distributed import world_from_environment
    from .tasks.warcraft.config import TrainConfig
    from .tasks.warcraft.trainer import train

    config = TrainConfig(
        out=args.out or "",
        data=args.data,
        size=args.size,
        n_train=args.n_train,
        n_val=args.n_val,
        n_test=args.n_test,
        data_seed=args.data_seed,
        model=args.model,
        channels=args.channels,
        estimator=args.estimator,
        options=dict(args.option),
        normalise=not args.no_normalise,
        loss=args.loss,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        schedule=args.schedule,
        seed=args.seed,
        device=args.device,
        resume=args.resume,
        progress=not args.quiet,
        log_every=args.log_every,
    )
    if not args.out:
        source = "synthetic" if args.data is None else "data"
        config.out = f"runs/warcraft/{source}-{args.size}x{args.size}-{config.method()}-seed{args.seed}"
    start = time.perf_counter()
    result = train(config, log=lambda line: print(line, file=sys.stderr))
    wall = time.perf_counter() - start
    if not world_from_environment(owner="warcraft").main:
        return 0  # under torchrun, rank 0 alone reports
    counts = result["data"]["counts"]
    source = "synthetic" if args.data is None else args.data
    print(
        f"\n{result['method']} on {source} {args.size}x{args.size} maps ({counts['train']} train), "
        f"{len(result['history'])} epochs, {result['config']['device']}"
    )
    print(f"{'split':<7}{'maps':>6}{'cost-optimal':>14}{'exact match':>13}{'regret':>9}")
    for split in ("val", "test"):
        metrics = result["final"][split]
        print(
            f"{split:<7}{counts[split]:>6}{100 * metrics['cost_optimal']:>13.1f}%"
            f"{100 * metrics['exact']:>12.1f}%{metrics['regret']:>9.3f}"
        )
    timing = result["timing"]
    ties = (result["data"].get("non_unique_optimum") or {}).get("test")
    print(
        f"time {wall:.0f} s (data {timing['data_seconds']:.0f} s, training {timing['train_seconds']:.0f} s, "
        f"solver {100 * timing['solver_share']:.1f}% of training)"
        + (f"; the optimum is not unique on {100 * ties:.0f}% of test maps" if ties is not None else "")
    )
    print(f"outputs in {config.out}/: metrics.json, checkpoint.pt, paths.png, curves.png")
    return 0


def _warcraft_data(args: argparse.Namespace) -> int:
    """Write a synthetic Warcraft data set in the original format."""
    from .tasks.warcraft.data import generate_dataset, read_meta

    start = time.perf_counter()
    folder = generate_dataset(
        args.out,
        args.size,
        n_train=args.n,
        n_val=args.n_val,
        n_test=args.n_test,
        seed=args.seed,
        parts=args.parts,
        overwrite=args.overwrite,
    )
    meta = read_meta(args.out, args.size) or {}
    counts = meta.get("counts", {})
    ties = meta.get("non_unique_optimum", {})
    print(
        f"wrote {folder} in {time.perf_counter() - start:.1f} s: "
        + ", ".join(f"{split} {counts.get(split)} maps" for split in ("train", "val", "test"))
    )
    print("optimum not unique on " + ", ".join(f"{100 * ties.get(s, 0):.0f}% ({s})" for s in ("train", "val", "test")))
    return 0


def _list(args: argparse.Namespace) -> int:
    """Print every registered solver and estimator with its options, defaults and meanings."""
    import combgrad as cg

    kinds = {"solvers": cg.solvers, "estimators": cg.gradients}
    for kind, module in kinds.items():
        if args.kind not in ("all", kind):
            continue
        print(f"{kind}:")
        for name in module.names():
            if args.name is not None and name != args.name:
                continue
            options = module.options(name)
            print(f"  {name}" + ("" if options else "  (no options)"))
            width = max((len(option.name) + len(repr(option.default)) for option in options.values()), default=0)
            for option in options.values():
                setting = f"{option.name}={option.default!r}"
                print(f"    {setting:<{width + 1}}  {option.description}")
    return 0


def _add_list(commands: Any) -> None:
    listing = commands.add_parser("list", help="list the solvers and estimators with their options")
    listing.add_argument("kind", nargs="?", default="all", choices=("all", "solvers", "estimators"))
    listing.add_argument("--name", default=None, help="show only the solver or estimator of this name")
    listing.set_defaults(run=_list)


def _add_demo(commands: Any) -> None:
    demo = commands.add_parser("demo", help="solve random instances with each built-in solver")
    demo.add_argument("--batch", type=int, default=256, help="instances per solver (default 256)")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(run=_demo)


def _add_warcraft(commands: Any) -> None:
    from .tasks._training.schedules import SCHEDULES
    from .tasks.warcraft.config import LOSSES, SYNTHETIC_COUNTS, TrainConfig
    from .tasks.warcraft.data import SIZES
    from .tasks.warcraft.model import MODELS

    defaults = TrainConfig()
    warcraft = commands.add_parser(
        "warcraft",
        help="train a CNN + shortest-path solver on Warcraft maps (synthetic unless --data)",
        description="Train a cost CNN through the shortest-path solver on Warcraft maps and report "
        "cost-optimal and exact-match rates. Without --data a synthetic set is generated "
        "(cached under OUT/data). Under torchrun (torchrun --nproc-per-node N -m combgrad warcraft ...) "
        "it trains with DistributedDataParallel, --batch-size being the global batch.",
    )
    warcraft.add_argument("--data", help="root of a data set in the original format (holding KxK/)")
    warcraft.add_argument("--size", type=int, default=defaults.size, choices=SIZES, help="tiles per side")
    warcraft.add_argument("--n-train", "--n", dest="n_train", type=int, default=None,
                          help=f"training maps (synthetic default {SYNTHETIC_COUNTS['train']}; "
                          "with --data, the first N, default all)")
    warcraft.add_argument("--n-val", type=int, default=None,
                          help=f"validation maps (synthetic default {SYNTHETIC_COUNTS['val']}; with --data, all)")
    warcraft.add_argument("--n-test", type=int, default=None,
                          help=f"test maps (synthetic default {SYNTHETIC_COUNTS['test']}; with --data, all)")
    warcraft.add_argument("--data-seed", type=int, default=defaults.data_seed, help="seed of the synthetic maps")
    warcraft.add_argument("--loss", default=defaults.loss, choices=LOSSES,
                          help="hamming (through the estimator) or fy (Fenchel-Young, perturbed solver)")
    warcraft.add_argument("--no-normalise", action="store_true",
                          help="feed the raw predicted costs to the solver (default: each map's costs "
                          "divided by their mean)")
    warcraft.add_argument("--model", default=defaults.model, choices=MODELS,
                          help="cost network: small (CPU) or resnet (the papers' ResNet18 stem)")
    warcraft.add_argument("--channels", type=int, default=defaults.channels, help="network width")
    warcraft.add_argument("--schedule", default=defaults.schedule, choices=SCHEDULES,
                          help=f"learning-rate schedule (default {defaults.schedule}); papers: lr/10 at 60%% "
                          "and 80%% of the epochs (30 and 40 of 50)")
    warcraft.add_argument("--log-every", type=int, default=defaults.log_every, metavar="N",
                          help=f"steps between two readings of the running loss (default {defaults.log_every}; "
                          "each waits for the GPU)")
    add_run_arguments(
        warcraft, out_default="runs/warcraft/<data>-<size>-<method>-seed<seed>", epochs=defaults.epochs,
        batch_size=defaults.batch_size, lr=defaults.lr, seed=defaults.seed, device=defaults.device,
    )
    add_estimator_arguments(
        warcraft, default=defaults.estimator, choices_help=" or 'direct' (the baseline without solver)",
        option_help="estimator (or, with --loss fy, Fenchel-Young) option",
    )
    warcraft.set_defaults(run=_warcraft)


def _add_warcraft_data(commands: Any) -> None:
    data = commands.add_parser(
        "warcraft-data",
        help="write a synthetic Warcraft data set in the original format",
        description="Write OUT/KxK/{train,val,test}_{maps,vertex_weights,shortest_paths}.npy "
        "(atomically; the same seed gives the same files).",
    )
    data.add_argument("--out", required=True, help="data root; files go to OUT/KxK/")
    data.add_argument("--size", type=int, default=12, help="tiles per side (12, 18, 24, 30 in the original)")
    data.add_argument("--n", type=int, default=1000, help="training maps (default 1000)")
    data.add_argument("--n-val", type=int, default=None, help="validation maps (default max(100, n/10))")
    data.add_argument("--n-test", type=int, default=None, help="test maps (default max(100, n/10))")
    data.add_argument("--seed", type=int, default=0)
    data.add_argument("--parts", type=int, default=1, help="split the train files into _part0, _part1, ...")
    data.add_argument("--overwrite", action="store_true", help="replace an existing OUT/KxK/")
    data.set_defaults(run=_warcraft_data)


SUBCOMMANDS: tuple[Callable[[Any], None], ...] = (_add_list, _add_demo, _add_warcraft, _add_warcraft_data)
"""The functions that add each subcommand's parser, in the order ``--help`` lists them."""

TASK_COMMANDS = ("pto", "nri", "vae", "l2x")
"""Tasks whose subcommand lives with the task: ``combgrad/tasks/<name>/command.py``
defines ``add_command(commands)``, which adds the parser and sets its ``run``."""


def _task_command_adders() -> list[Callable[[Any], None]]:
    return [importlib.import_module(f"combgrad.tasks.{name}.command").add_command for name in TASK_COMMANDS]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``combgrad`` command."""
    parser = argparse.ArgumentParser(
        prog="combgrad", description="differentiable combinatorial solvers: demo and benchmark tasks"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for add in (*SUBCOMMANDS, *_task_command_adders()):
        add(commands)
    return parser


def _message(error: BaseException) -> str:
    """One line for a user's error (a KeyError's message without the quotes repr adds)."""
    if isinstance(error, KeyError) and error.args:
        text = str(error.args[0])
    else:
        text = str(error) or type(error).__name__
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``combgrad`` console script; returns the exit status.

    Example:
        >>> main(["warcraft", "--lr", "inf", "--out", "unused"])
        2
    """
    args = build_parser().parse_args(argv)
    threads = _torch_threads_for_this_run()
    try:
        return int(args.run(args))
    except USER_ERRORS as error:
        print(f"combgrad {args.command}: error: {_message(error)}", file=sys.stderr)
        return 2
    finally:
        if threads is not None:
            torch.set_num_threads(threads)  # main() called in-process leaves torch as it found it


def _torch_threads_for_this_run() -> int | None:
    """Fewer torch threads on a busy machine (see ``free_cores_for_torch``); returns the setting to restore.

    Silent: a speed setting. Float results can differ in the last bits with the
    thread count (torch splits its reductions by thread), as they do between machines.
    """
    before = torch.get_num_threads()
    threads = free_cores_for_torch()
    if threads is None or threads >= before:
        return None
    torch.set_num_threads(threads)
    return before


if __name__ == "__main__":
    sys.exit(main())

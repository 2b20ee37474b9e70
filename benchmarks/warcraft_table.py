"""The Warcraft table: each gradient estimator and the direct baseline on the same synthetic maps.

For every map size given, one synthetic data set is generated (or reused from the
cache under ``--out``), then each method trains from the same seed with the same
network, epochs, batch size and learning rate, and its final-epoch test
cost-optimal and exact-match rates go into a markdown table (written after every
run, so an interrupted table keeps its finished rows). No model selection: the
figures are those of the last epoch.

Methods: ``imle``, ``aimle``, ``blackbox``, ``ste`` (each through the Hamming
loss), ``perturbation+fy`` (the Fenchel–Young loss of the perturbed solver) and
``direct`` (the CNN predicts the path mask with a per-cell BCE, no solver). All
solver-based methods see per-map normalised costs (the trainer's default) except
``ste-raw``, straight-through on the raw costs, which does better than ``ste`` on
normalised ones.

Usage:
    python benchmarks/warcraft_table.py                        # the README table (about 40 min on 2 cores)
    python benchmarks/warcraft_table.py --sizes 12 --n-train 500 --epochs 1   # a quick look
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

from combgrad.tasks.warcraft import data as warcraft_data
from combgrad.tasks.warcraft.config import TrainConfig
from combgrad.tasks.warcraft.trainer import train

METHODS = {
    "imle": {"estimator": "imle"},
    "aimle": {"estimator": "aimle"},
    "blackbox": {"estimator": "blackbox"},
    "perturbation+fy": {"estimator": "perturbation", "loss": "fy"},
    "ste": {"estimator": "ste"},
    "ste-raw": {"estimator": "ste", "normalise": False},
    "direct": {"estimator": "direct"},
}


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[12, 18], help="map sizes (default 12 18)")
    parser.add_argument("--n-train", type=int, nargs="+", default=[10000],
                        help="training maps per size (one value for all, or one per size; default 10000)")
    parser.add_argument("--n-test", type=int, default=1000, help="test (and val: a fifth of it) maps per size")
    parser.add_argument("--epochs", type=int, nargs="+", default=[10, 8],
                        help="epochs per size, in the order of --sizes (default 10 8)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--model", default="small", choices=["small", "resnet"])
    parser.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    parser.add_argument("--lr", type=float, default=TrainConfig.lr)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default="runs/warcraft/table", help="runs, data cache and table go here")
    parser.add_argument("--markdown", help="table file (default OUT/table.md)")
    args = parser.parse_args(argv)
    for name in ("n_train", "epochs"):
        values = getattr(args, name)
        if len(values) == 1:
            setattr(args, name, values * len(args.sizes))
        elif len(values) != len(args.sizes):
            parser.error(f"--{name.replace('_', '-')} needs one value or one per size, got {values}")
    return args


def _load() -> str:
    try:
        return " / ".join(f"{value:.1f}" for value in os.getloadavg())
    except OSError:
        return "n/a"


def _table(rows: list[dict], header: list[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(row[column]) for column in header) + " |" for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    markdown = Path(args.markdown) if args.markdown else out / "table.md"
    command = ("python benchmarks/warcraft_table.py " + shlex.join(argv if argv is not None else sys.argv[1:])).strip()
    started = time.perf_counter()
    load_before = _load()
    rows: list[dict] = []
    notes: list[str] = []
    header = [
        "size", "train maps", "epochs", "method", "test cost-optimal", "test exact match", "train s", "solver share",
    ]
    for size, n_train, epochs in zip(args.sizes, args.n_train, args.epochs):
        data_root = out / "data"
        n_val = max(100, args.n_test // 5)
        meta = warcraft_data.read_meta(data_root, size)
        counts = {"train": n_train, "val": n_val, "test": args.n_test}
        if meta is None or meta.get("counts") != counts or meta.get("seed") != args.seed:
            start = time.perf_counter()
            warcraft_data.generate_dataset(
                data_root, size, n_train=n_train, n_val=n_val, n_test=args.n_test, seed=args.seed, overwrite=True
            )
            print(f"generated {size}x{size} data in {time.perf_counter() - start:.0f} s", flush=True)
            meta = warcraft_data.read_meta(data_root, size)
        ties = meta["non_unique_optimum"]["test"]
        notes.append(f"{size}x{size}: the optimum is not unique on {100 * ties:.1f}% of the test maps")
        for method in args.methods:
            config = TrainConfig(
                out=str(out / f"{size}x{size}-{method}"),
                data=str(data_root),
                size=size,
                n_train=None,
                n_val=None,
                n_test=None,
                model=args.model,
                epochs=epochs,
                batch_size=args.batch_size,
                lr=args.lr,
                seed=args.seed,
                device=args.device,
                progress=False,
                **METHODS[method],
            )
            start = time.perf_counter()
            result = train(config, log=lambda line: print(f"  {line}", flush=True))
            test = result["final"]["test"]
            rows.append(
                {
                    "size": f"{size}x{size}",
                    "train maps": n_train,
                    "epochs": epochs,
                    "method": method,
                    "test cost-optimal": f"{100 * test['cost_optimal']:.1f}%",
                    "test exact match": f"{100 * test['exact']:.1f}%",
                    "train s": f"{result['timing']['train_seconds']:.0f}",
                    "solver share": "-" if method == "direct" else f"{100 * result['timing']['solver_share']:.0f}%",
                }
            )
            print(f"{size}x{size} {method}: {rows[-1]} ({time.perf_counter() - start:.0f} s)", flush=True)
            text = "\n".join(
                [
                    _table(rows, header),
                    "",
                    f"Command: `{command}`. Network `{args.model}`, batch {args.batch_size}, Adam lr {args.lr}, "
                    f"cosine schedule, seed {args.seed}, {args.n_test} test maps per size; figures of the last "
                    "epoch (no model selection).",
                    "; ".join(notes) + ".",
                    f"Wall time {time.perf_counter() - started:.0f} s on {os.cpu_count()} CPU(s); "
                    f"load average (1/5/15 min) {load_before} at the start, {_load()} now.",
                    "",
                ]
            )
            markdown.write_text(text)
    print(markdown.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())

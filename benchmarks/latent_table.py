"""The discrete-latent tables: NRI, the discrete VAE and L2X, every estimator on the same seeds.

For each task (``--task nri|vae|l2x|all``) and each estimator (default: imle, aimle,
perturbation, ste, score_function, plus the relaxed baseline where one applies:
``relaxed_topk`` for the top-k tasks vae and l2x), one default run of the task's
trainer (``combgrad.tasks.<task>.train``, the ``combgrad <task>`` command's) per
seed; the task's defaults are used unchanged except ``--epochs`` when given. An
estimator that is not registered is skipped, and so is one the task refuses
(NRI refuses estimators that cannot drive a spanning tree), each with a note.

Reported, mean ± sd over the seeds (sample sd), from the last epoch (no model
selection):

* nri: test edge accuracy, precision, recall and reconstruction MSE;
* vae: test negative ELBO (nats per image; the reference's objective: Bernoulli
  reconstruction + each group's KL to the uniform prior), and its reconstruction
  part, from the exact k-hot codes;
* l2x: test accuracy of the classifier on the k selected pixels, and the
  agreement of the selections across seeds: the mean Jaccard overlap
  ``|A ∩ B| / |A ∪ B|`` of the pixel sets that two seeds' selectors choose in the
  same test image, averaged over the test images, then mean ± sd over the pairs
  of seeds (two independent uniform choices of 8 of 64 pixels give 0.067).

Runs use one torch and numba thread (``--threads``): on a shared 2-core machine
torch's two default threads spin against the other jobs, and two L2X epochs took
13 s with one thread and 78 s with two (load average 5; the same results).

Each run's folder (``--runs``/<task>/<estimator>-seed<seed>) keeps its outputs; a
run whose ``metrics.json`` is already there with the same settings is read back
instead of trained again (delete the folder to re-run it). The tables are
printed as markdown and written, with every run's figures, to ``--json`` (and
``--markdown``) after each run.

Usage:
    python benchmarks/latent_table.py --task vae l2x            # the README tables (3 seeds)
    python benchmarks/latent_table.py --task l2x --seeds 0 1 2 3 4 --estimators aimle imle
    python benchmarks/latent_table.py --task all --quick         # a smoke run: 1 epoch, seeds 0 1
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import json
import math
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import combgrad as cg
from combgrad.tasks._training import atomic_write, atomic_write_json

ESTIMATORS = ("imle", "aimle", "perturbation", "ste", "score_function")
RELAXED = {"nri": (), "vae": ("relaxed_topk",), "l2x": ("relaxed_topk",)}
"""The relaxed baselines that apply to each task's solver (top-k for vae and l2x; none of
the registered ones drives a spanning tree)."""


@dataclass(frozen=True)
class Metric:
    """A column: where the value is in ``final["test"]``, how to print it, which way is better."""

    key: str
    label: str
    digits: int
    higher_is_better: bool


@dataclass(frozen=True)
class Task:
    """How to build a task's configuration and which metrics its table shows."""

    module: str
    config_class: str
    metrics: tuple[Metric, ...]
    description: str


TASKS = {
    "nri": Task(
        "combgrad.tasks.nri", "NriConfig",
        (Metric("edge_accuracy", "edge accuracy", 3, True), Metric("precision", "precision", 3, True),
         Metric("recall", "recall", 3, True), Metric("reconstruction_mse", "reconstruction MSE", 5, False)),
        "NRI on simulated springs (10 particles, T=10), default run",
    ),
    "vae": Task(
        "combgrad.tasks.vae", "VaeConfig",
        (Metric("loss", "test -ELBO (nats)", 2, False), Metric("reconstruction", "reconstruction (nats)", 2, False)),
        "discrete VAE on the bundled 8x8 digits (10 groups of 10, k=5), default run",
    ),
    "l2x": Task(
        "combgrad.tasks.l2x", "L2xConfig",
        (Metric("accuracy", "test accuracy", 3, True),),
        "L2X on the bundled 8x8 digits (k=8 of 64 pixels), default run",
    ),
}


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", nargs="+", default=["all"], choices=[*TASKS, "all"])
    parser.add_argument("--estimators", nargs="+", default=None,
                        help=f"default: {' '.join(ESTIMATORS)} and each task's relaxed baseline")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None, help="override every task's default epochs")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1 epoch, seeds 0 1")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch and numba threads (default 1: on a loaded 2-core machine two threads spin against "
                        "each other; two L2X epochs took 13 s with one, 78 s with two, at load average 5)")
    parser.add_argument("--runs", default="runs/latent_table", help="run folders go here")
    parser.add_argument("--json", default=None, help="results file (default RUNS/latent_table.json)")
    parser.add_argument("--markdown", default=None, help="tables file (default RUNS/latent_table.md)")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs = 1 if args.epochs is None else args.epochs
        args.seeds = args.seeds[:2] if len(args.seeds) > 2 else args.seeds
    if "all" in args.task:
        args.task = list(TASKS)
    return args


def _load() -> str:
    try:
        return " / ".join(f"{value:.1f}" for value in os.getloadavg())
    except OSError:
        return "n/a"


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value; NaN for none).

    Example:
        >>> mean_sd([1.0, 2.0, 3.0])
        (2.0, 1.0)
    """
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _cell(values: list[float], digits: int) -> str:
    mean, sd = mean_sd(values)
    return "-" if math.isnan(mean) else f"{mean:.{digits}f} ± {sd:.{digits}f}"


def selection_agreement(folders: list[Path]) -> list[float]:
    """Mean Jaccard overlap of the test selections of every pair of runs (L2X's ``selections.npy``).

    Example:
        >>> selection_agreement([])
        []
    """
    from combgrad.tasks.l2x.evaluation import mean_jaccard

    selections = [np.load(folder / "selections.npy") for folder in folders if (folder / "selections.npy").exists()]
    return [mean_jaccard(a, b) for a, b in itertools.combinations(selections, 2)]


def _run(task: str, estimator: str, seed: int, args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    """One run's metrics.json content, trained now or read back from its folder."""
    spec = TASKS[task]
    module = importlib.import_module(spec.module)  # lazily: a task being written elsewhere may be absent
    folder = Path(args.runs) / task / f"{estimator}-seed{seed}"
    settings: dict[str, Any] = {"out": str(folder), "estimator": estimator, "seed": seed, "device": args.device,
                                "progress": False, "plots": False}
    if args.epochs is not None:
        settings["epochs"] = args.epochs
    config = getattr(module, spec.config_class)(**settings)
    stored = folder / "metrics.json"
    if stored.exists():
        previous = json.loads(stored.read_text())
        same = all(previous["config"].get(key) == value for key, value in config.identity().items() if key != "options")
        if same and len(previous.get("history", [])) == previous["config"].get("epochs"):
            log(f"{task} {estimator} seed {seed}: read back {stored}")
            return previous
    return module.train(config, log=lambda line: log(f"  {line}"))


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
        cg.set_num_threads(args.threads)
    runs = Path(args.runs)
    runs.mkdir(parents=True, exist_ok=True)
    json_path = Path(args.json) if args.json else runs / "latent_table.json"
    markdown_path = Path(args.markdown) if args.markdown else runs / "latent_table.md"
    command = ("python benchmarks/latent_table.py " + shlex.join(argv if argv is not None else sys.argv[1:])).strip()
    registered = set(cg.gradients.names())
    started, load_before = time.perf_counter(), _load()
    results: dict[str, Any] = {"command": command, "seeds": args.seeds, "tasks": {}}
    tables: list[str] = []

    def log(line: str) -> None:
        print(line, flush=True)

    for task in args.task:
        spec = TASKS[task]
        estimators = list(args.estimators or [*ESTIMATORS, *RELAXED[task]])
        entry: dict[str, Any] = {"description": spec.description, "estimators": {}, "notes": []}
        results["tasks"][task] = entry
        for estimator in estimators:
            if estimator not in registered:
                entry["notes"].append(f"{estimator}: skipped, not registered")
                log(f"{task} {estimator}: skipped, not registered")
                continue
            records = []
            for seed in args.seeds:
                start = time.perf_counter()
                try:
                    result = _run(task, estimator, seed, args, log)
                except ModuleNotFoundError as error:
                    entry["notes"].append(f"task not available ({error})")
                    log(f"{task}: skipped ({error})")
                    break
                except ValueError as error:  # the task refuses this estimator (or its options)
                    entry["notes"].append(f"{estimator}: skipped, {error}")
                    log(f"{task} {estimator}: skipped, {error}")
                    break
                records.append({"seed": seed, "test": result["final"]["test"],
                                "train_seconds": result["timing"]["train_seconds"],
                                "solver_share": result["timing"]["solver_share"],
                                "wall_seconds": result["timing"].get("wall_seconds_this_run")})
                log(f"{task} {estimator} seed {seed}: {result['final']['test']} ({time.perf_counter() - start:.0f} s)")
            if not records:
                continue
            row: dict[str, Any] = {"runs": records}
            for metric in spec.metrics:
                row[metric.key] = mean_sd([float(record["test"][metric.key]) for record in records])
            if task == "l2x":
                folders = [runs / task / f"{estimator}-seed{record['seed']}" for record in records]
                row["agreement_pairs"] = selection_agreement(folders)
                row["agreement"] = mean_sd(row["agreement_pairs"])
            row["train_seconds"] = mean_sd([float(record["train_seconds"]) for record in records])
            entry["estimators"][estimator] = row
            results["wall_seconds"] = time.perf_counter() - started
            results["load_average"] = {"start": load_before, "now": _load()}
            atomic_write_json(results, json_path)
        results["wall_seconds"] = time.perf_counter() - started
        results["load_average"] = {"start": load_before, "now": _load()}
        atomic_write_json(results, json_path)  # with the notes of estimators skipped after the last run
        tables.append(_markdown(task, entry, args, command))
        text = "\n\n".join(tables) + (
            f"\n\nWall time {time.perf_counter() - started:.0f} s on {os.cpu_count()} CPU(s); load average "
            f"(1/5/15 min) {load_before} at the start, {_load()} at the end.\n"
        )
        atomic_write(markdown_path, lambda handle: handle.write(text.encode()))
    print("\n" + markdown_path.read_text())
    return 0


def _markdown(task: str, entry: dict[str, Any], args: argparse.Namespace, command: str) -> str:
    spec = TASKS[task]
    header = ["estimator", *[metric.label for metric in spec.metrics]]
    if task == "l2x":
        header.append("agreement across seeds (Jaccard)")
    header.append("train s")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for estimator, row in entry["estimators"].items():
        records = row["runs"]
        cells = [estimator]
        for metric in spec.metrics:
            cells.append(_cell([float(record["test"][metric.key]) for record in records], metric.digits))
        if task == "l2x":
            cells.append(_cell(row["agreement_pairs"], 3))
        cells.append(_cell([float(record["train_seconds"]) for record in records], 0))
        lines.append("| " + " | ".join(cells) + " |")
    seeds = " ".join(str(seed) for seed in args.seeds)
    epochs = "the task's default epochs" if args.epochs is None else f"{args.epochs} epoch{'' if args.epochs == 1 else 's'}"
    notes = f" Notes: {'; '.join(entry['notes'])}." if entry["notes"] else ""
    return (
        f"**{task}**: {spec.description}; mean ± sd over seeds {seeds}, {epochs}, last epoch.{notes}\n"
        f"Command: `{command}`.\n\n" + "\n".join(lines)
    )


if __name__ == "__main__":
    sys.exit(main())

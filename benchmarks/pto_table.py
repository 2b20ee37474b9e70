"""PyEPO's comparison, head to head: combgrad and PyEPO (with Gurobi) on the same data, seeds,
initial weights and batch order.

For each problem (PyEPO's 5x5 edge-weighted shortest path and its 32-item knapsack
with capacity 20; the 20-city TSP with ``--problems ... tsp``) and each method both
libraries have, one run per seed trains PyEPO's linear model with Adam (lr 1e-2,
batch 32) on 1000 instances:

* combgrad: ``combgrad.tasks.pto.train`` (the ``combgrad pto`` command's trainer)
  with its native solvers (``graph_shortest_path``, the numba ``knapsack`` DP,
  CP-SAT ``tsp``) and float64 labels;
* PyEPO: ``pyepo.func`` modules with PyEPO's gurobipy ``optModel``s and its
  ``optDataset`` labels (float32, as a PyEPO user has them), ``processes=1``.

Both start from the same weights (the ``state_dict`` of the model that combgrad's
trainer builds from the seed) and see the same batches in the same order
(``combgrad.tasks.pto.trainer.epoch_order``); the data of seed ``s`` are generated
with ``data_seed = s``. After the last epoch each model's test normalized regret is
measured by the same float64 metric (``combgrad.tasks.pto.regret``, checked against
``pyepo.metric.regret`` in tests/tasks/test_pto_metrics.py). Reported: mean +- sd over
the seeds, the median seconds per training epoch (evaluation excluded), the ratio of
the two, and whether the regrets agree within seed noise (the difference of the
means within twice its standard error, ``2 sqrt(sd_a^2 / n + sd_b^2 / n)``).

Method settings are PyEPO's tutorials' (see :mod:`combgrad.tasks.pto.methods`):
dbb lambda 20 with the L1 objective loss; pfy sigma 1, 10 samples; I-MLE sigma 1,
10 samples, lambda 10, sum-of-gamma kappa 5; AI-MLE sigma 1, 10 samples; PG sigma
(step) 0.1; NCE, CMAP and listwise LTR with solve_ratio 0.05 and the pool started
from the training solutions. combgrad runs on one numba thread (PyEPO on one process).

Usage:
    python benchmarks/pto_table.py                  # the README table
    python benchmarks/pto_table.py --quick          # a smoke run (100 instances, 1 epoch, 1 seed)
    python benchmarks/pto_table.py --problems knapsack --methods spo+ dbb --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import combgrad as cg
from combgrad.tasks._training import seed_everything
from combgrad.tasks.pto import PtoConfig, regret, train
from combgrad.tasks.pto.model import build_model
from combgrad.tasks.pto.problems import Problem, build_problem
from combgrad.tasks.pto.trainer import epoch_order

METHODS = ("spo+", "dbb", "pfy", "imle", "aimle", "pg", "nce", "cmap", "ltr")
"""The methods both libraries have (2s, an MSE without solver, is the same code in both)."""


def pyepo_model(problem: Problem, config: PtoConfig) -> Any:
    """PyEPO's gurobipy model of the same instance family."""
    from pyepo.model import grb

    if config.problem == "shortest_path":
        return grb.shortestPathModel((config.grid, config.grid))
    if config.problem == "knapsack":
        return grb.knapsackModel(problem.details["weights"], problem.details["capacities"])
    return grb.tspDFJModel(config.num_nodes)


def pyepo_loss(method: str, optmodel: Any, dataset: Any) -> Any:
    """``loss(cost_pred, (x, c, w, z))`` as PyEPO's tutorials write each method."""
    from pyepo import func

    l1 = torch.nn.L1Loss()
    if method == "spo+":
        spo = func.SPOPlus(optmodel, processes=1)
        return lambda cp, batch: spo(cp, batch[1], batch[2], batch[3])
    if method == "dbb":
        dbb = func.blackboxOpt(optmodel, lambd=20, processes=1)
        return lambda cp, batch: l1((dbb(cp) * batch[1]).sum(1, keepdim=True), batch[3])
    if method == "pfy":
        pfy = func.perturbedFenchelYoung(optmodel, n_samples=10, sigma=1.0, processes=1)
        return lambda cp, batch: pfy(cp, batch[2])
    if method in ("imle", "aimle"):
        if method == "imle":
            layer = func.implicitMLE(optmodel, n_samples=10, sigma=1.0, lambd=10, processes=1)
        else:
            layer = func.adaptiveImplicitMLE(optmodel, n_samples=10, sigma=1.0, processes=1)
        return lambda cp, batch: l1(layer(cp), batch[2])
    if method == "pg":
        pg = func.perturbationGradient(optmodel, sigma=0.1, processes=1)
        return lambda cp, batch: pg(cp, batch[1])
    if method in ("nce", "cmap"):
        kind = func.noiseContrastiveEstimation if method == "nce" else func.contrastiveMAP
        contrastive = kind(optmodel, processes=1, solve_ratio=0.05, dataset=dataset)
        return lambda cp, batch: contrastive(cp, batch[2])
    if method == "ltr":
        ltr = func.listwiseLearningToRank(optmodel, processes=1, solve_ratio=0.05, dataset=dataset)
        return lambda cp, batch: ltr(cp, batch[1])
    raise ValueError(f"pto_table: no PyEPO counterpart of {method!r}")


def run_pyepo(config: PtoConfig, problem: Problem, initial: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Train PyEPO's way from ``initial`` weights with combgrad's batch order; final regret by combgrad's metric."""
    from pyepo.data.dataset import optDataset

    optmodel = pyepo_model(problem, config)
    dataset = optDataset(optmodel, problem.train.features.numpy(), problem.train.costs.float().numpy())
    tensors = [torch.as_tensor(getattr(dataset, name)).float() for name in ("feats", "costs", "sols", "objs")]
    tensors[3] = tensors[3].reshape(-1, 1)
    model = build_model(config.model, config.num_feat, problem.num_costs, hidden=config.hidden)
    model.load_state_dict(initial)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    loss_of = pyepo_loss(config.method, optmodel, dataset)
    seconds = []
    for epoch in range(config.epochs):
        model.train()
        start = time.perf_counter()
        order = epoch_order(len(problem.train), config.seed, epoch)
        for begin in range(0, len(order), config.batch_size):
            index = order[begin : begin + config.batch_size]
            batch = [tensor[index] for tensor in tensors]
            loss = loss_of(model(batch[0]), batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        seconds.append(time.perf_counter() - start)
    model.eval()
    with torch.no_grad():
        predicted = model(problem.test.features)
    value = float(regret(problem.solver, predicted, problem.test.costs, objective_true=problem.test.objectives))
    return {"normalized_regret": value, "seconds_per_epoch": statistics.median(seconds), "epoch_seconds": seconds}


def run_combgrad(config: PtoConfig) -> dict[str, Any]:
    result = train(config, log=lambda line: None)
    return {"normalized_regret": result["final"]["test"]["normalized_regret"],
            "seconds_per_epoch": result["timing"]["seconds_per_epoch"],
            "epoch_seconds": [record["train_seconds"] for record in result["history"]],
            "solver_share": result["timing"]["solver_share"]}


def initial_weights(config: PtoConfig, num_costs: int) -> dict[str, torch.Tensor]:
    """The weights combgrad's trainer starts from (it seeds everything, then builds the model)."""
    seed_everything(config.seed)
    model = build_model(config.model, config.num_feat, num_costs, hidden=config.hidden)
    return {name: value.clone() for name, value in model.state_dict().items()}


def _summary(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _cell(values: list[float]) -> str:
    mean, sd = _summary(values)
    return f"{mean:.4f} ± {sd:.4f}" if len(values) > 1 else f"{mean:.4f}"


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| problem | method | combgrad regret | PyEPO regret | within noise | combgrad s/epoch | PyEPO s/epoch | ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ours, theirs = row["combgrad"], row["pyepo"]
        lines.append(
            f"| {row['problem']} | {row['method']} | {_cell(ours['regrets'])} | {_cell(theirs['regrets'])} | "
            f"{'yes' if row['within_noise'] else 'NO'} | {ours['seconds_per_epoch']:.2f} | "
            f"{theirs['seconds_per_epoch']:.2f} | {row['time_ratio']:.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", nargs="+", default=["shortest_path", "knapsack"],
                        choices=("shortest_path", "knapsack", "tsp"))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--n-train", type=int, default=1000)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--deg", type=int, default=4, help="PyEPO's tutorials' degree (default 4)")
    parser.add_argument("--noise", type=float, default=0.5, help="PyEPO's tutorials' noise half-width (default 0.5)")
    parser.add_argument("--out", default="runs/pto_table/table.json")
    parser.add_argument("--quick", action="store_true", help="100 instances, 1 epoch, 1 seed: a smoke run")
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="torch.set_num_threads for both libraries (default: torch's own, the cores); "
                        "on a loaded 2-core machine one thread avoids torch's waits for a descheduled thread")
    args = parser.parse_args(argv)
    if args.torch_threads is not None:
        torch.set_num_threads(args.torch_threads)
    if args.quick:
        args.n_train, args.n_test, args.epochs, args.seeds = 100, 100, 1, args.seeds[:1]
    cg.set_num_threads(1)  # PyEPO solves on one process; the machine's cores are shared
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    settings = {key: value for key, value in vars(args).items() if key != "out"}
    settings["command"] = "python " + " ".join(shlex.quote(part) for part in sys.argv)
    rows: list[dict[str, Any]] = []
    scratch = Path(tempfile.mkdtemp(prefix="pto_table_"))
    for problem_name in args.problems:
        for method in args.methods:
            ours: dict[str, list[Any]] = {"regrets": [], "seconds": [], "solver_share": []}
            theirs: dict[str, list[Any]] = {"regrets": [], "seconds": []}
            for seed in args.seeds:
                config = PtoConfig(
                    out=str(scratch / f"{problem_name}-{method}-{seed}"), problem=problem_name, method=method,
                    n_train=args.n_train, n_test=args.n_test, num_feat=10 if problem_name == "tsp" else 5,
                    deg=args.deg, noise=args.noise, data_seed=seed, seed=seed, epochs=args.epochs,
                    batch_size=32, lr=1e-2, device="cpu", progress=False, plots=False,
                )
                problem = build_problem(config)
                initial = initial_weights(config, problem.num_costs)
                started = time.perf_counter()
                combgrad_run = run_combgrad(config)
                pyepo_run = run_pyepo(config, problem, initial)
                ours["regrets"].append(combgrad_run["normalized_regret"])
                ours["seconds"].extend(combgrad_run["epoch_seconds"])
                ours["solver_share"].append(combgrad_run["solver_share"])
                theirs["regrets"].append(pyepo_run["normalized_regret"])
                theirs["seconds"].extend(pyepo_run["epoch_seconds"])
                print(f"{problem_name} {method} seed {seed}: combgrad {combgrad_run['normalized_regret']:.4f} "
                      f"({combgrad_run['seconds_per_epoch']:.2f} s/epoch), PyEPO {pyepo_run['normalized_regret']:.4f} "
                      f"({pyepo_run['seconds_per_epoch']:.2f} s/epoch), {time.perf_counter() - started:.0f} s",
                      flush=True)
            (mean_a, sd_a), (mean_b, sd_b) = _summary(ours["regrets"]), _summary(theirs["regrets"])
            count = len(args.seeds)
            noise = 2 * math.sqrt((sd_a**2 + sd_b**2) / count)
            row = {
                "problem": problem_name, "method": method,
                "combgrad": {"regrets": ours["regrets"], "mean": mean_a, "sd": sd_a,
                             "seconds_per_epoch": statistics.median(ours["seconds"]),
                             "solver_share": statistics.mean(ours["solver_share"])},
                "pyepo": {"regrets": theirs["regrets"], "mean": mean_b, "sd": sd_b,
                          "seconds_per_epoch": statistics.median(theirs["seconds"])},
                "within_noise": abs(mean_a - mean_b) <= noise,
            }
            row["time_ratio"] = row["combgrad"]["seconds_per_epoch"] / row["pyepo"]["seconds_per_epoch"]
            rows.append(row)
            # Written after every row: an interrupted table keeps its finished rows.
            out.write_text(json.dumps({"settings": settings, "rows": rows}, indent=2))
    table = markdown(rows)
    out.with_suffix(".md").write_text(table + "\n")
    print(f"\n{table}\n\nwritten to {out} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

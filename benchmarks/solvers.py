"""Speed of combgrad's solvers against straightforward references, in one run.

Each row times a batch with combgrad and the same instances with a plain
reference (networkx, numpy, scipy, a per-instance OR-Tools loop), and prints the
per-instance times and their ratio as a markdown table. Times are medians over
``--repeats`` runs; references that take seconds are timed on a subset of the
batch (``--reference-instances``) and reported per instance.

Usage:
    python benchmarks/solvers.py                 # the full table (a few minutes)
    python benchmarks/solvers.py --batch 64      # a quick look
    python benchmarks/solvers.py --only shortest_path spanning_tree   # some rows

The header line says how many threads the numba solvers may use and how many
tasks were running on the machine when the run started (1 = quiet).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from dataclasses import dataclass

import networkx as nx
import numpy as np
import torch

import combgrad as cg
from timing import median_seconds


@dataclass
class Row:
    solver: str
    instance: str
    reference: str
    ours_us: float  # per instance
    reference_us: float  # per instance
    target: str

    @property
    def speedup(self) -> float:
        return self.reference_us / self.ours_us


def networkx_grid_path(costs: np.ndarray) -> list[int]:
    """Vertex-weighted 8-neighbourhood grid shortest path, graph built per instance."""
    height, width = costs.shape
    graph = nx.DiGraph()
    for row in range(height):
        for col in range(width):
            for d_row in (-1, 0, 1):
                for d_col in (-1, 0, 1):
                    r, c = row + d_row, col + d_col
                    if (d_row or d_col) and 0 <= r < height and 0 <= c < width:
                        graph.add_edge(row * width + col, r * width + c, weight=costs[r, c])
    return nx.dijkstra_path(graph, 0, height * width - 1)


def networkx_mst(weights: np.ndarray) -> nx.Graph:
    return nx.minimum_spanning_tree(nx.from_numpy_array(weights))


def argpartition_topk(scores: np.ndarray, k: int) -> np.ndarray:
    index = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    mask = np.zeros_like(scores)
    np.put_along_axis(mask, index, 1.0, axis=1)
    return mask


def ortools_knapsack_loop(values: np.ndarray, weights: np.ndarray, capacity: int) -> list[list[int]]:
    """A plain per-instance CP-SAT loop, as a user would write it."""
    from ortools.sat.python import cp_model

    solutions = []
    for row in values:
        model = cp_model.CpModel()
        x = [model.new_bool_var(f"x{i}") for i in range(len(row))]
        model.add(sum(int(w) * xi for w, xi in zip(weights, x)) <= capacity)
        model.maximize(sum(int(round(v * 1e6)) * xi for v, xi in zip(row, x)))
        solver = cp_model.CpSolver()
        solver.parameters.num_workers = 1
        solver.solve(model)
        solutions.append([solver.value(xi) for xi in x])
    return solutions


def bench_shortest_path(batch: int, reference_instances: int, repeats: int, size: int) -> Row:
    generator = torch.Generator().manual_seed(size)
    costs = torch.rand(batch, size, size, generator=generator, dtype=torch.float64) * 9 + 0.1
    solver = cg.solvers.get("shortest_path")
    ours = median_seconds(lambda: solver(costs), repeats) / batch
    subset = costs[:reference_instances].numpy()
    reference = median_seconds(lambda: [networkx_grid_path(c) for c in subset], max(1, repeats // 3))
    return Row("shortest_path", f"{size}x{size} grid, 8-nbhd", "networkx Dijkstra (graph per instance)",
               1e6 * ours, 1e6 * reference / len(subset), ">= 100x")


def bench_spanning_tree(batch: int, reference_instances: int, repeats: int, nodes: int = 30) -> Row:
    generator = torch.Generator().manual_seed(nodes)
    upper = torch.rand(batch, nodes, nodes, generator=generator, dtype=torch.float64).triu(1)
    weights = upper + upper.transpose(-1, -2)
    solver = cg.solvers.get("spanning_tree")
    ours = median_seconds(lambda: solver(weights), repeats) / batch
    subset = weights[:reference_instances].numpy()
    reference = median_seconds(lambda: [networkx_mst(w) for w in subset], max(1, repeats // 3))
    return Row("spanning_tree", f"complete graph, n={nodes}", "networkx minimum_spanning_tree",
               1e6 * ours, 1e6 * reference / len(subset), ">= 100x")


def bench_topk(batch: int, repeats: int, n: int, k: int) -> Row:
    scores = torch.randn(batch, n, generator=torch.Generator().manual_seed(n))
    solver = cg.solvers.get("topk", k=k)
    ours = median_seconds(lambda: solver(scores), repeats) / batch
    numpy_scores = scores.numpy()
    reference = median_seconds(lambda: argpartition_topk(numpy_scores, k), repeats) / batch
    return Row("topk", f"n={n}, k={k}", "numpy argpartition", 1e6 * ours, 1e6 * reference,
               ">= 0.67x (within 1.5x)")


def knapsack_instances(count: int, items: int = 50, seed: int = 0):
    rng = np.random.default_rng(seed)
    weights = rng.integers(1, 101, size=items)
    capacity = int(weights.sum() // 2)
    values = rng.uniform(0, 1, size=(count, items))
    return values, weights, capacity


def bench_ilp(count: int, repeats: int) -> list[Row]:
    values, weights, capacity = knapsack_instances(count)
    theta = torch.from_numpy(values)
    options = dict(A=weights[None, :].astype(np.float64), b=np.array([capacity], dtype=np.float64), sense="max")
    serial = cg.solvers.get("ilp", **options)
    pooled = cg.solvers.get("ilp", workers=2, **options)
    serial_time = median_seconds(lambda: serial(theta), repeats) / count
    pooled_time = median_seconds(lambda: pooled(theta), repeats) / count
    loop_time = median_seconds(lambda: ortools_knapsack_loop(values, weights, capacity), repeats) / count
    return [
        Row("ilp", f"knapsack-50, {count} instances", "per-instance CP-SAT loop",
            1e6 * serial_time, 1e6 * loop_time, "(serial)"),
        Row("ilp, workers=2", f"knapsack-50, {count} instances", "ilp serial (same process)",
            1e6 * pooled_time, 1e6 * serial_time, ">= 1.7x"),
    ]


def bench_assignment(batch: int, reference_instances: int, repeats: int, n: int = 30) -> Row:
    from scipy.optimize import linear_sum_assignment

    scores = torch.rand(batch, n, n, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
    solver = cg.solvers.get("assignment")
    ours = median_seconds(lambda: solver(scores), repeats) / batch
    subset = scores[:reference_instances].numpy()
    reference = median_seconds(lambda: [linear_sum_assignment(s, maximize=True) for s in subset], repeats)
    return Row("assignment", f"n={n}", "scipy linear_sum_assignment loop",
               1e6 * ours, 1e6 * reference / len(subset), "(none)")


def bench_knapsack(batch: int, reference_instances: int, repeats: int) -> Row:
    values, weights, capacity = knapsack_instances(batch, seed=1)
    solver = cg.solvers.get("knapsack", weights=weights, capacity=capacity)
    theta = torch.from_numpy(values)
    ours = median_seconds(lambda: solver(theta), repeats) / batch
    subset = values[:reference_instances]
    reference = median_seconds(lambda: ortools_knapsack_loop(subset, weights, capacity), 1)
    return Row("knapsack", "50 items, capacity ~1250", "per-instance CP-SAT loop",
               1e6 * ours, 1e6 * reference / len(subset), "(none)")


COLD_START = """
import time
start = time.perf_counter()
import torch, combgrad as cg
imported = time.perf_counter()
cg.solvers.get("shortest_path")(torch.rand(4, 12, 12))
cg.solvers.get("spanning_tree")(torch.rand(4, 30, 30) + torch.rand(4, 30, 30).transpose(-1, -2))
print(imported - start, time.perf_counter() - imported)
"""


def cold_start_seconds() -> tuple[float, float]:
    """(import time, first solve time) of a fresh process; numba's cache is warm by now."""
    output = subprocess.run([sys.executable, "-c", COLD_START], capture_output=True, text=True, check=True)
    import_time, solve_time = map(float, output.stdout.split())
    return import_time, solve_time


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--reference-instances", type=int, default=64)
    parser.add_argument("--ilp-instances", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--only", nargs="+", default=None, help="solver names of the rows to run")
    args = parser.parse_args(argv)
    from combgrad.solvers import parallel

    print(f"torch {torch.__version__}, combgrad solver threads: {cg.solvers.get_num_threads()}, "
          f"running tasks at start: {parallel._running_tasks()}, batch {args.batch}, medians of {args.repeats}")

    reference_instances = min(args.reference_instances, args.batch)
    benches = [
        ("shortest_path", lambda: [bench_shortest_path(args.batch, reference_instances, args.repeats, 12),
                                   bench_shortest_path(args.batch, reference_instances, args.repeats, 30)]),
        ("spanning_tree", lambda: [bench_spanning_tree(args.batch, reference_instances, args.repeats)]),
        ("topk", lambda: [bench_topk(args.batch, args.repeats, 100, 10), bench_topk(args.batch, args.repeats, 1000, 50)]),
        ("assignment", lambda: [bench_assignment(args.batch, reference_instances, args.repeats)]),
        ("knapsack", lambda: [bench_knapsack(args.batch, reference_instances, args.repeats)]),
        ("ilp", lambda: bench_ilp(args.ilp_instances, max(3, args.repeats // 2))),
    ]
    rows = [row for name, bench in benches if args.only is None or name in args.only for row in bench()]
    print()
    print("| solver | instances | reference | combgrad µs/inst | reference µs/inst | speed-up | target |")
    print("|---|---|---|---:|---:|---:|---|")
    for row in rows:
        print(f"| {row.solver} | {row.instance} | {row.reference} | {row.ours_us:.2f} | "
              f"{row.reference_us:.2f} | {row.speedup:.1f}x | {row.target} |")
    import_time, solve_time = cold_start_seconds()
    print(f"\nfresh process: import combgrad {import_time:.2f} s, first solves (numba cache) {solve_time:.3f} s")


if __name__ == "__main__":
    main()

"""Scaling out solver calls: serial vs the local pool vs a Dask cluster (issue 11).

Workload: knapsack with ``--items`` items as an ILP (``cg.solvers.get("ilp")``,
OR-Tools CP-SAT, one search worker per instance), a batch of ``--batch``
random instances, solved

* serially in this process,
* on a ``ThreadPoolExecutor(2)`` (``executor=``; CP-SAT's search runs in C++),
* with ``workers=2`` (the shared forkserver pool),
* on a 2-worker Dask ``LocalCluster`` (processes, 1 thread each, loopback),

all warmed up first, then ``--repeats`` alternating rounds; medians are quoted.
Per-task overhead is measured separately with a do-nothing chunk function:
``overhead = wall * slots / tasks`` for ``--tasks`` tasks.

Run: ``python benchmarks/scale.py`` (about a minute). The projection printed
at the end assumes N identical machines of ``slots`` cores, instances of equal
time ``t``, and a scheduler that is not the bottleneck:
``throughput(N) = N * slots / (t + o / k)`` with ``k`` instances per task.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

import combgrad as cg
from combgrad import pool


def nothing(chunk: np.ndarray) -> int:
    return len(chunk)


def knapsack(items: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    weights = rng.integers(10, 100, size=items)
    return {"A": weights[None, :], "b": [int(weights.sum()) // 3], "sense": "max"}


def timed(solve, theta: torch.Tensor) -> float:
    began = time.perf_counter()
    solve(theta)
    return time.perf_counter() - began


def overhead(tasks: int, slots: int, **where) -> float:
    """Seconds of overhead per task: a batch of ``tasks`` one-instance do-nothing chunks."""
    values = np.zeros(tasks)
    pool.map_chunks(nothing, values, chunks_per_worker=tasks // slots, owner="warm", **where)
    walls = []
    for round_ in range(5):
        began = time.perf_counter()
        # A fresh owner each round: nothing measured, so the chunks are not
        # merged by the overhead rule (which this measurement calibrates).
        out = pool.map_chunks(
            nothing, values, chunks_per_worker=tasks // slots, owner=f"overhead-{round_}", **where
        )
        walls.append(time.perf_counter() - began)
        assert len(out) == tasks, len(out)
    return statistics.median(walls) * slots / tasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--batch", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tasks", type=int, default=64)
    args = parser.parse_args()

    from distributed import Client, LocalCluster

    load_before = os.getloadavg()[0]
    options = knapsack(args.items, 0)
    theta = torch.rand(args.batch, args.items, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    )
    client = Client(cluster)
    threads = ThreadPoolExecutor(2)
    try:
        solvers = {
            "serial": cg.solvers.get("ilp", **options),
            "threads (2)": cg.solvers.get("ilp", **options, executor=threads),
            "pool (workers=2)": cg.solvers.get("ilp", **options, workers=2),
            "dask (2 workers)": cg.solvers.get("ilp", **options, executor=client),
        }
        reference = solvers["serial"](theta)
        for name, solver in solvers.items():  # warm: workers started, models built
            assert torch.equal(solver(theta), reference), name
        times: dict[str, list[float]] = {name: [] for name in solvers}
        for _ in range(args.repeats):
            for name, solver in solvers.items():
                times[name].append(timed(solver, theta))
        overheads = {
            "threads (2)": overhead(args.tasks, 2, executor=threads),
            "pool (workers=2)": overhead(args.tasks, 2, workers=2),
            "dask (2 workers)": overhead(args.tasks, 2, executor=client),
        }
        inside = pool._seconds_per_instance.get(("ilp", "dask"))
    finally:
        threads.shutdown()
        client.close()
        cluster.close()
        pool.shutdown()

    serial = statistics.median(times["serial"])
    instance = serial / args.batch
    print(
        f"knapsack-{args.items} ILP (CP-SAT), batch {args.batch}, {args.repeats} rounds, "
        f"medians; serial {instance * 1e3:.1f} ms per instance"
    )
    print(
        f"load average (1 min) {load_before:.1f} before, {os.getloadavg()[0]:.1f} after, on "
        f"{os.cpu_count()} cores; inside a Dask worker an instance took "
        f"{(inside or float('nan')) * 1e3:.1f} ms"
    )
    print(f"{'':20} {'instances/s':>12} {'speed-up':>9} {'overhead/task':>14}")
    for name, values in times.items():
        wall = statistics.median(values)
        cost = f"{overheads[name] * 1e3:.2f} ms" if name in overheads else "-"
        print(f"{name:20} {args.batch / wall:12.1f} {serial / wall:8.2f}x {cost:>14}")
    o = overheads["dask (2 workers)"]
    k = max(1, args.batch // 8)
    print(
        f"projection, Dask on N machines of 2 cores, t={instance * 1e3:.1f} ms, o={o * 1e3:.2f} ms, "
        f"k={k} instances per task: throughput(N) = N * 2 / (t + o/k) = "
        f"{2 / (instance + o / k):.0f} * N instances/s"
    )


if __name__ == "__main__":
    main()

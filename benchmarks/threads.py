"""The numba solvers' thread policy under load, and the measurements behind it.

Default mode: starts one busy competing process per core (each spins for at
most ``--busy-seconds`` and is stopped by this script), then times every
built-in numba solver at Warcraft batch sizes (32-70 instances) three ways in
the same process, in turn within each round: combgrad's policy (the default),
one thread (``set_num_threads(1)``), and every thread forced on (the behaviour
before the policy: a parallel launch whatever the batch and the load). Ratios
are medians of the per-round ratios. Target: the default within 2x of one
thread.

``--crossover``: on a quiet machine, times the serial and the parallel kernel
for batches of 2 to 256 with ``--gap`` ms between calls (``--gap 0`` for
back-to-back calls), and prints
each call's estimated serial work; the smallest work at which the parallel
kernel wins (at two consecutive batch sizes) is the crossover behind
``parallel.SERIAL_WORK_SECONDS``.

``--calibrate``: each solver's measured serial time per instance next to its
estimate (the per-step constants in the solver modules).

Usage:
    python benchmarks/threads.py                 # under load (about a minute)
    python benchmarks/threads.py --crossover     # quiet machine
    python benchmarks/threads.py --calibrate
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numba
import numpy as np
import torch

import combgrad as cg
from combgrad.solvers import parallel
from timing import median_seconds

SPIN = "import time\nend = time.time() + {seconds}\nwhile time.time() < end:\n    pass\n"


def cases(batch: int) -> list[tuple[str, Callable[[], object]]]:
    """(description, call) of every built-in numba solver on ``batch`` random instances."""
    generator = torch.Generator().manual_seed(batch)
    weights = np.random.default_rng(0).integers(1, 101, size=50)
    solvers = [
        ("shortest_path 12x12", cg.solvers.get("shortest_path"), torch.rand(batch, 12, 12, generator=generator) + 0.1),
        ("shortest_path 30x30", cg.solvers.get("shortest_path"), torch.rand(batch, 30, 30, generator=generator) + 0.1),
        ("spanning_tree n=30", cg.solvers.get("spanning_tree"), torch.rand(batch, 30, 30, generator=generator)),
        ("assignment 5x5", cg.solvers.get("assignment"), torch.rand(batch, 5, 5, generator=generator)),
        ("assignment 30x30", cg.solvers.get("assignment"), torch.rand(batch, 30, 30, generator=generator)),
        ("knapsack 50 items", cg.solvers.get("knapsack", weights=weights, capacity=int(weights.sum() // 2)),
         torch.rand(batch, 50, generator=generator)),
    ]
    return [(name, (lambda solver=solver, theta=theta: solver(theta))) for name, solver, theta in solvers]


@contextmanager
def forced_threads(threads: int | None) -> Iterator[None]:
    """Every call runs on ``threads`` threads (None: combgrad's policy)."""
    original = parallel.threads_for
    if threads is not None:
        parallel.threads_for = lambda work: threads
    try:
        yield
    finally:
        parallel.threads_for = original


def estimated_work(call: Callable[[], object]) -> float:
    """The serial work (seconds) the solver estimates for one call."""
    seen: list[float] = []
    original = parallel.threads_for
    parallel.threads_for = lambda work: (seen.append(work), 1)[1]
    try:
        call()
    finally:
        parallel.threads_for = original
    return seen[0]


@contextmanager
def busy_processes(count: int, seconds: float) -> Iterator[list[subprocess.Popen]]:
    """``count`` spinning Python processes, stopped on exit (and after ``seconds`` anyway)."""
    processes = [subprocess.Popen([sys.executable, "-c", SPIN.format(seconds=seconds)]) for _ in range(count)]
    try:
        time.sleep(0.5)  # let them start spinning
        yield processes
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait()


def interleaved_medians(call: Callable[[], object], repeats: int) -> tuple[float, float, float, float, float]:
    """Medians of ``call`` under the policy, on one thread and with all threads forced.

    Also returns the medians of the paired ratios policy / one thread and
    forced / one thread, each pair timed in the same round.

    The three are timed in turn within each repeat, in an order that rotates
    from one repeat to the next, so that bursts of load on the shared machine
    and the position in the round hit all three alike; a pause after each call
    lets the OpenMP threads of a forced call stop spinning before the next one.
    """
    modes = ["policy", "single", "forced"]
    times: dict[str, list[float]] = {mode: [] for mode in modes}
    all_threads = int(getattr(numba.config, "NUMBA_NUM_THREADS"))
    for repeat in range(repeats + 1):  # the first round warms up
        for mode in modes[repeat % 3:] + modes[: repeat % 3]:
            if mode == "single":
                cg.solvers.set_num_threads(1)
            try:
                with forced_threads(all_threads if mode == "forced" else None):
                    start = time.perf_counter()
                    call()
                    elapsed = time.perf_counter() - start
            finally:
                cg.solvers.set_num_threads(None)
            if repeat:
                times[mode].append(elapsed)
            time.sleep(0.02)
    single = times["single"]
    return (statistics.median(times["policy"]), statistics.median(single), statistics.median(times["forced"]),
            statistics.median(p / s for p, s in zip(times["policy"], single)),
            statistics.median(f / s for f, s in zip(times["forced"], single)))


def running_tasks() -> str:
    count = parallel._running_tasks()
    return "unknown" if count is None else str(count)


def under_load(args: argparse.Namespace) -> None:
    cores = os.cpu_count() or 1
    for batch in args.batches:  # compile and warm up before the load starts
        for _, call in cases(batch):
            call()
    rows = []
    with busy_processes(cores, args.busy_seconds):
        print(f"{cores} busy processes started; running tasks now: {running_tasks()}; "
              f"numba layer {parallel.threading_layer()}, get_num_threads() {cg.solvers.get_num_threads()}; "
              f"medians of {args.repeats}")
        for batch in args.batches:
            for name, call in cases(batch):
                rows.append((name, batch, *interleaved_medians(call, args.repeats)))
    print()
    print("| solver | batch | combgrad (policy) ms | 1 thread ms | policy / 1 thread | "
          f"all {numba.config.NUMBA_NUM_THREADS} threads forced ms | forced / 1 thread |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, batch, default, single, forced, policy_ratio, forced_ratio in rows:
        print(f"| {name} | {batch} | {1e3 * default:.3f} | {1e3 * single:.3f} | {policy_ratio:.2f}x | "
              f"{1e3 * forced:.3f} | {forced_ratio:.1f}x |")
    worst = max(row[5] for row in rows)
    print(f"\nworst policy / 1 thread: {worst:.2f}x (target <= 2x)")


def spaced_medians(call: Callable[[], object], repeats: int, gap: float, threads: int) -> tuple[float, float]:
    """Medians of ``call`` serial and on ``threads`` threads, alternating, ``gap`` seconds apart."""
    times: dict[int, list[float]] = {1: [], threads: []}
    for repeat in range(repeats + 1):  # the first round warms up
        for mode in ((1, threads) if repeat % 2 else (threads, 1)):
            time.sleep(gap)
            with forced_threads(mode):
                start = time.perf_counter()
                call()
                elapsed = time.perf_counter() - start
            if repeat:
                times[mode].append(elapsed)
    return statistics.median(times[1]), statistics.median(times[threads])


def crossover(args: argparse.Namespace) -> None:
    threads = int(getattr(numba.config, "NUMBA_NUM_THREADS"))
    print(f"running tasks now: {running_tasks()}; {threads} threads; calls {args.gap} ms apart; "
          f"medians of {args.repeats}; SERIAL_WORK_SECONDS = {parallel.SERIAL_WORK_SECONDS:g}")
    print("\n| solver | batch | estimated work µs | serial µs | parallel µs | serial / parallel |")
    print("|---|---:|---:|---:|---:|---:|")
    results: dict[str, list[tuple[float, float]]] = {}
    for batch in (2, 4, 8, 16, 32, 64, 128, 256):  # batch 1 is always serial
        for name, call in cases(batch):
            work = estimated_work(call)
            serial, parallel_time = spaced_medians(call, args.repeats, args.gap / 1e3, threads)
            results.setdefault(name, []).append((work, serial / parallel_time))
            print(f"| {name} | {batch} | {1e6 * work:.1f} | {1e6 * serial:.1f} | {1e6 * parallel_time:.1f} | "
                  f"{serial / parallel_time:.2f}x |")
    # Two wins in a row, so that one noisy timing on a shared machine neither
    # makes nor breaks the crossover.
    print("\ncrossover: the smallest estimated work at which the parallel kernel wins at this batch and the next")
    for name, points in results.items():
        winning = [work for (work, ratio), (_, after) in zip(points, points[1:]) if ratio > 1 and after > 1]
        print(f"  {name}: " + (f"{1e6 * winning[0]:.0f} µs" if winning else "none up to batch 256"))


def calibrate(args: argparse.Namespace) -> None:
    batch = 256
    print(f"serial time per instance, batch {batch}, medians of {args.repeats}")
    print("\n| solver | measured µs | estimated µs | measured / estimated |")
    print("|---|---:|---:|---:|")
    for name, call in cases(batch):
        work = estimated_work(call) / batch
        with forced_threads(1):
            measured = median_seconds(call, args.repeats) / batch
        print(f"| {name} | {1e6 * measured:.2f} | {1e6 * work:.2f} | {measured / work:.2f} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crossover", action="store_true", help="measure the serial/parallel crossover")
    parser.add_argument("--calibrate", action="store_true", help="measure the per-instance work estimates")
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 50, 70])
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--gap", type=float, default=5.0, help="ms between calls in --crossover")
    parser.add_argument("--busy-seconds", type=float, default=300.0,
                        help="upper bound on each competing process's life")
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__}, numba {numba.__version__}, {os.cpu_count()} cores")
    if args.crossover:
        crossover(args)
    elif args.calibrate:
        calibrate(args)
    else:
        under_load(args)


if __name__ == "__main__":
    main()

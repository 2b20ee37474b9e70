"""Device-native ("torch") solver backends against the numba backend and a naive torch baseline.

Each case is one function decorated with :func:`case`: it builds its inputs for
the run's device and size and returns rows timed by :func:`measure` (one row per
contender: the torch backend on the run's device, the numba backend on the CPU
cores, and for some cases a naive torch baseline on the device). To add a
solver, write one more such function; nothing else changes.

On a machine with CUDA the cases run at the issue's sizes (shortest_path 12x12
at B=65,536, 30x30 at B=65,536 and B=70, 12x12 at B=70; topk n=1000 at
B=65,536; argmax). Without CUDA, or with ``--dry``, they run on the CPU at small sizes
(same table shape), to check the script end to end and to compare the two
backends on the CPU. Times are medians of ``--repeats`` calls after a warm-up
call, the contenders taking turns, synchronised on CUDA; the numba backend is
timed on a CPU theta (its kernel on the host cores, without the copies a CUDA
theta would add).

Usage:
    python benchmarks/gpu.py                      # CUDA sizes if CUDA is there, else --dry
    python benchmarks/gpu.py --dry --threads 1 --json /tmp/gpu.json
    python benchmarks/gpu.py --cases shortest_path
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

import combgrad as cg
from combgrad.solvers import shortest_path as shortest_path_module


@dataclass(frozen=True)
class Config:
    """What a run measures on: ``device`` for the torch contenders, ``dry`` for small sizes."""

    device: torch.device
    dry: bool
    repeats: int


@dataclass
class Row:
    """One contender on one case; ``seconds`` is the median time of one call on the whole batch."""

    case: str
    contender: str
    device: str
    batch: int
    seconds: float
    instances_per_second: float
    numba_time_ratio: float = math.nan  # numba's seconds / this contender's: > 1 is faster than numba


CASES: list[Callable[[Config], list[Row]]] = []


def case(function: Callable[[Config], list[Row]]) -> Callable[[Config], list[Row]]:
    """Add ``function`` (``Config -> rows``) to the table of cases."""
    CASES.append(function)
    return function


def synchronised(call: Callable[[], object], device: torch.device) -> Callable[[], object]:
    """``call`` followed by a CUDA synchronisation, so wall time covers the kernels."""
    if device.type != "cuda":
        return call

    def run() -> object:
        result = call()
        torch.cuda.synchronize(device)
        return result

    return run


def measure(config: Config, name: str, batch: int, contenders: dict[str, tuple[torch.device, Callable[[], object]]]) -> list[Row]:
    """Time each contender (its device and its call); ratios against "numba".

    The contenders take turns within each of ``config.repeats`` rounds (after
    one warm-up call each), so a change in the machine's load hits them alike;
    each row holds its contender's median.
    """
    calls = {contender: synchronised(call, device) for contender, (device, call) in contenders.items()}
    for call in calls.values():
        call()
    times: dict[str, list[float]] = {contender: [] for contender in calls}
    for _ in range(config.repeats):
        for contender, call in calls.items():
            start = time.perf_counter()
            call()
            times[contender].append(time.perf_counter() - start)
    rows = []
    for contender, (device, _) in contenders.items():
        seconds = statistics.median(times[contender])
        rows.append(Row(name, contender, str(device), batch, seconds, batch / seconds))
    numba = [row.seconds for row in rows if row.contender == "numba"]
    for row in rows:
        if numba:
            row.numba_time_ratio = numba[0] / row.seconds
    return rows


def naive_shortest_path(costs: torch.Tensor) -> torch.Tensor:
    """The naive torch baseline: 8-neighbour Bellman-Ford with a host sync after every sweep.

    Each sweep pads the distances again and takes the minimum over the eight
    shifted copies stacked in a new tensor, then asks the host whether anything
    changed; the path is traced by combgrad's walk, so only the sweeps differ.
    """
    batch, height, width = costs.shape
    costs = costs.clamp(min=0.0)
    distance = torch.full_like(costs, math.inf)
    distance[:, 0, 0] = costs[:, 0, 0]
    level = torch.zeros(costs.shape, dtype=torch.int32, device=costs.device)
    steps = [(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1) if (dr, dc) != (0, 0)]
    for sweep in range(1, height * width + 1):
        padded = torch.nn.functional.pad(distance, (1, 1, 1, 1), value=math.inf)
        shifted = torch.stack([padded[:, 1 + dr : 1 + dr + height, 1 + dc : 1 + dc + width] for dr, dc in steps])
        candidate = shifted.amin(0) + costs
        better = candidate < distance
        if not bool(better.any()):
            break
        distance = torch.where(better, candidate, distance)
        level = torch.where(better, sweep, level)

    def padded_flat(values: torch.Tensor, fill: float) -> torch.Tensor:
        return torch.nn.functional.pad(values, (1, 1, 1, 1), value=fill).reshape(batch, -1)

    return shortest_path_module._torch_walk(
        padded_flat(-distance, -math.inf),
        padded_flat(level, 0),
        padded_flat(-costs, -math.inf),
        (height, width),
        (0, 0),
        (height - 1, width - 1),
        8,
    )


def shortest_path_rows(config: Config, height: int, batch: int) -> list[Row]:
    generator = torch.Generator().manual_seed(height * batch)
    host = torch.rand(batch, height, height, generator=generator) + 0.1
    device = host.to(config.device)
    on_device = cg.solvers.get("shortest_path", backend="torch")
    on_host = cg.solvers.get("shortest_path", backend="numba")
    reference = (on_host(host) * host).sum((-2, -1))
    found = (on_device(device).cpu() * host).sum((-2, -1))
    if not torch.allclose(found, reference, rtol=1e-5):
        raise AssertionError(f"shortest_path {height}x{height}: torch and numba path costs differ")
    return measure(
        config,
        f"shortest_path {height}x{height}",
        batch,
        {
            "torch": (config.device, lambda: on_device(device)),
            "numba": (torch.device("cpu"), lambda: on_host(host)),
            "naive torch": (config.device, lambda: naive_shortest_path(device)),
        },
    )


@case
def shortest_path_12x12_large_batch(config: Config) -> list[Row]:
    """The throughput case: 12x12 Warcraft maps, B = 65,536 (1,024 dry)."""
    return shortest_path_rows(config, 12, 1024 if config.dry else 65536)


@case
def shortest_path_12x12_warcraft_batch(config: Config) -> list[Row]:
    """The training-step case: 12x12 maps at the papers' batch of 70 (launch-bound on a GPU)."""
    return shortest_path_rows(config, 12, 70)


@case
def shortest_path_30x30(config: Config) -> list[Row]:
    """The largest Warcraft maps, 30x30, B = 65,536 (256 dry) and B = 70."""
    return shortest_path_rows(config, 30, 256 if config.dry else 65536) + shortest_path_rows(config, 30, 70)


def selection_rows(config: Config, name: str, options: dict[str, int], n: int, batch: int) -> list[Row]:
    """``name`` (topk or argmax) on ``batch`` instances of ``n`` normal scores, torch vs numba."""
    host = torch.randn(batch, n, generator=torch.Generator().manual_seed(n))
    device = host.to(config.device)
    on_device = cg.solvers.get(name, backend="torch", **options)
    on_host = cg.solvers.get(name, backend="numba", **options)
    if not torch.equal(on_device(device).cpu(), on_host(host)):
        raise AssertionError(f"{name}: torch and numba selections differ")
    label = " ".join([name, f"n={n}", *(f"{key}={value}" for key, value in options.items())])
    return measure(
        config,
        label,
        batch,
        {
            "torch": (config.device, lambda: on_device(device)),
            "numba": (torch.device("cpu"), lambda: on_host(host)),
        },
    )


@case
def topk_n1000(config: Config) -> list[Row]:
    """topk, n = 1000, B = 65,536 (1,024 dry): k = 10, and k = 500, 990 (the torch-or-numba question on the CPU)."""
    batch = 1024 if config.dry else 65536
    return [row for k in (10, 500, 990) for row in selection_rows(config, "topk", {"k": k}, 1000, batch)]


@case
def argmax_rows(config: Config) -> list[Row]:
    """argmax, n = 100 and 1000, B = 65,536 (1,024 dry)."""
    batch = 1024 if config.dry else 65536
    return [row for n in (100, 1000) for row in selection_rows(config, "argmax", {}, n, batch)]


def same_objective_rows(config: Config, label: str, solver: str, options: dict[str, object], host: torch.Tensor) -> list[Row]:
    """``solver`` on ``host [B, *event]``: torch on the run's device against numba on the CPU.

    Ties may pick different optimal solutions, so the check compares objectives
    <theta, y> (float64 sums of float32 scores, which the backends both reach).
    """
    device = host.to(config.device)
    on_device = cg.solvers.get(solver, backend="torch", **options)
    on_host = cg.solvers.get(solver, backend="numba", **options)
    dims = tuple(range(1, host.ndim))
    reference = (on_host(host).double() * host.double()).sum(dims)
    found = (on_device(device).cpu().double() * host.double()).sum(dims)
    if not torch.allclose(found, reference, rtol=1e-5, atol=1e-5):
        raise AssertionError(f"{label}: torch and numba objectives differ")
    return measure(
        config,
        label,
        host.shape[0],
        {
            "torch": (config.device, lambda: on_device(device)),
            "numba": (torch.device("cpu"), lambda: on_host(host)),
        },
    )


@case
def spanning_tree_n30(config: Config) -> list[Row]:
    """spanning_tree, n = 30, B = 65,536 (1,024 dry), and B = 70."""
    rows = []
    for batch in (1024 if config.dry else 65536, 70):
        host = torch.randn(batch, 30, 30, generator=torch.Generator().manual_seed(batch))
        rows += same_objective_rows(config, "spanning_tree n=30", "spanning_tree", {}, host)
    return rows


@case
def knapsack_50_items(config: Config) -> list[Row]:
    """knapsack, 50 items of weights 1..49, capacity half their total, B = 65,536 (256 dry)."""
    generator = torch.Generator().manual_seed(50)
    weights = torch.randint(1, 50, (50,), generator=generator)
    options = {"weights": weights, "capacity": int(weights.sum()) // 2}
    host = torch.randn(256 if config.dry else 65536, 50, generator=generator)
    return same_objective_rows(config, "knapsack 50 items", "knapsack", options, host)


@case
def assignment_30x30(config: Config) -> list[Row]:
    """assignment, 30x30 normal scores, B = 65,536 (64 dry), and 5x5 at the same batch (1,024 dry)."""
    rows = []
    for n, batch in ((30, 64 if config.dry else 65536), (5, 1024 if config.dry else 65536)):
        host = torch.randn(batch, n, n, generator=torch.Generator().manual_seed(n))
        rows += same_objective_rows(config, f"assignment {n}x{n}", "assignment", {}, host)
    return rows


def print_table(rows: list[Row]) -> None:
    print(f"{'case':<22} {'B':>7} {'contender':<12} {'device':<7} {'median ms':>10} {'instances/s':>12} {'vs numba':>9}")
    for row in rows:
        ratio = "" if math.isnan(row.numba_time_ratio) else f"{row.numba_time_ratio:.2f}x"
        print(
            f"{row.case:<22} {row.batch:>7} {row.contender:<12} {row.device:<7} "
            f"{row.seconds * 1e3:>10.3f} {row.instances_per_second:>12.4g} {ratio:>9}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry", action="store_true", help="small sizes on the CPU (automatic without CUDA)")
    parser.add_argument("--json", metavar="PATH", help="also write the rows and the conditions to PATH")
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per contender (median)")
    parser.add_argument("--threads", type=int, default=None, help="torch and numba CPU threads (default: theirs)")
    parser.add_argument("--cases", default="", help="only cases whose function name contains this")
    arguments = parser.parse_args(argv)
    cuda = torch.cuda.is_available() and not arguments.dry
    config = Config(torch.device("cuda" if cuda else "cpu"), dry=not cuda, repeats=arguments.repeats)
    if arguments.threads is not None:
        torch.set_num_threads(arguments.threads)
        cg.solvers.set_num_threads(arguments.threads)
    rows: list[Row] = []
    started = time.perf_counter()
    for function in CASES:
        if arguments.cases in function.__name__:
            rows.extend(function(config))
    print_table(rows)
    conditions = {
        "device": torch.cuda.get_device_name(0) if cuda else platform.processor() or platform.machine(),
        "dry": config.dry,
        "torch_threads": torch.get_num_threads(),
        "numba_threads": cg.solvers.get_num_threads(),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "repeats": config.repeats,
        "seconds": time.perf_counter() - started,
    }
    print(json.dumps(conditions))
    if arguments.json:
        with open(arguments.json, "w") as file:
            # NaN is not JSON: a row without a numba reference gets null.
            records = [{key: None if value != value else value for key, value in asdict(row).items()} for row in rows]
            json.dump({"conditions": conditions, "rows": records}, file, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Cost of a sum-of-gamma noise draw against a Gumbel draw of the same shape, in one run.

Sum-of-gamma is the default noise of ``imle`` and ``aimle``; the goal (issue 8,
item 14) is a draw within 2x of a Gumbel draw of the same shape and dtype. Each
row times, in turn and after a warm-up, ``noise.gumbel`` (torch's exponential
sampler and a log), ``noise.sum_of_gamma`` (one mixture index, one
Marsaglia-Tsang gamma per entry) in turn, all with the same CPU generator;
then, apart, the old method: a direct sum of ``iterations`` gamma draws per
entry (``noise.gamma``, float64, summed). Times are medians over ``--repeats``
rounds (3 for the old method); the ratios are of medians measured in this
process. Shapes are those of the
estimators' calls: ``[samples, batch, *event]``.

Usage:
    python benchmarks/noise.py                 # the table (about a minute)
    python benchmarks/noise.py --threads 2     # torch threads (default 1: the
                                               # machines here have 2 shared cores)
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from collections.abc import Callable

import torch

from combgrad.gradients import noise

# (description, shape, k, iterations)
CASES = [
    ("imle top-k, n=100, k=10", (10, 32, 100), 10, 10),
    ("Warcraft 12x12, k=12", (5, 70, 12, 12), 12, 10),
    ("Warcraft 12x12, k=1", (5, 70, 12, 12), 1, 10),
    ("large, n=1000, k=50", (10, 64, 1000), 50, 10),
    ("top-k, iterations=100", (10, 32, 100), 10, 100),
    ("small, n=100, k=5", (5, 8, 100), 5, 10),
]


def direct_sum_of_gammas(shape: tuple[int, ...], k: int, iterations: int, generator: torch.Generator) -> torch.Tensor:
    """The old method: ``sum_i Gamma(1/k) * k / i`` over ``iterations`` float64 draws per entry."""
    draws = noise.gamma((iterations, *shape), 1.0 / k, dtype=torch.float64, generator=generator)
    scale = (k / torch.arange(1, iterations + 1, dtype=torch.float64)).reshape(iterations, *[1] * len(shape))
    return (((draws * scale).sum(0) - math.log(iterations)) / k).float()


def interleaved_medians(functions: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each function, timing them in turn so that load changes hit all alike."""
    for function in functions.values():
        function()
    times: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    generator = torch.Generator().manual_seed(0)
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.dtype}, load average {os.getloadavg()}")
    print("| case | shape | gumbel | sum_of_gamma | ratio | direct sum (old) | speed-up |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for description, shape, k, iterations in CASES:
        noise.sum_of_gamma((1,), k=k, iterations=iterations)  # the mixture table, built once per (k, s)
        medians = interleaved_medians(
            {
                "gumbel": lambda: noise.gumbel(shape, dtype=dtype, generator=generator),
                "sum_of_gamma": lambda: noise.sum_of_gamma(
                    shape, k=k, iterations=iterations, dtype=dtype, generator=generator
                ),
            },
            args.repeats,
        )
        # Timed apart: its iterations-fold float64 buffers, freed between calls,
        # would make the allocator hand the other two fresh (page-faulting) memory.
        direct = interleaved_medians({"direct": lambda: direct_sum_of_gammas(shape, k, iterations, generator)}, 3)
        gumbel, fast, direct = medians["gumbel"], medians["sum_of_gamma"], direct["direct"]
        print(
            f"| {description} | {list(shape)} | {gumbel * 1e3:.3f} ms | {fast * 1e3:.3f} ms | "
            f"{fast / gumbel:.2f}x | {direct * 1e3:.2f} ms | {direct / fast:.0f}x |"
        )


if __name__ == "__main__":
    main()

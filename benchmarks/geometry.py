"""Speed, accuracy and memory of the geometry heads against reference tools, in one run.

Sinkhorn (float32, CPU, eps = 0.01, points uniform in the unit square, squared
Euclidean cost), forward + backward to the points, at N = M = 1000 and at B = 64,
N = M = 100:

* at the same tolerance against POT's log-domain Sinkhorn on torch tensors:
  ``ot.solve(..., method="sinkhorn_log", grad="envelope")`` (``ot.solve_batch`` with
  "log_sinkhorn" for the batch) and ``ot.sinkhorn2(..., method="sinkhorn_log")``,
  which back-propagates through every iteration (a loop over the batch). POT's
  tolerance is an L2 norm of one marginal's error (checked every 10 iterations),
  combgrad's an L1 norm: POT gets ``1e-4 / sqrt(N)``, and combgrad then runs to the
  L1 marginal error that POT's plan reached (the table shows every plan's error).
* at the same accuracy against GeomLoss ``SamplesLoss("sinkhorn", p=2,
  blur=sqrt(eps / 2), backend="tensorized")``: its cost is |x - y|^2 / 2 and its
  eps is blur^2, so twice its value is OT_eps here. GeomLoss runs a fixed
  eps-scaling schedule, not to a tolerance; its relative error against a tight
  float64 reference is measured, and combgrad (with ``eps_scaling=0.5``) runs at
  the loosest tolerance of a ladder that is at least as accurate. Both the
  regularized value (``debias=False``) and the debiased divergence are compared.

Then PQE-LH, PQE-GG and IQE forward + backward on 4096 pairs of 64-dim latents, and
the peak memory of the batched Sinkhorn against 3 B N M floats (from the
profiler's allocation events). Times are medians over ``--repeats`` runs after a
warm-up; the machine's load average is printed with them.

Usage:
    python benchmarks/geometry.py                # the full table (a few minutes)
    python benchmarks/geometry.py --repeats 3 --threads 1   # on a loaded machine: 2 OpenMP
                                                            # threads on 2 busy cores thrash
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

import combgrad as cg
from timing import median_seconds

EPS = 0.01
TOL = 1e-4  # combgrad's L1 marginal tolerance for the same-tolerance comparison
LADDER = (0.3, 0.1, 0.03, 0.01, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5)

try:
    import ot
except ImportError:  # pragma: no cover - depends on the environment
    ot = None
try:
    from geomloss import SamplesLoss
except ImportError:  # pragma: no cover
    SamplesLoss = None


@dataclass
class Row:
    case: str
    method: str
    seconds: float
    marginal_error: float | None  # L1, worst instance
    relative_error: float  # of the value against the tight reference
    note: str = ""
    peak_bytes: int | None = None


def interleaved_medians(runs: list[Callable[[], object]], repeats: int) -> list[float]:
    """Median wall time of each run, timing them in turn ``repeats`` times (all warm).

    Runs that take seconds (POT unrolled) are timed in the first three rounds only.
    """
    times: list[list[float]] = [[] for _ in runs]
    for round_index in range(repeats):
        for run, record in zip(runs, times):
            if round_index >= 3 and record and statistics.median(record) > 2.0:
                continue
            start = time.perf_counter()
            run()
            record.append(time.perf_counter() - start)
    return [statistics.median(record) for record in times]


def load() -> str:
    with open("/proc/loadavg") as handle:
        return " ".join(handle.read().split()[:3])


def peak_allocated_bytes(fn: Callable[[], object]) -> int | None:
    """Peak CPU bytes allocated while ``fn`` runs, from the profiler's allocation events."""
    try:
        from torch._C._profiler import _EventType
    except ImportError:
        return None
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events, stack = [], list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        event = stack.pop()
        if event.tag == _EventType.Allocation:
            events.append((event.start_time_ns, event.extra_fields.alloc_size))
        stack.extend(event.children)
    total = peak = 0
    for _, size in sorted(events):
        total += size
        peak = max(peak, total)
    return peak


def marginal_error(plan: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> float:
    """``max(||P 1 - a||_1, ||P^T 1 - b||_1)`` over the batch, in float64."""
    plan = plan.detach().double()
    rows = (plan.sum(-1) - a.double()).abs().sum(-1)
    columns = (plan.sum(-2) - b.double()).abs().sum(-1)
    return float(torch.maximum(rows, columns).max())


def relative(value: torch.Tensor, reference: torch.Tensor) -> float:
    return float(((value.detach().double() - reference) / reference).abs().max())


def squared_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.cdist(x, y) ** 2


class Case:
    """One problem size: float32 points and tight float64 references."""

    def __init__(self, batch: int, n: int, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.batch, self.n = batch, n
        self.name = f"N=M={n}" if batch == 1 else f"B={batch}, N=M={n}"
        self.x = torch.rand(batch, n, 2, generator=generator)
        self.y = torch.rand(batch, n, 2, generator=generator)
        self.a = torch.full((batch, n), 1.0 / n)
        self.b = torch.full((batch, n), 1.0 / n)
        x64, y64 = self.x.double(), self.y.double()
        tight = {"tol": 1e-10, "max_iter": 200_000, "eps_scaling": 0.5}
        self.reference = cg.geometry.sinkhorn(None, None, squared_distances(x64, y64), EPS, **tight)
        self.reference_divergence = cg.geometry.sinkhorn_divergence(x64, y64, EPS, **tight)

    def points(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Fresh leaf copies that require grad (so every run does the same work)."""
        return self.x.clone().requires_grad_(), self.y.clone().requires_grad_()


def combgrad_ot(case: Case, tol: float, eps_scaling: float | None):
    def run():
        x, y = case.points()
        out = cg.geometry.sinkhorn(None, None, squared_distances(x, y), EPS, tol=tol, max_iter=10_000,
                                   eps_scaling=eps_scaling)
        out.value.sum().backward()
        return out
    return run


def combgrad_divergence(case: Case, tol: float):
    def run():
        x, y = case.points()
        value = cg.geometry.sinkhorn_divergence(x, y, EPS, tol=tol, max_iter=10_000, eps_scaling=0.5)
        value.sum().backward()
        return value
    return run


def pot_envelope(case: Case, tol: float):
    def run():
        x, y = case.points()
        M = squared_distances(x, y)
        if case.batch == 1:
            res = ot.solve(M[0], case.a[0], case.b[0], reg=EPS, method="sinkhorn_log", grad="envelope",
                           tol=tol, max_iter=10_000)
            plan, value = res.plan[None], res.value[None]
        else:
            res = ot.solve_batch(M, EPS, case.a, case.b, max_iter=10_000, tol=tol, method="log_sinkhorn",
                                 reg_type="kl", grad="envelope")
            plan, value = res.plan, res.value
        value.sum().backward()
        return plan, value
    return run


def pot_unrolled(case: Case, tol: float, with_plan: bool = False):
    """POT's sinkhorn2, back-propagated through its iterations; ``with_plan`` (untimed) also returns the plans."""
    def run():
        x, y = case.points()
        M = squared_distances(x, y)
        costs, plans = [], []
        for i in range(case.batch):
            cost = ot.sinkhorn2(case.a[i], case.b[i], M[i], EPS, method="sinkhorn_log", stopThr=tol,
                                numItermax=10_000)
            costs.append(cost)
        torch.stack(costs).sum().backward()
        if not with_plan:
            return costs
        with torch.no_grad():  # the plan for the accuracy column (same deterministic iterations)
            for i in range(case.batch):
                plans.append(ot.sinkhorn(case.a[i], case.b[i], M[i].detach(), EPS, method="sinkhorn_log",
                                         stopThr=tol, numItermax=10_000))
        return torch.stack(plans), torch.stack(costs)
    return run


def geomloss_run(case: Case, debias: bool):
    loss = SamplesLoss("sinkhorn", p=2, blur=math.sqrt(EPS / 2), backend="tensorized", debias=debias)

    def run():
        x, y = case.points()
        value = 2.0 * loss(x, y)  # twice: GeomLoss's cost is |x - y|^2 / 2
        value.sum().backward()
        return value
    return run


def loosest_tolerance(make_run, reference: torch.Tensor, target: float) -> tuple[float, float]:
    """The loosest ladder tolerance whose relative error is at most ``target`` (untimed)."""
    error = math.inf
    for tol in LADDER:
        value = make_run(tol)()
        value = value.value if hasattr(value, "value") else value
        error = relative(value, reference)
        if error <= target:
            return tol, error
    return LADDER[-1], error


def sinkhorn_rows(case: Case, repeats: int) -> list[Row]:
    """Accuracy from one untimed call of each method, then all timed interleaved.

    Interleaving the repeats (A, B, C, A, B, C, ...) spreads the load of a shared
    machine evenly over the methods instead of over whichever ran during a spike.
    """
    rows: list[Row] = []
    runs: list[Callable[[], object]] = []
    reference = case.reference.value

    def add(row: Row, run: Callable[[], object]) -> None:
        rows.append(row)
        runs.append(run)

    tol = TOL
    ours_at = len(rows)
    if ot is None:
        print("POT is not installed: its rows are skipped")
    else:
        pot_tol = TOL / math.sqrt(case.n)
        run = pot_envelope(case, pot_tol)
        plan, value = run()
        # POT checks every 10 iterations and overshoots: combgrad gets the L1 error POT reached.
        tol = marginal_error(plan, case.a, case.b)
        name = "POT ot.solve" if case.batch == 1 else "POT ot.solve_batch"
        add(Row(case.name, f"{name} (log, envelope)", math.nan, tol, relative(value, reference),
                f"tol={pot_tol:.1e} (L2)"), run)
        plan, cost = pot_unrolled(case, pot_tol, with_plan=True)()
        run = pot_unrolled(case, pot_tol)  # the call above warmed it up
        loop = "" if case.batch == 1 else f", loop over {case.batch}"
        add(Row(case.name, f"POT ot.sinkhorn2 (log, unrolled{loop})", math.nan, marginal_error(plan, case.a, case.b),
                relative(cost, case.reference.cost), f"tol={pot_tol:.1e} (L2); value = <P, C>"), run)
    for label, scaling in (("combgrad sinkhorn", None), ("combgrad sinkhorn, eps_scaling=0.5", 0.5)):
        run = combgrad_ot(case, tol, scaling)
        out = run()
        rows.insert(ours_at, Row(case.name, label, math.nan, float(out.error.max()), relative(out.value, reference),
                                 f"tol={tol:.1e} (L1), {out.iterations} iterations"))
        runs.insert(ours_at, run)
        ours_at += 1
    if SamplesLoss is None:
        print("GeomLoss is not installed: its rows are skipped")
    else:
        for debias, reference_value in ((False, reference), (True, case.reference_divergence)):
            run = geomloss_run(case, debias)
            error = relative(run(), reference_value)
            what = "divergence" if debias else "OT_eps"
            add(Row(case.name, f"GeomLoss tensorized ({what})", math.nan, None, error, "fixed eps schedule"), run)
            if debias:
                matched, ours_error = loosest_tolerance(lambda t: combgrad_divergence(case, t), reference_value, error)
                run, label = combgrad_divergence(case, matched), "combgrad sinkhorn_divergence, eps_scaling=0.5"
            else:
                matched, ours_error = loosest_tolerance(lambda t: combgrad_ot(case, t, 0.5), reference_value, error)
                run, label = combgrad_ot(case, matched, 0.5), "combgrad sinkhorn, eps_scaling=0.5"
            add(Row(case.name, label, math.nan, None, ours_error, f"tol={matched:g}: GeomLoss's accuracy"), run)
    for row, seconds in zip(rows, interleaved_medians(runs, repeats)):
        row.seconds = seconds
    for geomloss, ours in zip(rows, rows[1:]):
        if geomloss.method.startswith("GeomLoss"):
            ours.note += f"; {geomloss.seconds / ours.seconds:.2f}x GeomLoss's speed"
    return rows


def memory_rows(case: Case) -> list[Row]:
    """Peak bytes of each method's forward + backward on the batched case (one run each).

    The solvers alone get a leaf cost matrix (alive throughout, as an input is);
    the point-cloud rows include building the cost matrix and its backward.
    """
    C = squared_distances(case.x, case.y)

    def combgrad_solver():
        cost = C.clone().requires_grad_()
        cg.geometry.sinkhorn(None, None, cost, EPS, tol=TOL).value.sum().backward()

    def combgrad_points():
        x, y = case.points()
        dist, _, _ = cg.geometry.SinkhornDistance(eps=EPS, max_iter=10_000, tol=TOL)(x, y)
        dist.sum().backward()

    def pot_solver():
        cost = C.clone().requires_grad_()
        res = ot.solve_batch(cost, EPS, case.a, case.b, max_iter=10_000, tol=TOL / math.sqrt(case.n),
                             method="log_sinkhorn", reg_type="kl", grad="envelope")
        res.value.sum().backward()

    runs = {"combgrad sinkhorn (given C)": combgrad_solver, "combgrad SinkhornDistance (points)": combgrad_points}
    if ot is not None:
        runs["POT ot.solve_batch (log, envelope; given C)"] = pot_solver
    if SamplesLoss is not None:
        runs["GeomLoss tensorized (OT_eps; points)"] = geomloss_run(case, False)
    rows = []
    for label, run in runs.items():
        run()  # warm caches so that one-off allocations do not count
        rows.append(Row(case.name, label, math.nan, None, math.nan, "", peak_allocated_bytes(run)))
    return rows


def quasimetric_times(repeats: int) -> list[tuple[str, float]]:
    heads = {}
    if hasattr(cg.geometry, "PQE"):
        heads["PQE-LH"] = cg.geometry.PQE(16, 4, measure="lebesgue", shape="halfline")
        heads["PQE-GG"] = cg.geometry.PQE(16, 4, measure="gaussian", shape="gaussian")
    else:
        print("cg.geometry.PQE does not exist: PQE rows skipped")
    if hasattr(cg.geometry, "IQE"):
        heads["IQE"] = cg.geometry.IQE(64, 16)
    else:
        print("cg.geometry.IQE does not exist: IQE row skipped")
    generator = torch.Generator().manual_seed(1)
    u0 = torch.randn(4096, 64, generator=generator)
    v0 = torch.randn(4096, 64, generator=generator)
    times = []
    for name, head in heads.items():
        def run(head=head):
            u, v = u0.clone().requires_grad_(), v0.clone().requires_grad_()
            head(u, v).sum().backward()
        times.append((name, median_seconds(run, repeats)))
    return times


def print_tables(rows: list[Row], memory: list[Row], quasimetric: list[tuple[str, float]], case_b: Case) -> None:
    print("\n| case | method | fwd+bwd (s) | vs combgrad | L1 marginal error | rel. error of value | notes |")
    print("|---|---|---:|---:|---:|---:|---|")
    for row in rows:
        ours = next(r.seconds for r in rows if r.case == row.case and r.method == "combgrad sinkhorn")
        margin = "n/a" if row.marginal_error is None else f"{row.marginal_error:.1e}"
        print(f"| {row.case} | {row.method} | {row.seconds:.3f} | {row.seconds / ours:.2f}x | {margin} | "
              f"{row.relative_error:.1e} | {row.note} |")
    if memory:
        cube = 4 * case_b.batch * case_b.n * case_b.n
        print(f"\n| peak memory, fwd+bwd, {case_b.name} | MB | in B*N*M float32 |")
        print("|---|---:|---:|")
        for row in memory:
            if row.peak_bytes is None:
                print(f"| {row.method} | n/a | n/a |")
            else:
                print(f"| {row.method} | {row.peak_bytes / 2**20:.1f} | {row.peak_bytes / cube:.2f} |")
    if quasimetric:
        print("\n| head (4096 pairs, 64-dim) | fwd+bwd (ms) |")
        print("|---|---:|")
        for name, seconds in quasimetric:
            print(f"| {name} | {1e3 * seconds:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description="Geometry heads against POT and GeomLoss.")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"POT {getattr(ot, '__version__', 'missing')}, GeomLoss {'present' if SamplesLoss else 'missing'}")
    print(f"load average before: {load()}")
    start = time.perf_counter()
    cases = [Case(1, 1000), Case(64, 100)]
    rows = [row for case in cases for row in sinkhorn_rows(case, args.repeats)]
    memory = memory_rows(cases[1])
    quasimetric = quasimetric_times(args.repeats)
    print(f"load average after: {load()}  ({time.perf_counter() - start:.0f} s)")
    print_tables(rows, memory, quasimetric, cases[1])


if __name__ == "__main__":
    main()

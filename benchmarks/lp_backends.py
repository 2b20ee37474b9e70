"""Why ``lp`` runs GLOP: combgrad's ``lp`` against HiGHS (``highspy``) and ``ilp``, in one run.

Each row times one batch of objectives on one LP, per instance:

* ``lp``: combgrad's solver (OR-Tools GLOP through the model builder, no presolve,
  every instance from scratch);
* HiGHS cold: ``highspy`` with the model passed once, the costs changed per
  instance and the solver state cleared before each solve (the same
  batch-independent tie rule as ``lp``);
* HiGHS warm: the same, reusing the previous instance's basis (faster on some
  LPs, but the vertex chosen for a tied objective then depends on the previous
  instance);
* ``ilp`` (CP-SAT) on the flow LP, whose vertices are integral.

Rows: PyEPO's 5x5 shortest-path flow LP (40 arcs, 25 equalities, 0 <= x <= 1),
a dense 100 x 100 ``A x <= b`` LP with x >= 0 (sense max), and the same with
x <= 1. Objective values are checked to agree (relative 1e-7).

Usage:
    python benchmarks/lp_backends.py                 # batch 32, 5 repeats
    python benchmarks/lp_backends.py --batch 64 --repeats 9
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import torch

import combgrad as cg
from timing import median_seconds


def flow_lp(rows: int = 5, cols: int = 5) -> dict:
    """PyEPO's grid arcs (per row: rightward arcs, then downward ones) as a unit flow from node 0 to the last."""
    arcs = []
    for row in range(rows):
        arcs += [(row * cols + col, row * cols + col + 1) for col in range(cols - 1)]
        if row < rows - 1:
            arcs += [(row * cols + col, (row + 1) * cols + col) for col in range(cols)]
    incidence = np.zeros((rows * cols, len(arcs)))
    for k, (tail, head) in enumerate(arcs):
        incidence[tail, k], incidence[head, k] = -1.0, 1.0
    supply = np.zeros(rows * cols)
    supply[0], supply[-1] = -1.0, 1.0
    return {"A_eq": incidence, "b_eq": supply, "upper": 1.0}


def dense_lp(size: int, upper: float | None) -> dict:
    rng = np.random.default_rng(0)
    A = rng.uniform(0, 1, size=(size, size))
    return {"A": A, "b": A.sum(axis=1) * 0.3, "upper": upper, "sense": "max"}


def highs_solver(options: dict, warm: bool):
    """A function returning the optimal x of each row by HiGHS; the model is passed once."""
    import highspy

    A = options.get("A", options.get("A_eq"))
    n = A.shape[1]
    equality = "A_eq" in options
    rhs = options["b_eq"] if equality else options["b"]
    infinity = highspy.kHighsInf
    highs = highspy.Highs()
    highs.setOptionValue("output_flag", False)
    upper = options.get("upper")
    highs.addVars(n, np.zeros(n), np.full(n, infinity if upper is None else upper))
    for row, value in zip(A, rhs):
        support = np.flatnonzero(row).astype(np.int32)
        highs.addRow(value if equality else -infinity, value, len(support), support, row[support])
    maximize = options.get("sense") == "max"
    highs.changeObjectiveSense(highspy.ObjSense.kMaximize if maximize else highspy.ObjSense.kMinimize)
    indices = np.arange(n, dtype=np.int32)

    def solve(costs: np.ndarray) -> np.ndarray:
        solutions = []
        for row in costs:
            highs.changeColsCost(n, indices, row)
            if not warm:
                highs.clearSolver()
            highs.run()
            assert highs.getModelStatus() == highspy.HighsModelStatus.kOptimal
            solutions.append(np.array(highs.getSolution().col_value))
        return np.array(solutions)

    return solve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f}; batch {args.batch}; median of {args.repeats}; us per instance")
    print("| LP | lp (GLOP) | HiGHS cold | HiGHS warm | ilp (CP-SAT) | HiGHS cold / lp |")
    print("|---|---|---|---|---|---|")
    rng = np.random.default_rng(1)
    rows = [("PyEPO 5x5 flow (40 vars)", flow_lp()), ("dense 100 x 100, x >= 0", dense_lp(100, None)), ("dense 100 x 100, 0 <= x <= 1", dense_lp(100, 1.0))]
    for label, options in rows:
        lp = cg.solvers.get("lp", **options)
        theta = rng.uniform(0, 1, size=(args.batch, lp.n))
        tensor = torch.from_numpy(theta)
        per = 1e6 / args.batch
        times = {"lp": median_seconds(lambda: lp(tensor), args.repeats) * per}
        reference = (theta * lp(tensor).numpy()).sum(axis=1)
        for name, warm in (("cold", False), ("warm", True)):
            try:
                highs = highs_solver(options, warm)
            except ImportError:
                times[name] = float("nan")
                continue
            values = (theta * highs(theta)).sum(axis=1)
            assert np.allclose(values, reference, rtol=1e-7, atol=1e-9), f"{label}: HiGHS {name} disagrees"
            times[name] = median_seconds(lambda: highs(theta), args.repeats) * per
        if "A_eq" in options:
            ilp = cg.solvers.get("ilp", A_eq=options["A_eq"], b_eq=options["b_eq"])
            assert np.allclose((theta * ilp(tensor).numpy()).sum(axis=1), reference, rtol=1e-6)
            times["ilp"] = median_seconds(lambda: ilp(tensor), args.repeats) * per
        ilp_cell = f"{times['ilp']:.0f}" if "ilp" in times else "-"
        print(
            f"| {label} | {times['lp']:.0f} | {times['cold']:.0f} | {times['warm']:.0f} | {ilp_cell} | "
            f"{times['cold'] / times['lp']:.2f}x |"
        )


if __name__ == "__main__":
    main()

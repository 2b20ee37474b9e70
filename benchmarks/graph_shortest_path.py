"""Speed of ``graph_shortest_path`` against networkx, in one run.

Each row times one batch of cost vectors with combgrad (the numba backend; the
torch backend on the CPU as a second column) and the same instances with
networkx's Dijkstra on a graph built once whose edge weights are set per
instance (the cheapest way a user would call networkx), and prints per-batch
medians and the ratio as a markdown table.

Rows: PyEPO's 5x5 grid (40 arcs right and down, a DAG: the topological-order
programme runs), the same grid undirected (cycles: Dijkstra runs), and a random
directed graph of 1,000 nodes and 5,000 random edges plus a chain through all
nodes (Dijkstra).

Usage:
    python benchmarks/graph_shortest_path.py               # batch 32, 20 repeats
    python benchmarks/graph_shortest_path.py --batch 256 --repeats 50
    python benchmarks/graph_shortest_path.py --torch-threads 1   # a loaded machine
"""

from __future__ import annotations

import argparse
import os

import networkx as nx
import numpy as np
import torch

import combgrad as cg
from timing import median_seconds


def grid_arcs(rows: int, cols: int) -> np.ndarray:
    """PyEPO's arc order: per row, the rightward arcs, then (but on the last row) the downward ones."""
    arcs = []
    for row in range(rows):
        arcs += [(row * cols + col, row * cols + col + 1) for col in range(cols - 1)]
        if row < rows - 1:
            arcs += [(row * cols + col, (row + 1) * cols + col) for col in range(cols)]
    return np.array(arcs)


def random_graph(rng: np.random.Generator, nodes: int, edges: int) -> np.ndarray:
    tails = rng.integers(0, nodes, size=2 * edges)
    heads = rng.integers(0, nodes, size=2 * edges)
    keep = tails != heads
    pairs = np.stack([tails[keep], heads[keep]], axis=1)[:edges]
    chain = np.stack([np.arange(nodes - 1), np.arange(1, nodes)], axis=1)
    return np.concatenate([pairs, chain])


def networkx_solver(edges: np.ndarray, directed: bool, target: int):
    """A function returning each row's cheapest cost by networkx's Dijkstra; the graph is built once."""
    graph = nx.MultiDiGraph() if directed else nx.MultiGraph()
    keys = [graph.add_edge(int(tail), int(head)) for tail, head in edges]

    def solve(costs: np.ndarray) -> list[float]:
        lengths = []
        for row in costs:
            for (tail, head), key, cost in zip(edges, keys, row):
                graph[tail][head][key]["weight"] = cost
            length, _ = nx.single_source_dijkstra(graph, 0, target, weight="weight")
            lengths.append(length)
        return lengths

    return solve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument(
        "--torch-threads", type=int, default=None,
        help="torch.set_num_threads for the run (default: torch's own); on a loaded 2-core machine "
        "torch's two intra-op threads made the solver's input checks take 20 ms instead of 0.03 ms",
    )
    args = parser.parse_args()
    if args.torch_threads is not None:
        torch.set_num_threads(args.torch_threads)
    rng = np.random.default_rng(0)
    cases = [
        ("PyEPO 5x5 grid (DAG)", grid_arcs(5, 5), True),
        ("5x5 grid, undirected", grid_arcs(5, 5), False),
        ("random digraph, 1,000 nodes", random_graph(rng, 1000, 5000), True),
    ]
    running = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"batch {args.batch}, median of {args.repeats}; numba threads {cg.solvers.get_num_threads()}, "
        f"torch threads {torch.get_num_threads()}, "
        f"load average {running:.2f} at start"
    )
    print()
    print("| graph | nodes | edges | numba ms/batch | torch (CPU) ms/batch | networkx ms/batch | networkx / numba |")
    print("|---|---|---|---|---|---|---|")
    for label, edges, directed in cases:
        nodes = int(edges.max()) + 1
        costs = torch.from_numpy(rng.random((args.batch, len(edges))))
        numba = cg.solvers.get("graph_shortest_path", edges=edges, directed=directed, backend="numba")
        torch_backend = cg.solvers.get("graph_shortest_path", edges=edges, directed=directed, backend="torch")
        reference = networkx_solver(edges, directed, nodes - 1)
        # The same optimal costs (checked once, outside the timing).
        ours = (numba(costs) * costs).sum(1).numpy()
        assert np.allclose(ours, reference(costs.numpy()), rtol=1e-12)
        assert torch.equal(numba(costs), torch_backend(costs))
        seconds = median_seconds(lambda: numba(costs), args.repeats)
        torch_seconds = median_seconds(lambda: torch_backend(costs), args.repeats)
        reference_seconds = median_seconds(lambda: reference(costs.numpy()), max(3, args.repeats // 5))
        print(
            f"| {label} | {nodes} | {len(edges)} | {seconds * 1e3:.3f} | {torch_seconds * 1e3:.3f} | "
            f"{reference_seconds * 1e3:.3f} | {reference_seconds / seconds:.1f}x |"
        )


if __name__ == "__main__":
    main()

"""Learn the shortest-path quasimetric of a random directed graph from node embeddings.

Each node gets a learned embedding, passed through a small shared MLP encoder to a
64-dim latent; a head turns two latents into a distance. Heads: PQE-LH, PQE-GG and
IQE (quasimetrics by construction: they satisfy the triangle inequality whatever
their parameters) and an unconstrained MLP on the concatenated latent pair. All
are trained with MSE on the distances of a random subset of node pairs and tested
on the held-out pairs, the first experiment of Wang & Isola (ICLR 2022), small.
The quasimetric heads generalize from the training pairs through the triangle
inequality; the MLP has no such structure to lean on.

    python examples/quasimetric_graph.py                 # < 1 minute on one CPU core
    python examples/quasimetric_graph.py --nodes 16 --steps 20   # seconds
    python examples/quasimetric_graph.py --time --threads 2      # forward+backward timings

References:
    Tongzhou Wang, Phillip Isola. "On the Learning and Learnability of
    Quasimetrics." ICLR 2022.
    Tongzhou Wang, Phillip Isola. "Improved Representation of Asymmetrical
    Distances with Interval Quasimetric Embeddings." 2022 (arXiv:2211.15120).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence

import networkx as nx
import numpy as np
import torch
from torch import nn

import combgrad as cg

LATENT_SIZE = 64
METHODS = ("PQE-LH", "PQE-GG", "IQE", "MLP")


def random_strongly_connected_digraph(num_nodes: int, out_degree: float, seed: int) -> nx.DiGraph:
    """A random directed graph with about ``out_degree`` edges per node, made strongly
    connected by a directed cycle through all nodes in random order (so every
    distance is finite)."""
    rng = np.random.default_rng(seed)
    graph = nx.gnp_random_graph(num_nodes, out_degree / num_nodes, seed=seed, directed=True)
    cycle = rng.permutation(num_nodes)
    graph.add_edges_from(zip(cycle, np.roll(cycle, -1)))
    return graph


def shortest_path_distances(graph: nx.DiGraph) -> np.ndarray:
    """Hop distances ``[N, N]``; entry ``[i, j]`` is the length of a shortest path i -> j."""
    num_nodes = graph.number_of_nodes()
    distances = np.zeros((num_nodes, num_nodes))
    for source, lengths in nx.all_pairs_shortest_path_length(graph):
        for target, length in lengths.items():
            distances[source, target] = length
    return distances


class PairMLP(nn.Module):
    """The unconstrained baseline: an MLP on the concatenated pair ``[u, v]``."""

    def __init__(self, latent_size: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(2 * latent_size, 256), nn.ReLU(), nn.Linear(256, 1))

    def forward(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.mlp(torch.cat([u, v], dim=-1)).squeeze(-1)


class PairModel(nn.Module):
    """Node embeddings, a shared MLP encoder, and a head on (source, target) latents."""

    def __init__(self, num_nodes: int, method: str) -> None:
        super().__init__()
        self.embedding = nn.Embedding(num_nodes, LATENT_SIZE)
        self.encoder = nn.Sequential(nn.Linear(LATENT_SIZE, 128), nn.ReLU(), nn.Linear(128, LATENT_SIZE))
        if method == "PQE-LH":
            self.head = cg.geometry.PQE(LATENT_SIZE // 4)
        elif method == "PQE-GG":
            self.head = cg.geometry.PQE(LATENT_SIZE // 4, measure="gaussian", shape="gaussian")
        elif method == "IQE":
            self.head = cg.geometry.IQE(LATENT_SIZE, dim_per_component=16)
        elif method == "MLP":
            self.head = PairMLP(LATENT_SIZE)
        else:
            raise ValueError(f"quasimetric_graph: method must be one of {list(METHODS)}, got {method!r}")

    def forward(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        latent = self.encoder(self.embedding.weight)
        return self.head(latent[source], latent[target])


def train_and_test(
    method: str,
    distances: np.ndarray,
    train_pairs: np.ndarray,
    test_pairs: np.ndarray,
    *,
    steps: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
) -> float:
    """Train one model on ``train_pairs`` ``[P, 2]``; return its MSE on ``test_pairs``."""
    torch.manual_seed(seed)
    model = PairModel(distances.shape[0], method)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    table = torch.as_tensor(distances, dtype=torch.float32)
    train = torch.as_tensor(train_pairs)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        batch = train[torch.randint(len(train), (min(batch_size, len(train)),), generator=generator)]
        prediction = model(batch[:, 0], batch[:, 1])
        loss = torch.mean((prediction - table[batch[:, 0], batch[:, 1]]) ** 2)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        test = torch.as_tensor(test_pairs)
        prediction = model(test[:, 0], test[:, 1])
        return float(torch.mean((prediction - table[test[:, 0], test[:, 1]]) ** 2))


def time_heads(batch_size: int = 4096, repeats: int = 5, seed: int = 0) -> dict[str, float]:
    """Median seconds of forward+backward of each head on ``batch_size`` pairs of 64-dim latents."""
    torch.manual_seed(seed)
    heads: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
        "PQE-LH": cg.geometry.PQE(16),
        "PQE-GG": cg.geometry.PQE(16, measure="gaussian", shape="gaussian"),
        "IQE": cg.geometry.IQE(64, dim_per_component=16),
    }
    u = torch.randn(batch_size, 64, requires_grad=True)
    v = torch.randn(batch_size, 64, requires_grad=True)
    seconds = {}
    for name, head in heads.items():
        head(u, v).sum().backward()  # warm-up
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            head(u, v).sum().backward()
            runs.append(time.perf_counter() - start)
        seconds[name] = float(np.median(runs))
    return seconds


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    """Run the experiment (or the timings with ``--time``); returns ``{method: value}``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=48, help="number of graph nodes (default 48)")
    parser.add_argument("--out-degree", type=float, default=2.5, help="mean out-degree (default 2.5)")
    parser.add_argument("--train-fraction", type=float, default=0.5, help="fraction of pairs trained on")
    parser.add_argument("--steps", type=int, default=1000, help="Adam steps per method (default 1000)")
    parser.add_argument("--batch-size", type=int, default=256, help="pairs per step (default 256)")
    parser.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate (default 3e-3)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--time", action="store_true", help="time the heads on 4096 pairs instead")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: steps on 256 pairs gain nothing from more)",
    )
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    # Measured on a shared 2-core machine: two OpenMP threads made the 256-pair steps
    # 5-8x slower than one whenever the other core was busy.
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return run(args, parser)
    finally:
        torch.set_num_threads(previous_threads)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict[str, float]:
    """The body of :func:`main` for parsed arguments."""
    if args.time:
        seconds = time_heads()
        print(f"forward+backward, 4096 pairs of 64-dim latents, {torch.get_num_threads()} threads")
        for name, value in seconds.items():
            print(f"{name:8s} {value * 1e3:9.1f} ms")
        return seconds

    if args.nodes < 3 or not 0 < args.train_fraction < 1:
        parser.error("need --nodes >= 3 and 0 < --train-fraction < 1")
    graph = random_strongly_connected_digraph(args.nodes, args.out_degree, args.seed)
    distances = shortest_path_distances(graph)
    pairs = np.argwhere(~np.eye(args.nodes, dtype=bool))
    pairs = pairs[np.random.default_rng(args.seed).permutation(len(pairs))]
    split = int(round(args.train_fraction * len(pairs)))
    train_pairs, test_pairs = pairs[:split], pairs[split:]
    asymmetric = np.mean(distances != distances.T)
    train_targets = distances[train_pairs[:, 0], train_pairs[:, 1]]
    test_targets = distances[test_pairs[:, 0], test_pairs[:, 1]]
    constant_error = np.mean((test_targets - train_targets.mean()) ** 2)
    print(
        f"graph: {args.nodes} nodes, {graph.number_of_edges()} edges, distances 1..{int(distances.max())}, "
        f"{asymmetric:.0%} of pairs asymmetric; train {len(train_pairs)} pairs, test {len(test_pairs)}; "
        f"predicting the training mean gives test MSE {constant_error:.4f}"
    )
    print(f"{'method':8s} {'test MSE':>9s} {'seconds':>8s}")
    errors = {}
    for method in args.methods:
        start = time.perf_counter()
        errors[method] = train_and_test(
            method,
            distances,
            train_pairs,
            test_pairs,
            steps=args.steps,
            batch_size=args.batch_size,
            learning_rate=args.lr,
            seed=args.seed,
        )
        print(f"{method:8s} {errors[method]:9.4f} {time.perf_counter() - start:8.1f}")
    return errors


if __name__ == "__main__":
    main()

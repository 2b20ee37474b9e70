"""Springs data of the NRI task: particles joined by springs along a random spanning tree.

Each system has ``n`` particles in a 2-D box with elastic walls; a uniformly random
labelled spanning tree (a random Prüfer sequence, so every one of the ``n^(n-2)``
trees is equally likely) says which pairs are joined by a spring. The dynamics are
those of the NRI springs simulator (Kipf et al., 2018): the force on particle ``i``
is ``F_i = -k sum_j A_ij (x_i - x_j)`` (each component clipped at ``0.1 / dt``),
integrated with the kick-drift leapfrog scheme at step ``dt``; particles start at
``N(0, loc_std^2)`` with velocities of norm ``vel_norm`` in a random direction, and
a particle crossing a wall at ``+-box_size`` is reflected with its velocity turned
inwards. Every ``sample_every`` integration steps the positions and velocities are
recorded, ``steps`` times (the first record is the initial state): a trajectory is
``[steps, n, 4]`` (x, y, vx, vy).

On disk a data set is a folder holding ``meta.json`` (generator version and
settings) and per split ``{split}_trajectories.npy`` ``[N, T, n, 4]`` float32 and
``{split}_trees.npy`` ``[N, n, n]`` uint8 symmetric adjacencies, written at once
by :func:`~combgrad.tasks._training.files.atomic_folder` (a killed writer leaves
nothing half-written). The same seed gives byte-identical files.

References:
    T. Kipf, E. Fetaya, K.-C. Wang, M. Welling, R. Zemel. Neural Relational
    Inference for Interacting Systems. ICML 2018.

    H. Prüfer. Neuer Beweis eines Satzes über Permutationen. Archiv der
    Mathematik und Physik 27, 742-744, 1918.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..._checks import check_number, check_positive_int
from .._training.files import atomic_folder

GENERATOR_VERSION = 1
"""Bumped whenever the same settings would give other data (cached sets are then remade)."""

SPLITS = ("train", "val", "test")
FEATURES = 4
"""Per particle and step: x, y, vx, vy."""


@dataclass(frozen=True)
class Physics:
    """Settings of the springs simulator (the NRI simulator's constants by default).

    Attributes:
        particles: Particles per system ``n``.
        steps: Recorded steps ``T`` per trajectory (the first is the initial state).
        sample_every: Integration steps between two records.
        dt: Integration step.
        strength: Spring constant ``k``.
        box_size: The walls are at ``+-box_size`` on both axes.
        loc_std: Standard deviation of the initial positions.
        vel_norm: Norm of each initial velocity.

    Example:
        >>> Physics().particles, Physics().steps, Physics().dt
        (10, 10, 0.001)
    """

    particles: int = 10
    steps: int = 10
    sample_every: int = 100
    dt: float = 0.001
    strength: float = 0.1
    box_size: float = 5.0
    loc_std: float = 0.5
    vel_norm: float = 0.5

    def __post_init__(self) -> None:
        check_positive_int("nri", "particles", self.particles, minimum=2)
        check_positive_int("nri", "steps", self.steps, minimum=2)
        check_positive_int("nri", "sample_every", self.sample_every)
        for name in ("dt", "strength", "box_size", "loc_std", "vel_norm"):
            check_number("nri", name, getattr(self, name), positive=True)


@dataclass
class NriSplit:
    """One split: trajectories ``[N, T, n, 4]`` (float32) and true trees ``[N, n, n]`` (uint8, symmetric)."""

    trajectories: np.ndarray
    trees: np.ndarray

    def __len__(self) -> int:
        return int(self.trajectories.shape[0])

    def head(self, count: int | None) -> NriSplit:
        """The first ``count`` systems (all when ``count`` is None)."""
        if count is None:
            return self
        return NriSplit(self.trajectories[:count], self.trees[:count])


def random_tree(particles: int, rng: np.random.Generator) -> np.ndarray:
    """A uniformly random labelled spanning tree on ``particles`` vertices, as a symmetric ``[n, n]`` uint8 adjacency.

    A random Prüfer sequence (``n - 2`` labels drawn uniformly) decodes to each of
    the ``n^(n-2)`` labelled trees exactly once (Cayley's formula), so the tree is uniform.

    Example:
        >>> tree = random_tree(5, np.random.default_rng(0))
        >>> int(tree.sum()) // 2, bool((tree == tree.T).all())
        (4, True)
    """
    n = check_positive_int("nri", "particles", particles, minimum=2)
    adjacency = np.zeros((n, n), dtype=np.uint8)
    sequence = rng.integers(0, n, size=n - 2)
    degree = np.ones(n, dtype=np.int64)
    for label in sequence:
        degree[label] += 1
    for label in sequence:
        leaf = int(np.flatnonzero(degree == 1)[0])  # the smallest leaf, as the decoding requires
        adjacency[leaf, label] = adjacency[label, leaf] = 1
        degree[leaf] -= 1
        degree[label] -= 1
    last = np.flatnonzero(degree == 1)
    adjacency[last[0], last[1]] = adjacency[last[1], last[0]] = 1
    return adjacency


def _clamp(position: np.ndarray, velocity: np.ndarray, box_size: float) -> None:
    """Elastic walls, in place: a particle beyond a wall is mirrored back and its velocity turned inwards."""
    over = position > box_size
    position[over] = 2 * box_size - position[over]
    velocity[over] = -np.abs(velocity[over])
    under = position < -box_size
    position[under] = -2 * box_size - position[under]
    velocity[under] = np.abs(velocity[under])


def _forces(position: np.ndarray, adjacency: np.ndarray, physics: Physics) -> np.ndarray:
    """``F_i = -k sum_j A_ij (x_i - x_j)`` for a batch ``[N, n, 2]``, clipped like the NRI simulator's."""
    degree = adjacency.sum(-1, keepdims=True)
    force = -physics.strength * (degree * position - adjacency @ position)
    limit = 0.1 / physics.dt
    return np.clip(force, -limit, limit)


def simulate(trees: np.ndarray, physics: Physics, rng: np.random.Generator) -> np.ndarray:
    """Trajectories of systems with springs along ``trees [N, n, n]``: ``[N, T, n, 4]`` float64.

    All systems are integrated together (one vectorised step for the batch). The
    scheme is the NRI simulator's: the initial state is recorded, then each step
    moves the positions by ``dt * v`` (reflecting at the walls), records every
    ``sample_every`` steps, and kicks the velocities by ``dt * F``.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> trees = np.stack([random_tree(4, rng) for _ in range(2)])
        >>> simulate(trees, Physics(particles=4, steps=3), rng).shape
        (2, 3, 4, 4)
    """
    count, n = trees.shape[0], trees.shape[1]
    adjacency = trees.astype(np.float64)
    position = rng.normal(0.0, physics.loc_std, size=(count, n, 2))
    velocity = rng.normal(0.0, 1.0, size=(count, n, 2))
    velocity *= physics.vel_norm / np.linalg.norm(velocity, axis=-1, keepdims=True)
    out = np.empty((count, physics.steps, n, FEATURES))
    _clamp(position, velocity, physics.box_size)
    out[:, 0, :, :2], out[:, 0, :, 2:] = position, velocity
    velocity += physics.dt * _forces(position, adjacency, physics)
    for step in range(1, (physics.steps - 1) * physics.sample_every + 1):
        position += physics.dt * velocity
        _clamp(position, velocity, physics.box_size)
        if step % physics.sample_every == 0:
            record = step // physics.sample_every
            out[:, record, :, :2], out[:, record, :, 2:] = position, velocity
        velocity += physics.dt * _forces(position, adjacency, physics)
    return out


def energy(trajectories: np.ndarray, trees: np.ndarray, strength: float) -> np.ndarray:
    """Total energy ``[N, T]`` per recorded step: kinetic ``|v|^2 / 2`` plus spring ``k |x_i - x_j|^2 / 2`` per edge.

    Conserved by the dynamics up to the integrator's error while no wall is hit.

    Example:
        >>> tree = np.array([[[0, 1], [1, 0]]], dtype=np.uint8)
        >>> state = np.array([[[[0.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]]]])
        >>> energy(state, tree, strength=0.1).tolist()
        [[0.55]]
    """
    position, velocity = trajectories[..., :2], trajectories[..., 2:]
    kinetic = 0.5 * (velocity**2).sum(axis=(-1, -2))
    difference = position[..., :, None, :] - position[..., None, :, :]  # [N, T, n, n, 2]
    squared = (difference**2).sum(-1)
    potential = 0.25 * strength * (trees[:, None].astype(np.float64) * squared).sum(axis=(-1, -2))
    return kinetic + potential


def generate_split(count: int, physics: Physics, *, seed: int, split: str) -> NriSplit:
    """``count`` systems of ``split`` (its own random stream, so each split is the same for any other counts).

    Example:
        >>> part = generate_split(3, Physics(particles=5, steps=4), seed=0, split="test")
        >>> part.trajectories.shape, part.trees.shape
        ((3, 4, 5, 4), (3, 5, 5))
    """
    if split not in SPLITS:
        raise ValueError(f"nri: split must be one of {SPLITS}, got {split!r}")
    check_positive_int("nri", f"the number of {split} systems", count, minimum=0)
    rng = np.random.default_rng([seed, SPLITS.index(split), GENERATOR_VERSION])
    trees = np.zeros((count, physics.particles, physics.particles), dtype=np.uint8)
    for index in range(count):
        trees[index] = random_tree(physics.particles, rng)
    trajectories = simulate(trees, physics, rng).astype(np.float32)
    return NriSplit(trajectories, trees)


def write_dataset(
    folder: str | os.PathLike, counts: dict[str, int], physics: Physics, *, seed: int = 0, overwrite: bool = False
) -> Path:
    """Simulate the splits and write them with ``meta.json`` to ``folder`` atomically.

    Args:
        folder: The data folder (replaced as a whole).
        counts: Systems per split, e.g. ``{"train": 2000, "val": 200, "test": 500}``.
        physics: The simulator's settings.
        seed: Seed; the same seed gives byte-identical files.
        overwrite: Replace an existing folder.

    Returns:
        ``folder`` as a :class:`~pathlib.Path`.

    Raises:
        FileExistsError: If ``folder`` exists and ``overwrite`` is False.

    Example:
        >>> import tempfile, pathlib
        >>> folder = write_dataset(pathlib.Path(tempfile.mkdtemp()) / "data", {"train": 2, "val": 1, "test": 1},
        ...                        Physics(particles=4, steps=3))
        >>> load_split(folder, "train").trajectories.shape
        (2, 3, 4, 4)
    """
    folder = Path(folder)
    with atomic_folder(folder, overwrite=overwrite) as staging:
        for name, count in counts.items():
            part = generate_split(count, physics, seed=seed, split=name)
            np.save(staging / f"{name}_trajectories.npy", part.trajectories)
            np.save(staging / f"{name}_trees.npy", part.trees)
        (staging / "meta.json").write_text(json.dumps(describe(counts, physics, seed), indent=2, sort_keys=True) + "\n")
    return folder


def describe(counts: dict[str, int], physics: Physics, seed: int) -> dict:
    """The ``meta.json`` content of a data set with these settings (a cached set is reused when it matches)."""
    return {
        "generator": "combgrad.tasks.nri.data",
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "counts": dict(counts),
        "physics": asdict(physics),
    }


def read_meta(folder: str | os.PathLike) -> dict | None:
    """The folder's ``meta.json``, or None when there is none or it is unreadable."""
    try:
        return json.loads((Path(folder) / "meta.json").read_text())
    except (OSError, ValueError):
        return None


def load_split(folder: str | os.PathLike, split: str) -> NriSplit:
    """Read one split written by :func:`write_dataset`.

    Raises:
        FileNotFoundError: Naming the missing file.
        ValueError: If the arrays do not fit together.
    """
    folder = Path(folder)
    arrays = {}
    for name in ("trajectories", "trees"):
        path = folder / f"{split}_{name}.npy"
        if not path.exists():
            raise FileNotFoundError(f"nri: {path} does not exist")
        arrays[name] = np.load(path, allow_pickle=False)
    trajectories, trees = arrays["trajectories"], arrays["trees"]
    if trajectories.ndim != 4 or trees.ndim != 3 or trajectories.shape[0] != trees.shape[0] \
            or trajectories.shape[2] != trees.shape[1]:
        raise ValueError(
            f"nri: {folder} holds {split} arrays that do not fit together: trajectories "
            f"{trajectories.shape}, trees {trees.shape} (expected [N, T, n, 4] and [N, n, n])"
        )
    return NriSplit(trajectories, trees)


def prepare_data(
    folder: str | os.PathLike, counts: dict[str, int], physics: Physics, seed: int
) -> tuple[dict[str, NriSplit], bool]:
    """The splits in ``folder``, simulated (and written) first unless a set with these settings is there.

    Returns:
        The splits and whether they were simulated now.
    """
    folder = Path(folder)
    made = read_meta(folder) != describe(counts, physics, seed)
    if made:
        write_dataset(folder, counts, physics, seed=seed, overwrite=True)
    return {name: load_split(folder, name) for name in counts}, made


__all__ = [
    "FEATURES",
    "GENERATOR_VERSION",
    "SPLITS",
    "NriSplit",
    "Physics",
    "energy",
    "generate_split",
    "load_split",
    "prepare_data",
    "random_tree",
    "read_meta",
    "simulate",
    "write_dataset",
]

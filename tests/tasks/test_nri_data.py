"""Tests of combgrad/tasks/nri/data.py: random spanning trees, the springs simulator, atomic cached files."""

from __future__ import annotations

import os
from pathlib import Path

import networkx as nx
import numpy as np
import pytest

from combgrad.tasks.nri import data as nd


@pytest.mark.parametrize("particles", [2, 3, 5, 10, 17])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_tree_is_a_spanning_tree(particles: int, seed: int) -> None:
    tree = nd.random_tree(particles, np.random.default_rng(seed))
    assert tree.dtype == np.uint8 and tree.shape == (particles, particles)
    assert (tree == tree.T).all() and (np.diag(tree) == 0).all()
    graph = nx.from_numpy_array(tree)
    assert nx.is_tree(graph) and graph.number_of_nodes() == particles


def test_random_trees_are_uniform_over_the_labelled_trees() -> None:
    """On 4 vertices there are 4^2 = 16 labelled trees (Cayley); 8,000 draws give each
    500 expected. The chi-square statistic has 15 degrees of freedom; its 99.99th
    percentile is 44.3, so a uniform sampler with this fixed seed stays below it,
    while a sampler favouring stars or paths (e.g. random-weight Kruskal) exceeds it many times."""
    rng = np.random.default_rng(0)
    counts: dict[bytes, int] = {}
    for _ in range(8000):
        key = nd.random_tree(4, rng).tobytes()
        counts[key] = counts.get(key, 0) + 1
    assert len(counts) == 16
    observed = np.array(list(counts.values()))
    assert ((observed - 500) ** 2 / 500).sum() < 44.3


def _systems(count: int, physics: nd.Physics, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    trees = np.stack([nd.random_tree(physics.particles, rng) for _ in range(count)])
    return nd.simulate(trees, physics, rng), trees


def test_energy_is_conserved_while_no_wall_is_hit() -> None:
    """With a box far larger than the motion, the leapfrog integrator conserves the
    total energy up to O(dt): 0.1% relative drift over 1,000 steps (measured 0.03%),
    while dropping the springs' velocity kick or doubling it breaks it by far more."""
    physics = nd.Physics(box_size=1e6)
    trajectories, trees = _systems(50, physics)
    energy = nd.energy(trajectories, trees, physics.strength)
    drift = np.abs(energy - energy[:, :1]) / energy[:, :1]
    assert drift.max() < 1e-3
    # The potential energy part is not negligible: otherwise the check would test nothing.
    kinetic = 0.5 * (trajectories[..., 2:] ** 2).sum(axis=(-1, -2))
    assert ((energy - kinetic) / energy).mean() > 0.1
    wrong = nd.energy(trajectories, trees, 2 * physics.strength)
    assert (np.abs(wrong - wrong[:, :1]) / wrong[:, :1]).max() > 1e-2


def _distance_change(strength: float) -> tuple[float, float]:
    """Mean change of the distance, first to last record, of joined and of unjoined pairs."""
    physics = nd.Physics(strength=strength, box_size=1e6)
    trajectories, trees = _systems(200, physics)
    position = trajectories[..., :2]
    distance = np.linalg.norm(position[:, :, :, None] - position[:, :, None, :], axis=-1)  # [N, T, n, n]
    change = distance[:, -1] - distance[:, 0]
    upper = np.triu(np.ones(trees.shape[1:], dtype=bool), 1)
    return float(change[(trees == 1) & upper].mean()), float(change[(trees == 0) & upper].mean())


def test_springs_pull_connected_particles_together() -> None:
    """With strong springs (k = 0.5: a quarter of an oscillation in the window) joined pairs
    come closer than unjoined ones (measured -0.25 and -0.06: all contract, the tree
    connects everything); with springs 250x weaker the two kinds move alike (0.166, 0.173)."""
    joined, apart = _distance_change(0.5)
    assert joined < 0 and joined < apart - 0.1
    joined, apart = _distance_change(0.002)
    assert abs(joined - apart) < 0.05


def test_velocities_follow_the_spring_forces() -> None:
    """The velocity change over one record matches ``dt * sum of forces`` integrated
    along the path (to first order: the force at the midpoint state times the span)."""
    physics = nd.Physics(particles=5, box_size=1e6, sample_every=10)
    trajectories, trees = _systems(20, physics)
    span = physics.sample_every * physics.dt
    middle = 0.5 * (trajectories[:, 1:, :, :2] + trajectories[:, :-1, :, :2])
    degree = trees.sum(-1)[:, None, :, None].astype(np.float64)
    force = -physics.strength * (degree * middle - np.einsum("bij,btjd->btid", trees.astype(np.float64), middle))
    change = trajectories[:, 1:, :, 2:] - trajectories[:, :-1, :, 2:]
    assert np.abs(change - span * force).max() < 0.02 * np.abs(change).max()


def test_walls_reflect() -> None:
    physics = nd.Physics(particles=3, box_size=0.3, loc_std=0.05, vel_norm=2.0, steps=20)
    trajectories, _ = _systems(20, physics)
    assert np.abs(trajectories[..., :2]).max() <= 0.3 + 1e-6
    assert np.abs(trajectories[..., :2]).max() > 0.25  # the walls were reached


def test_a_split_is_the_same_for_the_same_seed_and_differs_otherwise() -> None:
    physics = nd.Physics(particles=5, steps=4)
    first = nd.generate_split(6, physics, seed=3, split="train")
    again = nd.generate_split(6, physics, seed=3, split="train")
    other = nd.generate_split(6, physics, seed=4, split="train")
    test = nd.generate_split(6, physics, seed=3, split="test")
    assert first.trajectories.dtype == np.float32 and first.trajectories.shape == (6, 4, 5, 4)
    assert np.array_equal(first.trajectories, again.trajectories) and np.array_equal(first.trees, again.trees)
    assert not np.array_equal(first.trajectories, other.trajectories)
    assert not np.array_equal(first.trajectories, test.trajectories)


def test_written_files_are_byte_identical_per_seed_and_reused(tmp_path: Path) -> None:
    physics = nd.Physics(particles=4, steps=3)
    counts = {"train": 3, "val": 2, "test": 2}
    one = nd.write_dataset(tmp_path / "one", counts, physics, seed=1)
    two = nd.write_dataset(tmp_path / "two", counts, physics, seed=1)
    names = sorted(path.name for path in one.iterdir())
    assert names == sorted(path.name for path in two.iterdir())
    assert "meta.json" in names and "val_trees.npy" in names
    for name in names:
        assert (one / name).read_bytes() == (two / name).read_bytes(), name
    splits, made = nd.prepare_data(one, counts, physics, seed=1)
    assert not made and len(splits["train"]) == 3
    _, made = nd.prepare_data(one, counts, physics, seed=2)
    assert made and nd.read_meta(one)["seed"] == 2


def test_a_failed_write_leaves_the_old_folder_and_no_debris(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    physics = nd.Physics(particles=4, steps=3)
    counts = {"train": 2, "val": 1, "test": 1}
    folder = nd.write_dataset(tmp_path / "data", counts, physics, seed=0)
    before = {path.name: path.read_bytes() for path in folder.iterdir()}

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(nd, "generate_split", broken)
    with pytest.raises(OSError, match="disk full"):
        nd.write_dataset(folder, counts, physics, seed=5, overwrite=True)
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == before
    assert sorted(os.listdir(tmp_path)) == ["data"]
    with pytest.raises(FileExistsError, match="already exists"):
        nd.write_dataset(folder, counts, physics, seed=0)


def test_load_split_names_a_missing_or_mismatched_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nri: .*train_trajectories\.npy does not exist"):
        nd.load_split(tmp_path, "train")
    np.save(tmp_path / "train_trajectories.npy", np.zeros((2, 3, 4, 4), dtype=np.float32))
    np.save(tmp_path / "train_trees.npy", np.zeros((3, 4, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"do not fit together"):
        nd.load_split(tmp_path, "train")


@pytest.mark.parametrize(
    "settings, message",
    [({"particles": 1}, "particles must be an integer >= 2"), ({"dt": 0.0}, "dt must be a finite number > 0"),
     ({"steps": 1}, "steps must be an integer >= 2")],
)
def test_bad_physics_is_refused(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        nd.Physics(**settings)


def test_an_unknown_split_is_refused() -> None:
    with pytest.raises(ValueError, match="split must be one of"):
        nd.generate_split(1, nd.Physics(), seed=0, split="training")

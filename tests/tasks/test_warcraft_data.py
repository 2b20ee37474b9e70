"""Tests of combgrad/tasks/warcraft/data.py: generator, writer and original-format loader."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
import torch

from combgrad.tasks.warcraft import data as wd


def _networkx_optimum(weights: np.ndarray) -> float:
    """Cheapest top-left to bottom-right path cost (vertex costs, 8-neighbourhood), by networkx."""
    height, width = weights.shape
    graph = nx.DiGraph()
    for row, col in itertools.product(range(height), range(width)):
        for d_row, d_col in itertools.product((-1, 0, 1), repeat=2):
            other = (row + d_row, col + d_col)
            if (d_row, d_col) != (0, 0) and 0 <= other[0] < height and 0 <= other[1] < width:
                graph.add_edge((row, col), other, weight=float(weights[other]))
    return float(weights[0, 0]) + nx.dijkstra_path_length(graph, (0, 0), (height - 1, width - 1))


def _is_path(mask: np.ndarray) -> bool:
    """Whether the cells of ``mask`` form one 8-connected set holding both corners."""
    cells = [tuple(cell) for cell in np.argwhere(mask > 0)]
    graph = nx.Graph()
    graph.add_nodes_from(cells)
    graph.add_edges_from(
        (a, b) for a in cells for b in cells if a < b and max(abs(a[0] - b[0]), abs(a[1] - b[1])) == 1
    )
    end = (mask.shape[0] - 1, mask.shape[1] - 1)
    return (0, 0) in graph and end in graph and nx.is_connected(graph)


@pytest.mark.parametrize("size", [12, 18])
def test_generate_split_shapes_dtypes_and_levels(size: int) -> None:
    split = wd.generate_split(size, 5, seed=3)
    assert split.maps.shape == (5, 8 * size, 8 * size, 3) and split.maps.dtype == np.uint8
    assert split.vertex_weights.shape == (5, size, size) and split.vertex_weights.dtype == np.float16
    assert split.shortest_paths.shape == (5, size, size) and split.shortest_paths.dtype == np.uint8
    levels = np.asarray(wd.COST_LEVELS, dtype=np.float16)
    assert np.isin(split.vertex_weights, levels).all()
    assert len(split) == 5 and split.size == size


@pytest.mark.parametrize("seed", [0, 1])
def test_paths_are_optimal_against_networkx(seed: int) -> None:
    split = wd.generate_split(12, 6, seed=seed, split="val")
    for weights, path in zip(split.vertex_weights.astype(np.float64), split.shortest_paths):
        assert _is_path(path)
        assert np.isclose((weights * path).sum(), _networkx_optimum(weights), rtol=1e-9)


def test_generator_is_deterministic_per_seed_and_prefix_stable() -> None:
    first = wd.generate_split(12, 130, seed=7)
    again = wd.generate_split(12, 130, seed=7)
    for field in wd.FIELDS:
        np.testing.assert_array_equal(getattr(first, field), getattr(again, field))
    other = wd.generate_split(12, 130, seed=8)
    assert not np.array_equal(first.maps, other.maps)
    prefix = wd.generate_split(12, 3, seed=7)
    np.testing.assert_array_equal(prefix.maps, first.maps[:3])
    # The splits of one seed are different draws.
    assert not np.array_equal(wd.generate_split(12, 3, seed=7, split="test").maps, prefix.maps)


def test_terrain_is_spatially_coherent_and_textures_vary() -> None:
    split = wd.generate_split(12, 64, seed=0)
    weights = split.vertex_weights.astype(np.float64)
    # Coherent regions: right-hand neighbours share the terrain far more often than
    # independent tiles with the same frequencies would.
    same_neighbour = (weights[:, :, 1:] == weights[:, :, :-1]).mean()
    frequencies = np.array([(weights == level).mean() for level in np.unique(weights)])
    assert same_neighbour > (frequencies**2).sum() + 0.2
    # Every terrain appears, and two tiles of one terrain never look identical.
    assert len(np.unique(weights)) == len(wd.COST_LEVELS)
    tiles = split.maps.reshape(64, 12, 8, 12, 8, 3).transpose(0, 1, 3, 2, 4, 5).reshape(-1, 8 * 8 * 3)
    grass = tiles[weights.reshape(-1) == weights.min()]
    assert len(np.unique(grass, axis=0)) == len(grass)


def test_generate_split_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="size must be an integer >= 2"):
        wd.generate_split(1, 3)
    with pytest.raises(ValueError, match="count must be an integer >= 0"):
        wd.generate_split(12, -1)
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        wd.generate_split(12, 2, seed=-3)
    assert len(wd.generate_split(12, 0)) == 0


def _count_optimal_paths(weights: np.ndarray) -> int:
    """Number of cheapest corner-to-corner paths, by counting paths in networkx's shortest-path DAG."""
    height, width = weights.shape
    graph = nx.DiGraph()
    for row, col in itertools.product(range(height), range(width)):
        for d_row, d_col in itertools.product((-1, 0, 1), repeat=2):
            other = (row + d_row, col + d_col)
            if (d_row, d_col) != (0, 0) and 0 <= other[0] < height and 0 <= other[1] < width:
                graph.add_edge((row, col), other, weight=float(weights[other]))
    distance = nx.single_source_dijkstra_path_length(graph, (0, 0))
    counts = {(0, 0): 1}
    for cell in sorted(distance, key=distance.get):
        if cell == (0, 0):
            continue
        counts[cell] = sum(
            counts.get(source, 0)
            for source in graph.predecessors(cell)
            if np.isclose(distance[source] + weights[cell], distance[cell], rtol=1e-12)
        )
    return counts[(height - 1, width - 1)]


@pytest.mark.parametrize("seed", [0, 1])
def test_optimum_is_unique_against_path_counting(seed: int) -> None:
    rng = np.random.default_rng(seed)
    weights = rng.choice(np.array([1.0, 2.0, 5.0]), size=(60, 5, 5))
    unique = wd.optimum_is_unique(weights, wd.shortest_paths(weights))
    expected = np.array([_count_optimal_paths(w) == 1 for w in weights])
    np.testing.assert_array_equal(unique, expected)
    assert 0 < unique.sum() < len(unique)  # both cases occur
    with pytest.raises(ValueError, match="must both have shape"):
        wd.optimum_is_unique(weights, wd.shortest_paths(weights)[:, :3])


def _write_original(folder: Path, split: str, data: wd.WarcraftSplit, parts: int = 1) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for field in wd.FIELDS:
        array = getattr(data, field)
        if parts == 1:
            np.save(folder / f"{split}_{field}.npy", array)
        else:
            for index, piece in enumerate(np.array_split(array, parts)):
                np.save(folder / f"{split}_{field}_part{index}.npy", piece)


def test_load_split_reads_the_original_layout(tmp_path: Path) -> None:
    data = wd.generate_split(12, 4, seed=0, split="test")
    _write_original(tmp_path / "12x12", "test", data)
    loaded = wd.load_split(tmp_path, 12, "test")
    for field in wd.FIELDS:
        np.testing.assert_array_equal(getattr(loaded, field), getattr(data, field))
    # The size folder itself may be given, and memory-mapping gives the same arrays.
    np.testing.assert_array_equal(wd.load_split(tmp_path / "12x12", 12, "test", mmap=True).maps, data.maps)


def test_load_split_concatenates_parts(tmp_path: Path) -> None:
    data = wd.generate_split(18, 7, seed=1)
    _write_original(tmp_path / "18x18", "train", data, parts=2)
    assert sorted(p.name for p in (tmp_path / "18x18").iterdir())[:2] == [
        "train_maps_part0.npy",
        "train_maps_part1.npy",
    ]
    loaded = wd.load_split(tmp_path, 18, "train")
    for field in wd.FIELDS:
        np.testing.assert_array_equal(getattr(loaded, field), getattr(data, field))


def test_write_dataset_parts_round_trip(tmp_path: Path) -> None:
    data = wd.generate_split(12, 5, seed=2)
    folder = wd.write_dataset(tmp_path, 12, {"train": data}, parts=3)
    assert (folder / "train_vertex_weights_part2.npy").is_file()
    np.testing.assert_array_equal(wd.load_split(tmp_path, 12, "train").shortest_paths, data.shortest_paths)


def test_load_split_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="12x12"):
        wd.load_split(tmp_path, 12, "train")
    data = wd.generate_split(12, 3, seed=0)
    folder = tmp_path / "12x12"
    _write_original(folder, "train", data)
    os.remove(folder / "train_shortest_paths.npy")
    with pytest.raises(FileNotFoundError, match="train_shortest_paths.npy"):
        wd.load_split(tmp_path, 12, "train")
    _write_original(folder, "train", data)
    np.save(folder / "train_vertex_weights.npy", data.vertex_weights[:, :11])
    with pytest.raises(ValueError, match="train_vertex_weights.npy must have shape"):
        wd.load_split(tmp_path, 12, "train")
    _write_original(folder, "train", data)
    np.save(folder / "train_maps.npy", data.maps[:, :90])
    with pytest.raises(ValueError, match=r"train_maps.npy must have shape \[N, 96, 96, 3\]"):
        wd.load_split(tmp_path, 12, "train")
    _write_original(folder, "train", data)
    np.save(folder / "train_maps.npy", data.maps.astype(np.float32))
    with pytest.raises(ValueError, match="train_maps.npy must hold uint8"):
        wd.load_split(tmp_path, 12, "train")
    _write_original(folder, "train", data)
    np.save(folder / "train_shortest_paths.npy", data.shortest_paths * 3)
    with pytest.raises(ValueError, match="train_shortest_paths.npy must hold 0/1"):
        wd.load_split(tmp_path, 12, "train")
    _write_original(folder, "train", data)
    np.save(folder / "train_shortest_paths.npy", np.array([object()], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="cannot read .*train_shortest_paths.npy"):
        wd.load_split(tmp_path, 12, "train")
    # A part file whose per-map shape differs from part0.
    _write_original(folder, "val", data, parts=2)
    np.save(folder / "val_maps_part1.npy", data.maps[:1, :, :48])
    with pytest.raises(ValueError, match="val_maps_part1.npy must have per-map shape"):
        wd.load_split(tmp_path, 12, "val")


def test_generate_dataset_is_deterministic_and_records_ties(tmp_path: Path) -> None:
    first = wd.generate_dataset(tmp_path / "a", 12, n_train=6, n_val=3, n_test=3, seed=5)
    second = wd.generate_dataset(tmp_path / "b", 12, n_train=6, n_val=3, n_test=3, seed=5)
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in second.iterdir()) and "meta.json" in names
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    meta = wd.read_meta(tmp_path / "a", 12)
    assert meta["counts"] == {"train": 6, "val": 3, "test": 3} and meta["seed"] == 5
    for split in wd.SPLITS:
        loaded = wd.load_split(tmp_path / "a", 12, split)
        expected = 1.0 - wd.optimum_is_unique(loaded.vertex_weights, loaded.shortest_paths).mean()
        assert meta["non_unique_optimum"][split] == pytest.approx(expected)
    with pytest.raises(FileExistsError, match="already exists"):
        wd.generate_dataset(tmp_path / "a", 12, n_train=2, n_val=1, n_test=1)


def test_write_dataset_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = wd.generate_split(12, 3, seed=0)
    wd.write_dataset(tmp_path, 12, {"train": old})
    calls = {"count": 0}
    real_save = wd._save

    def dying_save(path: Path, array: np.ndarray) -> None:
        calls["count"] += 1
        if calls["count"] == 4:  # after the train split, in the middle of the val split
            raise KeyboardInterrupt("killed")
        real_save(path, array)

    monkeypatch.setattr(wd, "_save", dying_save)
    new = {name: wd.generate_split(12, 2, seed=1, split=name) for name in ("train", "val")}
    with pytest.raises(KeyboardInterrupt):
        wd.write_dataset(tmp_path, 12, new, overwrite=True)
    # The old data set is untouched, with no val split and no staging folder left.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["12x12"]
    assert not (tmp_path / "12x12" / "val_maps.npy").exists()
    np.testing.assert_array_equal(wd.load_split(tmp_path, 12, "train").maps, old.maps)
    monkeypatch.setattr(wd, "_save", real_save)
    wd.write_dataset(tmp_path, 12, new, overwrite=True)
    np.testing.assert_array_equal(wd.load_split(tmp_path, 12, "val").maps, new["val"].maps)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["12x12"]


def test_write_dataset_rejects_bad_arguments(tmp_path: Path) -> None:
    data = wd.generate_split(12, 2)
    with pytest.raises(ValueError, match="split 'train' must have size 18"):
        wd.write_dataset(tmp_path, 18, {"train": data})
    with pytest.raises(ValueError, match="parts must be an integer >= 1"):
        wd.write_dataset(tmp_path, 12, {"train": data}, parts=0)


def test_shortest_paths_match_the_registry_solver() -> None:
    import combgrad as cg

    weights = np.random.default_rng(3).uniform(0.5, 9.0, size=(8, 6, 6)).astype(np.float16)
    expected = cg.solvers.get("shortest_path")(torch.from_numpy(weights.astype(np.float64))).numpy()
    np.testing.assert_array_equal(wd.shortest_paths(weights), expected.astype(np.uint8))


@pytest.mark.parametrize("damage", ["empty", "truncated", "pickled"])
def test_corrupt_files_are_named_with_a_value_error(tmp_path: Path, damage: str) -> None:
    """Guards issue 8 (smaller defects): a 0-byte .npy gave a bare EOFError."""
    wd.write_dataset(tmp_path, 12, {"val": wd.generate_split(12, 2, seed=0, split="val")})
    target = tmp_path / "12x12" / "val_vertex_weights.npy"
    content = target.read_bytes()
    target.write_bytes({"empty": b"", "truncated": content[: len(content) // 2],
                        "pickled": __import__("pickle").dumps([1, 2])}[damage])
    for mmap in (False, True):
        with pytest.raises(ValueError, match=r"warcraft: cannot read .*val_vertex_weights\.npy as a \.npy array"):
            wd.load_split(tmp_path, 12, "val", mmap=mmap)


@pytest.mark.parametrize("field", ["shortest_paths", "vertex_weights"])
def test_complex_values_are_refused(tmp_path: Path, field: str) -> None:
    """Guards issue 8 (smaller defects): a complex paths file passed the 0/1 check
    (numpy compares complex numbers by their real part)."""
    split = wd.generate_split(12, 2, seed=0, split="val")
    arrays = {name: getattr(split, name) for name in wd.FIELDS}
    arrays[field] = arrays[field].astype(np.complex64)
    wd.write_dataset(tmp_path, 12, {"val": wd.WarcraftSplit(**arrays)})
    with pytest.raises(ValueError, match=rf"val_{field}\.npy must hold real numbers, got dtype complex64"):
        wd.load_split(tmp_path, 12, "val")


def test_folders_respect_the_umask(tmp_path: Path) -> None:
    """Guards issue 8 (smaller defects): write_dataset made its folder with mode 0700 (mkdtemp's)."""
    previous = os.umask(0o022)
    try:
        folder = wd.write_dataset(tmp_path / "root", 12, {"test": wd.generate_split(12, 1, split="test")})
    finally:
        os.umask(previous)
    assert folder.stat().st_mode & 0o777 == 0o755
    assert (folder / "test_maps.npy").stat().st_mode & 0o777 == 0o644


def test_a_killed_writer_leaves_debris_that_the_next_write_removes(tmp_path: Path) -> None:
    """Guards issue 8 (smaller defects): a SIGKILLed warcraft-data left a hidden
    ``.12x12.partial-*`` folder that was never cleaned up."""
    import signal
    import subprocess
    import sys
    import textwrap
    import time

    script = textwrap.dedent(f"""
        import time
        from combgrad.tasks.warcraft import data as wd
        real_save = wd._save
        def slow_save(path, array):
            real_save(path, array)
            time.sleep(60)  # stop after the first file: the test kills us here
        wd._save = slow_save
        wd.generate_dataset({str(tmp_path)!r}, 12, n_train=2, n_val=1, n_test=1)
    """)
    writer = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 120
        while not any(p.name.endswith(".npy") for p in tmp_path.glob(".12x12.partial-*/*")):
            assert writer.poll() is None and time.monotonic() < deadline, "the writer never started writing"
            time.sleep(0.1)
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    debris = list(tmp_path.glob(".12x12.partial-*"))
    assert len(debris) == 1 and not (tmp_path / "12x12").exists()
    # A writer that is still running keeps its staging folder.
    alive = tmp_path / f".12x12.partial-{debris[0].name.split('-')[1]}-{os.getpid()}-live"
    alive.mkdir()
    wd.generate_dataset(tmp_path, 12, n_train=2, n_val=1, n_test=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["12x12", alive.name])

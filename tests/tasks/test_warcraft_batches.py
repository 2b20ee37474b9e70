"""Tests of combgrad/tasks/warcraft/batches.py: data preparation, input statistics, batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from combgrad.tasks.warcraft import batches as wb
from combgrad.tasks.warcraft import data as wd
from combgrad.tasks.warcraft.config import TrainConfig


def test_channel_statistics_match_numpy() -> None:
    maps = torch.randint(0, 256, (7, 5, 4, 3), dtype=torch.uint8)
    mean, std = wb.channel_statistics(maps, chunk=3)
    reference = maps.numpy().reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(mean.numpy(), reference.mean(0), rtol=1e-6)
    np.testing.assert_allclose(std.numpy(), reference.std(0), rtol=1e-5)
    # numpy maps (as the splits hold them) give the same figures.
    assert all(torch.equal(a, b) for a, b in zip(wb.channel_statistics(maps.numpy(), chunk=3), (mean, std)))


def test_training_batches_follow_the_order_and_cover_the_split() -> None:
    split = wd.generate_split(12, 7, seed=1)
    order = wb.shuffled_order(7, seed=3, epoch=2)
    batches = list(wb.training_batches(split, order, 3, torch.device("cpu")))
    assert [len(maps) for maps, _ in batches] == [3, 3, 1]
    maps = torch.cat([maps for maps, _ in batches])
    paths = torch.cat([paths for _, paths in batches])
    assert maps.dtype == torch.uint8 and paths.dtype == torch.float32
    np.testing.assert_array_equal(maps.numpy(), split.maps[order.numpy()])
    np.testing.assert_array_equal(paths.numpy(), split.shortest_paths[order.numpy()])
    # The order depends on (seed, epoch) only, not on the global random state.
    torch.manual_seed(123)
    assert torch.equal(order, wb.shuffled_order(7, seed=3, epoch=2))
    assert not torch.equal(order, wb.shuffled_order(7, seed=3, epoch=3))


def test_prepare_data_cuts_a_data_set_and_caches_a_synthetic_one(tmp_path: Path) -> None:
    wd.generate_dataset(tmp_path / "given", 12, n_train=6, n_val=3, n_test=3)
    config = TrainConfig(out=str(tmp_path / "run"), data=str(tmp_path / "given"), n_train=4)
    root, splits = wb.prepare_data(config, log=lambda line: None)
    assert root == tmp_path / "given" and {name: len(s) for name, s in splits.items()} == {
        "train": 4, "val": 3, "test": 3}
    assert isinstance(splits["train"], wd.WarcraftSplit)
    lines: list[str] = []
    synthetic = TrainConfig(out=str(tmp_path / "run"), n_train=4, n_val=2, n_test=2)
    wb.prepare_data(synthetic, log=lines.append)
    wb.prepare_data(synthetic, log=lines.append)
    assert sum("generated" in line for line in lines) == 1  # the second call reuses the cache


def test_prepare_data_names_a_corrupt_file(tmp_path: Path) -> None:
    wd.generate_dataset(tmp_path, 12, n_train=2, n_val=1, n_test=1)
    (tmp_path / "12x12" / "val_maps.npy").write_bytes(b"")
    with pytest.raises(ValueError, match=r"cannot read .*val_maps\.npy"):
        wb.prepare_data(TrainConfig(out=str(tmp_path / "run"), data=str(tmp_path)), log=lambda line: None)

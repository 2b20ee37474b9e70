"""Data of a Warcraft run: load or generate (and cache) the splits, input statistics, batches.

The splits stay :class:`~.data.WarcraftSplit` numpy arrays (uint8 maps, costs as
stored). Training reads its batches from a :class:`ResidentSplit`: on the CPU the
arrays themselves (no copy), on a GPU the whole split copied to the device once
when it fits (then a batch is one gather on the device, with no host work and no
copy per step), else held in pinned host memory and streamed batch by batch
with asynchronous copies.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from . import data as data_module
from .config import SYNTHETIC_COUNTS, TrainConfig
from .data import WarcraftSplit


def prepare_data(config: TrainConfig, *, log: Callable[[str], None] = print) -> tuple[Path, dict[str, WarcraftSplit]]:
    """Load ``config.data``, or generate (and cache under ``out/data``) a synthetic set.

    Returns:
        The data root and the ``train``/``val``/``test`` splits (the first
        ``n_train``, ``n_val``, ``n_test`` maps of ``data``; a synthetic set is
        generated with exactly those counts, or :data:`~.config.SYNTHETIC_COUNTS`).

    Raises:
        FileNotFoundError, ValueError: Naming the missing or unreadable file of ``data``.
    """
    if config.data is not None:
        root = Path(config.data)
        limits = {"train": config.n_train, "val": config.n_val, "test": config.n_test}
        return root, {name: data_module.load_split(root, config.size, name).head(limit) for name, limit in limits.items()}
    root = Path(config.out) / "data"
    counts = {
        "train": config.n_train or SYNTHETIC_COUNTS["train"],
        "val": config.n_val or SYNTHETIC_COUNTS["val"],
        "test": config.n_test or SYNTHETIC_COUNTS["test"],
    }
    meta = data_module.read_meta(root, config.size)
    wanted = {"generator_version": data_module.GENERATOR_VERSION, "seed": config.data_seed, "counts": counts}
    if meta is None or any(meta.get(key) != value for key, value in wanted.items()):
        start = time.perf_counter()
        data_module.generate_dataset(
            root,
            config.size,
            n_train=counts["train"],
            n_val=counts["val"],
            n_test=counts["test"],
            seed=config.data_seed,
            overwrite=True,
        )
        log(
            f"generated {sum(counts.values())} synthetic {config.size}x{config.size} maps in "
            f"{time.perf_counter() - start:.1f} s under {root}"
        )
    return root, {name: data_module.load_split(root, config.size, name) for name in counts}


def channel_statistics(maps: torch.Tensor | np.ndarray, chunk: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation ``[3]`` of ``maps [N, H, W, 3]`` (0-255 scale).

    Computed in chunks so that a large uint8 set is never copied as floats at once.

    Example:
        >>> mean, std = channel_statistics(torch.tensor([[[[0, 10, 20]]], [[[2, 10, 40]]]], dtype=torch.uint8))
        >>> mean.tolist(), std.tolist()
        ([1.0, 10.0, 30.0], [1.0, 0.0, 10.0])
    """
    maps = torch.as_tensor(maps)
    total = torch.zeros(3, dtype=torch.float64)
    squares = torch.zeros(3, dtype=torch.float64)
    count = 0
    for start in range(0, maps.shape[0], chunk):
        block = maps[start : start + chunk].to(torch.float64).reshape(-1, 3)
        total += block.sum(dim=0)
        squares += (block * block).sum(dim=0)
        count += block.shape[0]
    mean = total / max(count, 1)
    std = (squares / max(count, 1) - mean * mean).clamp_min(0).sqrt()
    return mean.to(torch.float32), std.to(torch.float32)


def shuffled_order(count: int, seed: int, epoch: int) -> torch.Tensor:
    """The training order of epoch ``epoch``: a permutation of ``count`` maps.

    It depends on ``(seed, epoch)`` alone, so a resumed run sees the same order as
    an uninterrupted one whatever the global random state.

    Example:
        >>> bool(torch.equal(shuffled_order(5, 0, 1), shuffled_order(5, 0, 1))), sorted(shuffled_order(5, 0, 1).tolist())
        (True, [0, 1, 2, 3, 4])
    """
    return torch.randperm(count, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))


def training_batches(
    split: WarcraftSplit, order: torch.Tensor, batch_size: int, device: torch.device
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches ``(maps [B, 8k, 8k, 3] uint8, paths [B, k, k] float32)`` on ``device``, in ``order``.

    Example:
        >>> from combgrad.tasks.warcraft.data import generate_split
        >>> batches = training_batches(generate_split(12, 5), torch.arange(5), 2, torch.device("cpu"))
        >>> [tuple(maps.shape) for maps, _ in batches]
        [(2, 96, 96, 3), (2, 96, 96, 3), (1, 96, 96, 3)]
    """
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size].numpy()
        maps = torch.from_numpy(split.maps[index]).to(device)
        paths = torch.from_numpy(split.shortest_paths[index].astype(np.float32)).to(device)
        yield maps, paths


DEVICE_SHARE = 0.5
"""The largest share of a GPU's free memory that a training split may take on it."""


def placement(nbytes: int, device: torch.device, free_bytes: int | None = None) -> str:
    """Where a training split of ``nbytes`` is held for ``device``: ``"device"``, ``"pinned"`` or ``"host"``.

    On the CPU the host arrays are used as they are. On a GPU the split goes to the
    device when it takes at most :data:`DEVICE_SHARE` of the free memory (leaving
    the rest for the network's activations), else it stays in pinned host memory
    (copies from pinned memory run asynchronously; from pageable memory they block).

    Args:
        nbytes: Size of the split's maps and paths.
        device: The run's device.
        free_bytes: Free memory of ``device`` (default: asked from CUDA).

    Example:
        >>> placement(10**9, torch.device("cpu")), placement(10**9, torch.device("cuda"), free_bytes=4 * 10**9)
        ('host', 'device')
        >>> placement(10**9, torch.device("cuda"), free_bytes=10**9)
        'pinned'
    """
    if device.type == "cpu":
        return "host"
    if free_bytes is None:
        free_bytes = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else 0
    if nbytes <= DEVICE_SHARE * free_bytes:
        return "device"
    return "pinned" if device.type == "cuda" else "host"


class ResidentSplit:
    """A split's training tensors (maps and paths) where the run reads them (see :func:`placement`).

    Args:
        split: The training split.
        device: The run's device.
        where: ``"auto"`` (:func:`placement`), ``"device"``, ``"pinned"`` or ``"host"``.

    Attributes:
        maps: ``[N, 8k, 8k, 3]`` uint8; paths: ``[N, k, k]`` float32 (on the device,
            or host tensors sharing the arrays' memory).
        where: The placement chosen.

    Example:
        >>> from combgrad.tasks.warcraft.data import generate_split
        >>> resident = ResidentSplit(generate_split(12, 5), torch.device("cpu"))
        >>> resident.where, [tuple(maps.shape) for maps, _ in resident.batches(torch.arange(5), 2)]
        ('host', [(2, 96, 96, 3), (2, 96, 96, 3), (1, 96, 96, 3)])
    """

    def __init__(self, split: WarcraftSplit, device: torch.device, *, where: str = "auto") -> None:
        self.device = device
        maps = np.ascontiguousarray(split.maps)
        paths = np.asarray(split.shortest_paths).astype(np.float32)
        if where == "auto":
            where = placement(maps.nbytes + paths.nbytes, device)
        if where not in ("device", "pinned", "host"):
            raise ValueError(f"warcraft: where must be one of auto, device, pinned, host, got {where!r}")
        # Host batches are gathered by numpy: measured here, torch's CPU gather of uint8
        # rows (index_select or indexing) took 2-10x numpy's time for 50 maps of 12x12.
        self._host = (maps, paths)
        self.maps, self.paths = torch.from_numpy(maps), torch.from_numpy(paths)
        if where == "device":
            self.maps, self.paths = self.maps.to(device), self.paths.to(device)
        self.where = where

    def __len__(self) -> int:
        return len(self.paths)

    def batches(self, order: torch.Tensor, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches ``(maps [B, 8k, 8k, 3] uint8, paths [B, k, k] float32)`` on the device, in ``order``.

        The order is moved to the data once per epoch, so that no step reads a
        device tensor on the host: on the device a batch is a gather there; from
        the host it is a numpy gather, pinned before an asynchronous copy when
        the run is on a GPU.
        """
        if self.where == "device":
            on_device = order.to(self.maps.device)
            for start in range(0, len(order), batch_size):
                index = on_device[start : start + batch_size]
                yield self.maps.index_select(0, index), self.paths.index_select(0, index)
            return
        host_order = order.cpu().numpy()
        maps, paths = self._host
        stream = self.where == "pinned"
        for start in range(0, len(host_order), batch_size):
            rows = host_order[start : start + batch_size]
            batch = torch.from_numpy(maps[rows]), torch.from_numpy(paths[rows])
            if stream:  # a gathered batch is pageable: pin it so that the copy is asynchronous
                batch = batch[0].pin_memory(), batch[1].pin_memory()
            yield batch[0].to(self.device, non_blocking=stream), batch[1].to(self.device, non_blocking=stream)


__all__ = [
    "DEVICE_SHARE",
    "ResidentSplit",
    "channel_statistics",
    "placement",
    "prepare_data",
    "shuffled_order",
    "training_batches",
]

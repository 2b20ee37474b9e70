"""Warcraft shortest-path data: a synthetic generator and a loader for the original format.

The Warcraft benchmark (Vlastelica et al., 2020) shows a network a ``k x k`` map of
terrain tiles, each ``8 x 8`` pixels, and asks for the cheapest path from the top-left
to the bottom-right tile (8-neighbourhood, vertex costs, both ends counted). On disk a
data set is a folder ``{k}x{k}/`` holding, for each split in ``train``, ``val``,
``test``:

* ``{split}_maps.npy``: ``[N, 8k, 8k, 3]`` uint8 RGB images,
* ``{split}_vertex_weights.npy``: ``[N, k, k]`` true tile costs (float16 in the original),
* ``{split}_shortest_paths.npy``: ``[N, k, k]`` uint8 0/1 masks of the true path.

Large files of the original are split into ``{split}_{name}_part0.npy``,
``{split}_{name}_part1.npy``, ... which :func:`load_split` concatenates.

The original maps (Warcraft II tiles) cannot be redistributed, so
:func:`generate_split` draws look-alike maps: spatially coherent terrain regions
(the argmax of smoothed random fields, one per terrain type), the original's five
cost levels, and tiles whose texture, colour and brightness vary per tile and per
map so that a network must learn what each terrain looks like. The true paths come
from combgrad's own ``shortest_path`` solver.

References:
    M. Vlastelica, A. Paulus, V. Musil, G. Martius, M. Rolinek. Differentiation of
    Blackbox Combinatorial Solvers. ICLR 2020.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..._checks import check_positive_int
from ...solvers import get as get_solver
from .._training.files import atomic_folder

TILE = 8
"""Pixels per tile side, as in the original data."""

SIZES = (12, 18, 24, 30)
"""The map sizes (tiles per side) of the original benchmark."""

SPLITS = ("train", "val", "test")

FIELDS = ("maps", "vertex_weights", "shortest_paths")
"""The per-split arrays of the original format, in file-name order."""

COST_LEVELS = (0.8, 1.2, 5.3, 7.7, 9.2)
"""Tile costs of the terrain types (the original's cost levels), cheapest first."""

TERRAINS = ("grass", "forest", "hills", "swamp", "mountains")
"""Names of the synthetic terrain types, in the order of :data:`COST_LEVELS`."""

GENERATOR_VERSION = 1
"""Bumped whenever the generator's output for a given seed changes (cache key)."""

# Base colours (RGB) of the terrain types, deliberately close for some pairs
# (grass/forest/swamp, hills/mountains). After the per-tile and per-map jitter below, a
# classifier of a tile's colour statistics (mean and spread per channel) still
# mislabels about 0.7% of the tiles, about one per 12x12 map, which is enough to spoil
# paths: the texture has to be read too (a small CNN on the pixels gets 99.9%).
_BASE_COLOURS = np.array(
    [[112, 150, 72], [78, 122, 66], [146, 124, 88], [92, 118, 96], [128, 124, 120]],
    dtype=np.float32,
)
# Offsets of each type's field: they set how common each terrain is (about 33%, 25%,
# 16%, 13% and 13% of the tiles, in the order of TERRAINS).
_FIELD_OFFSETS = np.array([0.55, 0.35, 0.0, -0.1, -0.15], dtype=np.float32)
# Per-tile and per-map variation of the rendering (see _render).
_BRIGHTNESS = (0.92, 1.08)  # per-tile brightness factor range
_COLOUR_CAST = 4.0  # per-tile colour shift, standard deviation per channel (0-255 scale)
_CONTRAST = (20.0, 36.0)  # per-tile texture amplitude range
_LIGHTING = (0.95, 1.05)  # per-map, per-channel lighting factor range
_PIXEL_NOISE = 4.0  # per-pixel noise, standard deviation
_FIELD_SMOOTHING = 1.3  # standard deviation, in tiles, of the Gaussian that smooths each field
_MAPS_PER_CHUNK = 128  # maps drawn per random stream; fixes the data given the seed alone


@dataclass(frozen=True)
class WarcraftSplit:
    """One split of a Warcraft data set.

    Attributes:
        maps: ``[N, 8k, 8k, 3]`` uint8 RGB images.
        vertex_weights: ``[N, k, k]`` true tile costs (float16 in the original format).
        shortest_paths: ``[N, k, k]`` uint8 0/1 masks of the true shortest paths.

    Example:
        >>> split = generate_split(12, 2, seed=0)
        >>> split.maps.shape, split.vertex_weights.shape, split.size, len(split)
        ((2, 96, 96, 3), (2, 12, 12), 12, 2)
    """

    maps: np.ndarray
    vertex_weights: np.ndarray
    shortest_paths: np.ndarray

    @property
    def size(self) -> int:
        """Tiles per side, ``k``."""
        return int(self.vertex_weights.shape[-1])

    def __len__(self) -> int:
        return int(self.vertex_weights.shape[0])

    def head(self, count: int | None) -> WarcraftSplit:
        """The first ``count`` maps (all of them if ``count`` is None or larger).

        Example:
            >>> len(generate_split(12, 3).head(2)), len(generate_split(12, 3).head(None))
            (2, 3)
        """
        if count is None or count >= len(self):
            return self
        return WarcraftSplit(self.maps[:count], self.vertex_weights[:count], self.shortest_paths[:count])


# ----------------------------------------------------------------------------- generator


def _smooth(field: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of ``field [..., k + 2r, k + 2r]`` along its last two dims, "valid" mode.

    Returns ``[..., k, k]`` where ``r = ceil(3 sigma)``; drawing the noise with a border
    and cutting it off avoids the edge artefacts of padding.
    """
    radius = int(np.ceil(3 * sigma))
    offsets = np.arange(-radius, radius + 1, dtype=np.float32)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    kernel /= kernel.sum()
    size = field.shape[-1] - 2 * radius
    rows = sum(w * field[..., j : j + size, :] for j, w in enumerate(kernel))
    return sum(w * rows[..., :, j : j + size] for j, w in enumerate(kernel))


def _terrain(rng: np.random.Generator, count: int, size: int) -> np.ndarray:
    """Terrain type of every tile, ``[count, size, size]`` int64 in ``0..4``.

    Each type gets an independent smoothed Gaussian field; a tile takes the type whose
    field (plus that type's offset) is largest, which gives blob-shaped regions of
    every type next to every other type.
    """
    radius = int(np.ceil(3 * _FIELD_SMOOTHING))
    noise = rng.standard_normal(
        (count, len(COST_LEVELS), size + 2 * radius, size + 2 * radius), dtype=np.float32
    )
    fields = _smooth(noise, _FIELD_SMOOTHING)
    # The blur shrinks the fields' spread; rescale so that the offsets keep their meaning.
    fields /= fields.std(axis=(-2, -1), keepdims=True) + 1e-6
    return np.argmax(fields + _FIELD_OFFSETS[None, :, None, None], axis=1)


def _texture(rng: np.random.Generator, terrain: int, count: int) -> np.ndarray:
    """Texture of ``count`` tiles of one terrain type: ``[count, 8, 8]`` float32, about [-1, 1].

    Every tile draws its own pattern parameters (phase, orientation, period, positions),
    so no two tiles of a type look the same.
    """
    rows, cols = np.meshgrid(np.arange(TILE, dtype=np.float32), np.arange(TILE, dtype=np.float32), indexing="ij")
    rows, cols = rows[None], cols[None]

    def uniform(low: float, high: float) -> np.ndarray:
        return rng.uniform(low, high, size=(count, 1, 1)).astype(np.float32)

    if terrain == 0:  # grass: fine speckle with a few bright blades
        speckle = rng.standard_normal((count, TILE, TILE), dtype=np.float32) * 0.45
        blades = (rng.random((count, TILE, TILE)) < 0.12).astype(np.float32)
        return speckle + 0.9 * blades
    if terrain == 1:  # forest: two to four dark round canopies
        texture = np.zeros((count, TILE, TILE), dtype=np.float32)
        trees = rng.integers(2, 5, size=count)
        for tree in range(4):
            centre_row, centre_col, radius = uniform(0, 7), uniform(0, 7), uniform(1.2, 2.2)
            bump = np.exp(-((rows - centre_row) ** 2 + (cols - centre_col) ** 2) / (2 * radius**2))
            texture = np.maximum(texture, bump * (tree < trees)[:, None, None])
        return 0.6 - 1.6 * texture
    if terrain == 2:  # hills: diagonal stripes of random period, angle and phase
        angle = uniform(0.35, 1.2) * rng.choice([-1.0, 1.0], size=(count, 1, 1)).astype(np.float32)
        period, phase = uniform(2.5, 4.5), uniform(0, 2 * np.pi)
        return np.sin(2 * np.pi * (rows * np.cos(angle) + cols * np.sin(angle)) / period + phase)
    if terrain == 3:  # swamp: horizontal waves with dark puddles
        period, wobble, phase = uniform(2.5, 4.0), uniform(0.5, 1.5), uniform(0, 2 * np.pi)
        waves = 0.7 * np.sin(2 * np.pi * rows / period + wobble * np.sin(cols * 0.9) + phase)
        puddle_row, puddle_col = uniform(1, 6), uniform(1, 6)
        puddle = np.exp(-((rows - puddle_row) ** 2 + (cols - puddle_col) ** 2) / 3.0)
        return waves - 1.2 * puddle
    # mountains: a bright peak with dark flanks (a pyramid at a random place)
    peak_row, peak_col, steep = uniform(2, 5), uniform(2, 5), uniform(0.35, 0.6)
    height = 1.0 - steep * (np.abs(rows - peak_row) + np.abs(cols - peak_col))
    return np.clip(height, -1.0, 1.0) * 1.3


def _render(rng: np.random.Generator, terrain: np.ndarray) -> np.ndarray:
    """Images ``[count, 8k, 8k, 3]`` uint8 of the tile types ``terrain [count, k, k]``."""
    count, size, _ = terrain.shape
    flat = terrain.reshape(-1)
    texture = np.empty((flat.size, TILE, TILE), dtype=np.float32)
    for kind in range(len(COST_LEVELS)):
        where = np.flatnonzero(flat == kind)
        texture[where] = _texture(rng, kind, where.size)
    tiles = flat.size
    # Per tile: brightness, colour cast and texture contrast; per map: the lighting.
    brightness = rng.uniform(*_BRIGHTNESS, size=(tiles, 1, 1, 1)).astype(np.float32)
    cast = rng.normal(0.0, _COLOUR_CAST, size=(tiles, 1, 1, 3)).astype(np.float32)
    contrast = rng.uniform(*_CONTRAST, size=(tiles, 1, 1, 1)).astype(np.float32)
    lighting = rng.uniform(*_LIGHTING, size=(count, 1, 1, 3)).astype(np.float32)
    base = _BASE_COLOURS[flat][:, None, None, :]
    pixels = (base * brightness + cast + contrast * texture[..., None]).reshape(count, size, size, TILE, TILE, 3)
    pixels = pixels.transpose(0, 1, 3, 2, 4, 5).reshape(count, size * TILE, size * TILE, 3)
    pixels = pixels * lighting + rng.normal(0.0, _PIXEL_NOISE, size=pixels.shape).astype(np.float32)
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def shortest_paths(vertex_weights: np.ndarray) -> np.ndarray:
    """True shortest paths of ``vertex_weights [N, k, k]`` as ``[N, k, k]`` uint8 masks.

    Top-left to bottom-right, 8-neighbourhood, both ends included: combgrad's
    ``shortest_path`` solver on the weights read as float64.

    Example:
        >>> shortest_paths(np.ones((1, 3, 3), dtype=np.float16))[0]
        array([[1, 0, 0],
               [0, 1, 0],
               [0, 0, 1]], dtype=uint8)
    """
    costs = torch.from_numpy(np.asarray(vertex_weights, dtype=np.float64))
    return get_solver("shortest_path")(costs).numpy().astype(np.uint8)


def _split_key(split: str) -> int:
    """A stable integer per split name (Python's ``hash`` of a str changes per process)."""
    return SPLITS.index(split) if split in SPLITS else int.from_bytes(split.encode(), "little") + len(SPLITS)


def generate_split(size: int, count: int, *, seed: int = 0, split: str = "train") -> WarcraftSplit:
    """Draw ``count`` synthetic ``size x size`` maps with their costs and true paths.

    Maps are drawn in fixed chunks of 128 from random streams seeded by
    ``(seed, split, chunk)``, so the same arguments always give the same maps, the
    first ``m`` maps of a larger draw equal a draw of ``m`` maps, and the splits of
    one seed are independent.

    Args:
        size: Tiles per side ``k`` (the original uses 12, 18, 24, 30; any ``k >= 2`` works).
        count: Number of maps ``N >= 0``.
        seed: Seed of the draw.
        split: Split name mixed into the seed (``"train"``, ``"val"``, ``"test"``).

    Returns:
        A :class:`WarcraftSplit` with maps ``[N, 8k, 8k, 3]`` uint8, vertex weights
        ``[N, k, k]`` float16 (the cost levels 0.8, 1.2, 5.3, 7.7, 9.2) and shortest
        paths ``[N, k, k]`` uint8.

    Raises:
        ValueError: If ``size < 2``, ``count < 0`` or ``seed < 0``.

    Example:
        >>> split = generate_split(12, 3, seed=1)
        >>> bool(np.isin(split.vertex_weights, np.float16(COST_LEVELS)).all())
        True
        >>> int(split.shortest_paths[0, 0, 0]), int(split.shortest_paths[0, -1, -1])
        (1, 1)
    """
    check_positive_int("warcraft", "size", size, minimum=2)
    check_positive_int("warcraft", "count", count, minimum=0)
    check_positive_int("warcraft", "seed", seed, minimum=0)
    levels = np.asarray(COST_LEVELS, dtype=np.float16)
    maps, weights = [], []
    for chunk, start in enumerate(range(0, count, _MAPS_PER_CHUNK)):
        rng = np.random.default_rng([int(seed), _split_key(split), chunk, int(size)])
        # Whole chunks are always drawn, then cut, so that a draw's first maps do not
        # depend on how many maps were asked for.
        terrain = _terrain(rng, _MAPS_PER_CHUNK, size)
        keep = min(_MAPS_PER_CHUNK, count - start)
        maps.append(_render(rng, terrain)[:keep])
        weights.append(levels[terrain[:keep]])
    if not maps:
        empty_maps = np.zeros((0, size * TILE, size * TILE, 3), dtype=np.uint8)
        empty = np.zeros((0, size, size), dtype=np.float16)
        return WarcraftSplit(empty_maps, empty, empty.astype(np.uint8))
    vertex_weights = np.concatenate(weights)
    return WarcraftSplit(np.concatenate(maps), vertex_weights, shortest_paths(vertex_weights))


def optimum_is_unique(vertex_weights: np.ndarray, paths: np.ndarray, *, rtol: float = 1e-6) -> np.ndarray:
    """Whether each map's shortest path is its only optimal path, ``[N]`` bool.

    The optimum is not unique exactly when some cell of the given optimal path can be
    avoided at no extra cost; each interior cell of the path is blocked in turn (its
    cost set above the cost of any path) and the map re-solved, all in one batched
    solver call. Costs within ``rtol`` (relative) count as equal.

    Args:
        vertex_weights: ``[N, k, k]`` non-negative tile costs.
        paths: ``[N, k, k]`` 0/1 masks of an optimal path of each map.
        rtol: Relative tolerance of the cost comparison.

    Example:
        >>> weights = np.array([[[1.0, 1.0], [1.0, 1.0]], [[1.0, 5.0], [5.0, 1.0]]])
        >>> optimum_is_unique(weights, shortest_paths(weights))
        array([ True,  True])
        >>> weights = np.ones((1, 3, 3)); weights[0, 1, 1] = 9.0  # around the centre: two ways
        >>> optimum_is_unique(weights, shortest_paths(weights))
        array([False])
    """
    weights = np.asarray(vertex_weights, dtype=np.float64)
    paths = np.asarray(paths).astype(bool)
    if weights.shape != paths.shape or weights.ndim != 3:
        raise ValueError(
            f"warcraft: vertex_weights and paths must both have shape [N, k, k], "
            f"got {weights.shape} and {paths.shape}"
        )
    count, height, width = weights.shape
    optimum = (weights * paths).sum(axis=(1, 2))
    interior = paths.copy()
    interior[:, 0, 0] = interior[:, -1, -1] = False  # the ends are on every path
    maps, rows, cols = np.nonzero(interior)
    unique = np.ones(count, dtype=bool)
    if maps.size == 0:
        return unique
    blocked = weights[maps].copy()
    blocked[np.arange(maps.size), rows, cols] = weights.sum(axis=(1, 2))[maps] + 1.0
    detours = get_solver("shortest_path")(torch.from_numpy(blocked)).numpy()
    detour_cost = (blocked * detours).sum(axis=(1, 2))
    tied = detour_cost <= optimum[maps] * (1.0 + rtol)
    unique[maps[tied]] = False
    return unique


# ----------------------------------------------------------------------------- files


def _size_folder(root: str | os.PathLike, size: int) -> Path:
    root = Path(root)
    name = f"{size}x{size}"
    if root.name == name and not (root / name).is_dir():
        return root  # the caller named the size folder itself
    return root / name


def _save(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as handle:
        np.save(handle, array, allow_pickle=False)
        handle.flush()
        os.fsync(handle.fileno())


def write_dataset(
    root: str | os.PathLike,
    size: int,
    splits: dict[str, WarcraftSplit],
    *,
    meta: dict | None = None,
    parts: int = 1,
    overwrite: bool = False,
) -> Path:
    """Write ``splits`` to ``root/{size}x{size}/`` in the original format, atomically.

    Everything is written to a hidden staging folder next to the target and renamed
    into place at the end (:func:`~combgrad.tasks._training.files.atomic_folder`), so
    a killed run never leaves a half-written split behind: the folder either holds
    the complete new data set or does not exist (or, without ``overwrite``, keeps its
    old content). A killed writer's staging folder is removed by the next write.
    Folders are made with the user's umask, like any other.

    Args:
        root: Data root; the data go to ``root/{size}x{size}/``.
        size: Tiles per side ``k``.
        splits: Split name -> :class:`WarcraftSplit` of size ``k``.
        meta: Optional JSON-serialisable description, written as ``meta.json``.
        parts: Write each array of the ``train`` split as this many ``_part{i}`` files
            (the original's layout for large sizes); 1 writes single files.
        overwrite: Replace an existing ``{size}x{size}`` folder.

    Returns:
        The path of the ``{size}x{size}`` folder.

    Raises:
        FileExistsError: If the folder exists and ``overwrite`` is False.
        ValueError: If a split's size is not ``size`` or ``parts < 1``.

    Example:
        >>> import tempfile
        >>> root = tempfile.mkdtemp()
        >>> folder = write_dataset(root, 12, {"test": generate_split(12, 2, seed=0, split="test")})
        >>> sorted(p.name for p in folder.iterdir())
        ['test_maps.npy', 'test_shortest_paths.npy', 'test_vertex_weights.npy']
    """
    check_positive_int("warcraft", "parts", parts)
    for name, split in splits.items():
        if split.size != size:
            raise ValueError(f"warcraft: split {name!r} must have size {size}, got size {split.size}")
    folder = _size_folder(root, size)
    if folder.exists() and not overwrite:
        raise FileExistsError(f"warcraft: {folder} already exists; pass overwrite=True to replace it")
    with atomic_folder(folder, overwrite=overwrite) as staging:
        for name, split in splits.items():
            for field in FIELDS:
                array = getattr(split, field)
                if parts > 1 and name == "train":
                    for index, piece in enumerate(np.array_split(array, parts)):
                        _save(staging / f"{name}_{field}_part{index}.npy", piece)
                else:
                    _save(staging / f"{name}_{field}.npy", array)
        if meta is not None:
            (staging / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return folder


def generate_dataset(
    root: str | os.PathLike,
    size: int = 12,
    *,
    n_train: int = 1000,
    n_val: int | None = None,
    n_test: int | None = None,
    seed: int = 0,
    parts: int = 1,
    overwrite: bool = False,
) -> Path:
    """Generate a synthetic data set and write it to ``root/{size}x{size}/`` (atomically).

    Besides the original format's files the folder holds ``meta.json``: the generator
    version and arguments, and per split how often the optimal path is not unique.

    Args:
        root: Data root.
        size: Tiles per side ``k``.
        n_train: Training maps.
        n_val: Validation maps; default ``max(100, n_train // 10)``.
        n_test: Test maps; default ``max(100, n_train // 10)``.
        seed: Seed; the same seed gives byte-identical files.
        parts: Train files per array (``_part{i}``), see :func:`write_dataset`.
        overwrite: Replace an existing folder.

    Returns:
        The path of the ``{size}x{size}`` folder.

    Example:
        >>> import tempfile
        >>> folder = generate_dataset(tempfile.mkdtemp(), 12, n_train=4, n_val=2, n_test=2)
        >>> load_split(folder.parent, 12, "val").maps.shape
        (2, 96, 96, 3)
    """
    n_val = max(100, n_train // 10) if n_val is None else n_val
    n_test = max(100, n_train // 10) if n_test is None else n_test
    counts = {"train": n_train, "val": n_val, "test": n_test}
    splits = {name: generate_split(size, count, seed=seed, split=name) for name, count in counts.items()}
    meta = {
        "generator": "combgrad.tasks.warcraft.data",
        "generator_version": GENERATOR_VERSION,
        "size": size,
        "seed": seed,
        "counts": counts,
        "cost_levels": list(COST_LEVELS),
        "terrains": list(TERRAINS),
        "non_unique_optimum": {
            name: float(1.0 - optimum_is_unique(split.vertex_weights, split.shortest_paths).mean())
            if len(split)
            else 0.0
            for name, split in splits.items()
        },
    }
    return write_dataset(root, size, splits, meta=meta, parts=parts, overwrite=overwrite)


def read_meta(root: str | os.PathLike, size: int) -> dict | None:
    """The ``meta.json`` of ``root/{size}x{size}/``, or None if there is none (or it is unreadable).

    Example:
        >>> import tempfile
        >>> read_meta(tempfile.mkdtemp(), 12) is None
        True
    """
    path = _size_folder(root, size) / "meta.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _load_field(folder: Path, split: str, field: str, mmap: bool) -> tuple[np.ndarray, str]:
    single = folder / f"{split}_{field}.npy"
    if single.is_file():
        return _load_file(single, mmap), single.name
    parts: list[Path] = []
    while (folder / f"{split}_{field}_part{len(parts)}.npy").is_file():
        parts.append(folder / f"{split}_{field}_part{len(parts)}.npy")
    if not parts:
        raise FileNotFoundError(
            f"warcraft: missing {single} (nor {split}_{field}_part0.npy, ... in {folder})"
        )
    arrays = [_load_file(part, mmap) for part in parts]
    for part, array in zip(parts[1:], arrays[1:]):
        if array.shape[1:] != arrays[0].shape[1:]:
            raise ValueError(
                f"warcraft: {part} must have per-map shape {arrays[0].shape[1:]} like "
                f"{parts[0].name}, got shape {array.shape}"
            )
    return np.concatenate(arrays), f"{split}_{field}_part*.npy"


def _load_file(path: Path, mmap: bool) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except (ValueError, EOFError, OSError) as error:
        # An empty file raises EOFError, a truncated one ValueError or OSError,
        # a pickle ValueError (allow_pickle=False): all mean "not a .npy array".
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"warcraft: cannot read {path} as a .npy array ({reason}); is the file complete?") from error
    if not isinstance(array, np.ndarray):  # an .npz archive
        raise ValueError(f"warcraft: {path} must hold one .npy array, got {type(array).__name__}")
    return array


def load_split(root: str | os.PathLike, size: int, split: str, *, mmap: bool = False) -> WarcraftSplit:
    """Load one split of a data set in the original format.

    Reads ``{split}_maps.npy``, ``{split}_vertex_weights.npy`` and
    ``{split}_shortest_paths.npy`` from ``root/{size}x{size}/`` (or from ``root`` if it
    is itself named ``{size}x{size}``), concatenating ``_part0``, ``_part1``, ... files
    where the single file is absent. Files are read with ``allow_pickle=False``.

    Args:
        root: Data root (or the size folder).
        size: Tiles per side ``k``.
        split: ``"train"``, ``"val"`` or ``"test"`` (any name with files works).
        mmap: Memory-map single files instead of reading them (parts are always read).

    Returns:
        A :class:`WarcraftSplit`; maps ``[N, 8k, 8k, 3]`` uint8, weights ``[N, k, k]``
        as stored, paths ``[N, k, k]`` uint8.

    Raises:
        FileNotFoundError: Naming the missing file.
        ValueError: Naming the file whose shape, dtype or values are wrong.

    Example:
        >>> import tempfile
        >>> root = tempfile.mkdtemp()
        >>> _ = write_dataset(root, 12, {"val": generate_split(12, 3, seed=0, split="val")})
        >>> load_split(root, 12, "val").shortest_paths.shape
        (3, 12, 12)
    """
    folder = _size_folder(root, size)
    if not folder.is_dir():
        raise FileNotFoundError(f"warcraft: missing data folder {folder} (expected {size}x{size}/ under {root})")
    maps, maps_name = _load_field(folder, split, "maps", mmap)
    weights, weights_name = _load_field(folder, split, "vertex_weights", mmap)
    paths, paths_name = _load_field(folder, split, "shortest_paths", mmap)
    pixels = size * TILE
    if maps.ndim != 4 or maps.shape[1:] != (pixels, pixels, 3):
        raise ValueError(
            f"warcraft: {folder / maps_name} must have shape [N, {pixels}, {pixels}, 3] for "
            f"{size}x{size} maps, got {maps.shape}"
        )
    if maps.dtype != np.uint8:
        raise ValueError(f"warcraft: {folder / maps_name} must hold uint8 RGB values, got dtype {maps.dtype}")
    count = maps.shape[0]
    for name, array in ((weights_name, weights), (paths_name, paths)):
        if array.shape != (count, size, size):
            raise ValueError(
                f"warcraft: {folder / name} must have shape [N={count}, {size}, {size}] "
                f"matching {maps_name}, got {array.shape}"
            )
    # Real numbers only: numpy compares complex values by their real part, so a
    # complex file would otherwise pass the value checks below.
    for name, array, kinds in ((weights_name, weights, "fiu"), (paths_name, paths, "fiub")):
        if array.dtype.kind not in kinds:
            raise ValueError(f"warcraft: {folder / name} must hold real numbers, got dtype {array.dtype}")
    if count and (not np.all(np.isfinite(weights)) or float(np.min(weights)) < 0):
        raise ValueError(f"warcraft: {folder / weights_name} must hold finite costs >= 0")
    if count and not np.isin(np.unique(paths), (0, 1)).all():
        raise ValueError(f"warcraft: {folder / paths_name} must hold 0/1 path masks")
    return WarcraftSplit(maps, weights, np.asarray(paths).astype(np.uint8, copy=False))

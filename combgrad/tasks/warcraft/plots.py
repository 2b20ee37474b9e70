"""PNG plots of a Warcraft run: sample maps with their paths, and training curves.

matplotlib runs on its non-interactive "Agg" backend, so the plots work without a
display; files are written to a temporary name and renamed into place.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .data import TILE


def _figure():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(figure: Any, path: str | os.PathLike) -> Path:
    path = Path(path)
    temporary = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        figure.savefig(temporary, dpi=100, bbox_inches="tight")
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()
    return path


def _path_points(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.nonzero(mask > 0.5)
    return cols * TILE + (TILE - 1) / 2, rows * TILE + (TILE - 1) / 2


def plot_paths(
    maps: np.ndarray,
    true_paths: np.ndarray,
    predicted_paths: np.ndarray,
    true_costs: np.ndarray,
    predicted_costs: np.ndarray,
    path: str | os.PathLike,
    *,
    title: str = "",
    predicted_label: str = "predicted cost",
) -> Path:
    """One row per map: the image with the true (white) and predicted (red) paths, the true
    tile costs, and the predicted costs.

    Args:
        maps: ``[N, 8k, 8k, 3]`` uint8 images.
        true_paths: ``[N, k, k]`` 0/1 true paths.
        predicted_paths: ``[N, k, k]`` 0/1 predicted paths (or masks).
        true_costs: ``[N, k, k]`` true tile costs.
        predicted_costs: ``[N, k, k]`` predicted costs (or path probabilities).
        path: The PNG file to write.
        title: Figure title.
        predicted_label: Heading of the last column.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Example:
        >>> import tempfile, pathlib
        >>> from combgrad.tasks.warcraft.data import generate_split
        >>> s = generate_split(12, 2, seed=0)
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "paths.png"
        >>> plot_paths(s.maps, s.shortest_paths, s.shortest_paths, s.vertex_weights,
        ...            s.vertex_weights, out).exists()
        True
    """
    plt = _figure()
    count = len(maps)
    figure, axes = plt.subplots(count, 3, figsize=(9.6, 3.2 * count), squeeze=False)
    for row in range(count):
        image_axis, true_axis, predicted_axis = axes[row]
        image_axis.imshow(maps[row], interpolation="nearest")
        x, y = _path_points(true_paths[row])
        image_axis.scatter(x, y, s=70, facecolors="none", edgecolors="white", linewidths=1.6, label="true")
        x, y = _path_points(predicted_paths[row])
        image_axis.scatter(x, y, s=18, c="red", marker="x", linewidths=1.4, label="predicted")
        optimum = float((true_costs[row] * true_paths[row]).sum())
        cost = float((true_costs[row] * (predicted_paths[row] > 0.5)).sum())
        image_axis.set_title(f"true cost {optimum:.1f}, predicted path {cost:.1f}", fontsize=9)
        shown = true_axis.imshow(np.asarray(true_costs[row], dtype=np.float32), cmap="viridis")
        true_axis.set_title("true cost", fontsize=9)
        figure.colorbar(shown, ax=true_axis, fraction=0.046)
        shown = predicted_axis.imshow(np.asarray(predicted_costs[row], dtype=np.float32), cmap="viridis")
        predicted_axis.set_title(predicted_label, fontsize=9)
        figure.colorbar(shown, ax=predicted_axis, fraction=0.046)
        for axis in axes[row]:
            axis.set_xticks([])
            axis.set_yticks([])
    axes[0, 0].legend(loc="lower left", fontsize=7, framealpha=0.7)
    if title:
        figure.suptitle(title)
    figure.tight_layout(rect=(0, 0, 1, 0.985 if title else 1))
    try:
        return _save(figure, path)
    finally:
        plt.close(figure)


def plot_curves(history: Sequence[dict[str, Any]], path: str | os.PathLike, *, title: str = "") -> Path:
    """Training loss and val/test cost-optimal and exact-match rates per epoch.

    Args:
        history: Per-epoch records with ``epoch``, ``loss`` and ``val``/``test`` dicts
            holding ``cost_optimal`` and ``exact`` (as :func:`~.trainer.train` writes).
        path: The PNG file to write.
        title: Figure title.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Example:
        >>> import tempfile, pathlib
        >>> rates = {"cost_optimal": 0.5, "exact": 0.2}
        >>> history = [{"epoch": 1, "loss": 3.0, "val": rates, "test": rates}]
        >>> plot_curves(history, pathlib.Path(tempfile.mkdtemp()) / "curves.png").exists()
        True
    """
    plt = _figure()
    epochs = [record["epoch"] for record in history]
    figure, (loss_axis, rate_axis) = plt.subplots(1, 2, figsize=(10, 3.8))
    loss_axis.plot(epochs, [record["loss"] for record in history], marker="o")
    loss_axis.set_xlabel("epoch")
    loss_axis.set_ylabel("training loss")
    loss_axis.grid(alpha=0.3)
    for split, colour in (("val", "tab:blue"), ("test", "tab:orange")):
        rate_axis.plot(
            epochs, [record[split]["cost_optimal"] for record in history], marker="o", color=colour,
            label=f"{split} cost-optimal",
        )
        rate_axis.plot(
            epochs, [record[split]["exact"] for record in history], marker=".", linestyle="--", color=colour,
            label=f"{split} exact match",
        )
    rate_axis.set_xlabel("epoch")
    rate_axis.set_ylabel("rate")
    rate_axis.set_ylim(0, 1.02)
    rate_axis.grid(alpha=0.3)
    rate_axis.legend(fontsize=8, loc="center right")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    try:
        return _save(figure, path)
    finally:
        plt.close(figure)

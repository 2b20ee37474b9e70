"""The Warcraft plot: sample test maps with their true and predicted paths and costs.

The training curves are the shared :func:`combgrad.tasks._training.plots.plot_curves`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .._training.plots import pyplot, save_figure
from .data import TILE


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
    plt = pyplot()
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
    return save_figure(figure, path)

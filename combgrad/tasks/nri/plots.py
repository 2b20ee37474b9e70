"""The NRI run's picture: true and learned trees of a few test systems, drawn on the particles' mean positions."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .._training.plots import pyplot, save_figure


def plot_trees(
    trajectories: np.ndarray,
    true: np.ndarray,
    learned: np.ndarray,
    path: str | os.PathLike,
    *,
    title: str = "",
) -> Path:
    """One panel per system: each particle at its mean position, true edges grey, learned edges green
    (a true edge) or red dashed (a wrong one), and the particles' paths faint.

    Args:
        trajectories: ``[S, T, n, >=2]`` (x, y first; unscaled).
        true: True adjacencies ``[S, n, n]``.
        learned: Learned adjacencies ``[S, n, n]``.
        path: The PNG file to write.
        title: Figure title.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Example:
        >>> import tempfile, pathlib
        >>> tree = np.array([[[0, 1, 0], [1, 0, 1], [0, 1, 0]]])
        >>> plot_trees(np.random.default_rng(0).normal(size=(1, 4, 3, 4)), tree, tree,
        ...            pathlib.Path(tempfile.mkdtemp()) / "trees.png").exists()
        True
    """
    plt = pyplot()
    count = len(trajectories)
    columns = min(count, 3)
    rows = -(-count // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 3.6 * rows), squeeze=False)
    for index, axis in enumerate(axes.flat):
        axis.set_xticks([])
        axis.set_yticks([])
        if index >= count:
            axis.axis("off")
            continue
        positions = trajectories[index, :, :, :2]
        centre = positions.mean(0)
        for particle in range(positions.shape[1]):
            axis.plot(positions[:, particle, 0], positions[:, particle, 1], color="0.8", linewidth=0.8)
        n = centre.shape[0]
        right = 0
        for i in range(n):
            for j in range(i + 1, n):
                segment = ([centre[i, 0], centre[j, 0]], [centre[i, 1], centre[j, 1]])
                if true[index, i, j]:
                    axis.plot(*segment, color="0.45", linewidth=4, alpha=0.6, solid_capstyle="round")
                if learned[index, i, j]:
                    hit = bool(true[index, i, j])
                    right += hit
                    axis.plot(*segment, color="tab:green" if hit else "tab:red",
                              linewidth=1.6, linestyle="-" if hit else "--")
        axis.scatter(centre[:, 0], centre[:, 1], s=40, color="tab:blue", zorder=3)
        for particle in range(n):
            axis.annotate(str(particle), centre[particle], fontsize=7, xytext=(3, 3), textcoords="offset points")
        learned_edges = int(np.triu(learned[index], 1).sum())
        axis.set_title(f"system {index}: {right}/{learned_edges} learned edges true", fontsize=9)
        axis.set_aspect("equal", adjustable="datalim")
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return save_figure(figure, path)


__all__ = ["plot_trees"]

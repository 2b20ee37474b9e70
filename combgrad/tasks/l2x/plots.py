"""The L2X plot: test digits with the pixels the selector chose."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from .._training.plots import pyplot, save_figure


def plot_selections(
    images: np.ndarray,
    selections: np.ndarray,
    predicted: np.ndarray,
    labels: np.ndarray,
    path: str | os.PathLike,
    *,
    title: str = "",
    columns: int = 8,
) -> Path:
    """A grid of images, each with its selected pixels outlined in red and its predicted / true label.

    Args:
        images: ``[N, H, W]`` in ``[0, 1]``.
        selections: ``[N, k]`` selected pixel indices (row-major).
        predicted: ``[N]`` the classifier's labels on the selected pixels.
        labels: ``[N]`` true labels.
        path: The PNG file to write.
        title: Figure title.
        columns: Images per row.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Example:
        >>> import tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "selections.png"
        >>> plot_selections(np.zeros((2, 8, 8)), np.array([[0, 9], [5, 63]]), np.array([1, 2]),
        ...                 np.array([1, 3]), out).exists()
        True
    """
    plt = pyplot()
    count, side = len(images), images.shape[-1]
    columns = max(1, min(columns, count))
    rows = max(1, math.ceil(count / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(1.5 * columns, 1.7 * rows), squeeze=False)
    for axis in axes.flat:
        axis.set_axis_off()
    for number in range(count):
        axis = axes.flat[number]
        axis.imshow(images[number], cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
        rows_of, columns_of = np.divmod(np.asarray(selections[number]), side)
        for row, column in zip(rows_of.tolist(), columns_of.tolist()):
            axis.add_patch(plt.Rectangle((column - 0.5, row - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=1.5))
        colour = "black" if predicted[number] == labels[number] else "red"
        axis.set_title(f"{predicted[number]} ({labels[number]})", fontsize=8, color=colour)
    if title:
        figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    return save_figure(figure, path)


__all__ = ["plot_selections"]

"""The VAE plot: test images above their reconstructions from the exact k-hot codes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .._training.plots import pyplot, save_figure


def plot_reconstructions(
    images: np.ndarray, reconstructions: np.ndarray, path: str | os.PathLike, *, title: str = ""
) -> Path:
    """Two rows: the (binarised) test images and the decoder's pixel probabilities.

    Args:
        images: ``[N, H, W]`` in ``[0, 1]``.
        reconstructions: ``[N, H, W]`` probabilities.
        path: The PNG file to write.
        title: Figure title.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Example:
        >>> import tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "reconstructions.png"
        >>> plot_reconstructions(np.zeros((3, 8, 8)), np.ones((3, 8, 8)) / 2, out).exists()
        True
    """
    plt = pyplot()
    count = max(1, len(images))
    figure, axes = plt.subplots(2, count, figsize=(1.1 * count, 2.5), squeeze=False)
    for column in range(count):
        for row, shown in enumerate((images, reconstructions)):
            axis = axes[row, column]
            axis.set_axis_off()
            if column < len(shown):
                axis.imshow(shown[column], cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
    axes[0, 0].set_title("test", fontsize=8, loc="left")
    axes[1, 0].set_title("reconstruction", fontsize=8, loc="left")
    if title:
        figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    return save_figure(figure, path)





def plot_losses(history: list[dict], path: str | os.PathLike, *, title: str = "") -> Path:
    """Training loss and test negative ELBO (and its reconstruction part) per epoch.

    Example:
        >>> import tempfile, pathlib
        >>> history = [{"epoch": 1, "loss": 30.0, "test": {"loss": 28.0, "reconstruction": 27.0}}]
        >>> plot_losses(history, pathlib.Path(tempfile.mkdtemp()) / "curves.png").exists()
        True
    """
    plt = pyplot()
    epochs = [record["epoch"] for record in history]
    figure, axis = plt.subplots(figsize=(6, 3.8))
    axis.plot(epochs, [record["loss"] for record in history], marker="o", label="training loss")
    axis.plot(epochs, [record["test"]["loss"] for record in history], marker="o", label="test negative ELBO")
    axis.plot(epochs, [record["test"]["reconstruction"] for record in history], marker=".", linestyle="--",
              label="test reconstruction")
    axis.set_xlabel("epoch")
    axis.set_ylabel("nats per image")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    if title:
        figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    return save_figure(figure, path)
__all__ = ["plot_losses", "plot_reconstructions"]

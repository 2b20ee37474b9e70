"""The predict-then-optimize plot: the learning curve (training loss, test normalized regret per epoch)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .._training.plots import pyplot, save_figure


def plot_learning_curve(history: Sequence[Mapping[str, Any]], path: str | os.PathLike, *, title: str = "") -> Path:
    """Training loss (left) and test normalized regret (right) per epoch, written atomically as a PNG.

    Args:
        history: Per-epoch records with ``epoch``, ``loss`` and ``test["normalized_regret"]``.
        path: The PNG file.
        title: Figure title.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Example:
        >>> import tempfile, pathlib
        >>> history = [{"epoch": 1, "loss": 2.0, "test": {"normalized_regret": 0.3}},
        ...            {"epoch": 2, "loss": 1.0, "test": {"normalized_regret": 0.2}}]
        >>> plot_learning_curve(history, pathlib.Path(tempfile.mkdtemp()) / "curves.png").exists()
        True
    """
    plt = pyplot()
    epochs = [record["epoch"] for record in history]
    figure, (loss_axis, regret_axis) = plt.subplots(1, 2, figsize=(10, 3.8))
    loss_axis.plot(epochs, [record["loss"] for record in history], marker="o")
    loss_axis.set_xlabel("epoch")
    loss_axis.set_ylabel("training loss")
    loss_axis.grid(alpha=0.3)
    regret_axis.plot(epochs, [record["test"]["normalized_regret"] for record in history], marker="o",
                     color="tab:orange")
    regret_axis.set_xlabel("epoch")
    regret_axis.set_ylabel("test normalized regret")
    regret_axis.set_ylim(bottom=0)
    regret_axis.grid(alpha=0.3)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return save_figure(figure, path)


__all__ = ["plot_learning_curve"]

"""PNG plots of a run: training curves, and the shared matplotlib set-up and atomic save.

matplotlib runs on its non-interactive "Agg" backend, so the plots work without a
display; files are written atomically (:func:`.files.atomic_write`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .files import atomic_write


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (imported on first use: matplotlib is slow to import)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure: Any, path: str | os.PathLike) -> Path:
    """Write ``figure`` as a PNG to ``path`` atomically and close it."""
    try:
        return atomic_write(path, lambda handle: figure.savefig(handle, format="png", dpi=100, bbox_inches="tight"))
    finally:
        pyplot().close(figure)


def plot_curves(
    history: Sequence[Mapping[str, Any]],
    path: str | os.PathLike,
    *,
    rates: Mapping[str, str],
    splits: Sequence[str] = ("val", "test"),
    title: str = "",
) -> Path:
    """Training loss (left) and per-split rates (right) per epoch.

    Args:
        history: Per-epoch records with ``epoch``, ``loss`` and one dict per split
            holding the ``rates`` (as :func:`.loop.run_epochs` returns them).
        path: The PNG file to write.
        rates: Metric name -> legend label; the first is drawn solid, the others dashed.
        splits: The splits to draw, one colour each.
        title: Figure title.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Example:
        >>> import tempfile, pathlib
        >>> history = [{"epoch": 1, "loss": 3.0, "val": {"accuracy": 0.5}, "test": {"accuracy": 0.4}}]
        >>> plot_curves(history, pathlib.Path(tempfile.mkdtemp()) / "curves.png",
        ...             rates={"accuracy": "accuracy"}).exists()
        True
    """
    plt = pyplot()
    epochs = [record["epoch"] for record in history]
    figure, (loss_axis, rate_axis) = plt.subplots(1, 2, figsize=(10, 3.8))
    loss_axis.plot(epochs, [record["loss"] for record in history], marker="o")
    loss_axis.set_xlabel("epoch")
    loss_axis.set_ylabel("training loss")
    loss_axis.grid(alpha=0.3)
    colours = ("tab:blue", "tab:orange", "tab:green", "tab:red")
    for split, colour in zip(splits, colours):
        for number, (metric, label) in enumerate(rates.items()):
            rate_axis.plot(
                epochs, [record[split][metric] for record in history], color=colour, label=f"{split} {label}",
                marker="o" if number == 0 else ".", linestyle="-" if number == 0 else "--",
            )
    rate_axis.set_xlabel("epoch")
    rate_axis.set_ylabel("rate")
    rate_axis.set_ylim(0, 1.02)
    rate_axis.grid(alpha=0.3)
    rate_axis.legend(fontsize=8, loc="center right")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return save_figure(figure, path)


__all__ = ["plot_curves", "pyplot", "save_figure"]

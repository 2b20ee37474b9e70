"""Run metrics: per-example values averaged into the numbers that ``metrics.json`` reports."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch


def summarise(per_example: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Mean of each metric's per-example values, NaN entries left out (NaN if all are).

    NaN marks an example where a metric is undefined (a regret of a mask that is not
    a path), so it is skipped rather than spreading into the mean.

    Example:
        >>> summarise({"exact": torch.tensor([True, False]), "regret": torch.tensor([0.0, math.nan])})
        {'exact': 0.5, 'regret': 0.0}
    """
    summary = {}
    for name, values in per_example.items():
        values = values.to(torch.float64)
        finite = values[~torch.isnan(values)]
        summary[name] = float(finite.mean()) if finite.numel() else math.nan
    return summary


def share(part: float, whole: float) -> float:
    """``part / whole``, 0 when ``whole`` is not positive (a share of no time).

    Example:
        >>> share(1.0, 4.0), share(1.0, 0.0)
        (0.25, 0.0)
    """
    return part / whole if whole > 0 else 0.0


def totals(history: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> dict[str, float]:
    """Sum of each of ``keys`` over the per-epoch records of ``history``.

    Example:
        >>> totals([{"seconds": 1.0}, {"seconds": 2.5}], ["seconds"])
        {'seconds': 3.5}
    """
    return {key: sum(float(record[key]) for record in history) for key in keys}


__all__ = ["share", "summarise", "totals"]

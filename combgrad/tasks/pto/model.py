"""Cost predictors of the predict-then-optimize task: PyEPO's linear model, and an MLP."""

from __future__ import annotations

from torch import nn

from ..._checks import check_choice, check_positive_int
from .config import MODELS


def build_model(kind: str, num_feat: int, num_costs: int, *, hidden: int = 64) -> nn.Module:
    """The cost predictor ``features [B, p] -> costs [B, m]`` (float32).

    Args:
        kind: ``"linear"`` (one ``nn.Linear``, as in PyEPO's benchmarks) or ``"mlp"``
            (``Linear -> ReLU -> Linear`` with ``hidden`` units).
        num_feat: Features ``p``.
        num_costs: Cost entries ``m``.
        hidden: Hidden width of the MLP.

    Raises:
        ValueError: On an unknown ``kind`` or a size below 1.

    Example:
        >>> import torch
        >>> build_model("mlp", 5, 40, hidden=8)(torch.zeros(3, 5)).shape
        torch.Size([3, 40])
    """
    owner = "pto"
    check_choice(owner, "model", kind, MODELS)
    num_feat = check_positive_int(owner, "num_feat", num_feat)
    num_costs = check_positive_int(owner, "num_costs", num_costs)
    if kind == "linear":
        return nn.Linear(num_feat, num_costs)
    hidden = check_positive_int(owner, "hidden", hidden)
    return nn.Sequential(nn.Linear(num_feat, hidden), nn.ReLU(), nn.Linear(hidden, num_costs))


__all__ = ["build_model"]

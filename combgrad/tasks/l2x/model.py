"""The L2X networks: a selector scoring every pixel, and a classifier reading the selected ones.

References:
    J. Chen, L. Song, M. J. Wainwright, M. I. Jordan. Learning to Explain: An
    Information-Theoretic Perspective on Model Interpretation. ICML 2018.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def mlp(inputs: int, hidden: int, outputs: int) -> nn.Sequential:
    """Two hidden ReLU layers of ``hidden`` units: ``[*, inputs] -> [*, outputs]``.

    Example:
        >>> mlp(4, 8, 2)(torch.zeros(3, 4)).shape
        torch.Size([3, 2])
    """
    return nn.Sequential(
        nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, outputs)
    )


class L2XModel(nn.Module):
    """Instance-wise feature selection: ``scores = selector(x)``, ``mask = select(scores)``
    (k-hot), ``logits = classifier(x * mask)``.

    The selector sees the whole image and scores each pixel; the top-k layer turns
    the scores into the k-hot mask of the selected pixels (through any gradient
    estimator); the classifier sees only those pixels (the others are zero), so
    its accuracy measures how much of the label the k pixels carry.

    Args:
        pixels: Features per example ``P`` (64 for the 8x8 digits).
        classes: Number of labels.
        hidden: Hidden width of both networks.

    Example:
        >>> import combgrad as cg
        >>> model = L2XModel(pixels=6, classes=3, hidden=5)
        >>> select = cg.differentiable(solver="topk", estimator="ste", k=2)
        >>> logits, mask = model(torch.rand(4, 6), select)
        >>> logits.shape, mask.sum(-1).tolist()
        (torch.Size([4, 3]), [2.0, 2.0, 2.0, 2.0])
    """

    def __init__(self, pixels: int, classes: int = 10, hidden: int = 200) -> None:
        super().__init__()
        self.selector = mlp(pixels, hidden, pixels)
        self.classifier = mlp(pixels, hidden, classes)

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """Selection scores ``[B, P]`` of images ``x [B, P]``."""
        return self.selector(x)

    def forward(
        self, x: torch.Tensor, select: Callable[[torch.Tensor], torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits [*S, B, C], mask [*S, B, P])`` for ``x [B, P]``; ``S`` is there when
        ``select`` returns one mask per sample (an estimator with ``reduce=False``)."""
        mask = select(self.scores(x))
        return self.classifier(x * mask), mask


__all__ = ["L2XModel", "mlp"]

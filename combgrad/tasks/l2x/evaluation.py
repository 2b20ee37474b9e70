"""L2X metrics: the classifier's accuracy on the selected pixels, and the agreement of two selections."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch.nn import functional as F

from .model import L2XModel


def selected_indices(mask: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` selected features of each k-hot row of ``mask [B, P]``, ascending: ``[B, k]`` int64.

    Example:
        >>> selected_indices(torch.tensor([[0.0, 1.0, 0.0, 1.0]]), 2)
        tensor([[1, 3]])
    """
    # A stable descending sort puts each row's ones first, in index order.
    order = torch.argsort(mask, dim=-1, descending=True, stable=True)[..., :k]
    return torch.sort(order, dim=-1).values


def mean_jaccard(first: np.ndarray | torch.Tensor, second: np.ndarray | torch.Tensor) -> float:
    """Mean over examples of ``|A ∩ B| / |A ∪ B|`` between two selections of the same examples.

    This is the task's *agreement across runs*: run two seeds (or two estimators)
    on the same test images and compare their ``selections.npy``; 1 means that
    both select the same pixels of every image, and two independent uniform
    selections of k of P pixels agree by about ``k / (2P - k)`` (0.067 for 8 of 64).

    Args:
        first: ``[M, k]`` selected indices per example (``selections.npy``).
        second: ``[M, k]`` likewise, for the same ``M`` examples.

    Raises:
        ValueError: If the two do not select for the same number of examples.

    Example:
        >>> mean_jaccard(np.array([[0, 1], [2, 3]]), np.array([[0, 2], [2, 3]]))
        0.6666666666666666
    """
    first_array, second_array = np.asarray(first), np.asarray(second)
    if first_array.ndim != 2 or second_array.ndim != 2 or len(first_array) != len(second_array):
        raise ValueError(
            f"l2x: selections must be [M, k] index arrays of the same examples, got shapes "
            f"{first_array.shape} and {second_array.shape}"
        )
    scores = []
    for a, b in zip(first_array.tolist(), second_array.tolist()):
        union = len(set(a) | set(b))
        scores.append(len(set(a) & set(b)) / union if union else 1.0)
    return float(np.mean(scores)) if scores else float("nan")


def evaluate(
    model: L2XModel,
    select: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    labels: torch.Tensor,
    k: int,
    *,
    batch_size: int = 1000,
) -> tuple[dict[str, float], torch.Tensor]:
    """Accuracy and cross-entropy of the classifier on the selected pixels, and the selections.

    Call with the model and layer in ``eval()`` mode, so that the selection is the
    exact top-k of the scores (a perturbation-based layer samples only in training).

    Args:
        model: The trained networks.
        select: The top-k layer.
        images: ``[M, P]``.
        labels: ``[M]``.
        k: Pixels selected per image.
        batch_size: Images per forward pass.

    Returns:
        ``({"accuracy", "loss"}, selections [M, k])``.

    Example:
        >>> import combgrad as cg
        >>> model = L2XModel(pixels=6, classes=3, hidden=5).eval()
        >>> select = cg.differentiable(solver="topk", estimator="ste", k=2)
        >>> metrics, chosen = evaluate(model, select, torch.rand(5, 6), torch.zeros(5, dtype=torch.long), 2)
        >>> sorted(metrics), chosen.shape
        (['accuracy', 'loss'], torch.Size([5, 2]))
    """
    correct = torch.zeros((), dtype=torch.float64, device=images.device)
    loss = torch.zeros((), dtype=torch.float64, device=images.device)
    chosen = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x, y = images[start : start + batch_size], labels[start : start + batch_size]
            logits, mask = model(x, select)
            correct += (logits.argmax(-1) == y).sum()
            loss += F.cross_entropy(logits, y, reduction="sum").double()
            chosen.append(selected_indices(mask, k))
    count = max(len(images), 1)
    return {"accuracy": float(correct) / count, "loss": float(loss) / count}, torch.cat(chosen)


__all__ = ["evaluate", "mean_jaccard", "selected_indices"]

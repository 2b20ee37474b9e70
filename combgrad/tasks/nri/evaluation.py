"""Metrics of the NRI task: how well the learned tree matches the true one, and the reconstruction error."""

from __future__ import annotations

import torch

from .._training.metrics import summarise


def edge_metrics(predicted: torch.Tensor, true: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-system edge accuracy, precision and recall of predicted graphs against true ones.

    Both are symmetric 0/1 adjacencies ``[B, n, n]``; each unordered pair ``i < j``
    counts once. Edge accuracy is the share of the ``n (n - 1) / 2`` pairs classified
    correctly (edge or no edge), precision the share of predicted edges that are true
    edges, recall the share of true edges that are predicted. Two spanning trees have
    ``n - 1`` edges each, so their precision equals their recall; a random tree on 10
    vertices has expected precision ``9 / 45 = 0.2`` and edge accuracy
    ``1 - 2 * 9 * 0.8 / 45 = 0.68``. A graph without edges has precision NaN
    (undefined, and left out of the means by :func:`~combgrad.tasks._training.summarise`).

    Returns:
        ``{"edge_accuracy", "precision", "recall"}``, each ``[B]`` float64.

    Example:
        >>> path = torch.tensor([[0, 1, 0], [1, 0, 1], [0, 1, 0]])  # edges 0-1, 1-2
        >>> star = torch.tensor([[0, 1, 1], [1, 0, 0], [1, 0, 0]])  # edges 0-1, 0-2
        >>> {name: value.tolist() for name, value in edge_metrics(star[None], path[None]).items()}
        {'edge_accuracy': [0.3333333333333333], 'precision': [0.5], 'recall': [0.5]}
    """
    if predicted.shape != true.shape or predicted.ndim != 3 or predicted.shape[1] != predicted.shape[2]:
        raise ValueError(
            f"edge_metrics: predicted and true must be adjacencies of one shape [B, n, n], "
            f"got {tuple(predicted.shape)} and {tuple(true.shape)}"
        )
    n = predicted.shape[-1]
    rows, columns = torch.triu_indices(n, n, offset=1, device=predicted.device)
    guess = predicted[:, rows, columns].to(torch.float64) > 0.5
    truth = true[:, rows, columns].to(device=predicted.device, dtype=torch.float64) > 0.5
    hits = (guess & truth).sum(-1).to(torch.float64)
    return {
        "edge_accuracy": (guess == truth).to(torch.float64).mean(-1),
        "precision": hits / guess.sum(-1),  # 0 / 0 = NaN: no edge predicted
        "recall": hits / truth.sum(-1),
    }


def summary(per_example: dict[str, torch.Tensor]) -> dict[str, float]:
    """Means of :func:`edge_metrics` values (and ``reconstruction_mse``) over the systems."""
    return summarise({name: values.cpu() for name, values in per_example.items()})


__all__ = ["edge_metrics", "summary"]

"""Evaluation on Warcraft maps: the trained network as a path predictor, and path metrics.

Metrics (:func:`path_metrics`): ``exact`` (predicted mask equals the true path),
``cost_optimal`` (the prediction is a path from the top-left to the bottom-right
tile whose true cost is within 1e-6, relative, of the optimum; this counts ties as
correct), ``regret`` (mean true cost of the predicted path minus the optimum, over
predictions that are paths) and ``valid`` (share of predictions that are paths;
always 1 for solver outputs, not for the direct baseline's thresholded masks).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ...solvers import get as get_solver
from .._training.metrics import summarise
from .data import WarcraftSplit
from .model import standardise


def connects_corners(masks: torch.Tensor) -> torch.Tensor:
    """Whether each 0/1 mask ``[N, k, k]`` links the top-left and bottom-right cells.

    Two cells are linked when a chain of 8-neighbouring cells of the mask joins them
    (both must be in the mask). Flood fill by repeated 3x3 max-pooling.

    Example:
        >>> connects_corners(torch.tensor([[[1, 0], [0, 1]], [[1, 0], [0, 0]]]))
        tensor([ True, False])
    """
    mask = (masks > 0).to(torch.float32).unsqueeze(1)
    reach = torch.zeros_like(mask)
    reach[:, :, 0, 0] = mask[:, :, 0, 0]
    for _ in range(mask.shape[-1] * mask.shape[-2]):
        grown = F.max_pool2d(reach, 3, stride=1, padding=1) * mask
        if torch.equal(grown, reach):
            break
        reach = grown
    return reach[:, 0, -1, -1] > 0


def path_metrics(
    predicted: torch.Tensor, true_paths: torch.Tensor, weights: torch.Tensor, *, rtol: float = 1e-6
) -> dict[str, torch.Tensor]:
    """Per-map path quality of ``predicted [N, k, k]`` 0/1 masks.

    Args:
        predicted: Predicted masks (solver output, or a thresholded baseline mask).
        true_paths: True shortest paths ``[N, k, k]``.
        weights: True tile costs ``[N, k, k]``.
        rtol: Relative tolerance of "cost-optimal".

    Returns:
        ``exact``, ``valid``, ``cost_optimal`` ([N] bool) and ``regret`` ([N] float64:
        true cost of the prediction minus the optimum; NaN where the mask is not a path).

    Example:
        >>> weights = torch.tensor([[[1.0, 1.0], [1.0, 1.0]]])
        >>> true = torch.tensor([[[1, 0], [0, 1]]])
        >>> m = path_metrics(torch.tensor([[[1, 1], [0, 1]]]), true, weights)
        >>> bool(m["exact"]), bool(m["valid"]), bool(m["cost_optimal"]), float(m["regret"])
        (False, True, False, 1.0)
    """
    predicted = (predicted > 0.5).to(torch.float64)
    true_paths = true_paths.to(torch.float64)
    weights = weights.to(torch.float64)
    optimum = (weights * true_paths).sum(dim=(-2, -1))
    cost = (weights * predicted).sum(dim=(-2, -1))
    valid = connects_corners(predicted)
    regret = torch.where(valid, cost - optimum, torch.full_like(cost, math.nan))
    return {
        "exact": (predicted == true_paths).flatten(1).all(dim=1),
        "valid": valid,
        "cost_optimal": valid & (cost <= optimum * (1.0 + rtol)),
        "regret": regret,
    }


def normalise_costs(costs: torch.Tensor) -> torch.Tensor:
    """Divide each map's costs ``[B, k, k]`` by their mean: ``[B, k, k]`` with mean 1 per map.

    A shortest path does not change when all costs of a map are scaled, but the
    estimators' options do not scale with them: blackbox's and I-MLE's ``lam`` and
    the noise scale are absolute. Without this, the Hamming loss lets the network's
    cost scale drift (measured here: down by a factor of about 300 over 8 epochs
    with blackbox), and the fixed ``lam`` then dwarfs the costs; with it, the
    options keep their meaning and blackbox reached 99.2% cost-optimal paths
    instead of 94.8% (synthetic 12x12, 10,000 maps, 8 epochs).

    Example:
        >>> normalise_costs(torch.tensor([[[1.0, 3.0], [2.0, 2.0]]]))
        tensor([[[0.5000, 1.5000],
                 [1.0000, 1.0000]]])
    """
    return costs / costs.mean(dim=(-2, -1), keepdim=True).clamp_min(torch.finfo(costs.dtype).tiny)


class Predictor:
    """A trained Warcraft model as a path predictor: maps ``[B, 8k, 8k, 3]`` uint8 -> paths.

    Holds the network, the input statistics and the solver; the cost network's
    paths come from the solver on its costs, the direct baseline's from thresholding
    its sigmoid at 0.5.

    Args:
        model: A cost network or :class:`~combgrad.tasks.warcraft.model.DirectCNN`.
        mean: ``[3]`` input channel means; std: ``[3]`` channel deviations.
        direct: Whether ``model`` is the direct baseline.
        normalise: Divide each map's costs by their mean (:func:`normalise_costs`).
        solver: The shortest-path solver (default: the registry's).
        device: Where the network runs.

    Example:
        >>> from combgrad.tasks.warcraft.model import SmallCNN
        >>> predictor = Predictor(SmallCNN(12), torch.zeros(3), torch.ones(3))
        >>> costs, paths = predictor(torch.zeros(2, 96, 96, 3, dtype=torch.uint8))
        >>> costs.shape, paths.shape
        (torch.Size([2, 12, 12]), torch.Size([2, 12, 12]))
    """

    def __init__(
        self,
        model: nn.Module,
        mean: torch.Tensor,
        std: torch.Tensor,
        *,
        direct: bool = False,
        normalise: bool = False,
        solver: Any = None,
        device: torch.device | str = "cpu",
    ) -> None:
        self.model = model
        self.normalise = normalise and not direct
        self.device = torch.device(device)
        self.mean = mean.to(self.device)
        self.std = std.to(self.device)
        self.direct = direct
        self.solver = solver if solver is not None else get_solver("shortest_path")

    def images(self, maps: torch.Tensor) -> torch.Tensor:
        """The network's input: ``maps [B, 8k, 8k, 3]`` standardised, ``[B, 3, 8k, 8k]`` on the device."""
        return standardise(maps.to(self.device), self.mean, self.std)

    def output(self, images: torch.Tensor) -> torch.Tensor:
        """The network's output on standardised ``images [B, 3, 8k, 8k]``: costs (per-map
        normalised if ``normalise``) or the baseline's logits, ``[B, k, k]``."""
        output = self.model(images)
        return normalise_costs(output) if self.normalise else output

    @torch.no_grad()
    def __call__(self, maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Costs (or, for the baseline, path probabilities) and 0/1 paths, both ``[B, k, k]``."""
        was_training = self.model.training
        self.model.eval()
        try:
            output = self.output(self.images(maps))
        finally:
            self.model.train(was_training)
        if self.direct:
            probabilities = torch.sigmoid(output)
            return probabilities, (probabilities > 0.5).to(torch.float32)
        return output, self.solver(output)

    def evaluate(self, split: WarcraftSplit, batch_size: int = 500) -> dict[str, float]:
        """Mean :func:`path_metrics` over a split (``regret`` over valid paths only)."""
        return summarise(self.per_example(split, batch_size))

    def per_example(
        self, split: WarcraftSplit, batch_size: int = 500, *, start: int = 0, stop: int | None = None
    ) -> dict[str, torch.Tensor]:
        """:func:`path_metrics` of maps ``start .. stop - 1`` of a split, ``[stop - start]`` each, on the CPU.

        A distributed run evaluates one such block per process and joins them.

        Example:
            >>> from combgrad.tasks.warcraft.data import generate_split
            >>> from combgrad.tasks.warcraft.model import SmallCNN
            >>> metrics = Predictor(SmallCNN(12), torch.zeros(3), torch.ones(3)).per_example(
            ...     generate_split(12, 5), 2, start=1, stop=4)
            >>> metrics["exact"].shape
            torch.Size([3])
        """
        stop = len(split) if stop is None else min(stop, len(split))
        parts: dict[str, list[torch.Tensor]] = {}
        for first in range(start, stop, batch_size):
            chunk = slice(first, min(first + batch_size, stop))
            _, paths = self(torch.from_numpy(split.maps[chunk]))
            metrics = path_metrics(
                paths.cpu(), torch.from_numpy(np.asarray(split.shortest_paths[chunk])),
                torch.from_numpy(np.asarray(split.vertex_weights[chunk])),
            )
            for name, values in metrics.items():
                parts.setdefault(name, []).append(values)
        if not parts:  # an empty block (more processes than maps)
            return {name: torch.zeros(0, dtype=torch.float64) for name in ("exact", "valid", "cost_optimal", "regret")}
        return {name: torch.cat(values) for name, values in parts.items()}


__all__ = ["Predictor", "connects_corners", "normalise_costs", "path_metrics"]

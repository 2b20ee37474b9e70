"""Learning-rate schedules of a training run, stepped once per optimisation step."""

from __future__ import annotations

import math

import torch

from ..._checks import check_choice, check_positive_int

SCHEDULES = ("constant", "papers", "cosine")
"""``constant``; ``papers``: lr / 10 after 60% and again after 80% of the epochs (30 and
40 of the Warcraft papers' 50); ``cosine``: half a cosine from lr down to 0."""


def learning_rate_schedule(
    optimizer: torch.optim.Optimizer, name: str, *, epochs: int, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """The schedule ``name`` (one of :data:`SCHEDULES`) over ``epochs * steps_per_epoch`` steps.

    Example:
        >>> optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        >>> schedule = learning_rate_schedule(optimizer, "papers", epochs=5, steps_per_epoch=2)
        >>> rates = []
        >>> for _ in range(10):
        ...     rates.append(round(optimizer.param_groups[0]["lr"], 6)); optimizer.step(); schedule.step()
        >>> rates
        [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.1, 0.1, 0.01, 0.01]
    """
    check_choice("schedule", "name", name, SCHEDULES)
    check_positive_int("schedule", "epochs", epochs)
    check_positive_int("schedule", "steps_per_epoch", steps_per_epoch)
    total = epochs * steps_per_epoch
    if name == "papers":
        milestones = [round(0.6 * epochs) * steps_per_epoch, round(0.8 * epochs) * steps_per_epoch]
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)
    if name == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))
        )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


__all__ = ["SCHEDULES", "learning_rate_schedule"]

"""What the pool-based losses (nce, cmap, ltr) share: reading the pool and scoring it.

The pool is a :class:`~combgrad.adapters.SolutionPool` (called on the
prediction first, so that it solves its ``solve_ratio`` share and grows, as
PyEPO's losses refresh their pool before using it) or a fixed tensor
``[P, *event]`` of solutions, which then needs ``sense``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..._checks import check_finite, check_sense, check_tensor, check_theta
from ..base import event_sum, score_sign


def read_pool(owner: str, theta: object, pool: Any, sense: object) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """``(theta, pool [P, d] on theta's device and dtype, score sign, event_ndim)``, the pool refreshed first.

    Raises:
        TypeError: If ``pool`` is neither a SolutionPool nor a tensor.
        ValueError: If ``sense`` is missing (tensor pool) or contradicts the
            pool's, the pool is empty or not ``[P, *event]``, or theta's event
            shape is not the pool's.
    """
    from ...adapters.solution_pool import SolutionPool  # the adapters import the losses

    if isinstance(pool, SolutionPool):
        if sense is not None and check_sense(owner, sense) != pool.sense:
            raise ValueError(f"{owner}: sense must be the pool's sense {pool.sense!r} (or None), got {sense!r}")
        event_ndim = pool.event_ndim
        theta = check_theta(owner, theta, event_ndim)
        pool.solve_prechecked(theta.detach())  # solves its solve_ratio share and grows
        solutions, sense = pool.solutions, pool.sense
    elif isinstance(pool, torch.Tensor):
        if sense is None:
            raise ValueError(
                f"{owner}: sense must be 'min' or 'max' with a tensor pool (a SolutionPool brings its own), got None"
            )
        sense = check_sense(owner, sense)
        solutions = check_finite(owner, "pool", check_tensor(owner, "pool", pool))
        if solutions.ndim < 2:
            raise ValueError(f"{owner}: pool must have at least 2 dims [P, *event], got shape {tuple(solutions.shape)}")
        event_ndim = solutions.ndim - 1
        theta = check_theta(owner, theta, event_ndim)
    else:
        raise TypeError(f"{owner}: pool must be a SolutionPool or a tensor [P, *event], got {type(pool).__name__}")
    event_shape = tuple(theta.shape[theta.ndim - event_ndim :])
    if solutions.shape[0] == 0:
        raise ValueError(f"{owner}: pool must hold at least one solution, got shape {tuple(solutions.shape)}")
    if tuple(solutions.shape[1:]) != event_shape:
        raise ValueError(
            f"{owner}: theta must end with the pool's event shape {tuple(solutions.shape[1:])}, "
            f"got shape {tuple(theta.shape)}"
        )
    flat = solutions.detach().reshape(solutions.shape[0], math.prod(event_shape))
    return theta, flat.to(device=theta.device, dtype=theta.dtype), score_sign(sense), event_ndim


def pool_objectives(values: torch.Tensor, pool: torch.Tensor, event_ndim: int) -> torch.Tensor:
    """``<values, p>`` for every pooled solution: ``values [*batch, *event]``, pool ``[P, d]`` -> ``[*batch, P]``."""
    batch_shape = values.shape[: values.ndim - event_ndim]
    flat = values.reshape(math.prod(batch_shape), pool.shape[1])
    return (flat @ pool.T).reshape(*batch_shape, pool.shape[0])


def contrastive_margins(
    owner: str, theta: object, y_true: object, pool: Any, sense: object
) -> torch.Tensor:
    """``<s, p - y_true>`` for every pooled ``p`` in score space ``s = sign theta``: ``[*batch, P]``.

    NCE averages these margins and CMAP takes their maximum (Mulamba et al.).
    """
    from ._common import check_target

    theta, solutions, sign, event_ndim = read_pool(owner, theta, pool, sense)
    target = check_target(owner, "y_true", y_true, theta).detach()
    pooled = pool_objectives(theta, solutions, event_ndim)
    own = event_sum(theta * target, event_ndim)
    # Written as a difference in theta's units so that "min" needs no negated copy of theta.
    return pooled - own.unsqueeze(-1) if sign > 0 else own.unsqueeze(-1) - pooled

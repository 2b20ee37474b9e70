"""The noise-contrastive estimation loss over a solution pool (Mulamba et al., 2021): ``cg.losses.nce``."""

from __future__ import annotations

from typing import Any

import torch

from ._pool import contrastive_margins


def nce(theta: torch.Tensor, y_true: torch.Tensor, *, pool: Any, sense: str | None = None) -> torch.Tensor:
    """Noise-contrastive (NCE) loss: how much the pooled solutions beat ``y_true`` under ``theta``, on average.

    Mulamba et al. treat the pooled solutions as noise samples and ask the
    prediction to make the true solution better than all of them. As PyEPO's
    ``NCE``, per instance and in score space (``s = theta`` for "max", ``-theta``
    for "min")

    ``NCE(theta) = mean_{p in pool} <s, p - y_true>``,

    i.e. ``mean_p (<theta, y_true> - <theta, p>)`` for a "min" problem. It is
    linear in ``theta`` (gradient ``mean_p p - y_true`` in score space, no
    solver in backward) and unbounded below: only its gradient direction is
    meaningful, and PyEPO uses it as it is. A
    :class:`~combgrad.adapters.SolutionPool` is called on ``theta`` first, so it
    solves its ``solve_ratio`` share of the batch and grows before the loss reads
    it (PyEPO's ``solve_ratio``); start it with the training set's true
    solutions (``initial=``) as PyEPO does. PyEPO averages over the batch
    (``reduction="mean"``); this returns one value per instance.

    Args:
        theta: Predicted costs (or scores, for a "max" problem) ``[*, *event]``.
        y_true: True solutions, same shape, finite.
        pool: A ``SolutionPool`` or a fixed tensor of solutions ``[P, *event]``.
        sense: ``"min"`` or ``"max"``: needed with a tensor pool; a SolutionPool
            has its solver's (a different one here is an error).

    Returns:
        ``[*]``, one loss per instance.

    Raises:
        ValueError: On an empty pool, event shapes that differ, a missing or
            contradicting ``sense``, or non-finite values.
        TypeError: On a pool that is neither a SolutionPool nor a tensor.

    Example:
        >>> import torch, combgrad as cg
        >>> paths = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
        >>> costs = torch.tensor([[1.0, 2.0, 4.0]], requires_grad=True)
        >>> loss = cg.losses.nce(costs, paths[:1], pool=paths, sense="min")
        >>> loss  # mean(1 - 1, 1 - 2, 1 - 4)
        tensor([-1.3333], grad_fn=<MeanBackward1>)
        >>> loss.backward(); costs.grad  # y_true - mean_p p
        tensor([[ 0.6667, -0.3333, -0.3333]])

    References:
        M. Mulamba, J. Mandi, M. Diligenti, M. Lombardi, V. Bucarey, T. Guns.
        Contrastive Losses and Solution Caching for Predict-and-Optimize. IJCAI 2021.
    """
    return contrastive_margins("nce", theta, y_true, pool, sense).mean(dim=-1)

"""The contrastive MAP loss over a solution pool (Mulamba et al., 2021): ``cg.losses.cmap``."""

from __future__ import annotations

from typing import Any

import torch

from ._pool import contrastive_margins


def cmap(theta: torch.Tensor, y_true: torch.Tensor, *, pool: Any, sense: str | None = None) -> torch.Tensor:
    """Contrastive MAP (CMAP) loss: how much the best pooled solution under ``theta`` beats ``y_true``.

    The maximum-a-posteriori special case of NCE (Mulamba et al.): only the
    most violating pooled solution is a negative. As PyEPO's ``contrastiveMAP``,
    per instance and in score space (``s = theta`` for "max", ``-theta`` for "min")

    ``CMAP(theta) = max_{p in pool} <s, p - y_true>``,

    i.e. ``<theta, y_true> - min_p <theta, p>`` for a "min" problem: ``>= 0``
    when ``y_true`` is in the pool (the usual case: PyEPO starts the pool with
    the training set's true solutions), 0 exactly when ``y_true`` is optimal
    among the pooled solutions under ``theta``. Its subgradient is
    ``p* - y_true`` in score space, ``p*`` the maximizer (among tied ones,
    ``torch.max``'s choice, as in PyEPO). A :class:`~combgrad.adapters.SolutionPool`
    is called on ``theta`` first (it solves its ``solve_ratio`` share and grows).
    PyEPO averages over the batch; this returns one value per instance.

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
        >>> costs = torch.tensor([[3.0, 2.0, 4.0]], requires_grad=True)
        >>> loss = cg.losses.cmap(costs, paths[:1], pool=paths, sense="min")
        >>> loss  # 3 - min(3, 2, 4)
        tensor([1.], grad_fn=<MaxBackward0>)
        >>> loss.backward(); costs.grad  # y_true - p*: descent lowers the true path's cost, raises its rival's
        tensor([[ 1., -1.,  0.]])

    References:
        M. Mulamba, J. Mandi, M. Diligenti, M. Lombardi, V. Bucarey, T. Guns.
        Contrastive Losses and Solution Caching for Predict-and-Optimize. IJCAI 2021.
    """
    return contrastive_margins("cmap", theta, y_true, pool, sense).max(dim=-1).values

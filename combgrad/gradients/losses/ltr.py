"""Learning-to-rank losses over a solution pool (Mandi et al., 2022): ``cg.losses.ltr``."""

from __future__ import annotations

from typing import Any

import torch

from ..._checks import check_choice, check_number
from ._common import check_target
from ._pool import pool_objectives, read_pool

_KINDS = ("listwise", "pairwise", "pointwise")


def ltr(
    theta: torch.Tensor,
    theta_true: torch.Tensor,
    *,
    pool: Any,
    kind: str = "listwise",
    sense: str | None = None,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Learning-to-rank loss: rank the pooled solutions under ``theta`` as ``theta_true`` ranks them.

    Mandi et al. read decision-focused learning as ranking: the prediction
    should order the feasible solutions (here: the pooled ones) as the true
    costs do. With ``f_p = <s, p>`` and ``t_p = <s_true, p>`` the pooled
    solutions' objectives in score space (``s = theta`` for "max", ``-theta``
    for "min", so higher is better in both senses), as PyEPO's
    ``listwiseLearningToRank``, ``pairwiseLearningToRank`` and
    ``pointwiseLearningToRank`` (``lsLTR``, ``prLTR``, ``ptLTR``), per instance:

    * ``kind="listwise"`` (default): the cross-entropy of the predicted ranking
      distribution against the true one,
      ``-sum_p max(softmax(t / T)_p, 1e-8) log softmax(f / T)_p`` (``T =
      temperature``; PyEPO has ``T = 1`` and the same ``1e-8`` floor);
    * ``kind="pairwise"``: a hinge between the true best pooled solution ``b``
      (``argmax_p t_p``, ties to the lowest pool index) and every other one,
      ``sum_p relu(f_p - f_b) / max(P - 1, 1)``;
    * ``kind="pointwise"``: squared errors of the pooled objectives,
      ``mean_p <theta_true - theta, p>^2`` (the same in both senses).

    No solver runs in backward. A :class:`~combgrad.adapters.SolutionPool` is
    called on ``theta`` first, so it solves its ``solve_ratio`` share and grows
    before the loss reads it (PyEPO's ``solve_ratio``); start it with the
    training set's true solutions (``initial=``), as PyEPO does. PyEPO averages
    over the batch (``reduction="mean"``); this returns one value per instance.

    Args:
        theta: Predicted costs (or scores, for a "max" problem) ``[*, *event]``.
        theta_true: True costs, same shape, finite.
        pool: A ``SolutionPool`` or a fixed tensor of solutions ``[P, *event]``.
        kind: ``"listwise"`` (default), ``"pairwise"`` or ``"pointwise"``.
        sense: ``"min"`` or ``"max"``: needed with a tensor pool; a SolutionPool
            has its solver's (a different one here is an error).
        temperature: Softmax temperature ``T > 0`` of ``"listwise"`` (default 1,
            PyEPO's); the other kinds take none.

    Returns:
        ``[*]``, one loss per instance.

    Raises:
        ValueError: On an unknown ``kind``, a bad ``temperature`` (or one given
            to a kind that has none), an empty pool, event shapes that differ, a
            missing or contradicting ``sense``, or non-finite values.
        TypeError: On a pool that is neither a SolutionPool nor a tensor.

    Example:
        >>> import torch, combgrad as cg
        >>> paths = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
        >>> true_costs = torch.tensor([[1.0, 2.0, 4.0]])
        >>> costs = torch.tensor([[2.0, 1.0, 4.0]])
        >>> cg.losses.ltr(costs, true_costs, pool=paths, kind="pairwise", sense="min")  # relu(2 - 1) / 2
        tensor([0.5000])
        >>> cg.losses.ltr(costs, true_costs, pool=paths, kind="pointwise", sense="min")  # (1 + 1 + 0) / 3
        tensor([0.6667])
        >>> cg.losses.ltr(true_costs, true_costs, pool=paths, sense="min")  # the entropy of softmax(-[1, 2, 4])
        tensor([0.7139])

    References:
        J. Mandi, V. Bucarey, M. Mulamba, T. Guns. Decision-Focused Learning:
        Through the Lens of Learning to Rank. ICML 2022.
    """
    owner = "ltr"
    check_choice(owner, "kind", kind, _KINDS)
    scale = check_number(owner, "temperature", temperature, positive=True)
    if kind != "listwise" and scale != 1.0:
        raise ValueError(f"{owner}: temperature is an option of kind='listwise' only, got temperature={temperature!r} with kind={kind!r}")
    theta, solutions, sign, event_ndim = read_pool(owner, theta, pool, sense)
    costs_true = check_target(owner, "theta_true", theta_true, theta).detach()
    if kind == "pointwise":
        return pool_objectives(costs_true - theta, solutions, event_ndim).square().mean(dim=-1)
    predicted = sign * pool_objectives(theta, solutions, event_ndim)
    true = sign * pool_objectives(costs_true, solutions, event_ndim)
    if kind == "listwise":
        target = torch.softmax(true / scale, dim=-1).clamp(min=1e-8)
        return -(target * torch.log_softmax(predicted / scale, dim=-1)).sum(dim=-1)
    # argmax returns the first best index: ties go to the lowest pool index.
    best = predicted.gather(-1, true.argmax(dim=-1, keepdim=True))
    return torch.relu(predicted - best).sum(dim=-1) / max(solutions.shape[0] - 1, 1)

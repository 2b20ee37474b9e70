"""The Hamming loss between predicted and target solutions: ``cg.losses.hamming``."""

from __future__ import annotations

import torch

from ..._checks import check_tensor
from ..base import event_sum
from ._common import check_target

def hamming(y: torch.Tensor, y_true: torch.Tensor, *, event_ndim: int | None = None) -> torch.Tensor:
    """Hamming distance per instance: ``sum y (1 - y_true) + (1 - y) y_true`` over the event dims.

    For 0/1 tensors this counts the differing entries; for a fractional ``y``
    against a 0/1 ``y_true`` it is ``sum |y - y_true|``, and it is linear in
    ``y``, so its gradient ``1 - 2 y_true`` never vanishes (the loss of the I-MLE
    paper's toy problem). Its first argument is a predicted *solution* (a
    solver's or layer's output), not the solver's input, hence ``y``.

    Args:
        y: Predicted solutions ``[*, *event]``.
        y_true: Targets, same shape, finite.
        event_ndim: Number of trailing event dims; default all dims but the first
            (all dims for a 1-D ``y``).

    Returns:
        ``[*]``, one distance per instance.

    Raises:
        TypeError: If ``y`` or ``y_true`` is not a tensor.
        ValueError: On mismatched shapes, a NaN/inf ``y_true``, a meta tensor, or
            an invalid ``event_ndim``.

    Example:
        >>> import torch, combgrad as cg
        >>> y = torch.tensor([[1.0, 0.0, 1.0], [0.5, 0.5, 0.0]])
        >>> cg.losses.hamming(y, torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]]))
        tensor([2., 1.])
    """
    y = check_tensor("hamming", "y", y)
    y_true = check_target("hamming", "y_true", y_true, y)
    if event_ndim is None:
        event_ndim = max(y.ndim - 1, 1) if y.ndim else 0
    elif isinstance(event_ndim, bool) or not isinstance(event_ndim, int) or not 0 <= event_ndim <= y.ndim:
        raise ValueError(f"hamming: event_ndim must be an integer in [0, {y.ndim}], got {event_ndim!r}")
    return event_sum(y * (1 - y_true) + (1 - y) * y_true, event_ndim)

"""Validation of the latent pairs ``(u, v)`` that the quasimetric heads (PQE, IQE) take."""

from __future__ import annotations

import torch

from .._checks import check_tensor


def check_latent_pair(owner: str, u: object, v: object, size: int, size_name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(u, v)`` if both are floating tensors ``[..., size]`` with broadcastable leading dims.

    Args:
        owner: The head's name, for the messages.
        u: Latents ``[..., size]``.
        v: Latents ``[..., size]``.
        size: The expected last dim.
        size_name: How the head names ``size`` (``"input_size=32"``), for the messages.

    Raises:
        TypeError: If ``u`` or ``v`` is not a tensor.
        ValueError: If a latent is a meta tensor, not floating point or has the wrong
            last dim, or the leading dims do not broadcast.

    Example:
        >>> u, v = check_latent_pair("IQE", torch.zeros(2, 4), torch.zeros(4), 4, "input_size=4")
        >>> tuple(u.shape), tuple(v.shape)
        ((2, 4), (4,))
    """
    latents = []
    for name, value in (("u", u), ("v", v)):
        latent = check_tensor(owner, name, value)
        if not latent.is_floating_point():
            raise ValueError(f"{owner}: {name} must be a floating tensor, got dtype {latent.dtype}")
        if latent.ndim == 0 or latent.shape[-1] != size:
            raise ValueError(f"{owner}: {name} must have last dim {size_name}, got shape {tuple(latent.shape)}")
        latents.append(latent)
    first, second = latents
    try:
        torch.broadcast_shapes(first.shape, second.shape)
    except RuntimeError:
        raise ValueError(
            f"{owner}: u and v must have broadcastable leading dims, got shapes "
            f"{tuple(first.shape)} and {tuple(second.shape)}"
        ) from None
    return first, second

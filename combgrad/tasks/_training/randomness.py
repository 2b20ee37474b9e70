"""The process's random state: seed it, capture it, restore it (for exact resumes).

A run draws from four generators: torch's CPU generator, CUDA's (per device),
numpy's legacy global one and Python's :mod:`random`. :func:`rng_state` captures
all of them as tensors, plain lists and numbers only, so that a checkpoint holding
them loads with ``torch.load(..., weights_only=True)`` (no pickled objects, no
code run on load); :func:`set_rng_state` restores them from CPU tensors, which is
what ``torch.set_rng_state`` and ``torch.cuda.set_rng_state`` require.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy's global generator and Python's :mod:`random`.

    Example:
        >>> seed_everything(3); a = torch.rand(1); seed_everything(3); bool(a == torch.rand(1))
        True
    """
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def rng_state(device: torch.device) -> dict[str, Any]:
    """All generators' states as tensors, lists and numbers (see the module docstring).

    Args:
        device: The run's device; a CUDA device's generator is included.

    Example:
        >>> state = rng_state(torch.device("cpu"))
        >>> sorted(state), state["torch"].dtype, state["numpy"]["key"].shape
        (['numpy', 'python', 'torch'], torch.uint8, torch.Size([624]))
    """
    name, key, position, has_gauss, cached_gaussian = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "bit_generator": str(name),
            "key": torch.from_numpy(np.asarray(key, dtype=np.int64)),  # uint32 words, held exactly
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "python": {"version": int(version), "internal": list(internal), "gauss_next": gauss_next},
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: Mapping[str, Any], device: torch.device) -> None:
    """Restore the generators from :func:`rng_state`'s output.

    Tensors are moved to the CPU first, so a state loaded onto any device works.

    Raises:
        KeyError, TypeError, ValueError: If ``state`` is not :func:`rng_state`'s layout.

    Example:
        >>> state = rng_state(torch.device("cpu")); a = torch.rand(1)
        >>> set_rng_state(state, torch.device("cpu")); bool(a == torch.rand(1))
        True
    """
    numpy_state = state["numpy"]
    python_state = state["python"]
    torch.set_rng_state(state["torch"].cpu())
    np.random.set_state(
        (
            numpy_state["bit_generator"],
            numpy_state["key"].cpu().numpy().astype(np.uint32),
            numpy_state["position"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    random.setstate((python_state["version"], tuple(python_state["internal"]), python_state["gauss_next"]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


__all__ = ["rng_state", "seed_everything", "set_rng_state"]

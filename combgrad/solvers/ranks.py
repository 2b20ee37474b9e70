"""``ranks``: the permutation of ``(0, ..., n - 1)`` that maximizes ``<theta, y>``.

By the rearrangement inequality the maximizing permutation gives the largest
rank to the largest score: ``y_i`` is the number of entries that sort before
``i``, the rank of ``theta_i``. Perturbed, it is the perturbed-ranks example of
Berthet et al. (2020), a differentiable soft rank. Two kernels, with the same
tie rule: a stable argsort on the host (numba, run over the batch by
:func:`combgrad.solvers.parallel.run_batch`) and ``torch.argsort(stable=True)``
on theta's own device.

References:
    Q. Berthet, M. Blondel, O. Teboul, M. Cuturi, J.-P. Vert, F. Bach. Learning
    with Differentiable Perturbed Optimizers. NeurIPS 2020.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit, prange

from .base import BatchSolver
from .parallel import chunk_range, run_batch
from .registry import register

OWNER = "ranks"

# The largest n whose ranks 0 .. n - 1 a narrow float dtype holds exactly
# (every integer up to 2 ** (mantissa bits + 1)).
_EXACT_UP_TO = {torch.float16: 2**11, torch.bfloat16: 2**8}


@njit(cache=True)
def _solve_range(theta, out, start, stop):
    """Instances ``start:stop`` of ``theta [B, n]`` into the ranks ``out [B, n]`` (int64)."""
    n = theta.shape[1]
    for index in range(start, stop):
        # mergesort is stable: equal scores keep index order, so the lower index
        # gets the lower rank.
        order = np.argsort(theta[index], kind="mergesort")
        for position in range(n):
            out[index, order[position]] = position


@njit(cache=True, parallel=True)
def _solve_chunks(theta, out, chunks):
    """The batch cut into ``chunks`` contiguous ranges, one per thread (see :mod:`.parallel`)."""
    for chunk in prange(chunks):
        start, stop = chunk_range(chunk, out.shape[0], chunks)
        _solve_range(theta, out, start, stop)


# Estimated serial time per entry and per log2(n) comparison level of the sort.
SECONDS_PER_COMPARISON = 5e-9


class Ranks(BatchSolver):
    """The ranks ``y [*, n]`` of each instance ``theta [*, n]``: the permutation maximizing ``<theta, y>``.

    Sense "max". ``y_i`` is in ``{0, ..., n - 1}``, each value once per
    instance: the largest score gets rank ``n - 1``, the smallest rank 0, and
    among equal scores the lower index gets the lower rank (any order of equal
    scores maximizes ``<theta, y>``; this one is the same on both backends).
    ``y`` has theta's shape, dtype and device.

    Args:
        backend: ``"auto"`` (default: ``"torch"`` for a theta off the CPU, else
            ``"numba"``), ``"numba"`` (a stable sort on the host; a CUDA theta is
            copied there and back) or ``"torch"`` (``torch.argsort(stable=True)``
            and the inverse permutation by one scatter, which equals a second
            argsort, on theta's device).

    Raises:
        ValueError: On an invalid backend; at call time on NaN/inf, or on a
            float16 (bfloat16) theta with more than 2048 (256) entries, whose
            ranks that dtype cannot hold exactly.

    Example:
        >>> import torch, combgrad as cg
        >>> cg.solvers.get("ranks")(torch.tensor([0.3, -1.0, 2.0, 0.3]))
        tensor([1., 0., 3., 2.])
    """

    name = OWNER
    sense = "max"
    event_ndim = 1
    backends = ("numba", "torch")

    def __init__(self, *, backend: str = "auto") -> None:
        self.set_backend(backend)

    def check_event(self, theta: torch.Tensor, event_shape: tuple[int, ...]) -> None:
        limit = _EXACT_UP_TO.get(theta.dtype)
        if limit is not None and event_shape[0] > limit:
            raise ValueError(
                f"{OWNER}: theta must have at most {limit} entries per instance in {theta.dtype} "
                f"(larger ranks are not exact in it), got shape {tuple(theta.shape)}; use float32"
            )

    def solve_batch(self, theta: np.ndarray) -> np.ndarray:
        out = np.empty(theta.shape, dtype=np.int64)
        n = theta.shape[1]
        work = SECONDS_PER_COMPARISON * n * max(1.0, float(np.log2(max(n, 2))))
        return run_batch(_solve_range, _solve_chunks, (theta,), out, work)

    def solve_torch(self, theta: torch.Tensor) -> torch.Tensor:
        # + 0.0 turns -0.0 into 0.0: a radix sort (CUDA's) would order them by
        # their bits, while the host's comparisons treat them as the equal scores they are.
        order = torch.argsort(theta + 0.0, dim=-1, stable=True)
        # The inverse permutation: ranks[order[j]] = j.
        positions = torch.arange(theta.shape[-1], device=theta.device).expand_as(order)
        return torch.empty_like(order).scatter_(-1, order, positions).to(theta.dtype)

    def __repr__(self) -> str:
        return f"Ranks(backend={self.backend!r})"


register(OWNER, Ranks)

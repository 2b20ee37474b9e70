"""What a solver is, and the validation and batching that every solver shares.

A solver maps scores or costs ``theta [*batch, *event]`` to a discrete solution of
the same shape, ``y*(theta) = argmax_y <theta, y>`` (sense "max") or argmin (sense
"min"). Leading dims are batch dims. :class:`BatchSolver` does the boundary work
once for all built-in solvers: type, finiteness and shape checks, flattening the
batch, the CPU/float64 numpy round trip, and returning on theta's device and dtype.
"""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from .._checks import Sense, check_theta


@runtime_checkable
class Solver(Protocol):
    """The solver contract: ``y = solver(theta)`` over ``event_ndim`` trailing dims.

    Attributes:
        name: The registry name, used in error messages.
        sense: ``"min"`` or ``"max"``: ``y`` minimizes or maximizes ``<theta, y>``.
        event_ndim: How many trailing dims of ``theta`` form one instance.

    Optional attribute (not part of the protocol check, read with
    ``getattr(solver, "accepts_negative", True)``):
        accepts_negative: ``False`` on a solver that clips or refuses negative
            entries of ``theta`` (``shortest_path``'s Dijkstra); absent means
            True. Losses that build inputs of either sign, such as ``spo_plus``'s
            ``2 * theta - theta_true``, refuse such solvers instead of silently
            solving a clipped problem.

    Example:
        >>> import combgrad as cg
        >>> isinstance(cg.solvers.get("argmax"), Solver)
        True
        >>> getattr(cg.solvers.get("shortest_path"), "accepts_negative", True)
        False
    """

    name: str
    sense: Sense
    event_ndim: int

    def __call__(self, theta: torch.Tensor) -> torch.Tensor: ...


def check_sum_magnitude(owner: str, argument: str, theta: torch.Tensor, terms: int, what: str) -> None:
    """Raise ValueError if a float64 sum of ``terms`` entries of ``theta`` could overflow.

    The numba kernels add up entries of theta (a path's cost, a selection's
    value, dual potentials) in float64; huge finite entries would make those
    sums infinite and the kernel return a non-solution. Entries must therefore
    be at most ``float64 max / (2 * terms)`` in magnitude (the factor 2 leaves
    room for rounding and for differences of such sums). Dtypes that cannot
    hold such values (float32 and narrower, for ``terms`` below about 1e269)
    are not scanned, nor is anything when ``terms`` is 0.

    Args:
        owner: The solver's name, for the message.
        argument: The argument's name, for the message.
        theta: The validated (finite) input.
        terms: How many entries one of the kernel's sums adds up, at most.
        what: What the sum is, e.g. ``"a path on a 12 x 12 grid"``.

    Example:
        >>> check_sum_magnitude("knapsack", "theta", torch.tensor([1e308, 0.0], dtype=torch.float64), 2, "a selection of 2 items")
        Traceback (most recent call last):
        ...
        ValueError: knapsack: theta must have magnitudes at most 4.49e+307 for a selection of 2 items (a float64 sum of up to 2 entries), got 1e+308; rescale theta
    """
    if terms < 1:
        return  # nothing is summed
    limit = float(np.finfo(np.float64).max) / (2.0 * terms)
    if not theta.numel() or float(torch.finfo(theta.dtype).max) <= limit:
        return
    low, high = torch.aminmax(theta.detach())  # no temporary |theta|
    largest = max(-float(low), float(high))
    if largest > limit:
        raise ValueError(
            f"{owner}: {argument} must have magnitudes at most {limit:.3g} for {what} "
            f"(a float64 sum of up to {terms} entries), got {largest:.3g}; rescale {argument}"
        )


BACKENDS = ("auto", "numba", "torch")
"""The ``backend=`` values a built-in solver takes (see :class:`BatchSolver`)."""


class BatchSolver:
    """Base class for solvers that run on one flat batch ``[B, *event]``.

    Subclasses set ``name``, ``sense`` and ``event_ndim``, may override
    :meth:`check_event` for problem-specific checks, and implement one or both
    kernels, listing them in ``backends``:

    - ``"numba"``, the host kernel: :meth:`solve_batch` on a float64 numpy copy
      (numba, or Python for OR-Tools and user functions; it is a fresh copy, so
      the caller's tensor is never modified). A CUDA theta is copied to the host,
      solved there and returned to its device.
    - ``"torch"``, the device-native kernel: :meth:`solve_torch` on the detached
      tensor itself, on theta's device (CPU included), no host round trip.

    A subclass that takes ``backend=`` calls :meth:`set_backend` in its
    constructor. ``"auto"`` (the default) picks ``"torch"`` for a theta that is
    not on the CPU when the solver has a torch kernel, else the solver's first
    listed backend.
    """

    name: str
    sense: Sense
    event_ndim: int
    backends: tuple[str, ...] = ("numba",)
    """The kernels this solver has, in order of preference on the CPU."""
    backend: str = "auto"

    def set_backend(self, backend: object) -> None:
        """Validate and store ``backend`` ("auto" or one of :attr:`backends`).

        Raises:
            ValueError: If ``backend`` is unknown, or names a kernel this solver
                does not have; the message lists the ones it has.
        """
        available = ("auto", *self.backends)
        if backend not in BACKENDS:
            raise ValueError(f"{self.name}: backend must be one of {list(available)}, got {backend!r}")
        if backend not in available:
            raise ValueError(
                f"{self.name}: backend {backend!r} is not available for this solver; "
                f"available: {', '.join(available)}"
            )
        self.backend = str(backend)

    def backend_for(self, device: torch.device) -> str:
        """The kernel that solves a theta on ``device``: "numba" or "torch"."""
        if self.backend != "auto":
            return self.backend
        if device.type != "cpu" and "torch" in self.backends:
            return "torch"
        return self.backends[0]

    def __call__(self, theta: torch.Tensor) -> torch.Tensor:
        """Solve every instance of ``theta [*batch, *event]``; returns ``y`` of the same shape."""
        check_theta(self.name, theta, self.event_ndim)
        return self.solve_prechecked(theta)

    def solve_prechecked(self, theta: torch.Tensor) -> torch.Tensor:
        """:meth:`__call__` for a ``theta`` already known to be a finite floating tensor.

        Estimators check their own input once and call this for the scores they
        built from it, so a CUDA theta costs one host read per pass instead of one
        per solver call. The solver's own event checks (:meth:`check_event`) still run.
        """
        event_shape = tuple(theta.shape[theta.ndim - self.event_ndim :])
        batch_shape = tuple(theta.shape[: theta.ndim - self.event_ndim])
        self.check_event(theta, event_shape)
        # An explicit batch size: reshape(-1, ...) is ambiguous when an event dim is 0.
        flat = theta.detach().reshape(math.prod(batch_shape), *event_shape)
        if flat.shape[0] == 0:
            y = torch.zeros_like(flat)
        else:
            y = self.solve_flat(flat)
        return y.reshape(*batch_shape, *event_shape).to(device=theta.device, dtype=theta.dtype)

    def solve_flat(self, theta: torch.Tensor) -> torch.Tensor:
        """Solve ``theta [B, *event]`` (B >= 1, detached) with the chosen kernel; return ``y [B, *event]``."""
        if self.backend_for(theta.device) == "torch":
            return self.solve_torch(theta)
        # copy=True: a float64 CPU theta would otherwise be shared with the kernel,
        # which may then write into the caller's tensor (or return it as y).
        array = theta.to(
            "cpu", torch.float64, copy=True, memory_format=torch.contiguous_format
        ).numpy()
        return torch.from_numpy(np.asarray(self.solve_batch(array)))

    def check_event(self, theta: torch.Tensor, event_shape: tuple[int, ...]) -> None:
        """Raise ValueError if ``event_shape`` (or theta's values) suit no instance."""

    def solve_batch(self, theta: np.ndarray) -> np.ndarray:
        """The host kernel: solve ``theta [B, *event]`` (float64, C-contiguous); return ``y [B, *event]``."""
        raise NotImplementedError

    def solve_torch(self, theta: torch.Tensor) -> torch.Tensor:
        """The device-native kernel: solve ``theta [B, *event]`` on its own device and dtype."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, sense={self.sense!r})"

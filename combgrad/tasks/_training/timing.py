"""Solver timing: how much of a training step the combinatorial solver takes."""

from __future__ import annotations

import math
import time
from typing import Any

import torch


class TimedSolver:
    """Wraps a solver and adds up the wall time spent in its calls.

    Estimators accept any object with ``name``, ``sense``, ``event_ndim`` and
    ``__call__``, so this wrapper measures exactly the solver's share of a step.

    Attributes:
        seconds: Wall time of all calls so far (reset it to 0 to time a phase).
        calls: Number of calls.
        instances: Number of instances solved (leading dims of each ``theta``).

    Example:
        >>> from combgrad.solvers import get
        >>> timed = TimedSolver(get("shortest_path"))
        >>> _ = timed(torch.ones(2, 4, 4))
        >>> timed.calls, timed.instances, timed.seconds > 0
        (1, 2, True)
    """

    def __init__(self, solver: Any) -> None:
        self.solver = solver
        self.name = solver.name
        self.sense = solver.sense
        self.event_ndim = solver.event_ndim
        for attribute in ("accepts_negative",):  # policies that losses read from the solver
            if hasattr(solver, attribute):
                setattr(self, attribute, getattr(solver, attribute))
        self.seconds = 0.0
        self.calls = 0
        self.instances = 0

    def __call__(self, theta: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        y = self.solver(theta)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        event = math.prod(theta.shape[theta.ndim - self.event_ndim :]) if self.event_ndim else 1
        self.instances += theta.numel() // max(event, 1)
        return y


__all__ = ["TimedSolver"]

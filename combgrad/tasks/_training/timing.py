"""Solver timing: how much of a training step the combinatorial solver takes."""

from __future__ import annotations

import math
import time
from typing import Any

import torch


class TimedSolver:
    """Wraps a solver and adds up the time spent in its calls.

    Estimators accept any object with ``name``, ``sense``, ``event_ndim`` and
    ``__call__``, so this wrapper measures exactly the solver's share of a step.
    Every other attribute is the wrapped solver's (``k`` of a top-k, which
    sum-of-gamma noise reads; ``accepts_negative``, which losses read), so that
    wrapping changes nothing but the clock.

    On the CPU a call is timed by the wall clock. A CUDA call returns before its
    kernels have run, so the wall clock would time only their launch: there the
    call is bracketed by two CUDA events on the current stream, and the time
    between them (the solver's span on the GPU's own timeline, host work of a
    host backend included) is read when :attr:`seconds` is read, usually once
    per epoch, which is the only host sync this wrapper makes.

    Attributes:
        seconds: Time of all calls so far (assign 0 to time a phase).
        calls: Number of calls.
        instances: Number of instances solved (leading dims of each ``theta``).

    Example:
        >>> from combgrad.solvers import get
        >>> timed = TimedSolver(get("shortest_path"))
        >>> _ = timed(torch.ones(2, 4, 4))
        >>> timed.calls, timed.instances, timed.seconds > 0
        (1, 2, True)
        >>> TimedSolver(get("topk", k=3)).k  # the wrapped solver's own attributes show through
        3
    """

    def __init__(self, solver: Any) -> None:
        self.solver = solver
        self.name = solver.name
        self.sense = solver.sense
        self.event_ndim = solver.event_ndim
        self._seconds = 0.0
        self._pending: list[tuple[Any, Any]] = []  # CUDA (start, end) events not yet read
        self.calls = 0
        self.instances = 0

    def __getattr__(self, attribute: str) -> Any:
        # Called only for attributes this wrapper lacks; "solver" is looked up in
        # __dict__ so that a half-built wrapper (unpickling) does not recurse.
        solver = self.__dict__.get("solver")
        if solver is None:
            raise AttributeError(attribute)
        return getattr(solver, attribute)

    @property
    def seconds(self) -> float:
        """Total time of the calls so far; waits for pending CUDA calls to finish."""
        if self._pending:
            self._pending[-1][1].synchronize()
            self._seconds += sum(start.elapsed_time(end) for start, end in self._pending) / 1e3
            self._pending.clear()
        return self._seconds

    @seconds.setter
    def seconds(self, value: float) -> None:
        self._pending.clear()
        self._seconds = float(value)

    def __call__(self, theta: torch.Tensor) -> torch.Tensor:
        return self._timed(self.solver, theta)

    def solve_prechecked(self, theta: torch.Tensor) -> torch.Tensor:
        """The wrapped solver's call without its finiteness read (see ``BatchSolver.solve_prechecked``)."""
        return self._timed(getattr(self.solver, "solve_prechecked", self.solver), theta)

    def _timed(self, solve: Any, theta: torch.Tensor) -> torch.Tensor:
        if theta.device.type == "cuda":
            start_event = torch.cuda.Event(enable_timing=True)
            end_event = torch.cuda.Event(enable_timing=True)
            start_event.record()
            y = solve(theta)
            end_event.record()
            self._pending.append((start_event, end_event))
        else:
            start = time.perf_counter()
            y = solve(theta)
            self._seconds += time.perf_counter() - start
        self.calls += 1
        event = math.prod(theta.shape[theta.ndim - self.event_ndim :]) if self.event_ndim else 1
        self.instances += theta.numel() // max(event, 1)
        return y

__all__ = ["TimedSolver"]

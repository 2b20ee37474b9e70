"""``from_function``: a user's Python function as a batched, registry-compatible solver.

The function runs in this process, in the shared process pool
(:mod:`combgrad.pool`), or on a caller's executor (a ``concurrent.futures``
executor or a Dask cluster, :mod:`combgrad.executors`); its outputs are checked (shape, real and finite values)
and named by instance when wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .. import pool
from .._checks import check_bool, check_number, check_positive_int, check_sense
from ..errors import SolverError
from ..solvers.base import BatchSolver, Sense


class FunctionSolver(BatchSolver):
    """A solver that calls a Python function per instance (or per chunk of instances).

    Built by :func:`from_function`; see there for the arguments. Input validation,
    batch flattening and the device/dtype round trip come from
    :class:`~combgrad.solvers.BatchSolver`.
    """

    def __init__(
        self,
        fn: Callable[[np.ndarray], Any],
        *,
        sense: Sense,
        event_ndim: int,
        batched: bool = False,
        workers: int = 0,
        name: str | None = None,
        timeout: float | None = None,
        executor: Any = None,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"from_function: fn must be callable, got {type(fn).__name__}")
        if name is None:
            name = getattr(fn, "__name__", type(fn).__name__)
        if not isinstance(name, str) or not name:
            raise ValueError(f"from_function: name must be a non-empty string, got {name!r}")
        self.name = name
        self.sense = check_sense(name, sense)
        self.event_ndim = check_positive_int(name, "event_ndim", event_ndim)
        self.batched = check_bool(name, "batched", batched)
        self.workers = check_positive_int(name, "workers", workers, minimum=0)
        self.timeout = None if timeout is None else check_number(name, "timeout", timeout, positive=True)
        # Fail at construction, not at the first call deep inside training.
        self._target = pool.check_executor(name, self.workers, executor)
        self.executor = executor
        if self.workers:
            pool.check_picklable(name, fn, self.workers)
        elif self._target is not None:
            if self._target.kind in ("processes", "executor"):
                # Pickle finds a function by its module-level name, which a
                # decorator (@differentiable) may rebind; Dask's cloudpickle then
                # sends the function by value instead, threads need no pickling.
                fn = pool.by_reference(fn)
            self._target.check_sendable(name, fn)
        self.fn = fn

    def solve_batch(self, theta: np.ndarray) -> np.ndarray:
        event_shape = theta.shape[1:]
        y = np.empty_like(theta)
        where = {"workers": self.workers, "owner": self.name, "timeout": self.timeout, "executor": self.executor}
        if self.batched:
            for start, stop, output in pool.map_chunks(self.fn, theta, **where):
                y[start:stop] = self._as_output(output, (stop - start, *event_shape), start, stop)
        else:
            outputs = pool.map_instances(self.fn, theta, **where)
            for index, output in enumerate(outputs):
                y[index] = self._as_output(output, event_shape, index, index + 1)
        return y

    def _as_output(self, output: Any, shape: tuple[int, ...], start: int, stop: int) -> np.ndarray:
        where = f"instance {start}" if stop == start + 1 else f"instances {start}..{stop - 1}"
        try:
            array = np.asarray(output)
        except (TypeError, ValueError) as error:
            raise SolverError(
                f"{self.name}: fn's output for {where} is not a numeric array of shape {shape}: "
                f"{error}"
            ) from error
        # Complex values would lose their imaginary part silently in the cast to
        # float64, and objects (dicts, strings) are no solution at all.
        if array.dtype.kind not in "biuf":
            kind = "complex" if array.dtype.kind == "c" else "not numeric"
            raise SolverError(
                f"{self.name}: fn's output for {where} must be a real numeric array of shape "
                f"{shape}, got dtype {array.dtype} ({kind})"
            )
        if array.shape != shape:
            raise SolverError(
                f"{self.name}: fn's output for {where} must have shape {shape} (the input's), "
                f"got shape {array.shape}"
            )
        array = array.astype(np.float64, copy=False)
        if not np.isfinite(array).all():
            raise SolverError(
                f"{self.name}: fn's output for {where} must be finite, got NaN or inf values"
            )
        return array

    def __repr__(self) -> str:
        return (
            f"FunctionSolver(name={self.name!r}, sense={self.sense!r}, "
            f"event_ndim={self.event_ndim}, batched={self.batched}, workers={self.workers}, "
            f"timeout={self.timeout}, executor={None if self._target is None else self._target.kind})"
        )


def from_function(
    fn: Callable[[np.ndarray], Any],
    *,
    sense: Sense,
    event_ndim: int,
    batched: bool = False,
    workers: int = 0,
    name: str | None = None,
    timeout: float | None = None,
    executor: Any = None,
) -> FunctionSolver:
    """Turn a Python function into a batched solver ``y = solver(theta)``.

    ``fn`` solves one instance: it receives a float64 numpy array of the event
    shape ``[*event]`` (a private copy) and returns an array-like of the same shape.
    With ``batched=True`` it receives a whole batch ``[B, *event]`` and returns
    ``[B, *event]``. The solver accepts ``theta [*batch, *event]`` of any float
    dtype and device, validates it (finite, enough dims), and returns ``y`` with
    theta's shape, dtype and device.

    With ``workers=N > 0`` the instances run in the shared persistent process pool
    of :mod:`combgrad.pool`, a few chunks per worker; with ``batched=True``
    ``fn`` is called once per chunk. ``fn`` must then be picklable: a module-level
    function of an importable module (or a ``functools.partial`` of one), not a
    lambda or a local function, and a script that uses workers needs the usual
    ``if __name__ == "__main__":`` guard. A pool pays off for instances that take a
    millisecond or more.

    With ``executor=`` the chunks run on that executor instead: a
    ``concurrent.futures.ThreadPoolExecutor`` (for functions that release the
    GIL), a ``ProcessPoolExecutor`` or any other ``Executor``, or a
    ``dask.distributed.Client`` (a cluster; ``fn`` then travels by value with
    cloudpickle, so lambdas and closures work, and combgrad must be installed on
    the workers). Chunks are sized so that per-task overhead stays under 10 %
    of the solving time (see :func:`combgrad.pool.map_instances`).

    Args:
        fn: The per-instance (or, with ``batched``, per-batch) solver.
        sense: "min" or "max": which way ``fn`` optimizes its linear objective;
            estimators use it to put theta in score space.
        event_ndim: How many trailing dims one instance has (>= 1).
        batched: Whether ``fn`` takes a whole batch ``[B, *event]``.
        workers: 0 to run in this process, else the number of worker processes.
        name: The solver's name (in error messages); defaults to ``fn.__name__``.
        timeout: Seconds for one call of the solver, or None (no limit). Past it
            the call raises :class:`~combgrad.SolverError` naming the unfinished
            instances and the pool's workers are replaced (a hung ``fn`` is
            killed). With ``workers=0`` nothing can stop a running ``fn``: the
            deadline is checked between instances, so use ``workers >= 1`` for a
            function that may hang. On an executor the unfinished tasks are
            cancelled (Dask workers still running them are restarted).
        executor: None (default), or a ``concurrent.futures.Executor`` or a
            ``dask.distributed.Client`` to solve on; not together with ``workers``.

    Returns:
        A :class:`~combgrad.solvers.BatchSolver` with ``name``, ``sense``,
        ``event_ndim`` and ``__call__``, usable wherever a registry solver is.

    Raises:
        TypeError: If ``fn`` is not callable.
        ValueError: On an invalid option, an unpicklable ``fn`` with ``workers > 0``
            (or one the executor cannot receive), or both ``workers`` and ``executor``.
        TypeError: If ``executor`` is neither an Executor nor a Dask Client
            (naming the ``combgrad[distributed]`` extra where dask is missing).

    When called, the solver raises :class:`~combgrad.SolverError` naming the
    instance index (in the flattened batch) if ``fn`` raises, returns an output of
    the wrong shape or with NaN, inf or complex values, exceeds ``timeout``, or a
    worker process dies (twice: a pool broken before the call is replaced once);
    ValueError on invalid ``theta``. A KeyboardInterrupt during a pooled call
    stops its workers and propagates; the next call works at once.

    Example:
        >>> import numpy as np, torch, combgrad as cg
        >>> def cheapest(costs):
        ...     y = np.zeros_like(costs)
        ...     y[np.argmin(costs)] = 1.0
        ...     return y
        >>> solver = cg.adapters.from_function(cheapest, sense="min", event_ndim=1)
        >>> solver(torch.tensor([[3.0, 1.0, 2.0], [0.5, 4.0, 1.0]]))
        tensor([[0., 1., 0.],
                [1., 0., 0.]])
        >>> from concurrent.futures import ThreadPoolExecutor
        >>> with ThreadPoolExecutor(2) as threads:
        ...     on_threads = cg.adapters.from_function(cheapest, sense="min", event_ndim=1, executor=threads)
        ...     on_threads(torch.tensor([[3.0, 1.0, 2.0], [0.5, 4.0, 1.0]]))
        tensor([[0., 1., 0.],
                [1., 0., 0.]])
    """
    return FunctionSolver(
        fn,
        sense=sense,
        event_ndim=event_ndim,
        batched=batched,
        workers=workers,
        name=name,
        timeout=timeout,
        executor=executor,
    )

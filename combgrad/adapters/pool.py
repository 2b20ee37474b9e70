"""A persistent process pool for Python-level per-instance solvers.

Numba kernels run in threads; Python-level black boxes (OR-Tools models,
networkx, a user's function) hold the GIL, so they run in worker processes
instead. One :class:`concurrent.futures.ProcessPoolExecutor` per worker count is
created on first use, reused by every later call, and shut down at exit.

Why these choices (measured on this project's machines):

* Workers start from the ``forkserver`` context (``spawn`` where it does not
  exist). A process forked after numba's OpenMP threads have run dies at once,
  so plain ``fork`` is unsafe once any numba solver has been called.
* ``concurrent.futures`` rather than ``multiprocessing.Pool``: when a worker dies
  (killed, segfault, ``os._exit``) the executor reports ``BrokenProcessPool``,
  where ``multiprocessing.Pool`` waits forever. Here that becomes a
  :class:`~combgrad.SolverError`, the broken pool is discarded, and the next call
  starts a fresh one.
* The batch is split into a few contiguous chunks per worker, so the per-task
  overhead (about a millisecond: pickling, queues, wake-ups) is paid a few times
  per call, not once per instance, while the chunks still balance the load.
* A pool pays off only for instances of a millisecond or more; for microsecond
  instances it is slower than a serial loop, so ``workers=0`` (serial, in this
  process) is the default everywhere.

The function run in the workers must be picklable: a module-level function of an
importable module, or a :func:`functools.partial` of one with picklable
arguments. A lambda, a function defined inside another function, or a function
defined in an interactive session cannot be sent to a worker; such a function is
refused with a ValueError before anything is submitted.
"""

from __future__ import annotations

import atexit
import multiprocessing
import multiprocessing.forkserver
import pickle
import threading
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from typing import Any

from ..errors import SolverError
from .._checks import check_positive_int

#: Chunks per worker: enough to balance uneven instances, few enough that the
#: per-task overhead stays small against millisecond instances.
CHUNKS_PER_WORKER = 4

_pools: dict[int, ProcessPoolExecutor] = {}
_pools_lock = threading.Lock()


def _context() -> multiprocessing.context.BaseContext:
    # forkserver does not exist on Windows; spawn is the other fork-free method.
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    # The fork server imports combgrad (and so torch) once; every worker forked
    # from it then starts in milliseconds instead of importing torch anew. The
    # server itself never runs a kernel, so no OpenMP thread exists when it forks.
    # This has no effect once a fork server runs, and keeps any modules already
    # listed ("__main__" by default).
    preload = list(getattr(multiprocessing.forkserver._forkserver, "_preload_modules", ["__main__"]))
    if "combgrad" not in preload:
        context.set_forkserver_preload([*preload, "combgrad"])
    return context


def get_executor(workers: int) -> ProcessPoolExecutor:
    """The shared process pool with ``workers`` processes, created on first use.

    Every call with the same ``workers`` returns the same executor until it breaks
    or :func:`shutdown` is called. Its processes start lazily, on the first submit.

    Args:
        workers: Number of worker processes, >= 1.

    Returns:
        A ``ProcessPoolExecutor`` using the ``forkserver`` start method.

    Raises:
        ValueError: If ``workers`` is not an integer >= 1.

    Example:
        >>> from combgrad.adapters import pool
        >>> pool.get_executor(2) is pool.get_executor(2)
        True
    """
    workers = check_positive_int("pool", "workers", workers)
    with _pools_lock:
        executor = _pools.get(workers)
        if executor is None:
            executor = ProcessPoolExecutor(max_workers=workers, mp_context=_context())
            _pools[workers] = executor
        return executor


def _discard(workers: int, executor: ProcessPoolExecutor) -> None:
    """Forget a broken executor so that the next call builds a fresh one."""
    with _pools_lock:
        if _pools.get(workers) is executor:
            del _pools[workers]
    executor.shutdown(wait=False, cancel_futures=True)


def shutdown(wait: bool = True) -> None:
    """Shut every shared pool down (also registered to run at interpreter exit).

    A later call of :func:`map_instances` or :func:`get_executor` starts new pools.

    Args:
        wait: Wait for the worker processes to exit.

    Example:
        >>> from combgrad.adapters import pool
        >>> pool.shutdown()
    """
    with _pools_lock:
        executors = list(_pools.values())
        _pools.clear()
    for executor in executors:
        executor.shutdown(wait=wait, cancel_futures=True)


atexit.register(shutdown)


@dataclass(frozen=True)
class _Failure:
    """What went wrong in a worker: enough to re-raise it in the caller."""

    start: int  # first instance index (in the flattened batch) of the failing call
    stop: int  # one past the last; stop == start + 1 for a single instance
    type_name: str
    message: str
    remote_traceback: str
    error: BaseException | None  # the original exception when it pickles
    is_solver_error: bool


class _RemoteTraceback(Exception):
    """Carries a worker's formatted traceback as the cause of the re-raised error."""

    def __str__(self) -> str:
        return self.args[0]


def _failure(start: int, stop: int, error: BaseException) -> _Failure:
    remote = traceback.format_exc()
    try:
        pickle.dumps(error)
        sent: BaseException | None = error
    except Exception:  # an exception holding unpicklable state travels as text only
        sent = None
    return _Failure(
        start, stop, type(error).__name__, str(error), remote, sent, isinstance(error, SolverError)
    )


def _run_chunk(payload: bytes, start: int, chunk: Any, per_instance: bool) -> tuple[bool, Any]:
    """Worker side: run the pickled function on a chunk; report failures as data.

    Catching everything here (rather than letting the executor forward the
    exception) keeps the instance index, and turns SystemExit or KeyboardInterrupt
    inside a user's function into an error instead of a signal to the caller.
    """
    stop = start + len(chunk)
    try:
        fn = pickle.loads(payload)
    except BaseException as error:
        message = (
            "the worker process could not load the function; define it at module level in an "
            f"importable module (not in __main__ of an interactive session): {error}"
        )
        return False, replace(_failure(start, stop, error), message=message, is_solver_error=False)
    if not per_instance:
        try:
            return True, fn(chunk)
        except BaseException as error:
            return False, _failure(start, stop, error)
    results = []
    for offset, instance in enumerate(chunk):
        try:
            results.append(fn(instance))
        except BaseException as error:
            return False, _failure(start + offset, start + offset + 1, error)
    return True, results


def _where(start: int, stop: int) -> str:
    return f"instance {start}" if stop == start + 1 else f"instances {start}..{stop - 1}"


def _raise(owner: str, failure: _Failure) -> None:
    where = _where(failure.start, failure.stop)
    if failure.is_solver_error:
        text = f"{owner}: {where}: {failure.message}"
    else:
        text = f"{owner}: {where} raised {failure.type_name}: {failure.message}"
    cause = failure.error if failure.error is not None else RuntimeError(failure.message)
    cause.__cause__ = _RemoteTraceback(f'\n"""\n{failure.remote_traceback}"""')
    raise SolverError(text) from cause


def _pickle_function(owner: str, fn: Callable[..., Any], workers: int) -> bytes:
    try:
        return pickle.dumps(fn)
    except Exception as error:
        raise ValueError(
            f"{owner}: with workers={workers} the function must be picklable (a module-level "
            "function of an importable module, or a functools.partial of one), not a lambda or "
            f"a function defined inside another function; got {fn!r}, which fails to pickle: {error}"
        ) from error


def _run_serial(
    owner: str, fn: Callable[..., Any], instances: Sequence[Any], per_instance: bool
) -> list[Any]:
    if not per_instance:
        try:
            return [fn(instances)]
        except Exception as error:
            _raise_local(owner, 0, len(instances), error)
    results = []
    for index, instance in enumerate(instances):
        try:
            results.append(fn(instance))
        except Exception as error:
            _raise_local(owner, index, index + 1, error)
    return results


def _raise_local(owner: str, start: int, stop: int, error: Exception) -> None:
    where = _where(start, stop)
    if isinstance(error, SolverError):
        raise SolverError(f"{owner}: {where}: {error}") from error
    raise SolverError(f"{owner}: {where} raised {type(error).__name__}: {error}") from error


def _chunk_bounds(size: int, workers: int, chunks_per_worker: int) -> list[tuple[int, int]]:
    chunks = max(1, min(size, workers * chunks_per_worker))
    edges = [size * i // chunks for i in range(chunks + 1)]
    return [(edges[i], edges[i + 1]) for i in range(chunks) if edges[i + 1] > edges[i]]


def _run_pool(
    owner: str,
    fn: Callable[..., Any],
    instances: Sequence[Any],
    workers: int,
    per_instance: bool,
    chunks_per_worker: int,
) -> list[Any]:
    payload = _pickle_function(owner, fn, workers)
    bounds = _chunk_bounds(len(instances), workers, chunks_per_worker)
    for attempt in (0, 1):
        executor = get_executor(workers)
        try:
            futures = [
                executor.submit(_run_chunk, payload, start, instances[start:stop], per_instance)
                for start, stop in bounds
            ]
            break
        except BrokenProcessPool:
            # The pool broke while idle (a worker killed from outside): retry once
            # on a fresh pool, since nothing of this call has run yet.
            _discard(workers, executor)
            if attempt:
                raise SolverError(f"{owner}: could not start a pool of {workers} workers") from None
    outputs: list[Any] = []
    for (start, stop), future in zip(bounds, futures):
        try:
            ok, value = future.result()
        except BrokenProcessPool as error:
            _discard(workers, executor)
            unfinished = [bound for bound, f in zip(bounds, futures) if not _succeeded(f)]
            low, high = unfinished[0][0], unfinished[-1][1]
            raise SolverError(
                f"{owner}: a worker process died abruptly (killed, segfault or os._exit) while "
                f"solving the batch; the culprit is among the unfinished {_where(low, high)}. "
                "The pool was discarded; the next call starts a new one."
            ) from error
        except Exception as error:  # e.g. an unpicklable return value
            _cancel(futures)
            raise SolverError(
                f"{owner}: {_where(start, stop)} could not be run in the process pool: "
                f"{type(error).__name__}: {error}"
            ) from error
        if not ok:
            _cancel(futures)
            _raise(owner, value)
        if per_instance:
            outputs.extend(value)
        else:
            outputs.append(value)
    return outputs


def _succeeded(future: Future) -> bool:
    return future.done() and not future.cancelled() and future.exception() is None


def _cancel(futures: list[Future]) -> None:
    for future in futures:
        future.cancel()


def _check_common(owner: str, workers: int, chunks_per_worker: int) -> tuple[int, int]:
    workers = check_positive_int(owner, "workers", workers, minimum=0)
    chunks_per_worker = check_positive_int(owner, "chunks_per_worker", chunks_per_worker)
    return workers, chunks_per_worker


def map_instances(
    fn: Callable[[Any], Any],
    instances: Sequence[Any],
    *,
    workers: int,
    owner: str = "pool",
    chunks_per_worker: int = CHUNKS_PER_WORKER,
) -> list[Any]:
    """``[fn(instances[i]) for i in range(len(instances))]``, in the shared pool.

    With ``workers=0`` the loop runs serially in this process; with ``workers=N``
    the instances are split into about ``N * chunks_per_worker`` contiguous chunks
    run by the shared pool of ``N`` processes. Either way an exception raised by
    ``fn`` becomes a :class:`~combgrad.SolverError` naming the instance's index in
    ``instances``, chained to the original exception (whose cause carries the
    worker's traceback).

    Args:
        fn: Function of one instance. With ``workers > 0`` it must be picklable: a
            module-level function or a ``functools.partial`` of one.
        instances: A sliceable sequence ``[B, ...]`` (a numpy array or a list).
        workers: 0 for serial, else the number of worker processes.
        owner: Name that prefixes error messages (the solver's name).
        chunks_per_worker: Chunks per worker process.

    Returns:
        The list of ``B`` results, in order.

    Raises:
        SolverError: If ``fn`` raises on an instance (the message names its index),
            or a worker process dies (the pool is discarded; never a hang).
        ValueError: If ``fn`` cannot be pickled while ``workers > 0``, or
            ``workers``/``chunks_per_worker`` are invalid.

    Example:
        >>> import math
        >>> from combgrad.adapters.pool import map_instances
        >>> map_instances(math.sqrt, [1.0, 4.0, 9.0], workers=0)
        [1.0, 2.0, 3.0]
    """
    workers, chunks_per_worker = _check_common(owner, workers, chunks_per_worker)
    if len(instances) == 0:
        return []
    if workers == 0:
        return _run_serial(owner, fn, instances, per_instance=True)
    return _run_pool(owner, fn, instances, workers, True, chunks_per_worker)


def map_chunks(
    fn: Callable[[Any], Any],
    instances: Sequence[Any],
    *,
    workers: int,
    owner: str = "pool",
    chunks_per_worker: int = CHUNKS_PER_WORKER,
) -> list[tuple[int, int, Any]]:
    """Run ``fn`` on contiguous chunks ``instances[start:stop]`` of a batch.

    For functions that solve a whole batch at once. With ``workers=0`` ``fn`` gets
    the whole batch in one call; with ``workers=N`` it gets about
    ``N * chunks_per_worker`` chunks in the shared pool. An exception becomes a
    :class:`~combgrad.SolverError` naming the chunk's instance range.

    Args:
        fn: Function of a chunk. With ``workers > 0`` it must be picklable.
        instances: A sliceable sequence ``[B, ...]``.
        workers: 0 for serial, else the number of worker processes.
        owner: Name that prefixes error messages.
        chunks_per_worker: Chunks per worker process.

    Returns:
        ``[(start, stop, fn(instances[start:stop])), ...]`` covering ``0..B`` in order.

    Raises:
        SolverError: If ``fn`` raises (the message names the instances) or a worker
            process dies.
        ValueError: If ``fn`` cannot be pickled while ``workers > 0``.

    Example:
        >>> import numpy as np
        >>> from combgrad.adapters.pool import map_chunks
        >>> [(start, stop, out.tolist()) for start, stop, out in map_chunks(np.cumsum, np.ones(3), workers=0)]
        [(0, 3, [1.0, 2.0, 3.0])]
    """
    workers, chunks_per_worker = _check_common(owner, workers, chunks_per_worker)
    size = len(instances)
    if size == 0:
        return []
    if workers == 0:
        bounds = [(0, size)]
        outputs = _run_serial(owner, fn, instances, per_instance=False)
    else:
        bounds = _chunk_bounds(size, workers, chunks_per_worker)
        outputs = _run_pool(owner, fn, instances, workers, False, chunks_per_worker)
    return [(start, stop, output) for (start, stop), output in zip(bounds, outputs)]

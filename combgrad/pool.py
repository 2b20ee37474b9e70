"""The persistent process pool that runs Python-level per-instance solvers.

Numba kernels run in threads; Python-level black boxes (OR-Tools models,
networkx, a user's function) hold the GIL, so they run in worker processes
instead. One :class:`concurrent.futures.ProcessPoolExecutor` per worker count is
created on first use, reused by every later call, and shut down at exit.

The same calls run on a caller's executor instead (``executor=``: any
``concurrent.futures.Executor`` or a ``dask.distributed.Client``, spoken to by
:mod:`combgrad.executors`), with the same contract: chunks, results in order,
errors naming the instance, a lost worker retried or reported, ``timeout=``.

This module sits below the solvers (it imports only :mod:`combgrad.errors`,
:mod:`combgrad._checks` and :mod:`combgrad.executors`), so ``solvers/ilp.py`` and ``adapters/from_function.py``
both use it without importing each other.

Why these choices (measured on this project's machines):

* Workers start from the ``forkserver`` context (``spawn`` where it does not
  exist). A process forked after numba's OpenMP threads have run dies at once,
  so plain ``fork`` is unsafe once any numba solver has been called.
* ``concurrent.futures`` rather than ``multiprocessing.Pool``: when a worker dies
  (killed, segfault, ``os._exit``) the executor reports ``BrokenProcessPool``,
  where ``multiprocessing.Pool`` waits forever. Here that becomes a
  :class:`~combgrad.SolverError`, the broken pool is discarded, and the next call
  starts a fresh one.
* A worker that died while the pool was idle (the OOM killer, an external kill)
  is not this call's fault: dead workers are looked for before submitting, and a
  pool found broken during a call (the death may not be visible yet when the
  call starts) gets the call's unfinished chunks once more on a fresh pool.
  Only a second break raises; a batch that kills its worker is thus run twice
  before the error, which is cheap next to blaming an innocent batch.
* A call never waits forever, and never leaves work behind: with ``timeout=``
  the call raises once its deadline passes, and on a timeout or any
  BaseException while waiting (a KeyboardInterrupt) its futures are cancelled
  and the pool's workers are killed (they may be running a hung function, which
  nothing else can stop), so the next call starts on fresh workers at once
  instead of queueing behind the abandoned tasks.
* Workers ignore SIGINT. A Ctrl-C in a terminal reaches every process of the
  foreground group; the caller handles it (above), and an idle worker that died
  of it would break the next call.
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
refused by :func:`check_picklable` before anything is submitted. A module-level
function whose name a decorator rebinds is sent through :func:`by_reference`.
"""

from __future__ import annotations

import atexit
import functools
import importlib
import multiprocessing
import multiprocessing.forkserver
import pickle
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from typing import Any, Protocol

from . import executors
from ._checks import check_number, check_positive_int
from .errors import SolverError

__all__ = [
    "CHUNKS_PER_WORKER",
    "OVERHEAD_FRACTION",
    "Sliceable",
    "by_reference",
    "check_executor",
    "check_picklable",
    "get_executor",
    "map_chunks",
    "map_instances",
    "shutdown",
]

class Sliceable(Protocol):
    """A batch ``[B, ...]``: a numpy array, a list, anything with ``len`` and slices."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: Any) -> Any: ...


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
    server = getattr(multiprocessing.forkserver, "_forkserver", None)
    preload = list(getattr(server, "_preload_modules", ["__main__"]))
    if "combgrad" not in preload:
        context.set_forkserver_preload([*preload, "combgrad"])
    return context


def _ignore_interrupts() -> None:
    """Worker initializer: leave Ctrl-C to the calling process (see the module docstring)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def get_executor(workers: int) -> ProcessPoolExecutor:
    """The shared process pool with ``workers`` processes, created on first use.

    Every call with the same ``workers`` returns the same executor until it breaks,
    is replaced after a timeout or an interrupt, or :func:`shutdown` is called.
    Its processes start lazily, on the first submit.

    Args:
        workers: Number of worker processes, >= 1.

    Returns:
        A ``ProcessPoolExecutor`` using the ``forkserver`` start method.

    Raises:
        ValueError: If ``workers`` is not an integer >= 1.

    Example:
        >>> from combgrad import pool
        >>> pool.get_executor(2) is pool.get_executor(2)
        True
    """
    workers = check_positive_int("pool", "workers", workers)
    with _pools_lock:
        executor = _pools.get(workers)
        if executor is None:
            executor = ProcessPoolExecutor(
                max_workers=workers, mp_context=_context(), initializer=_ignore_interrupts
            )
            _pools[workers] = executor
        return executor


def _processes(executor: ProcessPoolExecutor) -> list[Any]:
    # The executor has no public view of its processes (Python 3.14 adds
    # terminate_workers); the private dict is there in every supported version.
    return list((getattr(executor, "_processes", None) or {}).values())


def _forget(workers: int, executor: ProcessPoolExecutor) -> None:
    with _pools_lock:
        if _pools.get(workers) is executor:
            del _pools[workers]


def _discard(workers: int, executor: ProcessPoolExecutor) -> None:
    """Forget a broken executor so that the next call builds a fresh one."""
    _forget(workers, executor)
    executor.shutdown(wait=False, cancel_futures=True)


def _terminate(workers: int, executor: ProcessPoolExecutor) -> None:
    """Kill the executor's workers (they may run a hung task) and forget it.

    Every task not yet finished is thereby cancelled: the executor sees its
    workers die and fails their futures with BrokenProcessPool. (Cancelling them
    first as well makes Python 3.11's executor thread crash on setting an
    exception on a cancelled future.)
    """
    _forget(workers, executor)
    for process in _processes(executor):
        try:
            # SIGKILL, not SIGTERM: a hung function may ignore or handle SIGTERM.
            process.kill()
        except (OSError, ValueError, AttributeError):  # already gone or closed
            pass
    executor.shutdown(wait=False)


def _live_executor(workers: int) -> ProcessPoolExecutor:
    """The shared executor, replaced first if it is broken or a worker has died."""
    executor = get_executor(workers)
    dead = any(process.exitcode is not None for process in _processes(executor))
    if dead or getattr(executor, "_broken", False):
        _terminate(workers, executor)
        executor = get_executor(workers)
    return executor


def shutdown(wait: bool = True) -> None:
    """Shut every shared pool down (also registered to run at interpreter exit).

    A later call of :func:`map_instances` or :func:`get_executor` starts new pools.

    Args:
        wait: Wait for the worker processes to exit.

    Example:
        >>> from combgrad import pool
        >>> pool.shutdown()
    """
    with _pools_lock:
        executors = list(_pools.values())
        _pools.clear()
    for executor in executors:
        executor.shutdown(wait=wait, cancel_futures=True)


atexit.register(shutdown)


def check_picklable(owner: str, fn: Callable[..., Any], workers: int) -> bytes:
    """``fn`` pickled for the workers, or a ValueError that says what to do instead.

    The one picklability check of the package: :func:`map_instances` runs it on
    every pooled call, :func:`~combgrad.adapters.from_function` at construction.

    Args:
        owner: Name that prefixes the error message.
        fn: The function to send to the worker processes.
        workers: The worker count, quoted in the message.

    Returns:
        ``pickle.dumps(fn)``.

    Raises:
        ValueError: If ``fn`` cannot be pickled.

    Example:
        >>> import math
        >>> len(check_picklable("mine", math.sqrt, 2)) > 0
        True
        >>> check_picklable("mine", lambda x: x, 2)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: mine: with workers=2 fn must be picklable (a module-level function ...
    """
    try:
        return pickle.dumps(fn)
    except Exception as error:
        raise ValueError(
            f"{owner}: with workers={workers} fn must be picklable (a module-level function of an "
            "importable module, or a functools.partial of one), not a lambda or a function "
            f"defined inside another function; got {fn!r}, which fails to pickle: {error}"
        ) from error


# Originals of functions whose module-level name a decorator rebound, by
# (module, qualified name). A worker fills its own copy when it imports the
# module, since importing runs the decorator again.
_originals: dict[tuple[str, str], Callable[..., Any]] = {}


def _original(module: str, qualname: str) -> Callable[..., Any]:
    """Unpickling side of :func:`by_reference`: the original function, found by name."""
    imported = importlib.import_module(module)
    # A spawned or forkserver worker imports the main script as "__mp_main__"
    # (and aliases it as "__main__"), so its functions register under that name.
    for key in ((module, qualname), (imported.__name__, qualname)):
        if key in _originals:
            return _originals[key]
    found: Any = imported
    for part in qualname.split("."):
        found = getattr(found, part)
    return getattr(found, "__wrapped__", found)


class _ByReference:
    """Calls a module-level function; pickles as its module and qualified name."""

    __wrapped__: Callable[..., Any]

    def __init__(self, fn: Callable[..., Any]) -> None:
        functools.update_wrapper(self, fn)
        self._key = (fn.__module__, fn.__qualname__)
        _originals[self._key] = fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.__wrapped__(*args, **kwargs)

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (_original, self._key)

    def __repr__(self) -> str:
        return f"by_reference({self.__wrapped__!r})"


def by_reference(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A callable that runs ``fn`` and pickles as a reference to it, for the workers.

    Pickle saves a function as "module.qualified_name" and refuses it when that
    name no longer leads to the function, which is what a decorator that rebinds
    the name (``@cg.differentiable(...)``) does. The returned callable pickles as
    ``(module, qualified name)`` instead and is unpickled, in a worker, as the
    original function, found in a registry that the worker fills when importing
    the module re-runs the decorator. Functions defined inside other functions
    (or in an interactive session) still cannot be found by a worker; they are
    returned unchanged, so that :func:`check_picklable` explains the problem.

    Args:
        fn: A module-level function of an importable module.

    Returns:
        A callable with ``fn``'s name, docstring and ``__wrapped__ = fn``.

    Example:
        >>> import math, pickle
        >>> pickle.loads(pickle.dumps(by_reference(math.sqrt)))(9.0)
        3.0
    """
    qualname = getattr(fn, "__qualname__", None)
    module = getattr(fn, "__module__", None)
    if not isinstance(qualname, str) or not isinstance(module, str) or "<" in qualname:
        return fn  # a lambda, a local function or a callable object: nothing to find by name
    if module == "__main__" and not hasattr(sys.modules.get("__main__"), "__file__"):
        return fn  # an interactive session: a worker cannot import it
    return _ByReference(fn)


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
        return str(self.args[0])


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
    return _run_loaded(fn, start, chunk, per_instance)


def _run_loaded(fn: Callable[..., Any], start: int, chunk: Any, per_instance: bool) -> tuple[bool, Any]:
    if not per_instance:
        try:
            return True, fn(chunk)
        except BaseException as error:
            return False, _failure(start, start + len(chunk), error)
    results = []
    for offset, instance in enumerate(chunk):
        try:
            results.append(fn(instance))
        except BaseException as error:
            return False, _failure(start + offset, start + offset + 1, error)
    return True, results


def _run_task(fn: Callable[..., Any], start: int, chunk: Any, per_instance: bool) -> tuple[bool, Any, float]:
    """Executor side: :func:`_run_loaded` on a chunk, plus its solving time in seconds.

    The function arrives already unpickled (the executor sent it: cloudpickle on
    Dask, pickle in processes, nothing in threads). The time lets the caller size
    the next call's chunks (see :func:`_executor_bounds`).
    """
    began = time.perf_counter()
    ok, value = _run_loaded(fn, start, chunk, per_instance)
    return ok, value, time.perf_counter() - began


def _where(start: int, stop: int) -> str:
    return f"instance {start}" if stop == start + 1 else f"instances {start}..{stop - 1}"


def _where_all(bounds: Iterable[tuple[int, int]]) -> str:
    """``[(0, 2), (2, 4), (6, 7)]`` -> "instances 0..3, 6": adjacent ranges merged."""
    merged: list[list[int]] = []
    for start, stop in sorted(bounds):
        if merged and merged[-1][1] == start:
            merged[-1][1] = stop
        else:
            merged.append([start, stop])
    if len(merged) == 1:
        return _where(*merged[0])
    parts = [f"{start}" if stop == start + 1 else f"{start}..{stop - 1}" for start, stop in merged]
    return "instances " + ", ".join(parts)


def _raise(owner: str, failure: _Failure) -> None:
    where = _where(failure.start, failure.stop)
    if failure.is_solver_error:
        text = f"{owner}: {where}: {failure.message}"
    else:
        text = f"{owner}: {where} raised {failure.type_name}: {failure.message}"
    cause = failure.error if failure.error is not None else RuntimeError(failure.message)
    cause.__cause__ = _RemoteTraceback(f'\n"""\n{failure.remote_traceback}"""')
    raise SolverError(text) from cause


def _timed_out(owner: str, timeout: float | None, unfinished: list[tuple[int, int]]) -> SolverError:
    return SolverError(
        f"{owner}: timeout={timeout!r} s exceeded with {_where_all(unfinished)} unfinished; "
        "their workers were killed and the next call starts fresh ones"
    )


def _run_serial(
    owner: str,
    fn: Callable[..., Any],
    instances: Sliceable,
    per_instance: bool,
    timeout: float | None,
) -> list[Any]:
    if not per_instance:
        try:
            return [fn(instances)]
        except Exception as error:
            _raise_local(owner, 0, len(instances), error)
    # In this process nothing can stop a running function: the deadline is
    # checked between instances, and a hung function needs workers >= 1.
    deadline = None if timeout is None else time.monotonic() + timeout
    results = []
    for index in range(len(instances)):
        if deadline is not None and time.monotonic() > deadline:
            raise _timed_out(owner, timeout, [(index, len(instances))])
        try:
            results.append(fn(instances[index]))
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


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _run_pool(
    owner: str,
    fn: Callable[..., Any],
    instances: Sliceable,
    workers: int,
    per_instance: bool,
    chunks_per_worker: int,
    timeout: float | None,
) -> list[Any]:
    payload = check_picklable(owner, fn, workers)
    bounds = _chunk_bounds(len(instances), workers, chunks_per_worker)
    deadline = None if timeout is None else time.monotonic() + timeout
    results: dict[int, Any] = {}
    for attempt in (0, 1):
        pending = [index for index in range(len(bounds)) if index not in results]
        executor = _live_executor(workers)
        futures: dict[int, Future[Any]] = {}
        try:
            for index in pending:
                start, stop = bounds[index]
                futures[index] = executor.submit(
                    _run_chunk, payload, start, instances[start:stop], per_instance
                )
            for index in pending:
                ok, value = futures[index].result(timeout=_remaining(deadline))
                if not ok:
                    _cancel(futures.values())
                    _raise(owner, value)
                results[index] = value
        except BrokenProcessPool as error:
            _discard(workers, executor)
            # Keep what finished; the chunks still pending run once more on a
            # fresh pool, since the worker may have died before this call.
            for index, future in futures.items():
                if index not in results and _succeeded(future) and future.result()[0]:
                    results[index] = future.result()[1]
            unfinished = [bounds[index] for index in pending if index not in results]
            if attempt == 0:
                continue
            raise SolverError(
                f"{owner}: a worker process died abruptly (killed, segfault or os._exit) while "
                "solving the batch, again on a fresh pool; the culprit is among the unfinished "
                f"{_where_all(unfinished)}. The pool was discarded; the next call starts a new one."
            ) from error
        except FutureTimeout:
            _terminate(workers, executor)
            unfinished = [bounds[index] for index in pending if index not in results]
            raise _timed_out(owner, timeout, unfinished) from None
        except SolverError:
            raise
        except Exception as error:  # e.g. an unpicklable return value
            _cancel(futures.values())
            unfinished = [bounds[index] for index in pending if index not in results]
            raise SolverError(
                f"{owner}: {_where(*unfinished[0])} could not be run in the process pool: "
                f"{type(error).__name__}: {error}"
            ) from error
        except BaseException:
            # A KeyboardInterrupt (or any other BaseException) while waiting: the
            # abandoned tasks must not keep the workers busy for the next call.
            _terminate(workers, executor)
            raise
        break
    outputs: list[Any] = []
    for index in range(len(bounds)):
        if per_instance:
            outputs.extend(results[index])
        else:
            outputs.append(results[index])
    return outputs


# Seconds per instance measured by the last executor call of each (owner, kind):
# the next call sizes its chunks from it (see _executor_bounds).
_seconds_per_instance: dict[tuple[str, str], float] = {}

#: The most of the solving time that per-task overhead may take on an executor.
OVERHEAD_FRACTION = 0.1


def _executor_bounds(
    owner: str, target: executors.Target, size: int, chunks_per_worker: int
) -> list[tuple[int, int]]:
    """Chunks for an executor call: the pool's rule, capped so overhead stays small.

    ``chunks_per_worker`` chunks per slot balance uneven instances; but each
    chunk costs ``o`` seconds of overhead (``executors.TASK_OVERHEAD_SECONDS``,
    measured per kind), so with ``t`` seconds per instance (measured on this
    owner's previous call) at most ``size * t * OVERHEAD_FRACTION / o`` chunks
    keep the total overhead under ``OVERHEAD_FRACTION`` of the solving time. The
    first call, with nothing measured, uses the pool's rule alone.
    """
    chunks = target.slots * chunks_per_worker
    seconds = _seconds_per_instance.get((owner, target.kind))
    if seconds is not None:
        overhead = executors.TASK_OVERHEAD_SECONDS[target.kind]
        chunks = min(chunks, max(1, int(size * seconds * OVERHEAD_FRACTION / overhead)))
    return _chunk_bounds(size, chunks, 1)


def _run_executor(
    owner: str,
    fn: Callable[..., Any],
    instances: Sliceable,
    target: executors.Target,
    per_instance: bool,
    chunks_per_worker: int,
    timeout: float | None,
) -> tuple[list[tuple[int, int]], list[Any]]:
    """Run the chunks on ``target``: ``(bounds, outputs)``, one output per instance or chunk."""
    target.check_sendable(owner, fn)
    bounds = _executor_bounds(owner, target, len(instances), chunks_per_worker)
    deadline = None if timeout is None else time.monotonic() + timeout
    futures: dict[int, Any] = {}
    results: dict[int, Any] = {}
    timings: list[float] = []

    def unfinished() -> str:
        return _where_all([bounds[index] for index in range(len(bounds)) if index not in results])

    try:
        for index, (start, stop) in enumerate(bounds):
            futures[index] = target.submit(_run_task, fn, start, instances[start:stop], per_instance)
        for index, (start, stop) in enumerate(bounds):
            ok, value, seconds = futures[index].result(timeout=_remaining(deadline))
            if not ok:
                target.abandon(futures.values(), free_workers=False)
                _raise(owner, value)
            results[index] = value
            timings.append(seconds / (stop - start))
    except SolverError:
        raise
    except (FutureTimeout, TimeoutError):
        where = unfinished()
        done = target.abandon(futures.values(), free_workers=True)
        raise SolverError(f"{owner}: timeout={timeout!r} s exceeded with {where} unfinished; {done}") from None
    except Exception as error:
        where = unfinished()
        done = target.abandon(futures.values(), free_workers=False)
        if executors.is_lost_worker(error):
            retried = " (Dask rescheduled it on other workers until allowed-failures ran out)"
            raise SolverError(
                f"{owner}: a worker of the {target.kind} executor died abruptly (killed, segfault or "
                f"os._exit) while solving{retried if target.kind == 'dask' else ''}; the culprit is "
                f"among the unfinished {where}; {done}"
            ) from error
        raise SolverError(
            f"{owner}: {where} could not be run on the {target.kind} executor: "
            f"{type(error).__name__}: {error}; {done}"
        ) from error
    except BaseException:
        # A KeyboardInterrupt while waiting: abandoned tasks must not hold the workers.
        target.abandon(futures.values(), free_workers=True)
        raise
    timings.sort()
    _seconds_per_instance[(owner, target.kind)] = timings[len(timings) // 2]
    outputs: list[Any] = []
    for index in range(len(bounds)):
        if per_instance:
            outputs.extend(results[index])
        else:
            outputs.append(results[index])
    return bounds, outputs


def check_executor(owner: str, workers: int, executor: Any) -> executors.Target | None:
    """The :class:`~combgrad.executors.Target` for ``executor``, or None without one.

    The one check of the ``workers=``/``executor=`` pair, used by :func:`map_instances`
    and by the solvers' constructors (so that a wrong executor fails at construction).

    Args:
        owner: Name that prefixes error messages.
        workers: The local pool's size (0 for none).
        executor: None, a ``concurrent.futures.Executor`` or a ``dask.distributed.Client``.

    Returns:
        None if ``executor`` is None, else its target.

    Raises:
        ValueError: If both ``workers > 0`` and ``executor`` are given.
        TypeError: If ``executor`` is neither kind (naming the dask extra where
            it looks like a Dask client and dask is not installed).

    Example:
        >>> from concurrent.futures import ThreadPoolExecutor
        >>> check_executor("mine", 0, None) is None
        True
        >>> check_executor("mine", 2, ThreadPoolExecutor(2))
        Traceback (most recent call last):
        ...
        ValueError: mine: give workers=2 (the local process pool) or executor=ThreadPoolExecutor, not both
    """
    if executor is None:
        return None
    if workers:
        raise ValueError(
            f"{owner}: give workers={workers} (the local process pool) or "
            f"executor={type(executor).__name__}, not both"
        )
    return executors.resolve(owner, executor)


def _succeeded(future: Future[Any]) -> bool:
    return future.done() and not future.cancelled() and future.exception() is None


def _cancel(futures: Iterable[Future[Any]]) -> None:
    for future in futures:
        future.cancel()


def _check_common(
    owner: str, workers: int, chunks_per_worker: int, timeout: float | None, executor: Any
) -> tuple[int, int, float | None, executors.Target | None]:
    workers = check_positive_int(owner, "workers", workers, minimum=0)
    chunks_per_worker = check_positive_int(owner, "chunks_per_worker", chunks_per_worker)
    if timeout is not None:
        timeout = check_number(owner, "timeout", timeout, positive=True)
    return workers, chunks_per_worker, timeout, check_executor(owner, workers, executor)


def map_instances(
    fn: Callable[[Any], Any],
    instances: Sliceable,
    *,
    workers: int = 0,
    owner: str = "pool",
    chunks_per_worker: int = CHUNKS_PER_WORKER,
    timeout: float | None = None,
    executor: Any = None,
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
        timeout: Seconds for the whole call, or None (no limit). When it passes,
            the pool's workers are killed (the next call gets fresh ones) and a
            SolverError names the unfinished instances. With ``workers=0`` it is
            checked between instances (nothing can stop a running function in
            this process). On an executor the unfinished tasks are cancelled
            (and Dask workers still running them restarted, see
            :mod:`combgrad.executors`).
        executor: None, or a ``concurrent.futures.Executor`` or a
            ``dask.distributed.Client`` to run the chunks on instead of the
            local pool (then ``workers`` must be 0). Chunks: ``chunks_per_worker``
            per executor slot, capped at ``B * t * OVERHEAD_FRACTION / o`` with
            ``t`` the seconds per instance measured on ``owner``'s previous call
            and ``o`` the kind's per-task overhead, so that overhead stays under
            10 % of the solving time. ``fn`` must travel to it: picklable for
            processes, cloudpickle-able for Dask (lambdas and closures work),
            anything for threads.

    Returns:
        The list of ``B`` results, in order.

    Raises:
        SolverError: If ``fn`` raises on an instance (the message names its index),
            the timeout passes, or a worker process dies twice (the pool is
            discarded; never a hang).
        ValueError: If ``fn`` cannot be pickled while ``workers > 0`` (or sent to
            the executor), ``workers``/``chunks_per_worker``/``timeout`` are
            invalid, or both ``workers > 0`` and ``executor`` are given.
        TypeError: If ``executor`` is neither an Executor nor a Dask Client.
        KeyboardInterrupt: Re-raised after cancelling this call's tasks and
            killing the workers that ran them.

    Example:
        >>> import math
        >>> from combgrad.pool import map_instances
        >>> map_instances(math.sqrt, [1.0, 4.0, 9.0], workers=0)
        [1.0, 2.0, 3.0]
        >>> from concurrent.futures import ThreadPoolExecutor
        >>> with ThreadPoolExecutor(2) as threads:
        ...     map_instances(math.sqrt, [1.0, 4.0, 9.0], executor=threads)
        [1.0, 2.0, 3.0]
    """
    workers, chunks_per_worker, timeout, target = _check_common(
        owner, workers, chunks_per_worker, timeout, executor
    )
    if len(instances) == 0:
        return []
    if target is not None:
        return _run_executor(owner, fn, instances, target, True, chunks_per_worker, timeout)[1]
    if workers == 0:
        return _run_serial(owner, fn, instances, True, timeout)
    return _run_pool(owner, fn, instances, workers, True, chunks_per_worker, timeout)


def map_chunks(
    fn: Callable[[Any], Any],
    instances: Sliceable,
    *,
    workers: int = 0,
    owner: str = "pool",
    chunks_per_worker: int = CHUNKS_PER_WORKER,
    timeout: float | None = None,
    executor: Any = None,
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
        timeout: Seconds for the whole call, or None, as in :func:`map_instances`
            (with ``workers=0`` the single call cannot be stopped).
        executor: None, or an executor to run the chunks on, as in
            :func:`map_instances` (chunks sized by the same rule).

    Returns:
        ``[(start, stop, fn(instances[start:stop])), ...]`` covering ``0..B`` in order.

    Raises:
        SolverError: If ``fn`` raises (the message names the instances), the
            timeout passes, or a worker process dies twice.
        ValueError: If ``fn`` cannot be pickled while ``workers > 0``, or both
            ``workers > 0`` and ``executor`` are given.
        TypeError: If ``executor`` is neither an Executor nor a Dask Client.
        KeyboardInterrupt: As in :func:`map_instances`.

    Example:
        >>> import numpy as np
        >>> from combgrad.pool import map_chunks
        >>> [(start, stop, out.tolist()) for start, stop, out in map_chunks(np.cumsum, np.ones(3), workers=0)]
        [(0, 3, [1.0, 2.0, 3.0])]
    """
    workers, chunks_per_worker, timeout, target = _check_common(
        owner, workers, chunks_per_worker, timeout, executor
    )
    size = len(instances)
    if size == 0:
        return []
    if target is not None:
        bounds, outputs = _run_executor(
            owner, fn, instances, target, False, chunks_per_worker, timeout
        )
        return [(start, stop, output) for (start, stop), output in zip(bounds, outputs)]
    if workers == 0:
        bounds = [(0, size)]
        outputs = _run_serial(owner, fn, instances, False, timeout)
    else:
        bounds = _chunk_bounds(size, workers, chunks_per_worker)
        outputs = _run_pool(owner, fn, instances, workers, False, chunks_per_worker, timeout)
    return [(start, stop, output) for (start, stop), output in zip(bounds, outputs)]

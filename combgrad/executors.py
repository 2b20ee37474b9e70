"""Solver calls on a user's executor: any ``concurrent.futures.Executor`` or a Dask ``Client``.

:mod:`combgrad.pool` runs chunks of a batch on its own process pool
(``workers=N``) or, through this module, on an executor the caller passes
(``executor=``). This module knows how to speak to each kind of executor; the
chunking, the ordering and the error contract stay in :mod:`combgrad.pool`.

It never imports dask: a ``dask.distributed.Client`` is recognised through
``sys.modules`` (whoever built a Client has imported ``distributed`` already),
so ``import combgrad`` stays free of it. An object that looks like a client
(it has ``submit``) but is no executor, while dask is not installed, gets an
error naming the extra: ``pip install "combgrad[distributed]"``.

Kinds, and what each does with a function it cannot stop (a timeout or a
Ctrl-C while tasks still run):

* ``threads`` (``ThreadPoolExecutor``): nothing is pickled; unfinished tasks are
  cancelled, a running one finishes in its thread (Python cannot stop a thread).
* ``processes`` (``ProcessPoolExecutor``) and ``executor`` (any other
  ``Executor``, e.g. one that submits to Ray, see the README): the caller
  owns the executor, so its processes are not killed; unfinished tasks are
  cancelled and the message says that running ones continue.
* ``dask`` (``distributed.Client``): functions travel by value (cloudpickle);
  a worker lost mid-call has its tasks rescheduled by Dask, and a task that
  kills ``allowed_failures`` workers fails with ``KilledWorker`` (turned into a
  SolverError naming its instances). On a timeout or a Ctrl-C the futures are
  cancelled and the workers still running them are ended at once for their
  nannies to restart, as the local pool kills its workers: a hung function
  would otherwise hold a worker thread forever.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pickle
import sys
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

__all__ = ["TASK_OVERHEAD_SECONDS", "Target", "is_lost_worker", "resolve"]

#: Per-task overhead in seconds of each kind: submitting a chunk, sending it and
#: its function, and receiving the result, beyond the solving itself. Measured
#: by ``benchmarks/scale.py`` on a 2-core machine at load average 8-10 (medians
#: of 5 rounds of 64 do-nothing tasks): threads 0.05 ms, the forkserver pool
#: 0.21-0.29 ms (a ProcessPoolExecutor is the same machinery), a loopback Dask
#: LocalCluster 5.7-20.4 ms (6 ms: the lower runs; the load inflates it). Unknown executors get the pool's figure, rounded
#: up. :mod:`combgrad.pool` sizes chunks from it so overhead stays under 10 %.
TASK_OVERHEAD_SECONDS = {"threads": 5e-5, "processes": 3e-4, "executor": 1e-3, "dask": 6e-3}

_EXTRA = 'pip install "combgrad[distributed]" (or "dask[distributed]")'


def _dask_client_type() -> type | None:
    distributed = sys.modules.get("distributed")
    client = getattr(distributed, "Client", None)
    return client if isinstance(client, type) else None


def _dask_installed() -> bool:
    try:
        return importlib.util.find_spec("distributed") is not None
    except (ImportError, ValueError):  # a module set to None in sys.modules, a broken install
        return False


@dataclass(frozen=True)
class Target:
    """An executor, its kind and how many tasks it runs at once.

    Attributes:
        executor: The ``concurrent.futures.Executor`` or ``distributed.Client``.
        kind: "threads", "processes", "executor" or "dask" (see the module docstring).
        slots: Tasks it runs at once (threads, processes, or Dask worker threads).
    """

    executor: Any
    kind: str
    slots: int

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Submit ``fn(*args)``; returns a future with ``result(timeout)`` and ``cancel()``."""
        if self.kind == "dask":
            # pure=False: two chunks with equal data are still two tasks.
            return self.executor.submit(fn, *args, pure=False)
        return self.executor.submit(fn, *args)

    def check_sendable(self, owner: str, fn: Callable[..., Any]) -> None:
        """Raise ValueError, saying what to do, if ``fn`` cannot travel to this executor."""
        if self.kind == "threads":
            return  # same process: nothing is pickled
        if self.kind == "dask":
            # Installed with distributed; imported by name, as dask is never a
            # dependency of the package itself.
            dumps = importlib.import_module("cloudpickle").dumps
            how = "cloudpickle (Dask sends functions by value)"
        else:
            dumps, how = pickle.dumps, "pickle"
        try:
            dumps(fn)
        except Exception as error:
            advice = (
                "make it a module-level function of a module the workers can import, or a "
                "functools.partial of one, with picklable arguments"
                if self.kind == "dask"
                else "make it a module-level function of an importable module (or a "
                "functools.partial of one), not a lambda or a function defined inside another "
                "function; a dask.distributed.Client or a ThreadPoolExecutor accepts those"
            )
            raise ValueError(
                f"{owner}: with executor={type(self.executor).__name__} fn must be picklable by "
                f"{how}; {advice}; got {fn!r}, which fails to pickle: {error}"
            ) from error

    def abandon(self, futures: Iterable[Any], *, free_workers: bool) -> str:
        """Cancel unfinished tasks; say what was done.

        With ``free_workers`` (a timeout, a Ctrl-C: a task may hang) the Dask
        workers still running them are restarted as well.
        """
        unfinished = [future for future in futures if not future.done()]
        if self.kind == "dask" and not free_workers:
            self.executor.cancel(unfinished)
            return "the unfinished Dask tasks were cancelled"
        if self.kind != "dask":
            for future in unfinished:
                future.cancel()
            return (
                "their tasks were cancelled; a task already running continues in the executor "
                "(it cannot be stopped from outside)"
            )
        keys = {future.key for future in unfinished}
        busy: list[str] = []
        try:
            busy = [
                worker
                for worker, running in self.executor.processing().items()
                if keys.intersection(running)
            ]
        except Exception:  # a lost scheduler: nothing more to free
            pass
        self.executor.cancel(unfinished)
        if not busy:
            return "their Dask tasks were cancelled"
        # A graceful restart (Client.restart_workers) waits for the worker to close,
        # and closing waits for the hung task's thread: measured here, the worker
        # then failed to come back within the restart's 120 s. Ending the process
        # at once, as the local pool's SIGKILL does, lets its nanny start a fresh
        # one (about 1.3 s on this machine). Only workers with a nanny are ended:
        # without one the worker would be lost for good.
        try:
            workers = self.executor.scheduler_info().get("workers", {})
        except Exception:
            workers = {}
        restartable = [worker for worker in busy if workers.get(worker, {}).get("nanny")]
        if restartable:
            try:
                self.executor.run(os._exit, 1, workers=restartable)
            except Exception:  # the worker exits before it can answer: that is the point
                pass
        kept = [worker for worker in busy if worker not in restartable]
        message = "their Dask tasks were cancelled"
        if restartable:
            message += f" and the workers that ran them ended and restarted by their nannies ({', '.join(restartable)})"
        if kept:
            message += f"; the workers without a nanny ({', '.join(kept)}) were left, and a hung function may still hold them"
        return message


def resolve(owner: str, executor: Any) -> Target:
    """The :class:`Target` for ``executor``, or a TypeError saying what is accepted.

    Args:
        owner: Name that prefixes the error message.
        executor: A ``concurrent.futures.Executor`` or a ``dask.distributed.Client``.

    Returns:
        A :class:`Target` with the executor's kind and parallel slots.

    Raises:
        TypeError: For anything else; for a client-like object while dask is not
            installed, the message names the extra to install.

    Example:
        >>> from concurrent.futures import ThreadPoolExecutor
        >>> with ThreadPoolExecutor(3) as threads:
        ...     target = resolve("mine", threads)
        >>> target.kind, target.slots
        ('threads', 3)
        >>> resolve("mine", 4)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        TypeError: mine: executor must be a concurrent.futures.Executor or a dask.distributed.Client, got int...
    """
    client_type = _dask_client_type()
    if client_type is not None and isinstance(executor, client_type):
        client: Any = executor
        try:
            slots = sum(client.nthreads().values())
        except Exception as error:
            raise TypeError(f"{owner}: the Dask client cannot reach its scheduler: {error}") from error
        # A cluster with no worker yet (adaptive scaling) still takes tasks.
        return Target(executor, "dask", max(1, int(slots)))
    if isinstance(executor, Executor):
        kind = (
            "threads"
            if isinstance(executor, ThreadPoolExecutor)
            else "processes"
            if isinstance(executor, ProcessPoolExecutor)
            else "executor"
        )
        size = getattr(executor, "_max_workers", None)  # no public view of the size
        if not isinstance(size, int) or size < 1:
            size = os.cpu_count() or 1
        return Target(executor, kind, size)
    expected = "a concurrent.futures.Executor or a dask.distributed.Client"
    if callable(getattr(executor, "submit", None)) and not _dask_installed():
        raise TypeError(
            f"{owner}: executor must be {expected}; {type(executor).__name__} looks like a Dask "
            f"client, but dask.distributed is not installed: {_EXTRA}"
        )
    raise TypeError(f"{owner}: executor must be {expected}, got {type(executor).__name__}")


def is_lost_worker(error: BaseException) -> bool:
    """Whether ``error`` says a worker died (not that the function raised).

    Example:
        >>> from concurrent.futures.process import BrokenProcessPool
        >>> is_lost_worker(BrokenProcessPool("gone")), is_lost_worker(ValueError("bad"))
        (True, False)
    """
    from concurrent.futures.process import BrokenProcessPool

    # KilledWorker is distributed's; it is matched by name to keep dask unimported.
    return isinstance(error, BrokenProcessPool) or type(error).__name__ == "KilledWorker"

"""How the numba solvers run a batch: one batching pattern and the thread policy.

Every built-in numba solver (``shortest_path``, ``spanning_tree``, ``assignment``,
``knapsack``) has the same two kernels, and hands them to :func:`run_batch`:

* ``_solve_range(*args, out, start, stop)``, ``@njit(cache=True)``: solves
  instances ``start:stop`` of the batch into ``out``, allocating its scratch
  buffers once for the whole range. Called directly, it is the serial path: no
  threading layer is involved at all.
* ``_solve_chunks(*args, out, chunks)``, ``@njit(cache=True, parallel=True)``:
  ``for chunk in prange(chunks)`` runs ``_solve_range`` on
  :func:`chunk_range` ``(chunk, len(out), chunks)``. One contiguous chunk per
  thread matches numba's static ``prange`` schedule (a dynamic schedule,
  ``set_parallel_chunksize(1)``, measured 2-3x slower), and scratch buffers are
  allocated once per thread instead of once per instance.

(A single generic parallel kernel that takes ``_solve_range`` as an argument
compiles, but numba's cache misses on it in every new process, about a second
of compilation per solver, hence one four-line ``_solve_chunks`` per module.)

The thread policy, decided per call by :func:`threads_for`:

1. **Serial below a measured work threshold.** Each solver estimates the
   call's serial time from its instance size (nanoseconds per inner-loop step,
   measured by ``python benchmarks/threads.py --calibrate``); below
   :data:`SERIAL_WORK_SECONDS` the call runs on the calling thread. The
   threshold is the measured crossover (``python benchmarks/threads.py
   --crossover``): the work at which two threads first beat one when calls are
   5 ms apart, rounded up (back-to-back calls cross over ten times earlier,
   but then a competing process appearing between the load check below and the
   end of the call would cost a scheduler time slice, about 10 ms, for a gain of
   at most a quarter of a millisecond).
2. **Never more threads than free cores.** At most :func:`get_num_threads`
   threads (default: the ``COMBGRAD_NUM_THREADS`` environment variable, else
   the usable cores: CPU affinity and cgroup quota), and no more than the cores
   that other runnable tasks leave free at call time (``/proc/loadavg``'s count
   of running tasks, read in about a microsecond; other platforms skip this
   step). An OpenMP barrier waits for its slowest thread: with both cores busy
   with other work, a two-thread call on 50 12x12 maps took 19.3 ms against
   0.47 ms on one thread, because a thread descheduled by the competing
   processes holds the whole batch for a scheduler time slice.
3. **One launch at a time on the workqueue layer.** numba's ``workqueue``
   threading layer (used where neither OpenMP nor TBB is installed) aborts the
   process when two Python threads launch parallel kernels at once; there
   parallel launches are serialised by a lock. The ``omp`` and ``tbb`` layers
   are thread-safe and take no lock.

Step 2 counts other processes only. This process's own threads do not
compete with the call: with torch imported first, numba's ``omp`` layer binds
to torch's GNU OpenMP library (``LD_DEBUG=bindings`` shows ``GOMP_parallel``
resolved in ``torch/lib/libgomp.so.1``), so numba and torch share one thread
pool, whose threads spin for about 15 ms after each parallel region (a torch
operation, this call's input checks, the previous solver call). Counting them
would make nearly every call serial on a quiet machine.

Example:
    >>> import combgrad as cg
    >>> cg.solvers.set_num_threads(1)
    >>> cg.solvers.get_num_threads()
    1
    >>> cg.solvers.set_num_threads(None)  # back to COMBGRAD_NUM_THREADS or the cores
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from collections.abc import Callable
from typing import Any

import numba
import numpy as np
from numba import njit, prange

from .._checks import check_positive_int

#: Calls whose estimated serial work is below this many seconds run on the
#: calling thread. Measured crossover (benchmarks/threads.py --crossover, 2-core
#: AMD EPYC shared with other jobs, calls 5 ms apart, two runs on 2026-12-01):
#: two threads first beat one at two consecutive batch sizes at 0.26-1.0 ms of
#: estimated work for shortest_path 30x30, 0.33 ms for 12x12, 0.23-0.46 ms for
#: spanning_tree, 0.22-0.44 ms for assignment 30x30 and 0.37-1.5 ms for
#: knapsack (assignment 5x5: never up to batch 256); median about 0.4 ms.
#: A parallel launch 5 ms after the previous call costs about 0.1 ms more than
#: a serial call; back-to-back calls cross over near 0.04 ms. Below 0.5 ms a
#: parallel call saves at most 0.25 ms.
SERIAL_WORK_SECONDS = 5e-4

ENVIRONMENT_VARIABLE = "COMBGRAD_NUM_THREADS"

_requested: int | None = None  # set_num_threads' value; None: the environment or the cores
_layer: str | None = None
_layer_lock = threading.Lock()
_launch_lock = threading.Lock()


@njit(cache=True, inline="always")
def chunk_range(chunk: int, batch: int, chunks: int) -> tuple[int, int]:
    """``(start, stop)`` of chunk ``chunk`` when ``batch`` instances are cut into ``chunks`` contiguous pieces."""
    return chunk * batch // chunks, (chunk + 1) * batch // chunks


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity, capped by a cgroup CPU quota.

    Example:
        >>> usable_cores() >= 1
        True
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max") as file:  # cgroup v2: "<quota> <period>" or "max <period>"
            quota, period = file.read().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def _limit() -> int:
    # numba cannot run more threads than it started with (NUMBA_NUM_THREADS).
    return max(1, min(usable_cores(), int(getattr(numba.config, "NUMBA_NUM_THREADS"))))


def _from_environment() -> int | None:
    value = os.environ.get(ENVIRONMENT_VARIABLE, "").strip()
    if not value:
        return None
    try:
        threads = int(value)
    except ValueError:
        threads = 0
    if threads < 1:
        raise ValueError(
            f"combgrad: the environment variable {ENVIRONMENT_VARIABLE} must be an integer >= 1, "
            f"got {value!r}"
        )
    return threads


def set_num_threads(threads: int | None) -> None:
    """Set the most threads a numba solver call may use; ``None`` restores the default.

    The default is the ``COMBGRAD_NUM_THREADS`` environment variable if set, else
    the usable cores. Values above the usable cores (or numba's
    ``NUMBA_NUM_THREADS``) are capped there, so cores are never oversubscribed;
    a call may still use fewer threads (small batches run serially, busy cores
    are left alone: see :mod:`combgrad.solvers.parallel`). Results never depend on
    the thread count. The setting is process-wide and separate from
    ``torch.set_num_threads``.

    Args:
        threads: An integer >= 1, or None.

    Raises:
        ValueError: If ``threads`` is not an integer >= 1 or None.

    Example:
        >>> import combgrad as cg
        >>> cg.solvers.set_num_threads(1)   # e.g. beside a torch training loop on 2 cores
        >>> cg.solvers.get_num_threads()
        1
        >>> cg.solvers.set_num_threads(None)
    """
    global _requested
    _requested = None if threads is None else check_positive_int("set_num_threads", "threads", threads)


def get_num_threads() -> int:
    """The most threads a numba solver call may use (see :func:`set_num_threads`).

    Raises:
        ValueError: If ``COMBGRAD_NUM_THREADS`` is set to anything but an integer >= 1.

    Example:
        >>> import combgrad as cg
        >>> 1 <= cg.solvers.get_num_threads() <= usable_cores()
        True
    """
    requested = _requested if _requested is not None else _from_environment()
    limit = _limit()
    return limit if requested is None else min(requested, limit)


def _running_tasks() -> int | None:
    """Tasks running or runnable on the whole machine right now, this thread included; None if unknown."""
    try:
        with open("/proc/loadavg", "rb") as file:  # "0.41 0.38 0.22 3/250 12345"
            return int(file.read().split()[3].split(b"/")[0])
    except (OSError, ValueError, IndexError):
        return None


def _own_running_threads() -> int | None:
    """Threads of this process that are running or runnable right now; None if unknown."""
    try:
        count = 0
        for thread in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{thread}/stat", "rb") as file:
                # "<tid> (<name>) <state> ...": the name may hold spaces and parentheses.
                count += file.read().rpartition(b")")[2][1:2] == b"R"
        return count
    except OSError:
        return None


def threads_for(work_seconds: float) -> int:
    """How many threads a call with ``work_seconds`` of estimated serial work gets (1 = serial).

    Example:
        >>> threads_for(1e-6)  # far below SERIAL_WORK_SECONDS
        1
    """
    if work_seconds < SERIAL_WORK_SECONDS:
        return 1
    threads = get_num_threads()
    if threads == 1:
        return 1
    running = _running_tasks()
    if running is None:
        return threads
    # /proc/loadavg counts the whole machine, so compare with all its CPUs.
    cpus = os.cpu_count() or 1
    others = running - 1
    if others > cpus - threads:
        # Possibly busy. This process's own threads do not compete with the call:
        # torch's intra-op threads spin for about 15 ms after each parallel torch
        # operation (this call's own input checks included), and counting them
        # would make every call after a torch operation serial.
        own = _own_running_threads()
        if own:
            others = running - own
    return min(threads, max(1, cpus - others))


def threading_layer() -> str:
    """numba's threading layer ("omp", "tbb" or "workqueue"), initialising it on first use.

    Example:
        >>> threading_layer() in ("omp", "tbb", "workqueue")
        True
    """
    global _layer
    if _layer is None:
        with _layer_lock:
            if _layer is None:
                _layer = _start_layer()
    return _layer


def _start_layer() -> str:
    """Make numba's first parallel launch; return the threading layer's name.

    The layer is chosen on the first launch; making it here, under a lock, puts
    the workqueue lock in place before two threads can race.
    """
    _initialise_layer(np.zeros(2))
    return str(numba.threading_layer())


@njit(cache=True, parallel=True)
def _initialise_layer(values: np.ndarray) -> float:
    total = 0.0
    for index in prange(values.shape[0]):
        total += values[index]
    return total


def run_batch(
    solve_range: Callable[..., Any],
    solve_chunks: Callable[..., Any],
    args: tuple[Any, ...],
    out: np.ndarray,
    seconds_per_instance: float,
) -> np.ndarray:
    """Solve the batch ``out [B, ...]`` with the kernel pair of the module docstring; returns ``out``.

    Args:
        solve_range: ``solve_range(*args, out, start, stop)``, the serial kernel.
        solve_chunks: ``solve_chunks(*args, out, chunks)``, the parallel kernel.
        args: The kernels' leading arguments (the batch data and options).
        out: The preallocated output, batch first; the kernels fill it.
        seconds_per_instance: The solver's estimate of one instance's serial time.

    Example:
        >>> from combgrad.solvers import shortest_path as module
        >>> import numpy as np
        >>> costs = np.ones((3, 2, 2))
        >>> out = np.zeros((3, 2, 2), np.uint8)
        >>> run_batch(module._solve_range, module._solve_chunks,
        ...           (costs, True, np.array([0, 0]), np.array([1, 1]), module._STEPS[4]), out, 1e-6)[0]
        array([[1, 1],
               [0, 1]], dtype=uint8)
    """
    batch = out.shape[0]
    threads = min(threads_for(batch * seconds_per_instance), batch)
    if threads <= 1:
        solve_range(*args, out, 0, batch)
        return out
    lock = _launch_lock if threading_layer() == "workqueue" else contextlib.nullcontext()
    with lock:
        # numba's thread count is per calling thread; restore the caller's.
        previous = numba.get_num_threads()
        numba.set_num_threads(threads)
        try:
            solve_chunks(*args, out, threads)
        finally:
            numba.set_num_threads(previous)
    return out

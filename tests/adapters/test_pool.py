"""Tests for combgrad/adapters/pool.py: the shared process pool.

Every pooled test uses workers=2, so the tests share one pool (a fresh forkserver
pool takes about a second to start); only the dead-worker tests replace it.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import signal
import threading
from functools import partial

import numpy as np
import pytest

from combgrad import SolverError
from combgrad.adapters import pool
from tests.adapters.pool_helpers import WORKERS, deadline

# Module-level functions: the workers import this module to unpickle them.


def square(x: float) -> float:
    return x * x


def row_sum(row: np.ndarray) -> float:
    return float(row.sum())


def worker_pid(x: float) -> int:
    return os.getpid()


def fail_at(bad: float, x: float) -> float:
    if x == bad:
        raise ValueError(f"bad instance {x:g}")
    return x


def solver_error_at(bad: float, x: float) -> float:
    if x == bad:
        raise SolverError("infeasible: made up")
    return x


class Unpicklable(Exception):
    """An exception that cannot travel back from a worker (it holds a lock)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


def fail_unpicklable(x: float) -> float:
    if x == 2:
        raise Unpicklable("holding a lock")
    return x


def exit_at(bad: float, x: float) -> float:
    if x == bad:
        raise SystemExit(3)
    return x


def _in_worker() -> bool:
    # Guard: never kill the test process itself if a test runs this serially.
    return multiprocessing.parent_process() is not None


def kill_at(bad: float, x: float) -> float:
    if x == bad and _in_worker():
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def hard_exit_at(bad: float, x: float) -> float:
    if x == bad and _in_worker():
        os._exit(7)
    return x


def return_unpicklable(x: float) -> object:
    return threading.Lock()


def _rebuild_here_only() -> "LoadsOnlyInTheCaller":
    if _in_worker():
        raise ImportError("no module named 'notebook_cell'")
    return LoadsOnlyInTheCaller()


class LoadsOnlyInTheCaller:
    """Pickles fine but cannot be loaded in a worker, like a function of a notebook."""

    def __reduce__(self):
        return (_rebuild_here_only, ())

    def __call__(self, x: float) -> float:
        return x


def chunk_cumsum(chunk: np.ndarray) -> np.ndarray:
    return np.cumsum(chunk)


def chunk_fail_if_contains(bad: float, chunk: np.ndarray) -> np.ndarray:
    if bad in chunk:
        raise ValueError("bad chunk")
    return chunk


@pytest.mark.parametrize("size", [1, 7, 37])
@pytest.mark.parametrize("seed", [0, 1])
def test_map_instances_matches_a_loop_serial_and_pooled(size: int, seed: int) -> None:
    instances = np.random.default_rng(seed).normal(size=(size, 5))
    expected = [float(row.sum()) for row in instances]
    with deadline(60):
        pooled = pool.map_instances(row_sum, instances, workers=WORKERS)
    assert pool.map_instances(row_sum, instances, workers=0) == expected
    assert pooled == expected


def test_pool_is_created_once_and_reused() -> None:
    with deadline(60):
        first = set(pool.map_instances(worker_pid, list(range(16)), workers=WORKERS))
        executor = pool.get_executor(WORKERS)
        second = set(pool.map_instances(worker_pid, list(range(16)), workers=WORKERS))
    assert pool.get_executor(WORKERS) is executor
    assert os.getpid() not in first
    assert first | second <= {process.pid for process in executor._processes.values()}
    assert len(first | second) <= WORKERS


def test_chunks_are_a_few_per_worker_and_cover_the_batch() -> None:
    for size in (1, 5, 8, 9, 100, 1001):
        bounds = pool._chunk_bounds(size, WORKERS, pool.CHUNKS_PER_WORKER)
        assert len(bounds) == min(size, WORKERS * pool.CHUNKS_PER_WORKER)
        assert bounds[0][0] == 0 and bounds[-1][1] == size
        assert all(stop == start for (_, stop), (start, _) in zip(bounds, bounds[1:]))
        lengths = [stop - start for start, stop in bounds]
        assert max(lengths) - min(lengths) <= 1


@pytest.mark.parametrize("workers", [0, WORKERS])
def test_exception_names_the_instance_and_keeps_the_original(workers: int) -> None:
    with deadline(60), pytest.raises(SolverError, match=r"^pool: instance 13 raised ValueError: bad instance 13$") as info:
        pool.map_instances(partial(fail_at, 13.0), np.arange(30.0), workers=workers)
    assert isinstance(info.value.__cause__, ValueError)
    assert str(info.value.__cause__) == "bad instance 13"


def test_worker_traceback_travels_as_the_cause_of_the_original() -> None:
    with deadline(60), pytest.raises(SolverError) as info:
        pool.map_instances(partial(fail_at, 3.0), np.arange(8.0), workers=WORKERS, owner="mine")
    assert str(info.value).startswith("mine: instance 3 raised ValueError")
    assert "fail_at" in str(info.value.__cause__.__cause__)


@pytest.mark.parametrize("workers", [0, WORKERS])
def test_solver_error_in_fn_keeps_its_message_and_gains_the_index(workers: int) -> None:
    with deadline(60), pytest.raises(SolverError, match=r"^ilp: instance 4: infeasible: made up$"):
        pool.map_instances(partial(solver_error_at, 4.0), np.arange(9.0), workers=workers, owner="ilp")


def test_unpicklable_exception_still_names_the_instance() -> None:
    with deadline(60), pytest.raises(SolverError, match=r"instance 2 raised Unpicklable: holding a lock"):
        pool.map_instances(fail_unpicklable, np.arange(6.0), workers=WORKERS)


def test_system_exit_in_a_worker_becomes_an_error_not_an_exit() -> None:
    with deadline(60), pytest.raises(SolverError, match=r"instance 5 raised SystemExit"):
        pool.map_instances(partial(exit_at, 5.0), np.arange(10.0), workers=WORKERS)
    # The pool survived: the worker caught it.
    assert pool.map_instances(square, [3.0], workers=WORKERS) == [9.0]


@pytest.mark.parametrize("fn", [kill_at, hard_exit_at], ids=["sigkill", "os_exit"])
def test_dead_worker_raises_and_the_next_call_uses_a_fresh_pool(fn) -> None:
    pool.map_instances(square, [1.0, 2.0], workers=WORKERS)
    broken = pool.get_executor(WORKERS)
    with deadline(60), pytest.raises(SolverError, match=r"worker process died abruptly.*instance") as info:
        pool.map_instances(partial(fn, 6.0), np.arange(20.0), workers=WORKERS)
    # The message's range of unfinished instances contains the culprit.
    found = re.search(r"unfinished instances? (\d+)(?:\.\.(\d+))?", str(info.value))
    low, high = int(found[1]), int(found[2] or found[1])
    assert low <= 6 <= high
    assert pool.get_executor(WORKERS) is not broken
    with deadline(60):
        assert pool.map_instances(square, np.arange(10.0), workers=WORKERS) == [float(i * i) for i in range(10)]


@pytest.mark.parametrize("fn", [lambda x: x, None], ids=["lambda", "local"])
def test_unpicklable_function_is_refused_clearly(fn) -> None:
    if fn is None:

        def fn(x: float) -> float:  # a local function cannot be pickled either
            return x

    with pytest.raises(ValueError, match=r"workers=2 the function must be picklable \(a module-level function"):
        pool.map_instances(fn, [1.0], workers=WORKERS)
    # Serially any callable works.
    assert pool.map_instances(fn, [1.0], workers=0) == [1.0]


def test_function_that_cannot_be_loaded_in_a_worker_is_explained() -> None:
    with deadline(60), pytest.raises(SolverError, match=r"instances 0\.\.1 raised ImportError: the worker process could not load the function; define it at module level"):
        pool.map_instances(LoadsOnlyInTheCaller(), np.arange(16.0), workers=WORKERS)


def test_unpicklable_result_names_the_instances() -> None:
    with deadline(60), pytest.raises(SolverError, match=r"instances? \d+(\.\.\d+)? could not be run in the process pool"):
        pool.map_instances(return_unpicklable, [1.0, 2.0, 3.0], workers=WORKERS)


@pytest.mark.parametrize("workers", [0, WORKERS])
def test_map_chunks_covers_the_batch_in_order(workers: int) -> None:
    instances = np.arange(1.0, 24.0)
    with deadline(60):
        chunks = pool.map_chunks(chunk_cumsum, instances, workers=workers)
    assert chunks[0][0] == 0 and chunks[-1][1] == len(instances)
    expected_count = 1 if workers == 0 else WORKERS * pool.CHUNKS_PER_WORKER
    assert len(chunks) == expected_count
    for start, stop, output in chunks:
        np.testing.assert_array_equal(output, np.cumsum(instances[start:stop]))


@pytest.mark.parametrize("workers", [0, WORKERS])
def test_map_chunks_error_names_the_chunks_instances(workers: int) -> None:
    instances = np.arange(24.0)
    if workers:
        start, stop = next(b for b in pool._chunk_bounds(24, workers, pool.CHUNKS_PER_WORKER) if b[0] <= 10 < b[1])
    else:
        start, stop = 0, 24
    with deadline(60), pytest.raises(SolverError, match=rf"^pool: instances {start}\.\.{stop - 1} raised ValueError: bad chunk$"):
        pool.map_chunks(partial(chunk_fail_if_contains, 10.0), instances, workers=workers)


def test_empty_batch_runs_nothing() -> None:
    assert pool.map_instances(square, [], workers=WORKERS) == []
    assert pool.map_chunks(chunk_cumsum, np.zeros(0), workers=0) == []


@pytest.mark.parametrize("workers", [-1, 1.5, True, "2"])
def test_bad_workers_are_refused(workers) -> None:
    with pytest.raises(ValueError, match=r"workers must be an integer >= 0"):
        pool.map_instances(square, [1.0], workers=workers)


def test_bad_chunks_per_worker_is_refused() -> None:
    with pytest.raises(ValueError, match=r"chunks_per_worker must be an integer >= 1"):
        pool.map_instances(square, [1.0], workers=WORKERS, chunks_per_worker=0)


def test_get_executor_refuses_zero_workers() -> None:
    with pytest.raises(ValueError, match=r"workers must be an integer >= 1"):
        pool.get_executor(0)


def test_shutdown_then_a_new_pool_starts() -> None:
    with deadline(60):
        pool.map_instances(square, [2.0], workers=WORKERS)
        old = pool.get_executor(WORKERS)
        pool.shutdown()
        assert pool.map_instances(square, [2.0, 3.0], workers=WORKERS) == [4.0, 9.0]
    assert pool.get_executor(WORKERS) is not old

"""Tests for combgrad/pool.py: the shared process pool.

Every pooled test uses workers=2, so the tests share one pool (a fresh forkserver
pool takes about a second to start); only the dead-worker, timeout and interrupt
tests replace it.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import os
import pickle
import re
import signal
import sys
import threading
import time
from functools import partial
from pathlib import Path

import numpy as np
import pytest

# Workers unpickle this module's functions by importing "tests.test_pool": the
# repository root must be on sys.path before the first worker starts (the
# fork server copies sys.path when it starts). tests/adapters/conftest.py does
# the same for the adapters' tests.
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.append(_ROOT)

from combgrad import SolverError, pool  # noqa: E402
from tests.adapters.pool_helpers import WORKERS, deadline  # noqa: E402

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


def hang_at(bad: float, x: float) -> float:
    """A worker function that never returns on ``bad`` (an hour is forever here)."""
    if x == bad:
        time.sleep(3600)
    return x


def sleep_then_return(seconds: float, x: float) -> float:
    time.sleep(seconds)
    return x


def sleep_then_return_pid(seconds: float, x: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def triple(x: float) -> float:
    return 3 * x


def rebinding_decorator(fn):
    """Rebinds the decorated name to something else, as @cg.differentiable does."""
    return "not the function any more"


triple_by_reference = pool.by_reference(triple)
triple = rebinding_decorator(triple)  # noqa: F811  pickle can no longer find triple by name


def unfinished_instances(message: str) -> set[int]:
    """Every index named by the "instances 3..5, 8" part of an error message."""
    named = re.search(r"instances? ((?:\d+(?:\.\.\d+)?(?:, )?)+)", message)
    assert named, message
    indices: set[int] = set()
    for part in named[1].split(", "):
        low, _, high = part.partition("..")
        indices.update(range(int(low), int(high or low) + 1))
    return indices


def wait_until_dead(processes, seconds: float = 30.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if all(process.exitcode is not None for process in processes):
            return True
        time.sleep(0.05)
    return False


def worker_processes() -> list:
    return list(pool.get_executor(WORKERS)._processes.values())


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
    # The message's ranges of unfinished instances contain the culprit.
    assert 6 in unfinished_instances(str(info.value))
    assert pool.get_executor(WORKERS) is not broken
    with deadline(60):
        assert pool.map_instances(square, np.arange(10.0), workers=WORKERS) == [float(i * i) for i in range(10)]


@pytest.mark.parametrize("fn", [lambda x: x, None], ids=["lambda", "local"])
def test_unpicklable_function_is_refused_clearly(fn) -> None:
    if fn is None:

        def fn(x: float) -> float:  # a local function cannot be pickled either
            return x

    with pytest.raises(ValueError, match=r"^pool: with workers=2 fn must be picklable \(a module-level function"):
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


def test_unfinished_ranges_are_merged_in_messages() -> None:
    assert pool._where_all([(6, 7), (0, 2), (2, 4)]) == "instances 0..3, 6"
    assert pool._where_all([(4, 5)]) == "instance 4"
    assert unfinished_instances("x: instances 0..3, 6 unfinished") == {0, 1, 2, 3, 6}


def test_timeout_stops_a_hung_worker_names_it_and_replaces_the_workers() -> None:
    """Issue 8 item 3: a function that never returns used to block the call forever."""
    with deadline(60):
        pool.map_instances(square, [1.0, 2.0], workers=WORKERS)
        old = worker_processes()
        started = time.monotonic()
        with pytest.raises(SolverError, match=r"^pool: timeout=1\.0 s exceeded with instances? .* unfinished; their workers were killed") as info:
            pool.map_instances(partial(hang_at, 3.0), np.arange(16.0), workers=WORKERS, timeout=1.0)
        elapsed = time.monotonic() - started
        assert 3 in unfinished_instances(str(info.value))
        assert elapsed < 10  # 1 s of timeout plus start-up on a loaded machine
        assert wait_until_dead(old), "the hung worker must be killed"
        assert pool.map_instances(square, np.arange(6.0), workers=WORKERS) == [float(i * i) for i in range(6)]
    assert not set(old) & set(worker_processes())


def test_serial_timeout_is_checked_between_instances() -> None:
    with pytest.raises(SolverError, match=r"^pool: timeout=0\.2 s exceeded with instances [1-9]\.\.9 unfinished"):
        pool.map_instances(partial(sleep_then_return, 0.1), np.arange(10.0), workers=0, timeout=0.2)


@pytest.mark.parametrize("timeout", [0, -1.0, float("nan"), "1"])
def test_bad_timeout_is_refused(timeout) -> None:
    with pytest.raises(ValueError, match=r"^pool: timeout must be a finite number > 0, got"):
        pool.map_instances(square, [1.0], workers=WORKERS, timeout=timeout)


def test_keyboard_interrupt_cancels_the_call_and_the_next_call_runs_at_once() -> None:
    """Issue 8 item 3: after Ctrl-C the next call used to wait 29.7 s behind a 30 s task."""
    with deadline(60):
        pool.map_instances(square, [1.0, 2.0], workers=WORKERS)
        old = worker_processes()
        # SIGINT to this process only: the main thread gets KeyboardInterrupt while
        # it waits for the workers, as with a Ctrl-C.
        timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                pool.map_instances(partial(sleep_then_return, 30.0), np.arange(8.0), workers=WORKERS)
        finally:
            timer.cancel()
        started = time.monotonic()
        assert pool.map_instances(square, np.arange(4.0), workers=WORKERS) == [0.0, 1.0, 4.0, 9.0]
        assert time.monotonic() - started < 10  # not behind the abandoned 30 s tasks
        assert wait_until_dead(old), "the workers that ran the interrupted call must be terminated"


def test_a_worker_killed_while_idle_does_not_fail_the_next_call() -> None:
    """Issue 8 item 4: this failed 10 of 10 times, blaming the innocent batch."""
    expected = [float(i * i) for i in range(16)]
    succeeded = 0
    with deadline(120):
        for _ in range(10):
            pool.map_instances(square, [1.0, 2.0, 3.0], workers=WORKERS)
            victim = worker_processes()[0]
            os.kill(victim.pid, signal.SIGKILL)
            # No wait: the death may not be visible yet when the next call starts.
            succeeded += pool.map_instances(square, np.arange(16.0), workers=WORKERS) == expected
            # Bookkeeping only: let the death become visible (it can take longer
            # than a call on a loaded machine), so the next victim is a live worker.
            assert wait_until_dead([victim])
    assert succeeded == 10


def test_a_worker_killed_while_idle_is_replaced_before_submitting() -> None:
    with deadline(60):
        pool.map_instances(square, [1.0, 2.0, 3.0], workers=WORKERS)
        executor = pool.get_executor(WORKERS)
        victim = worker_processes()[0]
        os.kill(victim.pid, signal.SIGKILL)
        assert wait_until_dead([victim])
        assert pool.map_instances(square, [5.0], workers=WORKERS) == [25.0]
    assert pool.get_executor(WORKERS) is not executor


def test_workers_ignore_ctrl_c_sent_to_the_process_group() -> None:
    """A Ctrl-C reaches idle workers too; they must survive it, the pool staying usable."""
    with deadline(60):
        # Until both workers have run a task, so both have started (a worker
        # still starting up has not installed its SIGINT policy yet).
        while len(set(pool.map_instances(partial(sleep_then_return_pid, 0.05), range(8), workers=WORKERS))) < WORKERS:
            pass
        executor = pool.get_executor(WORKERS)
        processes = worker_processes()
        for process in processes:
            os.kill(process.pid, signal.SIGINT)
        time.sleep(0.5)
        assert all(process.exitcode is None for process in processes)
        assert pool.map_instances(square, [4.0], workers=WORKERS) == [16.0]
    assert pool.get_executor(WORKERS) is executor


def test_by_reference_sends_a_function_whose_name_was_rebound() -> None:
    """Issue 8 item 12: pickle finds functions by name, which a rebinding decorator breaks."""
    assert triple == "not the function any more"
    with pytest.raises(pickle.PicklingError):
        pickle.dumps(triple_by_reference.__wrapped__)
    assert pickle.loads(pickle.dumps(triple_by_reference))(2.0) == 6.0
    assert triple_by_reference.__name__ == "triple"
    with deadline(60):
        assert pool.map_instances(triple_by_reference, [1.0, 2.0, 3.0], workers=WORKERS) == [3.0, 6.0, 9.0]


def test_by_reference_leaves_what_no_worker_can_find_to_the_picklability_check() -> None:
    def local(x: float) -> float:
        return x

    for fn in (local, lambda x: x):
        assert pool.by_reference(fn) is fn
        with pytest.raises(ValueError, match=r"^mine: with workers=2 fn must be picklable"):
            pool.check_picklable("mine", pool.by_reference(fn), 2)


def test_the_pool_imports_nothing_above_it() -> None:
    """Issue 9 item 5: the pool sits below solvers, so solvers/ilp.py can use it without a cycle."""
    import ast

    def relative_imports(path: str) -> set[str]:
        tree = ast.parse(Path(path).read_text())
        found = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                # "from . import executors" has no module; its names are the modules.
                found |= {node.module} if node.module else {alias.name for alias in node.names}
        return found

    assert relative_imports(pool.__file__) == {"_checks", "errors", "executors"}
    assert relative_imports(pool.executors.__file__) == set()  # issue 11: below the pool
    assert importlib.util.find_spec("combgrad.adapters.pool") is None  # moved, not copied

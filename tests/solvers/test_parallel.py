"""Tests for combgrad/solvers/parallel.py: the batching pattern and the thread policy."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time

import numba
import numpy as np
import pytest
import torch

import combgrad as cg
from combgrad.solvers import assignment, knapsack, parallel, shortest_path, spanning_tree


@pytest.fixture(autouse=True)
def default_threads(monkeypatch):
    monkeypatch.delenv(parallel.ENVIRONMENT_VARIABLE, raising=False)
    cg.solvers.set_num_threads(None)
    yield
    cg.solvers.set_num_threads(None)


def test_set_and_get_num_threads():
    cg.solvers.set_num_threads(1)
    assert cg.solvers.get_num_threads() == 1
    cg.solvers.set_num_threads(None)
    assert cg.solvers.get_num_threads() == min(parallel.usable_cores(), numba.config.NUMBA_NUM_THREADS)


def test_more_threads_than_cores_are_capped():
    # Guards "never oversubscribe cores" (issue 8 item 11).
    cg.solvers.set_num_threads(10_000)
    assert cg.solvers.get_num_threads() == min(parallel.usable_cores(), numba.config.NUMBA_NUM_THREADS)
    assert cg.solvers.get_num_threads() <= (os.cpu_count() or 1)


@pytest.mark.parametrize("threads", [0, -1, 1.5, True, "2"])
def test_bad_thread_counts_are_refused(threads):
    with pytest.raises(ValueError, match=r"set_num_threads: threads must be an integer >= 1, got"):
        cg.solvers.set_num_threads(threads)


def test_environment_variable_sets_the_default(monkeypatch):
    monkeypatch.setenv("COMBGRAD_NUM_THREADS", "1")
    assert cg.solvers.get_num_threads() == 1
    cg.solvers.set_num_threads(2)  # an explicit call wins over the environment
    assert cg.solvers.get_num_threads() == min(2, parallel.usable_cores(), numba.config.NUMBA_NUM_THREADS)


@pytest.mark.parametrize("value", ["abc", "0", "-3", "1.5"])
def test_bad_environment_variable_is_named(monkeypatch, value):
    monkeypatch.setenv("COMBGRAD_NUM_THREADS", value)
    with pytest.raises(ValueError, match=rf"COMBGRAD_NUM_THREADS must be an integer >= 1, got '{value}'"):
        cg.solvers.get_num_threads()


def test_small_work_runs_serially(monkeypatch):
    monkeypatch.setattr(parallel, "_running_tasks", lambda: 1)  # an idle machine
    assert parallel.threads_for(parallel.SERIAL_WORK_SECONDS / 2) == 1
    assert parallel.threads_for(1.0) == cg.solvers.get_num_threads()


def test_busy_cores_are_left_alone(monkeypatch):
    # Guards issue 8 item 11: with every core busy with other work, a parallel
    # call waited for descheduled threads (41-181x slower than one thread).
    cores = os.cpu_count() or 1
    monkeypatch.setattr(parallel, "_own_running_threads", lambda: 1)  # only the calling thread
    monkeypatch.setattr(parallel, "_running_tasks", lambda: 1 + cores)  # one busy task per core
    assert parallel.threads_for(1.0) == 1
    monkeypatch.setattr(parallel, "_running_tasks", lambda: 1 + cores - 1)  # one core free
    assert parallel.threads_for(1.0) == 1
    monkeypatch.setattr(parallel, "_running_tasks", lambda: None)  # no /proc/loadavg
    assert parallel.threads_for(1.0) == cg.solvers.get_num_threads()


def test_this_process_own_spinning_threads_do_not_count_as_busy(monkeypatch):
    # torch's OpenMP pool (which numba's omp layer shares) spins for milliseconds
    # after every parallel region; those threads are this process's, not competitors.
    cores = os.cpu_count() or 1
    monkeypatch.setattr(parallel, "_running_tasks", lambda: 1 + cores)
    monkeypatch.setattr(parallel, "_own_running_threads", lambda: 1 + cores)
    assert parallel.threads_for(1.0) == cg.solvers.get_num_threads()
    monkeypatch.setattr(parallel, "_own_running_threads", lambda: None)  # unknown: count them
    assert parallel.threads_for(1.0) == 1


@pytest.mark.skipif(not os.path.exists("/proc/loadavg"), reason="Linux only")
def test_running_tasks_counts_at_least_this_thread():
    assert parallel._running_tasks() >= 1
    assert 1 <= parallel._own_running_threads() <= len(os.listdir("/proc/self/task"))


def test_usable_cores_is_within_the_machine():
    assert 1 <= parallel.usable_cores() <= (os.cpu_count() or 1)


class Kernels:
    """Python stand-ins for a module's kernel pair, recording how they are called."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls: list[tuple[str, int]] = []
        self.active = 0
        self.most_active = 0
        self.delay = delay
        self.lock = threading.Lock()

    def _enter(self):
        with self.lock:
            self.active += 1
            self.most_active = max(self.most_active, self.active)
        time.sleep(self.delay)
        with self.lock:
            self.active -= 1

    def solve_range(self, data, out, start, stop):
        self.calls.append(("range", stop - start))
        self._enter()
        out[start:stop] = data[start:stop] * 2

    def solve_chunks(self, data, out, chunks):
        self.calls.append(("chunks", chunks))
        self._enter()
        out[:] = data * 2


def test_run_batch_calls_the_serial_kernel_for_small_work():
    kernels = Kernels()
    data = np.arange(5.0)
    out = parallel.run_batch(kernels.solve_range, kernels.solve_chunks, (data,), np.zeros(5), 1e-9)
    assert kernels.calls == [("range", 5)]
    assert out.tolist() == [0.0, 2.0, 4.0, 6.0, 8.0]


def test_run_batch_uses_one_chunk_per_thread_and_restores_numba_threads(monkeypatch):
    monkeypatch.setattr(parallel, "threads_for", lambda work: 2)
    before = numba.get_num_threads()
    kernels = Kernels()
    parallel.run_batch(kernels.solve_range, kernels.solve_chunks, (np.ones(8),), np.zeros(8), 1.0)
    assert kernels.calls == [("chunks", 2)]
    assert numba.get_num_threads() == before
    # Never more threads than instances.
    kernels = Kernels()
    parallel.run_batch(kernels.solve_range, kernels.solve_chunks, (np.ones(1),), np.zeros(1), 1.0)
    assert kernels.calls == [("range", 1)]


def test_workqueue_layer_serialises_parallel_launches(monkeypatch):
    # Guards issue 8 "Smaller defects": the workqueue layer aborts the process on
    # concurrent launches. Here the lock logic alone, with stand-in kernels.
    monkeypatch.setattr(parallel, "_layer", "workqueue")
    monkeypatch.setattr(parallel, "threads_for", lambda work: 2)
    kernels = Kernels(delay=0.02)

    def call():
        for _ in range(3):
            parallel.run_batch(kernels.solve_range, kernels.solve_chunks, (np.ones(4),), np.zeros(4), 1.0)

    workers = [threading.Thread(target=call) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len(kernels.calls) == 9
    assert kernels.most_active == 1


def test_other_layers_launch_concurrently(monkeypatch):
    monkeypatch.setattr(parallel, "_layer", "omp")
    monkeypatch.setattr(parallel, "threads_for", lambda work: 2)
    kernels = Kernels(delay=0.05)
    workers = [
        threading.Thread(
            target=parallel.run_batch,
            args=(kernels.solve_range, kernels.solve_chunks, (np.ones(4),), np.zeros(4), 1.0),
        )
        for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert kernels.most_active == 2


def test_threading_layer_is_known():
    assert parallel.threading_layer() in ("omp", "tbb", "workqueue")


WORKQUEUE_SCRIPT = textwrap.dedent(
    """
    import threading, numba, torch
    import combgrad as cg
    from combgrad.solvers import parallel
    parallel.threads_for = lambda work: 2  # force the parallel path on any machine
    solvers = [
        (cg.solvers.get("shortest_path"), torch.rand(64, 12, 12, dtype=torch.float64) + 0.1),
        (cg.solvers.get("assignment"), torch.rand(64, 6, 6, dtype=torch.float64)),
    ]
    expected = [solver(theta) for solver, theta in solvers]
    failures = []
    def work():
        for _ in range(100):
            for (solver, theta), y in zip(solvers, expected):
                if not torch.equal(solver(theta), y):
                    failures.append(1)
    workers = [threading.Thread(target=work) for _ in range(2)]
    for worker in workers: worker.start()
    for worker in workers: worker.join()
    print(numba.threading_layer(), len(failures))
    """
)


def test_two_threads_on_the_workqueue_layer_do_not_abort():
    # Guards issue 8 "Smaller defects": without the lock this process dies with
    # SIGABRT ("Concurrent access has been detected"), returncode -6.
    environment = dict(os.environ, NUMBA_THREADING_LAYER="workqueue", NUMBA_NUM_THREADS="2")
    result = subprocess.run(
        [sys.executable, "-c", WORKQUEUE_SCRIPT], env=environment, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["workqueue", "0"]


def _instances():
    """(solver, theta) for every built-in numba solver, at sizes that exercise the kernels."""
    generator = torch.Generator().manual_seed(0)
    weights = np.random.default_rng(0).integers(1, 20, size=15)
    return [
        (cg.solvers.get("shortest_path"), torch.rand(13, 9, 11, generator=generator, dtype=torch.float64)),
        (cg.solvers.get("shortest_path", neighbourhood=4), torch.rand(13, 5, 7, generator=generator)),
        (cg.solvers.get("spanning_tree"), torch.rand(13, 8, 8, generator=generator, dtype=torch.float64)),
        (cg.solvers.get("spanning_tree", sense="max"), torch.rand(13, 8, 8, generator=generator)),
        (cg.solvers.get("assignment"), torch.rand(13, 6, 6, generator=generator, dtype=torch.float64)),
        (cg.solvers.get("assignment"), torch.rand(13, 7, 4, generator=generator, dtype=torch.float64)),
        (cg.solvers.get("knapsack", weights=weights, capacity=int(weights.sum() // 2)),
         torch.randn(13, 15, generator=generator, dtype=torch.float64)),
    ]


@pytest.mark.parametrize("case", range(7))
def test_parallel_path_equals_serial_path(monkeypatch, case):
    solver, theta = _instances()[case]
    monkeypatch.setattr(parallel, "threads_for", lambda work: 1)
    serial = solver(theta)
    monkeypatch.setattr(parallel, "threads_for", lambda work: numba.config.NUMBA_NUM_THREADS)
    assert torch.equal(solver(theta), serial)
    # The serial kernel of a single instance gives the same rows.
    assert all(torch.equal(solver(theta[index]), serial[index]) for index in range(0, 13, 4))


@pytest.mark.parametrize("chunks", [1, 2, 3, 5, 13])
def test_chunks_cover_the_batch_exactly(chunks):
    # Every module's _solve_chunks must solve each instance once, whatever the
    # number of chunks (here more chunks than threads, too).
    costs = np.random.default_rng(chunks).uniform(0, 1, size=(13, 6, 6))
    arguments = (costs, True, np.array([0, 0]), np.array([5, 5]), shortest_path._STEPS[8])
    serial = np.zeros((13, 6, 6), np.uint8)
    shortest_path._solve_range(*arguments, serial, 0, 13)
    chunked = np.zeros((13, 6, 6), np.uint8)
    shortest_path._solve_chunks(*arguments, chunked, chunks)
    assert np.array_equal(chunked, serial) and serial.sum(axis=(1, 2)).min() >= 6
    for start, stop in [parallel.chunk_range(chunk, 13, chunks) for chunk in range(chunks)]:
        assert 0 <= start <= stop <= 13
    assert sum(stop - start for start, stop in (parallel.chunk_range(c, 13, chunks) for c in range(chunks))) == 13


def test_every_numba_solver_uses_the_shared_pattern():
    # One batching pattern (issue 9 item 6): each module has the kernel pair.
    for module in (shortest_path, spanning_tree, assignment, knapsack):
        assert hasattr(module, "_solve_range") and hasattr(module, "_solve_chunks"), module.__name__
        assert module._solve_chunks.targetoptions.get("parallel"), module.__name__
        assert not module._solve_range.targetoptions.get("parallel"), module.__name__


def test_a_large_call_on_a_busy_machine_never_launches_threads(monkeypatch):
    # Guards issue 8 item 11 end to end: the solver reaches the serial kernel.
    def no_threads(*args):
        raise AssertionError("parallel kernel launched on a busy machine")

    monkeypatch.setattr(shortest_path, "_solve_chunks", no_threads)
    monkeypatch.setattr(parallel, "_running_tasks", lambda: 1 + (os.cpu_count() or 1))
    monkeypatch.setattr(parallel, "_own_running_threads", lambda: 1)
    costs = torch.rand(256, 30, 30, generator=torch.Generator().manual_seed(0)) + 0.1
    assert parallel.threads_for(256 * shortest_path.SECONDS_PER_RELAXATION * 30 * 30 * 8) == 1
    paths = cg.solvers.get("shortest_path")(costs)
    assert paths.shape == costs.shape and bool((paths[:, 0, 0] == 1).all())

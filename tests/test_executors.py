"""Tests for combgrad/executors.py and the executor= path of combgrad/pool.py (issue 11).

Solver calls on a caller's executor: ThreadPoolExecutor, ProcessPoolExecutor and
a Dask cluster. The Dask cluster is a ``LocalCluster`` of 2 worker processes on
loopback (``host="127.0.0.1"``, no dashboard), started once for the module since
starting one takes seconds; nothing binds to or contacts any other address.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import combgrad as cg
from combgrad import SolverError, executors, pool

distributed = pytest.importorskip("distributed")
cloudpickle = pytest.importorskip("cloudpickle")

# The workers cannot import the tests package: this module's functions travel by
# value (cloudpickle), as a user's script's functions would.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

_ROOT = str(Path(__file__).resolve().parents[1])


# Functions run on the executors.


def cheapest(costs: np.ndarray) -> np.ndarray:
    y = np.zeros_like(costs)
    y[np.argmin(costs)] = 1.0
    return y


def cheapest_batch(costs: np.ndarray) -> np.ndarray:
    return np.stack([cheapest(row) for row in costs])


def fail_at_first_value(bad: float, costs: np.ndarray) -> np.ndarray:
    if costs[0] == bad:
        raise ValueError(f"bad instance {bad:g}")
    return cheapest(costs)


def kill_worker_once(marker: str, costs: np.ndarray) -> np.ndarray:
    """Kill this worker process the first time any instance is solved."""
    if not os.path.exists(marker):
        Path(marker).touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return cheapest(costs)


def kill_worker_always(costs: np.ndarray) -> np.ndarray:
    os.kill(os.getpid(), signal.SIGKILL)
    return costs


def hang_at_first(costs: np.ndarray) -> np.ndarray:
    if costs[0] == 0:
        time.sleep(120)
    return cheapest(costs)


def nap(x: float) -> float:
    time.sleep(0.2)
    return x


def random_ilp(seed: int, n: int = 8, m: int = 3) -> tuple[dict[str, Any], np.ndarray]:
    rng = np.random.default_rng(seed)
    A = rng.integers(1, 6, size=(m, n))
    b = A.sum(axis=1) // 2
    theta = rng.normal(size=(12, n))
    return {"A": A, "b": b, "sense": "max"}, theta


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    import dask

    # One retry for a task whose worker died (Dask's default is 3): the
    # always-killing test then fails after two worker restarts, not four.
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        cluster = distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        )
        with distributed.Client(cluster) as dask_client:
            yield dask_client
        cluster.close()


# Light checks: no cluster needed.


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=_ROOT
    )


def test_import_combgrad_never_imports_dask() -> None:
    result = _run(
        """
        import sys
        import combgrad
        from combgrad import pool, executors
        combgrad.adapters.from_function(lambda x: x, sense="min", event_ndim=1)
        print(sorted(name for name in sys.modules if name.split(".")[0] in ("dask", "distributed")))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_a_client_like_object_without_dask_names_the_extra() -> None:
    result = _run(
        """
        import sys
        sys.modules["distributed"] = None  # as if dask were not installed
        sys.modules["dask"] = None
        import combgrad

        class Client:
            def submit(self, fn, *args):
                raise AssertionError("never called")

        try:
            combgrad.solvers.get("ilp", A=[[1]], b=[1], executor=Client())
        except TypeError as error:
            print(error)
        """
    )
    assert result.returncode == 0, result.stderr
    assert "looks like a Dask client" in result.stdout
    assert 'pip install "combgrad[distributed]"' in result.stdout


@pytest.mark.parametrize("executor", [4, "tcp://127.0.0.1:8786", object()])
def test_anything_else_is_refused(executor: Any) -> None:
    with pytest.raises(TypeError, match="executor must be a concurrent.futures.Executor or a dask"):
        cg.adapters.from_function(cheapest, sense="min", event_ndim=1, executor=executor)
    with pytest.raises(TypeError, match="ilp: executor must be"):
        cg.solvers.get("ilp", A=[[1]], b=[1], executor=executor)


def test_workers_and_executor_together_are_refused() -> None:
    with ThreadPoolExecutor(2) as threads:
        with pytest.raises(ValueError, match=r"give workers=2 \(the local process pool\) or executor="):
            cg.adapters.from_function(cheapest, sense="min", event_ndim=1, workers=2, executor=threads)
        with pytest.raises(ValueError, match="ilp: give workers=2"):
            cg.solvers.get("ilp", A=[[1]], b=[1], workers=2, executor=threads)
        with pytest.raises(ValueError, match="pool: give workers=1"):
            pool.map_instances(abs, [1.0], workers=1, executor=threads)


@pytest.mark.parametrize("batched", [False, True])
def test_thread_pool_matches_serial_and_takes_lambdas(batched: bool) -> None:
    theta = torch.randn(5, 7, 4, generator=torch.Generator().manual_seed(0))
    fn = cheapest_batch if batched else (lambda costs: cheapest(costs))  # noqa: PLW0108
    serial = cg.adapters.from_function(fn, sense="min", event_ndim=1, batched=batched)
    with ThreadPoolExecutor(2) as threads:
        threaded = cg.adapters.from_function(fn, sense="min", event_ndim=1, batched=batched, executor=threads)
        assert torch.equal(threaded(theta), serial(theta))


def test_process_pool_matches_serial_and_refuses_lambdas_saying_what_to_do() -> None:
    theta = torch.randn(3, 9, 5, generator=torch.Generator().manual_seed(1))
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(2, mp_context=context) as processes:
        with pytest.raises(ValueError, match="fn must be picklable by pickle; make it a module-level"):
            cg.adapters.from_function(lambda c: c, sense="min", event_ndim=1, executor=processes)
        solver = cg.adapters.from_function(cheapest, sense="min", event_ndim=1, executor=processes)
        serial = cg.adapters.from_function(cheapest, sense="min", event_ndim=1)
        assert torch.equal(solver(theta), serial(theta))
        with pytest.raises(SolverError, match=r"instance 13 raised ValueError: bad instance 13"):
            values = torch.arange(20.0).reshape(20, 1).expand(20, 3).reshape(4, 5, 3)
            failing = functools.partial(fail_at_first_value, 13.0)
            cg.adapters.from_function(failing, sense="min", event_ndim=1, executor=processes)(values)


def test_thread_pool_timeout_names_the_unfinished_instances() -> None:
    with ThreadPoolExecutor(1) as threads:
        began = time.monotonic()
        with pytest.raises(SolverError, match=r"timeout=0\.3 s exceeded with instances \d+\.\.9 unfinished"):
            pool.map_instances(nap, list(range(10)), executor=threads, timeout=0.3, owner="sleepy")
        assert time.monotonic() - began < 1.5  # not the 2 s of all ten instances


def test_chunks_keep_overhead_under_a_tenth_of_the_solving_time() -> None:
    target = executors.Target(executor=None, kind="dask", slots=2)
    overhead = executors.TASK_OVERHEAD_SECONDS["dask"]
    # Nothing measured yet: the pool's rule, 4 chunks per slot.
    assert len(pool._executor_bounds("fresh", target, 100, 4)) == 8
    # 1 ms instances against ~3 ms per task: a chunk must hold >= 30 of them.
    pool._seconds_per_instance[("measured", "dask")] = 1e-3
    bounds = pool._executor_bounds("measured", target, 100, 4)
    assert len(bounds) == int(100 * 1e-3 * pool.OVERHEAD_FRACTION / overhead)
    assert len(bounds) * overhead <= pool.OVERHEAD_FRACTION * 100 * 1e-3
    assert bounds[0][0] == 0 and bounds[-1][1] == 100
    # Second-long instances: overhead is negligible, the balancing rule wins.
    pool._seconds_per_instance[("slow", "dask")] = 1.0
    assert len(pool._executor_bounds("slow", target, 100, 4)) == 8


def test_a_measured_microsecond_function_goes_in_one_chunk() -> None:
    with ThreadPoolExecutor(2) as threads:
        first = pool.map_chunks(np.cumsum, np.ones(40), executor=threads, owner="tiny")
        second = pool.map_chunks(np.cumsum, np.ones(40), executor=threads, owner="tiny")
    assert len(first) == 8  # 2 threads x 4 chunks, nothing measured yet
    assert [(start, stop) for start, stop, _ in second] == [(0, 40)]


# On the Dask cluster.


@pytest.mark.parametrize("seed", range(4))
def test_dask_ilp_matches_serial_on_random_problems(client: Any, seed: int) -> None:
    options, theta = random_ilp(seed)
    serial = cg.solvers.get("ilp", **options)
    on_cluster = cg.solvers.get("ilp", **options, executor=client)
    assert torch.equal(on_cluster(torch.from_numpy(theta)), serial(torch.from_numpy(theta)))


@pytest.mark.parametrize("batched", [False, True])
def test_dask_from_function_matches_serial_and_sends_lambdas_by_value(client: Any, batched: bool) -> None:
    theta = torch.randn(6, 5, 4, generator=torch.Generator().manual_seed(2))
    offset = 0.0  # a closure: only by-value pickling can send it
    fn = cheapest_batch if batched else (lambda costs: cheapest(costs + offset))
    solver = cg.adapters.from_function(fn, sense="min", event_ndim=1, batched=batched, executor=client)
    serial = cg.adapters.from_function(fn, sense="min", event_ndim=1, batched=batched)
    assert torch.equal(solver(theta), serial(theta))


def test_dask_chunks_come_back_in_order(client: Any) -> None:
    values = np.arange(37.0)
    chunks = pool.map_chunks(np.cumsum, values, executor=client, owner="order")
    assert [start for start, _, _ in chunks] == sorted(start for start, _, _ in chunks)
    assert chunks[0][0] == 0 and chunks[-1][1] == 37
    assert all(stop == next_start for (_, stop, _), (next_start, _, _) in zip(chunks, chunks[1:]))
    for start, stop, output in chunks:
        np.testing.assert_array_equal(output, np.cumsum(values[start:stop]))
    assert pool.map_instances(float, list(range(23)), executor=client) == [float(i) for i in range(23)]


def test_dask_exception_in_instance_13_of_a_4_5_6_batch_is_named(client: Any) -> None:
    # theta [4, 5, 6]: 20 instances of 6 values; instance i starts with the value i.
    theta = torch.arange(20.0).reshape(20, 1).expand(20, 6).reshape(4, 5, 6)
    solver = cg.adapters.from_function(
        functools.partial(fail_at_first_value, 13.0), sense="min", event_ndim=1, executor=client
    )
    with pytest.raises(SolverError, match=r"instance 13 raised ValueError: bad instance 13") as caught:
        solver(theta)
    assert isinstance(caught.value.__cause__, ValueError)  # the original travels back


@pytest.mark.slow
def test_dask_timeout_names_the_unfinished_instances_and_frees_the_worker(client: Any) -> None:
    theta = torch.arange(8.0).reshape(8, 1).expand(8, 3)
    solver = cg.adapters.from_function(hang_at_first, sense="min", event_ndim=1, executor=client, timeout=2)
    began = time.monotonic()
    with pytest.raises(SolverError, match=r"timeout=2\.0 s exceeded with instance.* 0.* unfinished; .*restarted"):
        solver(theta)
    assert time.monotonic() - began < 60  # the hung task would sleep 120 s
    # The worker that held the hung task was restarted: both slots work again.
    assert pool.map_instances(float, list(range(8)), executor=client) == [float(i) for i in range(8)]


@pytest.mark.slow
def test_dask_worker_killed_mid_call_is_rescheduled_and_the_result_is_right(
    client: Any, tmp_path: Path
) -> None:
    theta = torch.randn(10, 4, generator=torch.Generator().manual_seed(3))
    marker = str(tmp_path / "killed-once")
    solver = cg.adapters.from_function(
        functools.partial(kill_worker_once, marker), sense="min", event_ndim=1, executor=client
    )
    assert torch.equal(solver(theta), cg.adapters.from_function(cheapest, sense="min", event_ndim=1)(theta))
    assert os.path.exists(marker)  # a worker really died


@pytest.mark.slow
def test_dask_task_that_keeps_killing_workers_is_a_solver_error_not_a_hang(client: Any) -> None:
    solver = cg.adapters.from_function(kill_worker_always, sense="min", event_ndim=1, executor=client, timeout=120)
    with pytest.raises(SolverError, match=r"a worker of the dask executor died abruptly .* unfinished instance"):
        solver(torch.zeros(3, 2))
    client.wait_for_workers(2, timeout=60)
    assert pool.map_instances(float, [1, 2], executor=client) == [1.0, 2.0]


@pytest.mark.slow
def test_differentiable_layer_trains_with_its_solver_on_the_cluster(client: Any) -> None:
    options, _ = random_ilp(7, n=6, m=2)

    def train(executor: Any) -> torch.Tensor:
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 6)
        layer = cg.differentiable(solver="ilp", estimator="imle", executor=executor, **options)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        features = torch.randn(16, 3)
        target = torch.zeros(16, 6)
        target[:, :2] = 1.0
        for _ in range(3):
            optimizer.zero_grad()
            loss = ((layer(model(features)) - target) ** 2).sum()
            loss.backward()
            optimizer.step()
        return torch.cat([parameter.detach().flatten() for parameter in model.parameters()])

    initial = torch.cat([p.detach().flatten() for p in (torch.manual_seed(0), torch.nn.Linear(3, 6))[1].parameters()])
    on_cluster = train(client)
    assert not torch.equal(on_cluster, initial)  # the solver's gradients moved the model
    assert torch.equal(on_cluster, train(None))  # and exactly as solving in this process does


def hold_lock(lock: Any, costs: np.ndarray) -> np.ndarray:
    return cheapest(costs)


def test_dask_refuses_a_function_cloudpickle_cannot_send_saying_what_to_do(client: Any) -> None:
    import threading

    with pytest.raises(ValueError, match=r"picklable by cloudpickle .*make it a module-level function"):
        cg.adapters.from_function(
            functools.partial(hold_lock, threading.Lock()), sense="min", event_ndim=1, executor=client
        )


@pytest.mark.slow
def test_dask_ctrl_c_cancels_the_call_frees_the_worker_and_the_next_call_runs(client: Any) -> None:
    import threading

    theta = torch.arange(4.0).reshape(4, 1).expand(4, 3)
    solver = cg.adapters.from_function(hang_at_first, sense="min", event_ndim=1, executor=client)
    pids = set(client.run(os.getpid).values())
    # SIGINT to this process only, as a Ctrl-C reaches the waiting caller.
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            solver(theta)
    finally:
        timer.cancel()
    began = time.monotonic()
    assert pool.map_instances(float, list(range(6)), executor=client) == [float(i) for i in range(6)]
    assert time.monotonic() - began < 60  # not behind the abandoned 120 s task
    client.wait_for_workers(2, timeout=60)
    assert set(client.run(os.getpid).values()) != pids  # the worker holding it was restarted


def test_a_dead_process_of_a_users_process_pool_is_a_solver_error_not_a_hang() -> None:
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(1, mp_context=context) as processes:
        solver = cg.adapters.from_function(kill_worker_always, sense="min", event_ndim=1, executor=processes)
        with pytest.raises(SolverError, match=r"a worker of the processes executor died abruptly .* instances 0\.\.2"):
            solver(torch.zeros(3, 2))

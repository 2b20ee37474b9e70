"""Tests for combgrad/adapters/from_function.py.

Pooled tests use workers=2 so that they share the pool of test_pool.py's run.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from functools import partial

import numpy as np
import pytest
import torch

import combgrad as cg
from combgrad import SolverError
from combgrad.adapters import from_function
from combgrad.solvers import BatchSolver, Solver
from tests.adapters.pool_helpers import WORKERS, deadline

# Module-level functions: the workers import this module to unpickle them.


def row_argmin(costs: np.ndarray) -> np.ndarray:
    """One instance [H, W]: a one-hot of each row's smallest cost."""
    y = np.zeros_like(costs)
    y[np.arange(costs.shape[0]), np.argmin(costs, axis=-1)] = 1.0
    return y


def row_argmin_batched(costs: np.ndarray) -> np.ndarray:
    """A batch [B, H, W]."""
    return np.stack([row_argmin(instance) for instance in costs])


def reference(theta: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.one_hot(theta.argmin(-1), theta.shape[-1]).to(theta.dtype)


def fail_on_negative_first(costs: np.ndarray) -> np.ndarray:
    if costs.reshape(-1)[0] < 0:
        raise ValueError("negative first cost")
    return np.zeros_like(costs)


def fail_on_negative_first_batched(costs: np.ndarray) -> np.ndarray:
    return np.stack([fail_on_negative_first(instance) for instance in costs])


def wrong_shape_on_negative_first(costs: np.ndarray) -> np.ndarray:
    return costs[:-1] if costs[0] < 0 else costs


def batched_drops_one(costs: np.ndarray) -> np.ndarray:
    return costs[1:]


def not_numeric(costs: np.ndarray) -> object:
    return {"not": "an array"}


def as_list(costs: np.ndarray) -> list[float]:
    return (costs > 0).astype(float).tolist()


def overwrite_input(costs: np.ndarray) -> np.ndarray:
    costs[...] = -1.0
    return np.ones_like(costs)


def die_on_negative_first(costs: np.ndarray) -> np.ndarray:
    if costs[0] < 0 and multiprocessing.parent_process() is not None:
        os.kill(os.getpid(), signal.SIGKILL)
    return costs


def bad_value_at(bad: object, index: int, costs: np.ndarray) -> np.ndarray:
    """Returns ``bad`` in the output of the instance whose first cost is ``index``."""
    if costs[0] != index:
        return np.zeros_like(costs)
    y = np.zeros(costs.shape, dtype=np.result_type(costs, np.asarray(bad)))
    y[-1] = bad
    return y


def batched_nan(costs: np.ndarray) -> np.ndarray:
    y = np.zeros_like(costs)
    y[0, 0, 0] = np.nan
    return y


def hang_on_negative_first(costs: np.ndarray) -> np.ndarray:
    if costs[0] < 0:
        time.sleep(3600)  # never returns, as far as the test can tell
    return np.zeros_like(costs)


def counting(costs: np.ndarray) -> np.ndarray:
    raise AssertionError("must not be called on an empty batch")


@pytest.mark.parametrize("workers", [0, WORKERS])
@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize("batch_shape", [(1,), (3,), (2, 5)])
def test_matches_reference_on_random_batches(workers: int, batched: bool, batch_shape: tuple[int, ...]) -> None:
    fn = row_argmin_batched if batched else row_argmin
    solver = from_function(fn, sense="min", event_ndim=2, batched=batched, workers=workers)
    theta = torch.randn(*batch_shape, 4, 6, generator=torch.Generator().manual_seed(len(batch_shape)))
    with deadline(60):
        y = solver(theta)
    assert y.shape == theta.shape and y.dtype == theta.dtype
    torch.testing.assert_close(y, reference(theta), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_output_has_thetas_dtype(dtype: torch.dtype) -> None:
    solver = from_function(as_list, sense="max", event_ndim=1)
    theta = torch.tensor([[1.0, -2.0, 3.0], [-1.0, 0.5, 0.0]], dtype=dtype)
    y = solver(theta)
    assert y.dtype == dtype
    torch.testing.assert_close(y, (theta > 0).to(dtype), rtol=0, atol=0)


def test_solver_contract_and_registry() -> None:
    solver = from_function(row_argmin, sense="min", event_ndim=2)
    assert isinstance(solver, BatchSolver) and isinstance(solver, Solver)
    assert (solver.name, solver.sense, solver.event_ndim) == ("row_argmin", "min", 2)
    cg.solvers.register("test_row_argmin", lambda: from_function(row_argmin, sense="min", event_ndim=2, name="test_row_argmin"))
    try:
        built = cg.solvers.get("test_row_argmin")
        theta = torch.randn(3, 2, 5)
        assert built.name == "test_row_argmin"
        assert torch.equal(built(theta), reference(theta))
    finally:
        cg.solvers.unregister("test_row_argmin")


@pytest.mark.parametrize("workers", [0, WORKERS])
def test_exception_names_the_flattened_instance_index(workers: int) -> None:
    solver = from_function(fail_on_negative_first, sense="min", event_ndim=1, workers=workers)
    theta = torch.ones(2, 4, 3)
    theta[1, 2, 0] = -1.0  # flattened index 1 * 4 + 2 = 6
    with deadline(60), pytest.raises(SolverError, match=r"^fail_on_negative_first: instance 6 raised ValueError: negative first cost$") as info:
        solver(theta)
    assert isinstance(info.value.__cause__, ValueError)


@pytest.mark.parametrize("workers", [0, WORKERS])
def test_batched_exception_names_the_chunks_instances(workers: int) -> None:
    solver = from_function(fail_on_negative_first_batched, sense="min", event_ndim=1, batched=True, workers=workers)
    theta = torch.ones(16, 3)
    theta[0, 0] = -1.0
    expected = "instances 0..15" if workers == 0 else "instances 0..1"
    with deadline(60), pytest.raises(SolverError, match=rf"{expected} raised ValueError: negative first cost"):
        solver(theta)


@pytest.mark.parametrize("workers", [0, WORKERS])
def test_wrong_output_shape_names_the_instance(workers: int) -> None:
    solver = from_function(wrong_shape_on_negative_first, sense="min", event_ndim=1, workers=workers)
    theta = torch.ones(5, 4)
    theta[3, 0] = -1.0
    with deadline(60), pytest.raises(SolverError, match=r"output for instance 3 must have shape \(4,\).*got shape \(3,\)"):
        solver(theta)


def test_batched_wrong_output_shape_names_the_instances() -> None:
    solver = from_function(batched_drops_one, sense="min", event_ndim=1, batched=True)
    with pytest.raises(SolverError, match=r"output for instances 0\.\.4 must have shape \(5, 2\).*got shape \(4, 2\)"):
        solver(torch.ones(5, 2))


def test_non_numeric_output_names_the_instance() -> None:
    solver = from_function(not_numeric, sense="min", event_ndim=1)
    with pytest.raises(SolverError, match=r"output for instance 0 must be a real numeric array of shape \(3,\), got dtype object \(not numeric\)"):
        solver(torch.ones(2, 3))


@pytest.mark.parametrize("batched", [False, True])
def test_input_is_never_modified(batched: bool) -> None:
    fn = overwrite_input
    solver = from_function(fn, sense="min", event_ndim=1, batched=batched)
    theta = torch.arange(6.0, dtype=torch.float64).reshape(2, 3)
    before = theta.clone()
    y = solver(theta)
    assert torch.equal(theta, before)
    assert torch.equal(y, torch.ones(2, 3, dtype=torch.float64))


def test_killed_worker_raises_instead_of_hanging() -> None:
    solver = from_function(die_on_negative_first, sense="min", event_ndim=1, workers=WORKERS)
    theta = torch.ones(12, 3)
    theta[5, 0] = -1.0
    with deadline(60), pytest.raises(SolverError, match=r"worker process died abruptly"):
        solver(theta)
    with deadline(60):
        assert torch.equal(solver(torch.ones(4, 3)), torch.ones(4, 3))


def test_empty_batch_does_not_call_fn() -> None:
    solver = from_function(counting, sense="min", event_ndim=1, workers=WORKERS)
    y = solver(torch.zeros(0, 4))
    assert y.shape == (0, 4)


def test_unpicklable_fn_with_workers_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match=r"with workers=2 fn must be picklable \(a module-level function"):
        from_function(lambda costs: costs, sense="min", event_ndim=1, workers=WORKERS)
    # Without workers a lambda is fine.
    solver = from_function(lambda costs: -costs, sense="min", event_ndim=1)
    assert torch.equal(solver(torch.ones(2, 2)), -torch.ones(2, 2))
    assert solver.name == "<lambda>"


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"sense": "maximize", "event_ndim": 1}, ValueError, r"sense must be 'min' or 'max', got 'maximize'"),
        ({"sense": "min", "event_ndim": 0}, ValueError, r"event_ndim must be an integer >= 1, got 0"),
        ({"sense": "min", "event_ndim": 1.0}, ValueError, r"event_ndim must be an integer >= 1, got 1.0"),
        ({"sense": "min", "event_ndim": 1, "workers": -1}, ValueError, r"workers must be an integer >= 0, got -1"),
        ({"sense": "min", "event_ndim": 1, "batched": "yes"}, ValueError, r"batched must be True or False, got 'yes'"),
        ({"sense": "min", "event_ndim": 1, "name": ""}, ValueError, r"name must be a non-empty string, got ''"),
    ],
)
def test_bad_options_are_refused(options: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        from_function(row_argmin, **options)


def test_non_callable_fn_is_refused() -> None:
    with pytest.raises(TypeError, match=r"fn must be callable, got str"):
        from_function("row_argmin", sense="min", event_ndim=1)


@pytest.mark.parametrize(
    ("theta", "error", "match"),
    [
        (torch.tensor([[1.0, float("nan")]]), ValueError, r"theta must be finite"),
        (torch.tensor([1.0, 2.0]), ValueError, r"theta must have at least 2 dims"),
        (torch.tensor([[1, 2]]), ValueError, r"theta must be a floating tensor"),
        (np.ones((2, 2)), TypeError, r"theta must be a torch.Tensor, got ndarray"),
    ],
)
def test_bad_theta_is_refused(theta, error: type, match: str) -> None:
    solver = from_function(row_argmin, sense="min", event_ndim=2)
    with pytest.raises(error, match=match):
        solver(theta)


@pytest.mark.parametrize("workers", [0, WORKERS])
@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (float("nan"), r"must be finite, got NaN or inf values"),
        (float("inf"), r"must be finite, got NaN or inf values"),
        (-float("inf"), r"must be finite, got NaN or inf values"),
        (1 + 2j, r"must be a real numeric array of shape \(3,\), got dtype complex128 \(complex\)"),
    ],
    ids=["nan", "inf", "-inf", "complex"],
)
def test_non_finite_or_complex_outputs_name_the_instance(workers: int, bad: object, match: str) -> None:
    """Issue 8, smaller defects: these outputs used to pass unchecked (complex lost its imaginary part)."""
    solver = from_function(partial(bad_value_at, bad, 4), sense="min", event_ndim=1, workers=workers, name="bad")
    theta = torch.arange(7.0).repeat_interleave(3).reshape(7, 3)  # instance i has costs [i, i, i]
    with deadline(60), pytest.raises(SolverError, match=rf"^bad: fn's output for instance 4 {match}"):
        solver(theta)


def test_batched_non_finite_output_names_the_chunk() -> None:
    solver = from_function(batched_nan, sense="min", event_ndim=2, batched=True, name="bad")
    with pytest.raises(SolverError, match=r"^bad: fn's output for instances 0\.\.1 must be finite"):
        solver(torch.zeros(2, 3, 2))


def test_timeout_stops_a_hung_fn_and_the_next_call_works() -> None:
    """Issue 8 item 3: a function that never returns used to block the call forever."""
    solver = from_function(hang_on_negative_first, sense="min", event_ndim=1, workers=WORKERS, timeout=1.0)
    assert solver.timeout == 1.0
    theta = torch.ones(8, 3)
    theta[5, 0] = -1.0
    with deadline(60):
        with pytest.raises(SolverError, match=r"^hang_on_negative_first: timeout=1\.0 s exceeded with instances? .*5.* unfinished"):
            solver(theta)
        assert torch.equal(solver(torch.ones(4, 3)), torch.zeros(4, 3))


@pytest.mark.parametrize("timeout", [0, -2.0, float("inf"), True])
def test_bad_timeout_is_refused(timeout) -> None:
    with pytest.raises(ValueError, match=r"^row_argmin: timeout must be a finite number > 0, got"):
        from_function(row_argmin, sense="min", event_ndim=2, timeout=timeout)


def test_executor_option_solves_like_serial_and_shows_in_repr() -> None:
    """Issue 11: executor= (Dask, process pools and failures: tests/test_executors.py)."""
    from concurrent.futures import ThreadPoolExecutor

    theta = torch.randn(4, 9, 5, generator=torch.Generator().manual_seed(11))
    serial = cg.adapters.from_function(row_argmin, sense="min", event_ndim=2)
    with ThreadPoolExecutor(2) as threads:
        solver = cg.adapters.from_function(row_argmin, sense="min", event_ndim=2, executor=threads)
        assert "executor=threads" in repr(solver)
        assert torch.equal(solver(theta), serial(theta))
    with pytest.raises(TypeError, match="executor must be a concurrent.futures.Executor"):
        cg.adapters.from_function(row_argmin, sense="min", event_ndim=2, executor="localhost:8786")

"""Where a run computes: the ``device`` setting turned into a torch device that exists here."""

from __future__ import annotations

import torch


def resolve_device(device: str, *, owner: str = "run") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; any other name must be a device present here.

    The check happens before any work, so ``--device cuda`` on a machine without
    CUDA fails at once with a one-line reason instead of a traceback deep in the run.

    Raises:
        ValueError: If ``device`` is not a device name, or names a device this machine lacks.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"{owner}: device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}") from error
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{owner}: device {device!r} was asked for, but CUDA is not available here; use cpu or auto")
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            raise ValueError(f"{owner}: device must be one of cuda:0..cuda:{count - 1} here, got {device!r}")
    elif resolved.type == "meta":
        raise ValueError(f"{owner}: device must hold values (cpu, cuda, ...), got {device!r}")
    elif resolved.type != "cpu":
        try:
            torch.empty(0, device=resolved)  # mps, xpu, ...: ask the backend itself
        except (RuntimeError, AssertionError) as error:
            raise ValueError(f"{owner}: device {device!r} is not available here ({error})") from error
    return resolved


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on ``device`` (a no-op on the CPU), so that a wall-clock
    reading after it covers that work.

    Example:
        >>> synchronize(torch.device("cpu"))
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)


__all__ = ["resolve_device", "synchronize"]


def free_cores_for_torch() -> int | None:
    """Torch intra-op threads for a run starting now: the usable cores that other
    running processes leave free (at least 1), never more than torch's current
    setting; None to leave torch as it is (``OMP_NUM_THREADS`` set by the user, or
    the machine's load unknown).

    Why: torch's parallel operations wait at a barrier for every one of their
    threads. On a machine whose cores are busy with other processes a thread is
    often descheduled, and each operation then waits a scheduler time slice: on
    2 cores with one other busy process, 12,800-element ``log``/``exp``/indexing
    steps took 6-7 ms each with torch's 2 threads against microseconds with one,
    and the task runs 5-80x slower. The numba solvers follow the same rule per
    call (:mod:`combgrad.solvers.parallel`); torch's setting is chosen once, when a
    command starts.

    Example:
        >>> threads = free_cores_for_torch()
        >>> threads is None or 1 <= threads <= torch.get_num_threads()
        True
    """
    import os

    from ...solvers import parallel

    if os.environ.get("OMP_NUM_THREADS", "").strip():
        return None
    running = parallel._running_tasks()
    if running is None:
        return None
    others = running - 1  # this process's one running thread, before any torch work
    cpus = os.cpu_count() or 1
    return max(1, min(torch.get_num_threads(), parallel.usable_cores(), cpus - others))

"""Shared helpers of the geometry tests."""

from __future__ import annotations

import pathlib
import sys
from collections.abc import Callable

import pytest
import torch


def _allocation_peak(fn: Callable[[], object]) -> tuple[int, list[int]]:
    """Peak bytes allocated while ``fn`` runs, and the sizes of the allocations alive then."""
    profiler_events = pytest.importorskip("torch._C._profiler")
    if not hasattr(profiler_events, "_EventType"):
        pytest.skip("this torch's profiler does not expose allocation events")
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events, stack = [], list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        event = stack.pop()
        if event.tag == profiler_events._EventType.Allocation:
            events.append((event.start_time_ns, event.extra_fields.alloc_size, event.extra_fields.ptr))
        stack.extend(event.children)
    alive: dict[int, int] = {}
    total = peak = 0
    peak_alive: list[int] = []
    for _, size, pointer in sorted(events):
        if size > 0:
            alive[pointer] = size
        else:
            alive.pop(pointer, None)
        total += size
        if total > peak:
            peak, peak_alive = total, list(alive.values())
    return peak, peak_alive


@pytest.fixture
def allocation_peak() -> Callable[[Callable[[], object]], tuple[int, list[int]]]:
    """The profiler-based peak-memory measurement (CPU allocations by torch)."""
    return _allocation_peak


# The device fixtures (tests/_devices.py): tests/ is not a package, so its folder
# goes on sys.path; the conftests of other folders can do the same.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from _devices import device, device_pair, syncs  # noqa: E402,F401

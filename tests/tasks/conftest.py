"""Fixtures of the task tests: the devices (tests/_devices.py) and a per-folder host-read counter.

On CUDA, reading a tensor's value on the host (``float(t)``, ``t.item()``, ``bool(t)``,
``t.tolist()``, ``t.cpu()``, ``t.numpy()``) waits for every kernel queued before it.
No CPU run can observe that wait, but it can count the calls. Unlike
``tests/_devices.py``'s ``syncs``, which counts every read, :func:`host_reads` counts
only the reads made from source files under one folder (the trainer's, not the CPU
solver's own host work), so a test can assert that their number does not grow with
the number of steps.
"""

from __future__ import annotations

import pathlib
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest
import torch

READS = ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__")


@contextmanager
def _count_host_reads(folder: Path) -> Iterator[list[str]]:
    """Yield a list that collects ``"file:line method"`` for each read made from ``folder``."""
    calls: list[str] = []
    prefix = str(folder.resolve())
    originals = {name: torch.Tensor.__dict__.get(name) for name in READS}
    for name in READS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, __original=original, __name=name, **kwargs):
            caller = sys._getframe(1)
            if caller.f_code.co_filename.startswith(prefix):
                calls.append(f"{Path(caller.f_code.co_filename).name}:{caller.f_lineno} {__name}")
            return __original(self, *args, **kwargs)

        setattr(torch.Tensor, name, counted)
    try:
        yield calls
    finally:
        for name, original in originals.items():
            if original is None:  # inherited from torch's C base class: remove the override
                delattr(torch.Tensor, name)
            else:
                setattr(torch.Tensor, name, original)


@pytest.fixture
def host_reads() -> Callable[[Path], AbstractContextManager[list[str]]]:
    """``with host_reads(folder) as reads:`` collects ``"file:line method"`` per read made from ``folder``."""
    return _count_host_reads


# The device fixtures (tests/_devices.py), as the other test folders' conftests import them.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from _devices import device  # noqa: E402,F401

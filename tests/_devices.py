"""The devices the device-parametrised tests run on: CPU always, CUDA when torch sees one.

The conftest of a test folder imports the fixtures (``device``, ``device_pair``,
``syncs``) from here, so test modules just name them as arguments.

On a CPU-only machine the CUDA half of every parametrised test is reported as
skipped, so CI stays green and the skip count shows what a GPU run would add.
Every CUDA case has ``cuda`` in its id, so ``pytest -k cuda`` selects exactly
the CUDA half: that is what ``benchmarks/device_check.sh`` runs on a GPU.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import torch

CUDA = torch.cuda.is_available()
_NO_CUDA = pytest.mark.skipif(not CUDA, reason="CUDA is not available")

DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param("cuda", id="cuda", marks=_NO_CUDA),
]
"""``device`` values: every test parametrised over them runs its CPU half everywhere."""

# (theta's device, the generator's device): a CPU generator drives CUDA draws too
# (noise is drawn on the generator's device and moved).
DEVICE_PAIRS = [
    pytest.param(("cpu", "cpu"), id="cpu-cpu_generator"),
    pytest.param(("cuda", "cuda"), id="cuda-cuda_generator", marks=_NO_CUDA),
    pytest.param(("cuda", "cpu"), id="cuda-cpu_generator", marks=_NO_CUDA),
]
"""``(device, generator_device)`` values for tests of random draws."""


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> str:
    """Each available device in turn: ``"cpu"``, then ``"cuda"`` (skipped without CUDA)."""
    return str(request.param)


@pytest.fixture(params=DEVICE_PAIRS)
def device_pair(request: pytest.FixtureRequest) -> tuple[str, str]:
    """``(device, generator_device)``: CPU with a CPU generator, CUDA with a CUDA and with a CPU one."""
    return tuple(request.param)  # type: ignore[return-value]


def generator(device: str, seed: int = 0) -> torch.Generator:
    """A seeded ``torch.Generator`` on ``device``."""
    return torch.Generator(device).manual_seed(seed)


class SyncCounter:
    """Counts host reads of tensor values: ``.item()``, ``bool()``, ``float()``, ``int()``, ``.tolist()``.

    On a GPU each of these waits for the device's queue; counting them on the
    CPU is the proxy that lets a CPU-only CI fail when a hot path gains one.
    ``.cpu()`` and ``.numpy()`` are counted apart (``copies``): they sync too.
    """

    def __init__(self) -> None:
        self.reads = 0
        self.copies = 0

    @contextlib.contextmanager
    def count(self, monkeypatch: pytest.MonkeyPatch) -> Iterator[SyncCounter]:
        """Patch the reading methods of ``torch.Tensor`` while the block runs."""
        for name in ("item", "__bool__", "__float__", "__int__", "tolist"):
            monkeypatch.setattr(torch.Tensor, name, self._wrap(getattr(torch.Tensor, name), "reads"))
        for name in ("numpy", "cpu"):
            monkeypatch.setattr(torch.Tensor, name, self._wrap(getattr(torch.Tensor, name), "copies"))
        try:
            yield self
        finally:
            monkeypatch.undo()

    def _wrap(self, method, counter):  # type: ignore[no-untyped-def]
        def wrapped(tensor, *args, **kwargs):  # type: ignore[no-untyped-def]
            setattr(self, counter, getattr(self, counter) + 1)
            return method(tensor, *args, **kwargs)

        return wrapped


@pytest.fixture
def syncs(monkeypatch: pytest.MonkeyPatch) -> Iterator[SyncCounter]:
    """A :class:`SyncCounter` already counting for the rest of the test."""
    counter = SyncCounter()
    with counter.count(monkeypatch):
        yield counter


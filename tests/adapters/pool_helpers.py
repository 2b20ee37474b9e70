"""Helpers shared by the pooled tests (not a test module)."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

# Every pooled test uses this many workers, so that they share one pool (a fresh
# forkserver pool takes about a second to start).
WORKERS = 2


@contextlib.contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Fail (rather than hang the suite) if the block takes longer than ``seconds``."""

    def expire(signum: int, frame: object) -> None:
        raise TimeoutError(f"no answer within {seconds} s: the pool hangs")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)

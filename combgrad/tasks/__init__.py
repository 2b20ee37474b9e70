"""Benchmark tasks: data, models and training loops (``warcraft``: shortest paths on maps)."""

from . import warcraft

__all__ = ["warcraft"]

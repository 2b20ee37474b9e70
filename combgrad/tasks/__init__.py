"""Benchmark tasks: data, models and training loops (``warcraft``: shortest paths on maps).

Each task is a subpackage; the run infrastructure they share (loop, checkpoints,
resume, metrics, plots, atomic writes) is :mod:`combgrad.tasks._training`.
"""

from . import warcraft

__all__ = ["warcraft"]

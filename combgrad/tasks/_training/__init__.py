"""Run infrastructure shared by every task: the training loop, checkpoints and resume,
random state, learning-rate schedules, devices, solver timing, metrics, plots,
atomic writes and distributed (torchrun) runs. Nothing here knows about any one task.
"""

from .checkpoint import FORMAT, Checkpoint, Stateful
from .devices import resolve_device, synchronize
from .distributed import (
    World,
    average_buffers,
    barrier,
    broadcast_buffers,
    broadcast_object,
    gather_objects,
    local_batch_size,
    process_group,
    shard,
    sum_over_processes,
    world_from_environment,
)
from .files import atomic_folder, atomic_torch_save, atomic_write, atomic_write_json, clean_stale, json_safe
from .loop import Progress, epoch_line, optimise_epoch, run_epochs
from .metrics import share, summarise, totals
from .plots import plot_curves, pyplot, save_figure
from .randomness import rng_state, seed_everything, set_rng_state
from .schedules import SCHEDULES, learning_rate_schedule
from .timing import TimedSolver

__all__ = [
    "FORMAT",
    "SCHEDULES",
    "Checkpoint",
    "Progress",
    "Stateful",
    "TimedSolver",
    "World",
    "atomic_folder",
    "atomic_torch_save",
    "atomic_write",
    "atomic_write_json",
    "average_buffers",
    "barrier",
    "broadcast_buffers",
    "broadcast_object",
    "clean_stale",
    "epoch_line",
    "gather_objects",
    "json_safe",
    "learning_rate_schedule",
    "local_batch_size",
    "optimise_epoch",
    "plot_curves",
    "process_group",
    "pyplot",
    "resolve_device",
    "rng_state",
    "run_epochs",
    "save_figure",
    "seed_everything",
    "set_rng_state",
    "shard",
    "share",
    "sum_over_processes",
    "summarise",
    "synchronize",
    "totals",
    "world_from_environment",
]

"""Training across processes with ``torch.distributed``: who this process is, the shard of
each epoch it trains on, and the few collectives a run needs.

A run started by ``torchrun --nproc-per-node N ...`` finds ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK`` in its environment (and ``MASTER_ADDR``/``MASTER_PORT``, or torchrun's
agent store, for the rendezvous); :func:`world_from_environment` reads them and
:func:`process_group` joins the group: NCCL when the run computes on CUDA (each
process on ``cuda:LOCAL_RANK``), Gloo on the CPU. Without those variables a run is
one process and nothing here does any communication, so every function below is
safe to call in a plain run.

The division of labour follows DistributedDataParallel's: every process holds the
whole model and the same epoch order (seeded by ``(seed, epoch)``), trains on its
own strided shard of each global batch (:func:`shard`) and solves only its own
instances; gradients are averaged by DDP, the losses summed by
:func:`sum_over_processes`, and an estimator's adaptive state averaged by
:func:`average_buffers` after every step, so it stays identical on every process.

References:
    S. Li et al. PyTorch Distributed: Experiences on Accelerating Data Parallel
    Training. VLDB 2020.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import distributed as dist
from torch import nn

from ..._checks import check_positive_int


@dataclass(frozen=True)
class World:
    """This process's place in a distributed run (``size == 1``: a plain run).

    Attributes:
        rank: This process's index, ``0 .. size - 1`` (0 writes every output).
        size: Number of processes.
        local_rank: Index among the processes of this machine (its CUDA device).

    Example:
        >>> World().main, World(rank=1, size=2).main, World(rank=1, size=2).distributed
        (True, False, True)
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Whether this process writes the outputs and logs (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether there is more than one process."""
        return self.size > 1


def world_from_environment(environ: Mapping[str, str] | None = None, *, owner: str = "run") -> World:
    """The :class:`World` that torchrun's variables ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` describe.

    Args:
        environ: The environment (default ``os.environ``).
        owner: Prefix of error messages.

    Raises:
        ValueError: If a variable is not a number, or ``RANK`` is not below ``WORLD_SIZE``.

    Example:
        >>> world_from_environment({}), world_from_environment({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"})
        (World(rank=0, size=1, local_rank=0), World(rank=1, size=2, local_rank=1))
    """
    environ = os.environ if environ is None else environ
    values = {}
    for name, default in (("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0")):
        text = environ.get(name, default)
        try:
            values[name] = int(text)
        except ValueError:
            raise ValueError(f"{owner}: environment variable {name} must be an integer, got {text!r}") from None
    size = check_positive_int(owner, "WORLD_SIZE", values["WORLD_SIZE"])
    if not 0 <= values["RANK"] < size:
        raise ValueError(f"{owner}: environment variable RANK must be in 0..{size - 1}, got {values['RANK']}")
    return World(rank=values["RANK"], size=size, local_rank=max(values["LOCAL_RANK"], 0))


@contextmanager
def process_group(world: World, device: torch.device) -> Iterator[torch.device]:
    """Join the process group of a distributed run for the duration of the block.

    Yields this process's device: ``cuda:LOCAL_RANK`` when ``device`` is a CUDA
    device (one GPU per process, NCCL), else ``device`` (Gloo). A plain run
    (``world.size == 1``) joins nothing and yields ``device``. A group that was
    already initialised (by the caller) is used and left as it is; one made here
    is destroyed on exit.

    Example:
        >>> with process_group(World(), torch.device("cpu")) as device:
        ...     device
        device(type='cpu')
    """
    if not world.distributed:
        yield device
        return
    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    created = not dist.is_initialized()
    if created:
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, rank=world.rank, world_size=world.size)
    try:
        yield device
    finally:
        if created:
            dist.destroy_process_group()


def _active(world: World) -> bool:
    return world.distributed and dist.is_initialized()


def local_batch_size(batch_size: int, world: World, *, owner: str = "run") -> int:
    """Each process's share of a global batch of ``batch_size`` examples.

    Raises:
        ValueError: If ``batch_size`` is not a multiple of the number of processes
            (the processes' losses are averaged with equal weights, which is the
            global batch mean only when their batches have equal sizes).

    Example:
        >>> local_batch_size(70, World(rank=0, size=2))
        35
    """
    if batch_size % world.size:
        raise ValueError(
            f"{owner}: batch_size must be a multiple of the {world.size} processes, got {batch_size}"
        )
    return batch_size // world.size


def shard(order: torch.Tensor, world: World) -> torch.Tensor:
    """This process's examples of an epoch's ``order [N]``: ``order[rank::size]`` after padding.

    As ``torch.utils.data.DistributedSampler`` does, the order is first padded by
    repeating its head to a multiple of ``size`` so that every process takes the
    same number of steps (a process with one step more would wait for the others'
    gradients forever). Cut into batches of ``local_batch_size``, step ``i`` of all
    processes together covers ``order[i * batch_size : (i + 1) * batch_size]``: the
    global batch of a one-process run.

    Example:
        >>> shard(torch.arange(5), World(rank=1, size=2))
        tensor([1, 3, 0])
    """
    if not world.distributed or len(order) == 0:
        return order
    padding = -len(order) % world.size
    if padding:
        order = torch.cat([order, order.repeat(padding // len(order) + 1)[:padding]])
    return order[world.rank :: world.size]


def sum_over_processes(tensor: torch.Tensor, world: World) -> torch.Tensor:
    """The elementwise sum of ``tensor`` over all processes (itself in a plain run).

    Example:
        >>> sum_over_processes(torch.ones(2), World())
        tensor([1., 1.])
    """
    if not _active(world):
        return tensor
    total = tensor.clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total


def average_buffers(module: nn.Module | None, world: World) -> None:
    """Replace every floating-point buffer of ``module`` by its mean over the processes.

    AIMLE adapts ``beta`` from the non-zero count of each call's gradient; in a
    distributed run each process sees only its own shard, so the buffers
    (``beta``, ``velocity``, ``nonzero``) would drift apart (and DDP's buffer
    broadcast, were the estimator inside the DDP module, would replace all of
    them by rank 0's). Averaging after every step keeps them identical. Since
    the running non-zero count is linear in the new count, its mean is exactly
    the count of the global batch (equal shard sizes); beta's step is the mean
    of the processes' steps, which differs from a one-process run's only when
    the processes disagree on its direction, i.e. when the count is at the target.
    All buffers go in one collective.

    Example:
        >>> module = nn.BatchNorm1d(2); average_buffers(module, World())  # a plain run: unchanged
        >>> module.running_mean
        tensor([0., 0.])
    """
    if module is None or not _active(world):
        return
    buffers = [buffer for buffer in module.buffers() if buffer.is_floating_point()]
    if not buffers:
        return
    flat = torch.cat([buffer.detach().reshape(-1).to(torch.float64) for buffer in buffers])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= world.size
    offset = 0
    with torch.no_grad():
        for buffer in buffers:
            buffer.copy_(flat[offset : offset + buffer.numel()].view_as(buffer))
            offset += buffer.numel()


def broadcast_buffers(module: nn.Module, world: World) -> None:
    """Give every process rank 0's buffers of ``module`` (BatchNorm running statistics).

    DDP broadcasts them before each training forward, and each process's forward
    then updates its copy with its own shard; after the last step they differ, and
    an evaluation sharded over the processes must use one model.

    Example:
        >>> broadcast_buffers(nn.BatchNorm1d(2), World())  # a plain run: nothing to do
    """
    if not _active(world):
        return
    with torch.no_grad():
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def broadcast_object(value: Any, world: World) -> Any:
    """Rank 0's ``value`` on every process (a picklable object; tensors included).

    Example:
        >>> broadcast_object({"epoch": 1}, World())
        {'epoch': 1}
    """
    if not _active(world):
        return value
    box = [value if world.main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(value: Any, world: World) -> list[Any]:
    """Every process's ``value``, in rank order, on every process (``[value]`` in a plain run).

    Example:
        >>> gather_objects(3, World())
        [3]
    """
    if not _active(world):
        return [value]
    values: list[Any] = [None] * world.size
    dist.all_gather_object(values, value)
    return values


def barrier(world: World) -> None:
    """Wait until every process arrives here (nothing in a plain run).

    Example:
        >>> barrier(World())
    """
    if _active(world):
        dist.barrier()


__all__ = [
    "World",
    "average_buffers",
    "barrier",
    "broadcast_buffers",
    "broadcast_object",
    "gather_objects",
    "local_batch_size",
    "process_group",
    "shard",
    "sum_over_processes",
    "world_from_environment",
]

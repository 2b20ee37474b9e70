"""Training and evaluation on Warcraft maps: CNN -> tile costs -> shortest path -> loss.

:func:`train` runs the whole job of ``combgrad warcraft``: it loads (or generates and
caches) a data set, trains a cost network through ``cg.differentiable(solver=
"shortest_path", estimator=...)`` with the Hamming loss (or through the
Fenchel–Young loss, or trains the direct baseline with a per-cell BCE), evaluates
val and test after every epoch, and writes under ``out``. By default each map's
predicted costs are divided by their mean before the solver (:func:`normalise_costs`),
which leaves the paths unchanged but gives the estimators' ``lam``, ``temperature``
and ``sigma`` a fixed scale to act against. Outputs:

* ``checkpoint.pt``: model, optimizer, scheduler, estimator state (AIMLE's buffers),
  RNG states and history, replaced atomically after every epoch; with
  ``resume=True`` a stopped run continues from it to the same result as an
  uninterrupted run.
* ``metrics.json``: configuration, per-epoch history, final val/test metrics,
  timings (with the share of training time spent in solver calls).
* ``paths.png`` (sample test maps with true and predicted paths and costs) and
  ``curves.png`` (loss and val/test rates per epoch).

Metrics (:func:`path_metrics`): ``exact`` (predicted mask equals the true path),
``cost_optimal`` (the prediction is a path from the top-left to the bottom-right
tile whose true cost is within 1e-6, relative, of the optimum; this counts ties as
correct), ``regret`` (mean true cost of the predicted path minus the optimum, over
predictions that are paths) and ``valid`` (share of predictions that are paths;
always 1 for solver outputs, not for the direct baseline's thresholded masks).

References:
    M. Vlastelica, A. Paulus, V. Musil, G. Martius, M. Rolinek. Differentiation of
    Blackbox Combinatorial Solvers. ICLR 2020.

    M. Niepert, P. Minervini, L. Franceschi. Implicit MLE: Backpropagating Through
    Discrete Exponential Family Distributions. NeurIPS 2021.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ...gradients import names as gradient_names
from ...solvers import get as get_solver
from ..._checks import check_choice, check_positive_int
from . import data as data_module
from .model import MODELS, build_model, normalise

ESTIMATOR_DEFAULTS: dict[str, dict[str, Any]] = {
    "imle": {"lam": 20.0, "samples": 1, "noise": "sum_of_gamma", "temperature": 0.05},
    "aimle": {"samples": 1, "noise": "sum_of_gamma", "temperature": 0.05},
    "blackbox": {"lam": 20.0},
    "perturbation": {"samples": 10, "sigma": 0.05, "noise": "normal"},
    "ste": {},
}
"""Options used for each estimator unless the configuration overrides them.

Chosen for per-map normalised costs (mean 1; :func:`normalise_costs`) and the
batch-mean Hamming loss, whose gradient entries are ``+-1 / batch_size``: lam = 20 is
the papers' value, and noise much weaker than the costs learned fastest (synthetic
12x12, 2,000 maps, 8 epochs: I-MLE reached 95% cost-optimal paths with temperature
0.05, 86% with 0.25, 77% with 1). For sum-of-gamma noise, ``k`` defaults to the map
side (about the number of tiles on a path).
"""

FENCHEL_YOUNG_DEFAULTS: dict[str, Any] = {"samples": 10, "sigma": 0.05, "noise": "normal"}
"""Options of ``--loss fy`` (``cg.losses.fenchel_young``) unless overridden."""

SYNTHETIC_COUNTS = {"train": 10000, "val": 200, "test": 1000}
"""Maps generated per split when no ``data`` is given and the counts are not set."""

LOSSES = ("hamming", "fy")
SCHEDULES = ("constant", "papers", "cosine")
DIRECT = "direct"
"""The ``estimator`` value that trains the direct baseline (no solver, per-cell BCE)."""

_RESULT_KEYS = (
    "data", "size", "n_train", "n_val", "n_test", "data_seed", "model", "channels", "estimator",
    "options", "normalise", "loss", "epochs", "batch_size", "lr", "schedule", "seed",
)  # the configuration that a resumed run must share with the checkpoint


@dataclass
class TrainConfig:
    """Everything that defines a Warcraft run.

    Attributes:
        out: Output folder (checkpoint, metrics.json, plots; synthetic data under ``out/data``).
        data: Root of a data set in the original format (holding ``{k}x{k}/``); None
            generates a synthetic one (cached under ``out/data``).
        size: Tiles per side ``k`` (12, 18, 24 or 30 in the original).
        n_train: Training maps: how many to generate (None: :data:`SYNTHETIC_COUNTS`),
            or the first ``n_train`` of ``data`` (None: all).
        n_val: Validation maps, likewise.
        n_test: Test maps, likewise.
        data_seed: Seed of the synthetic data.
        model: Cost network, ``"small"`` or ``"resnet"`` (the papers' ResNet18 stem).
        channels: Network width (default 64).
        estimator: A registered estimator name (imle, aimle, blackbox, perturbation,
            ste, ...) or ``"direct"`` for the baseline without solver.
        options: Estimator options (with ``loss="fy"``: fenchel_young's sigma,
            noise, samples), over :data:`ESTIMATOR_DEFAULTS`.
        normalise: Divide each map's predicted costs by their mean before the solver
            (see :func:`normalise_costs`); ignored by the direct baseline.
        loss: ``"hamming"`` or ``"fy"`` (Fenchel–Young; the estimator is then unused).
        epochs: Training epochs.
        batch_size: Maps per step.
        lr: Adam's learning rate.
        schedule: ``"constant"``, ``"papers"`` (lr / 10 after 60% and again after 80%
            of the epochs: 30 and 40 of the papers' 50) or ``"cosine"``.
        seed: Seed of the weights, shuffling and estimator noise.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``, ...
        eval_batch_size: Maps per evaluation step.
        resume: Continue from ``out/checkpoint.pt`` when it exists.
        progress: Show a tqdm progress bar.
        plots: Write the PNG plots at the end.
    """

    out: str = "runs/warcraft/default"
    data: str | None = None
    size: int = 12
    n_train: int | None = None
    n_val: int | None = None
    n_test: int | None = None
    data_seed: int = 0
    model: str = "small"
    channels: int | None = None
    estimator: str = "imle"
    options: dict[str, Any] = field(default_factory=dict)
    normalise: bool = True
    loss: str = "hamming"
    epochs: int = 6
    batch_size: int = 50
    lr: float = 1e-3
    schedule: str = "cosine"
    seed: int = 0
    device: str = "auto"
    eval_batch_size: int = 500
    resume: bool = False
    progress: bool = True
    plots: bool = True

    def __post_init__(self) -> None:
        owner = "warcraft"
        check_positive_int(owner, "size", self.size, minimum=2)
        for name in ("n_train", "n_val", "n_test"):
            if getattr(self, name) is not None:
                check_positive_int(owner, name, getattr(self, name))
        check_positive_int(owner, "data_seed", self.data_seed, minimum=0)
        check_choice(owner, "model", self.model, MODELS)
        if self.channels is not None:
            check_positive_int(owner, "channels", self.channels)
        check_choice(owner, "loss", self.loss, LOSSES)
        check_positive_int(owner, "epochs", self.epochs)
        check_positive_int(owner, "batch_size", self.batch_size)
        check_positive_int(owner, "eval_batch_size", self.eval_batch_size)
        check_positive_int(owner, "seed", self.seed, minimum=0)
        check_choice(owner, "schedule", self.schedule, SCHEDULES)
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not self.lr > 0:
            raise ValueError(f"{owner}: lr must be a number > 0, got {self.lr!r}")
        if not isinstance(self.options, dict):
            raise ValueError(f"{owner}: options must be a dict, got {type(self.options).__name__}")
        known = gradient_names()
        if self.estimator != DIRECT and self.estimator not in known:
            raise ValueError(
                f"{owner}: estimator must be one of {sorted(known) + [DIRECT]}, got {self.estimator!r}"
            )
        if self.estimator == DIRECT and self.options:
            raise ValueError(f"{owner}: the direct baseline takes no estimator options, got {self.options}")

    @property
    def direct(self) -> bool:
        """Whether this run trains the direct baseline (no solver)."""
        return self.estimator == DIRECT

    def method(self) -> str:
        """A short label: ``imle``, ``perturbation+fy``, ``direct``, ..."""
        if self.direct:
            return DIRECT
        return "perturbation+fy" if self.loss == "fy" else self.estimator

    def resolved_options(self) -> dict[str, Any]:
        """The estimator (or Fenchel–Young) options in effect: defaults, then ``options``."""
        if self.direct:
            return {}
        defaults = FENCHEL_YOUNG_DEFAULTS if self.loss == "fy" else ESTIMATOR_DEFAULTS.get(self.estimator, {})
        options = {**defaults, **self.options}
        if self.loss == "hamming" and options.get("noise") == "sum_of_gamma" and "k" not in options:
            # I-MLE sets the sum-of-gamma k to the solution size: a path has about k tiles.
            options["k"] = self.size
        return options


# ----------------------------------------------------------------------------- metrics


def connects_corners(masks: torch.Tensor) -> torch.Tensor:
    """Whether each 0/1 mask ``[N, k, k]`` links the top-left and bottom-right cells.

    Two cells are linked when a chain of 8-neighbouring cells of the mask joins them
    (both must be in the mask). Flood fill by repeated 3x3 max-pooling.

    Example:
        >>> connects_corners(torch.tensor([[[1, 0], [0, 1]], [[1, 0], [0, 0]]]))
        tensor([ True, False])
    """
    mask = (masks > 0).to(torch.float32).unsqueeze(1)
    reach = torch.zeros_like(mask)
    reach[:, :, 0, 0] = mask[:, :, 0, 0]
    for _ in range(mask.shape[-1] * mask.shape[-2]):
        grown = F.max_pool2d(reach, 3, stride=1, padding=1) * mask
        if torch.equal(grown, reach):
            break
        reach = grown
    return reach[:, 0, -1, -1] > 0


def path_metrics(
    predicted: torch.Tensor, true_paths: torch.Tensor, weights: torch.Tensor, *, rtol: float = 1e-6
) -> dict[str, torch.Tensor]:
    """Per-map path quality of ``predicted [N, k, k]`` 0/1 masks.

    Args:
        predicted: Predicted masks (solver output, or a thresholded baseline mask).
        true_paths: True shortest paths ``[N, k, k]``.
        weights: True tile costs ``[N, k, k]``.
        rtol: Relative tolerance of "cost-optimal".

    Returns:
        ``exact``, ``valid``, ``cost_optimal`` ([N] bool) and ``regret`` ([N] float64:
        true cost of the prediction minus the optimum; NaN where the mask is not a path).

    Example:
        >>> weights = torch.tensor([[[1.0, 1.0], [1.0, 1.0]]])
        >>> true = torch.tensor([[[1, 0], [0, 1]]])
        >>> m = path_metrics(torch.tensor([[[1, 1], [0, 1]]]), true, weights)
        >>> bool(m["exact"]), bool(m["valid"]), bool(m["cost_optimal"]), float(m["regret"])
        (False, True, False, 1.0)
    """
    predicted = (predicted > 0.5).to(torch.float64)
    true_paths = true_paths.to(torch.float64)
    weights = weights.to(torch.float64)
    optimum = (weights * true_paths).sum(dim=(-2, -1))
    cost = (weights * predicted).sum(dim=(-2, -1))
    valid = connects_corners(predicted)
    regret = torch.where(valid, cost - optimum, torch.full_like(cost, math.nan))
    return {
        "exact": (predicted == true_paths).flatten(1).all(dim=1),
        "valid": valid,
        "cost_optimal": valid & (cost <= optimum * (1.0 + rtol)),
        "regret": regret,
    }


def summarise(per_map: dict[str, torch.Tensor]) -> dict[str, float]:
    """Means of :func:`path_metrics`'s per-map values (regret over valid paths only).

    Example:
        >>> summarise({"exact": torch.tensor([True, False]), "regret": torch.tensor([0.0, math.nan])})
        {'exact': 0.5, 'regret': 0.0}
    """
    summary = {}
    for name, values in per_map.items():
        values = values.to(torch.float64)
        finite = values[~torch.isnan(values)]
        summary[name] = float(finite.mean()) if finite.numel() else math.nan
    return summary


# ----------------------------------------------------------------------------- helpers


def normalise_costs(costs: torch.Tensor) -> torch.Tensor:
    """Divide each map's costs ``[B, k, k]`` by their mean: ``[B, k, k]`` with mean 1 per map.

    A shortest path does not change when all costs of a map are scaled, but the
    estimators' options do not scale with them: blackbox's and I-MLE's ``lam``, the
    noise ``temperature`` and ``sigma`` are absolute. Without this, the Hamming loss
    lets the network's cost scale drift (measured here: down by a factor of about 300
    over 8 epochs with blackbox), and the fixed ``lam`` then dwarfs the costs; with it,
    the options keep their meaning and blackbox reached 99.2% cost-optimal paths
    instead of 94.8% (synthetic 12x12, 10,000 maps, 8 epochs).

    Example:
        >>> normalise_costs(torch.tensor([[[1.0, 3.0], [2.0, 2.0]]]))
        tensor([[[0.5000, 1.5000],
                 [1.0000, 1.0000]]])
    """
    return costs / costs.mean(dim=(-2, -1), keepdim=True).clamp_min(torch.finfo(costs.dtype).tiny)


class TimedSolver:
    """Wraps a solver and adds up the wall time spent in its calls.

    Estimators accept any object with ``sense``, ``event_ndim`` and ``__call__``, so
    this wrapper measures exactly the solver's share of a training step.

    Example:
        >>> timed = TimedSolver(get_solver("shortest_path"))
        >>> _ = timed(torch.ones(2, 4, 4))
        >>> timed.calls, timed.seconds > 0
        (1, True)
    """

    def __init__(self, solver: Any) -> None:
        self.solver = solver
        self.name = solver.name
        self.sense = solver.sense
        self.event_ndim = solver.event_ndim
        self.seconds = 0.0
        self.calls = 0
        self.instances = 0

    def __call__(self, theta: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        y = self.solver(theta)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        self.instances += theta.numel() // max(theta.shape[-1] * theta.shape[-2], 1)
        return y


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; any other string is passed to torch.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError as error:
        raise ValueError(f"warcraft: device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}") from error


def _atomic_write_bytes(path: Path, write: Callable[[Any], None]) -> None:
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(temporary, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to ``path`` via a temporary file and a rename: never a torn file.

    Example:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "x.pt"
        >>> atomic_torch_save({"a": 1}, target); torch.load(target)
        {'a': 1}
    """
    _atomic_write_bytes(Path(path), lambda handle: torch.save(obj, handle))


def atomic_write_json(obj: Any, path: str | os.PathLike) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically (NaN written as null).

    Example:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "m.json"
        >>> atomic_write_json({"x": float("nan")}, target); target.read_text()
        '{\\n  "x": null\\n}\\n'
    """
    text = json.dumps(_json_safe(obj), indent=2) + "\n"
    _atomic_write_bytes(Path(path), lambda handle: handle.write(text.encode()))


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(key): _json_safe(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(value) for value in obj]
    return obj


@dataclass
class _Split:
    maps: torch.Tensor  # [N, 8k, 8k, 3] uint8, CPU
    weights: torch.Tensor  # [N, k, k] float64
    paths: torch.Tensor  # [N, k, k] float32

    @classmethod
    def from_split(cls, split: data_module.WarcraftSplit, limit: int | None) -> _Split:
        end = len(split) if limit is None else min(limit, len(split))
        return cls(
            torch.from_numpy(np.ascontiguousarray(split.maps[:end])),
            torch.from_numpy(np.asarray(split.vertex_weights[:end], dtype=np.float64)),
            torch.from_numpy(np.asarray(split.shortest_paths[:end], dtype=np.float32)),
        )

    def __len__(self) -> int:
        return self.maps.shape[0]


def prepare_data(config: TrainConfig, *, log: Callable[[str], None] = print) -> tuple[Path, dict[str, _Split]]:
    """Load ``config.data``, or generate (and cache under ``out/data``) a synthetic set.

    Returns the data root and the train/val/test splits (cut to ``n_train`` etc.).
    """
    if config.data is not None:
        root = Path(config.data)
        splits = {
            name: _Split.from_split(data_module.load_split(root, config.size, name), limit)
            for name, limit in (("train", config.n_train), ("val", config.n_val), ("test", config.n_test))
        }
        return root, splits
    root = Path(config.out) / "data"
    counts = {
        "train": config.n_train or SYNTHETIC_COUNTS["train"],
        "val": config.n_val or SYNTHETIC_COUNTS["val"],
        "test": config.n_test or SYNTHETIC_COUNTS["test"],
    }
    meta = data_module.read_meta(root, config.size)
    wanted = {"generator_version": data_module.GENERATOR_VERSION, "seed": config.data_seed, "counts": counts}
    if meta is None or any(meta.get(key) != value for key, value in wanted.items()):
        start = time.perf_counter()
        data_module.generate_dataset(
            root,
            config.size,
            n_train=counts["train"],
            n_val=counts["val"],
            n_test=counts["test"],
            seed=config.data_seed,
            overwrite=True,
        )
        log(
            f"generated {sum(counts.values())} synthetic {config.size}x{config.size} maps in "
            f"{time.perf_counter() - start:.1f} s under {root}"
        )
    splits = {name: _Split.from_split(data_module.load_split(root, config.size, name), None) for name in counts}
    return root, splits


def channel_statistics(maps: torch.Tensor, chunk: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation ``[3]`` of ``maps [N, H, W, 3]`` (0-255 scale).

    Computed in chunks so that a large uint8 set is never copied as floats at once.

    Example:
        >>> mean, std = channel_statistics(torch.tensor([[[[0, 10, 20]]], [[[2, 10, 40]]]], dtype=torch.uint8))
        >>> mean.tolist(), std.tolist()
        ([1.0, 10.0, 30.0], [1.0, 0.0, 10.0])
    """
    total = torch.zeros(3, dtype=torch.float64)
    squares = torch.zeros(3, dtype=torch.float64)
    count = 0
    for start in range(0, maps.shape[0], chunk):
        block = maps[start : start + chunk].to(torch.float64).reshape(-1, 3)
        total += block.sum(dim=0)
        squares += (block * block).sum(dim=0)
        count += block.shape[0]
    mean = total / max(count, 1)
    std = (squares / max(count, 1) - mean * mean).clamp_min(0).sqrt()
    return mean.to(torch.float32), std.to(torch.float32)


def _schedule(optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int):
    total = config.epochs * steps_per_epoch
    if config.schedule == "papers":
        milestones = [round(0.6 * config.epochs) * steps_per_epoch, round(0.8 * config.epochs) * steps_per_epoch]
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))
        )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


def _rng_state(device: torch.device) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


class Predictor:
    """A trained Warcraft model as a path predictor: maps ``[B, 8k, 8k, 3]`` uint8 -> paths.

    Holds the network, the input statistics and the solver; the cost network's
    paths come from the solver on its costs, the direct baseline's from thresholding
    its sigmoid at 0.5.

    Args:
        model: A cost network or :class:`~combgrad.tasks.warcraft.model.DirectCNN`.
        mean: ``[3]`` input channel means; std: ``[3]`` channel deviations.
        direct: Whether ``model`` is the direct baseline.
        normalise: Divide each map's costs by their mean (:func:`normalise_costs`).
        solver: The shortest-path solver (default: the registry's).
        device: Where the network runs.

    Example:
        >>> from combgrad.tasks.warcraft.model import SmallCNN
        >>> predictor = Predictor(SmallCNN(12), torch.zeros(3), torch.ones(3))
        >>> costs, paths = predictor(torch.zeros(2, 96, 96, 3, dtype=torch.uint8))
        >>> costs.shape, paths.shape
        (torch.Size([2, 12, 12]), torch.Size([2, 12, 12]))
    """

    def __init__(
        self,
        model: nn.Module,
        mean: torch.Tensor,
        std: torch.Tensor,
        *,
        direct: bool = False,
        normalise: bool = False,
        solver: Any = None,
        device: torch.device | str = "cpu",
    ) -> None:
        self.model = model
        self.normalise = normalise and not direct
        self.device = torch.device(device)
        self.mean = mean.to(self.device)
        self.std = std.to(self.device)
        self.direct = direct
        self.solver = solver if solver is not None else get_solver("shortest_path")

    def output(self, images: torch.Tensor) -> torch.Tensor:
        """The network's output on normalised ``images [B, 3, 8k, 8k]``: costs (per-map
        normalised if ``normalise``) or the baseline's logits, ``[B, k, k]``."""
        output = self.model(images)
        return normalise_costs(output) if self.normalise else output

    @torch.no_grad()
    def __call__(self, maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Costs (or, for the baseline, path probabilities) and 0/1 paths, both ``[B, k, k]``."""
        was_training = self.model.training
        self.model.eval()
        try:
            output = self.output(normalise(maps.to(self.device), self.mean, self.std))
        finally:
            self.model.train(was_training)
        if self.direct:
            probabilities = torch.sigmoid(output)
            return probabilities, (probabilities > 0.5).to(torch.float32)
        return output, self.solver(output)

    def evaluate(self, split: _Split, batch_size: int = 500) -> dict[str, float]:
        """Mean :func:`path_metrics` over a split."""
        parts: dict[str, list[torch.Tensor]] = {}
        for start in range(0, len(split), batch_size):
            _, paths = self(split.maps[start : start + batch_size])
            metrics = path_metrics(
                paths.cpu(), split.paths[start : start + batch_size], split.weights[start : start + batch_size]
            )
            for name, values in metrics.items():
                parts.setdefault(name, []).append(values)
        return summarise({name: torch.cat(values) for name, values in parts.items()})


def _build_loss(config: TrainConfig, solver: TimedSolver, device: torch.device):
    """The training loss as ``(module or None, loss(output, true_paths) -> scalar)``."""
    import combgrad as cg  # late: combgrad imports this package while it initialises

    options = config.resolved_options()
    if config.direct:
        return None, lambda logits, paths: F.binary_cross_entropy_with_logits(logits, paths)
    if config.loss == "fy":

        def fenchel_young(costs: torch.Tensor, paths: torch.Tensor) -> torch.Tensor:
            return cg.losses.fenchel_young(costs, paths, solver=solver, **options).mean()

        return None, fenchel_young
    layer = cg.differentiable(solver=solver, estimator=config.estimator, **options).to(device)

    def hamming(costs: torch.Tensor, paths: torch.Tensor) -> torch.Tensor:
        return cg.losses.hamming(layer(costs), paths).mean()

    return layer, hamming


def train(
    config: TrainConfig,
    *,
    log: Callable[[str], None] = print,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train and evaluate one Warcraft run; write checkpoint, metrics.json and plots to ``config.out``.

    Args:
        config: The run's :class:`TrainConfig`.
        log: Where progress lines go.
        on_epoch_end: Called as ``on_epoch_end(epoch, record)`` after each epoch's
            checkpoint is written (``epoch`` counts from 1); an exception raised there
            stops the run as a kill would, and a later ``resume=True`` run continues it.

    Returns:
        The content of ``metrics.json``: ``config``, ``history`` (one record per epoch:
        loss, lr, times, val and test metrics), ``final`` (val and test metrics of the
        last epoch), ``timing`` (seconds; ``solver_share`` is the fraction of the
        training steps' time spent in solver calls) and ``data`` (root, sizes and the
        share of maps whose optimum is not unique).

    Raises:
        ValueError: On a bad configuration, or when resuming a checkpoint whose
            configuration differs.

    Example:
        >>> import tempfile
        >>> config = TrainConfig(out=tempfile.mkdtemp(), n_train=20, n_val=10, n_test=10, epochs=1,
        ...                      batch_size=10, progress=False, plots=False)
        >>> result = train(config, log=lambda line: None)
        >>> sorted(result["final"]["test"])
        ['cost_optimal', 'exact', 'regret', 'valid']
    """
    from tqdm.auto import tqdm

    wall_start = time.perf_counter()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(config.device)
    # The estimator first (it draws no random numbers): bad options fail before the data are made.
    solver = TimedSolver(get_solver("shortest_path"))
    eval_solver = TimedSolver(get_solver("shortest_path"))
    layer, loss_fn = _build_loss(config, solver, device)
    data_root, splits = prepare_data(config, log=log)
    train_split = splits["train"]
    data_seconds = time.perf_counter() - wall_start

    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    random.seed(config.seed)
    model = build_model(config.model, config.size, direct=config.direct, channels=config.channels).to(device)
    mean, std = channel_statistics(train_split.maps)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    steps_per_epoch = math.ceil(len(train_split) / config.batch_size)
    scheduler = _schedule(optimizer, config, steps_per_epoch)
    predictor = Predictor(
        model, mean, std, direct=config.direct, normalise=config.normalise, solver=eval_solver, device=device
    )

    history: list[dict[str, Any]] = []
    start_epoch = 0
    checkpoint_path = out / "checkpoint.pt"
    saved_config = {key: value for key, value in asdict(config).items() if key in _RESULT_KEYS}
    if config.resume and checkpoint_path.exists():
        checkpoint = torch.load(checkpoint_path, map_location=device, weights_only=False)
        differing = sorted(key for key in _RESULT_KEYS if checkpoint["config"].get(key) != saved_config[key])
        if differing:
            raise ValueError(
                f"warcraft: cannot resume {checkpoint_path}: its configuration differs in {differing} "
                f"(checkpoint {[checkpoint['config'].get(k) for k in differing]}, "
                f"now {[saved_config[k] for k in differing]})"
            )
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        if layer is not None:
            layer.load_state_dict(checkpoint["layer"])
        _set_rng_state(checkpoint["rng"], device)
        history = checkpoint["history"]
        start_epoch = checkpoint["epoch"]
        log(f"resuming {checkpoint_path} after epoch {start_epoch} of {config.epochs}")
    elif config.resume:
        log(f"no checkpoint at {checkpoint_path}: starting from scratch")

    total_steps = (config.epochs - start_epoch) * steps_per_epoch
    bar = tqdm(total=total_steps, disable=not config.progress, unit="step", dynamic_ncols=True)
    try:
        for epoch in range(start_epoch, config.epochs):
            bar.set_description(f"epoch {epoch + 1}/{config.epochs}")
            model.train()
            # The shuffle depends on (seed, epoch) alone, so a resumed run sees the same order.
            order = torch.randperm(
                len(train_split), generator=torch.Generator().manual_seed(config.seed * 100_003 + epoch)
            )
            solver.seconds = 0.0
            epoch_start = time.perf_counter()
            loss_sum, seen = 0.0, 0
            for step in range(steps_per_epoch):
                index = order[step * config.batch_size : (step + 1) * config.batch_size]
                images = normalise(train_split.maps[index].to(device), predictor.mean, predictor.std)
                paths = train_split.paths[index].to(device)
                loss = loss_fn(predictor.output(images), paths)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                loss_sum += float(loss.detach()) * len(index)
                seen += len(index)
                bar.update(1)
                bar.set_postfix(loss=f"{loss_sum / seen:.3f}")
            train_seconds = time.perf_counter() - epoch_start
            eval_start = time.perf_counter()
            eval_solver.seconds = 0.0
            val = predictor.evaluate(splits["val"], config.eval_batch_size)
            test = predictor.evaluate(splits["test"], config.eval_batch_size)
            record = {
                "epoch": epoch + 1,
                "loss": loss_sum / max(seen, 1),
                "lr": optimizer.param_groups[0]["lr"],
                "train_seconds": train_seconds,
                "solver_seconds": solver.seconds,
                "solver_share": solver.seconds / train_seconds if train_seconds > 0 else 0.0,
                "eval_seconds": time.perf_counter() - eval_start,
                "eval_solver_seconds": eval_solver.seconds,
                "val": val,
                "test": test,
            }
            history.append(record)
            bar.set_postfix(loss=f"{record['loss']:.3f}", val_opt=f"{val['cost_optimal']:.3f}")
            checkpoint = {
                "config": saved_config,
                "epoch": epoch + 1,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "layer": layer.state_dict() if layer is not None else None,
                "rng": _rng_state(device),
                "history": history,
                "normalisation": {"mean": mean, "std": std},
            }
            atomic_torch_save(checkpoint, checkpoint_path)
            if not config.progress:
                log(
                    f"epoch {epoch + 1}/{config.epochs}: loss {record['loss']:.4f}, val cost-optimal "
                    f"{val['cost_optimal']:.3f}, test cost-optimal {test['cost_optimal']:.3f}, "
                    f"{train_seconds:.1f} s (solver {100 * record['solver_share']:.1f}%)"
                )
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1, record)
    finally:
        bar.close()

    if not history:  # resumed a finished run with nothing left to train
        raise ValueError(f"warcraft: {checkpoint_path} holds no epochs to report")
    train_total = sum(record["train_seconds"] for record in history)
    solver_total = sum(record["solver_seconds"] for record in history)
    meta = data_module.read_meta(data_root, config.size) or {}
    result = {
        "method": config.method(),
        "config": {**asdict(config), "options": config.resolved_options(), "device": str(device)},
        "history": history,
        "final": {"val": history[-1]["val"], "test": history[-1]["test"]},
        "timing": {
            "data_seconds": data_seconds,
            "train_seconds": train_total,
            "solver_seconds": solver_total,
            "solver_share": solver_total / train_total if train_total > 0 else 0.0,
            "eval_seconds": sum(record["eval_seconds"] for record in history),
            "wall_seconds_this_run": time.perf_counter() - wall_start,
        },
        "data": {
            "root": str(data_root),
            "counts": {name: len(split) for name, split in splits.items()},
            "non_unique_optimum": meta.get("non_unique_optimum"),
        },
    }
    if config.plots:
        from .plots import plot_curves, plot_paths

        shown = min(6, len(splits["test"]))
        costs, predicted = predictor(splits["test"].maps[:shown])
        plot_paths(
            splits["test"].maps[:shown].numpy(),
            splits["test"].paths[:shown].numpy(),
            predicted.cpu().numpy(),
            splits["test"].weights[:shown].numpy(),
            costs.cpu().numpy(),
            out / "paths.png",
            title=f"{config.method()}: test maps (true path white, predicted red)",
            predicted_label="path probability" if config.direct else "predicted cost",
        )
        plot_curves(history, out / "curves.png", title=f"{config.method()} on {config.size}x{config.size}")
    result["timing"]["wall_seconds_this_run"] = time.perf_counter() - wall_start
    atomic_write_json(result, out / "metrics.json")
    return result


__all__ = [
    "DIRECT",
    "ESTIMATOR_DEFAULTS",
    "FENCHEL_YOUNG_DEFAULTS",
    "Predictor",
    "TimedSolver",
    "TrainConfig",
    "atomic_torch_save",
    "atomic_write_json",
    "channel_statistics",
    "connects_corners",
    "normalise_costs",
    "path_metrics",
    "prepare_data",
    "resolve_device",
    "summarise",
    "train",
]

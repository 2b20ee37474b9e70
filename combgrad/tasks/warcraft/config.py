"""The configuration of a Warcraft run: :class:`TrainConfig`, its checks and its defaults."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..._checks import check_bool, check_choice, check_number, check_positive_int
from ...gradients import names as gradient_names
from .._training.schedules import SCHEDULES
from .model import MODELS

ESTIMATOR_DEFAULTS: dict[str, dict[str, Any]] = {
    "imle": {"lam": 20.0, "samples": 1, "noise": "sum_of_gamma", "noise_scale": 0.05},
    "aimle": {"samples": 1, "noise": "sum_of_gamma", "noise_scale": 0.05},
    "blackbox": {"lam": 20.0},
    "perturbation": {"samples": 10, "noise_scale": 0.05, "noise": "normal"},
    "ste": {},
}
"""Options used for each estimator unless the configuration overrides them.

Chosen for per-map normalised costs (mean 1; :func:`~.evaluation.normalise_costs`)
and the batch-mean Hamming loss, whose gradient entries are ``+-1 / batch_size``:
lam = 20 is the papers' value, and noise much weaker than the costs learned fastest
(synthetic 12x12, 2,000 maps, 8 epochs: I-MLE reached 95% cost-optimal paths with
noise scale 0.05, 86% with 0.25, 77% with 1). For sum-of-gamma noise, ``k`` defaults
to the map side (about the number of tiles on a path).
"""

FENCHEL_YOUNG_DEFAULTS: dict[str, Any] = {"samples": 10, "noise_scale": 0.05, "noise": "normal"}
"""Options of ``--loss fy`` (``cg.losses.fenchel_young``) unless overridden."""

OLD_OPTION_NAMES = {
    "temperature": "noise_scale",
    "sigma": "noise_scale",
    "target_temperature": "target_noise_scale",
    "scale": "divide_by_lam",
}
"""The papers' option names that combgrad still accepts (with a DeprecationWarning),
and their library-wide names. A user's option under an old name replaces the
default held under the new one (and the other way round), so that the estimator
sees only one of them."""

SYNTHETIC_COUNTS = {"train": 10000, "val": 200, "test": 1000}
"""Maps generated per split when no ``data`` is given and the counts are not set."""

LOSSES = ("hamming", "fy")
DIRECT = "direct"
"""The ``estimator`` value that trains the direct baseline (no solver, per-cell BCE)."""

IDENTITY_KEYS = (
    "data", "size", "n_train", "n_val", "n_test", "data_seed", "model", "channels", "estimator",
    "options", "normalise", "loss", "epochs", "batch_size", "lr", "schedule", "seed",
)
"""The settings that a resumed run must share with its checkpoint (the others, such as
``device`` or ``progress``, may change between the two)."""


@dataclass
class TrainConfig:
    """Everything that defines a Warcraft run; checked when made.

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
        options: Estimator options (with ``loss="fy"``: fenchel_young's noise scale,
            noise, samples), over :data:`ESTIMATOR_DEFAULTS`.
        normalise: Divide each map's predicted costs by their mean before the solver
            (:func:`~.evaluation.normalise_costs`); ignored by the direct baseline.
            This is the only "normalisation" of the task: input images are
            *standardised* (:func:`~.model.standardise`) in every run.
        loss: ``"hamming"`` or ``"fy"`` (Fenchel–Young; the estimator is then unused).
        epochs: Training epochs.
        batch_size: Maps per step.
        lr: Adam's learning rate.
        schedule: ``"constant"``, ``"papers"`` (lr / 10 after 60% and again after 80%
            of the epochs: 30 and 40 of the papers' 50) or ``"cosine"``.
        seed: Seed of the weights, shuffling and estimator noise.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``, ...
        eval_batch_size: Maps per evaluation step.
        log_every: Steps between two readings of the running loss for the progress
            bar (each one waits for the device's queued work: a GPU run must not
            read it every step).
        resume: Continue from ``out/checkpoint.pt`` when it exists.
        progress: Show a tqdm progress bar.
        plots: Write the PNG plots at the end.

    Raises:
        ValueError: Naming the first setting that is out of range.

    Example:
        >>> TrainConfig(estimator="blackbox", options={"lam": 3.0}).resolved_options()
        {'lam': 3.0}
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
    log_every: int = 50
    resume: bool = False
    progress: bool = True
    plots: bool = True

    def __post_init__(self) -> None:
        # The checked values are stored back as plain Python numbers: a checkpoint
        # records them, and it may hold no numpy objects (it loads with weights_only).
        owner = "warcraft"
        self.size = check_positive_int(owner, "size", self.size, minimum=2)
        for name in ("n_train", "n_val", "n_test"):
            if getattr(self, name) is not None:
                setattr(self, name, check_positive_int(owner, name, getattr(self, name)))
        self.data_seed = check_positive_int(owner, "data_seed", self.data_seed, minimum=0)
        check_choice(owner, "model", self.model, MODELS)
        if self.channels is not None:
            self.channels = check_positive_int(owner, "channels", self.channels)
        check_choice(owner, "loss", self.loss, LOSSES)
        self.epochs = check_positive_int(owner, "epochs", self.epochs)
        self.batch_size = check_positive_int(owner, "batch_size", self.batch_size)
        self.eval_batch_size = check_positive_int(owner, "eval_batch_size", self.eval_batch_size)
        self.log_every = check_positive_int(owner, "log_every", self.log_every)
        self.seed = check_positive_int(owner, "seed", self.seed, minimum=0)
        check_choice(owner, "schedule", self.schedule, SCHEDULES)
        self.lr = check_number(owner, "lr", self.lr, positive=True)
        for name in ("normalise", "resume", "progress", "plots"):
            setattr(self, name, check_bool(owner, name, getattr(self, name)))
        if not isinstance(self.options, dict):
            raise ValueError(f"{owner}: options must be a dict, got {type(self.options).__name__}")
        check_choice(owner, "estimator", self.estimator, sorted(gradient_names()) + [DIRECT])
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
        given = {OLD_OPTION_NAMES.get(name, name) for name in self.options}
        kept = {name: value for name, value in defaults.items() if OLD_OPTION_NAMES.get(name, name) not in given}
        options = {**kept, **self.options}
        if self.loss == "hamming" and options.get("noise") == "sum_of_gamma" and "k" not in options:
            # I-MLE sets the sum-of-gamma k to the solution size: a path has about k tiles.
            options["k"] = self.size
        return options

    def identity(self) -> dict[str, Any]:
        """The settings of :data:`IDENTITY_KEYS`, as a checkpoint records them."""
        return {key: value for key, value in asdict(self).items() if key in IDENTITY_KEYS}


__all__ = [
    "DIRECT",
    "ESTIMATOR_DEFAULTS",
    "FENCHEL_YOUNG_DEFAULTS",
    "IDENTITY_KEYS",
    "LOSSES",
    "OLD_OPTION_NAMES",
    "SCHEDULES",
    "SYNTHETIC_COUNTS",
    "TrainConfig",
]

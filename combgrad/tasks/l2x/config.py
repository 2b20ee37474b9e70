"""The configuration of an L2X run: :class:`L2xConfig`, its checks and its presets."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..._checks import check_bool, check_positive_int
from .._digits_run import complete_run_settings
from .._digits_run import resolved_options as _resolved_options

ESTIMATOR_DEFAULTS: dict[str, dict[str, Any]] = {}
"""Options used for each estimator unless the configuration overrides them: none, every
estimator runs with its own defaults (the sum-of-gamma ``k`` is the subset size).
Tried on the default run (seed 0, one run each, test accuracy): with their own
defaults AIMLE 0.986, I-MLE 0.953, perturbation 0.889, score function 0.886, relaxed
top-k 0.844, STE 0.647; at noise scale 0.1 (the VAE's setting) AIMLE 0.983, I-MLE
0.978, perturbation 0.811, score function 0.593: no one setting is better for all,
so none is imposed. AIMLE's central difference (``symmetric=True``, the VAE's
setting) gave 0.952 ± 0.014 over seeds 0-2, against 0.976 ± 0.004 one-sided."""

QUICK = {"hidden": 200, "epochs": 30, "batch_size": 50, "lr": 1e-3}
"""The default run's sizes: about a minute on two CPU cores for the 8x8 digits."""

FULL = {"hidden": 500, "epochs": 100, "batch_size": 100, "lr": 1e-3}
"""The ``full`` preset, for a GPU: wider networks trained three times longer. No paper
trains L2X on the 8x8 digits; Chen et al.'s MNIST and I-MLE's BeerAdvocate runs train
for 20-50 epochs with a few hundred units (BeerAdvocate: 20 epochs, batch 40, 250
units), which this preset brackets."""

IDENTITY_KEYS = ("data", "k", "hidden", "estimator", "options", "epochs", "batch_size", "lr", "seed", "full")
"""The settings that a resumed run must share with its checkpoint."""


@dataclass
class L2xConfig:
    """Everything that defines an L2X run; checked when made.

    Attributes:
        out: Output folder (checkpoint, metrics.json, selections.npy, plots).
        data: A folder with MNIST's IDX files (:func:`combgrad.tasks._digits.load_mnist`);
            None uses scikit-learn's bundled 8x8 digits and their fixed split.
        k: Pixels selected per image.
        hidden: Width of the selector's and the classifier's hidden layers (None:
            :data:`QUICK`'s, or :data:`FULL`'s with ``full``).
        estimator: A registered estimator name (aimle, imle, perturbation, ste, ...).
        options: Estimator options, over :data:`ESTIMATOR_DEFAULTS`.
        epochs: Training epochs (None: the preset's).
        batch_size: Images per step (None: the preset's).
        lr: Adam's learning rate (None: the preset's).
        seed: Seed of the weights, the batch order and the estimator's noise.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``, ...
        resume: Continue from ``out/checkpoint.pt`` when it exists.
        progress: Show a tqdm progress bar.
        plots: Write the PNG plots at the end.
        full: The :data:`FULL` preset for the settings left at None.

    Raises:
        ValueError: Naming the first setting that is out of range.

    Example:
        >>> config = L2xConfig(estimator="imle", options={"lam": 5.0})
        >>> config.epochs, config.resolved_options()
        (30, {'lam': 5.0, 'k': 8})
    """

    out: str = "runs/l2x/default"
    data: str | None = None
    k: int = 8
    hidden: int | None = None
    estimator: str = "aimle"
    options: dict[str, Any] = field(default_factory=dict)
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    seed: int = 0
    device: str = "auto"
    resume: bool = False
    progress: bool = True
    plots: bool = True
    full: bool = False

    def __post_init__(self) -> None:
        owner = "l2x"
        self.full = check_bool(owner, "full", self.full)
        preset = FULL if self.full else QUICK
        complete_run_settings(self, owner, preset, ("hidden", "epochs", "batch_size"))
        self.k = check_positive_int(owner, "k", self.k)

    def resolved_options(self) -> dict[str, Any]:
        """The estimator options in effect: :data:`ESTIMATOR_DEFAULTS`, then ``options``
        (and the sum-of-gamma ``k`` = the subset size, for an estimator that takes it)."""
        return _resolved_options(self.estimator, ESTIMATOR_DEFAULTS, self.options, self.k)

    def identity(self) -> dict[str, Any]:
        """The settings of :data:`IDENTITY_KEYS`, as a checkpoint records them."""
        return {key: value for key, value in asdict(self).items() if key in IDENTITY_KEYS}


__all__ = ["ESTIMATOR_DEFAULTS", "FULL", "IDENTITY_KEYS", "QUICK", "L2xConfig"]

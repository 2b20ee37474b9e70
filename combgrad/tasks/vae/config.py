"""The configuration of a discrete-VAE run: :class:`VaeConfig`, its checks and its presets."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..._checks import check_bool
from ...gradients import options as gradient_options
from .._digits_run import complete_run_settings
from .._digits_run import resolved_options as _resolved_options

ESTIMATOR_DEFAULTS: dict[str, dict[str, Any]] = {"aimle": {"symmetric": True}}
"""Options used for each estimator unless the configuration overrides them (estimators
not listed run with their own defaults, but for :data:`NOISE_SCALE`; the sum-of-gamma
``k`` is the code's ``k``). AIMLE is the central-difference variant, as the AIMLE
seed's VAE run (``--aimle-symmetric``): over seeds 0-2 of the default run its test
negative ELBO was 9.73 ± 0.14 nats against 11.38 ± 0.44 one-sided (the seed's other
settings, 10 samples and target norm 10, gave 9.70 ± 0.18 at ten times the solves)."""

NOISE_SCALE = 0.1
"""The noise scale of every estimator that takes one (``noise_scale``), unless the
options set it. Swept on the default run (seed 0, 20 epochs, test negative ELBO in
nats; STE, which has no noise, reached 13.36): at the estimators' own scale 1 I-MLE
reached 18.1, AIMLE 15.2, perturbation 20.1, score function 23.7 and relaxed top-k
19.1; at 0.1 they reached 11.4, 11.4, 11.9, 12.2 and 11.4. Unit-scale noise
drowns the encoder's scores, which stay small (the KL term pulls each group
towards uniform), and the decoder learns from codes that the test's exact codes
do not resemble."""

QUICK: dict[str, Any] = {"groups": 10, "group_size": 10, "k": 5, "hidden": 256, "epochs": 20, "batch_size": 100,
                         "lr": 1e-3}
"""The default run, sized for the 8x8 digits and about a minute on two CPU cores: 10
groups of 10 with 5 active, the reference's layout at half its width."""

FULL: dict[str, Any] = {"groups": 20, "group_size": 20, "k": 10, "hidden": 512, "epochs": 100, "batch_size": 100,
                        "lr": 1e-3}
"""The ``full`` preset: the AIMLE seed's ``torch-vae-cli`` run (``--code-m 20 --code-n 20
-K 10``, 512/256 units, 100 epochs of batch 100, Adam at 1e-3), for a GPU; with
``data`` pointing at MNIST's files it is the papers' experiment."""

IDENTITY_KEYS = ("data", "groups", "group_size", "k", "hidden", "estimator", "options", "epochs", "batch_size", "lr",
                 "seed", "full")
"""The settings that a resumed run must share with its checkpoint."""


@dataclass
class VaeConfig:
    """Everything that defines a discrete-VAE run; checked when made.

    Attributes:
        out: Output folder (checkpoint, metrics.json, plots).
        data: A folder with MNIST's IDX files (:func:`combgrad.tasks._digits.load_mnist`);
            None uses scikit-learn's bundled 8x8 digits and their fixed split.
            Pixels are binarised at 0.5.
        groups: Latent groups ``m`` (None: the preset's).
        group_size: Scores per group ``n`` (None: the preset's).
        k: Active entries per group (None: the preset's); ``0 < k < n``.
        hidden: Width of the wider hidden layer (None: the preset's).
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
        full: The :data:`FULL` preset (the seed's MNIST run) for the settings left at None.

    Raises:
        ValueError: Naming the first setting that is out of range.

    Example:
        >>> config = VaeConfig(estimator="imle")
        >>> config.groups, config.group_size, config.k, config.resolved_options()
        (10, 10, 5, {'k': 5, 'noise_scale': 0.1})
    """

    out: str = "runs/vae/default"
    data: str | None = None
    groups: int | None = None
    group_size: int | None = None
    k: int | None = None
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
        owner = "vae"
        self.full = check_bool(owner, "full", self.full)
        preset = FULL if self.full else QUICK
        complete_run_settings(self, owner, preset, ("groups", "group_size", "k", "hidden", "epochs", "batch_size"))
        if int(self.k or 0) >= int(self.group_size or 0):
            raise ValueError(f"{owner}: k must be an integer < group_size = {self.group_size}, got {self.k}")

    def resolved_options(self) -> dict[str, Any]:
        """The estimator options in effect: :data:`ESTIMATOR_DEFAULTS`, then ``options``
        (and, for an estimator that takes them, the sum-of-gamma ``k`` = the code's
        ``k`` and ``noise_scale`` = :data:`NOISE_SCALE`)."""
        options = _resolved_options(self.estimator, ESTIMATOR_DEFAULTS, self.options, int(self.k or 0))
        if "noise_scale" not in options and "noise_scale" in gradient_options(self.estimator):
            options["noise_scale"] = NOISE_SCALE
        return options

    def identity(self) -> dict[str, Any]:
        """The settings of :data:`IDENTITY_KEYS`, as a checkpoint records them."""
        return {key: value for key, value in asdict(self).items() if key in IDENTITY_KEYS}


__all__ = ["ESTIMATOR_DEFAULTS", "FULL", "IDENTITY_KEYS", "NOISE_SCALE", "QUICK", "VaeConfig"]

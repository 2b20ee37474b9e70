"""The configuration of a predict-then-optimize run: :class:`PtoConfig`, its checks and defaults."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..._checks import check_bool, check_choice, check_number, check_positive_int

PROBLEMS = ("shortest_path", "knapsack", "tsp")
"""The problems of PyEPO's benchmarks that :func:`~.trainer.train` knows."""

MODELS = ("linear", "mlp")

IDENTITY_KEYS = (
    "problem", "method", "options", "n_train", "n_test", "num_feat", "deg", "noise", "grid", "num_items", "dim",
    "capacity", "num_nodes", "data_seed", "model", "hidden", "epochs", "batch_size", "lr", "seed",
)
"""The settings that a resumed run must share with its checkpoint (the others, such as
``device`` or ``progress``, may change between the two)."""


@dataclass
class PtoConfig:
    """Everything that defines a predict-then-optimize run; checked when made.

    Attributes:
        out: Output folder (checkpoint, metrics.json, curves.png).
        problem: ``"shortest_path"`` (PyEPO's edge-weighted grid), ``"knapsack"`` or ``"tsp"``.
        method: A method of :data:`~.methods.METHODS` (``spo+``, ``dbb``, ``pfy``, ``imle``,
            ``aimle``, ``2s``, and the pool-based ones once available).
        options: Method options over the method's defaults (e.g. ``{"lam": 10}`` for dbb).
        n_train: Training instances.
        n_test: Test instances.
        num_feat: Features ``p`` (PyEPO: 5; 10 for the TSP is its generator's default).
        deg: Polynomial degree of the data.
        noise: Half-width of the multiplicative noise.
        grid: Shortest path: nodes per side of the square grid.
        num_items: Knapsack: items.
        dim: Knapsack: dimensions (more than 1 goes through the ``ilp`` solver).
        capacity: Knapsack: capacity per dimension (None: 20, PyEPO's tutorials).
        num_nodes: TSP: cities.
        data_seed: Seed of the data (train and test are one draw, split in order).
        model: ``"linear"`` (PyEPO's) or ``"mlp"`` (one hidden ReLU layer).
        hidden: Width of the MLP's hidden layer.
        epochs: Training epochs.
        batch_size: Instances per step.
        lr: Adam's learning rate.
        seed: Seed of the weights, the batch order and the methods' noise.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ...
        eval_batch_size: Instances per evaluation step.
        resume: Continue from ``out/checkpoint.pt`` when it exists.
        progress: Show a progress bar.
        plots: Write ``curves.png`` at the end.

    Raises:
        ValueError: Naming the first setting that is out of range.

    Example:
        >>> PtoConfig(problem="knapsack", method="dbb").method
        'dbb'
        >>> PtoConfig(deg=0)
        Traceback (most recent call last):
        ...
        ValueError: pto: deg must be an integer >= 1, got 0
    """

    out: str = "runs/pto/default"
    problem: str = "shortest_path"
    method: str = "spo+"
    options: dict[str, Any] = field(default_factory=dict)
    n_train: int = 1000
    n_test: int = 1000
    num_feat: int = 5
    deg: int = 4
    noise: float = 0.5
    grid: int = 5
    num_items: int = 32
    dim: int = 1
    capacity: float | None = None
    num_nodes: int = 20
    data_seed: int = 0
    model: str = "linear"
    hidden: int = 64
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-2
    seed: int = 0
    device: str = "auto"
    eval_batch_size: int = 1000
    resume: bool = False
    progress: bool = True
    plots: bool = True

    def __post_init__(self) -> None:
        # Checked values are stored back as plain Python numbers: the checkpoint records
        # them and loads with weights_only.
        from .methods import method_names

        owner = "pto"
        check_choice(owner, "problem", self.problem, PROBLEMS)
        check_choice(owner, "method", self.method, method_names())
        check_choice(owner, "model", self.model, MODELS)
        if not isinstance(self.options, dict):
            raise ValueError(f"{owner}: options must be a dict, got {type(self.options).__name__}")
        for name in ("n_train", "n_test", "num_feat", "deg", "num_items", "dim", "hidden", "epochs", "batch_size",
                     "eval_batch_size"):
            setattr(self, name, check_positive_int(owner, name, getattr(self, name)))
        self.grid = check_positive_int(owner, "grid", self.grid, minimum=2)
        self.num_nodes = check_positive_int(owner, "num_nodes", self.num_nodes, minimum=3)
        self.data_seed = check_positive_int(owner, "data_seed", self.data_seed, minimum=0)
        self.seed = check_positive_int(owner, "seed", self.seed, minimum=0)
        self.noise = check_number(owner, "noise", self.noise, nonnegative=True)
        self.lr = check_number(owner, "lr", self.lr, positive=True)
        if self.capacity is not None:
            self.capacity = check_number(owner, "capacity", self.capacity, nonnegative=True)
        for name in ("resume", "progress", "plots"):
            setattr(self, name, check_bool(owner, name, getattr(self, name)))

    def resolved_options(self) -> dict[str, Any]:
        """The method's options in effect: its defaults, then ``options``."""
        from .methods import METHODS

        return {**METHODS[self.method].defaults, **self.options}

    def identity(self) -> dict[str, Any]:
        """The settings of :data:`IDENTITY_KEYS`, as a checkpoint records them."""
        return {key: value for key, value in asdict(self).items() if key in IDENTITY_KEYS}


__all__ = ["IDENTITY_KEYS", "MODELS", "PROBLEMS", "PtoConfig"]

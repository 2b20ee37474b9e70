"""The Warcraft shortest-path task: data (synthetic generator, original-format loader),
CNNs, configuration, batching, evaluation and the trainer behind ``combgrad warcraft``."""

from .config import DIRECT, ESTIMATOR_DEFAULTS, FENCHEL_YOUNG_DEFAULTS, TrainConfig
from .data import (
    COST_LEVELS,
    SIZES,
    WarcraftSplit,
    generate_dataset,
    generate_split,
    load_split,
    optimum_is_unique,
    shortest_paths,
    write_dataset,
)
from .evaluation import Predictor, connects_corners, normalise_costs, path_metrics
from .model import DirectCNN, ResNetStemCNN, SmallCNN, build_model, standardise
from .trainer import train

__all__ = [
    "COST_LEVELS",
    "DIRECT",
    "ESTIMATOR_DEFAULTS",
    "FENCHEL_YOUNG_DEFAULTS",
    "SIZES",
    "DirectCNN",
    "Predictor",
    "ResNetStemCNN",
    "SmallCNN",
    "TrainConfig",
    "WarcraftSplit",
    "build_model",
    "connects_corners",
    "generate_dataset",
    "generate_split",
    "load_split",
    "normalise_costs",
    "optimum_is_unique",
    "path_metrics",
    "shortest_paths",
    "standardise",
    "train",
    "write_dataset",
]

"""The Warcraft shortest-path task: data (synthetic generator, original-format loader),
CNNs, and the trainer behind ``combgrad warcraft``."""

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
from .model import DirectCNN, ResNetStemCNN, SmallCNN, build_model
from .trainer import Predictor, TrainConfig, path_metrics, train

__all__ = [
    "COST_LEVELS",
    "SIZES",
    "DirectCNN",
    "Predictor",
    "ResNetStemCNN",
    "SmallCNN",
    "TrainConfig",
    "WarcraftSplit",
    "build_model",
    "generate_dataset",
    "generate_split",
    "load_split",
    "optimum_is_unique",
    "path_metrics",
    "shortest_paths",
    "train",
    "write_dataset",
]

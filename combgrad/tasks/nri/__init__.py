"""Neural relational inference with a spanning-tree latent graph (``combgrad nri``): the
springs simulator, the encoder/decoder networks, metrics, plots and the trainer."""

from .config import COUNTS, ESTIMATOR_DEFAULTS, FULL, NriConfig
from .data import NriSplit, Physics, energy, generate_split, load_split, random_tree, simulate, write_dataset
from .evaluation import edge_metrics
from .model import Decoder, Encoder, NRIModel
from .trainer import train

__all__ = [
    "COUNTS",
    "ESTIMATOR_DEFAULTS",
    "FULL",
    "Decoder",
    "Encoder",
    "NRIModel",
    "NriConfig",
    "NriSplit",
    "Physics",
    "edge_metrics",
    "energy",
    "generate_split",
    "load_split",
    "random_tree",
    "simulate",
    "train",
    "write_dataset",
]

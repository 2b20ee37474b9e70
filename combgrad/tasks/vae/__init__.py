"""A discrete VAE with k-subset latent codes (the I-MLE and AIMLE papers' experiment), behind ``combgrad vae``.

:func:`train` runs it on scikit-learn's bundled digits (or MNIST's IDX files),
the codes going through the ``topk`` solver and any gradient estimator.
"""

from .config import ESTIMATOR_DEFAULTS, FULL, QUICK, VaeConfig
from .model import DiscreteVAE, negative_elbo
from .trainer import evaluate, train

__all__ = ["ESTIMATOR_DEFAULTS", "FULL", "QUICK", "DiscreteVAE", "VaeConfig", "evaluate", "negative_elbo", "train"]

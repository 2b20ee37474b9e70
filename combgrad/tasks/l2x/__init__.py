"""L2X: instance-wise feature selection with a top-k selector (Chen et al. 2018), behind ``combgrad l2x``.

A selector picks ``k`` pixels of each digit through the ``topk`` solver and any
gradient estimator; a classifier reads only those pixels. :func:`train` runs it
on scikit-learn's bundled digits (or MNIST's IDX files); :mod:`.beer` reads the
BeerAdvocate reviews of the L2X and I-MLE papers when a user has them.
"""

from .config import ESTIMATOR_DEFAULTS, FULL, QUICK, L2xConfig
from .trainer import train

__all__ = ["ESTIMATOR_DEFAULTS", "FULL", "QUICK", "L2xConfig", "train"]

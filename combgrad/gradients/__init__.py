"""Gradient estimators for solvers, their noise distributions, and losses.

``get(name, **options)`` builds an estimator; ``names()`` lists them;
``register`` adds one. Importing this package registers the built-ins:
``aimle``, ``blackbox``, ``imle``, ``perturbation``, ``relaxed_topk``,
``score_function``, ``sst``, ``ste``.
"""

from . import losses, noise
from .base import Estimator, EstimatorOptions, score_sign
from .registry import get, names, options, register, unregister

# Built-in estimators register themselves on import.
from .aimle import AIMLE
from .blackbox import Blackbox
from .imle import IMLE
from .perturbation import Perturbation
from .relaxed_topk import RelaxedTopK
from .score_function import ScoreFunction
from .sst import SST
from .ste import STE

__all__ = [
    "AIMLE",
    "Blackbox",
    "Estimator",
    "EstimatorOptions",
    "IMLE",
    "Perturbation",
    "RelaxedTopK",
    "SST",
    "STE",
    "ScoreFunction",
    "get",
    "losses",
    "names",
    "options",
    "noise",
    "register",
    "score_sign",
    "unregister",
]

"""Gradient estimators for solvers, their noise distributions, and losses.

``get(name, **options)`` builds an estimator; ``names()`` lists them;
``register`` adds one. Importing this package registers the built-ins:
``aimle``, ``blackbox``, ``imle``, ``perturbation``, ``ste``.
"""

from . import losses, noise
from .base import Estimator, EstimatorOptions, score_sign
from .registry import get, names, options, register, unregister

# Built-in estimators register themselves on import.
from .aimle import AIMLE
from .blackbox import Blackbox
from .imle import IMLE
from .perturbation import Perturbation
from .score_function import ScoreFunction
from .ste import STE

__all__ = [
    "AIMLE",
    "Blackbox",
    "Estimator",
    "EstimatorOptions",
    "IMLE",
    "Perturbation",
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

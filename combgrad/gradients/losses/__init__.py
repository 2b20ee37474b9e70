"""Losses for learning through solvers (``cg.losses``), one module each.

This package's one job is the losses that compare a prediction with a target
through a solver: ``fenchel_young``, ``spo_plus`` and ``hamming``; PyEPO's
perturbation-gradient loss ``pg``; and the losses over a pool of known
solutions (``cg.adapters.SolutionPool``): ``nce``, ``cmap`` and ``ltr``
(listwise, pairwise, pointwise). Each returns one value per instance,
``[*batch]``, and is differentiable with plain autograd: each is written so that
its autograd gradient is the loss's known (sub)gradient, with solver outputs
held constant. What they share (target checks, solver resolution, refusing
negative inputs to solvers that clip them) is in ``_common.py``.

They share one argument convention: ``theta`` is the prediction (scores or
costs, the solver's input), ``y_true`` the target solution and ``theta_true``
the true costs where a loss needs them (SPO+). The old names ``theta_hat`` and
``c_true`` (SPO+) and ``sigma`` (Fenchel-Young) still work, with a
DeprecationWarning, for one release.

References:
    Q. Berthet, M. Blondel, O. Teboul, M. Cuturi, J.-P. Vert, F. Bach. Learning
    with Differentiable Perturbed Optimizers. NeurIPS 2020.

    A. N. Elmachtoub, P. Grigas. Smart "Predict, then Optimize". Management
    Science 68(1), 2022.

    V. Gupta, M. Huang. Decision-Focused Learning with Directional Gradients.
    NeurIPS 2024.

    M. Mulamba, J. Mandi, M. Diligenti, M. Lombardi, V. Bucarey, T. Guns.
    Contrastive Losses and Solution Caching for Predict-and-Optimize. IJCAI 2021.

    J. Mandi, V. Bucarey, M. Mulamba, T. Guns. Decision-Focused Learning: Through
    the Lens of Learning to Rank. ICML 2022.
"""

from .cmap import cmap
from .fenchel_young import fenchel_young
from .hamming import hamming
from .ltr import ltr
from .nce import nce
from .pg import pg
from .spo_plus import spo_plus

__all__ = ["cmap", "fenchel_young", "hamming", "ltr", "nce", "pg", "spo_plus"]

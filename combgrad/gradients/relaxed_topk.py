"""``relaxed_topk``: the relaxed (Gumbel) top-k of Xie & Ermon (2019), straight-through by default.

In score space, with Gumbel draws ``G_i``, noise scale ``sigma`` (``noise_scale``)
and temperature ``tau``, the perturbed scores ``r = s + sigma G_i`` are relaxed
into a soft k-hot vector by k successive softmaxes, each masking what the
previous ones took:

``alpha_1 = r;  a_j = softmax(alpha_j / tau);  alpha_{j+1} = alpha_j + log(1 - a_j);  y~ = sum_{j <= k} a_j``

(``1 - a_j`` is floored at the dtype's smallest normal number, so an entry
already taken gets a very negative but finite score and the gradient stays
finite). The entries of ``y~`` are ``>= 0`` and sum to ``k``; as ``tau -> 0``
it tends to the k-hot top-k of ``r``, which Gumbel noise makes a sample of k
items without replacement. At larger ``tau`` the mask ``log(1 - a_j)`` is weak
and one entry can exceed 1 (``r = [5, 0, -1, -2]``, ``tau = 1``, ``k = 3``
gives 1.89 for the first): the relaxation is not a projection onto the
k-subset polytope, so keep ``tau`` small (the paper anneals it).

- ``hard=True`` (default, straight-through): forward returns the exact k-hot
  top-k of ``r`` (the solver's, so its tie rule), backward the gradient of ``y~``;
- ``hard=False``: forward returns ``y~`` itself.

Only a ``topk`` solver (or argmax, ``k = 1``, where this is the Gumbel-softmax)
has this relaxation: other solvers are refused. The shared mechanics are in
:mod:`.relaxation`.

References:
    S. M. Xie, S. Ermon. Reparameterizable Subset Sampling via Continuous
    Relaxations. IJCAI 2019.
"""

from __future__ import annotations

import dataclasses

import torch

from ..solvers.base import Solver
from .base import Estimator
from .relaxation import RelaxationFunction, RelaxationOptions, check_relaxed_solver
from .registry import register


@dataclasses.dataclass(frozen=True)
class RelaxedTopKOptions(RelaxationOptions):
    """Validated options of :class:`RelaxedTopK` (see there): the one place they are written."""

    owner = "relaxed_topk"


def relaxed_topk_relaxation(perturbed: torch.Tensor, tau: float, k: int) -> torch.Tensor:
    """Xie & Ermon's soft k-hot of the perturbed scores ``r [*, n]``: ``[*, n]``, entries >= 0 summing to k.

    Example:
        >>> relaxed_topk_relaxation(torch.tensor([3.0, 2.0, -5.0]), 0.1, 2).round(decimals=3)
        tensor([1., 1., 0.])
    """
    floor = torch.finfo(perturbed.dtype).tiny
    alpha = perturbed
    khot = torch.zeros_like(perturbed)
    for _ in range(k):
        taken = torch.softmax(alpha / tau, dim=-1)
        khot = khot + taken
        alpha = alpha + torch.log(torch.clamp(1.0 - taken, min=floor))
    return khot


class RelaxedTopK(Estimator):
    """Relaxed top-k (Xie & Ermon 2019) for a top-k solver, straight-through by default.

    Forward returns the k-hot top-k of ``s + noise_scale G_i`` per sample
    (``hard=True``) or its relaxation (``hard=False``; see the module
    docstring), averaged over ``samples`` (all of them with ``reduce=False``);
    backward is the relaxation's gradient, computed by autograd from the saved
    perturbed scores (no solver call). In eval mode the noise is off unless
    ``sample_in_eval``.

    Args:
        samples: Number of samples ``S >= 1`` (default 1).
        noise: ``"gumbel"`` (default), ``"normal"`` or ``"none"``.
        noise_scale: Scale of the noise ``>= 0`` (default 1, the standard Gumbel).
        reduce: Return the mean of the samples (default True); False returns
            all of them, ``[S, *theta.shape]``.
        sample_in_eval: Keep drawing noise in eval mode (default False).
        tau: Softmax temperature ``> 0`` (default 1; not ``temperature``, which
            names the noise scale in I-MLE).
        hard: Straight-through (default True): forward the exact k-hot,
            backward the relaxation's gradient; False forwards the relaxation.

    Raises:
        ValueError: On invalid options, naming the argument; in forward, for a
            solver other than topk (or argmax).
        OptionError: On an unknown option (a TypeError and a ValueError).

    Example:
        >>> import torch, combgrad as cg
        >>> layer = cg.DifferentiableSolver("topk", estimator="relaxed_topk", k=2, tau=0.5)
        >>> theta = torch.tensor([0.1, 2.0, 1.5, -1.0], requires_grad=True)
        >>> y = layer(theta, generator=torch.Generator().manual_seed(0))
        >>> y.sum().item(), bool(((y == 0) | (y == 1)).all())  # an exact k-hot forward
        (2.0, True)
        >>> y.backward(torch.tensor([1.0, 0.0, 0.0, 0.0]))
        >>> bool(theta.grad[0] > 0)  # more of entry 0: raise its score
        True

    References:
        S. M. Xie, S. Ermon. Reparameterizable Subset Sampling via Continuous
        Relaxations. IJCAI 2019.
    """

    name = "relaxed_topk"
    Options = RelaxedTopKOptions

    def forward(
        self, theta: torch.Tensor, solver: Solver, *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """k-hot (or relaxed) ``y [*, n]`` of ``theta [*, n]`` (``[S, *, n]`` unreduced)."""
        self.check_input(theta, solver)
        k = check_relaxed_solver("relaxed_topk", solver, one_hot=False)
        if theta.shape[-1] < k:  # the soft forward never reaches the solver's own check
            raise ValueError(
                f"relaxed_topk: theta's last dim must be at least k={k}, got shape {tuple(theta.shape)}"
            )
        return RelaxationFunction.apply(
            theta, solver, self.options, generator, self.sampling(), relaxed_topk_relaxation, k, "relaxed_topk"
        )


register("relaxed_topk", RelaxedTopK)

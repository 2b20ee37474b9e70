"""``sst``: the straight-through Gumbel-softmax estimator for argmax (Jang et al. 2017).

In score space, with Gumbel draws ``G_i`` (``i = 1..S``), noise scale ``sigma``
(``noise_scale``) and softmax temperature ``tau``, the relaxation of the
one-hot argmax of ``r_i = s + sigma G_i`` is ``softmax(r_i / tau)``:

- ``hard=True`` (default, straight-through): forward returns the exact one-hot
  ``argmax(r_i)`` (the solver's, so its tie rule), backward the softmax's
  vector-Jacobian product at ``r_i``,
  ``softmax(r_i / tau) * (dy - <softmax(r_i / tau), dy>) / tau``;
- ``hard=False``: forward returns ``softmax(r_i / tau)`` itself (the
  Gumbel-softmax / Concrete sample), backward its exact gradient.

As ``tau -> 0`` the softmax tends to the hard sample (and its gradient grows
like ``1 / tau``); the papers anneal ``tau`` from 1 towards 0.1–0.5. Only argmax
(or ``topk`` with ``k=1``) has this relaxation: other solvers are refused.
The shared mechanics (options, checks, the one autograd function) are in
:mod:`.relaxation`, with :mod:`.relaxed_topk`.

References:
    E. Jang, S. Gu, B. Poole. Categorical Reparameterization with
    Gumbel-Softmax. ICLR 2017.

    C. J. Maddison, A. Mnih, Y. W. Teh. The Concrete Distribution: A Continuous
    Relaxation of Discrete Random Variables. ICLR 2017.
"""

from __future__ import annotations

import dataclasses

import torch

from ..solvers.base import Solver
from .base import Estimator
from .relaxation import RelaxationFunction, RelaxationOptions, check_relaxed_solver
from .registry import register


@dataclasses.dataclass(frozen=True)
class SSTOptions(RelaxationOptions):
    """Validated options of :class:`SST` (see there): the one place they are written."""

    owner = "sst"


def gumbel_softmax_relaxation(perturbed: torch.Tensor, tau: float, k: int = 1) -> torch.Tensor:
    """``softmax(r / tau)`` over the last dim of the perturbed scores ``r [*, n]`` (``k`` is 1).

    Example:
        >>> gumbel_softmax_relaxation(torch.tensor([0.0, 0.0]), 0.5)
        tensor([0.5000, 0.5000])
    """
    return torch.softmax(perturbed / tau, dim=-1)


class SST(Estimator):
    """Straight-through Gumbel-softmax (Jang et al. 2017) for an argmax solver.

    Forward returns the one-hot ``argmax(s + noise_scale G_i)`` of each sample
    (``hard=True``) or the relaxed ``softmax((s + noise_scale G_i) / tau)``
    (``hard=False``), averaged over ``samples`` (all of them with
    ``reduce=False``); backward is the relaxation's gradient. In eval mode the
    noise is off (the exact argmax forward, the gradient of ``softmax(s / tau)``)
    unless ``sample_in_eval``. Backward calls no solver.

    Args:
        samples: Number of samples ``S >= 1`` (default 1, as in the paper).
        noise: ``"gumbel"`` (default), ``"normal"`` or ``"none"`` (a
            deterministic straight-through softmax).
        noise_scale: Scale of the noise ``>= 0`` (default 1, the standard Gumbel).
        reduce: Return the mean of the samples (default True); False returns
            all of them, ``[S, *theta.shape]``.
        sample_in_eval: Keep drawing noise in eval mode (default False).
        tau: Softmax temperature ``> 0`` (default 1): the relaxation is
            ``softmax(r / tau)``. Not ``temperature``, which names the noise
            scale in I-MLE (see :mod:`.relaxation`).
        hard: Straight-through (default True): forward the exact one-hot,
            backward the softmax's gradient; False forwards the softmax.

    Raises:
        ValueError: On invalid options, naming the argument; in forward, for a
            solver other than argmax (or topk with ``k=1``).
        OptionError: On an unknown option (a TypeError and a ValueError).

    Example:
        >>> import torch, combgrad as cg
        >>> estimator = cg.gradients.get("sst", tau=0.5, noise="none")
        >>> theta = torch.tensor([0.0, 1.0, 0.5], requires_grad=True)
        >>> y = estimator(theta, cg.solvers.get("argmax"))
        >>> y.detach()  # the exact argmax
        tensor([0., 1., 0.])
        >>> y.backward(torch.tensor([1.0, 0.0, 0.0]))
        >>> theta.grad  # the gradient of softmax(theta / 0.5)[0]
        tensor([ 0.1639, -0.1198, -0.0441])
        >>> layer = cg.DifferentiableSolver("argmax", estimator="sst", tau=0.5)  # Gumbel noise by default
        >>> layer(theta, generator=torch.Generator().manual_seed(0)).sum().item()
        1.0

    References:
        E. Jang, S. Gu, B. Poole. Categorical Reparameterization with
        Gumbel-Softmax. ICLR 2017.
    """

    name = "sst"
    Options = SSTOptions

    def forward(
        self, theta: torch.Tensor, solver: Solver, *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """One-hot (or relaxed) ``y [*, n]`` of ``theta [*, n]`` (``[S, *, n]`` unreduced)."""
        self.check_input(theta, solver)
        k = check_relaxed_solver("sst", solver, one_hot=True)
        return RelaxationFunction.apply(
            theta, solver, self.options, generator, self.sampling(), gumbel_softmax_relaxation, k, "sst"
        )


register("sst", SST)

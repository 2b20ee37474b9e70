"""What every estimator shares: the score-space sign, batched solving, option checks.

Estimators work in *score* space: ``s = theta`` for a "max" solver and
``s = -theta`` for a "min" one, so ``y*(s) = argmax_y <s, y>`` in both cases and
one formula serves both senses. :func:`score_sign` is the only place that sign is
decided; :func:`solve_scores` maps scores back to the solver's input and solves
all of them in one batched call.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..solvers import registry as solver_registry
from .._checks import check_choice, check_positive_int, check_sense, check_theta
from ..solvers.base import Solver
from . import noise as noise_module


def score_sign(sense: str) -> int:
    """+1 for a "max" solver, -1 for a "min" one: ``s = sign * theta`` and ``theta = sign * s``.

    Example:
        >>> score_sign("min")
        -1
    """
    return 1 if check_sense("score_sign", sense) == "max" else -1


def solve_scores(solver: Solver, scores: torch.Tensor) -> torch.Tensor:
    """``y*(s) = argmax_y <s, y>`` for every instance of ``scores [*, *event]``, in ONE solver call.

    The leading dims (samples, batch, the two sides of a central difference) are
    flattened into a single batch so that the solver sees one ``[N, *event]``
    tensor and can spread it over its threads or workers.

    Example:
        >>> import torch, combgrad as cg
        >>> solve_scores(cg.solvers.get("argmax"), torch.tensor([[1.0, 2.0], [3.0, 0.0]]))
        tensor([[0., 1.],
                [1., 0.]])
    """
    event_ndim = solver.event_ndim
    event_shape = scores.shape[scores.ndim - event_ndim :]
    batch_shape = scores.shape[: scores.ndim - event_ndim]
    flat = (score_sign(solver.sense) * scores).reshape(math.prod(batch_shape), *event_shape)
    y = solver(flat)
    return y.reshape(*batch_shape, *event_shape).to(device=scores.device, dtype=scores.dtype)


def solve_perturbed(
    solver: Solver, scores: torch.Tensor, draws: torch.Tensor, scale: float | torch.Tensor
) -> torch.Tensor:
    """``y*(s + scale * Z_i)`` for all draws ``Z [S, *s.shape]`` in one solver call: ``[S, *s.shape]``.

    ``scores`` may carry extra leading dims that broadcast against ``draws`` (the
    two sides of a central difference: ``[2, 1, *shape]`` against ``[S, *shape]``).

    Example:
        >>> import torch, combgrad as cg
        >>> solve_perturbed(cg.solvers.get("argmax"), torch.tensor([0.0, 1.0]), torch.zeros(3, 2), 1.0).shape
        torch.Size([3, 2])
    """
    return solve_scores(solver, scores + scale * draws)


def event_sum(values: torch.Tensor, event_ndim: int) -> torch.Tensor:
    """Sum over the last ``event_ndim`` dims: ``[*, *event] -> [*]``."""
    if event_ndim == 0:
        return values
    return values.sum(dim=tuple(range(-event_ndim, 0)))


def event_norm(values: torch.Tensor, event_ndim: int) -> torch.Tensor:
    """Euclidean norm over the last ``event_ndim`` dims: ``[*, *event] -> [*]``."""
    return event_sum(values * values, event_ndim).sqrt()


def resolve_solver(owner: str, solver: Any, options: dict[str, Any]) -> Solver:
    """A solver object from a registry name plus ``options``, or ``solver`` itself.

    Raises:
        TypeError: If options are given with a solver object, or ``solver`` is
            neither a name nor an object with ``sense``, ``event_ndim`` and ``__call__``.
        KeyError: If the name is unknown.
    """
    if isinstance(solver, str):
        return solver_registry.get(solver, **options)
    if options:
        raise TypeError(
            f"{owner}: solver options {sorted(options)} need a solver name; "
            "configure the solver object instead"
        )
    if not (callable(solver) and hasattr(solver, "sense") and hasattr(solver, "event_ndim")):
        raise TypeError(
            f"{owner}: solver must be a registry name or a solver with sense, event_ndim and __call__, "
            f"got {type(solver).__name__}"
        )
    check_sense(owner, solver.sense)
    return solver


def check_noise_options(
    owner: str, noise: object, k: object, iterations: object, choices: tuple[str, ...]
) -> None:
    """Validate a ``noise`` name and the sum-of-gamma parameters ``k`` (or None) and ``iterations``."""
    check_choice(owner, "noise", noise, choices)
    if k is not None:
        check_positive_int(owner, "k", k)
    check_positive_int(owner, "iterations", iterations)


def noise_k(k: int | None, solver: Solver) -> int:
    """The sum-of-gamma ``k``: the option if set, else the solver's own ``k`` (top-k), else 1."""
    if k is not None:
        return k
    solver_k = getattr(solver, "k", None)
    if isinstance(solver_k, int) and not isinstance(solver_k, bool) and solver_k >= 1:
        return solver_k
    return 1


def draw_noise(
    name: str,
    samples: int,
    theta: torch.Tensor,
    *,
    k: int = 1,
    iterations: int = 10,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``samples`` noise draws shaped like ``theta``: ``[samples, *theta.shape]`` on its device and dtype."""
    return noise_module.sample(
        name,
        (samples, *theta.shape),
        k=k,
        iterations=iterations,
        dtype=theta.dtype,
        device=theta.device,
        generator=generator,
    )


class Estimator(nn.Module):
    """Base class of gradient estimators: ``y = estimator(theta, solver, generator=None)``.

    Subclasses hold their validated options in ``self.options`` (a frozen
    dataclass) and implement :meth:`forward` with one module-level
    ``torch.autograd.Function``. Being modules, estimators with adaptive state
    (AIMLE) keep it in buffers that move with ``.to()`` and are saved by
    ``state_dict``.
    """

    name: str = "estimator"
    options: Any

    def check_input(self, theta: torch.Tensor, solver: Solver) -> torch.Tensor:
        """Check that ``theta`` is a finite floating tensor with the solver's event dims."""
        return check_theta(self.name, theta, solver.event_ndim)

    def forward(  # pragma: no cover - abstract
        self, theta: torch.Tensor, solver: Solver, *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        fields = getattr(self.options, "__dataclass_fields__", {})
        return ", ".join(f"{name}={getattr(self.options, name)!r}" for name in fields)

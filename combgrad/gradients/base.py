"""What every estimator shares: the score-space sign, batched solving, options written once.

Estimators work in *score* space: ``s = theta`` for a "max" solver and
``s = -theta`` for a "min" one, so ``y*(s) = argmax_y <s, y>`` in both cases and
one formula serves both senses. :func:`score_sign` is the only place that sign is
decided; :func:`solve_scores` maps scores back to the solver's input and solves
all of them in one batched call.

Each estimator's options are written once, as the fields of a frozen
:class:`EstimatorOptions` dataclass (default and check on one line, see
:func:`option`); :class:`Estimator` builds the constructor from them, so
``inspect.signature(IMLE)`` lists every option keyword-only with its default and
adding an option is one line (plus its ``Args:`` entry in the class docstring).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from ..solvers import registry as solver_registry
from .._checks import (
    all_finite,
    check_bool,
    check_choice,
    check_number,
    check_options,
    check_positive_int,
    check_sense,
    check_theta,
    rename_deprecated,
)
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


def check_incoming_gradient(owner: str, dy: torch.Tensor) -> torch.Tensor:
    """Return ``dy`` (the gradient flowing back into a layer's output) if it is finite, else raise.

    Without this check a NaN from the loss reaches the solver in backward, which
    then blames its own input (``shortest_path: theta must be finite``) although
    the user's theta is finite.

    Raises:
        ValueError: If ``dy`` holds NaN or inf.

    Example:
        >>> check_incoming_gradient("imle", torch.tensor([float("nan")]))
        Traceback (most recent call last):
        ...
        ValueError: imle: the gradient flowing back into the layer's output is NaN or inf; check the loss (and anything between the layer and the loss)
    """
    if not all_finite(dy):
        raise ValueError(
            f"{owner}: the gradient flowing back into the layer's output is NaN or inf; "
            "check the loss (and anything between the layer and the loss)"
        )
    return dy


# An option's check: ``check(owner, argument, value) -> normalised value``, raising
# ValueError in the library's one wording ("<owner>: <argument> must be ...").
OptionCheck = Callable[[str, str, Any], Any]


def option(default: Any, check: OptionCheck | None = None) -> Any:
    """One option of an :class:`EstimatorOptions` dataclass: its default and its check.

    The check runs on construction and its return value is stored, so
    ``lam=np.float32(10)`` is kept as the float ``10.0``.

    Args:
        default: The option's default value.
        check: ``check(owner, argument, value) -> value`` (see :func:`number`,
            :func:`choice`, :func:`optional`), or None for no check.

    Returns:
        A ``dataclasses.field`` carrying the check in its metadata.

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass(frozen=True)
        ... class MyOptions(EstimatorOptions):
        ...     owner = "mine"
        ...     lam: float = option(10.0, number(positive=True))
        >>> MyOptions(lam=torch.tensor(2)).lam  # stored as a Python float
        2.0
        >>> MyOptions(lam=0)
        Traceback (most recent call last):
        ...
        ValueError: mine: lam must be a finite number > 0, got 0
    """
    return dataclasses.field(default=default, metadata={"check": check})


def number(**bounds: Any) -> OptionCheck:
    """The check of a finite real option with ``bounds`` (``positive``, ``nonnegative``, ``below``, ...).

    Example:
        >>> number(nonnegative=True)("imle", "noise_scale", 2)
        2.0
    """
    return functools.partial(_check_number, bounds)


def _check_number(bounds: dict[str, Any], owner: str, argument: str, value: object) -> float:
    return check_number(owner, argument, value, **bounds)


def choice(choices: tuple[str, ...]) -> OptionCheck:
    """The check of an option that must be one of ``choices``.

    Example:
        >>> choice(("batch", "instance"))("aimle", "norm", "batch")
        'batch'
    """
    return functools.partial(_check_choice, choices)


def _check_choice(choices: tuple[str, ...], owner: str, argument: str, value: object) -> object:
    return check_choice(owner, argument, value, choices)


def optional(check: OptionCheck) -> OptionCheck:
    """``check``, letting None through (an option whose None means "derive it").

    Example:
        >>> optional(positive_int)("imle", "k", None) is None, optional(positive_int)("imle", "k", 3)
        (True, 3)
    """
    return functools.partial(_check_optional, check)


def _check_optional(check: OptionCheck, owner: str, argument: str, value: object) -> object:
    return None if value is None else check(owner, argument, value)


# Module-level names for the checks used as they are (no bounds to bind).
positive_int: OptionCheck = check_positive_int
boolean: OptionCheck = check_bool


@dataclasses.dataclass(frozen=True)
class EstimatorOptions:
    """The validated, frozen options of an estimator: the ONE place each option is written.

    Subclasses are frozen dataclasses whose fields are the options, each declared
    with :func:`option` (default and check); ``owner`` names the estimator in
    error messages and ``deprecated`` maps old option names to new ones (accepted
    with a DeprecationWarning). ``validate`` holds checks that involve several
    options.
    """

    owner: ClassVar[str] = "estimator"
    deprecated: ClassVar[Mapping[str, str]] = {}

    def __post_init__(self) -> None:
        for entry in dataclasses.fields(self):
            check = entry.metadata.get("check")
            if check is not None:
                # frozen: the normalised value replaces the given one once, here.
                object.__setattr__(self, entry.name, check(self.owner, entry.name, getattr(self, entry.name)))
        self.validate()

    def validate(self) -> None:
        """Checks that involve several options (none by default)."""

    @classmethod
    def names(cls) -> list[str]:
        """The option names, in declaration order."""
        return [entry.name for entry in dataclasses.fields(cls)]


@dataclasses.dataclass(frozen=True)
class SamplingOptions(EstimatorOptions):
    """Options shared by every perturbation-based estimator (perturbation, imle, aimle).

    The same names mean the same thing in all of them, so one option set
    (``samples``, ``noise``, ``noise_scale``) can be swept across estimators.
    Subclasses redeclare a field to change its default or check.
    """

    samples: int = option(1, positive_int)
    noise: str = option("normal", choice(noise_module.NOISES))
    noise_scale: float = option(1.0, number(nonnegative=True))
    reduce: bool = option(True, boolean)
    sample_in_eval: bool = option(False, boolean)


class _Deprecated:
    """The signature default of a deprecated option name (it is never filled in)."""

    def __repr__(self) -> str:
        return "<deprecated>"


DEPRECATED: Any = _Deprecated()


def _constructor_signature(options_class: type[EstimatorOptions]) -> inspect.Signature:
    """``(self, *, <every option>=<default>, <deprecated name>=<deprecated>)`` from the dataclass."""
    parameters = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    for entry in dataclasses.fields(options_class):
        parameters.append(
            inspect.Parameter(entry.name, inspect.Parameter.KEYWORD_ONLY, default=entry.default, annotation=entry.type)
        )
    # Deprecated names are in the signature so that the registry's and
    # differentiable()'s signature-based option routing still accept them.
    for old in options_class.deprecated:
        parameters.append(inspect.Parameter(old, inspect.Parameter.KEYWORD_ONLY, default=DEPRECATED))
    return inspect.Signature(parameters)


class Estimator(nn.Module):
    """Base class of gradient estimators: ``y = estimator(theta, solver, generator=None)``.

    A subclass sets ``name`` and ``Options`` (an :class:`EstimatorOptions`
    dataclass) and implements :meth:`forward` with one module-level
    ``torch.autograd.Function``; its constructor is generated from ``Options``
    (keyword-only options, unknown ones raise
    :class:`~combgrad.errors.OptionError`, deprecated names warn) and stores the
    validated options in ``self.options``. Adaptive state (AIMLE's beta) is made
    in :meth:`init_state` as buffers, which move with ``.to()`` and are saved by
    ``state_dict``.
    """

    name: ClassVar[str] = "estimator"
    Options: ClassVar[type[EstimatorOptions]] = EstimatorOptions
    options: Any

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            return  # a hand-written constructor is the subclass's own business

        def __init__(self: Estimator, **options: Any) -> None:
            Estimator.__init__(self, **options)

        __init__.__signature__ = _constructor_signature(cls.Options)  # type: ignore[attr-defined]
        __init__.__qualname__ = f"{cls.__qualname__}.__init__"
        __init__.__doc__ = f"Build {cls.__name__} from keyword-only options (see the class docstring)."
        setattr(cls, "__init__", __init__)

    def __init__(self, **options: Any) -> None:
        super().__init__()
        # stacklevel 4: rename_deprecated <- here <- generated __init__ <- the caller.
        options = rename_deprecated(self.name, dict(options), self.Options.deprecated, stacklevel=4)
        check_options(self.name, options, self.Options.names())
        self.options = self.Options(**options)
        self.init_state()

    def init_state(self) -> None:
        """Register adaptive state as buffers (none by default); runs after ``self.options`` is set."""

    def check_input(self, theta: torch.Tensor, solver: Solver) -> torch.Tensor:
        """Check that ``theta`` is a finite floating tensor with the solver's event dims."""
        return check_theta(self.name, theta, solver.event_ndim)

    def sampling(self) -> bool:
        """Whether forward draws noise: in training mode, or in eval mode with ``sample_in_eval=True``.

        In eval mode a perturbation-based estimator returns the exact solution
        ``y*(theta)``, deterministic like dropout in eval.
        """
        return self.training or bool(getattr(self.options, "sample_in_eval", False))

    def forward(  # pragma: no cover - abstract
        self, theta: torch.Tensor, solver: Solver, *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        fields = getattr(self.options, "__dataclass_fields__", {})
        return ", ".join(f"{name}={getattr(self.options, name)!r}" for name in fields)

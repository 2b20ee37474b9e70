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
    check_finite,
    check_number,
    check_options,
    check_positive_int,
    check_sense,
    check_tensor,
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


def check_solver_input(owner: str, values: torch.Tensor, blame: Callable[[], object] | None = None) -> None:
    """Raise ValueError unless the solver input ``values`` an estimator built is finite: ONE host read.

    This is the estimators' one finiteness check per pass: the solver input
    (perturbed scores in forward, moved scores in backward) is non-finite exactly
    when one of its sources is (theta, the incoming gradient) or when adding them
    overflowed the dtype, so checking it covers all of them at the cost of one
    reduction and one read. Only on failure does ``blame()`` run: it raises the
    source's own error (``imle: theta must be finite``); if it returns, the sum
    overflowed and the error says so. Without ``blame`` the input is the
    caller's theta itself, and the error is the solvers' own
    (``<owner>: theta must be finite``).

    Raises:
        ValueError: If ``values`` holds NaN or inf.

    Example:
        >>> check_solver_input("imle", torch.tensor([6e4], dtype=torch.float16) * 2, blame=lambda: None)
        Traceback (most recent call last):
        ...
        ValueError: imle: the solver input built from theta overflowed torch.float16 (finite theta and gradient, NaN or inf after adding noise or the target step); rescale theta, lower noise_scale or lam, or use a wider dtype
    """
    if all_finite(values):
        return
    if blame is None:
        check_finite(owner, "theta", values)  # raises
    else:
        blame()
    raise ValueError(
        f"{owner}: the solver input built from theta overflowed {values.dtype} (finite theta and gradient, "
        "NaN or inf after adding noise or the target step); rescale theta, lower noise_scale or lam, "
        "or use a wider dtype"
    )


def call_solver(solver: Solver, theta: torch.Tensor) -> torch.Tensor:
    """``solver(theta)`` for a flat ``theta [N, *event]`` whose finiteness the caller has checked.

    A :class:`~combgrad.solvers.base.BatchSolver` re-reads the finiteness of its
    input on every call (a host sync on a GPU, and a full pass over the batch);
    estimators check their solver inputs once (:func:`check_solver_input`), so
    they skip it here: a solver with a ``solve_prechecked(theta)`` method (every
    ``BatchSolver``; its event checks such as ``negative="raise"`` still run) is
    called through it, any other solver as it is.

    Example:
        >>> import torch, combgrad as cg
        >>> call_solver(cg.solvers.get("argmax"), torch.tensor([[1.0, 2.0]]))
        tensor([[0., 1.]])
    """
    prechecked = getattr(solver, "solve_prechecked", None)
    if callable(prechecked):
        return prechecked(theta)
    return solver(theta)


def solve_scores(
    solver: Solver,
    scores: torch.Tensor,
    *,
    owner: str | None = None,
    blame: Callable[[], object] | None = None,
) -> torch.Tensor:
    """``y*(s) = argmax_y <s, y>`` for every instance of ``scores [*, *event]``, in ONE solver call.

    The leading dims (samples, batch, the two sides of a central difference) are
    flattened into a single batch so that the solver sees one ``[N, *event]``
    tensor and can spread it over its threads or workers. The solver input is
    checked for finiteness once, here (:func:`check_solver_input`, errors named
    by ``owner``, the solver's name by default, and raised by ``blame`` when a
    source of the input is at fault), and the solver does not check it again
    (:func:`call_solver`). The result is on ``scores``' device and dtype.

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
    check_solver_input(getattr(solver, "name", "solver") if owner is None else owner, flat, blame)
    y = call_solver(solver, flat)
    return y.reshape(*batch_shape, *event_shape).to(device=scores.device, dtype=scores.dtype)


def solve_perturbed(
    solver: Solver,
    scores: torch.Tensor,
    draws: torch.Tensor,
    scale: float | torch.Tensor,
    *,
    owner: str | None = None,
    blame: Callable[[], object] | None = None,
) -> torch.Tensor:
    """``y*(s + scale * Z_i)`` for all draws ``Z [S, *s.shape]`` in one solver call: ``[S, *s.shape]``.

    ``scores`` may carry extra leading dims that broadcast against ``draws`` (the
    two sides of a central difference: ``[2, 1, *shape]`` against ``[S, *shape]``).
    ``owner`` and ``blame`` are those of :func:`solve_scores`.

    Example:
        >>> import torch, combgrad as cg
        >>> solve_perturbed(cg.solvers.get("argmax"), torch.tensor([0.0, 1.0]), torch.zeros(3, 2), 1.0).shape
        torch.Size([3, 2])
    """
    return solve_scores(solver, scores + scale * draws, owner=owner, blame=blame)


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


def check_theta_structure(owner: str, theta: object, event_ndim: int) -> torch.Tensor:
    """:func:`~combgrad._checks.check_theta` without its finiteness read (no host sync).

    For callers whose solver input, built from theta, is checked for finiteness
    once by :func:`check_solver_input` (with :func:`blame_theta`).

    Example:
        >>> check_theta_structure("imle", torch.tensor([float("nan")]), 1)  # finiteness is read later
        tensor([nan])
    """
    theta = check_tensor(owner, "theta", theta)
    if theta.ndim < event_ndim or not theta.is_floating_point():
        check_theta(owner, theta, event_ndim)  # raises the library's message
    return theta


def blame_theta(owner: str, theta: torch.Tensor, event_ndim: int) -> Callable[[], object]:
    """The ``blame`` of a forward's solver input (:func:`check_solver_input`): raise if ``theta`` is not finite.

    Example:
        >>> blame_theta("imle", torch.tensor([float("inf")]), 1)()
        Traceback (most recent call last):
        ...
        ValueError: imle: theta must be finite, got NaN or inf values
    """
    return functools.partial(check_theta, owner, theta, event_ndim)


def blame_gradient(owner: str, dy: torch.Tensor) -> Callable[[], object]:
    """The ``blame`` of a backward's solver input: raise if the incoming gradient ``dy`` is not finite.

    Example:
        >>> blame_gradient("imle", torch.tensor([1.0]))()
        tensor([1.])
    """
    return functools.partial(check_incoming_gradient, owner, dy)


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
        """Check that ``theta`` is a floating tensor with the solver's event dims, reading no value.

        Its finiteness is read once, with the forward's solver input
        (:func:`check_solver_input`, which calls :meth:`blame_theta` when that
        input is not finite), so that a forward pass syncs with the host once.
        """
        return check_theta_structure(self.name, theta, solver.event_ndim)

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
        # dataclasses.fields() leaves out the ClassVar entries (owner, deprecated).
        fields = dataclasses.fields(self.options) if dataclasses.is_dataclass(self.options) else ()
        return ", ".join(f"{field.name}={getattr(self.options, field.name)!r}" for field in fields)

"""``differentiable``: turn a solver (a registry name, an object, or a function) into a layer.

A :class:`DifferentiableSolver` is an ``nn.Module`` that pairs a solver with a
gradient estimator: ``layer(theta)`` returns the estimator's forward (exact or
perturbed solutions, shaped like theta) and backpropagates the estimator's
gradient. :func:`differentiable` builds one from keyword options, routing each
option to whichever of the estimator and the solver takes it.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .. import pool
from ..gradients import registry as estimator_registry
from ..gradients.base import resolve_solver
from ..solvers import registry as solver_registry
from .._checks import check_sense
from ..errors import OptionError
from ..solvers.base import Solver
from .from_function import from_function

__all__ = ["DifferentiableSolver", "differentiable"]


def _keywords(factory: Callable[..., Any], skip: tuple[str, ...] = ()) -> tuple[set[str], bool]:
    """(names ``factory`` takes by keyword, whether it also takes ``**kwargs``)."""
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: assume it takes anything
        return set(), True
    names = {
        parameter.name
        for parameter in parameters
        if parameter.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        and parameter.name not in skip
    }
    return names, any(parameter.kind == inspect.Parameter.VAR_KEYWORD for parameter in parameters)


def _split_options(
    options: dict[str, Any],
    estimator: tuple[str, set[str], bool],
    solver: tuple[str, set[str], bool],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Route ``options`` to the estimator and the solver factory.

    A name the estimator takes goes to it; a name the solver takes goes to the
    solver; a name both take goes to both (``k`` is top-k's subset size and the
    sum-of-gamma shape, which should agree); any other name goes to a factory
    that takes ``**kwargs`` (the solver's first), else raises OptionError
    (a TypeError and a ValueError).
    """
    estimator_label, estimator_names, estimator_var = estimator
    solver_label, solver_names, solver_var = solver
    estimator_options: dict[str, Any] = {}
    solver_options: dict[str, Any] = {}
    for name, value in options.items():
        known = False
        if name in estimator_names:
            estimator_options[name] = value
            known = True
        if name in solver_names:
            solver_options[name] = value
            known = True
        if known:
            continue
        if solver_var:
            solver_options[name] = value
        elif estimator_var:
            estimator_options[name] = value
        else:
            raise OptionError(
                f"differentiable: unexpected option {name!r}; {estimator_label} takes "
                f"{sorted(estimator_names) or 'no options'} and {solver_label} takes "
                f"{sorted(solver_names) or 'no options'}"
            )
    return estimator_options, solver_options


def _estimator_keywords(estimator: Any) -> tuple[str, set[str], bool]:
    if isinstance(estimator, str):
        return (f"estimator {estimator!r}", *_keywords(estimator_registry.factory(estimator)))
    return (f"the given {type(estimator).__name__} estimator object", set(), False)


def _build_estimator(estimator: Any, options: dict[str, Any]) -> Callable[..., torch.Tensor]:
    if isinstance(estimator, str):
        return estimator_registry.get(estimator, **options)
    if not callable(estimator):
        raise TypeError(
            f"differentiable: estimator must be a registry name or an estimator module, "
            f"got {type(estimator).__name__}"
        )
    return estimator


class DifferentiableSolver(nn.Module):
    """A solver with a gradient estimator, as an ``nn.Module``: ``y = layer(theta)``.

    ``theta [*, *event]`` (scores for a "max" solver, costs for a "min" one) maps
    to ``y`` of the same shape, dtype and device: the estimator's forward (exact
    solutions for ``ste``/``blackbox``, a mean of perturbed solutions for
    ``perturbation``/``imle``/``aimle``), differentiable through the estimator's
    backward. The estimator is a submodule, so adaptive state (AIMLE's ``beta``)
    is in ``state_dict()`` as ``estimator.beta``.

    Called with a function instead of a tensor, the layer works as a decorator:
    ``layer(fn)`` returns ``lambda *a, **kw: layer(fn(*a, **kw))`` (see :meth:`wrap`).

    Args:
        solver: A registry name (configured by the solver options in
            ``options``) or a solver object (``name``, ``sense``, ``event_ndim``,
            ``__call__``).
        estimator: A registry name (configured by the estimator options in
            ``options``) or an estimator module. Default ``"imle"``.
        **options: Routed as in :func:`differentiable`.

    Raises:
        KeyError: On an unknown solver or estimator name.
        OptionError: On an option that neither the estimator nor the solver takes
            (a subclass of TypeError and ValueError).
        ValueError: On an invalid option value.

    Example:
        >>> import torch, combgrad as cg
        >>> layer = cg.DifferentiableSolver("topk", estimator="ste", k=2)
        >>> theta = torch.tensor([0.1, 0.9, 0.5, 0.3], requires_grad=True)
        >>> y = layer(theta)
        >>> y
        tensor([0., 1., 1., 0.], grad_fn=<STEFunctionBackward>)
    """

    def __init__(self, solver: Solver | str, estimator: Any = "imle", **options: Any) -> None:
        super().__init__()
        if isinstance(solver, str):
            solver_keywords = (f"solver {solver!r}", *_keywords(solver_registry.SOLVERS.factory(solver)))
        else:
            solver_keywords = (f"the given {type(solver).__name__} solver object", set(), False)
        estimator_options, solver_options = _split_options(
            options, _estimator_keywords(estimator), solver_keywords
        )
        self.solver = resolve_solver("differentiable", solver, solver_options)
        self.estimator = _build_estimator(estimator, estimator_options)

    def forward(self, theta: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """``y [*, *event]`` for ``theta [*, *event]``; ``generator`` drives the estimator's noise."""
        return self.estimator(theta, self.solver, generator=generator)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if len(args) == 1 and not kwargs and callable(args[0]) and not isinstance(args[0], torch.Tensor):
            return self.wrap(args[0])
        return super().__call__(*args, **kwargs)

    def wrap(self, fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        """A function that applies this layer to ``fn``'s output; the layer is its ``.layer``.

        Register ``wrapped.layer`` in your model (``self.select = wrapped.layer``)
        if its state (AIMLE's beta) should be saved with the model.

        Example:
            >>> import torch, combgrad as cg
            >>> select = cg.DifferentiableSolver("argmax", estimator="ste").wrap(lambda x: 2 * x)
            >>> select(torch.tensor([1.0, 3.0]))
            tensor([0., 1.])
        """

        @functools.wraps(fn)
        def apply(*args: Any, **kwargs: Any) -> torch.Tensor:
            return self(fn(*args, **kwargs))

        apply.layer = self  # type: ignore[attr-defined]
        return apply

    def extra_repr(self) -> str:
        return f"solver={self.solver!r}"


def differentiable(
    fn: Callable[..., Any] | None = None,
    *,
    solver: Solver | str | None = None,
    estimator: Any = "imle",
    **options: Any,
) -> Any:
    """Make a solver differentiable: a layer, or a decorator.

    Options that the estimator takes configure it; the rest go to the solver's
    factory (the registry entry named by ``solver``, or, with no ``solver``,
    :func:`~combgrad.adapters.from_function`); an option both take goes to both
    (``k`` with ``solver="topk"`` and ``noise="sum_of_gamma"``); a name neither
    takes raises :class:`~combgrad.OptionError` naming it (unless a factory
    takes ``**kwargs``).

    Four forms:

    - ``differentiable(solver="shortest_path", estimator="aimle")``: a
      :class:`DifferentiableSolver` layer.
    - ``@differentiable(solver="topk", k=5, ...)`` on ``def select(x)``: the
      function computes the solver's input; ``select(x)`` returns
      ``layer(select_original(x))`` and ``select.layer`` is the layer.
    - ``@differentiable(sense="max", estimator=..., ...)`` on ``def solve(theta)``
      (no ``solver``): the decorated function IS the solver, a batched function
      of a float64 numpy array ``[B, *event] -> [B, *event]`` wrapped by
      ``from_function(fn, sense=..., event_ndim=..., batched=True)``;
      ``event_ndim`` defaults to 1 and ``sense=`` is required. The result is a
      :class:`DifferentiableSolver` (call it on tensors). With ``workers=N`` a
      module-level function runs in the process pool although the decorator
      rebinds its name (it is pickled by reference, see
      :func:`combgrad.pool.by_reference`).
    - ``differentiable(fn, solver=..., ...)`` / ``differentiable(fn, sense=...)``:
      the same without decorator syntax.

    Args:
        fn: The function to decorate (see above), or None.
        solver: A solver registry name, a solver object, or None.
        estimator: An estimator registry name or module (default ``"imle"``).
        **options: Estimator and solver options.

    Returns:
        A :class:`DifferentiableSolver`, a wrapped function, or a decorator.

    Raises:
        OptionError: On an option nobody takes, or no ``sense`` without a solver
            (a subclass of TypeError and ValueError).
        KeyError: On an unknown solver or estimator name.
        ValueError: On an invalid option value.

    Example:
        >>> import numpy as np, torch, combgrad as cg
        >>> @cg.differentiable(estimator="perturbation", sense="max", noise="gumbel", noise_scale=0.5, samples=1000)
        ... def one_hot_max(theta):  # a batch [B, n] of float64 numpy scores
        ...     return np.eye(theta.shape[-1])[theta.argmax(-1)]
        >>> theta = torch.tensor([[-0.6, 1.9, -0.2, 1.1, -1.0]])
        >>> y = one_hot_max(theta, generator=torch.Generator().manual_seed(0))
        >>> y.round(decimals=1)  # close to softmax(theta / 0.5)
        tensor([[0.0000, 0.8000, 0.0000, 0.2000, 0.0000]])
    """
    if solver is not None:
        layer = DifferentiableSolver(solver, estimator, **options)
        return layer if fn is None else layer.wrap(fn)

    if "sense" not in options:
        raise OptionError(
            "differentiable: sense= ('min' or 'max') is required when no solver is named, "
            "because the decorated function is then the solver"
        )
    check_sense("differentiable", options["sense"])
    estimator_options, solver_options = _split_options(
        options,
        _estimator_keywords(estimator),
        ("from_function", *_keywords(from_function, skip=("fn",))),
    )
    solver_options.setdefault("batched", True)
    solver_options.setdefault("event_ndim", 1)
    _build_estimator(estimator, estimator_options)  # validate now, not at decoration time

    def decorate(function: Callable[..., Any]) -> DifferentiableSolver:
        if solver_options.get("workers"):
            # The decorator rebinds the function's module-level name to the
            # layer, so pickle could no longer find the function by that name;
            # the workers get it by reference instead.
            function = pool.by_reference(function)
        # A fresh estimator per decorated function: adaptive state is not shared.
        return DifferentiableSolver(
            from_function(function, **solver_options), _build_estimator(estimator, estimator_options)
        )

    return decorate if fn is None else decorate(fn)

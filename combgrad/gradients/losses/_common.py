"""What the losses share: target checks, solver resolution with the loss's own
option names in its errors, and the list of solvers that take negative costs."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from ..._checks import check_finite, check_same_shape, check_tensor
from ...errors import OptionError
from ...solvers import registry as solver_registry
from ...solvers.base import Solver
from ..base import resolve_solver


def check_target(owner: str, argument: str, value: object, reference: torch.Tensor) -> torch.Tensor:
    """A finite real tensor of ``reference``'s shape, cast to its dtype and device."""
    value = check_finite(owner, argument, check_tensor(owner, argument, value))
    return check_same_shape(owner, argument, value, reference)


def resolve(owner: str, solver: object, options: dict[str, Any], own: Iterable[str]) -> Solver:
    """The solver, with option errors that name the loss's own options as well as the solver's."""
    own_options = ", ".join(own)
    if options and not isinstance(solver, str):
        names = ", ".join(repr(name) for name in options)
        raise OptionError(
            f"{owner}: unknown option{'s' if len(options) > 1 else ''} {names}; {owner} takes "
            f"{own_options}, and solver options only with a registry name (configure the solver object instead)"
        )
    try:
        return resolve_solver(owner, solver, options)
    except OptionError as error:
        raise OptionError(f"{owner}: {error}; {owner}'s own options: {own_options}") from None



def no_blame() -> None:
    """The ``blame`` of a solver input whose sources are checked: only an overflow is left."""


def negative_cost_solvers() -> str:
    """The registered solvers that take negative costs as they are (``accepts_negative`` absent or True)."""
    names = [
        name
        for name in solver_registry.names()
        if getattr(solver_registry.SOLVERS.factory(name), "accepts_negative", True) is not False
    ]
    return ", ".join(names)



def refuse_negative_inputs(
    owner: str, solver: Solver, inputs: Iterable[tuple[str, torch.Tensor]], remedy: str
) -> None:
    """Refuse negative entries in the inputs a loss is about to solve, when the solver
    would clip or refuse them (``accepts_negative = False``): the loss of the clipped
    problem would be wrong, silently.

    Args:
        owner: The loss's name, for the message.
        solver: The resolved solver.
        inputs: ``(description, values)`` of each input the loss solves.
        remedy: What else the user can do, after "use a solver that accepts negative costs".
    """
    if getattr(solver, "accepts_negative", True) is not False:
        return
    for description, values in inputs:
        if values.numel() and bool((values < 0).any()):
            raise ValueError(
                f"{owner}: solver {getattr(solver, 'name', type(solver).__name__)!r} does not accept "
                f"negative costs (accepts_negative = False: it would clip or refuse them), and "
                f"{description} has entries down to {float(values.min()):.4g}; use a solver that "
                f"accepts negative costs ({negative_cost_solvers()}), or {remedy}"
            )

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


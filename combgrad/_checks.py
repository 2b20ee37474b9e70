"""Argument checks shared by the whole package, one wording per kind of error.

Every public entry point validates its arguments here, so that the same mistake
reads the same way everywhere: ``"<owner>: <argument> must be <expected>, got
<received>"``. This module sits at the bottom of the package (it imports only
numpy, torch and :mod:`combgrad.errors`), so solvers, estimators, geometry heads
and tasks can all use it without importing one another.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, TypeVar

import numpy as np
import torch

from .errors import OptionError

Sense = Literal["min", "max"]
SENSES: tuple[Sense, ...] = ("min", "max")

T = TypeVar("T")


def check_sense(owner: str, sense: object) -> Sense:
    """Return ``sense`` if it is "min" or "max", else raise ValueError.

    Example:
        >>> check_sense("my_solver", "min")
        'min'
    """
    if sense not in SENSES:
        raise ValueError(f"{owner}: sense must be 'min' or 'max', got {sense!r}")
    return sense


def check_positive_int(owner: str, argument: str, value: object, *, minimum: int = 1) -> int:
    """Return ``value`` as int if it is an integer >= ``minimum`` (bools excluded), else raise ValueError.

    Example:
        >>> check_positive_int("topk", "k", 3)
        3
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{owner}: {argument} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_choice(owner: str, argument: str, value: T, choices: Sequence[Any]) -> T:
    """Return ``value`` if it is one of ``choices``, else raise ValueError listing them.

    Example:
        >>> check_choice("shortest_path", "neighbourhood", 8, (4, 8))
        8
    """
    try:
        known = value in choices
    except TypeError:  # an unhashable or incomparable value is not a choice
        known = False
    if not known:
        raise ValueError(f"{owner}: {argument} must be one of {list(choices)}, got {value!r}")
    return value


def _as_real(value: object) -> float | None:
    """``value`` as a Python float if it is a real number (numpy scalars, 1-element tensors); else None."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or value.is_complex() or value.dtype == torch.bool or value.is_meta:
            return None
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        return None
    return float(value)


def check_number(
    owner: str,
    argument: str,
    value: object,
    *,
    positive: bool = False,
    nonnegative: bool = False,
    below: float | None = None,
    at_most: float | None = None,
) -> float:
    """Return ``value`` as float if it is a finite real number within the bounds, else raise ValueError.

    Python and numpy integers and floats and one-element real tensors count as
    numbers; bools do not.

    Example:
        >>> check_number("imle", "lam", np.float32(10), positive=True)
        10.0
    """
    number = _as_real(value)
    valid = number is not None and math.isfinite(number)
    if valid and positive:
        valid = number > 0  # type: ignore[operator]
    if valid and nonnegative:
        valid = number >= 0  # type: ignore[operator]
    if valid and below is not None:
        valid = number < below  # type: ignore[operator]
    if valid and at_most is not None:
        valid = number <= at_most  # type: ignore[operator]
    if not valid:
        bounds = []
        if positive:
            bounds.append("> 0")
        if nonnegative:
            bounds.append(">= 0")
        if below is not None:
            bounds.append(f"< {below}")
        if at_most is not None:
            bounds.append(f"<= {at_most}")
        expected = "a finite number" + (" " + " and ".join(bounds) if bounds else "")
        raise ValueError(f"{owner}: {argument} must be {expected}, got {value!r}")
    return number  # type: ignore[return-value]


def check_bool(owner: str, argument: str, value: object) -> bool:
    """Return ``value`` if it is a bool (Python or numpy), else raise ValueError.

    Example:
        >>> check_bool("aimle", "symmetric", True)
        True
    """
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{owner}: {argument} must be True or False, got {value!r}")
    return bool(value)


def check_tensor(owner: str, argument: str, value: object) -> torch.Tensor:
    """Return ``value`` if it is a torch.Tensor on a real device, else raise.

    Raises:
        TypeError: If ``value`` is not a tensor.
        ValueError: If it is a meta tensor (it has a shape but no values to solve).
    """
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{owner}: {argument} must be a torch.Tensor, got {type(value).__name__}")
    if value.is_meta:
        raise ValueError(
            f"{owner}: {argument} must hold values (a CPU or CUDA tensor), got a meta tensor; "
            "materialize it first (e.g. torch.empty_like(x, device='cpu'))"
        )
    return value


def all_finite(values: torch.Tensor) -> bool:
    """True if every entry of ``values`` is finite (one reduction and one host read)."""
    # One sum is non-finite whenever any entry is, and costs a fraction of an
    # element-wise check; the exact check runs only when the sum overflows.
    if not values.numel():
        return True
    return bool(torch.isfinite(values.sum())) or bool(torch.isfinite(values).all())


def check_finite(owner: str, argument: str, values: torch.Tensor) -> torch.Tensor:
    """Return ``values`` if it holds no NaN or inf (complex values are refused), else raise ValueError."""
    if values.is_complex():
        raise ValueError(f"{owner}: {argument} must be real, got dtype {values.dtype}")
    if not all_finite(values):
        raise ValueError(f"{owner}: {argument} must be finite, got NaN or inf values")
    return values


def check_theta(owner: str, theta: object, event_ndim: int, argument: str = "theta") -> torch.Tensor:
    """Check that ``theta`` is a finite floating tensor with at least ``event_ndim`` dims.

    Raises:
        TypeError: If ``theta`` is not a torch.Tensor.
        ValueError: If it has too few dims, is not floating point, is a meta
            tensor, or holds NaN/inf.

    Example:
        >>> check_theta("argmax", torch.zeros(2, 3), 1).shape
        torch.Size([2, 3])
    """
    theta = check_tensor(owner, argument, theta)
    if theta.ndim < event_ndim:
        raise ValueError(
            f"{owner}: {argument} must have at least {event_ndim} dims [*, <event>], "
            f"got shape {tuple(theta.shape)}"
        )
    if not theta.is_floating_point():
        raise ValueError(f"{owner}: {argument} must be a floating tensor, got dtype {theta.dtype}")
    return check_finite(owner, argument, theta)


def check_same_shape(owner: str, argument: str, value: object, reference: torch.Tensor) -> torch.Tensor:
    """``value`` as a tensor of ``reference``'s dtype and device, if it has its shape; else raise.

    Raises:
        TypeError: If ``value`` is not a tensor.
        ValueError: If its shape differs from ``reference``'s.
    """
    value = check_tensor(owner, argument, value)
    if value.shape != reference.shape:
        raise ValueError(
            f"{owner}: {argument} must have the shape of the prediction {tuple(reference.shape)}, "
            f"got {tuple(value.shape)}"
        )
    return value.to(dtype=reference.dtype, device=reference.device)


def check_options(owner: str, given: Iterable[str], accepted: Iterable[str]) -> None:
    """Raise :class:`~combgrad.errors.OptionError` naming any option of ``given`` not in ``accepted``.

    Example:
        >>> check_options("argmax", ["k"], [])
        Traceback (most recent call last):
        ...
        combgrad.errors.OptionError: argmax: unknown option 'k'; argmax takes no options
    """
    accepted = sorted(accepted)
    unknown = [name for name in given if name not in accepted]
    if not unknown:
        return
    names = ", ".join(repr(name) for name in unknown)
    plural = "s" if len(unknown) > 1 else ""
    takes = f"accepted: {', '.join(accepted)}" if accepted else f"{owner} takes no options"
    raise OptionError(f"{owner}: unknown option{plural} {names}; {takes}")


def rename_deprecated(
    owner: str, options: dict[str, Any], renames: Mapping[str, str], *, stacklevel: int = 3
) -> dict[str, Any]:
    """Move deprecated option names in ``options`` to their new names, warning once per name.

    ``renames`` maps an old name to its new one. Giving both raises OptionError.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     rename_deprecated("imle", {"temperature": 2.0}, {"temperature": "noise_scale"})
        {'noise_scale': 2.0}
    """
    for old, new in renames.items():
        if old not in options:
            continue
        if new in options:
            raise OptionError(f"{owner}: {old!r} is the old name of {new!r}; pass only {new!r}")
        warnings.warn(
            f"{owner}: option {old!r} is deprecated, use {new!r} (same meaning)",
            DeprecationWarning,
            stacklevel=stacklevel,
        )
        options[new] = options.pop(old)
    return options


# Integers above 2**53 are not all representable in float64, so data scaled past
# it can no longer be checked for integrality.
EXACT_INTEGER_LIMIT = 2**53


def scaled_integers(
    owner: str, argument: str, array: np.ndarray, scale: float, scale_name: str, *, reason: str = ""
) -> np.ndarray:
    """``array * scale`` as int64 if every entry is within 1e-9 (relative) of an integer; else ValueError.

    The entries are rounded to the nearest integer, never up or down: with a
    relative tolerance, decimal data that float64 cannot hold exactly
    (``100 * 4.61 = 461.00000000000006``) is read as the integer it stands for,
    while data that is really fractional is refused, naming the first such
    entry, why integers are needed (``reason``) and the ``scale_name`` option
    that would fix it.

    Example:
        >>> scaled_integers("knapsack", "weights", np.array([4.61, 0.5]), 100.0, "constraint_scale")
        array([461,  50])
    """
    scaled = array * scale
    rounded = np.rint(scaled)
    inexact = np.abs(scaled - rounded) > 1e-9 * np.maximum(1.0, np.abs(scaled))
    if inexact.any():
        where = tuple(int(i) for i in np.argwhere(inexact)[0])
        hint = f"; pass {scale_name}=10**k for data with k decimals, or round it yourself" if scale_name else ""
        after = f" after multiplying by {scale_name}={scale!r}" if scale_name else ""
        at = "" if not where else f" at index {where if len(where) > 1 else where[0]}"
        raise ValueError(
            f"{owner}: {argument} must hold integers{after}{f' ({reason})' if reason else ''}, got {float(array[where])!r}{at}{hint}"
        )
    if rounded.size and np.abs(rounded).max() > EXACT_INTEGER_LIMIT:
        raise ValueError(
            f"{owner}: {argument} must hold integers of magnitude <= 2**53, got {np.abs(rounded).max():g}"
        )
    return rounded.astype(np.int64)

"""A name -> factory registry, shared by solvers and gradient estimators.

Built-in entries register themselves when their module is imported; third-party
packages add entries through an ``importlib.metadata`` entry-point group, which is
read lazily on the first lookup so that ``import combgrad`` stays cheap and a
broken plugin cannot break the built-ins.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import re
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar, overload

from .errors import OptionError

Factory = Callable[..., Any]
F = TypeVar("F", bound=Factory)


class Option(NamedTuple):
    """One option of a registered solver or estimator, as :meth:`Registry.options` reports it."""

    name: str
    default: Any
    """The default value, or :data:`REQUIRED` for an option that must be given."""
    description: str
    """The first sentence of the option's entry in the factory's docstring (``Args:``)."""


class _Required:
    """The default of an option without one (it must be passed)."""

    def __repr__(self) -> str:
        return "<required>"


REQUIRED: Any = _Required()


class Registry:
    """Maps names to factories; ``get(name, **options)`` calls the factory.

    Args:
        kind: What is registered, used in error messages ("solver", "estimator").
        entry_point_group: The entry-point group third parties register under.
    """

    def __init__(self, kind: str, entry_point_group: str) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._factories: dict[str, Factory] = {}
        self._plugins_loaded = False

    @overload
    def register(self, name: str, factory: F, *, overwrite: bool = False) -> F: ...

    @overload
    def register(
        self, name: str, factory: None = None, *, overwrite: bool = False
    ) -> Callable[[F], F]: ...

    def register(
        self, name: str, factory: F | None = None, *, overwrite: bool = False
    ) -> F | Callable[[F], F]:
        """Register ``factory`` under ``name``; without ``factory``, return a decorator.

        Raises:
            ValueError: If ``name`` is taken and ``overwrite`` is False, or is not a
                non-empty string.
            TypeError: If ``factory`` is not callable.
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} name must be a non-empty string, got {name!r}")
        if factory is None:
            def decorator(fn: F) -> F:
                self.register(name, fn, overwrite=overwrite)
                return fn

            return decorator
        if not callable(factory):
            raise TypeError(f"{self.kind} factory for {name!r} must be callable, got {factory!r}")
        if name in self._factories and not overwrite and not _same_definition(self._factories[name], factory):
            raise ValueError(
                f"{self.kind} {name!r} is already registered; pass overwrite=True to replace it"
            )
        self._factories[name] = factory
        return factory

    def unregister(self, name: str) -> None:
        """Remove ``name`` (for tests and plugins that replace themselves)."""
        self._load_plugins()
        if name not in self._factories:
            raise self._unknown(name)
        del self._factories[name]

    def factory(self, name: str) -> Factory:
        """The factory registered under ``name``.

        Raises:
            KeyError: If ``name`` is unknown; the message lists the known names.
        """
        self._load_plugins()
        try:
            return self._factories[name]
        except (KeyError, TypeError):
            raise self._unknown(name) from None

    def get(self, name: str, **options: Any) -> Any:
        """Build the entry registered under ``name`` with ``options``.

        Raises:
            KeyError: If ``name`` is unknown.
            OptionError: If an option is not one the factory takes, or a required
                one is missing; the message lists the accepted options.
        """
        factory = self.factory(name)
        _check_call(f"{self.kind} {name!r}", factory, options)
        return factory(**options)

    def options(self, name: str) -> dict[str, Option]:
        """The options of the entry registered under ``name``: default and one-line meaning each.

        Read from the factory's signature (keyword arguments, in order) and the
        ``Args:`` section of its docstring, so they cannot disagree with the code.

        Example:
            >>> import combgrad as cg
            >>> cg.solvers.options("topk")["k"].default
            <required>
        """
        factory = self.factory(name)
        descriptions = _argument_descriptions(factory)
        return {
            parameter.name: Option(
                parameter.name,
                REQUIRED if parameter.default is inspect.Parameter.empty else parameter.default,
                descriptions.get(parameter.name, ""),
            )
            for parameter in _keyword_parameters(factory) or ()
        }

    def names(self) -> list[str]:
        """All registered names, sorted."""
        self._load_plugins()
        return sorted(self._factories)

    def __contains__(self, name: object) -> bool:
        self._load_plugins()
        return isinstance(name, str) and name in self._factories

    def _unknown(self, name: object) -> KeyError:
        known = ", ".join(sorted(self._factories))
        return KeyError(f"unknown {self.kind} {name!r}; known: {known}")

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        # Set first: a plugin's module may itself call register() while loading.
        self._plugins_loaded = True
        for entry_point in importlib.metadata.entry_points(group=self.entry_point_group):
            try:
                loaded = entry_point.load()
            except Exception as error:  # a broken plugin must not break the built-ins
                warnings.warn(
                    f"could not load {self.kind} plugin {entry_point.name!r} "
                    f"({entry_point.value}): {error!r}",
                    RuntimeWarning,
                    stacklevel=3,
                )
                continue
            # An entry point names either a factory or a module that registers itself.
            if callable(loaded) and entry_point.name not in self._factories:
                self._factories[entry_point.name] = loaded


def _same_definition(old: Factory, new: Factory) -> bool:
    """True if ``new`` is ``old`` defined again: its module was imported a second time.

    pytest's ``--import-mode=importlib`` (running one module's doctests) and
    ``importlib.reload`` execute a module's ``register(...)`` line again with a
    fresh class of the same module and qualified name; that is the same entry,
    not a clash.
    """
    def where(factory: Factory) -> tuple[object, object]:
        return getattr(factory, "__module__", None), getattr(factory, "__qualname__", None)

    return where(old) == where(new) and None not in where(old) and "<lambda>" not in str(where(old)[1])


def _keyword_parameters(factory: Factory) -> list[inspect.Parameter] | None:
    """The parameters ``factory`` takes by keyword, or None if it takes ``**kwargs`` or has no signature."""
    try:
        parameters = list(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):  # a builtin without a signature
        return None
    if any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters):
        return None
    keyword_kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [parameter for parameter in parameters if parameter.kind in keyword_kinds]


def _check_call(owner: str, factory: Factory, options: dict[str, Any]) -> None:
    """Raise OptionError before calling ``factory(**options)`` with an unknown or a missing option."""
    parameters = _keyword_parameters(factory)
    if parameters is None:
        return
    accepted = [parameter.name for parameter in parameters]
    listed = ", ".join(accepted) if accepted else "none"
    unknown = [option for option in options if option not in accepted]
    if unknown:
        names = ", ".join(repr(option) for option in unknown)
        raise OptionError(
            f"{owner}: unknown option{'s' if len(unknown) > 1 else ''} {names}; accepted options: {listed}"
        )
    missing = [
        parameter.name
        for parameter in parameters
        if parameter.default is inspect.Parameter.empty and parameter.name not in options
    ]
    if missing:
        names = ", ".join(repr(option) for option in missing)
        raise OptionError(
            f"{owner}: missing required option{'s' if len(missing) > 1 else ''} {names}; "
            f"accepted options: {listed}"
        )


_ARGS_HEADER = re.compile(r"^(\s*)(Args|Arguments|Parameters):\s*$")
_ARGUMENT = re.compile(r"^([\w*]+(?:\s*,\s*[\w*]+)*)\s*(?:\([^)]*\))?\s*:\s*(.*)$")


def _argument_descriptions(factory: Factory) -> dict[str, str]:
    """``{argument: first sentence}`` from the Google-style ``Args:`` section of ``factory``'s docstring.

    For a class, the class docstring is read, then its ``__init__``'s.
    """
    docs = [inspect.getdoc(factory) or ""]
    if inspect.isclass(factory):
        docs.append(inspect.getdoc(factory.__init__) or "")
    entries: dict[str, list[str]] = {}
    for doc in docs:
        lines = doc.splitlines()
        for index, line in enumerate(lines):
            header = _ARGS_HEADER.match(line)
            if header is None:
                continue
            section_indent = len(header.group(1))
            entry_indent: int | None = None
            current: list[str] | None = None
            for body in lines[index + 1 :]:
                if not body.strip():
                    continue
                indent = len(body) - len(body.lstrip())
                if indent <= section_indent:
                    break  # the next section
                if entry_indent is None:
                    entry_indent = indent
                if indent == entry_indent:
                    match = _ARGUMENT.match(body.strip())
                    if match is None:
                        current = None
                        continue
                    current = [match.group(2).strip()]
                    for name in re.split(r"\s*,\s*", match.group(1)):
                        entries.setdefault(name.lstrip("*"), current)
                elif current is not None:
                    current.append(body.strip())
    return {name: _first_sentence(" ".join(words)) for name, words in entries.items()}


def _first_sentence(text: str) -> str:
    """``text`` up to its first '.' or ';' followed by a space, outside parentheses and code."""
    depth, in_code = 0, False
    for index, char in enumerate(text):
        if char == "`":
            in_code = not in_code
        elif in_code:
            continue
        elif char in "([":
            depth += 1
        elif char in ")]":
            depth = max(depth - 1, 0)
        elif char in ".;" and depth == 0 and (index + 1 == len(text) or text[index + 1] == " "):
            return text[:index].strip()
    return text.strip()

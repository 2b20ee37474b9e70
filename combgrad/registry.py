"""A name -> factory registry, shared by solvers and gradient estimators.

Built-in entries register themselves when their module is imported; third-party
packages add entries through an ``importlib.metadata`` entry-point group, which is
read lazily on the first lookup so that ``import combgrad`` stays cheap and a
broken plugin cannot break the built-ins.
"""

from __future__ import annotations

import importlib.metadata
import warnings
from collections.abc import Callable
from typing import Any

Factory = Callable[..., Any]


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

    def register(
        self, name: str, factory: Factory | None = None, *, overwrite: bool = False
    ) -> Any:
        """Register ``factory`` under ``name``; without ``factory``, return a decorator.

        Raises:
            ValueError: If ``name`` is taken and ``overwrite`` is False, or is not a
                non-empty string.
            TypeError: If ``factory`` is not callable.
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} name must be a non-empty string, got {name!r}")
        if factory is None:
            def decorator(fn: Factory) -> Factory:
                self.register(name, fn, overwrite=overwrite)
                return fn

            return decorator
        if not callable(factory):
            raise TypeError(f"{self.kind} factory for {name!r} must be callable, got {factory!r}")
        if name in self._factories and not overwrite:
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
        """Build the entry registered under ``name`` with ``options``."""
        return self.factory(name)(**options)

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

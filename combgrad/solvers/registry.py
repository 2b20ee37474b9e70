"""The solver registry: ``register``, ``get``, ``names``.

Third-party packages register solvers through the entry-point group
``combgrad.solvers``; each entry point names a factory (registered under the
entry point's name) or a module that calls :func:`register` when imported.
"""

from ..registry import Registry

SOLVERS = Registry("solver", entry_point_group="combgrad.solvers")

register = SOLVERS.register
get = SOLVERS.get
names = SOLVERS.names
unregister = SOLVERS.unregister
options = SOLVERS.options

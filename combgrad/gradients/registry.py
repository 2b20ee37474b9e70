"""The estimator registry: ``register``, ``get``, ``names``.

``get(name, **options)`` builds an estimator (an ``nn.Module`` whose forward is
``estimator(theta, solver, generator=None)``). Third-party packages register
estimators through the entry-point group ``combgrad.estimators``; each entry
point names a factory (registered under the entry point's name) or a module that
calls :func:`register` when imported.

Example:
    >>> import combgrad as cg
    >>> "imle" in cg.gradients.names()
    True
    >>> cg.gradients.get("blackbox", lam=5.0).options.lam
    5.0
"""

from ..registry import Registry

ESTIMATORS = Registry("estimator", entry_point_group="combgrad.estimators")

register = ESTIMATORS.register
get = ESTIMATORS.get
names = ESTIMATORS.names
unregister = ESTIMATORS.unregister
factory = ESTIMATORS.factory
options = ESTIMATORS.options

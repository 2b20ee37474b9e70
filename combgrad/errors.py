"""Exceptions and warnings raised by combgrad."""


class SolverError(RuntimeError):
    """A solver could not solve an instance (infeasible, crashed worker, user error).

    The message names the instance's index in the flattened batch, so that one bad
    instance in a batch of thousands can be found.
    """


class OptionError(TypeError, ValueError):
    """An option that the solver, estimator or loss does not take, or a required one left out.

    It is a TypeError (the call does not match the signature, as Python itself
    would say) and a ValueError (a bad argument value), so either ``except``
    catches it. The message names the option and lists the accepted ones.
    """


class ConvergenceWarning(UserWarning):
    """An iterative solver stopped at its iteration limit before reaching its tolerance."""

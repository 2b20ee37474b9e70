"""Exceptions raised by combgrad."""


class SolverError(RuntimeError):
    """A solver could not solve an instance (infeasible, crashed worker, user error).

    The message names the instance's index in the flattened batch, so that one bad
    instance in a batch of thousands can be found.
    """

"""``from_pyepo``: a PyEPO ``optModel`` as a batched combgrad solver.

PyEPO (Tang & Khalil, 2022; PyPI ``pyepo``) describes a predict-then-optimize
problem as an ``optModel``: ``setObj(c)`` sets the cost vector, ``solve()``
returns ``(solution, objective)``, ``modelSense`` says whether it minimizes or
maximizes. This adapter lets a PyEPO user bring such a model to combgrad's
estimators and losses unchanged. PyEPO is an optional dependency, imported only
when :func:`from_pyepo` is called.
"""

from __future__ import annotations

import threading
import uuid
from functools import partial
from typing import Any

import numpy as np
import torch

from ..solvers._pooled import cached_model
from ..solvers.base import Sense
from .from_function import FunctionSolver


def _solve(model: Any, costs: np.ndarray) -> np.ndarray:
    """PyEPO's per-instance protocol: set the objective, solve, keep the solution."""
    model.setObj(costs)
    solution, _ = model.solve()
    if isinstance(solution, torch.Tensor):  # MPAX models answer with tensors
        solution = solution.detach().cpu().numpy()
    return np.asarray(solution, dtype=np.float64)


_ONE_SOLVE_AT_A_TIME = threading.Lock()
"""Held around each solve on a rebuilt model (see :func:`_solve_rebuilt`)."""


def _solve_rebuilt(spec: Any, key: str, costs: np.ndarray) -> np.ndarray:
    """Solve on this thread's copy of the model, rebuilt once from its ``ModelSpec``.

    PyEPO models hold solver handles (a Gurobi environment, an OR-Tools model)
    that neither pickle nor tolerate two threads; PyEPO's own parallel solves
    send ``optModel.to_spec()`` to each worker and rebuild the model there, and
    so does this function (once per worker process or thread, then cached).

    The solves of one process run one at a time: Gurobi installs its own SIGINT
    handler for the length of each ``optimize`` and then puts back the one it
    found, so two threads optimizing at once could leave Gurobi's handler in
    place for good (one saves the other's), after which a Ctrl-C killed the
    process instead of raising KeyboardInterrupt. Worker processes, each with
    its own lock, still solve in parallel; a thread executor gains nothing here.
    """
    with _ONE_SOLVE_AT_A_TIME:
        return _solve(cached_model(key, spec.build), costs)


class PyEPOSolver(FunctionSolver):
    """A PyEPO ``optModel`` as a :class:`~combgrad.solvers.BatchSolver`; built by :func:`from_pyepo`.

    Attributes:
        opt_model: The wrapped model (used as is with ``workers=0`` and no executor).
        num_cost: The length of one cost vector (PyEPO's ``num_cost``).
    """

    def __init__(self, opt_model: Any, *, sense: Sense, num_cost: int, fn: Any, workers: int, executor: Any, timeout: float | None) -> None:
        super().__init__(
            fn,
            sense=sense,
            event_ndim=1,
            workers=workers,
            name=f"pyepo:{type(opt_model).__name__}",
            timeout=timeout,
            executor=executor,
        )
        self.opt_model = opt_model
        self.num_cost = num_cost

    def check_event(self, theta: torch.Tensor, event_shape: tuple[int, ...]) -> None:
        if event_shape[0] != self.num_cost:
            raise ValueError(
                f"{self.name}: theta's last dim must be num_cost={self.num_cost} (the model's cost "
                f"vector), got shape {tuple(theta.shape)}"
            )

    def __repr__(self) -> str:
        return (
            f"PyEPOSolver(model={type(self.opt_model).__name__}, num_cost={self.num_cost}, "
            f"sense={self.sense!r}, workers={self.workers}, timeout={self.timeout}, "
            f"executor={None if self._target is None else self._target.kind})"
        )


def from_pyepo(opt_model: Any, *, workers: int = 0, executor: Any = None, timeout: float | None = None) -> PyEPOSolver:
    """Turn a PyEPO ``optModel`` into a batched combgrad solver.

    ``solver(theta)`` takes cost vectors ``theta [*, num_cost]`` (any float dtype
    and device), and for each instance calls ``opt_model.setObj(c)`` and
    ``opt_model.solve()`` with ``c`` the instance's costs in float64 (PyEPO's
    own per-instance protocol), returning the solutions ``[*, num_cost]`` in
    theta's dtype and device. The sense comes from ``opt_model.modelSense``
    (``EPO.MINIMIZE`` -> "min", ``EPO.MAXIMIZE`` -> "max"), so every combgrad
    estimator and loss puts the costs in score space correctly; the result works
    wherever a registry solver does (``cg.differentiable(solver=..., ...)``,
    ``cg.losses.spo_plus``, the ``pto`` task).

    Where the instances run:

    * ``workers=0`` and no executor (default): on ``opt_model`` itself, in this
      process. Any ``optModel`` works, including one changed after construction
      (``addConstr``, ``relax``); its objective is left at the last instance's
      costs, as PyEPO's own loops leave it.
    * ``workers=N`` (the shared process pool, :mod:`combgrad.pool`) or
      ``executor=`` (a ``concurrent.futures`` executor, threads included, or a
      ``dask.distributed.Client``): each worker process or thread builds its own
      copy once from ``opt_model.to_spec()`` (the constructor arguments; PyEPO
      2.2's recipe for its own worker pools) and keeps it across calls. This
      needs a model class importable by the workers (PyEPO's built-in models,
      or a user class in an importable module) and loses changes made after
      construction, so a model with constraints added by ``addConstr`` is
      refused. Each copy holds its own solver licence/environment (a Gurobi
      size-limited licence allows this). Worth it when one solve takes a
      millisecond or more.

    Args:
        opt_model: A ``pyepo.model.opt.optModel`` instance.
        workers: 0 (default) for this process, or the number of worker processes.
        executor: None (default), or an executor to solve on; not with ``workers``.
        timeout: Seconds for one call (the whole batch), or None (default), as in
            :func:`~combgrad.adapters.from_function`.

    Returns:
        A :class:`PyEPOSolver` (a :class:`~combgrad.solvers.BatchSolver`) with
        ``name`` ``"pyepo:<ModelClass>"``, ``sense``, ``event_ndim=1`` and
        ``num_cost``.

    Raises:
        ImportError: If PyEPO is not installed (``pip install pyepo``, or
            combgrad's ``bench`` extra).
        TypeError: If ``opt_model`` is not a PyEPO ``optModel``.
        ValueError: On a ``modelSense`` that is neither sense, an invalid option,
            or (with workers or an executor) a model that cannot be rebuilt
            there: no ``to_spec`` (PyEPO < 2.2), constraints added after
            construction, or a recipe that cannot be pickled.

    When called, the solver raises ValueError if theta's last dim is not
    ``num_cost``, and :class:`~combgrad.SolverError` naming the instance if
    ``solve()`` raises (an infeasible model) or returns a solution of the wrong
    length or with NaN values.

    References:
        Tang, B. & Khalil, E. B. (2022). PyEPO: A PyTorch-based End-to-End
        Predict-then-Optimize Library for Linear and Integer Programming.

    Example:
        >>> import pytest; _ = pytest.importorskip("pyepo"); _ = pytest.importorskip("gurobipy")
        >>> import torch, combgrad as cg
        >>> from pyepo.model.grb import shortestPathModel
        >>> solver = cg.adapters.from_pyepo(shortestPathModel(grid=(2, 2)))
        >>> solver.sense, solver.num_cost
        ('min', 4)
        >>> solver(torch.tensor([[1.0, 5.0, 1.0, 5.0], [5.0, 1.0, 5.0, 1.0]]))
        tensor([[1., 0., 1., 0.],
                [0., 1., 0., 1.]])
    """
    try:
        from pyepo import EPO
        from pyepo.model.opt import optModel
    except ImportError as error:
        raise ImportError(
            "from_pyepo: PyEPO is not installed; install it with `pip install pyepo` "
            "(or combgrad's bench extra: `pip install combgrad[bench]`)"
        ) from error
    if not isinstance(opt_model, optModel):
        raise TypeError(f"from_pyepo: opt_model must be a PyEPO optModel, got {type(opt_model).__name__}")
    sense: Sense
    if opt_model.modelSense == EPO.MINIMIZE:
        sense = "min"
    elif opt_model.modelSense == EPO.MAXIMIZE:
        sense = "max"
    else:
        raise ValueError(
            f"from_pyepo: opt_model.modelSense must be EPO.MINIMIZE or EPO.MAXIMIZE, got {opt_model.modelSense!r}"
        )
    num_cost = int(opt_model.num_cost)
    if workers == 0 and executor is None:
        fn: Any = partial(_solve, opt_model)
    else:
        if not hasattr(opt_model, "to_spec"):
            raise ValueError(
                "from_pyepo: workers and executors rebuild the model from opt_model.to_spec(), "
                "which this PyEPO version lacks (it came in PyEPO 2.2); use workers=0"
            )
        if getattr(opt_model, "_extra_constrs", None):
            raise ValueError(
                "from_pyepo: opt_model has constraints added by addConstr, which a rebuild from "
                "its constructor arguments (opt_model.to_spec(), used by workers and executors) "
                "would lose; use workers=0"
            )
        fn = partial(_solve_rebuilt, opt_model.to_spec(), uuid.uuid4().hex)
    return PyEPOSolver(opt_model, sense=sense, num_cost=num_cost, fn=fn, workers=workers, executor=executor, timeout=timeout)

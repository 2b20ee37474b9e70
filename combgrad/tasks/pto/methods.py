"""The training methods of ``combgrad pto``: method name -> a loss of a batch through the solver.

Each method is one small :class:`Method` entry: its defaults (PyEPO's benchmark and
tutorial settings, so that results compare with PyEPO's) and a ``build`` function
that turns ``(solver, options, train split)`` into ``(layer, loss)``, where
``loss(cost_pred [B, m], batch) -> scalar`` and ``layer`` is the method's
``nn.Module`` (an estimator with state to checkpoint) or None.

========  ==========================================================  ======================
method    loss of a batch                                             defaults (PyEPO's)
========  ==========================================================  ======================
spo+      ``cg.losses.spo_plus(c_hat, c, y_true=w)``                  --
dbb       L1 between ``<c, y(c_hat)>`` and ``z`` (``blackbox``)        lam 20
pfy       ``cg.losses.fenchel_young(c_hat, w)``                       sigma 1, 10 samples
imle      L1 between ``imle(c_hat)`` and ``w``                        lam 10, sigma 1, 10
                                                                      samples, sum-of-gamma
                                                                      k 5, divide by lam
aimle     L1 between ``aimle(c_hat)`` and ``w``                       sigma 1, 10 samples,
                                                                      sum-of-gamma k 5
pg        ``cg.losses.pg(c_hat, c)``                                  step 0.1, backward
nce       ``cg.losses.nce(c_hat, w, pool=...)``                       solve ratio 0.05
cmap      ``cg.losses.cmap(c_hat, w, pool=...)``                      solve ratio 0.05
ltr       ``cg.losses.ltr(c_hat, c, pool=...)``                       solve ratio 0.05,
                                                                      listwise
2s        MSE between ``c_hat`` and ``c`` (two-stage)                 --
========  ==========================================================  ======================

``c`` are the true costs, ``w = w*(c)`` the true solutions and ``z = <c, w>`` the
optimal objectives, all computed in float64 (and cast to the prediction's dtype).
The pool-based methods (nce, cmap, ltr) read a :class:`~combgrad.adapters.SolutionPool`
started with the training set's true solutions that solves a ``solve_ratio`` share
of the batches (PyEPO's caching rule: one draw per batch) and grows with every new
solution; its content is the method's state in the checkpoint.
Methods whose loss is not in this installation are left out of :func:`method_names`.

References:
    A. N. Elmachtoub, P. Grigas. Smart "Predict, then Optimize". Management Science 68(1), 2022.

    M. Vlastelica, A. Paulus, V. Musil, G. Martius, M. Rolinek. Differentiation of
    Blackbox Combinatorial Solvers. ICLR 2020.

    Q. Berthet, M. Blondel, O. Teboul, M. Cuturi, J.-P. Vert, F. Bach. Learning with
    Differentiable Perturbed Optimizers. NeurIPS 2020.

    M. Niepert, P. Minervini, L. Franceschi. Implicit MLE: Backpropagating Through
    Discrete Exponential Family Distributions. NeurIPS 2021.

    P. Minervini, L. Franceschi, M. Niepert. Adaptive Perturbation-Based Gradient
    Estimation for Discrete Latent Variable Models. AAAI 2023.

    M. Mulamba, J. Mandi, M. Diligenti, M. Lombardi, V. Bucarey, T. Guns. Contrastive
    Losses and Solution Caching for Predict-and-Optimize. IJCAI 2021.

    J. Mandi, V. Bucarey, M. Mulamba, T. Guns. Decision-Focused Learning: Through the
    Lens of Learning to Rank. ICML 2022.

    V. Gupta, M. Huang. Decision-Focused Learning with Directional Gradients. NeurIPS 2024.

    B. Tang, E. B. Khalil. PyEPO: A PyTorch-based End-to-End Predict-then-Optimize
    Library for Linear and Integer Programming. Mathematical Programming Computation, 2024.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from ...adapters import SolutionPool, differentiable
from ...gradients import losses
from .problems import Batch, Split

LossFunction = Callable[[torch.Tensor, Batch], torch.Tensor]
Builder = Callable[[Any, dict[str, Any], Split], tuple[Any, LossFunction]]


@dataclass(frozen=True)
class Method:
    """One training method.

    Attributes:
        name: The ``--method`` value.
        summary: One line for ``--help``.
        build: ``build(solver, options, train) -> (state or None, loss(cost_pred, batch))``;
            the state (an estimator ``nn.Module``, or a pool's :class:`PoolState`) has
            ``state_dict`` and ``load_state_dict``.
        defaults: Options used unless the run overrides them.
        requires: Name of the ``cg.losses`` function the method needs, if any (the
            method is offered only where it exists).
    """

    name: str
    summary: str
    build: Builder
    defaults: Mapping[str, Any] = field(default_factory=dict)
    requires: str | None = None

    def available(self) -> bool:
        """Whether this installation has what the method needs."""
        return self.requires is None or hasattr(losses, self.requires)


def _cast(batch: Batch, like: torch.Tensor) -> Batch:
    """The batch's float labels in the prediction's dtype (losses compare like with like)."""
    return Batch(batch.features, batch.costs.to(like.dtype), batch.solutions.to(like.dtype),
                 batch.objectives.to(like.dtype))


def _spo_plus(solver: Any, options: dict[str, Any], train: Split) -> tuple[Any, LossFunction]:
    def loss(cost_pred: torch.Tensor, batch: Batch) -> torch.Tensor:
        labels = _cast(batch, cost_pred)
        return losses.spo_plus(cost_pred, labels.costs, solver=solver, y_true=labels.solutions, **options).mean()

    return None, loss


def _dbb(solver: Any, options: dict[str, Any], train: Split) -> tuple[Any, LossFunction]:
    layer = differentiable(solver=solver, estimator="blackbox", **options)

    def loss(cost_pred: torch.Tensor, batch: Batch) -> torch.Tensor:
        # PyEPO's DBB loss: L1 between the decision's true objective and the optimum.
        labels = _cast(batch, cost_pred)
        return ((layer(cost_pred) * labels.costs).sum(-1) - labels.objectives).abs().mean()

    return layer, loss


def _pfy(solver: Any, options: dict[str, Any], train: Split) -> tuple[Any, LossFunction]:
    def loss(cost_pred: torch.Tensor, batch: Batch) -> torch.Tensor:
        return losses.fenchel_young(cost_pred, _cast(batch, cost_pred).solutions, solver=solver, **options).mean()

    return None, loss


def _perturbed_l1(estimator: str) -> Builder:
    def build(solver: Any, options: dict[str, Any], train: Split) -> tuple[Any, LossFunction]:
        layer = differentiable(solver=solver, estimator=estimator, **options)

        def loss(cost_pred: torch.Tensor, batch: Batch) -> torch.Tensor:
            # PyEPO's I-MLE and AI-MLE loss: L1 between the mean perturbed solution and w*(c).
            return (layer(cost_pred) - _cast(batch, cost_pred).solutions).abs().mean()

        return layer, loss

    return build


def _pg(solver: Any, options: dict[str, Any], train: Split) -> tuple[Any, LossFunction]:
    def loss(cost_pred: torch.Tensor, batch: Batch) -> torch.Tensor:
        return losses.pg(cost_pred, _cast(batch, cost_pred).costs, solver=solver, **options).mean()

    return None, loss


class PoolState:
    """A :class:`~combgrad.adapters.SolutionPool` as checkpoint state: its solutions.

    Restoring adds the saved solutions to a pool started as the saved one was (with
    the training set's solutions), so the pool holds the same solutions in the same
    order as when it was saved.

    Example:
        >>> import combgrad as cg
        >>> pool = cg.adapters.SolutionPool("argmax", initial=torch.eye(3)[:1])
        >>> _ = pool(torch.tensor([[0.0, 1.0, 0.0]]))
        >>> fresh = PoolState(cg.adapters.SolutionPool("argmax", initial=torch.eye(3)[:1]))
        >>> fresh.load_state_dict(PoolState(pool).state_dict()); len(fresh.pool)
        2
    """

    def __init__(self, pool: SolutionPool) -> None:
        self.pool = pool

    def state_dict(self) -> dict[str, torch.Tensor]:
        """``{"solutions": [P, *event]}``."""
        return {"solutions": self.pool.solutions.detach().cpu().clone()}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Add the saved solutions (the known ones are skipped)."""
        if len(state["solutions"]):
            self.pool.add(state["solutions"])


def _pooled(loss_name: str, target: str) -> Builder:
    """A pool-based loss ``cg.losses.<loss_name>(c_hat, <target>, pool=...)``; target is "costs" or "solutions"."""

    def build(solver: Any, options: dict[str, Any], train: Split) -> tuple[Any, LossFunction]:
        options = dict(options)
        pool = SolutionPool(solver, solve_ratio=options.pop("solve_ratio"), initial=train.solutions,
                            per=options.pop("per"))
        function = getattr(losses, loss_name)

        def loss(cost_pred: torch.Tensor, batch: Batch) -> torch.Tensor:
            return function(cost_pred, getattr(_cast(batch, cost_pred), target), pool=pool, **options).mean()

        return PoolState(pool), loss

    return build


def _two_stage(solver: Any, options: dict[str, Any], train: Split) -> tuple[Any, LossFunction]:
    def loss(cost_pred: torch.Tensor, batch: Batch) -> torch.Tensor:
        return ((cost_pred - _cast(batch, cost_pred).costs) ** 2).mean()

    return None, loss


_SUM_OF_GAMMA = {"noise": "sum_of_gamma", "k": 5, "iterations": 10, "noise_scale": 1.0, "samples": 10}
"""PyEPO's I-MLE noise: ``sumGammaDistribution(kappa=5)`` (10 iterations), sigma 1, 10 samples."""

_POOL = {"solve_ratio": 0.05, "per": "batch"}
"""PyEPO's tutorials' pool settings: solve 5% of the batches, one draw per batch."""

METHODS: dict[str, Method] = {
    method.name: method
    for method in (
        Method("spo+", "SPO+ loss (Elmachtoub & Grigas)", _spo_plus),
        Method("dbb", "blackbox differentiation, L1 objective loss (Vlastelica et al.)", _dbb, {"lam": 20.0}),
        Method("pfy", "perturbed Fenchel-Young loss (Berthet et al.)", _pfy,
               {"noise_scale": 1.0, "samples": 10, "noise": "normal"}),
        Method("imle", "I-MLE, L1 solution loss (Niepert et al.)", _perturbed_l1("imle"),
               {"lam": 10.0, "divide_by_lam": True, **_SUM_OF_GAMMA}),
        Method("aimle", "adaptive I-MLE, L1 solution loss (Minervini et al.)", _perturbed_l1("aimle"),
               dict(_SUM_OF_GAMMA)),
        Method("pg", "perturbation-gradient loss (Gupta & Huang)", _pg, {"step": 0.1, "variant": "backward"},
               requires="pg"),
        Method("nce", "noise-contrastive loss over a solution pool (Mulamba et al.)", _pooled("nce", "solutions"),
               _POOL, requires="nce"),
        Method("cmap", "contrastive MAP loss over a solution pool (Mulamba et al.)", _pooled("cmap", "solutions"),
               _POOL, requires="cmap"),
        Method("ltr", "learning-to-rank loss over a solution pool (Mandi et al.)", _pooled("ltr", "costs"),
               {**_POOL, "kind": "listwise"}, requires="ltr"),
        Method("2s", "two-stage: MSE on the costs", _two_stage),
    )
}
"""Every method, available or not (see :func:`method_names`)."""


def method_names() -> list[str]:
    """The methods this installation offers, in table order.

    Example:
        >>> method_names()[:3]
        ['spo+', 'dbb', 'pfy']
    """
    return [name for name, method in METHODS.items() if method.available()]


def build_method(name: str, solver: Any, options: Mapping[str, Any], train: Split) -> tuple[Any, LossFunction]:
    """The ``(state, loss)`` of method ``name`` with ``options`` over its defaults.

    Raises:
        ValueError: On an unknown method or an option the method does not take.

    Example:
        >>> import combgrad as cg
        >>> solver = cg.solvers.get("knapsack", weights=[3, 4, 2], capacity=5)
        >>> train = Split.label(torch.zeros(1, 2), torch.tensor([[4.0, 5.0, 3.0]]), solver)
        >>> layer, loss = build_method("spo+", solver, {}, train)
        >>> float(loss(train.costs.float(), train.batch(torch.tensor([0]))))  # exact costs: no loss
        0.0
    """
    if name not in METHODS or not METHODS[name].available():
        raise ValueError(f"pto: method must be one of {', '.join(method_names())}, got {name!r}")
    method = METHODS[name]
    options = {**method.defaults, **options}
    try:
        return method.build(solver, options, train)
    except (TypeError, KeyError) as error:  # an unexpected keyword or a missing pool setting: the user's option, not a bug
        raise ValueError(f"pto: method {name!r}: {error}") from error


__all__ = ["METHODS", "Method", "PoolState", "build_method", "method_names"]

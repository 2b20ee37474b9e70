"""Differentiable geometry heads: quasimetric embeddings and optimal transport.

This package's ``__init__`` only re-exports the public names of its modules.
"""

from .iqe import IQE, interval_union_length
from .optimal_transport import SinkhornDistance, SinkhornResult, sinkhorn, sinkhorn_divergence
from .poisson import poisson_le_probability
from .pqe import PQE

__all__ = [
    "IQE",
    "PQE",
    "SinkhornDistance",
    "SinkhornResult",
    "interval_union_length",
    "poisson_le_probability",
    "sinkhorn",
    "sinkhorn_divergence",
]

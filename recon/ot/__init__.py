"""Optimal transport: log-domain Sinkhorn, Sinkhorn–Newton–Sparse, sparsity-constrained OT, Sinkhorn divergence,
and unbalanced (KL-relaxed) Sinkhorn for partial matching.

Torch, float64 inside (entropic plans at small ε underflow in float32). Math and known answers: METHODS.md §4.1–4.2.
"""

from .config import OTConfig, SinkhornConfig, SNSConfig, SparseOTConfig
from .cost import resolve_eps, squared_euclidean
from .divergence import entropic_ot_value, sinkhorn_divergence
from .projections import project_ksparse_simplex, project_simplex
from .result import OTResult
from .sinkhorn import sinkhorn_log
from .sns import sinkhorn_newton_sparse
from .solve import solve, solve_ot
from .sparse_constrained import SparseOTResult, sparse_ot_value, sparsity_constrained_ot
from .unbalanced import UnbalancedResult, sinkhorn_unbalanced, unbalanced_cost

__all__ = [
    "OTConfig",
    "OTResult",
    "SNSConfig",
    "SinkhornConfig",
    "SparseOTConfig",
    "SparseOTResult",
    "UnbalancedResult",
    "entropic_ot_value",
    "project_ksparse_simplex",
    "project_simplex",
    "resolve_eps",
    "sinkhorn_divergence",
    "sinkhorn_log",
    "sinkhorn_newton_sparse",
    "sinkhorn_unbalanced",
    "solve",
    "solve_ot",
    "sparse_ot_value",
    "sparsity_constrained_ot",
    "squared_euclidean",
    "unbalanced_cost",
]

"""Geometric regularizers: one file per regularizer, the framework in ``base`` (imported first, on purpose)."""

from .base import (
    RegContext,
    Regularizer,
    RegularizerConfig,
    RegularizersConfig,
    build_regularizers,
    needed_outputs,
    regularization_terms,
)

__all__ = [
    "RegContext",
    "Regularizer",
    "RegularizerConfig",
    "RegularizersConfig",
    "build_regularizers",
    "needed_outputs",
    "regularization_terms",
]

"""Geometric regularizers: one file per regularizer, the framework in ``base``, the list of them in ``registry``.

Imports point one way: each regularizer imports ``base``; ``registry`` imports ``base`` and every regularizer;
this package imports ``base`` and ``registry``. Nothing imports the package from inside it.
"""

from .base import RegContext, Regularizer, RegularizerConfig, needed_outputs, regularization_terms
from .registry import RegularizersConfig, build_regularizers, check_supported

__all__ = [
    "RegContext",
    "Regularizer",
    "RegularizerConfig",
    "RegularizersConfig",
    "build_regularizers",
    "check_supported",
    "needed_outputs",
    "regularization_terms",
]

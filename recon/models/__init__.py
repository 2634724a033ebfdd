"""Representations behind one interface (``base.Representation``), registered by ``model.kind``
(``registry``): splat primitives (``splats``, with per-primitive descriptors in ``primitives/``)."""

from .base import GaussianCloud, Representation
from .registry import REPRESENTATIONS, create_model, load_model_file, model_from_state

__all__ = [
    "GaussianCloud",
    "Representation",
    "REPRESENTATIONS",
    "create_model",
    "load_model_file",
    "model_from_state",
]

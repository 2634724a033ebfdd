"""Structured sparsity (METHODS.md §4.6): the k-level group sparse envelope and its prox."""

from .envelope import envelope_threshold, group_scale, ksupport_norm_sq, prox_sef, sef, top_k_mask

__all__ = ["envelope_threshold", "group_scale", "ksupport_norm_sq", "prox_sef", "sef", "top_k_mask"]

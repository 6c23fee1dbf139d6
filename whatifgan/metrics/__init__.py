"""Evaluation metrics: discrete distances (TVD, KL) against exact ground truth."""

from .discrete import compare, empirical, kl, tvd

__all__ = ["compare", "empirical", "kl", "tvd"]

"""Evaluation metrics: discrete distances (TVD, KL) against exact ground truth."""

from .discrete import compare, empirical, kl, tvd

__all__ = ["compare", "empirical", "kl", "tvd"]
from .counterfactual import CLD, ConvVAE, CounterfactualMetrics, IMAutoencoders  # noqa: E402

__all__ += ["CLD", "ConvVAE", "CounterfactualMetrics", "IMAutoencoders"]

"""CAGE: probing the cause-effect relations a pretrained latent generative model has learned.

``models``: the :class:`LatentGenerativeModel` interface and adapters (VAE, zuko MAF, GAN/decoder
with optimisation-based inversion, the image of a DCM, a linear ground-truth model); ``probe``:
Steps 1-3 of Section 3.2, GITE/GATE/Delta-tau (Eqs. 5-7), the permutation null and the direction
decision; ``experiments``: the mixture-of-Gaussians (Section 4.1) and Morpho-MNIST (Section 4.2)
runs and the DCM probe; ``plots``: the figures.
"""

from .models import (
    DCMImageModel,
    DecoderModel,
    FlowModel,
    GANModel,
    InversionConfig,
    LatentGenerativeModel,
    LinearLatentModel,
    MAF,
    VAE,
    VAEModel,
    fit_flow,
    fit_vae,
    invert,
)
from .probe import (
    CAGE,
    CAGEConfig,
    LinearClassifier,
    ProbeResult,
    counterfactual_latents,
    decide,
    delta_tau,
    direction_table,
    gate,
    gate_curve,
    gite,
    p_value,
    permutation_null,
)

__all__ = [
    "CAGE", "CAGEConfig", "DCMImageModel", "DecoderModel", "FlowModel", "GANModel", "InversionConfig",
    "LatentGenerativeModel", "LinearClassifier", "LinearLatentModel", "MAF", "ProbeResult", "VAE", "VAEModel",
    "counterfactual_latents", "decide", "delta_tau", "direction_table", "fit_flow", "fit_vae", "gate",
    "gate_curve", "gite", "invert", "p_value", "permutation_null",
]

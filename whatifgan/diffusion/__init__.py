"""Diffusion building blocks shared by ID-GEN and Diff-SCM.

As in diffusers, networks, schedules/samplers and pipelines are separate objects:

* networks: :class:`whatifgan.nn.UNet` (``eps_theta(x_t, t, cond)``) and
  :class:`whatifgan.nn.TimeConditionedClassifier` (``p_phi(y | x_t, t)``);
* :class:`NoiseSchedule` (linear/cosine, respacing) -- :mod:`.schedules`;
* :func:`q_sample`, :func:`epsilon_loss`, :class:`DDPMSampler` -- :mod:`.ddpm`;
* :class:`DDIMSampler` (sampling with ``eta``, inversion for abduction), classifier-free and
  classifier guidance -- :mod:`.ddim`, :mod:`.guidance`;
* :class:`EMA` of weights -- :mod:`.ema`;
* training: :class:`trainers.DiffusionTrainer` (generic loop; give it ``schedule.alphas_cumprod``
  or the schedule object).
"""

from .ddim import DDIMSampler
from .ddpm import (
    DDPMSampler,
    DiffusionSampler,
    epsilon_loss,
    predict_eps,
    predict_x0,
    q_posterior,
    q_sample,
)
from .ema import EMA
from .guidance import (
    EpsFn,
    GradFn,
    apply_classifier_guidance,
    classifier_free_guidance,
    classifier_guidance,
    classifier_log_prob_grad,
    make_eps_fn,
    model_eps_fn,
)
from .schedules import NoiseSchedule, cosine_beta_schedule, linear_beta_schedule, respaced_indices

__all__ = [
    "DDIMSampler",
    "DDPMSampler",
    "DiffusionSampler",
    "EMA",
    "EpsFn",
    "GradFn",
    "NoiseSchedule",
    "apply_classifier_guidance",
    "classifier_free_guidance",
    "classifier_guidance",
    "classifier_log_prob_grad",
    "cosine_beta_schedule",
    "epsilon_loss",
    "linear_beta_schedule",
    "make_eps_fn",
    "model_eps_fn",
    "predict_eps",
    "predict_x0",
    "q_posterior",
    "q_sample",
    "respaced_indices",
]

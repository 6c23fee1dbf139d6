"""whatifgan: deep causal generative models (WhatIfGAN, ID-GEN, Diff-SCM, CAGE) on top of ``hgraph``
(graphs, identification, exact discrete SCMs) and ``trainers`` (generic PyTorch loops)."""

from .data.tabular import DataError, Dataset
from .dcm import DCM
from .sampling import EvidenceTooRare, Sampler
from .training import TrainConfig, TrainResult, joint_plan, train
from .variables import Categorical, Continuous, Image, VariableSet

__all__ = ["DCM", "Dataset", "DataError", "Sampler", "EvidenceTooRare", "TrainConfig", "TrainResult", "train",
           "joint_plan", "Categorical", "Continuous", "Image", "VariableSet"]

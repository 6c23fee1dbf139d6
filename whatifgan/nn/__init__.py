"""Networks of the toolkit: mechanisms (generators), critics, heads, and the config registry.

Importing this package registers the built-in architectures (``mlp``, ``critic_mlp``,
``pretrained``) with :func:`build`.
"""

from .conv import (
    ConvAutoencoder,
    ConvClassifierGenerator,
    ConvCritic,
    ConvDecoder,
    ConvEncoder,
    ConvGenerator,
)
from .gumbel import GumbelSample, GumbelSoftmax, TemperatureSchedule, gumbel_softmax, sample_gumbel
from .mlp import MLPCritic, MLPGenerator, ResidualBlock
from .registry import (
    GeneratorOutput,
    PretrainedModule,
    UnknownModuleError,
    build,
    build_from_config,
    get_constructor,
    register_module,
    registered,
)
from .unet import (
    CLASSIFIER_PRESETS,
    UNET_PRESETS,
    ConditionEmbedding,
    TimeConditionedClassifier,
    UNet,
    timestep_embedding,
)

__all__ = [
    "ConvAutoencoder",
    "ConvClassifierGenerator",
    "ConvCritic",
    "ConvDecoder",
    "ConvEncoder",
    "ConvGenerator",
    "CLASSIFIER_PRESETS",
    "ConditionEmbedding",
    "TimeConditionedClassifier",
    "UNET_PRESETS",
    "UNet",
    "timestep_embedding",
    "GeneratorOutput",
    "GumbelSample",
    "GumbelSoftmax",
    "MLPCritic",
    "MLPGenerator",
    "PretrainedModule",
    "ResidualBlock",
    "TemperatureSchedule",
    "UnknownModuleError",
    "build",
    "build_from_config",
    "get_constructor",
    "gumbel_softmax",
    "register_module",
    "registered",
    "sample_gumbel",
]

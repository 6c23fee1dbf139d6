"""Convolutional networks for image variables (28 or 32 px, 1 or 3 channels).

* :class:`ConvGenerator` (``"conv"``): the mechanism ``G_I`` of an image variable, a conditional
  DCGAN generator (Radford et al. 2016): ``[exogenous noise, confounder noise, parent encodings]``
  -> linear -> transposed-convolution upsampling with BatchNorm + ReLU -> ``tanh`` image in
  ``value_range`` (``(-1, 1)`` by default: use ``Image(..., value_range=(-1, 1))`` so that
  :meth:`~whatifgan.variables.Image.encode` puts real images in the same range). WhatIfGAN
  Section 5.1 / Appendix F.2 ("a deep convolution GAN G_I to generate images"); image parents
  (e.g. X -> Y in Napkin-MNIST) are embedded by a small conv encoder.
* :class:`ConvCritic` (``"critic_conv"``): WGAN-GP critic over one or more images plus compared
  low-dimensional variables, either tiled as constant *label planes* concatenated to the image
  channels (``cond="planes"``) or embedded by an MLP and concatenated after the conv trunk
  (``cond="embed"``). No batch norm (the gradient penalty is per sample, Gulrajani et al. 2017);
  PacGAN packing as in :class:`~whatifgan.nn.mlp.MLPCritic`.
* :class:`ConvClassifierGenerator` (``"conv_classifier"``): the mechanism of a discrete child of
  image parents, "a classifier G_A to classify MNIST images into variable A" (Section 5.1): conv
  encoder of the image parents, MLP over ``[image embeddings, other parents, noise, confounders]``,
  Gumbel-softmax head with replayable noise (Appendix C.2).
* :class:`ConvAutoencoder` (``"conv_autoencoder"``): a small convolutional autoencoder with a
  ~10-d code, the representation encoder ``RI = E(I)`` with which WhatIfGAN compares joints that
  mix images and labels, ``P(D, A, RI)`` instead of ``P(D, A, I)`` (Section 5.1, Appendix F.2).
* :class:`RepresentationCritic` (``"critic_rep"``): WGAN-GP MLP critic over low-dimensional
  variables and the frozen codes ``RI = E(I)`` of the compared images (gradients reach the images,
  never the encoder); used by :mod:`whatifgan.representation` (``TrainConfig.image_representation``).

All follow the mechanism protocol of :mod:`whatifgan.nn.registry` where they are mechanisms, and
are device-agnostic (no device is ever chosen here).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .gumbel import GumbelSoftmax
from .registry import GeneratorOutput, register_module

__all__ = ["ConvAutoencoder", "ConvClassifierGenerator", "ConvCritic", "ConvDecoder", "ConvEncoder", "RepresentationCritic",
           "ConvGenerator", "image_shape_from_dim"]

SIZES = (28, 32)
Shape = tuple[int, int, int]


def image_shape_from_dim(dim: int) -> Shape | None:
    """``C*H*W -> (C, H, W)`` for 1- or 3-channel 28/32 px images (None when ``dim`` is no such size)."""
    for c in (1, 3):
        for s in SIZES:
            if c * s * s == int(dim):
                return (c, s, s)
    return None


def _check_shape(shape: Sequence[int], who: str) -> Shape:
    shape = tuple(int(v) for v in shape)
    if len(shape) != 3 or shape[1] != shape[2] or shape[1] not in SIZES or shape[0] < 1:
        raise ValueError(f"{who}: image shape must be (C, H, W) with H = W in {SIZES}, got {shape}")
    return shape  # type: ignore[return-value]


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":  # layer norm over (C, H, W); safe in WGAN-GP critics
        return nn.GroupNorm(1, channels)
    if kind in ("none", None):
        return nn.Identity()
    raise ValueError(f"norm must be 'batch', 'layer' or 'none', got {kind!r}")


def _split_parents(parent_dims: Mapping[str, Any] | None, image_parents: Sequence[str] | None
                   ) -> tuple[dict[str, int], dict[str, Shape]]:
    """Flat and image parents: sequences are image shapes; ints are flat unless listed in
    ``image_parents`` (or, when that is None, unless they equal the size of a 28/32 px image)."""
    flat, images = {}, {}
    for name, d in (parent_dims or {}).items():
        if isinstance(d, (tuple, list, torch.Size)):
            images[str(name)] = _check_shape(d, f"parent {name!r}")
            continue
        d = int(d)
        guess = image_shape_from_dim(d)
        if (image_parents is not None and name in image_parents) or (image_parents is None and guess):
            if guess is None:
                raise ValueError(f"parent {name!r} is listed as an image but its size {d} is no 1/3-channel "
                                 f"28/32 px image; give its shape (C, H, W)")
            images[str(name)] = guess
        else:
            flat[str(name)] = d
    return flat, images


# ============================================================================= building blocks
class ConvEncoder(nn.Module):
    """``(B, C, H, W) -> (B, out_dim)``: stride-2 3x3 convolutions (28 -> 14 -> 7 -> 4 and
    32 -> 16 -> 8 -> 4 px) with LeakyReLU(0.2), then a linear layer.

    ``norm``: ``"batch"`` (generators, classifiers), ``"layer"`` or ``"none"`` (critics).
    ``features(x)`` is the flattened trunk output before the linear layer.
    """

    def __init__(self, shape: Sequence[int], out_dim: int, *, channels: Sequence[int] = (32, 64, 128),
                 norm: str = "batch", negative_slope: float = 0.2):
        super().__init__()
        self.shape = _check_shape(shape, "ConvEncoder")
        layers: list[nn.Module] = []
        c_in = self.shape[0]
        for i, c in enumerate(channels):
            layers += [nn.Conv2d(c_in, int(c), 3, stride=2, padding=1),
                       _norm(norm if i > 0 else "none", int(c)), nn.LeakyReLU(negative_slope)]
            c_in = int(c)
        self.trunk = nn.Sequential(*layers)
        s = self.shape[1]
        for _ in channels:
            s = (s - 1) // 2 + 1
        self.feature_dim = c_in * s * s
        self.out_dim = int(out_dim)
        self.head = nn.Linear(self.feature_dim, self.out_dim)

    def features(self, x: Tensor) -> Tensor:
        return self.trunk(x).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class ConvDecoder(nn.Module):
    """``(B, in_dim) -> (B, C, H, W)`` in ``value_range``, DCGAN style: linear to a 7x7 (28 px) or
    4x4 (32 px) map, stride-2 transposed convolutions (kernel 4) with BatchNorm + ReLU doubling the
    size, a 3x3 convolution to ``C`` channels and ``tanh``.

    ``cond_dim > 0``: ``forward(h, cond)`` also tiles ``cond`` (B, cond_dim) into constant planes
    concatenated to the input of every upsampling stage and of the output convolution, so the
    condition reaches every layer (conditioning at every layer, not only through the first linear
    map)."""

    def __init__(self, in_dim: int, shape: Sequence[int], *, base_channels: int = 64, batchnorm: bool = True,
                 value_range: tuple[float, float] = (-1.0, 1.0), cond_dim: int = 0):
        super().__init__()
        self.shape = _check_shape(shape, "ConvDecoder")
        c, s, _ = self.shape
        n_up = 2 if s == 28 else 3
        s0 = s // (2 ** n_up)
        widths = [int(base_channels) * 2 ** (n_up - 1 - i) for i in range(n_up)] + [max(int(base_channels) // 2, 8)]
        self.s0, self.c0 = s0, widths[0]
        self.fc = nn.Linear(int(in_dim), widths[0] * s0 * s0)
        self.bn0 = nn.BatchNorm2d(widths[0]) if batchnorm else nn.Identity()
        self.cond_dim = int(cond_dim)
        k = self.cond_dim
        ups: list[nn.Module] = []  # stages of (transposed conv, norm, ReLU)
        for a, b in zip(widths[:-1], widths[1:]):
            ups += [nn.ConvTranspose2d(a + k, b, 4, stride=2, padding=1),
                    nn.BatchNorm2d(b) if batchnorm else nn.Identity(), nn.ReLU()]
        self.ups = nn.Sequential(*ups)
        self.out = nn.Conv2d(widths[-1] + k, c, 3, padding=1)
        lo, hi = (float(v) for v in value_range)
        if not lo < hi:
            raise ValueError(f"value_range must be (low, high) with low < high, got {value_range}")
        self.value_range = (lo, hi)

    def forward(self, h: Tensor, cond: Tensor | None = None) -> Tensor:
        x = F.relu(self.bn0(self.fc(h).reshape(h.shape[0], self.c0, self.s0, self.s0)))
        if self.cond_dim:
            if cond is None or tuple(cond.shape) != (h.shape[0], self.cond_dim):
                raise ValueError(f"this decoder conditions every layer on a ({h.shape[0]}, {self.cond_dim}) "
                                 f"tensor, got {None if cond is None else tuple(cond.shape)}")

            def planes(x):
                return torch.cat([x, cond[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3])], dim=1)

            for i in range(0, len(self.ups), 3):
                x = self.ups[i:i + 3](planes(x))
            x = planes(x)
        else:
            x = self.ups(x)
        y = torch.tanh(self.out(x))
        lo, hi = self.value_range
        if (lo, hi) == (-1.0, 1.0):
            return y
        return lo + (hi - lo) * (y + 1.0) / 2.0


class _ParentEncoder(nn.Module):
    """Concatenates ``[noise, confounders, flat parents, conv embeddings of image parents]``."""

    def __init__(self, noise_dim: int, conf_dim: int, flat: Mapping[str, int], images: Mapping[str, Shape],
                 embed_dim: int, channels: Sequence[int], norm: str):
        super().__init__()
        if noise_dim < 0 or conf_dim < 0:
            raise ValueError("noise_dim and conf_dim must be >= 0")
        self.noise_dim, self.conf_dim = int(noise_dim), int(conf_dim)
        self.flat = dict(flat)
        self.image_shapes = dict(images)
        self.encoders = nn.ModuleDict({k: ConvEncoder(s, embed_dim, channels=channels, norm=norm)
                                       for k, s in self.image_shapes.items()})
        self.out_dim = self.noise_dim + self.conf_dim + sum(self.flat.values()) + embed_dim * len(self.image_shapes)
        if self.out_dim == 0:
            raise ValueError("the network has no input: give noise_dim, conf_dim or parents")

    @property
    def parent_names(self) -> list[str]:
        return list(self.flat) + list(self.image_shapes)

    def forward(self, parents: Mapping[str, Tensor] | None, noise: Tensor, confounders: Tensor | None) -> Tensor:
        b = noise.shape[0]
        if noise.dim() != 2 or noise.shape[1] != self.noise_dim:
            raise ValueError(f"noise must have shape (B, {self.noise_dim}), got {tuple(noise.shape)}")
        parts = [noise]
        if self.conf_dim:
            if confounders is None:
                raise ValueError(f"this mechanism expects confounder noise of size {self.conf_dim}")
            if tuple(confounders.shape) != (b, self.conf_dim):
                raise ValueError(f"confounders must have shape ({b}, {self.conf_dim}), got "
                                 f"{tuple(confounders.shape)}")
            parts.append(confounders.to(noise.dtype))
        elif confounders is not None and confounders.numel():
            raise ValueError("confounder noise given but this mechanism has conf_dim=0")
        parents = parents or {}
        missing = [k for k in self.parent_names if k not in parents]
        if missing:
            raise KeyError(f"missing parent(s) {missing} (expected {self.parent_names}, got {list(parents)})")
        for name, d in self.flat.items():
            x = parents[name]
            if x.shape[0] != b or x[0].numel() != d:
                raise ValueError(f"parent {name!r} must have {b} samples of size {d}, got shape {tuple(x.shape)}")
            parts.append(x.reshape(b, d).to(noise.dtype))
        for name, shape in self.image_shapes.items():
            x = parents[name]
            if x.shape[0] != b or x[0].numel() != shape[0] * shape[1] * shape[2]:
                raise ValueError(f"image parent {name!r} must have {b} samples of shape {shape}, got "
                                 f"{tuple(x.shape)}")
            parts.append(self.encoders[name](x.reshape(b, *shape).to(noise.dtype)))
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]


def _variable_dims(parents) -> dict[str, Any]:
    pvars = parents.values() if isinstance(parents, Mapping) else parents
    out = {}
    for p in pvars:
        out[p.name] = tuple(p.shape) if getattr(p, "kind", None) == "image" else int(p.dim)
    return out


# ============================================================================= mechanisms
@register_module("conv")
class ConvGenerator(nn.Module):
    """Conditional DCGAN mechanism of an image variable (mechanism protocol).

    Parameters
    ----------
    out_dim, shape:
        The image shape ``(C, H, W)`` with ``H = W`` in (28, 32); ``out_dim = C*H*W`` alone is
        enough for 1/3-channel images (how :class:`~whatifgan.dcm.DCM` builds default networks).
    output:
        Must be ``"image"`` (accepted for registry compatibility).
    noise_dim, conf_dim:
        Sizes of the exogenous noise and of the confounder noise (Definition 4.1).
    parent_dims:
        ``{parent: size}`` for low-dimensional parents (one-hot codes, vectors) and
        ``{parent: (C, H, W)}`` for image parents, embedded by a :class:`ConvEncoder` to
        ``embed_dim``. ``image_parents`` forces int-sized parents to be read as images.
    base_channels, batchnorm, value_range:
        Width of the decoder, BatchNorm in the generator (DCGAN), output range (tanh mapped).
    cond_layers:
        Also feed the parent encodings to every upsampling layer as constant planes (see
        :class:`ConvDecoder`; default: only through the first linear map, as in DCGAN). Not
        shown to help yet: on the front-door images it reached digit agreement 0.64 after 1,000
        steps (the default: 0.53 after 300, 0.93 after 1,500; no same-budget comparison).
    """

    mechanism_protocol = True

    def __init__(self, out_dim: int | None = None, *, shape: Sequence[int] | None = None, output: str = "image",
                 noise_dim: int = 128, conf_dim: int = 0, parent_dims: Mapping[str, Any] | None = None,
                 image_parents: Sequence[str] | None = None, embed_dim: int = 64, base_channels: int = 64,
                 encoder_channels: Sequence[int] = (32, 64, 128), batchnorm: bool = True,
                 value_range: tuple[float, float] = (-1.0, 1.0), cond_layers: bool = False):
        super().__init__()
        if output != "image":
            raise ValueError(f"ConvGenerator generates images; got output={output!r} (use 'mlp' or "
                             f"'conv_classifier' for low-dimensional variables)")
        if shape is None:
            if out_dim is None:
                raise ValueError("ConvGenerator needs shape=(C, H, W) or out_dim")
            shape = image_shape_from_dim(out_dim)
            if shape is None:
                raise ValueError(f"cannot infer an image shape from out_dim={out_dim}; pass shape=(C, H, W)")
        self.shape = _check_shape(shape, "ConvGenerator")
        self.out_dim = self.shape[0] * self.shape[1] * self.shape[2]
        if out_dim is not None and int(out_dim) != self.out_dim:
            raise ValueError(f"out_dim={out_dim} does not match shape {self.shape}")
        flat, images = _split_parents(parent_dims, image_parents)
        self.inputs = _ParentEncoder(noise_dim, conf_dim, flat, images, embed_dim, encoder_channels, "batch")
        self.noise_dim, self.conf_dim = self.inputs.noise_dim, self.inputs.conf_dim
        self.parent_dims = {**flat, **images}
        n_cond = self.inputs.out_dim - self.noise_dim - self.conf_dim
        self.cond_layers = bool(cond_layers) and n_cond > 0
        self.decoder = ConvDecoder(self.inputs.out_dim, self.shape, base_channels=base_channels,
                                   batchnorm=batchnorm, value_range=value_range,
                                   cond_dim=n_cond if self.cond_layers else 0)

    @classmethod
    def for_variable(cls, variable: Any, parents: Mapping[str, Any] | Sequence[Any] = (), *,
                     noise_dim: int = 128, conf_dim: int = 0, **kwargs: Any) -> ConvGenerator:
        """From variable specs: the image's shape and value range, the parents' sizes/shapes."""
        if getattr(variable, "kind", None) != "image":
            raise ValueError(f"ConvGenerator generates image variables; {getattr(variable, 'name', variable)!r} "
                             f"is {getattr(variable, 'kind', None)!r}")
        kwargs.setdefault("value_range", tuple(variable.value_range))
        return cls(shape=variable.shape, noise_dim=noise_dim, conf_dim=conf_dim,
                   parent_dims=_variable_dims(parents), **kwargs)

    def forward(self, parents: Mapping[str, Tensor] | None, noise: Tensor, confounders: Tensor | None = None,
                gumbel_noise: Tensor | None = None) -> GeneratorOutput:
        if gumbel_noise is not None:
            raise ValueError("gumbel_noise given to an image mechanism (only categorical heads take it)")
        h = self.inputs(parents, noise, confounders)
        cond = h[:, self.noise_dim + self.conf_dim:] if self.cond_layers else None
        return GeneratorOutput(self.decoder(h, cond), None)


@register_module("conv_classifier")
class ConvClassifierGenerator(nn.Module):
    """Mechanism of a discrete (or continuous) child of image parents (mechanism protocol).

    Conv encoders embed the image parents; an MLP over ``[noise, confounders, flat parents,
    image embeddings]`` gives logits; a Gumbel-softmax head (replayable noise) the sample.
    Parents as in :class:`ConvGenerator`.
    """

    mechanism_protocol = True

    def __init__(self, out_dim: int, *, output: str = "categorical", noise_dim: int = 16, conf_dim: int = 0,
                 parent_dims: Mapping[str, Any] | None = None, image_parents: Sequence[str] | None = None,
                 embed_dim: int = 64, hidden: int | Sequence[int] = (256,), channels: Sequence[int] = (32, 64, 128),
                 norm: str = "batch", temperature: float = 1.0, hard: bool = False):
        super().__init__()
        if output not in ("categorical", "continuous"):
            raise ValueError(f"output must be 'categorical' or 'continuous', got {output!r}")
        if out_dim < 1 or (output == "categorical" and out_dim < 2):
            raise ValueError(f"out_dim={out_dim} is too small for a {output} output")
        flat, images = _split_parents(parent_dims, image_parents)
        if not images:
            raise ValueError("ConvClassifierGenerator needs at least one image parent (use 'mlp' otherwise)")
        self.out_dim, self.output = int(out_dim), output
        self.inputs = _ParentEncoder(noise_dim, conf_dim, flat, images, embed_dim, channels, norm)
        self.noise_dim, self.conf_dim = self.inputs.noise_dim, self.inputs.conf_dim
        self.parent_dims = {**flat, **images}
        widths = [self.inputs.out_dim] + ([int(hidden)] if isinstance(hidden, int) else [int(h) for h in hidden])
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(a, b), nn.BatchNorm1d(b) if norm == "batch" else nn.Identity(), nn.ReLU()]
        self.mlp = nn.Sequential(*layers)
        self.head = nn.Linear(widths[-1], self.out_dim)
        self.gumbel = GumbelSoftmax(temperature, hard) if output == "categorical" else None

    @classmethod
    def for_variable(cls, variable: Any, parents: Mapping[str, Any] | Sequence[Any] = (), *,
                     noise_dim: int = 16, conf_dim: int = 0, **kwargs: Any) -> ConvClassifierGenerator:
        kind = getattr(variable, "kind", None)
        if kind not in ("categorical", "continuous"):
            raise ValueError(f"ConvClassifierGenerator generates categorical or continuous variables; "
                             f"{getattr(variable, 'name', variable)!r} is {kind!r}")
        return cls(variable.dim, output=kind, noise_dim=noise_dim, conf_dim=conf_dim,
                   parent_dims=_variable_dims(parents), **kwargs)

    def logits(self, parents: Mapping[str, Tensor] | None, noise: Tensor, confounders: Tensor | None = None) -> Tensor:
        return self.head(self.mlp(self.inputs(parents, noise, confounders)))

    def forward(self, parents: Mapping[str, Tensor] | None, noise: Tensor, confounders: Tensor | None = None,
                gumbel_noise: Tensor | None = None) -> GeneratorOutput:
        out = self.logits(parents, noise, confounders)
        if self.gumbel is None:
            if gumbel_noise is not None:
                raise ValueError("gumbel_noise given to a continuous mechanism")
            return GeneratorOutput(out, None)
        value, g = self.gumbel(out, gumbel_noise)
        return GeneratorOutput(value, g)


# ============================================================================= critic
@register_module("critic_conv")
class ConvCritic(nn.Module):
    """WGAN-GP critic for images plus compared low-dimensional variables (no batch norm).

    Parameters
    ----------
    images:
        ``{key: (C, H, W)}`` of the compared images (same H, W; channels are concatenated), or a
        single shape (key ``"image"``).
    cond_dims:
        ``{key: size}`` of compared low-dimensional variables (one-hot codes, vectors, encoder
        codes such as ``RI``).
    cond:
        ``"planes"``: each low-dimensional value is tiled into a constant ``H x W`` plane and
        concatenated to the image channels (label planes); ``"embed"``: an MLP embedding is
        concatenated to the conv trunk's features.
    pac:
        PacGAN packing factor, as :class:`trainers.WGANGPTrainer` packs (consecutive samples
        concatenated along channels / features).
    keys:
        Order of the variables in a flat input (default: image keys, then cond keys), i.e. the
        trainer's ``compare_keys`` order when ``flatten=True``.

    Input: a dict ``{key: tensor}`` (``flatten=False``), a flat tensor ``(B, D)`` (``flatten=True``),
    or a bare image tensor when there is a single image and no cond. Output ``(B', 1)``.
    """

    def __init__(self, images: Mapping[str, Sequence[int]] | Sequence[int] = (3, 28, 28), *,
                 cond_dims: Mapping[str, int] | None = None, cond: str = "planes", pac: int = 1,
                 channels: Sequence[int] = (64, 128, 256), hidden: int = 256, cond_embed: int = 64,
                 norm: str = "none", negative_slope: float = 0.2, keys: Sequence[str] | None = None):
        super().__init__()
        if isinstance(images, Mapping):
            shapes = {str(k): _check_shape(s, f"critic image {k!r}") for k, s in images.items()}
        else:
            shapes = {"image": _check_shape(images, "critic image")}
        if not shapes:
            raise ValueError("ConvCritic needs at least one image")
        sizes = {s[1] for s in shapes.values()}
        if len(sizes) != 1:
            raise ValueError(f"all compared images must have the same size, got {shapes}")
        if cond not in ("planes", "embed"):
            raise ValueError(f"cond must be 'planes' or 'embed', got {cond!r}")
        if norm == "batch":
            raise ValueError("no batch norm in WGAN-GP critics (use norm='layer' or 'none')")
        if pac < 1:
            raise ValueError(f"pac must be >= 1, got {pac}")
        self.image_shapes = shapes
        self.cond_dims = {str(k): int(v) for k, v in (cond_dims or {}).items()}
        overlap = set(self.image_shapes) & set(self.cond_dims)
        if overlap:
            raise ValueError(f"{sorted(overlap)} listed both as image and as cond")
        self.cond, self.pac = cond, int(pac)
        self.size = sizes.pop()
        self.keys = list(keys) if keys is not None else list(shapes) + list(self.cond_dims)
        if sorted(self.keys) != sorted(list(shapes) + list(self.cond_dims)):
            raise ValueError(f"keys {self.keys} must list exactly the images {list(shapes)} and conds "
                             f"{list(self.cond_dims)}")
        self.image_channels = sum(s[0] for s in shapes.values())
        self.cond_total = sum(self.cond_dims.values())
        self.in_dim = sum(s[0] * s[1] * s[2] for s in shapes.values()) + self.cond_total
        c_in = self.pac * (self.image_channels + (self.cond_total if cond == "planes" else 0))
        self.trunk = ConvEncoder((c_in, self.size, self.size), 1, channels=channels, norm=norm,
                                 negative_slope=negative_slope)
        extra = 0
        if cond == "embed" and self.cond_total:
            self.cond_mlp = nn.Sequential(nn.Linear(self.pac * self.cond_total, hidden), nn.LeakyReLU(negative_slope),
                                          nn.Linear(hidden, cond_embed), nn.LeakyReLU(negative_slope))
            extra = cond_embed
        else:
            self.cond_mlp = None
        self.head = nn.Sequential(nn.Linear(self.trunk.feature_dim + extra, hidden), nn.LeakyReLU(negative_slope),
                                  nn.Linear(hidden, 1))

    def _parts(self, x) -> dict[str, Tensor]:
        """Per-key packed tensors: images ``(B', pac*C, H, W)``, conds ``(B', pac*d)``."""
        p = self.pac
        if isinstance(x, Mapping):
            out = {}
            for k in self.keys:
                if k not in x:
                    raise KeyError(f"critic input lacks {k!r} (has {sorted(x)})")
                t = x[k]
                if k in self.image_shapes:
                    c, h, w = self.image_shapes[k]
                    per = t[0].numel()
                    if per == c * h * w and p > 1:  # unpacked: pack here
                        if t.shape[0] % p:
                            raise ValueError(f"batch size {t.shape[0]} is not divisible by pac={p}")
                        t = t.reshape(t.shape[0] // p, p * c, h, w)
                    elif per == p * c * h * w:
                        t = t.reshape(t.shape[0], p * c, h, w)
                    else:
                        raise ValueError(f"image {k!r} must have {c}x{h}x{w} values per sample, got {tuple(t.shape)}")
                else:
                    d = self.cond_dims[k]
                    per = t[0].numel() if t.dim() > 1 else 1
                    if per == d and p > 1:
                        t = t.reshape(t.shape[0] // p, p * d)
                    elif per == p * d:
                        t = t.reshape(t.shape[0], p * d)
                    else:
                        raise ValueError(f"cond {k!r} must have {d} values per sample, got {tuple(t.shape)}")
                out[k] = t
            return out
        if x.dim() == 4 and len(self.keys) == 1:
            return self._parts({self.keys[0]: x})
        if x.dim() != 2:
            x = x.reshape(x.shape[0], -1)
        d = x.shape[1]
        if d == self.in_dim * p:
            pass
        elif p > 1 and d == self.in_dim:
            if x.shape[0] % p:
                raise ValueError(f"batch size {x.shape[0]} is not divisible by pac={p}")
            x = x.reshape(x.shape[0] // p, p * d)
        else:
            raise ValueError(f"critic expects {self.in_dim * p} features per row"
                             + (f" (or {self.in_dim} unpacked)" if p > 1 else "") + f", got {d}")
        x = x.reshape(x.shape[0], p, self.in_dim)
        out, a = {}, 0
        for k in self.keys:
            if k in self.image_shapes:
                c, h, w = self.image_shapes[k]
                n = c * h * w
                out[k] = x[:, :, a:a + n].reshape(x.shape[0], p * c, h, w)
            else:
                n = self.cond_dims[k]
                out[k] = x[:, :, a:a + n].reshape(x.shape[0], p * n)
            a += n
        return out

    def forward(self, x) -> Tensor:
        parts = self._parts(x)
        img = torch.cat([parts[k] for k in self.image_shapes], dim=1)
        b = img.shape[0]
        cond = (torch.cat([parts[k].to(img.dtype) for k in self.cond_dims], dim=1) if self.cond_dims else None)
        if cond is not None and self.cond == "planes":
            img = torch.cat([img, cond[:, :, None, None].expand(b, cond.shape[1], self.size, self.size)], dim=1)
        h = self.trunk.features(img)
        if cond is not None and self.cond_mlp is not None:
            h = torch.cat([h, self.cond_mlp(cond)], dim=1)
        return self.head(h)


# ============================================================================= autoencoder
@register_module("conv_autoencoder")
class ConvAutoencoder(nn.Module):
    """Small convolutional autoencoder; its encoder is the representation ``RI = E(I)`` used to
    compare joints of images and labels (WhatIfGAN Section 5.1, Appendix F.2).

    ``encode(x) -> (B, code_dim)``; ``decode(z) -> (B, C, H, W)`` in ``value_range``;
    ``forward(x)`` reconstructs. :meth:`fit` trains with the mean squared error;
    :meth:`representation` returns the frozen encoder.
    """

    def __init__(self, shape: Sequence[int] = (3, 28, 28), code_dim: int = 10, *,
                 channels: Sequence[int] = (32, 64, 128), base_channels: int = 32,
                 value_range: tuple[float, float] = (-1.0, 1.0)):
        super().__init__()
        self.shape = _check_shape(shape, "ConvAutoencoder")
        self.code_dim = int(code_dim)
        self.value_range = tuple(float(v) for v in value_range)
        self.encoder = ConvEncoder(self.shape, self.code_dim, channels=channels, norm="batch")
        self.decoder = ConvDecoder(self.code_dim, self.shape, base_channels=base_channels,
                                   value_range=self.value_range)

    def encode(self, x: Tensor) -> Tensor:
        return self.encoder(x.reshape(x.shape[0], *self.shape))

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z)

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))

    def _prepare(self, images) -> Tensor:
        t = images if isinstance(images, Tensor) else torch.as_tensor(images)
        t = t.reshape(t.shape[0], *self.shape)
        if t.dtype == torch.uint8:
            lo, hi = self.value_range
            return t.to(torch.get_default_dtype()) / 255.0 * (hi - lo) + lo
        return t.to(torch.get_default_dtype())

    def fit(self, images, *, steps: int = 1000, batch_size: int = 64, lr: float = 1e-3, seed: int = 0,
            device: str | torch.device | None = None, progress: bool | None = None,
            log_every: int = 0) -> dict[str, Any]:
        """Train on ``images`` (uint8 ``[N, C, H, W]`` or floats in ``value_range``) with Adam and
        the MSE loss; returns ``{"loss": final smoothed loss, "history": [...], "steps": n}``.
        Runs on ``device`` (default: where the model is)."""
        from trainers.core import ProgressBar

        data = self._prepare(images)
        dev = next(self.parameters()).device if device is None else torch.device(device)
        self.to(dev)
        g = torch.Generator().manual_seed(int(seed))
        opt = torch.optim.Adam(self.parameters(), lr=lr)
        self.train()
        hist, ema = [], None
        bar = ProgressBar(steps, desc="autoencoder", enabled=progress)
        n = data.shape[0]
        try:
            for step in range(int(steps)):
                idx = torch.randint(n, (min(batch_size, n),), generator=g)
                x = data[idx].to(dev)
                loss = F.mse_loss(self(x), x)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                v = float(loss.detach())
                ema = v if ema is None else 0.95 * ema + 0.05 * v
                if log_every and (step + 1) % log_every == 0:
                    hist.append((step + 1, ema))
                bar.update(1, loss=ema)
        finally:
            bar.close()
        self.eval()
        return {"loss": ema, "history": hist, "steps": int(steps)}

    @torch.no_grad()
    def reconstruction_error(self, images, batch_size: int = 512) -> float:
        """Mean squared reconstruction error (eval mode) in ``value_range`` units."""
        was = self.training
        self.eval()
        data = self._prepare(images)
        dev = next(self.parameters()).device
        tot = 0.0
        for a in range(0, data.shape[0], batch_size):
            x = data[a:a + batch_size].to(dev)
            tot += float(F.mse_loss(self(x), x, reduction="sum"))
        self.train(was)
        return tot / data.numel()

    def representation(self) -> nn.Module:
        """The encoder as a frozen module ``images -> codes`` (eval mode, no gradient to its
        weights; gradients still flow to its input, as a critic-side encoder needs). A copy: the
        autoencoder itself stays trainable."""
        import copy

        return _FrozenEncoder(copy.deepcopy(self.encoder), self.shape)


class _FrozenEncoder(nn.Module):
    def __init__(self, encoder: ConvEncoder, shape: Shape):
        super().__init__()
        self.encoder = encoder
        self.shape = shape
        self.out_dim = encoder.out_dim
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        self.encoder.eval()

    def train(self, mode: bool = True) -> _FrozenEncoder:
        self.training = mode
        return self

    def forward(self, x: Tensor) -> Tensor:
        return self.encoder(x.reshape(x.shape[0], *self.shape))


# ============================================================================= representation critic
@register_module("critic_rep")
class RepresentationCritic(nn.Module):
    """WGAN-GP critic over low-dimensional variables and the *representations* ``RI = E(I)`` of
    images (WhatIfGAN Section 5.1 / Appendix F.2: match ``P(D, A, RI)`` instead of ``P(D, A, I)``,
    because losses of low- and high-dimensional variables in one critic are hard to balance).

    ``encoders[key]`` maps images ``(B, C, H, W)`` (or flat ``(B, C*H*W)``) to codes ``(B, d)``;
    it is frozen here (no gradient to its weights, eval mode) while gradients still reach the
    images, so the generators upstream of an image are trained through it. The codes and the
    low-dimensional values are concatenated in ``keys`` order and fed to an MLP critic.

    Input: a flat tensor ``(B, D)`` with the variables in ``keys`` order (images flattened), as
    :class:`trainers.WGANGPTrainer` builds it with ``flatten=True``, packed by ``pac`` or not; or a
    dict ``{key: tensor}``. Output ``(B', 1)``.
    """

    def __init__(self, encoders: Mapping[str, nn.Module], images: Mapping[str, Sequence[int]], *,
                 cond_dims: Mapping[str, int] | None = None, keys: Sequence[str] | None = None, pac: int = 1,
                 hidden: Sequence[int] = (256, 256), negative_slope: float = 0.2):
        super().__init__()
        self.image_shapes = {str(k): _check_shape(s, f"critic image {k!r}") for k, s in images.items()}
        if not self.image_shapes:
            raise ValueError("RepresentationCritic needs at least one image")
        missing = [k for k in self.image_shapes if k not in encoders]
        if missing:
            raise ValueError(f"no representation encoder for image(s) {missing}")
        self.cond_dims = {str(k): int(v) for k, v in (cond_dims or {}).items()}
        self.keys = list(keys) if keys is not None else list(self.image_shapes) + list(self.cond_dims)
        if sorted(self.keys) != sorted(list(self.image_shapes) + list(self.cond_dims)):
            raise ValueError(f"keys {self.keys} must list exactly the images {list(self.image_shapes)} and "
                             f"conds {list(self.cond_dims)}")
        if pac < 1:
            raise ValueError(f"pac must be >= 1, got {pac}")
        self.pac = int(pac)
        self.encoders = nn.ModuleDict({k: encoders[k] for k in self.image_shapes})
        for enc in self.encoders.values():
            for p in enc.parameters():
                p.requires_grad_(False)
            enc.eval()
        self.code_dims = {}
        for k, shape in self.image_shapes.items():
            with torch.no_grad():
                self.code_dims[k] = int(self.encoders[k](torch.zeros(2, *shape)).shape[1])
        self.sizes = {k: (s[0] * s[1] * s[2] if k in self.image_shapes else self.cond_dims[k])
                      for k, s in [(k, self.image_shapes.get(k)) for k in self.keys]}
        self.in_dim = sum(self.sizes.values())
        self.feature_dim = sum(self.code_dims[k] if k in self.image_shapes else self.cond_dims[k] for k in self.keys)
        widths = [self.pac * self.feature_dim] + [int(h) for h in hidden]
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(a, b), nn.LeakyReLU(negative_slope)]
        self.mlp = nn.Sequential(*layers, nn.Linear(widths[-1], 1))

    def train(self, mode: bool = True) -> "RepresentationCritic":
        super().train(mode)
        for enc in self.encoders.values():  # the representation never changes
            enc.eval()
        return self

    def features(self, x) -> Tensor:
        """``(B, feature_dim)``: per sample, the codes of the images and the low-dimensional
        values, in ``keys`` order (unpacked)."""
        if isinstance(x, Mapping):
            parts = {k: x[k].reshape(-1, self.sizes[k]) for k in self.keys}
        else:
            flat = x.reshape(x.shape[0], -1)
            if flat.shape[1] not in (self.in_dim, self.pac * self.in_dim):
                raise ValueError(f"critic expects {self.in_dim} (or {self.pac * self.in_dim} packed) features per "
                                 f"row, got {flat.shape[1]}")
            flat = flat.reshape(-1, self.in_dim)
            parts, a = {}, 0
            for k in self.keys:
                parts[k] = flat[:, a:a + self.sizes[k]]
                a += self.sizes[k]
        out = []
        for k in self.keys:
            t = parts[k]
            if k in self.image_shapes:
                t = self.encoders[k](t.reshape(t.shape[0], *self.image_shapes[k]))
            out.append(t)
        return torch.cat(out, dim=1)

    def forward(self, x) -> Tensor:
        f = self.features(x)
        if f.shape[0] % self.pac:
            raise ValueError(f"batch size {f.shape[0]} is not divisible by pac={self.pac}")
        return self.mlp(f.reshape(f.shape[0] // self.pac, self.pac * self.feature_dim))

"""Time-conditioned UNet ``eps_theta(x_t, t, cond)`` and classifier ``p_phi(y | x_t, t)``.

Small networks for 28x28 and 32x32 images (MNIST-like; any size works), following the
architecture family of Ho et al. (2020) and Dhariwal & Nichol (2021) that both papers use:

* Diff-SCM, Appendix E: "eps_theta is implemented as an encoder-decoder architecture with
  skip-connections, i.e. a Unet-like network ... (ii) A (anti-causal) classifier that uses the
  encoder of eps_theta with a pooling layer followed by a linear classifier.  All models are time
  conditioned.  Time ... is embedded using the transformer's sinusoidal position embedding ...
  incorporated ... with an Adaptive Group Normalization layer into each residual block".  Table 2
  (MNIST): diffusion 64 channels, depth 1, channel multipliers 1,2,4, no attention; classifier 32
  channels, depth 1, multipliers 1,2,4,4.  These are the ``"paper"`` presets.
* ID-GEN, Appendix F.2.3: "a standard UNet ... conditioning scheme of classifier-free guidance ...
  we insert at every layer an embedding of the W1 (image) and W2 (discrete variable).  To embed
  the W1 image, we use the base of a 2-layer convolutional neural network ... one-hot embedding
  for each of the variables ... mixed through a 2-layer fully connected network".

Conditions (all optional, summed into one embedding that is added to the time embedding and so
reaches every residual block through adaptive group normalisation):

* **labels** ``{name: k}``: ``nn.Embedding(k + 1, d)`` per label variable; index ``k`` is the
  explicit *null token* used for classifier-free guidance (never class 0).  Values are integer
  codes ``(B,)`` in ``0..k`` (``k`` = null) or one-hot rows ``(B, k)``.
* **vectors** ``{name: d}``: continuous or one-hot vectors through a linear layer; null rows use a
  learned null embedding.
* **images** ``{name: channels}``: a small conv encoder, either pooled into the embedding
  (``image_mode="embed"``, learned null embedding) or kept as feature maps concatenated to the
  input channels with a presence channel (``image_mode="concat"``; null = zero features and
  presence 0, so a null image differs from a black one).

``forward(x, t, cond, null_mask=None)``: ``cond`` maps every declared condition name to its value
(``None`` = null for that condition); ``cond=None`` is fully unconditional.  ``null_mask``
``(B,)`` bool marks rows whose conditions are all replaced by their null values -- the
unconditional branch used by classifier-free guidance (Ho & Salimans 2021) and by condition
dropout in :class:`trainers.DiffusionTrainer`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .registry import register_module

__all__ = ["CLASSIFIER_PRESETS", "UNET_PRESETS", "AttentionBlock", "ConditionEmbedding",
           "ResBlock", "TimeConditionedClassifier", "UNet", "timestep_embedding"]

#: Sizes: "tiny" for tests, "fast" trains on a CPU, "paper" is Diff-SCM's MNIST model (Table 2).
UNET_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"base_channels": 16, "channel_mult": (1, 2), "num_res_blocks": 1,
             "attention": False},
    "fast": {"base_channels": 32, "channel_mult": (1, 2), "num_res_blocks": 1,
             "attention": True},
    "paper": {"base_channels": 64, "channel_mult": (1, 2, 4), "num_res_blocks": 1,
              "attention": False},
}
CLASSIFIER_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"base_channels": 16, "channel_mult": (1, 2), "num_res_blocks": 1},
    "fast": {"base_channels": 32, "channel_mult": (1, 2), "num_res_blocks": 1},
    "paper": {"base_channels": 32, "channel_mult": (1, 2, 4, 4), "num_res_blocks": 1},
}


# ----------------------------------------------------------------------------------------------
# pieces
# ----------------------------------------------------------------------------------------------
def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of the diffusion time (Vaswani et al. 2017; Ho et al. 2020, Sec. 4;
    Diff-SCM Appendix E): ``[cos(t w_j), sin(t w_j)]`` with ``w_j = max_period^(-j / (dim/2))``."""
    t = t.reshape(-1).float()
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device,
                                                           dtype=torch.float32) / max(half, 1))
    args = t[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=1)
    return emb


def _groups(channels: int, groups: int) -> int:
    return math.gcd(int(channels), int(groups)) or 1


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """Residual block with adaptive group normalisation (Dhariwal & Nichol 2021, Sec. 3;
    Diff-SCM Appendix E): ``GN(h) (1 + scale(e)) + shift(e)`` with ``e`` the time (+condition)
    embedding.  The last convolution starts at zero, so every block starts as the identity."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, *, dropout: float = 0.0,
                 groups: int = 8):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(in_ch, groups), in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * out_ch))
        self.norm2 = nn.GroupNorm(_groups(out_ch, groups), out_ch)
        self.drop = nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.drop(F.silu(h)))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over spatial positions with a residual connection (used at the
    lowest resolution, Ho et al. 2020 / Dhariwal & Nichol 2021)."""

    def __init__(self, channels: int, *, num_heads: int = 4, groups: int = 8):
        super().__init__()
        heads = max(1, math.gcd(int(num_heads), int(channels)))
        self.heads = heads
        self.norm = nn.GroupNorm(_groups(channels, groups), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = _zero(nn.Conv2d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        b, c, hh, ww = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, hh * ww
                                                 ).transpose(-1, -2).unbind(1)
        out = F.scaled_dot_product_attention(q, k, v)  # (b, heads, hw, c/heads)
        out = out.transpose(-1, -2).reshape(b, c, hh, ww)
        return x + self.proj(out)


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour upsampling to the skip connection's size, then a 3x3 convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor, size: Sequence[int] | None = None) -> Tensor:
        if size is None:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        else:
            x = F.interpolate(x, size=tuple(size), mode="nearest")
        return self.conv(x)


class _Stage(nn.ModuleList):
    """Modules applied in order; residual blocks get the embedding, upsamplers a target size."""

    def forward(self, x: Tensor, emb: Tensor, size: Sequence[int] | None = None) -> Tensor:
        for m in self:
            if isinstance(m, ResBlock):
                x = m(x, emb)
            elif isinstance(m, Upsample):
                x = m(x, size)
            else:
                x = m(x)
        return x


class _TimeEmbedding(nn.Module):
    def __init__(self, base: int, dim: int):
        super().__init__()
        self.base = base
        self.mlp = nn.Sequential(nn.Linear(base, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: Tensor, dtype: torch.dtype) -> Tensor:
        return self.mlp(timestep_embedding(t, self.base).to(dtype))


def _timesteps(t: Tensor | int | float, batch: int, device: torch.device) -> Tensor:
    t = torch.as_tensor(t, device=device)
    if t.dim() == 0 or t.numel() == 1:
        return t.reshape(1).expand(batch)
    t = t.reshape(-1)
    if t.numel() != batch:
        raise ValueError(f"got {t.numel()} timesteps for a batch of {batch}")
    return t


def _encoder(in_ch: int, base: int, mult: Sequence[int], num_res_blocks: int, emb_dim: int,
             attention: bool, num_heads: int, dropout: float, groups: int
             ) -> tuple[nn.Conv2d, nn.ModuleList, list[int], int]:
    """Input convolution and down path; returns the skip channel list and the last width."""
    conv_in = nn.Conv2d(in_ch, base, 3, padding=1)
    stages = nn.ModuleList()
    skips, ch = [base], base
    for level, m in enumerate(mult):
        out = base * int(m)
        lowest = level == len(mult) - 1
        for _ in range(num_res_blocks):
            st = _Stage([ResBlock(ch, out, emb_dim, dropout=dropout, groups=groups)])
            ch = out
            if attention and lowest:
                st.append(AttentionBlock(ch, num_heads=num_heads, groups=groups))
            stages.append(st)
            skips.append(ch)
        if not lowest:
            stages.append(_Stage([Downsample(ch)]))
            skips.append(ch)
    return conv_in, stages, skips, ch


def _check_mult(channel_mult: Sequence[int], num_res_blocks: int, base: int) -> tuple[int, ...]:
    mult = tuple(int(m) for m in channel_mult)
    if not mult or any(m < 1 for m in mult):
        raise ValueError(f"channel_mult must be a non-empty sequence of positive ints, got "
                         f"{channel_mult!r}")
    if num_res_blocks < 1:
        raise ValueError(f"num_res_blocks must be >= 1, got {num_res_blocks}")
    if base < 1:
        raise ValueError(f"base_channels must be >= 1, got {base}")
    return mult


# ----------------------------------------------------------------------------------------------
# conditions
# ----------------------------------------------------------------------------------------------
class _ImageEmbed(nn.Module):
    """Small conv encoder of an image condition pooled to a vector (ID-GEN F.2.3)."""

    def __init__(self, in_ch: int, ch: int, dim: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_ch, ch, 3, padding=1), nn.SiLU(),
            nn.Conv2d(ch, 2 * ch, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(2 * ch, 2 * ch, 3, stride=2, padding=1), nn.SiLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * ch, dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class _ImageFeatures(nn.Module):
    """Two-layer conv encoder keeping the resolution (features concatenated to the input)."""

    def __init__(self, in_ch: int, ch: int):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(in_ch, ch, 3, padding=1), nn.SiLU(),
                                 nn.Conv2d(ch, ch, 3, padding=1))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def _as_mapping(x: Mapping[str, int] | None, what: str) -> dict[str, int]:
    if x is None:
        return {}
    if not isinstance(x, Mapping):
        raise TypeError(f"{what} must be a mapping {{name: size}}, got {type(x).__name__}")
    out = {str(k): int(v) for k, v in x.items()}
    for k, v in out.items():
        if v < 1:
            raise ValueError(f"{what}[{k!r}] must be >= 1, got {v}")
    return out


class ConditionEmbedding(nn.Module):
    """One embedding per sample from label, vector and image conditions, each with an explicit
    null (classifier-free guidance, Ho & Salimans 2021; ID-GEN Appendix F.2.3).

    Label variable ``name`` with ``k`` classes embeds codes ``0..k-1`` and the null token ``k``
    (:meth:`null_token`).  The per-condition embeddings are summed and mixed by a 2-layer MLP.
    """

    def __init__(self, out_dim: int, *, labels: Mapping[str, int] | None = None,
                 vectors: Mapping[str, int] | None = None,
                 images: Mapping[str, int] | None = None, embed_dim: int | None = None,
                 image_encoder_channels: int = 32):
        super().__init__()
        self.num_classes = _as_mapping(labels, "labels")
        self.vector_dims = _as_mapping(vectors, "vectors")
        self.image_channels = _as_mapping(images, "images")
        d = int(embed_dim or out_dim)
        self.embed_dim = d
        self.labels = nn.ModuleDict({k: nn.Embedding(n + 1, d) for k, n in
                                     self.num_classes.items()})
        self.vectors = nn.ModuleDict({k: nn.Linear(n, d) for k, n in self.vector_dims.items()})
        self.images = nn.ModuleDict({k: _ImageEmbed(c, image_encoder_channels, d)
                                     for k, c in self.image_channels.items()})
        self.null = nn.ParameterDict({k: nn.Parameter(torch.randn(d) * 0.1) for k in
                                      [*self.vector_dims, *self.image_channels]})
        self.mix = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, out_dim))

    @property
    def names(self) -> list[str]:
        return [*self.num_classes, *self.vector_dims, *self.image_channels]

    def null_token(self, name: str) -> int:
        """Index of the null token of label variable ``name`` (= its number of classes)."""
        return self.num_classes[name]

    def label_codes(self, name: str, value: Tensor | None, batch: int, device,
                    null_mask: Tensor | None) -> Tensor:
        """Integer codes ``(B,)`` in ``0..k`` (``k`` = null) from codes or one-hot rows."""
        k = self.num_classes[name]
        if value is None:
            return torch.full((batch,), k, dtype=torch.long, device=device)
        v = value
        if v.is_floating_point():
            if v.dim() == 2 and v.shape[1] == k:
                v = v.argmax(dim=1)
            elif v.dim() <= 2 and v.reshape(v.shape[0], -1).shape[1] == 1:
                v = v.reshape(-1).round()
            else:
                raise ValueError(f"label {name!r}: expected integer codes (B,) or one-hot rows "
                                 f"(B, {k}), got a float tensor of shape {tuple(v.shape)}")
        v = v.reshape(v.shape[0], -1)
        if v.shape[1] != 1:
            raise ValueError(f"label {name!r}: expected codes of shape (B,) or (B, 1), got "
                             f"{tuple(value.shape)}")
        v = v.reshape(-1).long().to(device)
        if v.shape[0] != batch:
            raise ValueError(f"label {name!r}: {v.shape[0]} values for a batch of {batch}")
        if v.numel() and (int(v.min()) < 0 or int(v.max()) > k):
            raise ValueError(f"label {name!r} has {k} classes: codes must lie in 0..{k - 1}, or "
                             f"{k} for the null token; got values in {int(v.min())}.."
                             f"{int(v.max())}")
        if null_mask is not None:
            v = torch.where(null_mask, torch.full_like(v, k), v)
        return v

    def forward(self, cond: Mapping[str, Any], null_mask: Tensor | None, batch: int,
                like: Tensor) -> Tensor:
        dev, dt = like.device, like.dtype
        total = torch.zeros(batch, self.embed_dim, device=dev, dtype=dt)
        for name, emb in self.labels.items():
            codes = self.label_codes(name, cond.get(name), batch, dev, null_mask)
            total = total + emb(codes).to(dt)
        for name, lin in self.vectors.items():
            total = total + self._with_null(name, cond.get(name), lin, null_mask, batch, dev, dt,
                                            self.vector_dims[name])
        for name, enc in self.images.items():
            total = total + self._with_null(name, cond.get(name), enc, null_mask, batch, dev, dt,
                                            None)
        return self.mix(total)

    def _with_null(self, name, value, net, null_mask, batch, dev, dt, dim) -> Tensor:
        null = self.null[name].to(dt)[None].expand(batch, -1)
        if value is None:
            return null
        v = value.to(device=dev, dtype=dt)
        if v.shape[0] != batch:
            raise ValueError(f"condition {name!r}: {v.shape[0]} rows for a batch of {batch}")
        if dim is not None:
            v = v.reshape(batch, -1)
            if v.shape[1] != dim:
                raise ValueError(f"vector condition {name!r} has {dim} dims, got "
                                 f"{tuple(value.shape)}")
        elif v.dim() != 4:
            raise ValueError(f"image condition {name!r} must be (B, C, H, W), got "
                             f"{tuple(value.shape)}")
        e = net(v)
        if null_mask is not None:
            e = torch.where(null_mask[:, None], null, e)
        return e


# ----------------------------------------------------------------------------------------------
# UNet
# ----------------------------------------------------------------------------------------------
def _apply_preset(presets: Mapping[str, Mapping[str, Any]], preset: str | None,
                  kwargs: dict[str, Any], who: str) -> dict[str, Any]:
    if preset is None:
        return kwargs
    if preset not in presets:
        raise ValueError(f"unknown {who} preset {preset!r}; known: {sorted(presets)}")
    return {**presets[preset], **kwargs}


class UNet(nn.Module):
    """Noise-prediction network ``eps_theta(x_t, t, cond)`` (see the module docstring).

    Parameters
    ----------
    in_channels, out_channels:
        Image channels (``out_channels`` defaults to ``in_channels``: epsilon prediction).
    image_size:
        Optional expected input size (checked in ``forward``; None accepts any size).
    base_channels, channel_mult, num_res_blocks:
        Width, per-level multipliers (``len(channel_mult) - 1`` down/up-sampling levels) and
        residual blocks per level ("depth").
    attention:
        Self-attention at the lowest resolution (in its blocks and in the middle).
    num_heads, dropout, groups:
        Attention heads, dropout in residual blocks, GroupNorm groups (reduced to a divisor).
    time_embed_dim:
        Width of the time/condition embedding (default ``4 * base_channels``).
    labels / num_classes:
        Label conditions ``{name: k}`` (``num_classes=k`` is shorthand for ``{"y": k}``).
    vectors, images:
        Vector conditions ``{name: dim}`` and image conditions ``{name: channels}``.
    image_mode:
        ``"embed"`` or ``"concat"`` for image conditions.
    cond_embed_dim, image_encoder_channels:
        Width of the per-condition embeddings and of the image-condition encoders.
    """

    supports_null_mask = True

    def __init__(self, in_channels: int = 1, out_channels: int | None = None, *,
                 image_size: int | Sequence[int] | None = None, base_channels: int = 32,
                 channel_mult: Sequence[int] = (1, 2), num_res_blocks: int = 1,
                 attention: bool = False, num_heads: int = 4, dropout: float = 0.0,
                 groups: int = 8, time_embed_dim: int | None = None,
                 labels: Mapping[str, int] | None = None, num_classes: int | None = None,
                 vectors: Mapping[str, int] | None = None,
                 images: Mapping[str, int] | None = None, image_mode: str = "embed",
                 cond_embed_dim: int | None = None, image_encoder_channels: int = 32):
        super().__init__()
        mult = _check_mult(channel_mult, num_res_blocks, base_channels)
        if num_classes is not None:
            if labels:
                raise ValueError("give either num_classes (one label 'y') or labels, not both")
            labels = {"y": int(num_classes)}
        if image_mode not in ("embed", "concat"):
            raise ValueError(f"image_mode must be 'embed' or 'concat', got {image_mode!r}")
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels if out_channels is not None else in_channels)
        if image_size is not None:
            image_size = ((int(image_size),) * 2 if isinstance(image_size, int)
                          else tuple(int(s) for s in image_size))
        self.image_size = image_size
        self.base_channels = int(base_channels)
        self.image_mode = image_mode
        emb_dim = int(time_embed_dim or 4 * base_channels)
        self.time_embed = _TimeEmbedding(self.base_channels, emb_dim)

        labels_m = _as_mapping(labels, "labels")
        vectors_m = _as_mapping(vectors, "vectors")
        images_m = _as_mapping(images, "images")
        self.condition_names = [*labels_m, *vectors_m, *images_m]
        if len(set(self.condition_names)) != len(self.condition_names):
            raise ValueError(f"condition names must be unique across labels/vectors/images, got "
                             f"{self.condition_names}")
        embed_images = images_m if image_mode == "embed" else {}
        self.concat_images = {} if image_mode == "embed" else dict(images_m)
        if labels_m or vectors_m or embed_images:
            self.cond_embed: ConditionEmbedding | None = ConditionEmbedding(
                emb_dim, labels=labels_m, vectors=vectors_m, images=embed_images,
                embed_dim=cond_embed_dim, image_encoder_channels=image_encoder_channels)
        else:
            self.cond_embed = None
        self.image_features = nn.ModuleDict({k: _ImageFeatures(c, image_encoder_channels)
                                             for k, c in self.concat_images.items()})
        extra = len(self.concat_images) * (image_encoder_channels + 1)

        self.conv_in, self.down, skips, ch = _encoder(
            self.in_channels + extra, self.base_channels, mult, num_res_blocks, emb_dim,
            attention, num_heads, dropout, groups)
        mid = _Stage([ResBlock(ch, ch, emb_dim, dropout=dropout, groups=groups)])
        if attention:
            mid.append(AttentionBlock(ch, num_heads=num_heads, groups=groups))
        mid.append(ResBlock(ch, ch, emb_dim, dropout=dropout, groups=groups))
        self.mid = mid
        self.up = nn.ModuleList()
        for level in reversed(range(len(mult))):
            out = self.base_channels * mult[level]
            for r in range(num_res_blocks + 1):
                st = _Stage([ResBlock(ch + skips.pop(), out, emb_dim, dropout=dropout,
                                      groups=groups)])
                ch = out
                if attention and level == len(mult) - 1:
                    st.append(AttentionBlock(ch, num_heads=num_heads, groups=groups))
                if level > 0 and r == num_res_blocks:
                    st.append(Upsample(ch))
                self.up.append(st)
        self.out = nn.Sequential(nn.GroupNorm(_groups(ch, groups), ch), nn.SiLU(),
                                 _zero(nn.Conv2d(ch, self.out_channels, 3, padding=1)))

    @classmethod
    def from_preset(cls, preset: str, **kwargs: Any) -> UNet:
        """``"tiny"``, ``"fast"`` or ``"paper"`` (:data:`UNET_PRESETS`), overridden by kwargs."""
        return cls(**_apply_preset(UNET_PRESETS, preset, kwargs, "UNet"))

    # ------------------------------------------------------------------ conditions
    @property
    def num_classes(self) -> dict[str, int]:
        return dict(self.cond_embed.num_classes) if self.cond_embed is not None else {}

    def null_token(self, name: str = "y") -> int:
        """Null-token index of label condition ``name`` (its number of classes, never 0)."""
        if self.cond_embed is None or name not in self.cond_embed.num_classes:
            raise KeyError(f"{name!r} is not a label condition of this UNet (labels: "
                           f"{sorted(self.num_classes)})")
        return self.cond_embed.null_token(name)

    def null_condition(self, batch: int, device=None) -> dict[str, Tensor | None]:
        """The fully unconditional ``cond``: null tokens for labels, None for the rest."""
        out: dict[str, Tensor | None] = {n: None for n in self.condition_names}
        for n, k in self.num_classes.items():
            out[n] = torch.full((batch,), k, dtype=torch.long, device=device)
        return out

    def _check_cond(self, cond: Mapping[str, Any] | None) -> dict[str, Any]:
        if cond is None:
            return {n: None for n in self.condition_names}
        if not isinstance(cond, Mapping):
            raise TypeError(f"cond must be a dict {{name: tensor}}, got {type(cond).__name__}")
        unknown = sorted(set(cond) - set(self.condition_names))
        missing = sorted(set(self.condition_names) - set(cond))
        if unknown or missing:
            raise KeyError(f"UNet conditions are {self.condition_names}; got unknown {unknown} "
                           f"and missing {missing} (pass None for a null condition, or "
                           f"cond=None for the unconditional model)")
        return dict(cond)

    def _concat_features(self, x: Tensor, cond: Mapping[str, Any], null_mask: Tensor | None
                         ) -> Tensor:
        parts = [x]
        b, size = x.shape[0], x.shape[-2:]
        for name, enc in self.image_features.items():
            v = cond.get(name)
            if v is None:
                feats = x.new_zeros(b, enc.net[0].out_channels, *size)
                present = x.new_zeros(b, 1, *size)
            else:
                v = v.to(device=x.device, dtype=x.dtype)
                if v.dim() != 4 or v.shape[0] != b:
                    raise ValueError(f"image condition {name!r} must be (B, C, H, W) with B={b}, "
                                     f"got {tuple(v.shape)}")
                if v.shape[-2:] != size:
                    v = F.interpolate(v, size=tuple(size), mode="bilinear", align_corners=False)
                feats = enc(v)
                present = x.new_ones(b, 1, *size)
                if null_mask is not None:
                    keep = (~null_mask).to(x.dtype)[:, None, None, None]
                    feats, present = feats * keep, present * keep
            parts += [feats, present]
        return torch.cat(parts, dim=1)

    # ------------------------------------------------------------------ forward
    def forward(self, x: Tensor, t: Tensor | int | float,
                cond: Mapping[str, Any] | None = None, *,
                null_mask: Tensor | None = None) -> Tensor:
        """Predicted noise ``eps_theta(x_t, t, cond)``, shape ``(B, out_channels, H, W)``."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"UNet expects images (B, {self.in_channels}, H, W), got "
                             f"{tuple(x.shape)}")
        if self.image_size is not None and tuple(x.shape[-2:]) != self.image_size:
            raise ValueError(f"UNet built for {self.image_size} images, got {tuple(x.shape[-2:])}")
        b = x.shape[0]
        emb = self.time_embed(_timesteps(t, b, x.device), x.dtype)
        if self.condition_names:
            cond = self._check_cond(cond)
            if null_mask is not None:
                null_mask = null_mask.to(device=x.device, dtype=torch.bool).reshape(-1)
                if null_mask.numel() != b:
                    raise ValueError(f"null_mask has {null_mask.numel()} rows for a batch of {b}")
            if self.cond_embed is not None:
                emb = emb + self.cond_embed(cond, null_mask, b, emb)
            if self.image_features:
                x = self._concat_features(x, cond, null_mask)
        elif cond:
            raise KeyError(f"this UNet is unconditional but got conditions {sorted(cond)}")

        h = self.conv_in(x)
        hs = [h]
        for stage in self.down:
            h = stage(h, emb)
            hs.append(h)
        h = self.mid(h, emb)
        for stage in self.up:
            h = torch.cat([h, hs.pop()], dim=1)
            h = stage(h, emb, size=hs[-1].shape[-2:] if hs else None)
        return self.out(h)


@register_module("unet")
def _build_unet(preset: str | None = None, **kwargs: Any) -> UNet:
    """Config entry ``{"type": "unet", "preset": "fast", "num_classes": 10, ...}``."""
    return UNet(**_apply_preset(UNET_PRESETS, preset, kwargs, "UNet"))


# ----------------------------------------------------------------------------------------------
# classifier
# ----------------------------------------------------------------------------------------------
class TimeConditionedClassifier(nn.Module):
    """Anti-causal predictor ``p_phi(y | x_t, t)`` of Diff-SCM (Sec. 3.3, Eq. 7; Algorithm 1).

    The UNet's encoder (time-conditioned residual blocks with adaptive group normalisation) plus a
    middle block, global average pooling and a linear layer returning logits (Diff-SCM
    Appendix E; Dhariwal & Nichol 2021).  Train it on noised inputs ``x_t = q_sample(x_0, t)``
    with uniform ``t``; its ``grad_x log softmax`` guides DDIM
    (:func:`whatifgan.diffusion.classifier_log_prob_grad`).
    """

    def __init__(self, num_classes: int, in_channels: int = 1, *,
                 image_size: int | Sequence[int] | None = None, base_channels: int = 32,
                 channel_mult: Sequence[int] = (1, 2, 4, 4), num_res_blocks: int = 1,
                 attention: bool = False, num_heads: int = 4, dropout: float = 0.0,
                 groups: int = 8, time_embed_dim: int | None = None):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        mult = _check_mult(channel_mult, num_res_blocks, base_channels)
        self.num_classes = int(num_classes)
        self.in_channels = int(in_channels)
        if image_size is not None:
            image_size = ((int(image_size),) * 2 if isinstance(image_size, int)
                          else tuple(int(s) for s in image_size))
        self.image_size = image_size
        emb_dim = int(time_embed_dim or 4 * base_channels)
        self.time_embed = _TimeEmbedding(int(base_channels), emb_dim)
        self.conv_in, self.down, _, ch = _encoder(self.in_channels, int(base_channels), mult,
                                                  num_res_blocks, emb_dim, attention, num_heads,
                                                  dropout, groups)
        self.mid = _Stage([ResBlock(ch, ch, emb_dim, dropout=dropout, groups=groups)])
        self.head = nn.Sequential(nn.GroupNorm(_groups(ch, groups), ch), nn.SiLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(ch, self.num_classes))

    @classmethod
    def from_preset(cls, preset: str, num_classes: int, **kwargs: Any
                    ) -> TimeConditionedClassifier:
        """``"tiny"``, ``"fast"`` or ``"paper"`` (:data:`CLASSIFIER_PRESETS`)."""
        return cls(num_classes, **_apply_preset(CLASSIFIER_PRESETS, preset, kwargs,
                                                "classifier"))

    def forward(self, x: Tensor, t: Tensor | int | float) -> Tensor:
        """Logits ``(B, num_classes)`` of ``p_phi(y | x_t, t)``."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"classifier expects images (B, {self.in_channels}, H, W), got "
                             f"{tuple(x.shape)}")
        if self.image_size is not None and tuple(x.shape[-2:]) != self.image_size:
            raise ValueError(f"classifier built for {self.image_size} images, got "
                             f"{tuple(x.shape[-2:])}")
        emb = self.time_embed(_timesteps(t, x.shape[0], x.device), x.dtype)
        h = self.conv_in(x)
        for stage in self.down:
            h = stage(h, emb)
        return self.head(self.mid(h, emb))


@register_module("time_classifier")
def _build_time_classifier(num_classes: int, preset: str | None = None, **kwargs: Any
                           ) -> TimeConditionedClassifier:
    """Config entry ``{"type": "time_classifier", "num_classes": 10, "preset": "paper"}``."""
    return TimeConditionedClassifier(num_classes,
                                     **_apply_preset(CLASSIFIER_PRESETS, preset, kwargs,
                                                     "classifier"))

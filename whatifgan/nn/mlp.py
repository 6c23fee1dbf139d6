"""MLP mechanisms and critics for low-dimensional variables.

* :class:`MLPGenerator`: the network ``G_i`` of one variable in a DCM (Definition 4.1).  Input:
  the concatenation ``[exogenous noise N_i, confounder noise, parent encodings]`` (Algorithm 9,
  line 18: ``v_i = G_{theta_i}(exos, conf, gumbel, v_par)``).  Body: residual Linear-BatchNorm-ReLU
  blocks, by default 2 x 256 (Appendix F.1.1: "two layers with 256 units per layer and with
  BatchNorm and ReLU").  Head: Gumbel-softmax for categorical outputs (replayable Gumbel noise,
  Appendix C.2), linear for continuous ones.
* :class:`MLPCritic`: a WGAN-GP critic ``D_{w_i}`` (Algorithm 4) with LeakyReLU(0.2) and *no*
  batch norm (the gradient penalty is per sample, Gulrajani et al. 2017), with optional PacGAN
  packing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .gumbel import GumbelSoftmax
from .registry import GeneratorOutput, register_module

__all__ = ["MLPCritic", "MLPGenerator", "ResidualBlock"]


class ResidualBlock(nn.Module):
    """``y = ReLU(BN(Linear(x))) + skip(x)``; ``skip`` is the identity when sizes match, else a
    bias-free linear projection."""

    def __init__(self, d_in: int, d_out: int, *, batchnorm: bool = True):
        super().__init__()
        self.fc = nn.Linear(d_in, d_out)
        self.bn = nn.BatchNorm1d(d_out) if batchnorm else nn.Identity()
        self.act = nn.ReLU()
        self.skip = nn.Identity() if d_in == d_out else nn.Linear(d_in, d_out, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.fc(x))) + self.skip(x)


def _hidden(hidden: int | Sequence[int]) -> list[int]:
    h = [int(hidden)] if isinstance(hidden, int) else [int(v) for v in hidden]
    if any(v < 1 for v in h):
        raise ValueError(f"hidden sizes must be positive, got {h}")
    return h


@register_module("mlp")
class MLPGenerator(nn.Module):
    """Residual MLP mechanism for one variable (follows the mechanism protocol of
    :mod:`whatifgan.nn.registry`).

    Parameters
    ----------
    out_dim:
        Size of the output: ``k`` for a categorical variable, ``dim`` for a continuous one.
    output:
        ``"categorical"`` (Gumbel-softmax head: one-hot-like ``(B, k)``) or ``"continuous"``
        (linear head: ``(B, dim)``).
    noise_dim, conf_dim:
        Sizes of the exogenous noise ``N_i`` and of the (concatenated) confounder noise shared with
        the other members of the c-component (Definition 4.1, item 3).
    parent_dims:
        ``{parent name: encoded size}``, in the order their encodings are concatenated.
    hidden:
        Hidden widths (default two blocks of 256).
    temperature, hard:
        Gumbel-softmax temperature (annealed by :class:`~whatifgan.nn.gumbel.TemperatureSchedule`)
        and straight-through flag.
    """

    mechanism_protocol = True

    def __init__(self, out_dim: int, *, output: str = "continuous", noise_dim: int = 16,
                 conf_dim: int = 0, parent_dims: Mapping[str, int] | None = None,
                 hidden: int | Sequence[int] = (256, 256), batchnorm: bool = True,
                 temperature: float = 1.0, hard: bool = False):
        super().__init__()
        if output not in ("categorical", "continuous"):
            raise ValueError(f"output must be 'categorical' or 'continuous', got {output!r}")
        if out_dim < 1 or (output == "categorical" and out_dim < 2):
            raise ValueError(f"out_dim={out_dim} is too small for a {output} output")
        if noise_dim < 0 or conf_dim < 0:
            raise ValueError("noise_dim and conf_dim must be >= 0")
        self.out_dim, self.output = int(out_dim), output
        self.noise_dim, self.conf_dim = int(noise_dim), int(conf_dim)
        self.parent_dims = {str(k): int(v) for k, v in (parent_dims or {}).items()}
        self.in_dim = self.noise_dim + self.conf_dim + sum(self.parent_dims.values())
        if self.in_dim == 0:
            raise ValueError("MLPGenerator has no input: give noise_dim, conf_dim or parents")
        widths = [self.in_dim, *_hidden(hidden)]
        self.blocks = nn.Sequential(*[ResidualBlock(a, b, batchnorm=batchnorm)
                                      for a, b in zip(widths[:-1], widths[1:])])
        self.head = nn.Linear(widths[-1], self.out_dim)
        self.gumbel = GumbelSoftmax(temperature, hard) if output == "categorical" else None

    @classmethod
    def for_variable(cls, variable: Any, parents: Mapping[str, Any] | Sequence[Any] = (), *,
                     noise_dim: int = 16, conf_dim: int = 0, **kwargs: Any) -> MLPGenerator:
        """Build from variable specs (:mod:`whatifgan.variables`): output size and head from
        ``variable``, input sizes from the parents' ``dim``."""
        kind = getattr(variable, "kind", None)
        if kind not in ("categorical", "continuous"):
            raise ValueError(f"MLPGenerator handles categorical or continuous variables; "
                             f"{getattr(variable, 'name', variable)!r} is {kind!r} (use an image "
                             f"generator)")
        pvars = parents.values() if isinstance(parents, Mapping) else parents
        return cls(variable.dim, output=kind, noise_dim=noise_dim, conf_dim=conf_dim,
                   parent_dims={p.name: p.dim for p in pvars}, **kwargs)

    def _inputs(self, parents: Mapping[str, Tensor] | None, noise: Tensor,
                confounders: Tensor | None) -> Tensor:
        b = noise.shape[0]
        parts = []
        if noise.dim() != 2 or noise.shape[1] != self.noise_dim:
            raise ValueError(f"noise must have shape (B, {self.noise_dim}), got "
                             f"{tuple(noise.shape)}")
        parts.append(noise)
        if self.conf_dim:
            if confounders is None:
                raise ValueError(f"this mechanism expects confounder noise of size {self.conf_dim}")
            if confounders.shape != (b, self.conf_dim):
                raise ValueError(f"confounders must have shape ({b}, {self.conf_dim}), got "
                                 f"{tuple(confounders.shape)}")
            parts.append(confounders)
        elif confounders is not None and confounders.numel():
            raise ValueError("confounder noise given but this mechanism has conf_dim=0")
        parents = parents or {}
        for name, d in self.parent_dims.items():
            if name not in parents:
                raise KeyError(f"missing parent {name!r} (expected parents "
                               f"{list(self.parent_dims)}, got {list(parents)})")
            x = parents[name]
            if x.shape[0] != b or x[0].numel() != d:
                raise ValueError(f"parent {name!r} must have {b} samples of size {d}, got shape "
                                 f"{tuple(x.shape)}")
            parts.append(x.reshape(b, d).to(noise.dtype))
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]

    def logits(self, parents: Mapping[str, Tensor] | None, noise: Tensor,
               confounders: Tensor | None = None) -> Tensor:
        """Pre-head output: logits (categorical) or the value (continuous)."""
        return self.head(self.blocks(self._inputs(parents, noise, confounders)))

    def forward(self, parents: Mapping[str, Tensor] | None, noise: Tensor,
                confounders: Tensor | None = None, gumbel_noise: Tensor | None = None
                ) -> GeneratorOutput:
        out = self.logits(parents, noise, confounders)
        if self.gumbel is None:
            if gumbel_noise is not None:
                raise ValueError("gumbel_noise given to a continuous mechanism")
            return GeneratorOutput(out, None)
        value, g = self.gumbel(out, gumbel_noise)
        return GeneratorOutput(value, g)


@register_module("critic_mlp")
class MLPCritic(nn.Module):
    """WGAN-GP critic: Linear-LeakyReLU(0.2) layers, no batch norm, one score per row.

    With ``pac > 1`` (PacGAN) the first layer takes ``pac * in_dim`` inputs: pass packed rows
    ``(B/pac, pac*in_dim)`` (what :class:`trainers.WGANGPTrainer` does with the same ``pac``) or
    unpacked ``(B, in_dim)`` rows, which are packed here.  A dict input is flattened and
    concatenated in ``keys`` order (or the dict's order).
    """

    def __init__(self, in_dim: int, *, hidden: int | Sequence[int] = (256, 256), pac: int = 1,
                 negative_slope: float = 0.2, keys: Sequence[str] | None = None):
        super().__init__()
        if in_dim < 1 or pac < 1:
            raise ValueError(f"in_dim and pac must be >= 1, got in_dim={in_dim}, pac={pac}")
        self.in_dim, self.pac = int(in_dim), int(pac)
        self.keys = list(keys) if keys is not None else None
        widths = [self.in_dim * self.pac, *_hidden(hidden)]
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(a, b), nn.LeakyReLU(negative_slope)]
        layers.append(nn.Linear(widths[-1], 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor | Mapping[str, Tensor]) -> Tensor:
        if isinstance(x, Mapping):
            keys = self.keys if self.keys is not None else list(x)
            b = x[keys[0]].shape[0]
            x = torch.cat([x[k].reshape(b, -1) for k in keys], dim=1)
        if x.dim() > 2:
            x = x.reshape(x.shape[0], -1)
        d = x.shape[1]
        if d == self.in_dim * self.pac:
            pass
        elif self.pac > 1 and d == self.in_dim:
            if x.shape[0] % self.pac:
                raise ValueError(f"batch size {x.shape[0]} is not divisible by pac={self.pac}")
            x = x.reshape(x.shape[0] // self.pac, self.pac * self.in_dim)
        else:
            want = f"{self.in_dim * self.pac}" + (f" (or {self.in_dim} unpacked)"
                                                   if self.pac > 1 else "")
            raise ValueError(f"critic expects {want} features per row, got {d}")
        return self.net(x)

"""Registry of network constructors used in configs, and the frozen plug-in wrapper.

Configs name networks (``generator: mlp``, ``critic: critic_mlp``); :func:`build` turns a name and
keyword arguments into a module.  New architectures register themselves with
``@register_module("name")``.

The *mechanism protocol* shared by every per-variable network ``G_i`` of a DCM
(Definition 4.1; Algorithm 9, line 18: ``v_i = G_{theta_i}(exos, conf, gumbel, v_par)``)::

    module(parents: dict[str, Tensor], noise: Tensor, confounders: Tensor | None = None,
           gumbel_noise: Tensor | None = None) -> GeneratorOutput(value, gumbel_noise)

:class:`PretrainedModule` plugs any frozen ``nn.Module`` or callable with the simpler
conditional-sampler signature ``f(parents: dict[str, Tensor], noise: Tensor) -> Tensor`` into that
protocol, so a pre-trained image generator can stand in for a mechanism (the paper's motivation
for modular training, Section 4: "allows the possibility of using pre-trained image generative
models").
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

__all__ = ["GeneratorOutput", "PretrainedModule", "UnknownModuleError", "build",
           "build_from_config", "get_constructor", "register_module", "registered"]


class GeneratorOutput(NamedTuple):
    """What a mechanism returns: its value (encoded: one-hot for categorical) and the Gumbel noise
    it used (None for non-categorical outputs), recorded for abduction (Appendix C.2)."""

    value: Tensor
    gumbel_noise: Tensor | None = None


class UnknownModuleError(KeyError):
    """:func:`build` was asked for a name that is not registered."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_module(name: str, *, overwrite: bool = False):
    """Class/function decorator: make ``build(name, **kwargs)`` call the decorated constructor."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"registry names must be non-empty strings, got {name!r}")

    def decorator(ctor: Callable[..., nn.Module]):
        old = _REGISTRY.get(name)
        if old is not None and old is not ctor and not overwrite and not (
                getattr(old, "__qualname__", None) == getattr(ctor, "__qualname__", None)
                and getattr(old, "__module__", None) == getattr(ctor, "__module__", None)):
            raise ValueError(f"module name {name!r} is already registered to "
                             f"{getattr(old, '__qualname__', old)!s}; pass overwrite=True to "
                             f"replace it")
        _REGISTRY[name] = ctor
        return ctor

    return decorator


def registered() -> list[str]:
    """Sorted names known to :func:`build`."""
    return sorted(_REGISTRY)


def get_constructor(name: str) -> Callable[..., nn.Module]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModuleError(f"unknown module {name!r}; known modules: "
                                 f"{', '.join(registered()) or '(none)'}") from None


def build(name: str, **kwargs: Any) -> nn.Module:
    """Construct the module registered as ``name`` with ``kwargs``.

    Unknown names raise :class:`UnknownModuleError` listing the known ones; bad arguments raise
    ``TypeError`` naming the module.
    """
    ctor = get_constructor(name)
    try:
        return ctor(**kwargs)
    except TypeError as e:
        raise TypeError(f"build({name!r}): {e}") from e


def build_from_config(config: Mapping[str, Any], **defaults: Any) -> nn.Module:
    """``{"type": "mlp", "hidden": [256, 256], ...}`` (``name``/``arch`` accepted for ``type``)."""
    cfg = dict(config)
    name = cfg.pop("type", None) or cfg.pop("name", None) or cfg.pop("arch", None)
    if name is None:
        raise ValueError(f"module config needs a 'type' field naming one of {registered()}; got "
                         f"{config!r}")
    return build(str(name), **{**defaults, **cfg})


def _as_output(out: Any, who: str, batch: int, out_dim: int | None) -> GeneratorOutput:
    if isinstance(out, GeneratorOutput):
        value, g = out
    elif hasattr(out, "value") and isinstance(getattr(out, "value"), Tensor):
        value, g = out.value, getattr(out, "gumbel_noise", None)
    else:
        value, g = out, None
    if not isinstance(value, Tensor):
        raise TypeError(f"{who} returned {type(value).__name__}, expected a Tensor")
    if value.shape[0] != batch:
        raise ValueError(f"{who} returned {value.shape[0]} samples for a batch of {batch}")
    if out_dim is not None and value[0].numel() != out_dim:
        raise ValueError(f"{who} returned {value[0].numel()} values per sample, expected "
                         f"out_dim={out_dim}")
    return GeneratorOutput(value, g)


class PretrainedModule(nn.Module):
    """A frozen plug-in mechanism.

    Wraps ``fn``: a ``torch.nn.Module`` or any callable with the conditional-sampler signature
    ``f(parents: dict[str, Tensor], noise: Tensor) -> Tensor``.  Its parameters get
    ``requires_grad=False`` and it always runs in eval mode (BatchNorm statistics frozen), so
    training other mechanisms never changes it.  Gradients still flow *through* it to upstream
    trainable mechanisms (needed when a frozen ancestor has a trainable parent, e.g. Z1 with
    parent X1 in the paper's Figure 2).

    If confounder noise is given it is concatenated to the exogenous noise (``noise`` argument of
    ``f``).  A plain callable is used as is: freezing whatever parameters it closes over is the
    caller's business.  A wrapped module that itself follows the full mechanism protocol
    (``mechanism_protocol = True``, e.g. a saved :class:`~whatifgan.nn.mlp.MLPGenerator`) gets
    confounders and Gumbel noise separately, so counterfactual replay works through it.
    """

    frozen = True

    def __init__(self, fn: nn.Module | Callable[[dict[str, Tensor], Tensor], Tensor], *,
                 noise_dim: int | None = None, out_dim: int | None = None,
                 name: str | None = None):
        super().__init__()
        if not callable(fn):
            raise TypeError(f"PretrainedModule wraps a module or callable, got {type(fn).__name__}")
        if isinstance(fn, nn.Module):
            self.module: nn.Module | None = fn
            self._fn = None
            for p in fn.parameters():
                p.requires_grad_(False)
            fn.eval()
        else:
            self.module = None
            self._fn = fn
        self.native = bool(getattr(fn, "mechanism_protocol", False))
        self.noise_dim = int(noise_dim if noise_dim is not None else getattr(fn, "noise_dim", 0))
        self.out_dim = out_dim if out_dim is not None else getattr(fn, "out_dim", None)
        self.name = name or getattr(fn, "__name__", type(fn).__name__)

    def train(self, mode: bool = True) -> PretrainedModule:
        """Only the wrapper's flag changes: the wrapped module stays in eval mode."""
        self.training = mode
        return self

    @property
    def fn(self) -> Callable:
        return self.module if self.module is not None else self._fn

    def forward(self, parents: Mapping[str, Tensor], noise: Tensor,
                confounders: Tensor | None = None, gumbel_noise: Tensor | None = None
                ) -> GeneratorOutput:
        who = f"pretrained module {self.name!r}"
        if self.native:
            out = self.fn(dict(parents), noise, confounders, gumbel_noise)
        else:
            if gumbel_noise is not None:
                raise ValueError(f"{who} takes no Gumbel noise (plain f(parents, noise) plug-in); "
                                 f"record and replay its exogenous noise instead")
            n = noise if confounders is None else torch.cat([noise, confounders], dim=1)
            out = self.fn(dict(parents), n)
        return _as_output(out, who, noise.shape[0], self.out_dim)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, noise_dim={self.noise_dim}, frozen=True"

    @classmethod
    def from_file(cls, path: str | os.PathLike, *, arch: str | None = None,
                  arch_kwargs: Mapping[str, Any] | None = None, noise_dim: int | None = None,
                  out_dim: int | None = None, map_location: Any = "cpu",
                  name: str | None = None) -> PretrainedModule:
        """Load a frozen plug-in from ``path``.

        * ``arch`` given: ``path`` holds a ``state_dict`` (optionally under a ``"state_dict"``
          key), loaded with ``torch.load(weights_only=True)`` into ``build(arch, **arch_kwargs)``
          (move the result with ``.to(device)`` like any module).
        * ``arch`` None: ``path`` is a TorchScript file (``torch.jit.save``) or a ``torch.export``
          program (``.pt2``).
        Errors name the file and what is wrong.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"pretrained module file {str(path)!r} not found")
        if arch is not None:
            try:
                state = torch.load(path, map_location=map_location, weights_only=True)
            except Exception as e:
                raise ValueError(f"pretrained module file {str(path)!r} is not a readable "
                                 f"state_dict ({type(e).__name__}: {e})") from e
            if isinstance(state, Mapping) and "state_dict" in state:
                state = state["state_dict"]
            if not isinstance(state, Mapping):
                raise ValueError(f"pretrained module file {str(path)!r} holds a "
                                 f"{type(state).__name__}, expected a state_dict")
            module = build(arch, **dict(arch_kwargs or {}))
            try:
                module.load_state_dict(state)
            except RuntimeError as e:
                raise ValueError(f"pretrained module file {str(path)!r} does not fit architecture "
                                 f"{arch!r} with {dict(arch_kwargs or {})}: {e}") from e
        elif path.suffix == ".pt2":
            try:
                module = torch.export.load(str(path)).module()
            except Exception as e:
                raise ValueError(f"{str(path)!r} is not a loadable torch.export program "
                                 f"({type(e).__name__}: {e})") from e
        else:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", FutureWarning)  # jit deprecation notice
                    module = torch.jit.load(str(path), map_location=map_location)
            except Exception as e:
                raise ValueError(f"{str(path)!r} is not a TorchScript file; to load a state_dict "
                                 f"pass arch=<registered name> (known: {registered()}) "
                                 f"({type(e).__name__}: {e})") from e
        return cls(module, noise_dim=noise_dim, out_dim=out_dim, name=name or path.stem)


@register_module("pretrained")
def _pretrained(path: str, **kwargs: Any) -> PretrainedModule:
    """Config entry ``{"type": "pretrained", "path": ..., "arch": ..., "arch_kwargs": {...}}``."""
    return PretrainedModule.from_file(path, **kwargs)

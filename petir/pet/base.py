"""What every PET method shares: the config base class, the registry entry, and the BERT-family layer map.

A method is a config dataclass plus an ``apply(model, config)`` function that freezes the backbone and adds the
trainable modules in place. Nothing outside ``petir.pet`` switches on method names.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from petir.errors import PetirError


@dataclass
class PetConfig:
    """Base class of the per-method configs; serialised next to the trained weights."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PetConfig:
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise PetirError(f"{cls.__name__} has no option {', '.join(unknown)}; options: {', '.join(sorted(known))}")
        hints = typing.get_type_hints(cls)
        return cls(**{name: _coerce(hints[name], value) for name, value in values.items()})


def _coerce(hint: Any, value: Any) -> Any:
    """Turn JSON lists back into tuples and CLI strings into the field's type."""
    origin = typing.get_origin(hint)
    if origin is tuple:
        items = value.split(",") if isinstance(value, str) else value
        return tuple(str(item) for item in items)
    if not isinstance(value, str):
        return value
    if hint is bool:
        if value.lower() not in ("true", "false", "1", "0"):
            raise PetirError(f"expected true or false, got {value!r}")
        return value.lower() in ("true", "1")
    if hint in (int, float):
        try:
            return hint(value)
        except ValueError:
            raise PetirError(f"expected {hint.__name__}, got {value!r}") from None
    return value


@dataclass(frozen=True)
class PetMethod:
    """A registry entry: the method's name, its config class, the function that applies it, and the learning
    rate it trains well with (PET modules start from zero or random values and need far larger steps than
    pretrained weights)."""

    name: str
    config_class: type[PetConfig]
    apply: Callable[[nn.Module, Any], None]
    summary: str
    learning_rate: float


def freeze(model: nn.Module) -> None:
    for parameter in model.parameters():
        parameter.requires_grad_(False)


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The transformer layers of a BERT-family encoder (BERT, RoBERTa, ELECTRA, XLM-R, MiniLM...)."""
    encoder = getattr(model, "encoder", None)
    layers = getattr(encoder, "layer", None)
    if not isinstance(layers, nn.ModuleList) or not all(_is_bert_layer(layer) for layer in layers):
        raise PetirError(
            f"{type(model).__name__} is not a BERT-family encoder (expected model.encoder.layer[i] with "
            "attention.self/attention.output/intermediate/output); petir's PET methods support BERT, RoBERTa, "
            "ELECTRA, XLM-R and MiniLM backbones"
        )
    return layers


def _is_bert_layer(layer: nn.Module) -> bool:
    attention = getattr(layer, "attention", None)
    return all(hasattr(attention, name) for name in ("self", "output")) and all(
        hasattr(layer, name) for name in ("intermediate", "output")
    )


SUBLAYERS = ("attention", "ffn")


def sublayer_outputs(model: nn.Module, positions: tuple[str, ...]) -> Iterator[tuple[nn.Module, str]]:
    """Yield ``(parent, attribute)`` of each sublayer output module (dense -> dropout -> LayerNorm(+residual)),
    bottom to top, for the requested positions ("attention": after self-attention, "ffn": after the feed-forward).
    """
    unknown = set(positions) - set(SUBLAYERS)
    if unknown or not positions:
        raise PetirError(f"positions must be a non-empty subset of {SUBLAYERS}, got {positions}")
    for layer in encoder_layers(model):
        if "attention" in positions:
            yield layer.attention, "output"
        if "ffn" in positions:
            yield layer, "output"


ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


def activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise PetirError(f"unknown activation {name!r}; choose from {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class Bottleneck(nn.Module):
    """``up(f(down(x)))`` with ``up`` initialised at zero, so an inserted module starts as the identity map."""

    def __init__(self, hidden_size: int, bottleneck: int, activation_name: str, init_std: float = 0.02):
        super().__init__()
        self.down = nn.Linear(hidden_size, bottleneck)
        self.act = activation(activation_name)
        self.up = nn.Linear(bottleneck, hidden_size)
        nn.init.normal_(self.down.weight, std=init_std)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(x)))


class SublayerOutputWithModule(nn.Module):
    """A frozen BERT sublayer output (``dense -> dropout -> LayerNorm(h + residual)``) with a trainable module
    applied to ``h`` before the residual LayerNorm (Houlsby et al.'s serial adapter position).

    ``module`` maps the sublayer's projected output ``h`` to the additive update ``a``; it may be any callable
    module, which lets the connected method chain its modules across sublayers.
    """

    def __init__(self, frozen: nn.Module, module: nn.Module):
        super().__init__()
        self.frozen = frozen
        self.module = module

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        h = self.frozen.dropout(self.frozen.dense(hidden_states))
        return self.frozen.LayerNorm(h + self.module(h) + input_tensor)


def wrap_sublayer_outputs(
    model: nn.Module, positions: tuple[str, ...], make_module: Callable[[int], nn.Module]
) -> list[nn.Module]:
    """Insert ``make_module(hidden_size)`` at each sublayer output; returns the inserted modules, bottom to top."""
    sites = list(sublayer_outputs(model, positions))
    hidden_size = model.config.hidden_size
    inserted = []
    for parent, attribute in sites:
        module = make_module(hidden_size)
        setattr(parent, attribute, SublayerOutputWithModule(getattr(parent, attribute), module))
        inserted.append(module)
    return inserted

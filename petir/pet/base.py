"""What every PET method shares: the config base class, the registry entry, and the BERT-family layer map.

A method is a config dataclass plus an ``apply(model, config)`` function that freezes the backbone and adds the
trainable modules in place. Nothing outside ``petir.pet`` switches on method names.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from petir.cli import Bounded
from petir.errors import PetirError, check_choice


@dataclass
class PetConfig:
    """Base class of the per-method configs; serialised next to the trained weights. Every number is a
    :func:`ranged` field, so a value out of range is refused where a config is made, from ``--pet`` or a saved
    config.json alike."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PetConfig:
        fields = {field.name: field for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise PetirError(f"{cls.__name__} has no option {', '.join(unknown)}; options: {', '.join(sorted(fields))}")
        hints = typing.get_type_hints(cls)
        return cls(**{name: _coerce(fields[name], hints[name], value) for name, value in values.items()})


def ranged(default: float, bounds: Bounded) -> Any:
    """A numeric config field whose values must lie in ``bounds`` (``ranged(16, Bounded(int, minimum=1))``)."""
    return field(default=default, metadata={"bounds": bounds})


def _coerce(option: dataclasses.Field, hint: Any, value: Any) -> Any:
    """Turn JSON lists back into tuples and CLI strings into the field's type; check a number's range."""
    if "bounds" in option.metadata:
        try:
            return option.metadata["bounds"].parse(value)
        except ValueError as error:
            raise PetirError(f"PET option {option.name} {error}") from None
    origin = typing.get_origin(hint)
    if origin is tuple:
        items = value.split(",") if isinstance(value, str) else value
        return tuple(str(item) for item in items)
    if isinstance(value, str) and hint is bool:
        if value.lower() not in ("true", "false", "1", "0"):
            raise PetirError(f"PET option {option.name} must be true or false, got {value!r}")
        return value.lower() in ("true", "1")
    return value


@dataclass(frozen=True)
class Variant:
    """A named configuration of a method, as the CLI (``--method NAME``) and the study call it, with its budget
    presets (``--budget``): budget in percent of BERT-base (``"0.5"``, ``"6.7"``) -> the options that hold it, from
    the paper's #Params column (../shared/PAPER.md)."""

    name: str
    options: Mapping[str, Any] = field(default_factory=dict)
    budgets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class PetMethod:
    """A registry entry: the method's name, its config class, the function that applies it, where it comes from,
    the learning rate it trains well with (PET modules start from zero or random values and need far larger steps
    than pretrained weights), and its named variants (at least one).

    ``scattered`` is True for the paper's scattered PET methods, whose trainable pieces sit apart in the backbone
    (BitFit, LoRA, adapters, prefix tuning, MAM), and False for full fine-tuning and for methods whose modules form
    one pathway (IAA, linked adapters): the study marks each method against the best scattered one (‡) and draws
    scattered curves dashed. It has no default, so a new method cannot leave those comparisons unnoticed.

    ``merge`` folds the trained modules into the backbone's own weights, leaving a standard model (for
    ``python -m petir.export``); it is ``None`` for methods whose modules have no place in a standard model.
    ``export_extra(encoder, backbone, directory)`` writes, before the merge, what the method's own library loads
    besides the merged model into the export ``directory`` (LoRA: the PEFT adapter); ``backbone`` is the backbone's
    name. ``layer_local`` is False for methods whose modules pass state between layers outside the layers' inputs
    and outputs: per-layer activation checkpointing would recompute a layer without that state.
    """

    name: str
    config_class: type[PetConfig]
    apply: Callable[[nn.Module, Any], None]
    summary: str
    reference: str
    learning_rate: float
    variants: tuple[Variant, ...]
    scattered: bool
    merge: Callable[[nn.Module], None] | None = None
    export_extra: Callable[[nn.Module, str, Path], None] | None = None
    layer_local: bool = True


def nothing_to_merge(model: nn.Module) -> None:
    """The ``merge`` of methods that train the backbone's own weights (full fine-tuning, BitFit)."""


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
    check_choice("activation", name, ACTIVATIONS)
    return ACTIVATIONS[name]()


class Bottleneck(nn.Module):
    """``up(f(down(x)))``, the module shape every adapter-like method uses (width ``bottleneck``).

    ``up`` starts at zero (``up_std=0``), so an inserted module starts as the identity map; ``up_std > 0`` draws it
    from N(0, up_std^2) instead (Houlsby et al.'s near-identity start).
    """

    def __init__(
        self, hidden_size: int, bottleneck: int, activation_name: str, init_std: float = 0.02, up_std: float = 0.0
    ):
        super().__init__()
        self.down = nn.Linear(hidden_size, bottleneck)
        self.act = activation(activation_name)
        self.up = nn.Linear(bottleneck, hidden_size)
        nn.init.normal_(self.down.weight, std=init_std)
        nn.init.zeros_(self.down.bias)
        if up_std > 0:
            nn.init.normal_(self.up.weight, std=up_std)
        else:
            nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(x)))


class SublayerOutput(nn.Module):
    """A frozen BERT sub-layer output, ``LayerNorm(h + x)`` with ``h = dropout(dense(.))`` the sub-layer's result and
    ``x`` the sub-layer's input, with trainable modules at the three places PET methods put them:

    - ``serial`` (Houlsby adapter, IAA's inside module): ``LayerNorm(h + serial(h) + x)``
    - ``parallel`` (He et al.'s parallel adapter, in MAM): ``LayerNorm(h + scaling * parallel(x) + x)``
    - ``aside`` (IAA-S's aside module, Ma et al.): ``LayerNorm(h + x) + aside(x)``, after the Add & Norm

    A module may be any callable module, which lets the linked method chain its modules across sub-layers.
    """

    def __init__(
        self,
        frozen: nn.Module,
        serial: nn.Module | None = None,
        parallel: nn.Module | None = None,
        aside: nn.Module | None = None,
        scaling: float = 1.0,
    ):
        super().__init__()
        self.frozen = frozen
        self.serial = serial
        self.parallel = parallel
        self.aside = aside
        self.scaling = scaling

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        h = self.frozen.dropout(self.frozen.dense(hidden_states))
        update = h
        if self.serial is not None:
            update = update + self.serial(h)
        if self.parallel is not None:
            update = update + self.scaling * self.parallel(input_tensor)
        output = self.frozen.LayerNorm(update + input_tensor)
        return output + self.aside(input_tensor) if self.aside is not None else output


ModuleMaker = Callable[[int], nn.Module]


def wrap_sublayer_outputs(
    model: nn.Module,
    positions: tuple[str, ...],
    serial: ModuleMaker | None = None,
    parallel: ModuleMaker | None = None,
    aside: ModuleMaker | None = None,
    scaling: float = 1.0,
) -> list[SublayerOutput]:
    """Wrap each sub-layer output at ``positions`` in a :class:`SublayerOutput` whose modules are made by the
    given makers (called with the hidden size); returns the wrappers, bottom to top."""
    sites = list(sublayer_outputs(model, positions))  # refuses non-BERT-family models first
    hidden_size = model.config.hidden_size
    wrappers = []
    for parent, attribute in sites:
        wrapper = SublayerOutput(
            getattr(parent, attribute),
            *(make(hidden_size) if make is not None else None for make in (serial, parallel, aside)),
            scaling=scaling,
        )
        setattr(parent, attribute, wrapper)
        wrappers.append(wrapper)
    return wrappers


class BesideBlock(nn.Module):
    """A frozen block (a Transformer layer, or the whole encoder) with a trainable module beside it: the module
    reads the block's input and its output is added to the block's output, after the block's last Add & Norm
    (IAA-L and IAA-M's aside module): ``block(x) + aside(x)``.

    The block's output may be a tensor (a BERT layer), a tuple whose first item is the hidden states, or a model
    output with ``last_hidden_state`` (the encoder).
    """

    def __init__(self, frozen: nn.Module, aside: nn.Module):
        super().__init__()
        self.frozen = frozen
        self.aside = aside

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs):
        output = self.frozen(hidden_states, *args, **kwargs)
        update = self.aside(hidden_states)
        if isinstance(output, torch.Tensor):
            return output + update
        if isinstance(output, tuple):
            return (output[0] + update, *output[1:])
        output.last_hidden_state = output.last_hidden_state + update
        return output

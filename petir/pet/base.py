"""What every PET method shares: the config base class, the registry entry, and the modules that put trainable
modules at an encoder's sub-layers and blocks, wherever its architecture keeps them (:mod:`petir.anatomy`).

A method is a config dataclass plus an ``apply(model, config)`` function that freezes the backbone and adds the
trainable modules in place. Nothing outside ``petir.pet`` switches on method names.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from petir.anatomy import AddNorm, FusedAddNorm, OpenAddNorm, anatomy_of, find, replace
from petir.cli import Bounded, option
from petir.errors import PetirError, check_choice
from petir.options import make_options

#: A PET module's width (a bottleneck, a rank, a prefix length): at most 4,096, wider than any BERT-family hidden size,
#: so a typo (``r=10000000``) is one line where it would otherwise allocate tens of GB before any other check.
WIDTH = Bounded(int, minimum=1, maximum=4096)


@dataclass
class PetConfig:
    """Base class of the per-method configs; serialised next to the trained weights. Every field is a
    :func:`petir.cli.option` (its help is ``--help``'s), every number with a range, so a value out of range is
    refused where a config is made, from ``--pet`` or a saved config.json alike. Every method takes petir's additions
    (:mod:`petir.pet.additions`, not the paper's)."""

    embedding_rank: int = option(
        0,
        "rank of a low-rank update of the word embeddings (0: none; petir's addition)",
        bounds=Bounded(int, minimum=0, maximum=WIDTH.maximum),
    )
    layer_norms: bool = option(False, "also train the LayerNorms (petir's addition)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PetConfig:
        """The config with ``values`` (``--pet`` strings or saved JSON) over its defaults, checked
        (:func:`petir.options.make_options`)."""
        return make_options(cls, values, "PET option ", strings=True)


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
    ``needs_layer_map`` is False for methods that train on any ``AutoModel`` encoder, finding what they change by
    type or by name (full fine-tuning, BitFit, LoRA), and True (the safe default) for those that attach at the
    places :mod:`petir.anatomy` maps: they refuse an architecture it has no entry for.
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
    needs_layer_map: bool = True


def nothing_to_merge(model: nn.Module) -> None:
    """The ``merge`` of methods that train the backbone's own weights (full fine-tuning, BitFit)."""


def freeze(model: nn.Module) -> None:
    for parameter in model.parameters():
        parameter.requires_grad_(False)


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The Transformer layers of a supported encoder (:mod:`petir.anatomy`), bottom to top."""
    return find(model, anatomy_of(model).layers)


SUBLAYERS = ("attention", "ffn")


def sublayer_sites(model: nn.Module, positions: tuple[str, ...]) -> list[tuple[nn.Module, AddNorm]]:
    """``(layer, add_norm)`` of each sub-layer at the requested positions ("attention": self-attention, "ffn":
    feed-forward), bottom to top: where the sub-layer's Add & Norm is in that layer (:mod:`petir.anatomy`)."""
    unknown = set(positions) - set(SUBLAYERS)
    if unknown or not positions:
        raise PetirError(f"positions must be a non-empty subset of {SUBLAYERS}, got {positions}")
    anatomy = anatomy_of(model)
    return [
        (layer, anatomy.sublayer(position))
        for layer in find(model, anatomy.layers)
        for position in SUBLAYERS
        if position in positions
    ]


def sublayer_result(add_norm: AddNorm) -> str:
    """The path, from the layer, of the module whose output is the sub-layer's result (after its Add & Norm)."""
    return add_norm.output if isinstance(add_norm, FusedAddNorm) else add_norm.norm


def replace_block(model: nn.Module, path: str, wrap: Callable[[nn.Module], nn.Module]) -> None:
    """Put ``wrap(block)`` in place of the block at ``path`` (from ``model``)."""
    replace(model, path, wrap(find(model, path)))


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


def _inside(
    h: torch.Tensor, x: torch.Tensor, serial: nn.Module | None, parallel: nn.Module | None, scaling: float
) -> torch.Tensor:
    """A sub-layer's output ``h`` with the serial and parallel modules' contributions, before the residual Add."""
    update = h
    if serial is not None:
        update = update + serial(h)
    if parallel is not None:
        update = update + scaling * parallel(x)
    return update


class SublayerOutput(nn.Module):
    """A frozen BERT sub-layer output, ``LayerNorm(h + x)`` with ``h = dropout(dense(.))`` the sub-layer's result and
    ``x`` the sub-layer's input, with trainable modules at the three places PET methods put them:

    - ``serial`` (Houlsby adapter, IAA's inside module): ``LayerNorm(h + serial(h) + x)``
    - ``parallel`` (He et al.'s parallel adapter, in MAM): ``LayerNorm(h + scaling * parallel(x) + x)``
    - ``aside`` (IAA-S's aside module, Ma et al.): ``LayerNorm(h + x) + aside(x)``, after the Add & Norm

    A module may be any callable module, which lets the linked method chain its modules across sub-layers. This is
    the :class:`~petir.anatomy.FusedAddNorm` form; :class:`SublayerBranch` and :class:`SublayerNorm` put the same
    modules at the same places where the Add & Norm is open (:class:`~petir.anatomy.OpenAddNorm`).
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
        update = _inside(h, input_tensor, self.serial, self.parallel, self.scaling)
        output = self.frozen.LayerNorm(update + input_tensor)
        return output + self.aside(input_tensor) if self.aside is not None else output


class Residual:
    """A sub-layer's input ``x`` in one forward pass, from the module that receives it to the PET modules that read
    it where the Add & Norm is open; its last reader clears it, so no activation outlives the pass."""

    def __init__(self) -> None:
        self.x: torch.Tensor | None = None

    def read(self, clear: bool) -> torch.Tensor | None:
        x = self.x
        if clear:
            self.x = None
        return x


class ResidualInput(nn.Module):
    """A frozen module whose first argument is a sub-layer's input ``x``, noted in ``residual``."""

    def __init__(self, frozen: nn.Module, residual: Residual):
        super().__init__()
        self.frozen = frozen
        self.residual = residual

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs):
        self.residual.x = hidden_states
        return self.frozen(hidden_states, *args, **kwargs)


class SublayerBranch(nn.Module):
    """A frozen module that returns a sub-layer's output ``h`` before the residual Add (a tensor, or a tuple led by
    ``h``), returning ``h + serial(h) + scaling * parallel(x)`` in its place (as :class:`SublayerOutput` does)."""

    def __init__(
        self,
        frozen: nn.Module,
        serial: nn.Module | None,
        parallel: nn.Module | None,
        scaling: float,
        residual: Residual | None,
        last_reader: bool,
    ):
        super().__init__()
        self.frozen = frozen
        self.serial = serial
        self.parallel = parallel
        self.scaling = scaling
        self.residual = residual
        self.last_reader = last_reader

    def forward(self, *args, **kwargs):
        output = self.frozen(*args, **kwargs)
        h = output if isinstance(output, torch.Tensor) else output[0]
        x = self.residual.read(self.last_reader) if self.residual is not None else None
        update = _inside(h, x, self.serial, self.parallel, self.scaling)
        return update if isinstance(output, torch.Tensor) else (update, *output[1:])


class SublayerNorm(nn.Module):
    """A frozen Add & Norm LayerNorm (it receives ``h + x``) with an aside module after it, ``norm(h + x) + aside(x)``
    (as :class:`SublayerOutput` does)."""

    def __init__(self, frozen: nn.Module, aside: nn.Module, residual: Residual):
        super().__init__()
        self.frozen = frozen
        self.aside = aside
        self.residual = residual

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.frozen(hidden_states) + self.aside(self.residual.read(True))


def _wrap_open(
    layer: nn.Module,
    add_norm: OpenAddNorm,
    serial: nn.Module | None,
    parallel: nn.Module | None,
    aside: nn.Module | None,
    scaling: float,
) -> None:
    """Put the modules of one open Add & Norm in place: ``x`` noted where the sub-layer receives it, serial and
    parallel modules on ``h``, the aside module after the LayerNorm. Every place is found before any is wrapped
    (a wrapper moves what it wraps one level down); where ``input`` and ``branch`` are one module, the branch
    wrapper holds the input wrapper, so ``x`` is noted before ``h`` is returned."""
    slots = {}
    for role in ("input", "branch", "norm"):
        parent, _, name = getattr(add_norm, role).rpartition(".")
        slots[role] = (find(layer, parent) if parent else layer, name)
        find(*slots[role])

    def wrap(role: str, wrapper: Callable[[nn.Module], nn.Module]) -> None:
        parent, name = slots[role]
        setattr(parent, name, wrapper(getattr(parent, name)))

    residual = Residual() if parallel is not None or aside is not None else None
    if residual is not None:
        wrap("input", lambda module: ResidualInput(module, residual))
    if serial is not None or parallel is not None:
        wrap("branch", lambda module: SublayerBranch(module, serial, parallel, scaling, residual, aside is None))
    if aside is not None:
        wrap("norm", lambda module: SublayerNorm(module, aside, residual))


ModuleMaker = Callable[[int], nn.Module]


def wrap_sublayer_outputs(
    model: nn.Module,
    positions: tuple[str, ...],
    serial: ModuleMaker | None = None,
    parallel: ModuleMaker | None = None,
    aside: ModuleMaker | None = None,
    scaling: float = 1.0,
) -> None:
    """Put modules made by the given makers (called with the hidden size) at each sub-layer at ``positions``, bottom
    to top: ``serial`` on its output before the Add & Norm, ``parallel`` reading its input and joining before the
    Add & Norm, ``aside`` reading its input and added after the Add & Norm (:class:`SublayerOutput`)."""
    sites = sublayer_sites(model, positions)  # refuses unsupported encoders first
    hidden_size = model.config.hidden_size
    for layer, add_norm in sites:
        modules = [make(hidden_size) if make is not None else None for make in (serial, parallel, aside)]
        if isinstance(add_norm, FusedAddNorm):
            replace(layer, add_norm.output, SublayerOutput(find(layer, add_norm.output), *modules, scaling=scaling))
        else:
            _wrap_open(layer, add_norm, *modules, scaling=scaling)


class BesideBlock(nn.Module):
    """A frozen block (a Transformer layer, or the whole encoder) with a trainable module beside it: the module
    reads the block's input and its output is added to the block's output, after the block's last Add & Norm
    (IAA-L and IAA-M's aside module): ``block(x) + aside(x)``.

    The block's output may be a tensor (a BERT layer), a tuple whose first item is the hidden states, or a model
    output with ``last_hidden_state`` (the encoder): :func:`add_to_output`.
    """

    def __init__(self, frozen: nn.Module, aside: nn.Module):
        super().__init__()
        self.frozen = frozen
        self.aside = aside

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs):
        return add_to_output(self.frozen(hidden_states, *args, **kwargs), self.aside(hidden_states))


def add_to_output(output: Any, update: torch.Tensor) -> Any:
    """A block's output plus ``update`` on its hidden states: a tensor, a tuple led by the hidden states, or a model
    output with ``last_hidden_state`` (and ``hidden_states``, whose last item is the same states: DeBERTa's model
    reads its result from there)."""
    if isinstance(output, torch.Tensor):
        return output + update
    if isinstance(output, tuple):
        return (output[0] + update, *output[1:])
    output.last_hidden_state = output.last_hidden_state + update
    if getattr(output, "hidden_states", None) is not None:
        output.hidden_states = (*output.hidden_states[:-1], output.last_hidden_state)
    return output

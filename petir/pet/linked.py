"""Linked adapters: petir's own variants, NOT the paper's method (that is :mod:`petir.pet.iaa`).

An earlier reading of "connect the scattered modules" (Ma et al., CIKM 2022), made before the paper's Figure 3 was
at hand: instead of the paper's aside bottlenecks beside frozen blocks, the inside modules (bottleneck adapters at
the same sublayer positions as :mod:`petir.pet.adapter`) are joined by links between their states, so every module
has a short, fully trainable path to the output. Kept as measured variants (docs/results-log.md); saved models
whose config says ``connected`` (this method's name before IAA was added) load as ``linked``.

Sites are numbered k = 1..K bottom to top; ``h_k`` is the sublayer's projected output (adapter input), ``x_k``
the sublayer's final output. Topologies (equations in docs/methods.md):

- ``bottleneck``: ``z_k = f(D_k h_k) + C_k z_{k-1}``, ``a_k = U_k z_k``   (link in bottleneck space, C_k: r x r)
- ``hidden``:     ``a_k = U_k f(D_k h_k + E_k a_{k-1})``                 (link in hidden space, E_k: d -> r)
- ``side``:       ``s_k = f(D_k x_k) + C_k s_{k-1}``, output ``x_K + U s_K`` (a side path read out at the top; it
  never feeds back into the frozen layers, so training needs no backpropagation through the backbone)

All up-projections start at zero, so every topology starts as the unchanged backbone.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import nn

from petir.anatomy import anatomy_of
from petir.cli import option
from petir.errors import check_choice
from petir.pet.base import (
    WIDTH,
    Bottleneck,
    PetConfig,
    PetMethod,
    Variant,
    activation,
    add_to_output,
    freeze,
    replace_block,
    sublayer_result,
    sublayer_sites,
    wrap_sublayer_outputs,
)

TOPOLOGIES = ("bottleneck", "hidden", "side")
LINK_INITS = ("auto", "identity", "zero")


@dataclass
class LinkedConfig(PetConfig):
    """The linked adapters' options (``--pet KEY=VALUE``); ``link_init`` ``auto`` picks
    :func:`resolve_link_init`."""

    topology: str = option("bottleneck", "how the modules are linked (bottleneck | hidden | side)", TOPOLOGIES)
    bottleneck: int = option(16, "module width r", bounds=WIDTH)
    activation: str = option("relu", "nonlinearity of each module")
    positions: tuple[str, ...] = option(("attention", "ffn"), "sub-layers that get a module (attention, ffn)")
    link_init: str = option(
        "auto", "initial r x r links: identity (open), zero (closed until learned) or auto (by topology)"
    )


class Chain:
    """Carries the previous site's state up the stack during one forward pass.

    Sites run bottom to top, the first site never reads the state and the last one clears it, so no reset hook
    is needed and no tensor outlives the forward pass.
    """

    def __init__(self) -> None:
        self.state: torch.Tensor | None = None


class _Site(nn.Module):
    """Shared bookkeeping for a module that reads and writes the chain."""

    def _setup_chain(self, chain: Chain, index: int, count: int) -> None:
        self.chain = chain
        self.is_first = index == 0
        self.is_last = index == count - 1

    def _pass_on(self, state: torch.Tensor) -> None:
        self.chain.state = None if self.is_last else state


def resolve_link_init(config: LinkedConfig) -> str:
    """``auto``: closed links for the bottleneck topology, open ones for the side path.

    With open links a bottleneck site's state is the sum of every lower module's, which grows with depth: in the
    study (docs/results-log.md) identity links gave 11x larger up-projection gradients at the start and a
    re-ranker whose loss never left ln 4, while closed ones gave the best seed-1 dev nDCG@10 at both stages.
    Closed links still open: they get gradient as soon as the up-projections have moved. The side path's taps
    have no up-projection of their own, so the chain is their only way to the output and must start open.
    """
    if config.link_init != "auto":
        return config.link_init
    return "identity" if config.topology == "side" else "zero"


def _link(size_in: int, size_out: int, init: str) -> nn.Linear:
    link = nn.Linear(size_in, size_out, bias=False)
    if init == "identity" and size_in == size_out:
        nn.init.eye_(link.weight)
    else:
        nn.init.zeros_(link.weight)
    return link


class BottleneckLinkedModule(Bottleneck, _Site):
    """Inside module whose bottleneck state is passed to the next module: ``z_k = f(D_k h) + C_k z_{k-1}``."""

    def __init__(self, hidden_size: int, config: LinkedConfig, chain: Chain, index: int, count: int):
        super().__init__(hidden_size, config.bottleneck, config.activation)
        self._setup_chain(chain, index, count)
        self.link = None if self.is_first else _link(config.bottleneck, config.bottleneck, resolve_link_init(config))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        z = self.act(self.down(h))
        if self.link is not None:
            z = z + self.link(self.chain.state)
        self._pass_on(z)
        return self.up(z)


class HiddenLinkedModule(Bottleneck, _Site):
    """Inside module that also reads the previous module's output: ``a_k = U_k f(D_k h + E_k a_{k-1})``."""

    def __init__(self, hidden_size: int, config: LinkedConfig, chain: Chain, index: int, count: int):
        super().__init__(hidden_size, config.bottleneck, config.activation)
        self._setup_chain(chain, index, count)
        self.link = None if self.is_first else nn.Linear(hidden_size, config.bottleneck, bias=False)
        if self.link is not None:
            nn.init.normal_(self.link.weight, std=0.02)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        pre = self.down(h)
        if self.link is not None:
            pre = pre + self.link(self.chain.state)
        a = self.up(self.act(pre))
        self._pass_on(a)
        return a


class SideTap(nn.Module):
    """Reads a frozen sublayer's output into the side path: ``s_k = f(D_k x_k) + C_k s_{k-1}``.

    The readout at the top, not the last tap, consumes the state.
    """

    def __init__(self, hidden_size: int, config: LinkedConfig, chain: Chain, index: int):
        super().__init__()
        self.chain = chain
        self.down = nn.Linear(hidden_size, config.bottleneck)
        nn.init.normal_(self.down.weight, std=0.02)
        nn.init.zeros_(self.down.bias)
        self.act = activation(config.activation)
        self.link = None if index == 0 else _link(config.bottleneck, config.bottleneck, resolve_link_init(config))

    def forward(self, x: torch.Tensor) -> None:
        s = self.act(self.down(x))
        if self.link is not None:
            s = s + self.link(self.chain.state)
        self.chain.state = s


class SublayerOutputWithTap(nn.Module):
    """The frozen module that gives a sub-layer's result (after its Add & Norm), unchanged; the result is also fed to
    a side tap."""

    def __init__(self, frozen: nn.Module, tap: SideTap):
        super().__init__()
        self.frozen = frozen
        self.tap = tap

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        output = self.frozen(*args)
        self.tap(output)
        return output


class EncoderWithSideReadout(nn.Module):
    """The frozen encoder stack with the side path's top state projected back and added to its output."""

    def __init__(self, frozen: nn.Module, hidden_size: int, bottleneck: int, chain: Chain):
        super().__init__()
        self.frozen = frozen
        self.chain = chain
        self.readout = nn.Linear(bottleneck, hidden_size)
        nn.init.zeros_(self.readout.weight)
        nn.init.zeros_(self.readout.bias)

    def forward(self, *args, **kwargs):
        output = self.frozen(*args, **kwargs)
        state, self.chain.state = self.chain.state, None
        return add_to_output(output, self.readout(state))


def apply_linked(model: nn.Module, config: LinkedConfig) -> None:
    check_choice("link_init", config.link_init, LINK_INITS)
    freeze(model)
    chain = Chain()
    sites = sublayer_sites(model, config.positions)
    hidden_size = model.config.hidden_size
    if config.topology == "side":
        for index, (layer, add_norm) in enumerate(sites):
            tap = SideTap(hidden_size, config, chain, index)
            replace_block(layer, sublayer_result(add_norm), functools.partial(SublayerOutputWithTap, tap=tap))
        replace_block(
            model,
            anatomy_of(model).encoder,
            lambda encoder: EncoderWithSideReadout(encoder, hidden_size, config.bottleneck, chain),
        )
        return
    module_class = BottleneckLinkedModule if config.topology == "bottleneck" else HiddenLinkedModule
    indices = iter(range(len(sites)))
    wrap_sublayer_outputs(
        model, config.positions, serial=lambda hidden: module_class(hidden, config, chain, next(indices), len(sites))
    )


METHOD = PetMethod(
    "linked",
    LinkedConfig,
    apply_linked,
    "adapters linked through their states (petir's own; topology: bottleneck|hidden|side)",
    reference="petir's own variants, not in the paper",
    learning_rate=1e-3,
    variants=tuple(
        Variant(f"linked-{topology}", {"topology": topology}, budgets={"0.5": {"bottleneck": 16}})
        for topology in TOPOLOGIES
    ),
    scattered=False,
    layer_local=False,  # the chain's state crosses layers beside the hidden states
)

"""Bottleneck adapters (Houlsby et al., 2019), serial: ``h + up(f(down(h)))`` after each sublayer projection.

Each adapter sits between frozen layers: the "scattered" baseline that IAA (:mod:`petir.pet.iaa`) connects.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from petir.cli import option
from petir.pet.base import WIDTH, Bottleneck, PetConfig, PetMethod, Variant, freeze, wrap_sublayer_outputs


@dataclass
class AdapterConfig(PetConfig):
    """The adapter's options (``--pet KEY=VALUE``)."""

    bottleneck: int = option(16, "adapter width r", bounds=WIDTH)
    activation: str = option("relu", "nonlinearity between the down- and up-projection")
    positions: tuple[str, ...] = option(("attention", "ffn"), "sub-layers that get an adapter (attention, ffn)")


def apply_adapter(model: nn.Module, config: AdapterConfig) -> None:
    freeze(model)
    wrap_sublayer_outputs(
        model, config.positions, serial=lambda hidden: Bottleneck(hidden, config.bottleneck, config.activation)
    )


METHOD = PetMethod(
    "adapter",
    AdapterConfig,
    apply_adapter,
    "bottleneck adapters, serial, after each sub-layer (scattered)",
    reference="Houlsby et al., ICML 2019",
    learning_rate=1e-3,
    variants=(Variant("adapter", budgets={"0.5": {"bottleneck": 16}, "6.7": {"bottleneck": 200}}),),
    scattered=True,
)

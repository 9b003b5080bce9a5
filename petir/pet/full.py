"""Full fine-tuning: every backbone weight is trained. The reference the PET methods are measured against."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from petir.pet.base import PetConfig, PetMethod, Variant, nothing_to_merge


@dataclass
class FullConfig(PetConfig):
    """Full fine-tuning has no options."""


def apply_full(model: nn.Module, config: FullConfig) -> None:
    for parameter in model.parameters():
        parameter.requires_grad_(True)


METHOD = PetMethod(
    "full",
    FullConfig,
    apply_full,
    "full fine-tuning: all weights trained (no budget presets: it is the 100 % reference)",
    reference="the reference every PET method is measured against",
    learning_rate=2e-5,
    variants=(Variant("full"),),
    scattered=False,
    merge=nothing_to_merge,
    needs_layer_map=False,
)

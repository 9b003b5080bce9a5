"""BitFit (Ben Zaken et al., 2022): train only the bias terms of the backbone."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from petir.cli import option
from petir.errors import PetirError
from petir.pet.base import PetConfig, PetMethod, Variant, freeze, nothing_to_merge


@dataclass
class BitFitConfig(PetConfig):
    """BitFit's options (``--pet KEY=VALUE``)."""

    layer_norm: bool = option(False, "also train LayerNorm gains (BitFit proper trains biases only)")


def apply_bitfit(model: nn.Module, config: BitFitConfig) -> None:
    freeze(model)
    for module in model.modules():
        # LayerNorms by type, not by name: architectures name them LayerNorm, sa_layer_norm, output_layer_norm...
        is_layer_norm = isinstance(module, nn.LayerNorm)
        for name, parameter in module.named_parameters(recurse=False):
            if name == "bias" or (config.layer_norm and is_layer_norm):
                parameter.requires_grad_(True)
    if not any(parameter.requires_grad for parameter in model.parameters()):
        raise PetirError(
            f"bitfit has nothing to train on a {model.config.model_type!r} encoder: it has no bias terms "
            "(ModernBERT's layers have none); train its LayerNorm gains too (--pet layer_norm=true), or use lora "
            "or full"
        )


METHOD = PetMethod(
    "bitfit",
    BitFitConfig,
    apply_bitfit,
    "BitFit: bias terms only (a fixed size: 0.09 % of BERT-base, the paper's 0.5 % column)",
    reference="Ben Zaken et al., ACL 2022",
    learning_rate=1e-3,
    variants=(Variant("bitfit", budgets={"0.5": {}}),),
    scattered=True,
    merge=nothing_to_merge,
    needs_layer_map=False,
)

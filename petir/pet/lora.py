"""LoRA (Hu et al., 2022) through PEFT: low-rank updates ``W + (alpha/r) B A`` on the attention projections.

PEFT does the layer surgery; petir only chooses the targets and keeps the registry, save format and
fingerprinting uniform with the other methods. A target named ``query``, ``key`` or ``value`` is a role: the
attention projection that the backbone's architecture calls so (DistilBERT's ``q_lin``, MPNet's ``q``, DeBERTa's
``query_proj``; :mod:`petir.anatomy`); any other target is a module name, as PEFT takes it.
"""

from __future__ import annotations

from dataclasses import dataclass

import peft
from torch import nn

from petir.anatomy import anatomy_of
from petir.cli import Bounded
from petir.pet.base import PetConfig, PetMethod, Variant, freeze, ranged


@dataclass
class LoraConfig(PetConfig):
    """``r``: rank; ``alpha``: scaling numerator; ``target_modules``: linear layers (by name) that get updates."""

    r: int = ranged(16, Bounded(int, minimum=1))
    alpha: int = ranged(16, Bounded(int, minimum=1))
    dropout: float = ranged(0.1, Bounded(float, minimum=0, below=1))  # 1 would drop every input of the update
    target_modules: tuple[str, ...] = ("query", "value")


def apply_lora(model: nn.Module, config: LoraConfig) -> None:
    projections = anatomy_of(model).projections  # refuses unsupported encoders with petir's own message
    freeze(model)
    peft_config = peft.LoraConfig(
        r=config.r,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=[projections.get(target, target) for target in config.target_modules],
        bias="none",
    )
    peft.inject_adapter_in_model(peft_config, model)
    for name, parameter in model.named_parameters():
        parameter.requires_grad_("lora_" in name)


def merge_lora(model: nn.Module) -> None:
    """Fold every ``W + (alpha/r) B A`` into ``W`` and put the plain linear layers back (PEFT's merge)."""
    from peft.tuners.lora import LoraLayer

    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, LoraLayer):
                child.merge()
                setattr(parent, child_name, child.get_base_layer())


METHOD = PetMethod(
    "lora",
    LoraConfig,
    apply_lora,
    "LoRA: low-rank updates of the query and value projections (PEFT)",
    reference="Hu et al., ICLR 2022",
    learning_rate=5e-4,
    variants=(Variant("lora", budgets={"0.5": {"r": 16}, "6.7": {"r": 200}}),),
    merge=merge_lora,
)

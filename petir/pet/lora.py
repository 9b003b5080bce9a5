"""LoRA (Hu et al., 2022) through PEFT: low-rank updates ``W + (alpha/r) B A`` on the attention projections.

PEFT does the layer surgery; petir only chooses the targets and keeps the registry, save format and
fingerprinting uniform with the other methods. A target named ``query``, ``key`` or ``value`` is a role: the
attention projection that the backbone's architecture calls so (DistilBERT's ``q_lin``, MPNet's ``q``, DeBERTa's
``query_proj``; :mod:`petir.anatomy`); any other target is a module name, as PEFT takes it. An export
(``python -m petir.export``) also holds the adapter alone, as PEFT saves it, in ``peft/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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
    import peft  # seconds to import: deferred so that the CLIs' --help and start-up do not pay for it

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


#: Where an export keeps the adapter alone: ``PeftModel.from_pretrained(backbone, "EXPORT/peft")``.
PEFT_DIR = "peft"


def save_peft_adapter(model: nn.Module, backbone: str, directory: Path) -> None:
    """The LoRA weights alone, as ``PeftModel.save_pretrained`` writes them, in ``directory/peft`` (before they are
    merged); ``backbone`` is the name PEFT records as the base model."""
    import peft
    from safetensors.torch import save_file

    adapter = directory / PEFT_DIR
    adapter.mkdir()
    config = model.peft_config["default"]
    config.base_model_name_or_path = backbone
    config.save_pretrained(adapter)
    state = peft.get_peft_model_state_dict(model)
    save_file(
        {f"base_model.model.{key}": value.contiguous() for key, value in state.items()},
        adapter / "adapter_model.safetensors",
    )


METHOD = PetMethod(
    "lora",
    LoraConfig,
    apply_lora,
    "LoRA: low-rank updates of the query and value projections (PEFT)",
    reference="Hu et al., ICLR 2022",
    learning_rate=5e-4,
    variants=(Variant("lora", budgets={"0.5": {"r": 16}, "6.7": {"r": 200}}),),
    scattered=True,
    merge=merge_lora,
    export_extra=save_peft_adapter,
)

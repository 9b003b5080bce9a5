"""LoRA (Hu et al., 2022) through PEFT: low-rank updates ``W + (alpha/r) B A`` on the attention projections.

PEFT does the layer surgery; petir only chooses the targets and keeps the registry, save format and
fingerprinting uniform with the other methods. A target named ``query``, ``key`` or ``value`` is a role: the
attention projection that the backbone's architecture calls so (DistilBERT's ``q_lin``, MPNet's ``q``, DeBERTa's
``query_proj``; :mod:`petir.anatomy`); any other target is a module name, as PEFT takes it. On an architecture
petir's layer map has no entry for (ModernBERT, whose query, key and value are one fused ``Wqkv``), the roles stand
for the attention projections PEFT itself targets there (``TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING``),
or, where PEFT names none, for every linear layer inside the attention (ModernBERT: ``attn.Wqkv``, ``attn.Wo``).
An export (``python -m petir.export``) also holds the adapter alone, as PEFT saves it, in ``peft/``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from petir.anatomy import ANATOMIES
from petir.cli import Bounded, option
from petir.errors import PetirError
from petir.pet.base import WIDTH, PetConfig, PetMethod, Variant, freeze


@dataclass
class LoraConfig(PetConfig):
    """LoRA's options (``--pet KEY=VALUE``)."""

    r: int = option(16, "rank", bounds=WIDTH)
    alpha: int = option(16, "scaling numerator (the update is scaled by alpha / r)", bounds=Bounded(int, minimum=1))
    # 1 would drop every input of the update
    dropout: float = option(0.1, "dropout on the update's input", bounds=Bounded(float, minimum=0, below=1))
    target_modules: tuple[str, ...] = option(("query", "value"), "linear layers (by name) that get updates")


#: The target names that are roles, not module names.
ROLES = ("query", "key", "value")


def lora_targets(model: nn.Module, targets: tuple[str, ...]) -> list[str]:
    """PEFT's ``target_modules`` for ``targets`` on ``model``: roles become the architecture's module names
    (module docstring), other names pass as they are."""
    model_type = model.config.model_type
    if model_type in ANATOMIES:
        return [ANATOMIES[model_type].projections.get(target, target) for target in targets]
    names = [target for target in targets if target not in ROLES]
    if len(names) < len(targets):
        names += attention_projections(model)
    return list(dict.fromkeys(names))


def attention_projections(model: nn.Module) -> list[str]:
    """The attention projections of an architecture outside petir's layer map: PEFT's own targets for it, else the
    linear layers inside modules named like an attention (``attn``, ``attention``), each named from that module on
    (``attn.Wo``, not ``Wo``, which ModernBERT's feed-forward also has)."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_TARGETS

    if model.config.model_type in PEFT_TARGETS:
        return list(PEFT_TARGETS[model.config.model_type])
    found = []
    for path, module in model.named_modules():
        parts = path.split(".")
        inside = [i for i, part in enumerate(parts[:-1]) if "attn" in part.lower() or "attention" in part.lower()]
        if isinstance(module, nn.Linear) and inside:
            found.append(".".join(parts[inside[0] :]))
    if not found:
        raise PetirError(
            f"LoRA finds no attention projections in a {model.config.model_type!r} encoder (no linear layer inside "
            "a module named attn or attention); name the linear layers to update: --pet target_modules=NAME,NAME"
        )
    return list(dict.fromkeys(found))


def apply_lora(model: nn.Module, config: LoraConfig) -> None:
    import peft  # seconds to import: deferred so that the CLIs' --help and start-up do not pay for it

    targets = lora_targets(model, config.target_modules)
    _check_targets_exist(model, targets)
    freeze(model)
    peft_config = peft.LoraConfig(
        r=config.r,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=targets,
        bias="none",
    )
    peft.inject_adapter_in_model(peft_config, model)
    for name, parameter in model.named_parameters():
        parameter.requires_grad_("lora_" in name)


def _check_targets_exist(model: nn.Module, targets: list[str]) -> None:
    """Each target names a module of ``model`` as PEFT matches names (the whole path, or its end after a dot): PEFT
    raises a traceback on a list that matches nothing and silently drops a name that matches nothing beside others."""
    paths = [path for path, _ in model.named_modules()]
    missing = [t for t in targets if not any(path == t or path.endswith("." + t) for path in paths)]
    if missing:
        # each linear layer named from its layer on (attention.self.query), as a target may name it
        linear = (path for path, module in model.named_modules() if isinstance(module, nn.Linear))
        names = dict.fromkeys(re.sub(r"^(.*\.)?\d+\.", "", path) for path in linear)
        raise PetirError(
            f"LoRA target_modules {', '.join(map(repr, missing))} name no module of this "
            f"{model.config.model_type!r} encoder; its linear layers: {', '.join(names)}"
        )


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
    needs_layer_map=False,
)

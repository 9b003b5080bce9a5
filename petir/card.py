"""Model cards: the README.md of every saved model directory, so a directory found on a disk or a hub explains itself:
what it is (task, method, budget, backbone), how it was trained, and how to use it with Pyserini and petir."""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING, Any

from petir.pet import get_method, make_config, saved_budget, variant_of
from petir.tasks import get_task

if TYPE_CHECKING:
    from petir.models import PetModel


def model_card(model: PetModel, training: dict[str, Any] | None = None) -> str:
    """The card of ``model``; ``training`` (argv, steps, final_dev, wall_time_s) adds how it was trained."""
    config = model.config_dict()
    task = get_task(config["task"])
    method = get_method(config["pet_method"])
    variant = variant_of(method.name, make_config(method.name, config["pet_config"])).name
    budget = saved_budget(config)
    parameters = config["parameters"]
    options = ", ".join(f"{key}={value}" for key, value in config["pet_config"].items()) or "none"
    lines = [
        f"# petir {config['task']} model: {variant} on {config['backbone']}",
        "",
        "| | |",
        "|---|---|",
        f"| task | {task.name} ({task.kind}) |",
        f"| PET method | `{variant}` ({method.summary}; from {method.reference}) |",
        f"| options | {options} |",
        f"| budget preset | {budget + ' % (the paper’s widths for BERT-base)' if budget else 'none named'} |",
        f"| trainable | {parameters['trainable']:,} parameters, {parameters['percent']:.3f} % of the backbone |",
        f"| backbone | `{config['backbone']}` (fingerprint `{config['backbone_fingerprint']}`) |",
        f"| petir | {config.get('petir_version', '?')} |",
    ]
    if training:
        dev, kept = training.get("final_dev"), training.get("kept")
        lines += [
            "",
            "## Training",
            "",
            f"`python -m petir.train {' '.join(shlex.quote(a) for a in training.get('argv', []))}`",
            "",
            f"{training['steps']} optimizer steps in {training['wall_time_s']:.0f} s of training"
            + (f"; final dev {_metrics(dev)}" if dev else "; no dev set")
            + (f"; saved: the best dev check, step {kept['step']} ({_metrics(kept['dev'])})" if kept else "")
            + ".",
        ]
    lines += ["", "## Use", "", task.usage(model), ""]
    lines += [
        "Only the trained tensors are stored (`petir_state.safetensors`); the backbone is loaded by name and checked "
        "against the fingerprint. Loading needs petir (`pip install petir`): its PET modules are not standard "
        "Hugging Face layers.",
        "",
    ]
    return "\n".join(lines)


def _metrics(values: dict[str, float]) -> str:
    return ", ".join(f"{name} {value}" for name, value in values.items())

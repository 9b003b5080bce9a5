"""Model cards: the README.md of every saved model directory, so a directory found on a disk or a hub explains itself:
what it is (task, method, budget, backbone), how it was trained, and how to use it with Pyserini and petir.

The card opens with the Hugging Face front matter (``huggingface_hub.ModelCardData``: library, base model, tags,
pipeline tag, training data, dev metrics, and the backbone's license where the backbone's own card declares one),
which hub tooling reads; without it a hub shows the card as empty."""

from __future__ import annotations

import shlex
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData, constants, model_info
from huggingface_hub.errors import HfHubHTTPError

from petir.backbone import resolve_backbone
from petir.pet import get_method, make_config, saved_budget, variant_of
from petir.tasks import get_task

if TYPE_CHECKING:
    from petir.models import PetModel


def model_card(model: PetModel, training: dict[str, Any] | None = None) -> str:
    """The card of ``model``; ``training`` (the run's summary.json plus argv and dataset) adds how it was trained."""
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
        dev, kept, settings = training.get("final_dev"), training.get("kept"), training["config"]
        lines += [
            "",
            "## Training",
            "",
            f"`python -m petir.train {' '.join(shlex.quote(a) for a in training.get('argv', []))}`",
            "",
            f"Data: {training.get('dataset') or 'local files'}; learning rate {settings['learning_rate']:g}, seed "
            f"{settings['seed']}, batch size {settings['batch_size']}. {training['steps']} optimizer steps in "
            f"{training['wall_time_s']:.0f} s of training"
            + (f"; final dev {_metrics(dev)}" if dev else "; no dev set")
            + (f"; saved: the best dev check, step {kept['step']} ({_metrics(kept['dev'])})" if kept else "")
            + ".",
        ]
        if training.get("lr_ladder"):
            lines += ["", _ladder_line(training["lr_ladder"])]
        if training.get("improved") is False:
            lines += ["", "Training did not improve on the starting model on dev: this is the untrained start."]
    lines += ["", "## Use", "", task.usage(model), ""]
    if method.merge is not None and task.export is not None:
        loading = (
            "Loading this directory needs petir (`pip install petir`); `python -m petir.export THIS_DIR --output DIR` "
            "folds the trained weights into the backbone and writes a plain Hugging Face model that does not."
        )
    else:
        loading = "Loading needs petir (`pip install petir`): its PET modules are not standard Hugging Face layers."
    lines += [
        "Only the trained tensors are stored (`petir_state.safetensors`); the backbone is loaded by name and checked "
        f"against the fingerprint. {loading}",
        "",
    ]
    data = _card_data(config, variant, training)
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines)))


def _ladder_line(ladder: dict[str, Any]) -> str:
    """How the learning rate was picked (petir.ladder): each rung's rate and dev value."""
    rungs = ", ".join(
        f"{rung['lr']:g}: "
        + ("diverged" if "diverged" in rung else f"{next(iter(rung['dev'].values())):.4f}")
        + (f" ± {rung['dev_se']:.4f}" if "dev_se" in rung else "")
        for rung in ladder["rungs"]
    )
    return (
        f"Learning rate {ladder['picked']:g}, picked on dev among {', '.join(f'{r:g}' for r in ladder['rates'])} "
        f"(highest first: the first whose {ladder['steps']}-step run is not significantly below the untrained "
        f"start on dev; dev {rungs})."
    )


def _card_data(config: dict[str, Any], variant: str, training: dict[str, Any] | None) -> ModelCardData:
    """The front matter: a local backbone path is no hub name, so it is left out of ``base_model``."""
    task = get_task(config["task"])
    dataset = (training or {}).get("dataset")
    dev = ((training or {}).get("kept") or {}).get("dev") or (training or {}).get("final_dev") or {}
    backbone = config["backbone"]
    name = f"petir-{task.name}-{variant}"
    results = [
        EvalResult(
            task_type=task.pipeline_tag,
            dataset_type=dataset,
            dataset_name=dataset,
            dataset_split="dev",
            metric_type=metric,
            metric_value=value,
        )
        for metric, value in dev.items()
        if dataset
    ]
    return ModelCardData(
        library_name="petir",
        base_model=None if Path(backbone).exists() else backbone,
        tags=list(dict.fromkeys(["petir", "pyserini", config["pet_method"], variant, task.pipeline_tag])),
        pipeline_tag=task.pipeline_tag,
        datasets=[dataset] if dataset else None,
        metrics=list(dev) or None,
        model_name=name,
        eval_results=results or None,
        license=backbone_license(backbone),
    )


#: What reading a backbone's card can raise that means "no license known": file and network errors (huggingface_hub's
#: HTTP error and its client's transport errors share the client's base class), and a front matter that is no mapping.
CARD_ERRORS = (OSError, ValueError, yaml.YAMLError, *HfHubHTTPError.__bases__)


@cache  # a run saves its card at every checkpoint; the hub is asked once
def backbone_license(backbone: str) -> str | None:
    """The license the backbone's own model card declares: a local directory's README.md front matter (the
    embedded default backbone's says apache-2.0), else, for a hub name, the hub's card data (one API call, no
    retries; skipped under ``HF_HUB_OFFLINE``). None where there is no card, it declares none or it cannot be read
    (offline, or a damaged README: the backbone's metadata, not worth failing a trained model's save over). Never
    guessed: a trained model's terms are its backbone's, and only the backbone's card can state them."""
    location = resolve_backbone(backbone)
    try:
        if Path(location).is_dir():
            readme = Path(location) / "README.md"
            data = ModelCard.load(readme, ignore_metadata_errors=True).data if readme.is_file() else None
        elif constants.HF_HUB_OFFLINE:
            data = None
        else:
            data = model_info(location, timeout=10).card_data
    except CARD_ERRORS:
        return None
    license = getattr(data, "license", None)
    return license if isinstance(license, str) and license else None


def _metrics(values: dict[str, float]) -> str:
    return ", ".join(f"{name} {value}" for name, value in values.items())

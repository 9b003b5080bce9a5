"""Model cards: the README.md of every saved model directory, so a directory found on a disk or a hub explains itself:
what it is (task, method, budget, backbone), how it was trained, and how to use it with Pyserini and petir.

The card opens with the Hugging Face front matter (``huggingface_hub.ModelCardData``: library, base model, tags,
pipeline tag, training data, dev metrics, and the backbone's license where the backbone's own card declares one),
which hub tooling reads; without it a hub shows the card as empty."""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData, constants, model_info
from huggingface_hub.errors import HfHubHTTPError

from petir.backbone import WHEEL_MODELS, resolve_backbone
from petir.files import write_lines_atomic
from petir.pet import get_method

if TYPE_CHECKING:
    from torch import nn


def model_card(model: nn.Module, training: dict[str, Any] | None = None) -> str:
    """The card of ``model`` (a :class:`petir.models.PetModel`, which saves it: this module sits below it and
    reads its task from the model's own ``task_record``); ``training`` (the run's summary.json plus argv and dataset)
    adds how it was trained."""
    config = model.config_dict()
    task = model.task_record
    method = get_method(model.method)
    variant, budget = model.variant.name, model.pet_budget  # as the model records them (config.json)
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
            *_training_command(training.get("argv", []), training.get("dataset")),
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
    usage = task.usage(model)
    lines += ["", "## Use", "", usage, "", placeholder_notes(usage), ""]
    if method.merge is not None and task.export is not None:
        loading = (
            "Loading this directory needs petir; `python -m petir.export THIS_DIR --output DIR` folds the trained "
            "weights into the backbone and writes a plain Hugging Face model that does not."
        )
    else:
        loading = "Loading needs petir: its PET modules are not standard Hugging Face layers."
    lines += [
        "Only the trained tensors are stored (`petir_state.safetensors`); the backbone is loaded by name and checked "
        f"against the fingerprint. {loading} {INSTALL}",
        "",
    ]
    data = _card_data(config, task.pipeline_tag, variant, training)
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines)))


#: How to install petir today: from its source repository (there is no PyPI package named petir of this project).
INSTALL = (
    'Install petir from its source repository: `pip install "git+REPOSITORY_URL"`, REPOSITORY_URL being the git '
    "URL of the petir checkout this model came from (or `pip install .` in a clone of it); petir is not on PyPI, "
    "and `pip install petir` finds no such package."
)

#: What each capitalised placeholder of a card's commands stands for (the task's usage and the export's README).
PLACEHOLDERS = {
    "THIS_DIR": "this model's directory",
    "COLLECTION": "the passages as a Pyserini JSONL collection: a directory of `.jsonl` files, one JSON object a "
    'line with `id` and `contents` (`{"id": "d1", "contents": "the passage text"}`)',
    "TOPICS": "the queries: a TSV file, `qid<TAB>query text` a line, or a Pyserini topics name",
    "INDEX": "the index directory the first command writes and the search reads",
    "VECTORS": "a directory for the encoded passages (a JsonVectorCollection), read by the indexing command",
    "FIRST_STAGE": "the first-stage TREC run to re-rank, without its `.trec` suffix",
    "LUCENE_INDEX": "a Lucene index of the passages (`python -m pyserini.index.lucene --collection "
    "JsonCollection --input COLLECTION --index LUCENE_INDEX --storeRaw`), from which the passage texts are read",
    "DIR": "the export directory to write",
}


def placeholder_notes(commands: str) -> str:
    """A line saying what each :data:`PLACEHOLDERS` name used in ``commands`` (markdown) stands for."""
    used = [name for name in PLACEHOLDERS if re.search(rf"\b{name}\b", commands)]
    return "In capitals, what to fill in: " + "; ".join(f"`{name}`: {PLACEHOLDERS[name]}" for name in used) + "."


def portable_command(argv: Sequence[str], dataset: str | None) -> tuple[str, list[str]]:
    """The ``petir.train`` arguments as another machine types them, and the placeholders in them: ``--data`` by the
    dataset's name, ``--output`` relative (an absolute one by its last part), and any other absolute path of the
    machine that trained the model as a placeholder named after its flag (``--negatives-run /x/y.trec`` ->
    ``NEGATIVES_RUN``)."""
    words = [part for arg in argv for part in (arg.split("=", 1) if arg.startswith("--") and "=" in arg else [arg])]
    shown, placeholders = [], []
    for flag, word in zip([None, *words], words, strict=False):
        if flag == "--data" and dataset:
            word = dataset
        elif flag == "--output" and Path(word).is_absolute():
            word = Path(word).name
        elif Path(word).is_absolute():
            placeholders.append(flag.lstrip("-").replace("-", "_").upper() if flag and flag[:2] == "--" else "PATH")
            shown.append(placeholders[-1])
            continue
        shown.append(shlex.quote(word))
    return " ".join(shown), list(dict.fromkeys(placeholders))


def _training_command(argv: Sequence[str], dataset: str | None) -> list[str]:
    """The card's lines on the training command: the command, the dataset by name, and the placeholders."""
    command, placeholders = portable_command(argv, dataset)
    lines = [f"`python -m petir.train {command}`", ""]
    if dataset and "--data" in command:
        lines.append(
            f"`--data {dataset}`: the BEIR dataset by name (petir downloads BEIR's public sets into its cache) or the "
            "directory of a copy."
        )
    if placeholders:
        names = ", ".join(f"`{name}`" for name in placeholders)
        lines.append(f"In capitals ({names}): paths on the machine that trained this model; give your own of the kind.")
    return [*lines, ""] if len(lines) > 2 else lines


def export_card(source: Path, body: str) -> str:
    """The README.md of a standard export of the model saved in ``source`` (``python -m petir.export``): that model's
    front matter (base model, licence, data, results) for a sentence-transformers model, then ``body``."""
    data = ModelCard.load(Path(source) / "README.md", ignore_metadata_errors=True).data
    data.library_name = "sentence-transformers"
    data.tags = list(dict.fromkeys([*(data.tags or []), "sentence-transformers"]))
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}\n{placeholder_notes(body)}\n"))


#: The heading of the card's test results, which :func:`add_test_results` writes (and rewrites).
TEST_HEADING = "## Test"


def add_test_results(model_dir: Path, dataset: str, results: dict[str, float], how: str) -> None:
    """Record the test-split ``results`` petir computed for the model saved in ``model_dir`` in its card: model-index
    entries naming ``dataset`` and its test split (beside the dev ones), and a section saying ``how`` they were
    computed; earlier test results are replaced, so a study that evaluates again leaves one set."""
    path = Path(model_dir) / "README.md"
    card = ModelCard.load(path, ignore_metadata_errors=True)
    data = card.data
    kept = [r for r in data.eval_results or [] if r.dataset_split != "test"]
    data.eval_results = kept + _eval_results(data.pipeline_tag, dataset, "test", results)
    data.model_name = data.model_name or Path(model_dir).name  # model-index entries need a name
    text = card.text.split(f"\n{TEST_HEADING}\n")[0].rstrip("\n")
    section = f"{TEST_HEADING}\n\n{dataset}, test split: {_metrics(results)} ({how}).\n"
    write_lines_atomic(path, [f"---\n{data.to_yaml()}\n---\n{text}\n\n{section}"])


def _eval_results(task_type: str, dataset: str, split: str, results: dict[str, float]) -> list[EvalResult]:
    """Model-index entries: each of ``results`` (metric -> value) on ``dataset``'s ``split``."""
    return [
        EvalResult(
            task_type=task_type,
            dataset_type=dataset,
            dataset_name=dataset,
            dataset_split=split,
            metric_type=metric,
            metric_value=value,
        )
        for metric, value in results.items()
    ]


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


def _card_data(
    config: dict[str, Any], pipeline_tag: str, variant: str, training: dict[str, Any] | None
) -> ModelCardData:
    """The front matter: a local backbone path is no hub name, so it is left out of ``base_model``."""
    dataset = (training or {}).get("dataset")
    dev = ((training or {}).get("kept") or {}).get("dev") or (training or {}).get("final_dev") or {}
    backbone = config["backbone"]
    name = f"petir-{config['task']}-{variant}"
    results = _eval_results(pipeline_tag, dataset, "dev", dev) if dataset else []
    return ModelCardData(
        library_name="petir",
        base_model=None if Path(backbone).exists() else backbone,
        tags=list(dict.fromkeys(["petir", "pyserini", config["pet_method"], variant, pipeline_tag])),
        pipeline_tag=pipeline_tag,
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
    if backbone in WHEEL_MODELS:  # a wheel's model files come without the model's own card
        return WHEEL_MODELS[backbone].license
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

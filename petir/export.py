"""Standard exports of a trained model, usable where petir is not installed: ``python -m petir.export --help``.

For methods whose trained weights fold into the backbone's own (full fine-tuning, BitFit, LoRA; the registry's
``merge``), the export is a plain Hugging Face model directory: ``transformers.AutoModel`` loads it, stock Pyserini
encodes with it (``--encoder-class auto --pooling mean --l2-norm``, the flags the export's README.md names), and
sentence-transformers loads it with its pooling and normalisation (``modules.json``). A LoRA export also holds the
adapter alone, as PEFT saves it (``peft/``: ``PeftModel.from_pretrained(backbone, "OUT/peft")``).

Methods that add modules a standard BERT has no place for (adapters, prefixes, MAM, IAA, linked adapters) are not
exported: their directories need petir, whose Pyserini plug-in loads them. Which tasks export, and what makes the
merged backbone a standard model of the task, each task says (:attr:`petir.tasks.Task.export`): retrievers export;
re-rankers do not, as their score head reads the raw [CLS] state, which no standard sequence-classification class
does.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from petir import cli
from petir.backbone import backbone_pooler
from petir.errors import PetirError
from petir.files import check_new_directory, output_lock, staged_directory
from petir.pet import METHODS, get_method
from petir.pet.additions import merge_additions
from petir.tasks import TASKS, get_task, load

#: The methods whose trained weights fold into a standard model: those with a ``merge``.
MERGEABLE = [name for name, method in METHODS.items() if method.merge is not None]


def export(model_dir: str | Path, output: str | Path, overwrite: bool = False) -> Path:
    """Write the model in ``model_dir`` as a plain Hugging Face model directory ``output``, which must be new or
    empty unless ``overwrite``: then an earlier export there is replaced atomically (a directory holding files this
    export does not write, or the model directory itself, is refused). Raises PetirError for a model that has no
    standard form (its task has none, or its method adds modules a standard model has no place for)."""
    with output_lock(output, directory=True):  # one writer, from the check to the swap
        return _export(Path(model_dir), Path(output), overwrite)


def _export(model_dir: Path, output: Path, overwrite: bool) -> Path:
    check_new_directory(output, overwrite, source=Path(model_dir))
    model = load(model_dir)
    task = get_task(model.task)
    if task.export is None:
        exporting = " and ".join(f"{other.noun}s" for other in TASKS.values() if other.export is not None)
        raise PetirError(f"{model_dir} is a {task.name} model; only {exporting} export: {task.no_export}")
    method = get_method(model.method)
    if method.merge is None:
        raise PetirError(
            f"{model.method} adds modules that a standard {model.encoder.config.model_type} has no place for; "
            "use the directory itself with petir installed (its Pyserini plug-in loads it). Standard exports exist "
            f"for {', '.join(MERGEABLE)}"
        )
    with staged_directory(output, replace=True) as staging:  # checked above: empty, or --overwrite
        if method.export_extra is not None:
            method.export_extra(model.encoder, model.backbone, staging)
        method.merge(model.encoder)
        merge_additions(model.encoder)
        if hasattr(model.encoder, "pooler"):  # dropped for training; the export's class expects its weights
            model.encoder.pooler = backbone_pooler(model.backbone)
        model.encoder.save_pretrained(staging)
        model.tokenizer.save_pretrained(staging)
        task.export(model, staging, Path(model_dir))
    return Path(output)


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(prog="python -m petir.export", description=__doc__)
    parser.add_argument("model_dir", type=Path, help=f"a saved petir retriever ({', '.join(MERGEABLE)})")
    parser.add_argument("--output", required=True, type=Path, help="the plain Hugging Face model directory to write")
    cli.add_overwrite_flag(
        parser, "an earlier export in --output; a directory holding files this export does not write is still refused"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    model_dir = export(args.model_dir, args.output, args.overwrite)
    print(f"petir: exported {args.model_dir} to {model_dir}")


if __name__ == "__main__":
    cli.run(main)

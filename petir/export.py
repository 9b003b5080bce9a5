"""Standard exports of a trained retriever, usable where petir is not installed: ``python -m petir.export --help``.

For methods whose trained weights fold into the backbone's own (full fine-tuning, BitFit, LoRA; the registry's
``merge``), the export is a plain Hugging Face model directory: ``transformers.AutoModel`` loads it, stock Pyserini
encodes with it (``--encoder-class auto --pooling mean --l2-norm``, the flags the export's README.md names), and
sentence-transformers loads it with its pooling and normalisation (``modules.json``). A LoRA export also holds the
adapter alone, as PEFT saves it (``peft/``: ``PeftModel.from_pretrained(backbone, "OUT/peft")``).

Methods that add modules a standard BERT has no place for (adapters, prefixes, MAM, IAA, linked adapters) are not
exported: their directories need petir, whose Pyserini plug-in loads them. Re-rankers are not exported either:
their score head reads the raw [CLS] state, which no standard sequence-classification class does.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from petir import cli
from petir.errors import PetirError
from petir.files import check_new_directory, staged_directory
from petir.models import BiEncoder, PetModel
from petir.pet import METHODS, get_method

#: The methods whose trained weights fold into a standard model: those with a ``merge``.
MERGEABLE = [name for name, method in METHODS.items() if method.merge is not None]
#: sentence-transformers' pooling modes for petir's poolings.
POOLING_MODES = {"mean": "pooling_mode_mean_tokens", "cls": "pooling_mode_cls_token"}


def export(model_dir: str | Path, output: str | Path, overwrite: bool = False) -> Path:
    """Write the retriever in ``model_dir`` as a plain Hugging Face model directory ``output``, which must be new or
    empty unless ``overwrite``: then an earlier export there is replaced atomically (a directory holding files this
    export does not write, or the model directory itself, is refused). Raises PetirError for a model that has no
    standard form."""
    check_new_directory(output, overwrite, source=Path(model_dir))
    model = PetModel.load(model_dir)
    if not isinstance(model, BiEncoder):
        raise PetirError(
            f"{model_dir} is a {model.task} model; only retrievers export: a re-ranker's score head reads the raw "
            "[CLS] state, which no standard classification class does, so it needs petir (python -m petir.rerank)"
        )
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
        model.encoder.save_pretrained(staging)
        model.tokenizer.save_pretrained(staging)
        _save_sentence_transformers_files(model, staging)
        (staging / "README.md").write_text(_card(model, Path(model_dir)))
    return Path(output)


def _save_sentence_transformers_files(model: BiEncoder, directory: Path) -> None:
    """modules.json and the pooling (and normalisation) module configs that sentence-transformers reads."""
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if model.similarity == "cosine":
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
        (directory / "2_Normalize").mkdir()
    (directory / "modules.json").write_text(json.dumps(modules, indent=2) + "\n")
    (directory / "1_Pooling").mkdir()
    pooling = {"word_embedding_dimension": model.dimension, **dict.fromkeys(POOLING_MODES.values(), False)}
    pooling[POOLING_MODES[model.pooling]] = True
    (directory / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=2) + "\n")
    (directory / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": model.passage_max_length, "do_lower_case": False}, indent=2) + "\n"
    )
    similarity = "cosine" if model.similarity == "cosine" else "dot"
    (directory / "config_sentence_transformers.json").write_text(
        json.dumps({"similarity_fn_name": similarity, "prompts": {}, "default_prompt_name": None}, indent=2) + "\n"
    )


def pyserini_flags(model: BiEncoder) -> str:
    """The stock Pyserini encoder flags that reproduce the model's vectors."""
    return f"--encoder-class auto --pooling {model.pooling}" + (" --l2-norm" if model.similarity == "cosine" else "")


def _card(model: BiEncoder, source: Path) -> str:
    flags = pyserini_flags(model)
    vectors = f"{model.pooling} pooling" + (", L2-normalised" if model.similarity == "cosine" else "")
    return f"""# {model.method} retriever exported from petir

A plain Hugging Face model (`{model.encoder.config.model_type}`): petir's trained `{model.method}` weights folded into
`{model.backbone}`, exported from `{source}` by `python -m petir.export`. No petir needed to use it.

```bash
python -m pyserini.encode input --corpus COLLECTION output --embeddings INDEX --to-faiss \\
    encoder --encoder THIS_DIR {flags} --max-length {model.passage_max_length}
python -m pyserini.search.faiss --index INDEX --topics TOPICS --encoder THIS_DIR {flags} --output run.trec
```

```python
from sentence_transformers import SentenceTransformer
vectors = SentenceTransformer("THIS_DIR").encode(["a passage"])   # {vectors}
```

Queries were trained at {model.query_max_length} tokens and passages at {model.passage_max_length}.
"""


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

"""Every file petir reads, in one registry: the promise that a damaged file ends in one line is tested over it.

Each reader takes the file's path (a directory for model directories and ONNX exports) and returns what the file
holds, or raises :class:`~petir.errors.PetirError` with one line naming the file and what to do. Empty, truncated,
binary or mistyped input is never a traceback and never a silently wrong result (``tests/test_promises.py``
damages an example of every entry, and fails for an entry it has no example of). A new reader of a file format is
registered here. Re-ranking's partial scores are not: they are read only by the re-ranking that wrote them, keyed
by the content of its inputs, and a line torn by an interruption is scored again (:mod:`petir.rerank`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from petir import data, ondisk
from petir.checkpoint import read_trainer_state
from petir.evaluate import read_results
from petir.ladder import read_ladder
from petir.models import STATE_FILE, read_state
from petir.run_directory import read_metrics, read_summary
from petir.sampling import Triples
from petir.tasks import load, load_onnx, read_config


class Reader(NamedTuple):
    read: Callable[[Path], object]
    about: str


READERS: dict[str, Reader] = {
    "corpus": Reader(
        data.read_corpus,
        "BEIR corpus.jsonl, Pyserini JsonCollection jsonl or MS MARCO collection TSV, plain or .gz (or a BEIR "
        "directory holding corpus.jsonl[.gz])",
    ),
    "corpus-in-place": Reader(ondisk.open_corpus, "the same corpus formats, read in place (training, --corpus)"),
    "queries": Reader(data.read_queries, "BEIR queries.jsonl or 'qid<TAB>text' topics, plain or .gz"),
    "queries-in-place": Reader(ondisk.open_queries, "the same queries formats, read in place (id triples)"),
    "qrels": Reader(data.read_qrels, "BEIR qrels TSV (header optional), TREC qrels or 'qid docid rel'"),
    "run": Reader(data.read_run, "TREC run, 'qid Q0 docid rank score tag'"),
    "triples": Reader(data.read_triples, "MS MARCO triples, 'query<TAB>positive<TAB>negative' texts or ids"),
    "triples-in-place": Reader(Triples, "the same triples, read in place (training with --triples)"),
    "model": Reader(load, "a saved petir model directory: config.json, petir_state.safetensors, backbone"),
    "model-config": Reader(read_config, "a saved model's config.json (given its directory)"),
    "model-state": Reader(read_state, f"a saved model's trained tensors, {STATE_FILE}"),
    "onnx-export": Reader(load_onnx, "a model directory with its ONNX export: onnx/, tokenizer files"),
    "trainer-checkpoint": Reader(
        read_trainer_state,
        "a training checkpoint's optimizer, scheduler and RNG state (given checkpoint/): trainer_state.json and "
        "trainer_state.safetensors",
    ),
    "metrics-log": Reader(read_metrics, "a training run's metrics.jsonl"),
    "training-summary": Reader(read_summary, "a finished training run's summary.json"),
    "lr-ladder": Reader(read_ladder, "a training run's ladder.json: the learning-rate ladder's rungs (--resume)"),
    "evaluation": Reader(read_results, "the JSON that python -m petir.evaluate --output writes (the study's cache)"),
}

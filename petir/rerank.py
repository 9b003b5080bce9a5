"""Re-rank a Pyserini run with a petir cross-encoder (or a bi-encoder's score): ``python -m petir.rerank --help``.

The top ``--depth`` passages of each query are re-scored; the rest keep their original order below them, so
every (query, passage) of the input appears exactly once in the output. Scores already computed are kept in
``OUTPUT.partial.jsonl`` as the run goes, so an interrupted re-ranking continues where it stopped; they are reused
only by a re-ranking of the same inputs (``OUTPUT.partial.key`` holds SHA-256 digests of the content of the run, the
topics, the model directory's files and the passage source, and the options), so an edited run, corpus or other
topics never get stale scores.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

from petir import cli
from petir.data import Document, Run, normalize_text, read_queries, read_run, write_run
from petir.errors import DataError, PetirError
from petir.files import check_new_file, check_not_input, output_lock, space_checked, write_lines_atomic
from petir.ondisk import open_corpus

EXAMPLES = """
example (BM25 top-100 from Pyserini, then an IAA-L re-ranker):
  python -m pyserini.search.lucene --index IDX --topics topics.tsv --output bm25.trec --bm25 --hits 100
  python -m petir.rerank --run bm25.trec --topics topics.tsv --index IDX \\
      --model runs/scifact-reranker/model --output reranked.trec
"""


@dataclasses.dataclass
class RerankCommand:
    """How ``petir.rerank`` scores (its flags beside the input and output paths)."""

    depth: int = cli.option(100, "passages re-scored per query", bounds=cli.Bounded(int, minimum=1))
    batch_size: int = cli.option(32, "query-passage pairs per forward pass", bounds=cli.Bounded(int, minimum=1))
    device: str = cli.option("auto", cli.DEVICES, parse=cli.device_flag)
    backend: str = cli.option(
        "torch",
        "onnx: onnxruntime on a model exported with `python -m petir.onnx MODEL`; onnx-int8: its int8-weight "
        "graph (docs/results/onnx-throughput.md: speed and quality)",
        ("torch", "onnx", "onnx-int8"),
    )
    tag: str = cli.option("petir", "run tag written in the last column")


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(prog="python -m petir.rerank", description=__doc__, epilog=EXAMPLES)
    parser.add_argument("--run", required=True, type=Path, help="input TREC run ('qid Q0 docid rank score tag')")
    parser.add_argument("--topics", required=True, type=Path, help="queries: 'qid<TAB>text' tsv or BEIR jsonl")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--index", type=Path, help="Pyserini Lucene index built with --storeRaw (passage text)")
    source.add_argument("--corpus", type=Path, help="corpus file (BEIR/Pyserini jsonl or MS MARCO tsv)")
    parser.add_argument(
        "--model",
        required=True,
        type=Path,
        help="a petir cross-encoder directory; a petir bi-encoder or a plain backbone directory re-ranks by its "
        "retrieval score (the backbone: mean-pooled cosine)",
    )
    parser.add_argument("--output", required=True, type=Path, help="output TREC run")
    cli.add_dataclass_flags(parser, RerankCommand)
    cli.add_overwrite_flag(
        parser,
        "an existing --output, and discard the scores OUTPUT.partial.jsonl kept from an interrupted re-ranking of "
        "other inputs (those of the same inputs are always reused)",
    )
    return parser


def passage_lookup(index: Path | None, corpus: Path | None) -> Callable[[str], str | None]:
    """docid -> passage text (``Document.contents``), from a Lucene index's stored raw documents or a corpus file."""
    if corpus is not None:
        documents = open_corpus(corpus)  # read in place: an MS MARCO collection is not held in memory
        return lambda docid: document.contents if (document := documents.get(docid)) else None
    if not (index / "segments.gen").exists() and not any(index.glob("segments_*")):
        raise PetirError(f"{index} is not a Lucene index (no segments file)")
    from petir.java import ensure_java

    ensure_java()
    from pyserini.search.lucene import LuceneSearcher

    searcher = LuceneSearcher(str(index))

    def lookup(docid: str) -> str | None:
        document = searcher.doc(docid)
        if document is None:
            return None
        raw = document.raw()
        if raw is None:
            raise PetirError(f"{index} stores no raw documents; rebuild it with --storeRaw or pass --corpus")
        return _raw_contents(docid, raw)

    return lookup


def _raw_contents(docid: str, raw: str) -> str:
    """Passage text from a stored raw document: Pyserini JSON ({"contents"} or BEIR {"title", "text"}) or text."""
    try:
        record = json.loads(raw)
    except json.JSONDecodeError:
        return normalize_text(raw)
    if "text" in record:
        return Document(docid, record.get("title") or "", record["text"]).contents
    return normalize_text(str(record.get("contents", "")))


def rerank(
    run: Run,
    queries: dict[str, str],
    passage: Callable[[str], str | None],
    score: Callable[[list[str], list[str]], Sequence[float]],
    depth: int,
    partial: Path,
    key: dict[str, str] | None = None,
) -> Run:
    """Re-score the top ``depth`` of each query; the tail keeps its order, scored below every re-scored passage.
    ``partial`` (and its ``key``, :func:`partial_key`) is written with the first score, so a re-ranking that stops
    on its inputs before scoring leaves no file behind."""
    missing = [qid for qid in run if qid not in queries]
    if missing:
        raise DataError(f"{len(missing)} queries of the run are not in the topics (e.g. {missing[0]!r})")
    done = _read_partial(partial)
    for qid, scores in done.items():  # the key guarantees the same run; a hand-edited file is caught here
        if qid not in run or len(scores) != min(depth, len(run[qid])):
            raise DataError(f"{partial}: scores of query {qid!r} do not fit the run; remove it to start over")
    total = sum(min(depth, len(hits)) for qid, hits in run.items() if qid not in done)
    bar = cli.progress(total=total, desc="re-ranking", unit="pair")
    with space_checked(partial), contextlib.ExitStack() as stack:
        log = None
        for qid, hits in run.items():
            head = [docid for docid, _ in hits[:depth]]
            if qid not in done:
                texts = []
                for docid in head:
                    text = passage(docid)
                    if text is None:
                        raise DataError(f"docid {docid!r} (query {qid!r}) is not in the index or corpus")
                    texts.append(text)
                done[qid] = [float(s) for s in score([queries[qid]] * len(texts), texts)]
                if log is None:
                    if key is not None:
                        write_lines_atomic(_key_file(partial), [json.dumps(key) + "\n"])
                    log = stack.enter_context(open(partial, "a"))
                log.write(json.dumps({"qid": qid, "scores": done[qid]}) + "\n")
                log.flush()
                bar.update(len(head))
    bar.close()
    reranked: Run = {}
    for qid, hits in run.items():
        scored = sorted(zip([d for d, _ in hits[:depth]], done[qid], strict=True), key=lambda hit: -hit[1])
        floor = min((s for _, s in scored), default=0.0)
        tail = [(docid, floor - 1.0 - i) for i, (docid, _) in enumerate(hits[depth:])]
        reranked[qid] = scored + tail
    return reranked


def _read_partial(path: Path) -> dict[str, list[float]]:
    if not path.exists():
        return {}
    scores = {}
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
            qid, values = record["qid"], [float(score) for score in record["scores"]]
        except (json.JSONDecodeError, TypeError, KeyError, ValueError):
            continue  # a line cut short by an interruption (a resumed run appends after it): scored again
        scores[qid] = values
    return scores


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    check_not_input(args.output, {"--run": args.run, "--topics": args.topics, "--corpus": args.corpus})
    with output_lock(args.output, directory=False):
        _rerank(args)


def _rerank(args: argparse.Namespace) -> None:
    """:func:`main` under the output's lock: one re-ranking writes an output (and its partial scores) at a time."""
    check_new_file(args.output, args.overwrite)
    partial = args.output.with_name(args.output.name + ".partial.jsonl")
    key = partial_key(args)
    _check_partial_key(partial, key, args.overwrite)
    run = read_run(args.run)
    queries = read_queries(args.topics)
    passage = passage_lookup(args.index, args.corpus)

    model = load_scorer(args.model, args.backend, args.device)
    reranked = rerank(run, queries, passage, model.pair_scorer(args.batch_size), args.depth, partial, key)
    write_run(reranked, args.output, args.tag)
    partial.unlink(missing_ok=True)  # absent when the run had nothing to re-rank
    _key_file(partial).unlink(missing_ok=True)
    print(f"petir: re-ranked {len(reranked)} queries (top {args.depth}) -> {args.output}")


def load_scorer(model: Path, backend: str, device: str):
    """What scores the pairs (its ``pair_scorer``): a petir model of any task (a cross-encoder's score, a
    bi-encoder's retrieval score), or a plain backbone (as :data:`petir.tasks.PLAIN_BACKBONE_TASK`'s untrained model:
    its mean-pooled cosine, the baseline a trained re-ranker must beat)."""
    from petir.models import CONFIG_FILE, MODEL_TYPE, STATE_FILE
    from petir.onnx import load_inference_model
    from petir.pet import REFERENCE_METHOD
    from petir.tasks import PLAIN_BACKBONE_TASK, get_task

    if not model.is_dir():
        raise PetirError(f"{model}: no such model directory; pass a petir model (OUTPUT/model of petir.train)")
    try:
        is_petir = json.loads((model / CONFIG_FILE).read_text()).get("model_type") == MODEL_TYPE
    except (OSError, ValueError, AttributeError):
        is_petir = False  # loaded as a backbone below, which says what is wrong with it
    is_petir = is_petir or (model / STATE_FILE).exists()  # a petir directory, if a damaged one
    if is_petir or backend != "torch":
        return load_inference_model(model, backend=backend, device=device)
    plain = get_task(PLAIN_BACKBONE_TASK).model(str(model), REFERENCE_METHOD)  # adds no modules
    return plain.to(cli.resolve_device(device)).eval()


def partial_key(args: argparse.Namespace) -> dict[str, str]:
    """What the scores in ``OUTPUT.partial.jsonl`` depend on, by content: SHA-256 of the run and topics files, of
    every file in the model directory (its config, state, tokenizer, ONNX export) and of the passage source (the
    corpus file or the index's files: an edit with its size and modification time put back still changes it), and
    the options that change scores. Hashing is cheap beside scoring (measured on a shared 2-core machine: SciFact's
    corpus 14 ms gzipped, 2.8 MB, and 27 ms unpacked, 8.1 MB; at that 0.3 GB/s, about 10 s for MS MARCO's 3 GB)."""
    source = args.corpus if args.corpus is not None else args.index
    return {
        "run": _digest(args.run),
        "topics": _digest(args.topics),
        "model": _digest(args.model),
        "passages": _digest(source),
        "options": json.dumps({"depth": args.depth, "backend": args.backend}),
    }


def _digest(root: Path) -> str:
    """SHA-256 over a file's content, or over every file of a directory (relative path and content); what cannot be
    read is left to its reader to report."""
    digest = hashlib.sha256()
    files = sorted(path for path in root.rglob("*") if path.is_file()) if root.is_dir() else [root]
    for path in files:
        digest.update(str(path.relative_to(root) if path != root else "").encode() + b"\0")
        try:
            with open(path, "rb") as stream:
                for block in iter(lambda: stream.read(1 << 20), b""):
                    digest.update(block)
        except OSError:
            digest.update(b"\0unreadable")
    return digest.hexdigest()


def _key_file(partial: Path) -> Path:
    return partial.with_suffix(".key")


def _check_partial_key(partial: Path, key: dict[str, str], overwrite: bool) -> None:
    """Reuse partial scores only if they come from the same inputs (:func:`partial_key`); scores of other inputs
    are refused in one line (discarded with ``overwrite``), never silently reused."""
    key_file = _key_file(partial)
    if partial.exists():
        try:
            kept = json.loads(key_file.read_text())
        except (OSError, ValueError):
            kept = None
        changed = sorted(name for name in key if not isinstance(kept, dict) or kept.get(name) != key[name])
        if changed and not overwrite:
            what = f"other {', '.join(changed)}" if isinstance(kept, dict) else f"unknown inputs (no valid {key_file})"
            raise PetirError(
                f"{partial} holds scores of an interrupted re-ranking of {what}; pass --overwrite to discard them "
                "and start over, or re-run with the inputs it was started with"
            )
        if changed:
            partial.unlink()
        else:
            print(f"petir: continuing from {partial}")


if __name__ == "__main__":
    cli.run(main)

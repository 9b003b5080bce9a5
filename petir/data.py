"""petir's file formats: corpora, queries, qrels, runs and training triples, read and written in one place.

Every other module (training, encoding, indexing, evaluation) goes through these functions, so a format quirk is
handled once. Readers accept plain or ``.gz`` files, CRLF line endings and blank lines; anything malformed raises
:class:`~petir.errors.DataError` with a one-line ``file:line: what is wrong`` message. Writers write atomically
(temporary file + ``os.replace``) so an interrupted run never leaves half a file that a later step trusts. Finding,
downloading and loading whole datasets is :mod:`petir.datasets`.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import random
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TypeAlias

from petir.errors import DataError, PetirError, check_type
from petir.files import write_lines_atomic

PathLike: TypeAlias = str | os.PathLike[str]


@dataclass(frozen=True)
class Document:
    id: str
    title: str
    text: str

    @property
    def contents(self) -> str:
        """THE passage text used everywhere (training, encoding, Lucene index): title + text on one line."""
        return normalize_text(f"{self.title} {self.text}")


def normalize_text(text: str) -> str:
    """One line, single spaces: how petir feeds every query and passage to a model."""
    return " ".join(text.split())


Corpus: TypeAlias = dict[str, Document]  # insertion-ordered, as in the file
Queries: TypeAlias = dict[str, str]
Qrels: TypeAlias = dict[str, dict[str, int]]  # qid -> docid -> relevance
Run: TypeAlias = dict[str, list[tuple[str, float]]]  # qid -> [(docid, score)] in the file's rank order
Pools: TypeAlias = dict[str, list[str]]  # qid -> the docids it ranks (a dev check's candidates)

COLLECTION_FILE = "docs.jsonl"
_BEIR_QRELS_HEADER = ["query-id", "corpus-id", "score"]
#: What reading a damaged gzip file raises: a stream cut short (EOFError), flipped bytes (zlib.error) or a failed
#: CRC or header check (BadGzipFile). Every reader of .gz files catches these, and only these.
GZIP_ERRORS = (gzip.BadGzipFile, EOFError, zlib.error)


# --- reading ------------------------------------------------------------------------------------------------------


def _open_text(path: Path) -> IO[str]:
    # newline="\n": only LF ends a line, so a stray \r inside a passage does not split it; CRLF is stripped below.
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="\n")
    return open(path, encoding="utf-8-sig", newline="\n")


def require_file(path: PathLike, what: str = "file", remedy: str = "") -> Path:
    """``path`` if it is a regular file; else one line saying what it is instead (missing, a directory, a device
    such as /dev/null), so the user is not told a path that exists is missing."""
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        problem = f"a directory, not a {what}"
    elif path.exists():
        problem = "not a regular file"
    else:
        problem = f"no such {what}"
    raise DataError(f"{path}: {problem}" + (f"; {remedy}" if remedy else ""))


def _lines(path: PathLike) -> Iterator[tuple[int, str]]:
    """Yield ``(line number, line)`` without line ending, skipping blank lines."""
    path = require_file(path)
    lineno = 0
    try:
        with _open_text(path) as f:
            for lineno, line in enumerate(f, 1):
                line = line.rstrip("\r\n")
                if line.strip():
                    yield lineno, line
    except (UnicodeDecodeError, *GZIP_ERRORS) as e:
        raise DataError(f"{path}:{lineno + 1}: cannot read the file ({type(e).__name__}: {e})") from None


def read_json(path: PathLike, what: str, remedy: str, fields: Mapping[str, object] | None = None) -> dict:
    """The object in a JSON file petir wrote (a run's summary.json, an ONNX export's onnx_config.json, a model's
    config.json), with ``fields`` (name -> type, see :func:`~petir.errors.check_type`) present and of their types.
    Anything else is one line naming the file, saying it is not a valid ``what``, and ``remedy``: what to do."""
    path = require_file(path, remedy=remedy)
    try:
        record = json.loads(path.read_bytes())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not a valid {what} ({type(e).__name__}: {e}); {remedy}") from None
    if not isinstance(record, dict):
        raise DataError(f"{path}: not a valid {what} (a JSON {type(record).__name__}, not an object); {remedy}")
    require_fields(record, fields or {}, str(path), remedy)
    return record


def require_fields(record: dict, fields: Mapping[str, object], where: str, remedy: str) -> None:
    """One line naming ``where`` and ``remedy`` unless ``record`` has every field of ``fields`` (name -> type)."""
    missing = [name for name in fields if name not in record]
    if missing:
        raise DataError(f"{where} lacks {', '.join(missing)}; {remedy}")
    try:
        for name, kind in fields.items():
            check_type(name, record[name], kind)
    except PetirError as e:
        raise DataError(f"{where}: {e}; {remedy}") from None


def _clip(line: str, width: int = 100) -> str:
    """repr() keeps the message on one line; clipping keeps it readable for long passages."""
    return repr(line if len(line) <= width else line[:width] + "...")


def _is_jsonl(path: Path, first_line: str) -> bool:
    # The suffix decides when it can (so a broken first JSON line is reported as broken JSON); otherwise sniff.
    name = path.name.removesuffix(".gz")
    if name.endswith((".jsonl", ".json")):
        return True
    if name.endswith((".tsv", ".txt")):
        return False
    return first_line.lstrip().startswith("{")


def _decode(path: Path, lineno: int | str, line: str, jsonl: bool, what: str) -> str | dict:
    """One line of a ``what`` file: the line itself (TSV), or its JSON object."""
    if not jsonl:
        return line
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{lineno}: invalid JSON in {what} file ({e.msg}, column {e.colno})") from None
    if not isinstance(record, dict):
        raise DataError(f"{path}:{lineno}: {what} record must be a JSON object, got {_clip(line)}")
    return record


def _records(path: PathLike, what: str) -> Iterator[tuple[int, str | dict]]:
    """Yield ``(line number, JSON object)`` for JSON-lines files or ``(line number, line)`` for TSV files."""
    path = Path(path)
    jsonl: bool | None = None
    for lineno, line in _lines(path):
        if jsonl is None:
            jsonl = _is_jsonl(path, line)
        yield lineno, _decode(path, lineno, line, jsonl, what)
    if jsonl is None:
        raise DataError(f"{path}: empty {what} file")


def _json_id(record: dict, where: str, what: str) -> str:
    key = "_id" if "_id" in record else "id"
    value = record.get(key)
    if isinstance(value, bool) or not isinstance(value, (str, int)) or str(value) == "":
        raise DataError(f"{where}: {what} record needs a non-empty string '_id' or 'id', got keys {sorted(record)}")
    return str(value)


def _json_str(record: dict, key: str, where: str) -> str:
    value = record.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DataError(f"{where}: field {key!r} must be a string, got {type(value).__name__}")
    return value


def read_corpus(path: PathLike) -> Corpus:
    """Read a BEIR ``corpus.jsonl`` ({"_id", "title", "text"}), a Pyserini JsonCollection file ({"id", "contents"},
    title "") or an MS MARCO collection TSV ("pid<TAB>text"), plain or gzipped.

    A directory means the ``corpus.jsonl`` or ``corpus.jsonl.gz`` inside it (BEIR layout).
    """
    path = corpus_path(path)
    corpus: Corpus = {}
    for lineno, record in _records(path, "corpus"):
        where = f"{path}:{lineno}"
        doc = corpus_record(record, where)
        if doc.id in corpus:
            raise DataError(f"{where}: duplicate document id {doc.id!r}")
        corpus[doc.id] = doc
    return corpus


def corpus_path(path: PathLike) -> Path:
    """The corpus file ``path`` names: itself, or for a directory the ``corpus.jsonl[.gz]`` in it (BEIR layout)."""
    path = Path(path)
    if path.is_dir():
        found = [path / n for n in ("corpus.jsonl", "corpus.jsonl.gz") if (path / n).is_file()]
        if not found:
            raise DataError(f"{path}: no corpus.jsonl or corpus.jsonl.gz in this directory")
        return found[0]
    return path


def corpus_record(record: str | dict, where: str) -> Document:
    """One corpus line, as decoded by :func:`_decode`: a BEIR or Pyserini JSON object, or a "pid<TAB>text" line."""
    if isinstance(record, dict):
        doc_id = _json_id(record, where, "corpus")
        if "text" in record:
            return Document(doc_id, _json_str(record, "title", where), _json_str(record, "text", where))
        if "contents" in record:
            return Document(doc_id, "", _json_str(record, "contents", where))
        raise DataError(
            f"{where}: corpus record needs 'text' (BEIR) or 'contents' (Pyserini), got keys {sorted(record)}"
        )
    doc_id, tab, text = record.partition("\t")
    if not tab or not doc_id.strip():
        raise DataError(f"{where}: collection TSV line must be 'pid<TAB>text', got {_clip(record)}")
    return Document(doc_id.strip(), "", text)


def read_queries(path: PathLike) -> Queries:
    """Read BEIR ``queries.jsonl`` ({"_id", "text"}) or a TSV of "qid<TAB>text" (Anserini topics), plain or gzipped.

    Query text is whitespace-normalised to one line, as :func:`write_topics` writes it.
    """
    path = Path(path)
    queries: Queries = {}
    for lineno, record in _records(path, "queries"):
        where = f"{path}:{lineno}"
        qid, text = query_record(record, where)
        if qid in queries:
            raise DataError(f"{where}: duplicate query id {qid!r}")
        queries[qid] = text
    return queries


def query_record(record: str | dict, where: str) -> tuple[str, str]:
    """One queries line, as decoded by :func:`_decode`: ``(qid, whitespace-normalised text)``."""
    if isinstance(record, dict):
        qid = _json_id(record, where, "query")
        text = _json_str(record, "text", where)
    else:
        qid, tab, text = record.partition("\t")
        qid = qid.strip()
        if not tab or not qid:
            raise DataError(f"{where}: topics line must be 'qid<TAB>text', got {_clip(record)}")
    text = normalize_text(text)
    if not text:
        raise DataError(f"{where}: query {qid!r} has empty text")
    return qid, text


def read_qrels(path: PathLike) -> Qrels:
    """Read BEIR qrels TSV ("query-id corpus-id score", header optional), TREC qrels ("qid 0|Q0 docid rel") or
    3-column "qid docid rel", separated by spaces or tabs.

    The TREC iteration column is ignored, as trec_eval does. A repeated (qid, docid) with the same relevance is
    accepted; with a different one it is an error, since which one counts would be arbitrary.
    """
    qrels: Qrels = {}
    first = True
    for lineno, line in _lines(path):
        cols = line.split()
        if first and [c.lower() for c in cols] == _BEIR_QRELS_HEADER:
            first = False
            continue
        first = False
        if len(cols) == 4:
            qid, _, docid, rel_text = cols
        elif len(cols) == 3:
            qid, docid, rel_text = cols
        else:
            raise DataError(
                f"{path}:{lineno}: qrels line must be 'qid 0 docid rel' or 'qid docid rel', got {_clip(line)}"
            )
        try:
            rel = int(rel_text)
        except ValueError:
            raise DataError(f"{path}:{lineno}: relevance must be an integer, got {rel_text!r}") from None
        judged = qrels.setdefault(qid, {})
        if judged.get(docid, rel) != rel:
            raise DataError(
                f"{path}:{lineno}: ({qid!r}, {docid!r}) judged twice with different relevance "
                f"({judged[docid]} and {rel})"
            )
        judged[docid] = rel
    if not qrels:
        raise DataError(f"{path}: no judgments in this qrels file")
    return qrels


def read_run(path: PathLike) -> Run:
    """Read a TREC run ("qid Q0 docid rank score tag"); each query keeps the file's order."""
    run: Run = {}
    seen: set[tuple[str, str]] = set()
    for lineno, line in _lines(path):
        cols = line.split()
        if len(cols) != 6:
            raise DataError(
                f"{path}:{lineno}: run line must be 'qid Q0 docid rank score tag' (6 columns), "
                f"got {len(cols)}: {_clip(line)}"
            )
        qid, _, docid, rank, score_text, _ = cols
        try:
            int(rank)
            score = float(score_text)
        except ValueError:
            raise DataError(
                f"{path}:{lineno}: rank must be an integer and score a number, "
                f"got rank {rank!r} and score {score_text!r}"
            ) from None
        if math.isnan(score):
            raise DataError(f"{path}:{lineno}: score is NaN")
        if (qid, docid) in seen:
            raise DataError(f"{path}:{lineno}: document {docid!r} appears twice for query {qid!r}")
        seen.add((qid, docid))
        run.setdefault(qid, []).append((docid, score))
    if not run:
        raise DataError(f"{path}: empty run file")
    return run


def read_triples(path: PathLike) -> list[tuple[str, str, str]]:
    """Read MS MARCO training triples, "query<TAB>positive<TAB>negative" texts or "qid<TAB>pid<TAB>pid" ids, as given
    (the caller knows which kind it asked for). Training reads big triples files in place instead
    (:class:`petir.ondisk.LineFile`)."""
    triples = [triple_record(line, f"{path}:{lineno}") for lineno, line in _lines(path)]
    if not triples:
        raise DataError(f"{path}: empty triples file")
    return triples


def triple_record(line: str, where: str) -> tuple[str, str, str]:
    """One triples line: three non-empty tab-separated columns."""
    cols = line.split("\t")
    if len(cols) != 3 or not all(c.strip() for c in cols):
        raise DataError(
            f"{where}: triples line must be 3 non-empty tab-separated columns "
            f"(query, positive, negative), got {len(cols)}: {_clip(line)}"
        )
    return cols[0], cols[1], cols[2]


# --- writing ------------------------------------------------------------------------------------------------------


def write_run(run: Run, path: PathLike, tag: str) -> None:
    """Write a TREC run: each query sorted by score (descending, ties keep the given order), ranks from 1.

    Scores are written with full precision so that rounding cannot create ties that reorder results in trec_eval.
    """
    if not tag or len(tag.split()) != 1:
        raise DataError(f"run tag must be one word without spaces, got {tag!r}")

    def lines() -> Iterator[str]:
        for qid, hits in run.items():
            ranked = sorted(hits, key=lambda hit: -hit[1])
            for rank, (docid, score) in enumerate(ranked, 1):
                yield f"{qid} Q0 {docid} {rank} {float(score)!r} {tag}\n"

    write_lines_atomic(path, lines())


def write_pyserini_collection(corpus: Corpus, directory: PathLike) -> Path:
    """Write ``directory/docs.jsonl`` with {"id", "contents": doc.contents} per line, the input of both
    ``python -m pyserini.index.lucene --collection JsonCollection`` and ``python -m pyserini.encode input --corpus``.

    Returns the file's path. Refuses a directory holding other files, since Pyserini reads every file in it.
    """
    directory = Path(directory)
    if directory.is_dir():
        others = sorted(p.name for p in directory.iterdir() if p.name != COLLECTION_FILE)
        if others:
            raise DataError(
                f"{directory}: holds other files ({', '.join(others[:3])}); Pyserini would index them "
                f"too, so write the collection to an empty directory"
            )
    return write_lines_atomic(
        directory / COLLECTION_FILE,
        (json.dumps({"id": doc.id, "contents": doc.contents}) + "\n" for doc in corpus.values()),
    )


def write_topics(queries: Queries, path: PathLike) -> None:
    """Write "qid<TAB>text" topics (Pyserini's TSV topic format), text whitespace-normalised to one line."""

    def lines() -> Iterator[str]:
        for qid, text in queries.items():
            text = normalize_text(text)
            if not text:
                raise DataError(f"query {qid!r} has empty text; it cannot be written to {path}")
            yield f"{qid}\t{text}\n"

    write_lines_atomic(path, lines())


def write_qrels(qrels: Qrels, path: PathLike) -> None:
    """Write TREC qrels, "qid 0 docid rel", for trec_eval."""
    write_lines_atomic(
        path, (f"{qid} 0 {docid} {rel}\n" for qid, judged in qrels.items() for docid, rel in judged.items())
    )


# --- checking ----------------------------------------------------------------------------------------


def _examples(ids: Iterable[str], n: int = 2) -> str:
    return ", ".join(repr(i) for i in sorted(ids)[:n])


def check_qrels(qrels: Qrels, corpus: Corpus | None, queries: Queries | None, source: str) -> None:
    """Raise DataError if a judged docid is not in ``corpus`` or a judged qid has no text in ``queries``.

    Such a mismatch almost always means the wrong corpus or split was given, and would otherwise show up only as
    silently low scores. ``None`` skips that check.
    """
    if corpus is not None:
        missing = {d for judged in qrels.values() for d in judged if d not in corpus}
        if missing:
            raise DataError(
                f"{source}: {len(missing)} judged docids are not in the corpus "
                f"(e.g. {_examples(missing)}); is this the right corpus?"
            )
    if queries is not None:
        missing = {q for q in qrels if q not in queries}
        if missing:
            raise DataError(
                f"{source}: {len(missing)} judged queries have no query text "
                f"(e.g. {_examples(missing)}); are these the right queries?"
            )


def relevant(qrels: Qrels, qid: str) -> set[str]:
    """The docids judged relevant (rel > 0) for ``qid``; empty if the query is not judged."""
    return {docid for docid, rel in qrels.get(qid, {}).items() if rel > 0}


def split_dev(qrels: Qrels, size: int, seed: int) -> tuple[Qrels, Qrels]:
    """Hold out ``size`` queries of the train qrels as a dev split (BEIR SciFact has none): a seeded shuffle of the
    sorted qids picks them, so the split depends only on (qids, size, seed). Returns ``(train, dev)``."""
    if not 0 < size < len(qrels):
        raise DataError(
            f"dev split size must be between 1 and {len(qrels) - 1} (the train qrels have "
            f"{len(qrels)} queries), got {size}"
        )
    qids = sorted(qrels)
    random.Random(seed).shuffle(qids)
    dev_ids = set(qids[:size])
    train = {q: dict(j) for q, j in qrels.items() if q not in dev_ids}
    dev = {q: dict(j) for q, j in qrels.items() if q in dev_ids}
    return train, dev

"""BM25 with Pyserini: build a Lucene index, search it, and mine hard negatives from the run.

Thin wrappers over the stock Pyserini commands, run as subprocesses with a Java >= 21 (:mod:`petir.java`), so the
numbers are exactly those of the documented commands::

    python -m pyserini.index.lucene --collection JsonCollection --input COLLECTION_DIR --index INDEX_DIR \\
        --generator DefaultLuceneDocumentGenerator --threads 2 --storePositions --storeDocvectors --storeRaw
    python -m pyserini.search.lucene --index INDEX_DIR --topics topics.tsv --output run.txt --output-format trec \\
        --bm25 --hits 1000 --threads 2 --batch-size 128 [--remove-query]

(the search flags are those of Pyserini's BEIR ``bm25-flat`` regression, ``pyserini/2cr/beir.yaml``). Both run on
the threads they are given: ``--threads`` of ``petir.train``, ``petir.reproduce`` and ``petir.workspace``, passed
down through :class:`petir.workspace.Workspace`, so a job confined to its share of the cores stays there for its BM25
mining too.
"""

from __future__ import annotations

import os
from pathlib import Path

from petir.data import PathLike, Qrels, Run, relevant, require_file
from petir.errors import DataError, PetirError
from petir.files import staged_directory
from petir.java import run_pyserini


def _is_lucene_index(directory: Path) -> bool:
    # Lucene writes segments_N last when committing, and the index is renamed into place only after a clean exit.
    return directory.is_dir() and any(directory.glob("segments_*"))


def build_lucene_index(collection_dir: PathLike, index_dir: PathLike, threads: int, store_raw: bool = True) -> Path:
    """Index a Pyserini JsonCollection (a directory of {"id", "contents"} JSONL files, see
    :func:`petir.data.write_pyserini_collection`) with Lucene for BM25, on ``threads`` threads (a CLI's
    ``--threads``).

    Positions and document vectors are stored (for RM3 and for reading documents back); ``store_raw`` also keeps
    each JSON record, which ``LuceneSearcher.doc(id).raw()`` returns. The index is built in a temporary sibling
    directory and renamed to ``index_dir`` when complete, so an interrupted build leaves nothing that looks done.
    If ``index_dir`` already holds a Lucene index it is returned as it is (delete it to rebuild).

    Returns:
        ``index_dir`` as a Path.
    """
    collection_dir, index_dir = Path(collection_dir), Path(index_dir)
    if _is_lucene_index(index_dir):
        return index_dir
    if index_dir.exists():
        raise PetirError(f"{index_dir} exists but holds no Lucene index; remove it or choose another --index path")
    if not collection_dir.is_dir() or not any(collection_dir.glob("*.json*")):
        raise DataError(
            f"{collection_dir}: not a directory of .jsonl files; write one with petir.data.write_pyserini_collection"
        )
    with staged_directory(index_dir) as building:
        args = [
            "--collection",
            "JsonCollection",
            "--input",
            collection_dir,
            "--index",
            building,
            "--generator",
            "DefaultLuceneDocumentGenerator",
            "--threads",
            threads,
            "--storePositions",
            "--storeDocvectors",
        ] + (["--storeRaw"] if store_raw else [])
        run_pyserini("pyserini.index.lucene", args, what=f"indexing {collection_dir}")
        # Anserini logs a bad input (e.g. an unreadable file) and still exits 0, so check what it left behind.
        if not _is_lucene_index(building):
            raise PetirError(
                f"indexing {collection_dir} produced no Lucene index; check that its .jsonl files "
                f'hold {{"id", "contents"}} records'
            )
    return index_dir


def _topic_ids(topics_tsv: Path) -> list[str]:
    with open(topics_tsv, encoding="utf-8-sig") as f:
        return [line.split("\t", 1)[0].strip() for line in f if line.strip()]


def bm25_search(
    index_dir: PathLike,
    topics_tsv: PathLike,
    output_run: PathLike,
    threads: int,
    hits: int = 1000,
    batch_size: int = 128,
    remove_query: bool = False,
) -> Path:
    """Search ``index_dir`` with BM25 (Anserini defaults k1=0.9, b=0.4) for each "qid<TAB>text" line of
    ``topics_tsv``, writing a TREC run (``qid Q0 docid rank score Anserini``, ``hits`` per query) to ``output_run``,
    on ``threads`` threads (a CLI's ``--threads``).

    ``remove_query`` drops a hit whose docid equals the qid, as Pyserini's BEIR regressions do (in ArguAna the
    queries are corpus documents); leave it off where qids and docids are unrelated numbers (MS MARCO). The run
    is written to a temporary file and renamed, so ``output_run`` is either complete or absent.

    Returns:
        ``output_run`` as a Path.
    """
    index_dir, topics_tsv, output_run = Path(index_dir), Path(topics_tsv), Path(output_run)
    if not _is_lucene_index(index_dir):
        raise PetirError(f"{index_dir}: not a Lucene index; build one with petir.bm25.build_lucene_index")
    require_file(topics_tsv, "topics file")
    qids = _topic_ids(topics_tsv)
    output_run.parent.mkdir(parents=True, exist_ok=True)
    tmp = output_run.with_name(f".{output_run.name}.{os.getpid()}.tmp")
    try:
        args = [
            "--index",
            index_dir,
            "--topics",
            topics_tsv,
            "--output",
            tmp,
            "--output-format",
            "trec",
            "--bm25",
            "--hits",
            hits,
            "--threads",
            threads,
            # batch mode also for threads=1: Pyserini compares docids with str(qid) only there (--remove-query)
            "--batch-size",
            max(batch_size, 2),
        ] + (["--remove-query"] if remove_query else [])
        run_pyserini("pyserini.search.lucene", args, what=f"BM25 search of {index_dir}")
        _restore_qids(tmp, qids)
        os.replace(tmp, output_run)
    finally:
        tmp.unlink(missing_ok=True)
    return output_run


def _restore_qids(run_file: Path, qids: list[str]) -> None:
    """Pyserini reads all-digit qids as ints, so "007" comes back as "7"; put the topics' own spelling back."""
    renamed = {str(int(q)): q for q in qids if q.isdigit() and str(int(q)) != q}
    if not renamed:
        return
    clashes = sorted(set(renamed) & set(qids))
    if clashes:
        raise DataError(
            f"topics hold both {renamed[clashes[0]]!r} and {clashes[0]!r}, which Pyserini reads as the "
            f"same query; give the queries distinct ids"
        )
    with open(run_file, encoding="utf-8") as f:
        lines = f.readlines()
    with open(run_file, "w", encoding="utf-8") as f:
        for line in lines:
            qid, rest = line.split(" ", 1)
            f.write(f"{renamed.get(qid, qid)} {rest}")


def mine_hard_negatives(run: Run, qrels: Qrels, depth: int) -> dict[str, list[str]]:
    """Hard negatives from a (BM25) run: for each query with a relevant judgment, the docids among its ``depth``
    best-scored hits that are not judged relevant (rel > 0), best first. Judged non-relevant docs (rel 0) count as
    negatives. Queries without a relevant judgment are left out, since they cannot be trained on.

    Returns:
        qid -> list of up to ``depth`` docids.
    """
    if depth < 1:
        raise PetirError(f"hard-negative depth must be at least 1, got {depth}")
    negatives: dict[str, list[str]] = {}
    for qid, hits in run.items():
        positives = relevant(qrels, qid)
        if not positives:
            continue
        ranked = sorted(hits, key=lambda hit: -hit[1])[:depth]  # stable: ties keep the run's order
        negatives[qid] = [docid for docid, _ in ranked if docid not in positives]
    return negatives

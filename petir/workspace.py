"""What petir derives from a corpus once and reuses across runs: the Pyserini collection, its Lucene index and
BM25 runs for topic sets.

Kept under ``$PETIR_CACHE`` (default ``~/.cache/petir``), in a folder per corpus keyed by the corpus file's path,
size and modification time, so a changed corpus never reuses a stale index. Every artifact is written
atomically by the function that builds it, so an interrupted build is redone, not reused half-finished.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from petir.bm25 import bm25_search, build_lucene_index
from petir.data import Corpus, Queries, Run, cache_root, read_run, write_pyserini_collection, write_topics


class Workspace:
    def __init__(self, corpus_path: str | os.PathLike, corpus: Corpus):
        source = Path(corpus_path).resolve()
        stat = source.stat()
        key = hashlib.sha256(f"{source}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:12]
        self.root = cache_root() / f"{source.parent.name}-{source.stem.split('.')[0]}-{key}"
        self.corpus = corpus

    @property
    def collection(self) -> Path:
        """Directory holding ``docs.jsonl`` ({"id", "contents"}): what Pyserini indexes and encodes."""
        directory = self.root / "collection"
        if not (directory / "docs.jsonl").exists():
            write_pyserini_collection(self.corpus, directory)
        return directory

    @property
    def lucene_index(self) -> Path:
        return build_lucene_index(self.collection, self.root / "lucene-index")

    def bm25(self, queries: Queries, hits: int) -> Run:
        """BM25 run (Pyserini defaults k1=0.9, b=0.4) for ``queries``, cached by their ids and texts."""
        digest = hashlib.sha256(repr(sorted(queries.items())).encode()).hexdigest()[:12]
        run_path = self.root / "bm25" / f"{digest}-top{hits}.trec"
        if not run_path.exists():
            topics = self.root / "bm25" / f"{digest}.topics.tsv"
            topics.parent.mkdir(parents=True, exist_ok=True)
            write_topics(queries, topics)
            bm25_search(self.lucene_index, topics, run_path, hits=hits)
        return read_run(run_path)

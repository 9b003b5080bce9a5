"""What petir derives from a corpus once and reuses across runs: the Pyserini collection, its Lucene index and
BM25 runs for topic sets.

Kept under ``$PETIR_CACHE`` (default ``~/.cache/petir``), in a folder per corpus keyed by the corpus file's path,
size and modification time, so a changed corpus never reuses a stale index. Every artifact is written
atomically by the function that builds it, so an interrupted build is redone, not reused half-finished, and under
the folder's lock, so runs started together build it once: the others wait for it and reuse it.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from petir import cli
from petir.bm25 import bm25_search, build_lucene_index
from petir.data import Corpus, Queries, Run, corpus_path, read_run, write_pyserini_collection, write_qrels, write_topics
from petir.datasets import cache_root, load_beir, resolve_beir, writable_cache
from petir.errors import DataError
from petir.files import cache_lock, check_output, write_file_unless_different


class Workspace:
    """A corpus's Pyserini collection, Lucene index and BM25 runs, cached; Pyserini runs on ``threads`` threads (the
    command's ``--threads``)."""

    def __init__(self, corpus_path: str | os.PathLike, corpus: Corpus, threads: int):
        source = Path(corpus_path).resolve()
        stat = source.stat()
        key = hashlib.sha256(f"{source}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:12]
        self.root = writable_cache(cache_root() / f"{source.parent.name}-{source.stem.split('.')[0]}-{key}")
        self.source = source
        self.corpus = corpus
        self.threads = threads

    @property
    def collection(self) -> Path:
        """Directory holding ``docs.jsonl`` ({"id", "contents"}): what Pyserini indexes and encodes."""
        directory = self.root / "collection"
        self._fill(directory / "docs.jsonl", lambda: write_pyserini_collection(self.corpus, directory))
        return directory

    @property
    def lucene_index(self) -> Path:
        index = self.root / "lucene-index"

        def build() -> Path:  # a finished index is returned as it is; anything else there is refused in one line
            return build_lucene_index(self.collection, index, self.threads)

        self._fill(index, build)
        return build()

    def bm25(self, queries: Queries, hits: int) -> Run:
        """BM25 run (Pyserini defaults k1=0.9, b=0.4) for ``queries``, cached by their ids and texts."""
        digest = hashlib.sha256(repr(sorted(queries.items())).encode()).hexdigest()[:12]
        run_path = self.root / "bm25" / f"{digest}-top{hits}.trec"

        def search() -> None:
            topics = self.root / "bm25" / f"{digest}.topics.tsv"
            topics.parent.mkdir(parents=True, exist_ok=True)
            write_topics(queries, topics)
            bm25_search(self.lucene_index, topics, run_path, self.threads, hits=hits)

        if self._fill(run_path, search).stat().st_size == 0:
            raise DataError(
                f"BM25 finds no passage of {self.source} for any of the {len(queries):,} queries (no query word is in "
                "the corpus); give the queries and the corpus of one dataset"
            )
        return read_run(run_path)

    def _fill(self, artifact: Path, build: Callable[[], object]) -> Path:
        """``artifact``, built by ``build`` (which writes it atomically) unless there: under the cache's lock, checked
        again after any wait, so runs started together build it once."""
        if not artifact.exists():
            with cache_lock(self.root):
                if not artifact.exists():
                    build()
        return artifact


@dataclasses.dataclass
class Threads:
    """``petir.workspace``'s thread count, which it passes to Pyserini."""

    threads: int = cli.threads_option("threads Pyserini indexes with")


TOPICS_FILE = "test-topics.tsv"
QRELS_FILE = "test-qrels.txt"


def prepare(
    data: str | os.PathLike, output: str | os.PathLike, threads: int, split: str = "test", overwrite: bool = False
) -> Workspace:
    """Everything a study needs from a BEIR directory before its first run: the split's topics and TREC qrels in
    ``output``, and the Pyserini collection and Lucene index in the workspace (built once, cached, on ``threads``
    threads). Topics or qrels
    already in ``output`` with other content are refused unless ``overwrite``; identical ones are kept."""
    output = check_output(output, directory=True)
    directory = resolve_beir(data)
    dataset = load_beir(directory, split)
    output.mkdir(exist_ok=True)
    write_file_unless_different(output / TOPICS_FILE, lambda path: write_topics(dataset.queries, path), overwrite)
    write_file_unless_different(output / QRELS_FILE, lambda path: write_qrels(dataset.qrels, path), overwrite)
    workspace = Workspace(corpus_path(directory), dataset.corpus, threads)
    workspace.lucene_index  # noqa: B018  (builds the collection and the index)
    return workspace


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(
        prog="python -m petir.workspace",
        description="Prepare a BEIR dataset for Pyserini: test topics and qrels in OUTPUT, the JsonCollection and "
        "Lucene index in petir's cache ($PETIR_CACHE); prints the cache directory",
    )
    parser.add_argument("--data", required=True, help="BEIR dataset directory or name")
    parser.add_argument("--output", required=True, type=Path, help="where test-topics.tsv and test-qrels.txt go")
    parser.add_argument("--split", default="test", help="qrels split to write as topics and qrels")
    cli.add_dataclass_flags(parser, Threads)
    cli.add_overwrite_flag(parser, f"a {TOPICS_FILE} or {QRELS_FILE} in --output that holds other content")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m petir.workspace --data DIR --output OUT``: prints the workspace directory (collection/,
    lucene-index/), so a script can name it: ``CACHE=$(python -m petir.workspace ...)``."""
    args = build_parser().parse_args(argv)
    print(prepare(args.data, args.output, args.threads, args.split, args.overwrite).root)


if __name__ == "__main__":
    cli.run(main)

"""What a Lucene index costs at search time: its size on disk, the query latency of Pyserini's searcher (one thread,
one query at a time, query encoding included) and, for an impact index, the average number of terms a query and a
passage keep (what the FLOPS regulariser trades against effectiveness). The sparse rows of docs/results.md
("Learned sparse retrieval") come from it::

    python benchmarks/sparse_stats.py --index indexes/sparse-iaa-l --encoder runs/sparse-iaa-l/model \\
        --vectors vectors/sparse-iaa-l --topics test-topics.tsv          # a petir (or stock SPLADE) impact index
    python benchmarks/sparse_stats.py --index LUCENE_INDEX --topics test-topics.tsv     # BM25

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from petir.data import read_queries


def directory_bytes(path: Path) -> int:
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file())


def passage_terms(vectors: Path) -> float:
    """Average number of terms with a nonzero impact per passage of a JsonVectorCollection directory."""
    counts = [
        sum(1 for weight in json.loads(line)["vector"].values() if weight)
        for file in sorted(vectors.glob("*.jsonl"))
        for line in file.open()
    ]
    return statistics.fmean(counts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=Path, required=True, help="Lucene index directory")
    parser.add_argument("--topics", type=Path, required=True, help="topics TSV (qid<TAB>text)")
    parser.add_argument("--encoder", help="impact query encoder (a petir sparse model directory); none: BM25")
    parser.add_argument("--vectors", type=Path, help="the JsonVectorCollection the impact index was built from")
    parser.add_argument("--hits", type=int, default=1000, help="hits per query, as the evaluated runs")
    args = parser.parse_args()

    from pyserini.search.lucene import LuceneImpactSearcher, LuceneSearcher

    queries = list(read_queries(args.topics).values())
    searcher = LuceneImpactSearcher(str(args.index), args.encoder) if args.encoder else LuceneSearcher(str(args.index))
    searcher.search(queries[0], k=args.hits)  # warm-up: the JVM's first query compiles the search path
    seconds = []
    for query in queries:
        begin = time.perf_counter()
        searcher.search(query, k=args.hits)
        seconds.append(time.perf_counter() - begin)
    report = {
        "index": str(args.index),
        "index_mb": round(directory_bytes(args.index) / 2**20, 1),
        "queries": len(queries),
        "ms_per_query": round(1000 * statistics.fmean(seconds), 1),
    }
    if args.encoder:
        terms = [sum(1 for weight in searcher.encode(query).values() if weight) for query in queries]
        report["query_terms"] = round(statistics.fmean(terms), 1)
    if args.vectors:
        report["passage_terms"] = round(passage_terms(args.vectors), 1)
    print(json.dumps(report))


if __name__ == "__main__":
    main()

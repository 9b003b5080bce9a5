"""BM25 (petir.bm25): hard negatives, qid spelling, argument errors, the threads a CLI was told, and the published
Pyserini BM25 numbers on SciFact (slow)."""

from __future__ import annotations

import gzip
import os
import shutil
import time
from pathlib import Path

import pytest

from conftest import require_data
from petir import bm25, data
from petir.errors import DataError, PetirError
from petir.evaluate import evaluate_files, evaluate_run, trec_eval

# --- hard negatives, qid spelling, argument errors (no Java) ----------------------------------------------------------


def test_mine_hard_negatives_skips_relevant_and_unjudged():
    run = {
        "q1": [("d1", 9.0), ("d2", 8.0), ("d3", 7.0), ("d4", 6.0)],
        "q2": [("d5", 1.0), ("d6", 2.0)],
        "q3": [("d1", 1.0)],
    }
    qrels = {"q1": {"d2": 1, "d3": 0}, "q2": {"d9": 2}, "q3": {"d1": 0}}
    assert bm25.mine_hard_negatives(run, qrels, depth=3) == {"q1": ["d1", "d3"], "q2": ["d6", "d5"]}
    with pytest.raises(PetirError, match="at least 1"):
        bm25.mine_hard_negatives(run, qrels, depth=0)


def test_restore_qids_puts_leading_zeros_back(tmp_path):
    run_file = tmp_path / "run.txt"
    run_file.write_text("7 Q0 d1 1 2.0 Anserini\n12 Q0 d2 1 1.0 Anserini\nq-x Q0 d1 1 1.0 Anserini\n")
    bm25._restore_qids(run_file, ["007", "12", "q-x"])
    assert run_file.read_text().splitlines()[0] == "007 Q0 d1 1 2.0 Anserini"
    assert run_file.read_text().splitlines()[1:] == ["12 Q0 d2 1 1.0 Anserini", "q-x Q0 d1 1 1.0 Anserini"]
    with pytest.raises(DataError, match="same query"):
        bm25._restore_qids(run_file, ["007", "7"])


def test_index_and_search_refuse_bad_paths(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="not a directory of .jsonl files"):
        bm25.build_lucene_index(tmp_path / "empty", tmp_path / "index", threads=1)
    (tmp_path / "not-an-index").mkdir()
    (tmp_path / "coll").mkdir()
    (tmp_path / "coll" / "docs.jsonl").write_text('{"id": "d", "contents": "x"}\n')
    with pytest.raises(PetirError, match="holds no Lucene index"):
        bm25.build_lucene_index(tmp_path / "coll", tmp_path / "not-an-index", threads=1)
    with pytest.raises(PetirError, match="not a Lucene index"):
        bm25.bm25_search(tmp_path / "not-an-index", tmp_path / "topics.tsv", tmp_path / "run.txt", threads=1)
    (tmp_path / "index").mkdir()
    (tmp_path / "index" / "segments_1").touch()
    with pytest.raises(DataError, match=r"topics\.tsv: no such topics file$"):
        bm25.bm25_search(tmp_path / "index", tmp_path / "topics.tsv", tmp_path / "run.txt", threads=1)
    with pytest.raises(DataError, match="coll: a directory, not a topics file$"):
        bm25.bm25_search(tmp_path / "index", tmp_path / "coll", tmp_path / "run.txt", threads=1)


def pyserini_writing(run_text: str, threads: list[int]):
    """A stand-in for Java's Pyserini: leaves what the real commands would (an index, a run holding ``run_text``) and
    notes each command's ``--threads`` in ``threads``."""

    def pyserini(module, args, what):
        args = [str(arg) for arg in args]
        threads.append(int(args[args.index("--threads") + 1]))
        if module == "pyserini.index.lucene":
            (Path(args[args.index("--index") + 1]) / "segments_1").touch()
        else:
            Path(args[args.index("--output") + 1]).write_text(run_text)

    return pyserini


def test_index_and_search_run_on_the_threads_a_cli_was_told(tmp_path, monkeypatch):
    """``--threads`` of petir.train, petir.reproduce and petir.workspace reaches the Pyserini commands petir runs,
    passed down through the workspace (not read back from $OMP_NUM_THREADS, which says otherwise here)."""
    from petir.workspace import Workspace

    threads = []
    monkeypatch.setattr(bm25, "run_pyserini", pyserini_writing("q1 Q0 d 1 1.0 Anserini\n", threads))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("PETIR_CACHE", str(tmp_path / "cache"))
    asked = (os.cpu_count() or 1) + 1  # not every core: what was asked
    (tmp_path / "corpus.jsonl").write_text('{"_id": "d", "text": "x"}\n')
    workspace = Workspace(tmp_path / "corpus.jsonl", {"d": data.Document("d", "", "x")}, threads=asked)
    assert workspace.bm25({"q1": "x"}, hits=10) == {"q1": [("d", 1.0)]}
    (tmp_path / "topics.tsv").write_text("q1\tx\n")
    bm25.bm25_search(workspace.lucene_index, tmp_path / "topics.tsv", tmp_path / "run.txt", threads=2)
    assert threads == [asked, asked, 2]


def test_bm25_finding_nothing_for_every_query_says_the_queries_and_corpus_do_not_match(tmp_path, monkeypatch):
    """Pyserini writes an empty run when no query word is in the corpus: one line naming the corpus, not 'empty run
    file' about a file in petir's cache."""

    from petir.workspace import Workspace

    monkeypatch.setattr(bm25, "run_pyserini", pyserini_writing("", []))
    monkeypatch.setenv("PETIR_CACHE", str(tmp_path / "cache"))
    (tmp_path / "corpus.jsonl").write_text('{"_id": "d", "text": "x"}\n')
    workspace = Workspace(tmp_path / "corpus.jsonl", {"d": data.Document("d", "", "x")}, threads=1)
    with pytest.raises(DataError, match=r"BM25 finds no passage of .*corpus.jsonl for any of the 1 queries"):
        workspace.bm25({"q1": "y"}, hits=10)


# --- the published BM25 numbers on SciFact ----------------------------------------------------------------------------

# Pyserini 2CR, BEIR "bm25-flat" on scifact (pyserini/2cr/beir.yaml): nDCG@10 0.6789, R@100 0.9253, R@1000 0.9767.
SCIFACT_BM25 = {"ndcg@10": 0.6789, "recall@100": 0.9253, "recall@1000": 0.9767}


@pytest.mark.slow
def test_bm25_scifact_reproduces_pyserini(shared_data, tmp_path, restore_java_env):
    scifact = shared_data / "scifact"
    topics_gz = scifact / "anserini" / "topics.beir-v1.0.0-scifact.test.tsv.gz"
    qrels_path = scifact / "anserini" / "qrels.beir-v1.0.0-scifact.test.txt"
    require_data(topics_gz, qrels_path, scifact / "corpus.jsonl.gz")
    data.write_pyserini_collection(data.read_corpus(scifact), tmp_path / "collection")
    topics = tmp_path / "topics.scifact.test.tsv"
    with gzip.open(topics_gz, "rb") as src, open(topics, "wb") as dst:
        shutil.copyfileobj(src, dst)

    start = time.perf_counter()
    index = bm25.build_lucene_index(tmp_path / "collection", tmp_path / "index", threads=1)
    built = time.perf_counter()
    assert bm25.build_lucene_index(tmp_path / "collection", index, threads=1) == index  # complete index: kept as is
    checked = time.perf_counter()
    run_path = bm25.bm25_search(index, topics, tmp_path / "run.bm25.txt", threads=1, hits=1000, remove_query=True)
    searched = time.perf_counter()
    reference = trec_eval(qrels_path, run_path)
    evaluated = time.perf_counter()
    print(
        f"\nSciFact BM25: index build {built - start:.1f}s, reuse check {checked - built:.3f}s, "
        f"search (300 queries x 1000 hits) {searched - checked:.1f}s, trec_eval {evaluated - searched:.1f}s; "
        f"{reference}"
    )

    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary leftovers
    for metric, published in SCIFACT_BM25.items():
        assert reference[metric] == pytest.approx(published, abs=5e-4), metric
    qrels = data.read_qrels(qrels_path)
    run = data.read_run(run_path)
    assert len(run) == 300
    assert evaluate_run(qrels, run) == pytest.approx(reference, abs=1e-4)
    start = time.perf_counter()
    assert evaluate_files(qrels_path, run_path) == reference  # petir.evaluate's numbers: trec_eval's, to the digit
    print(f"evaluate_files (in process) {time.perf_counter() - start:.1f}s")
    # Every kind of measure trec_eval has: cut-offs, set measures, sums (num_*), a geometric mean (gm_map).
    measures = (
        *("map", "P.5,10", "Rprec", "bpref", "recip_rank", "gm_map", "success.1", "set_F", "ndcg", "map_cut.100"),
        *("infAP", "set_recall", "num_q", "num_ret", "num_rel", "num_rel_ret"),
    )
    assert evaluate_files(qrels_path, run_path, measures) == trec_eval(qrels_path, run_path, measures)

    negatives = bm25.mine_hard_negatives(run, qrels, depth=20)
    assert len(negatives) == 300
    assert all(not set(docs) & data.relevant(qrels, qid) for qid, docs in negatives.items())
    assert sum(len(docs) for docs in negatives.values()) > 300 * 18  # SciFact: about 1.1 relevant docs per query

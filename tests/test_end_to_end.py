"""End to end on real data: train an IAA-L retriever on the default backbone, index and search it with the
stock Pyserini CLIs, re-rank with an IAA-L cross-encoder, evaluate with Pyserini's trec_eval.

A SciFact subset (the test queries' judged abstracts plus 400 others) keeps it to a few minutes on 2 CPU cores.
Cross-cutting (train, Pyserini, rerank, evaluate in one run), so it has no module of its own; marked slow.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import data_root, flags, require_data, run_cli
from petir.data import write_pyserini_collection, write_qrels, write_topics
from petir.datasets import load_beir
from petir.evaluate import trec_eval
from petir.rerank import main as rerank_main
from petir.train import main as train_main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def subset(tmp_path_factory) -> Path:
    """A BEIR directory: 40 SciFact test queries, their abstracts, 400 more abstracts, and train qrels."""
    root = data_root()
    require_data(root / "scifact")
    scifact = load_beir(root / "scifact", "test")
    qids = sorted(scifact.qrels)[:40]
    judged = {docid for qid in qids for docid in scifact.qrels[qid]}
    others = [docid for docid in scifact.corpus if docid not in judged][:400]
    corpus = {docid: scifact.corpus[docid] for docid in [*judged, *others]}
    out = tmp_path_factory.mktemp("scifact-subset")
    (out / "qrels").mkdir()
    lines = [json.dumps({"_id": d.id, "title": d.title, "text": d.text}) for d in corpus.values()]
    (out / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    queries = [json.dumps({"_id": q, "text": scifact.queries[q]}) for q in qids]
    (out / "queries.jsonl").write_text("\n".join(queries) + "\n")
    # train on the first 30 queries' judgments, test on the last 10: a smoke test, not a benchmark
    for split, chosen in (("train", qids[:30]), ("test", qids[30:])):
        rows = [f"{q}\t{d}\t{r}" for q in chosen for d, r in scifact.qrels[q].items()]
        (out / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(rows) + "\n")
    test = load_beir(out, "test")
    write_topics(test.queries, out / "topics.tsv")
    write_qrels(test.qrels, out / "qrels.txt")
    write_pyserini_collection(corpus, out / "collection")
    return out


def stock(module: str, *args: object) -> None:
    result = subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]


def test_train_index_search_rerank_evaluate(subset, tmp_path, monkeypatch):
    monkeypatch.setenv("PETIR_CACHE", str(tmp_path / "cache"))
    common = flags(data=subset, steps=4, batch_size=4, dev_queries=5, dev_depth=5, eval_every=2, device="cpu")
    retriever = tmp_path / "retriever"
    assert run_cli(train_main, [*common, *flags(method="iaa-l", passage_max_length=128, output=retriever)]) is None
    stock(
        *("pyserini.encode", "input", "--corpus", subset / "collection"),
        *("output", "--embeddings", tmp_path / "index", "--to-faiss"),
        *("encoder", "--encoder", retriever / "model", "--dimension", 384, "--device", "cpu", "--batch-size", 32),
    )
    stock(
        *("pyserini.search.faiss", "--index", tmp_path / "index", "--topics", subset / "topics.tsv"),
        *("--encoder", retriever / "model", "--output", tmp_path / "dense.trec", "--hits", 100, "--device", "cpu"),
    )
    dense = trec_eval(subset / "qrels.txt", tmp_path / "dense.trec")
    # all-MiniLM-L6-v2 finds most of these abstracts among 440; four PET steps must not have broken it
    assert dense["ndcg@10"] > 0.6 and dense["recall@100"] > 0.9, dense

    reranker = tmp_path / "reranker"
    rerank_flags = flags(method="iaa-l", task="rerank", max_length=128, negatives=3, output=reranker)
    assert run_cli(train_main, [*common, *rerank_flags]) is None
    argv = flags(run=tmp_path / "dense.trec", topics=subset / "topics.tsv", corpus=subset / "collection" / "docs.jsonl")
    argv += flags(model=reranker / "model", output=tmp_path / "reranked.trec", depth=20)
    assert run_cli(rerank_main, argv) is None
    reranked = trec_eval(subset / "qrels.txt", tmp_path / "reranked.trec")
    # four steps teach the fresh score head little; the contract (same passages, all metrics defined) must hold
    assert reranked["recall@100"] == pytest.approx(dense["recall@100"]) and 0 <= reranked["ndcg@10"] <= 1

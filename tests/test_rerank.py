"""The re-ranker's contract: every input pair exactly once, re-scored head, original tail, one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import flags, run_cli
from petir.data import Document, read_run, write_pyserini_collection, write_run, write_topics
from petir.errors import DataError
from petir.rerank import main, rerank
from petir.tasks.rerank import CrossEncoder

QUERIES = {"q1": "the cat sat", "q2": "cancer risk", "q3": "gene protein"}
TEXTS = ["the cat sat on the mat", "a dog", "cancer risk increase", "protein gene cell", "a mat", "risk study"]
CORPUS = {f"d{i}": Document(f"d{i}", "", text) for i, text in enumerate(TEXTS)}
RUN = {qid: [(f"d{(i + k) % 6}", 10.0 - k) for k in range(5)] for i, qid in enumerate(QUERIES)}


def length_scorer(calls: list | None = None):
    def score(queries: list[str], passages: list[str]) -> list[float]:
        if calls is not None:
            calls.append(len(passages))
        return [float(len(p)) for p in passages]

    return score


def test_head_is_rescored_tail_keeps_order_and_every_pair_appears_once(tmp_path):
    out = rerank(RUN, QUERIES, lambda d: CORPUS[d].contents, length_scorer(), depth=3, partial=tmp_path / "p.jsonl")
    for qid, hits in RUN.items():
        docids = [d for d, _ in out[qid]]
        assert sorted(docids) == sorted(d for d, _ in hits)
        head, tail = out[qid][:3], out[qid][3:]
        assert [d for d, _ in head] == sorted((d for d, _ in hits[:3]), key=lambda d: -len(CORPUS[d].contents))
        assert [d for d, _ in tail] == [d for d, _ in hits[3:]]
        scores = [s for _, s in out[qid]]
        assert scores == sorted(scores, reverse=True) and len(set(scores)) == len(scores)


def test_depth_beyond_the_run_rescores_everything(tmp_path):
    out = rerank(RUN, QUERIES, lambda d: CORPUS[d].contents, length_scorer(), depth=100, partial=tmp_path / "p")
    assert all(len(out[q]) == 5 for q in QUERIES)


def test_an_interrupted_reranking_continues_where_it_stopped(tmp_path):
    partial = tmp_path / "out.partial.jsonl"
    calls: list[int] = []

    def flaky(queries, passages):
        if len(calls) == 2:
            raise KeyboardInterrupt
        return length_scorer(calls)(queries, passages)

    with pytest.raises(KeyboardInterrupt):
        rerank(RUN, QUERIES, lambda d: CORPUS[d].contents, flaky, depth=3, partial=partial)
    resumed_calls: list[int] = []
    out = rerank(RUN, QUERIES, lambda d: CORPUS[d].contents, length_scorer(resumed_calls), depth=3, partial=partial)
    assert resumed_calls == [3]  # only the third query is scored again
    assert out == rerank(RUN, QUERIES, lambda d: CORPUS[d].contents, length_scorer(), 3, tmp_path / "fresh")


def test_missing_docids_and_queries_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="docid 'd0' .* is not in the index or corpus"):
        rerank(RUN, QUERIES, lambda d: None, length_scorer(), depth=3, partial=tmp_path / "a")
    with pytest.raises(DataError, match="1 queries of the run are not in the topics .*'q3'"):
        rerank(RUN, {"q1": "x", "q2": "y"}, lambda d: CORPUS[d].contents, length_scorer(), 3, tmp_path / "b")


@pytest.fixture(scope="module")
def files(tiny_backbone, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("rerank")
    torch.manual_seed(0)
    model = CrossEncoder(str(tiny_backbone), "iaa", max_length=64)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.2)
    model.save(root / "reranker")
    write_pyserini_collection(CORPUS, root / "collection")
    write_topics(QUERIES, root / "topics.tsv")
    write_run(RUN, root / "bm25.trec", "bm25")
    return {
        "model": root / "reranker",
        "corpus": root / "collection" / "docs.jsonl",
        "topics": root / "topics.tsv",
        "run": root / "bm25.trec",
        "root": root,
    }


def test_cli_writes_a_valid_run_with_every_pair_and_the_tag(files, tmp_path):
    out = tmp_path / "reranked.trec"
    common = flags(run=files["run"], topics=files["topics"], model=files["model"], depth=3)
    argv = [*common, *flags(corpus=files["corpus"], output=out, tag="petir-test")]
    assert run_cli(main, argv) is None
    reranked, original = read_run(out), read_run(files["run"])
    assert {q: sorted(d for d, _ in h) for q, h in reranked.items()} == {
        q: sorted(d for d, _ in h) for q, h in original.items()
    }
    lines = out.read_text().splitlines()
    assert all(line.split()[5] == "petir-test" and line.split()[1] == "Q0" for line in lines)
    ranks = [int(line.split()[3]) for line in lines if line.startswith("q1 ")]
    assert ranks == [1, 2, 3, 4, 5]
    model = CrossEncoder.load(files["model"])
    head = [d for d, _ in original["q1"][:3]]
    expected = model.score([QUERIES["q1"]] * 3, [CORPUS[d].contents for d in head])
    assert [d for d, _ in reranked["q1"][:3]] == [head[i] for i in (-expected).argsort()]
    assert not list(tmp_path.glob("*.partial*"))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda f: f["run"].write_text("q1 Q0 d0 1\n"), r"bm25.trec:1: .*"),
        (lambda f: f["run"].write_text("q1 Q0 d0 1 2.0 x\nq1 Q0 d0 2 1.0 x\n"), r"bm25.trec:2: .*d0"),
        (lambda f: f["run"].write_text("q9 Q0 d0 1 2.0 x\n"), r"not in the topics .*'q9'"),
        (lambda f: f["run"].write_text("q1 Q0 d77 1 2.0 x\n"), r"docid 'd77' .* not in the index or corpus"),
    ],
    ids=["malformed-line", "duplicate-entry", "unknown-query", "unknown-docid"],
)
def test_bad_inputs_end_with_one_line_errors(files, tmp_path, mutate, message):
    bad = {**files, "run": tmp_path / "bm25.trec"}
    mutate(bad)
    argv = flags(run=bad["run"], topics=files["topics"], corpus=files["corpus"], model=files["model"])
    error = run_cli(main, [*argv, *flags(output=tmp_path / "out.trec")])
    assert error is not None and "\n" not in error and ": error: " in error
    assert __import__("re").search(message, error), error
    assert not list(tmp_path.glob("out.trec*"))  # stopped before the first score: no partial scores, no key


@pytest.mark.slow  # builds a Lucene index (Java): about 11 s
def test_cli_reads_passages_from_a_lucene_index(files, tmp_path):
    from petir.bm25 import build_lucene_index

    index = build_lucene_index(files["root"] / "collection", tmp_path / "lucene", threads=1)
    out = tmp_path / "from-index.trec"
    common = flags(run=files["run"], topics=files["topics"], model=files["model"], depth=3)
    argv = [*common, *flags(index=index, output=out)]
    result = subprocess.run([sys.executable, "-m", "petir.rerank", *argv], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    via_corpus = tmp_path / "from-corpus.trec"
    assert run_cli(main, [*common, *flags(corpus=files["corpus"], output=via_corpus)]) is None
    assert read_run(out) == read_run(via_corpus)


def test_a_bi_encoder_or_a_plain_backbone_reranks_by_its_retrieval_score(files, tiny_backbone, tmp_path):
    """The baselines a trained re-ranker must beat: the backbone's own cosine, and a trained retriever's score."""
    from petir.tasks.retrieval import BiEncoder

    retriever = BiEncoder(str(tiny_backbone), "adapter").save(tmp_path / "retriever")
    for model_dir in (tiny_backbone, retriever):
        out = tmp_path / f"{Path(model_dir).name}.trec"
        argv = flags(run=files["run"], topics=files["topics"], model=model_dir, corpus=files["corpus"], depth=5)
        assert run_cli(main, [*argv, *flags(output=out)]) is None
        model = BiEncoder.load(retriever) if model_dir == retriever else BiEncoder(str(tiny_backbone), "full")
        docids = [d for d, _ in read_run(files["run"])["q2"]]
        passages = model.encode([CORPUS[d].contents for d in docids])
        cosine = passages @ model.encode([QUERIES["q2"]], "query")[0]
        assert [d for d, _ in read_run(out)["q2"]] == [docids[i] for i in (-cosine).argsort()]

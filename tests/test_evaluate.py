"""Evaluation (petir.evaluate): metrics on cases small enough to compute by hand, and parity with the real
trec_eval (slow: Java subprocesses)."""

from __future__ import annotations

import math

import pytest

from conftest import run_cli
from petir import data
from petir.errors import PetirError
from petir.evaluate import evaluate_files, evaluate_run, main, trec_eval

# --- evaluate_run on cases small enough to compute by hand -----------------------------------------------------------


def test_ndcg_uses_graded_gains_and_ideal_from_qrels():
    qrels = {"q": {"a": 2, "b": 1, "c": 0, "d": 1}}
    run = {"q": [("c", 3.0), ("a", 2.0), ("b", 1.0), ("x", 0.5)]}  # d (rel 1) is not retrieved
    dcg = 0 + 2 / math.log2(3) + 1 / math.log2(4) + 0
    ideal = 2 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)
    scores = evaluate_run(qrels, run, k_ndcg=10, k_recall=(2, 100))
    assert scores["ndcg@10"] == pytest.approx(dcg / ideal)
    assert scores["mrr@10"] == pytest.approx(1 / 2)
    assert scores["recall@2"] == pytest.approx(1 / 3)  # a of {a, b, d}
    assert scores["recall@100"] == pytest.approx(2 / 3)


def test_ndcg_cutoff_counts_only_top_k():
    qrels = {"q": {"a": 1, "b": 1}}
    run = {"q": [("x", 3.0), ("a", 2.0), ("b", 1.0)]}
    assert evaluate_run(qrels, run, k_ndcg=2)["ndcg@2"] == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))


def test_mrr_is_cut_at_10():
    qrels = {"q10": {"rel": 1}, "q11": {"rel": 1}}
    ranked = [(f"n{i:02d}", 100.0 - i) for i in range(9)]  # nine non-relevant docs first
    run = {"q10": ranked + [("rel", 50.0)], "q11": ranked + [("n99", 60.0), ("rel", 50.0)]}
    scores = evaluate_run(qrels, run)
    assert scores["mrr@10"] == pytest.approx((1 / 10 + 0) / 2)
    assert scores["recall@100"] == pytest.approx(1.0)


def test_ranking_by_score_then_docid_descending_like_trec_eval():
    # File order and ties must not matter: trec_eval sorts by score, then docid, both descending.
    qrels = {"q": {"b": 1}}
    assert evaluate_run(qrels, {"q": [("b", 1.0), ("c", 1.0)]})["mrr@10"] == pytest.approx(1 / 2)
    assert evaluate_run(qrels, {"q": [("a", 1.0), ("b", 1.0)]})["mrr@10"] == pytest.approx(1.0)
    assert evaluate_run(qrels, {"q": [("c", 0.1), ("b", 0.9)]})["mrr@10"] == pytest.approx(1.0)


def test_which_queries_are_averaged():
    qrels = {"hit": {"a": 1}, "missing_from_run": {"b": 1}, "only_nonrelevant": {"c": 0}}
    run = {"hit": [("a", 1.0)], "only_nonrelevant": [("c", 1.0)], "unjudged": [("a", 1.0)]}
    # trec_eval -c: every qrels query counts (missing or without relevant docs: 0); unjudged run queries don't.
    assert evaluate_run(qrels, run) == pytest.approx(
        {"ndcg@10": 1 / 3, "mrr@10": 1 / 3, "recall@100": 1 / 3, "recall@1000": 1 / 3}
    )


def test_empty_qrels_is_an_error():
    with pytest.raises(PetirError, match="empty qrels"):
        evaluate_run({}, {"q": [("a", 1.0)]})


# --- evaluate_files: trec_eval's measures in process -----------------------------------------------------------------

#: Graded qrels, a judged query without relevant docs, a judged query missing from the run, an unjudged run query,
#: ties, and a file order that disagrees with the scores.
EDGE_QRELS = {"q1": {"d1": 2, "d2": 1, "d3": 0}, "q2": {"d4": 0}, "q3": {"d5": 1}, "q5": {f"r{i}": 1 for i in range(3)}}
EDGE_RUN = {
    "q1": [("d1", 0.5), ("d3", 1.0), ("d2", 1.0)],
    "q2": [("d4", 1.0)],
    "q4": [("d1", 1.0)],
    "q5": [(f"z{i:02d}", 1.0) for i in range(12)] + [("r0", 1.0), ("r1", 0.1), ("r2", 0.05)],
}


@pytest.fixture
def edge_files(tmp_path):
    """EDGE_QRELS and EDGE_RUN as files: (qrels path, run path)."""
    data.write_qrels(EDGE_QRELS, tmp_path / "qrels.txt")
    with open(tmp_path / "run.txt", "w") as f:  # written by hand: write_run would sort the file by score
        for qid, hits in EDGE_RUN.items():
            for rank, (docid, score) in enumerate(hits, 1):
                f.write(f"{qid} Q0 {docid} {rank} {score} test\n")
    return tmp_path / "qrels.txt", tmp_path / "run.txt"


def test_evaluate_files_follows_trec_eval_c_like_the_python_twin(edge_files):
    ours = evaluate_files(*edge_files, metrics=("ndcg_cut.10", "recip_rank", "recall.2,14"))
    twin = evaluate_run(EDGE_QRELS, EDGE_RUN, k_recall=(2, 14))
    assert ours == pytest.approx(twin, abs=5e-5)  # rounded to trec_eval's 4 decimals
    assert ours["mrr@10"] == 0.125  # q5's r0 ties with the z's but sorts after them, at rank 13: cut by -M 10


def test_evaluate_files_takes_trec_eval_measure_names(edge_files):
    # 4 judged queries (-c); relevant: q1 {d1, d2}, q3 {d5}, q5 {r0, r1, r2}. q1 ranks d3 (tie, docid descending),
    # d2, d1: precision@5 2/5, AP (1/2 + 2/3) / 2; q5 finds its three at ranks 13-15: AP (1/13 + 2/14 + 3/15) / 3.
    scores = evaluate_files(*edge_files, metrics=("P.5", "map", "num_q", "num_rel_ret"))
    assert scores["p@5"] == pytest.approx(2 / 5 / 4, abs=5e-5)
    assert scores["map"] == pytest.approx(((1 / 2 + 2 / 3) / 2 + (1 / 13 + 2 / 14 + 3 / 15) / 3) / 4, abs=5e-5)
    assert scores["num_q"] == 4 and scores["num_rel_ret"] == 5


@pytest.mark.parametrize("measure", ["ndcg@10", "nonsense", "runid"])
def test_an_unknown_measure_is_a_one_line_error(edge_files, measure):
    error = run_cli(main, [*map(str, edge_files), "--metrics", "ndcg_cut.10", measure])
    assert error is not None and f"unknown trec_eval measure {measure!r}" in error and "\n" not in error


# --- against the real trec_eval (Java, subprocesses) -----------------------------------------------------------------


@pytest.mark.slow
def test_evaluate_run_and_files_agree_with_trec_eval_on_edge_cases(edge_files, restore_java_env):
    metrics = ("ndcg_cut.10", "recip_rank", "recall.2", "recall.14")
    reference = trec_eval(*edge_files, metrics=metrics)
    ours = evaluate_run(EDGE_QRELS, data.read_run(edge_files[1]), k_recall=(2, 14))
    assert ours == pytest.approx(reference, abs=1e-4)
    assert evaluate_files(*edge_files, metrics=metrics) == reference
    # q1: d3 before d2 (tie, docid descending); q5: r0 ties with the z's but sorts after them, at rank 13.
    assert reference["mrr@10"] == pytest.approx(1 / 2 / 4, abs=1e-4)


def test_a_nan_score_in_the_run_is_refused_before_trec_eval_ranks_it(tmp_path, monkeypatch):
    """petir.rerank's reader is petir.evaluate's too: a NaN score is one line naming the line, and trec_eval (here:
    a stand-in that would accept it) never runs."""
    import petir.evaluate

    data.write_qrels({"q1": {"d1": 1}}, tmp_path / "qrels.txt")
    (tmp_path / "run.txt").write_text("q1 Q0 d1 1 1.0 x\nq1 Q0 d2 2 nan x\n")
    monkeypatch.setattr(petir.evaluate, "_trec_eval", lambda *args: pytest.fail("trec_eval ran on a NaN score"))
    with pytest.raises(PetirError, match=r"run.txt:2: score is NaN"):
        trec_eval(tmp_path / "qrels.txt", tmp_path / "run.txt")

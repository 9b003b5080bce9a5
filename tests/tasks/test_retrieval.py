"""The retrieval task (petir/tasks/retrieval.py): what its dev evaluation searches."""

from __future__ import annotations

from petir.data import Document
from petir.tasks.retrieval import dev_corpus


def test_retrieval_dev_searches_the_corpus_or_a_sample_that_keeps_every_judged_passage():
    corpus = {f"d{i}": Document(f"d{i}", "", "text") for i in range(20)}
    first_stage = {"q1": ["d3", "d4"], "q2": ["d5"]}
    dev_qrels = {"q1": {"d17": 1}, "q2": {"d18": 1, "d19": 0}}
    assert dev_corpus(corpus, first_stage, dev_qrels, size=50) == list(corpus)  # small corpus: searched whole
    sample = dev_corpus(corpus, first_stage, dev_qrels, size=8)
    assert len(sample) == 8 == len(set(sample))
    assert {"d3", "d4", "d5", "d17", "d18", "d19"} <= set(sample)
    assert sample == dev_corpus(corpus, first_stage, dev_qrels, size=8)  # seeded

"""The retrieval task (petir/tasks/retrieval.py): what its dev evaluation searches."""

from __future__ import annotations

import re

from conftest import TINY_PASSAGES
from petir import tasks
from petir.card import model_card
from petir.data import Document
from petir.sampling import Group
from petir.tasks.retrieval import BiEncoder, dev_corpus


def test_retrieval_dev_searches_the_corpus_or_a_sample_that_keeps_every_judged_passage():
    corpus = {f"d{i}": Document(f"d{i}", "", "text") for i in range(20)}
    first_stage = {"q1": ["d3", "d4"], "q2": ["d5"]}
    dev_qrels = {"q1": {"d17": 1}, "q2": {"d18": 1, "d19": 0}}
    assert dev_corpus(corpus, first_stage, dev_qrels, size=50) == list(corpus)  # small corpus: searched whole
    sample = dev_corpus(corpus, first_stage, dev_qrels, size=8)
    assert len(sample) == 8 == len(set(sample))
    assert {"d3", "d4", "d5", "d17", "d18", "d19"} <= set(sample)
    assert sample == dev_corpus(corpus, first_stage, dev_qrels, size=8)  # seeded


# The dev signal measures the model that is tested: dev checks encode passages at the saved length, the one the
# card's ``pyserini.encode --max-length`` and the study's test encode use, whatever length training used.
def test_dev_checks_encode_at_the_cards_length_not_the_training_length(tiny_backbone, tmp_path):
    model = BiEncoder(
        str(tiny_backbone), "bitfit", {}, query_max_length=16, passage_max_length=64, train_passage_length=8
    )
    lengths = []
    embed = model._embed_batch
    model._embed_batch = lambda texts, max_length: lengths.append(max_length) or embed(texts, max_length)
    corpus = {f"d{i}": Document(f"d{i}", "", text) for i, text in enumerate(TINY_PASSAGES)}
    model.rank({"q1": "the cat"}, {"q1": list(corpus)}, corpus)  # what a dev check runs
    card = re.search(r"pyserini\.encode .*?--max-length (\d+)", model_card(model), re.S)
    assert set(lengths) - {model.query_max_length} == {64} == {int(card.group(1))}
    batch = model.collate([Group("the cat", [" ".join(["cat"] * 50)])])
    assert batch["passages"]["input_ids"].shape[1] == 8  # training still truncates at its own, shorter length
    loaded = tasks.load(model.save(tmp_path / "model"))
    assert (loaded.passage_max_length, loaded.train_passage_length) == (64, 8)

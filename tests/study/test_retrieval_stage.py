"""The study's retrieval stage (petir/study/retrieval.py)."""

from __future__ import annotations

from petir.study.retrieval import RetrievalStage, RetrievalStudyOptions
from petir.tasks.retrieval import TEST_PASSAGE_LENGTH


def test_the_study_saves_its_retrievers_at_the_test_encode_length():
    options = RetrievalStudyOptions()
    flags = RetrievalStage().train_flags(options)
    assert flags["passage_max_length"] == TEST_PASSAGE_LENGTH != flags["train_passage_length"] == 128

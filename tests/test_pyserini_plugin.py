"""The Pyserini plug-in's loaders (integrations/pyserini/petir_pyserini/_hf.py), in process: what each encoder asks
of a directory's task before it loads the weights. The stock Pyserini commands are in test_pyserini_integration.py."""

from __future__ import annotations

import pytest

from petir.errors import PetirError
from petir.tasks.rerank import CrossEncoder
from petir.tasks.retrieval import BiEncoder
from petir.tasks.sparse import SparseEncoder


def test_the_passage_encoder_asks_the_task_what_it_serves(tiny_backbone, tmp_path):
    from petir_pyserini._hf import load_passage_encoder, serves_impact

    retriever = BiEncoder(str(tiny_backbone), "bitfit").save(tmp_path / "retriever")
    sparse = SparseEncoder(str(tiny_backbone), "bitfit").save(tmp_path / "sparse")
    reranker = CrossEncoder(str(tiny_backbone), "bitfit").save(tmp_path / "reranker")
    model, impact = load_passage_encoder(str(retriever), "passage encoding")
    assert isinstance(model, BiEncoder) and not impact
    model, impact = load_passage_encoder(str(sparse), "passage encoding")
    assert isinstance(model, SparseEncoder) and impact
    with pytest.raises(PetirError, match=r"holds a rerank model; passage encoding needs a bi-encoder$"):
        load_passage_encoder(str(reranker), "passage encoding")
    assert serves_impact(str(sparse)) and not serves_impact(str(retriever)) and not serves_impact("bert-base-uncased")
    (tmp_path / "retriever" / "config.json").write_text("{")  # damaged: Pyserini's own choice, untouched
    assert not serves_impact(str(retriever))

"""petir encoders in Pyserini's encoder interface (compare ``pyserini/encode/_auto.py`` and ``_splade.py``).

``encode(texts, **kwargs) -> np.ndarray`` (or, for impact search, ``encode(query) -> {token: impact}``), nothing
more; pooling, normalisation, lengths and quantisation come from the model directory's config.json and task, so no
Pyserini flag can mismatch them.
"""

from __future__ import annotations

import numpy as np
from pyserini.encode import DocumentEncoder, QueryEncoder, document_encoder_class_map, query_encoder_class_map

from petir.data import Document, normalize_text
from petir_pyserini._hf import load_dense_encoder, load_impact_encoder, load_passage_encoder, serves_impact

#: Pyserini picks an encoder class by the first keyword of its maps found in the encoder path.
KEYWORD = "petir"


class PetirDocumentEncoder(DocumentEncoder):
    """Passage encoder for ``python -m pyserini.encode`` and ``pyserini.encode`` Python use: vectors for Faiss from a
    retriever, or (a sparse retriever) ``{token: impact}`` per passage for a JsonVectorCollection, the weights
    Pyserini's own ``--encoder-class splade`` writes, computed a third faster."""

    def __init__(self, model_name: str, tokenizer_name: str | None = None, device: str = "cpu", **_ignored):
        self.model, self.impact = load_passage_encoder(model_name, "passage encoding", device)

    def encode(self, texts, titles=None, max_length: int | None = None, **_ignored) -> np.ndarray | list[dict]:
        """Returns: float32 array [len(texts), hidden], or a ``{token: impact}`` per text; titles are joined to
        texts as ``"title text"``."""
        titles = titles if titles is not None else [""] * len(texts)
        passages = [Document("", title or "", text).contents for title, text in zip(titles, texts, strict=True)]
        if self.impact:
            return self.model.term_weights(passages, "passage", max_length, batch_size=len(texts))
        return self.model.encode(passages, "passage", batch_size=len(texts), max_length=max_length)


class PetirQueryEncoder(QueryEncoder):
    """Query encoder for ``FaissSearcher`` and ``python -m pyserini.search.faiss``.

    ``backend="onnx"`` encodes queries with onnxruntime from the export that ``python -m petir.onnx ENCODER_DIR``
    wrote (same vectors to float32 rounding, no torch forward at search time).
    """

    def __init__(
        self,
        encoder_dir: str | None = None,
        tokenizer_name: str | None = None,
        encoded_query_dir: str | None = None,
        device: str = "cpu",
        backend: str = "torch",
        **_ignored,
    ):
        super().__init__(encoded_query_dir)
        if encoder_dir:
            self.model = load_dense_encoder(encoder_dir, "query encoding", backend, device)
            self.has_model = True

    def encode(self, query: str, **_ignored) -> np.ndarray:
        """Returns: float32 array [hidden]."""
        if not self.has_model:
            return super().encode(query)
        return self.model.encode([normalize_text(query)], "query")[0]

    def encode_batch(self, queries: list[str]) -> np.ndarray:
        """Returns: float32 array [len(queries), hidden]; FaissSearcher.batch_search uses it when present."""
        return self.model.encode([normalize_text(query) for query in queries], "query")


class PetirImpactQueryEncoder(QueryEncoder):
    """Query encoder of ``LuceneImpactSearcher`` and ``python -m pyserini.search.lucene --impact --encoder
    MODEL_DIR``: a sparse retriever's integer term weights, encoded and quantised as the model's dev check does."""

    def __init__(self, encoder_dir: str, device: str = "cpu", **_ignored):
        super().__init__()
        self.model = load_impact_encoder(encoder_dir, "impact search", device)
        self.has_model = True

    def encode(self, query: str, **_ignored) -> dict[str, int]:
        """Returns: ``{token: impact}``, the query's nonzero integer term weights."""
        return self.model.term_weights([normalize_text(query)], "query")[0]


def register_impact_searcher(searcher_class: type) -> None:
    """Make ``searcher_class`` (Pyserini's ``LuceneImpactSearcher``) encode queries with
    :class:`PetirImpactQueryEncoder` when its encoder is a petir sparse retriever's directory: Pyserini picks an
    impact query encoder by a keyword of the encoder's name, with no map to add petir to, so its picker is wrapped;
    any other encoder name goes to Pyserini's own choice."""
    pick = searcher_class._init_query_encoder_from_str
    if getattr(pick, "petir", False):
        return

    def init_query_encoder(query_encoder):
        return PetirImpactQueryEncoder(query_encoder) if serves_impact(query_encoder) else pick(query_encoder)

    init_query_encoder.petir = True
    searcher_class._init_query_encoder_from_str = staticmethod(init_query_encoder)


# Importing this module registers its classes (also when the import started inside pyserini.encode's own import,
# where the start-up hook's register() finds this module half-initialised).
document_encoder_class_map.setdefault(KEYWORD, PetirDocumentEncoder)
query_encoder_class_map.setdefault(KEYWORD, PetirQueryEncoder)

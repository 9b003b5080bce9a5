"""petir encoders in Pyserini's encoder interface (compare ``pyserini/encode/_auto.py``).

``encode(texts, **kwargs) -> np.ndarray``, nothing more; pooling, normalisation and lengths come from the
model directory's config.json, so no Pyserini flag can mismatch them.
"""

from __future__ import annotations

import numpy as np
from pyserini.encode import DocumentEncoder, QueryEncoder, document_encoder_class_map, query_encoder_class_map

from petir.data import Document, normalize_text
from petir_pyserini._hf import load_dense_encoder

#: Pyserini picks an encoder class by the first keyword of its maps found in the encoder path.
KEYWORD = "petir"


class PetirDocumentEncoder(DocumentEncoder):
    """Passage encoder for ``python -m pyserini.encode`` and ``pyserini.encode`` Python use."""

    def __init__(self, model_name: str, tokenizer_name: str | None = None, device: str = "cpu", **_ignored):
        self.model = load_dense_encoder(model_name, "passage encoding", device=device)

    def encode(self, texts, titles=None, max_length: int | None = None, **_ignored) -> np.ndarray:
        """Returns: float32 array [len(texts), hidden]; titles are joined to texts as ``"title text"``."""
        titles = titles if titles is not None else [""] * len(texts)
        passages = [Document("", title or "", text).contents for title, text in zip(titles, texts, strict=True)]
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


# Importing this module registers its classes (also when the import started inside pyserini.encode's own import,
# where the start-up hook's register() finds this module half-initialised).
document_encoder_class_map.setdefault(KEYWORD, PetirDocumentEncoder)
query_encoder_class_map.setdefault(KEYWORD, PetirQueryEncoder)

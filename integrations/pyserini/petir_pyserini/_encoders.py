"""petir encoders in Pyserini's encoder interface (compare ``pyserini/encode/_auto.py``).

``encode(texts, **kwargs) -> np.ndarray``, nothing more; pooling, normalisation and lengths come from the
model directory's config.json, so no Pyserini flag can mismatch them.
"""

from __future__ import annotations

import numpy as np
from pyserini.encode import DocumentEncoder, QueryEncoder, document_encoder_class_map, query_encoder_class_map

from petir.cli import resolve_device
from petir.models import BiEncoder

#: Pyserini picks an encoder class by the first keyword of its maps found in the encoder path.
KEYWORD = "petir"


def _normalise(text: str) -> str:
    return " ".join(text.split())


class PetirDocumentEncoder(DocumentEncoder):
    """Passage encoder for ``python -m pyserini.encode`` and ``pyserini.encode`` Python use."""

    def __init__(self, model_name: str, tokenizer_name: str | None = None, device: str = "cpu", **_ignored):
        self.model = BiEncoder.load(model_name, device=resolve_device(device))

    def encode(self, texts, titles=None, max_length: int | None = None, **_ignored) -> np.ndarray:
        """Returns: float32 array [len(texts), hidden]; titles are joined to texts as ``"title text"``."""
        if titles is not None:
            texts = [f"{title or ''} {text}" for title, text in zip(titles, texts)]
        return self.model.encode(
            [_normalise(text) for text in texts], "passage", batch_size=len(texts), max_length=max_length
        )


class PetirQueryEncoder(QueryEncoder):
    """Query encoder for ``FaissSearcher`` and ``python -m pyserini.search.faiss``."""

    def __init__(
        self,
        encoder_dir: str | None = None,
        tokenizer_name: str | None = None,
        encoded_query_dir: str | None = None,
        device: str = "cpu",
        **_ignored,
    ):
        super().__init__(encoded_query_dir)
        if encoder_dir:
            self.model = BiEncoder.load(encoder_dir, device=resolve_device(device))
            self.has_model = True

    def encode(self, query: str, **_ignored) -> np.ndarray:
        """Returns: float32 array [hidden]."""
        if not self.has_model:
            return super().encode(query)
        return self.model.encode([_normalise(query)], "query")[0]

    def encode_batch(self, queries: list[str]) -> np.ndarray:
        """Returns: float32 array [len(queries), hidden]; FaissSearcher.batch_search uses it when present."""
        return self.model.encode([_normalise(query) for query in queries], "query")


def register_encoder_classes() -> None:
    document_encoder_class_map.setdefault(KEYWORD, PetirDocumentEncoder)
    query_encoder_class_map.setdefault(KEYWORD, PetirQueryEncoder)

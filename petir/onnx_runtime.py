"""The onnxruntime twin of a saved petir model (:class:`OnnxModel`, which each task's module subclasses) and the
layout of an ONNX export, which :mod:`petir.onnx` writes. Below the tasks: it knows none of them
(:func:`petir.tasks.load_onnx` picks a saved directory's twin)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from petir.backbone import load_tokenizer
from petir.batching import tokenize
from petir.data import read_json, require_fields
from petir.errors import PetirError
from petir.models import DAMAGED, STATE_FILE, read_saved_config

ONNX_DIR = "onnx"
ONNX_FILE = "model.onnx"
#: The same graph with int8 weights (onnxruntime's dynamic quantisation: activations are quantised on the fly).
INT8_FILE = "model.int8.onnx"
ONNX_CONFIG_FILE = "onnx_config.json"
ONNX_FORMAT = "petir-onnx"
#: What the loader reads of onnx_config.json, with the JSON types it needs.
ONNX_CONFIG_FIELDS = {"state_sha256": str, "petir_config": dict, "inputs": tuple[str, ...]}


def state_digest(model_dir: Path) -> str:
    """SHA-256 of the trained tensors, so a re-trained model is never served by an older export."""
    digest = hashlib.sha256()
    try:
        with open(model_dir / STATE_FILE, "rb") as state:
            for block in iter(lambda: state.read(1 << 20), b""):
                digest.update(block)
    except OSError as error:
        raise PetirError(f"{model_dir / STATE_FILE}: cannot read the trained tensors ({error}); {DAMAGED}") from None
    return digest.hexdigest()[:16]


def saved_tokenizer(model_dir: Path) -> Any:
    """The tokenizer saved in ``model_dir``, which an export is served with: read at export time too, so missing
    or damaged tokenizer files fail the export, not its first load."""
    from transformers import PretrainedConfig

    # tokenizer_config.json names the tokenizer class; the empty config stops AutoTokenizer from reading
    # config.json, a petir config that transformers does not know unless the Pyserini plug-in registered it.
    return load_tokenizer(model_dir, f"the tokenizer saved in {model_dir}", config=PretrainedConfig())


def open_session(path: Path, device: str | None, session_config: dict[str, str] | None = None):
    """An onnxruntime session with full graph optimisation and torch's thread count; CUDA when ``device`` asks
    for it ("auto" takes CUDA only where onnxruntime has the CUDA provider). ``session_config``: onnxruntime
    session config entries, e.g. ``{"session.intra_op.allow_spinning": "0"}``."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = torch.get_num_threads()
    for key, value in (session_config or {}).items():
        options.add_session_config_entry(key, value)
    has_cuda = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    providers: list[Any] = ["CPUExecutionProvider"]
    if device in (None, "auto"):
        device = "cuda" if has_cuda else "cpu"
    if device.startswith("cuda"):
        if not has_cuda:
            raise PetirError(
                f"device {device} asked for CUDA, but this onnxruntime has no CUDAExecutionProvider "
                "(install onnxruntime-gpu); use device cpu"
            )
        index = int(device.partition(":")[2] or 0)
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": index}))
    elif device != "cpu":
        raise PetirError(f"the onnx backend runs on cpu or cuda[:N], not {device!r}")
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=providers)
    except Exception as error:  # onnxruntime's errors (InvalidProtobuf, Fail, ...) share no base class but Exception
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise PetirError(
            f"{path}: onnxruntime cannot load this graph ({detail}); export it again with python -m petir.onnx"
        ) from None


class OnnxModel:
    """A petir model exported to ONNX, run by onnxruntime; tokenises exactly as the torch model does. Each task's
    twin (its ``onnx`` class) subclasses it: its ``task`` name, and the task's ``encode`` or ``score``, with the
    task's options read from the saved ``config``."""

    task: ClassVar[str] = ""

    def __init__(self, config: dict[str, Any], onnx_config: dict[str, Any], tokenizer: Any, session: Any):
        self.config = config
        self.onnx_config = onnx_config
        self.tokenizer = tokenizer
        self.session = session
        self.input_names = onnx_config["inputs"]
        self._setup(config)

    def _setup(self, config: dict[str, Any]) -> None:
        """Keep what the task's ``encode`` or ``score`` needs of the saved model's ``config`` (its options)."""
        raise NotImplementedError

    @classmethod
    def load(
        cls,
        model_dir: str | os.PathLike,
        onnx_dir: str | os.PathLike | None = None,
        device: str = "cpu",
        session_config: dict[str, str] | None = None,
        int8: bool = False,
        *,
        config: dict[str, Any] | None = None,
    ) -> OnnxModel:
        """Load the export in ``onnx_dir`` (default ``MODEL_DIR/onnx``) with the tokenizer and options of the
        petir model in ``model_dir``; ``session_config`` holds extra onnxruntime session config entries; ``int8``
        runs the int8-weight graph; ``config``: the model directory's config.json already read and checked
        (:func:`petir.tasks.load_onnx` loads the twin of any task's model)."""
        model_dir = Path(model_dir)
        config = read_saved_config(model_dir) if config is None else config
        if config["task"] != cls.task:
            raise PetirError(f"{model_dir} holds a {config['task']} model, not a {cls.task} model")
        onnx_dir = Path(onnx_dir) if onnx_dir is not None else model_dir / ONNX_DIR
        if not (onnx_dir / ONNX_FILE).is_file() or not (onnx_dir / ONNX_CONFIG_FILE).is_file():
            raise PetirError(f"no ONNX export in {onnx_dir}; run `python -m petir.onnx {model_dir}` first")
        again = f"export it again: python -m petir.onnx {model_dir}"
        onnx_config = read_json(onnx_dir / ONNX_CONFIG_FILE, "petir ONNX export config", again)
        if onnx_config.get("format") != ONNX_FORMAT:
            raise PetirError(f"{onnx_dir / ONNX_CONFIG_FILE} is not a petir ONNX export")
        require_fields(onnx_config, ONNX_CONFIG_FIELDS, str(onnx_dir / ONNX_CONFIG_FILE), again)
        if onnx_config["state_sha256"] != state_digest(model_dir) or onnx_config["petir_config"] != config:
            raise PetirError(
                f"the ONNX export in {onnx_dir} is from an older version of {model_dir}; "
                f"re-run `python -m petir.onnx {model_dir}`"
            )
        tokenizer = saved_tokenizer(model_dir)
        graph = onnx_dir / (INT8_FILE if int8 else ONNX_FILE)
        if not graph.is_file():
            raise PetirError(f"no {graph.name} in {onnx_dir}; {again}")
        session = open_session(graph, device, session_config)
        found = [node.name for node in session.get_inputs()]
        if found != onnx_config["inputs"]:
            raise PetirError(
                f"{graph} takes inputs {found}, but {onnx_dir / ONNX_CONFIG_FILE} says {onnx_config['inputs']}; {again}"
            )
        return cls(config, onnx_config, tokenizer, session)

    def tokenize(self, texts: Sequence[str], max_length: int, pairs: Sequence[str] | None = None) -> dict:
        """The graph's inputs (int64 [batch, length]), tokenised exactly as the torch model does."""
        features = tokenize(self.tokenizer, texts, max_length, pairs, return_tensors="np")
        return {name: features[name].astype(np.int64) for name in self.input_names}

    def run(self, features: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(None, features)[0].astype(np.float32, copy=False)

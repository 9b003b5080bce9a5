"""ONNX export of saved petir models, and the base of their onnxruntime twins (each task's module has its own).

Export a saved model directory (any PET method, any task)::

    python -m petir.onnx MODEL_DIR                    # writes MODEL_DIR/onnx/{model.onnx,onnx_config.json}

The graph takes the tokenizer's inputs (``input_ids``, ``attention_mask`` and, for BERT-style tokenizers,
``token_type_ids``; int64 [batch, length], both axes dynamic) and returns exactly what the torch model's inference
function returns, as its task's :class:`~petir.batching.GraphOutput` names and shapes it (dynamic axes included):
``embeddings`` float32 [batch, hidden] for a retriever (L2-normalised when the similarity is cosine), ``scores``
float32 [batch] for a re-ranker. The PET modules are traced into the graph like any other layer, so the exporter
knows nothing about PET methods, nor about tasks.

Then swap the torch model for its twin (the task's ``onnx`` class), which has the same ``encode``/``score``
signatures::

    model = load_inference_model(MODEL_DIR, backend="onnx")     # the twin of the saved task
    vectors = model.encode(texts, "query")

Exporter: torch's TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``). It needs only the ``onnx``
package next to torch, and traces the Python-level state the linked method passes between layers (its ``Chain``)
as ordinary tensor data flow. The torch.export-based exporter (torch's default since 2.9) would also need
``onnxscript`` and ``onnx-ir``, and gains nothing for these static, control-flow-free encoder graphs.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

import petir
from petir.backbone import load_tokenizer
from petir.batching import tokenize
from petir.cli import ArgumentParser, Bounded, add_overwrite_flag, resolve_device, run
from petir.data import read_json, require_fields
from petir.errors import PetirError, check_choice
from petir.files import check_new_directory, output_lock, staged_directory
from petir.models import DAMAGED, STATE_FILE, PetModel

ONNX_DIR = "onnx"
ONNX_FILE = "model.onnx"
#: The same graph with int8 weights (onnxruntime's dynamic quantisation: activations are quantised on the fly).
INT8_FILE = "model.int8.onnx"
ONNX_CONFIG_FILE = "onnx_config.json"
ONNX_FORMAT = "petir-onnx"
#: What the loader reads of onnx_config.json, with the JSON types it needs.
ONNX_CONFIG_FIELDS = {"state_sha256": str, "petir_config": dict, "inputs": tuple[str, ...]}
DEFAULT_OPSET = 17  # the first opset with a LayerNormalization operator (one node, not seven)
#: Exports whose outputs differ more than this from the torch model on the check batch are refused (float32 runs
#: agree to ~1e-6; anything near this bound means an operator was exported wrongly, not rounding).
PARITY_TOLERANCE = 1e-3

#: Texts for the traced example and the parity check: unequal lengths, so padding is in the traced graph.
_CHECK_QUERIES = ["the cat sat on the mat with a protein", "gene", "cancer risk increase in a cell study"]
_CHECK_PASSAGES = ["a dog sat", "protein cell gene study on the mat and the cat", "risk"]


# -- export ----------------------------------------------------------------------------------------------------
class _InferenceGraph(nn.Module):
    """The model's inference function with the tokenizer's inputs as positional arguments, as tracing needs."""

    def __init__(self, model: PetModel, input_names: Sequence[str]):
        super().__init__()
        self.model = model
        self.input_names = list(input_names)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.model.inference(dict(zip(self.input_names, inputs, strict=True)))


def export(
    model_dir: str | os.PathLike,
    output: str | os.PathLike | None = None,
    opset: int = DEFAULT_OPSET,
    backbone: str | None = None,
    overwrite: bool = False,
) -> tuple[Path, float]:
    """Export the saved model in ``model_dir`` to ``output`` (default ``MODEL_DIR/onnx``), which must be new or
    empty unless ``overwrite``: then an earlier export there is replaced atomically (a directory holding other files
    is refused, see :func:`petir.files.check_new_directory`).

    ``backbone`` overrides where the backbone weights are read from, as in :meth:`PetModel.load`.

    Returns: (output directory, max |onnxruntime - torch| over a padded check batch, in output units).
    """
    if importlib.util.find_spec("onnx") is None:  # torch's exporter imports it only after tracing the model
        raise PetirError("ONNX export needs the onnx package next to torch: pip install 'onnx>=1.16'")
    model_dir = Path(model_dir)
    target = Path(output) if output is not None else model_dir / ONNX_DIR
    with output_lock(target, directory=True):  # one writer, from the check to the swap
        return _export(model_dir, target, opset, backbone, overwrite)


def _export(model_dir: Path, target: Path, opset: int, backbone: str | None, overwrite: bool) -> tuple[Path, float]:
    check_new_directory(target, overwrite, source=model_dir, inside_source=True)
    config = PetModel.read_config(model_dir)
    _saved_tokenizer(model_dir)
    model = PetModel.load(model_dir, backbone=backbone, device="cpu")
    output = model.graph_output
    features = model.example_features(_CHECK_QUERIES, _CHECK_PASSAGES)
    input_names = list(features)
    graph = _InferenceGraph(model, input_names).eval()

    with staged_directory(target, replace=True) as staging:  # checked above: empty, or --overwrite
        dynamic_axes = {name: {0: "batch", 1: "sequence"} for name in input_names}
        dynamic_axes[output.name] = output.dynamic_axes()
        with warnings.catch_warnings():
            # The TorchScript exporter warns that it is deprecated, and that advanced indexing would be wrong for
            # negative indices (transformers' padding mask indexes with aranges, never negative); tracing warns
            # about Python booleans it freezes, and transformers turns its data-dependent shortcuts (skipping an
            # all-ones mask) off while tracing. The parity check below is the real test of the graph.
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", message="Exporting aten::index operator of advanced indexing")
            with torch.no_grad():
                torch.onnx.export(
                    graph,
                    tuple(features.values()),
                    str(staging / ONNX_FILE),
                    dynamo=False,
                    input_names=input_names,
                    output_names=[output.name],
                    dynamic_axes=dynamic_axes,
                    opset_version=opset,
                    do_constant_folding=True,
                )
        with torch.inference_mode():
            expected = model.inference(features).float().numpy()
        session = _session(staging / ONNX_FILE, "cpu")
        # The exporter drops inputs the graph never reads (DeBERTa-v3 has no token types): feed the graph's own.
        input_names = [node.name for node in session.get_inputs()]
        inputs = {name: features[name].numpy() for name in input_names}
        difference = float(np.abs(session.run(None, inputs)[0] - expected).max())
        if not difference <= PARITY_TOLERANCE:
            raise PetirError(
                f"the ONNX export of {model_dir} differs from the torch model by {difference:.2e} "
                f"(> {PARITY_TOLERANCE:g}) on a check batch; try another --opset"
            )
        onnx_config = {
            "format": ONNX_FORMAT,
            "petir_version": petir.__version__,
            "torch_version": torch.__version__,
            "exporter": "torchscript",
            "task": model.task,
            "opset": opset,
            "inputs": input_names,
            "output": output.name,
            "parity_max_abs_diff": difference,
            "int8_max_abs_diff": _quantize(staging, inputs, expected, model.encoder.config.hidden_size),
            "state_sha256": _state_digest(model_dir),
            "petir_config": config,
        }
        (staging / ONNX_CONFIG_FILE).write_text(json.dumps(onnx_config, indent=2) + "\n")
    return target, difference


def _saved_tokenizer(model_dir: Path) -> Any:
    """The tokenizer saved in ``model_dir``, which an export is served with: read at export time too, so missing
    or damaged tokenizer files fail the export, not its first load."""
    from transformers import PretrainedConfig

    # tokenizer_config.json names the tokenizer class; the empty config stops AutoTokenizer from reading
    # config.json, a petir config that transformers does not know unless the Pyserini plug-in registered it.
    return load_tokenizer(model_dir, f"the tokenizer saved in {model_dir}", config=PretrainedConfig())


def _state_digest(model_dir: Path) -> str:
    """SHA-256 of the trained tensors, so a re-trained model is never served by an older export."""
    digest = hashlib.sha256()
    try:
        with open(model_dir / STATE_FILE, "rb") as state:
            for block in iter(lambda: state.read(1 << 20), b""):
                digest.update(block)
    except OSError as error:
        raise PetirError(f"{model_dir / STATE_FILE}: cannot read the trained tensors ({error}); {DAMAGED}") from None
    return digest.hexdigest()[:16]


# -- onnxruntime inference -------------------------------------------------------------------------------------
def _quantize(directory: Path, inputs: dict[str, np.ndarray], expected: np.ndarray, hidden_size: int) -> float:
    """Write the int8 twin of ``directory/model.onnx`` and return its max |difference| from the torch outputs on the
    check batch: a measure, not a gate, since int8 is lossy by design (the quality cost on real data is in
    docs/results/onnx-throughput.md).

    Backbone-sized weight matrices (at least hidden x hidden: attention and feed-forward) get int8 weights, per
    channel; activation x activation products (attention scores) are quantised on the fly. Smaller weights, the PET
    modules and the score head, stay fp32: they hold the trained signal, and quantising them made an IAA-L
    re-ranker's scores worse (max |difference| from fp32 1.14 instead of 0.92 on 64 SciFact pairs, correlation
    0.987 instead of 0.992) and was no faster."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(directory / ONNX_FILE, load_external_data=False).graph
    sizes = {tensor.name: int(np.prod(tensor.dims)) for tensor in graph.initializer}
    small = [
        node.name
        for node in graph.node
        if node.op_type == "MatMul" and 0 < max((sizes.get(name, 0) for name in node.input), default=0) < hidden_size**2
    ]
    quantize_dynamic(
        directory / ONNX_FILE,
        directory / INT8_FILE,
        weight_type=QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=["MatMul"],
        nodes_to_exclude=small,
    )
    return float(np.abs(_session(directory / INT8_FILE, "cpu").run(None, inputs)[0] - expected).max())


def _session(path: Path, device: str | None, session_config: dict[str, str] | None = None):
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
    ) -> OnnxModel:
        """Load the export in ``onnx_dir`` (default ``MODEL_DIR/onnx``) with the tokenizer and options of the
        petir model in ``model_dir``; ``session_config`` holds extra onnxruntime session config entries; ``int8``
        runs the int8-weight graph."""
        model_dir = Path(model_dir)
        config = PetModel.read_config(model_dir)
        onnx_dir = Path(onnx_dir) if onnx_dir is not None else model_dir / ONNX_DIR
        if not (onnx_dir / ONNX_FILE).is_file() or not (onnx_dir / ONNX_CONFIG_FILE).is_file():
            raise PetirError(f"no ONNX export in {onnx_dir}; run `python -m petir.onnx {model_dir}` first")
        again = f"export it again: python -m petir.onnx {model_dir}"
        onnx_config = read_json(onnx_dir / ONNX_CONFIG_FILE, "petir ONNX export config", again)
        if onnx_config.get("format") != ONNX_FORMAT:
            raise PetirError(f"{onnx_dir / ONNX_CONFIG_FILE} is not a petir ONNX export")
        require_fields(onnx_config, ONNX_CONFIG_FIELDS, str(onnx_dir / ONNX_CONFIG_FILE), again)
        if onnx_config["state_sha256"] != _state_digest(model_dir) or onnx_config["petir_config"] != config:
            raise PetirError(
                f"the ONNX export in {onnx_dir} is from an older version of {model_dir}; "
                f"re-run `python -m petir.onnx {model_dir}`"
            )
        from petir.tasks import get_task

        task_class = get_task(config["task"]).onnx
        if not issubclass(task_class, cls):
            raise PetirError(f"{model_dir} holds a {config['task']} model, not a {cls.task} model")
        tokenizer = _saved_tokenizer(model_dir)
        graph = onnx_dir / (INT8_FILE if int8 else ONNX_FILE)
        if not graph.is_file():
            raise PetirError(f"no {graph.name} in {onnx_dir}; {again}")
        session = _session(graph, device, session_config)
        found = [node.name for node in session.get_inputs()]
        if found != onnx_config["inputs"]:
            raise PetirError(
                f"{graph} takes inputs {found}, but {onnx_dir / ONNX_CONFIG_FILE} says {onnx_config['inputs']}; {again}"
            )
        return task_class(config, onnx_config, tokenizer, session)

    def tokenize(self, texts: Sequence[str], max_length: int, pairs: Sequence[str] | None = None) -> dict:
        """The graph's inputs (int64 [batch, length]), tokenised exactly as the torch model does."""
        features = tokenize(self.tokenizer, texts, max_length, pairs, return_tensors="np")
        return {name: features[name].astype(np.int64) for name in self.input_names}

    def run(self, features: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(None, features)[0].astype(np.float32, copy=False)


def _load_torch(model_dir: str | os.PathLike, device: str) -> PetModel:
    return PetModel.load(model_dir, device=resolve_device(device))


def _load_onnx(model_dir: str | os.PathLike, device: str) -> OnnxModel:
    return OnnxModel.load(model_dir, device=device)


#: Inference backends: how each one loads a saved model directory.
BACKENDS: dict[str, Callable[[str | os.PathLike, str], PetModel | OnnxModel]] = {
    "torch": _load_torch,
    "onnx": _load_onnx,
    "onnx-int8": lambda model_dir, device: OnnxModel.load(model_dir, device=device, int8=True),
}


def load_inference_model(
    model_dir: str | os.PathLike, backend: str = "torch", device: str = "cpu"
) -> PetModel | OnnxModel:
    """The saved model as its task's torch model (backend "torch") or its ONNX twin (backend "onnx", which needs
    ``python -m petir.onnx MODEL_DIR`` first); both have the same ``encode`` or ``score`` signature."""
    check_choice("backend", backend, BACKENDS)
    return BACKENDS[backend](model_dir, device)


# -- command line ----------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m petir.onnx",
        description="Export a saved petir model (any task, any PET method) to ONNX for "
        "onnxruntime inference, and check it against the torch model on a padded batch.\n\n"
        "example:\n  python -m petir.onnx runs/scifact-reranker/model\n"
        "  # then: python -m petir.rerank ... --model runs/scifact-reranker/model --backend onnx",
    )
    parser.add_argument("model_dir", help="a saved petir model directory (config.json + petir_state.safetensors)")
    # No default shown for --output and --backbone: theirs depend on MODEL_DIR.
    parser.add_argument(
        "--output", default=argparse.SUPPRESS, help="output directory (default: MODEL_DIR/onnx, where the loaders look)"
    )
    add_overwrite_flag(
        parser,
        f"an earlier export in --output ({ONNX_FILE}, {INT8_FILE}, {ONNX_CONFIG_FILE}); a directory holding other "
        "files is still refused",
    )
    # 14 is the first opset with the scaled-dot-product attention pieces the exporter emits; 20 is the TorchScript
    # exporter's newest.
    parser.add_argument("--opset", type=Bounded(int, 14, 20), default=DEFAULT_OPSET, help="ONNX opset version")
    parser.add_argument(
        "--backbone",
        default=argparse.SUPPRESS,
        help="read the backbone weights from here instead of from the backbone recorded in "
        "MODEL_DIR/config.json (its fingerprint must match)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    target, difference = export(
        args.model_dir, getattr(args, "output", None), args.opset, getattr(args, "backbone", None), args.overwrite
    )
    print(
        f"wrote {target / ONNX_FILE} (opset {args.opset}); max |onnxruntime - torch| on a padded check batch: "
        f"{difference:.2e}"
    )


if __name__ == "__main__":
    run(main)

"""ONNX export of saved petir models, and the inference backends that load one (torch, or its onnxruntime twin: the
twins' base is :mod:`petir.onnx_runtime`, each task's module has its own).

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
import importlib.util
import json
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import petir
from petir.cli import ArgumentParser, Bounded, add_overwrite_flag, resolve_device, run
from petir.errors import PetirError, check_choice
from petir.files import check_new_directory, output_lock, staged_directory
from petir.models import PetModel
from petir.onnx_runtime import (
    INT8_FILE,
    ONNX_CONFIG_FILE,
    ONNX_DIR,
    ONNX_FILE,
    ONNX_FORMAT,
    OnnxModel,
    open_session,
    saved_tokenizer,
    state_digest,
)
from petir.tasks import get_task, load, load_onnx, read_config

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
    if output is None:  # the default output lies inside the model: a path that is no model is said as such first
        read_config(model_dir)
    target = Path(output) if output is not None else model_dir / ONNX_DIR
    with output_lock(target, directory=True):  # one writer, from the check to the swap
        return _export(model_dir, target, opset, backbone, overwrite)


def _export(model_dir: Path, target: Path, opset: int, backbone: str | None, overwrite: bool) -> tuple[Path, float]:
    check_new_directory(target, overwrite, source=model_dir, inside_source=True)
    config = read_config(model_dir)
    saved_tokenizer(model_dir)  # the export is served with it: missing or damaged files fail the export
    model = get_task(config["task"]).model.load(model_dir, backbone, "cpu", config=config)
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
        session = open_session(staging / ONNX_FILE, "cpu")
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
            "state_sha256": state_digest(model_dir),
            "petir_config": config,
        }
        (staging / ONNX_CONFIG_FILE).write_text(json.dumps(onnx_config, indent=2) + "\n")
    return target, difference


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
    return float(np.abs(open_session(directory / INT8_FILE, "cpu").run(None, inputs)[0] - expected).max())


#: Inference backends: how each one loads a saved model directory (its config.json already read, or None).
BACKENDS: dict[str, Callable[[str | os.PathLike, str, dict[str, Any] | None], PetModel | OnnxModel]] = {
    "torch": lambda model_dir, device, config: load(model_dir, device=resolve_device(device), config=config),
    "onnx": lambda model_dir, device, config: load_onnx(model_dir, device=device, config=config),
    "onnx-int8": lambda model_dir, device, config: load_onnx(model_dir, device=device, int8=True, config=config),
}


def load_inference_model(
    model_dir: str | os.PathLike, backend: str = "torch", device: str = "cpu", config: dict[str, Any] | None = None
) -> PetModel | OnnxModel:
    """The saved model as its task's torch model (backend "torch") or its ONNX twin (backend "onnx", which needs
    ``python -m petir.onnx MODEL_DIR`` first); both have the same ``encode`` or ``score`` signature. ``config``: the
    directory's config.json as :func:`petir.tasks.read_config` returned it, where the caller read it first."""
    check_choice("backend", backend, BACKENDS)
    return BACKENDS[backend](model_dir, device, config)


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

"""ONNX export: every PET method and both tasks give the torch model's outputs through onnxruntime."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import PET_IDS, PET_VARIANTS, TASK_IDS, TASK_MODELS, perturb
from petir import tasks
from petir.errors import PetirError
from petir.models import PetModel
from petir.onnx import (
    ONNX_CONFIG_FILE,
    ONNX_DIR,
    ONNX_FILE,
    export,
    load_inference_model,
    main,
)
from petir.tasks.rerank import CrossEncoder, OnnxCrossEncoder
from petir.tasks.retrieval import BiEncoder, OnnxBiEncoder

# Unequal lengths (padding inside a batch), and lengths and batch sizes other than the traced example's.
QUERIES = ["the cat", "cancer risk increase in a protein study on the cell", "gene", "a dog sat on the mat", "x"]
PASSAGES = [
    "the cat sat on the mat",
    "a dog",
    "risk increase in cancer and gene study on the protein of a cell",
    "cell",
    "the mat the cat the dog",
]
TOLERANCE = 1e-4


def saved_model(task_class: type[PetModel], backbone, directory, method: str, options: dict):
    """A model with every trainable tensor moved off its initial value (zero-initialised modules would hide
    an export that drops them), saved to ``directory``."""
    return perturb(task_class(str(backbone), method, options), seed=11).save(directory)


def max_diff(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max())


@pytest.mark.parametrize(("method", "options"), PET_VARIANTS, ids=PET_IDS)
def test_bi_encoder_export_matches_torch(tiny_backbone, tmp_path, method, options):
    model_dir = saved_model(BiEncoder, tiny_backbone, tmp_path / "model", method, options)
    _, check = export(model_dir)
    torch_model = load_inference_model(model_dir, "torch")
    onnx_model = load_inference_model(model_dir, "onnx")
    assert isinstance(onnx_model, OnnxBiEncoder)
    for kind, batch_size, max_length in (("query", 2, None), ("passage", 5, None), ("passage", 1, 6)):
        expected = torch_model.encode(PASSAGES, kind, batch_size, max_length=max_length)
        found = onnx_model.encode(PASSAGES, kind, batch_size, max_length=max_length)
        assert found.dtype == np.float32
        diff = max_diff(found, expected)
        assert diff < TOLERANCE, f"{method} {options} {kind} batch {batch_size}: max |onnx - torch| = {diff:.2e}"
    assert check < TOLERANCE, f"export's own check: max |onnx - torch| = {check:.2e}"
    # Padding must not leak: a text alone and in a padded batch get the same vector.
    alone = np.concatenate([onnx_model.encode([text]) for text in PASSAGES])
    diff = max_diff(alone, onnx_model.encode(PASSAGES, batch_size=5))
    assert diff < TOLERANCE, f"{method} {options}: padded vs unpadded max abs diff {diff:.2e}"
    assert onnx_model.encode([]).shape == (0, 32)


@pytest.mark.parametrize(("method", "options"), PET_VARIANTS, ids=PET_IDS)
def test_cross_encoder_export_matches_torch(tiny_backbone, tmp_path, method, options):
    model_dir = saved_model(CrossEncoder, tiny_backbone, tmp_path / "model", method, options)
    export(model_dir)
    torch_model = load_inference_model(model_dir, "torch")
    onnx_model = load_inference_model(model_dir, "onnx")
    assert isinstance(onnx_model, OnnxCrossEncoder)
    for batch_size in (1, 2, 5):
        expected = torch_model.score(QUERIES, PASSAGES, batch_size)
        found = onnx_model.score(QUERIES, PASSAGES, batch_size)
        assert found.shape == (len(QUERIES),) and found.dtype == np.float32
        diff = max_diff(found, expected)
        assert diff < TOLERANCE, f"{method} {options} batch {batch_size}: max |onnx - torch| = {diff:.2e}"
    assert np.ptp(expected) > 1e-3  # the scores differ, so agreement is not trivial


def test_cli_writes_graph_and_config_where_the_loader_looks(tiny_backbone, tmp_path, capsys):
    model_dir = saved_model(BiEncoder, tiny_backbone, tmp_path / "model", "iaa", {"r": "8"})
    main([str(model_dir), "--opset", "18"])
    assert "max |onnxruntime - torch|" in capsys.readouterr().out
    config = json.loads((model_dir / "onnx" / ONNX_CONFIG_FILE).read_text())
    assert config["task"] == "retrieval" and config["opset"] == 18 and config["output"] == "embeddings"
    assert config["inputs"] == ["input_ids", "token_type_ids", "attention_mask"]
    assert config["petir_config"] == tasks.read_config(model_dir)
    elsewhere = tmp_path / "exports" / "m"
    main([str(model_dir), "--output", str(elsewhere)])
    assert (elsewhere / ONNX_FILE).is_file()
    OnnxBiEncoder.load(model_dir, elsewhere)


def test_missing_export_says_how_to_make_one(tiny_backbone, tmp_path):
    model_dir = saved_model(BiEncoder, tiny_backbone, tmp_path / "model", "adapter", {})
    with pytest.raises(PetirError, match=r"no ONNX export in .*; run `python -m petir.onnx .*model` first"):
        load_inference_model(model_dir, "onnx")
    with pytest.raises(PetirError, match="unknown backend 'tensorrt'; choose from torch, onnx"):
        load_inference_model(model_dir, "tensorrt")


def test_an_export_of_an_older_model_or_of_the_other_task_is_refused(tiny_backbone, tmp_path):
    model_dir = saved_model(CrossEncoder, tiny_backbone, tmp_path / "model", "lora", {})
    export(model_dir)
    with pytest.raises(PetirError, match="holds a rerank model.*not a retrieval model"):
        OnnxBiEncoder.load(model_dir)
    elsewhere, _ = export(model_dir, tmp_path / "exported")
    # A model re-trained into the same place (its default export goes with it); one kept elsewhere must notice.
    shutil.rmtree(model_dir)
    saved_model(CrossEncoder, tiny_backbone, tmp_path / "model", "bitfit", {})
    assert not (model_dir / "onnx").exists()
    with pytest.raises(PetirError, match=r"is from an older version of .*; re-run `python -m petir.onnx"):
        OnnxCrossEncoder.load(model_dir, elsewhere)


@pytest.mark.slow  # Pyserini and Faiss: about 9 s
def test_pyserini_query_encoder_and_faiss_search_with_the_onnx_backend(tiny_backbone, tmp_path):
    """``PetirQueryEncoder(DIR, backend="onnx")`` gives torch's query vectors and FaissSearcher's hits.

    Runs in a fresh interpreter, as Pyserini starts a JVM on import.
    """
    pytest.importorskip("faiss")
    model_dir = saved_model(BiEncoder, tiny_backbone, tmp_path / "model", "linked", {"topology": "side"})
    export(model_dir)
    script = f"""
import faiss, numpy as np
import pyserini.encode  # first, so that petir's start-up hook (where installed) registers its encoders
from pyserini.search.faiss import FaissSearcher
from petir_pyserini._encoders import PetirQueryEncoder
from petir.tasks.retrieval import BiEncoder
from petir import tasks

model_dir, index_dir, passages, queries = {str(model_dir)!r}, {str(tmp_path / "index")!r}, {PASSAGES!r}, {QUERIES!r}
import os; os.makedirs(index_dir)
index = faiss.IndexFlatIP(32)
index.add(BiEncoder.load(model_dir).encode(passages))
faiss.write_index(index, os.path.join(index_dir, "index"))
open(os.path.join(index_dir, "docid"), "w").write("".join(f"d{{i}}\\n" for i in range(len(passages))))
encoders = {{backend: PetirQueryEncoder(model_dir, backend=backend) for backend in ("torch", "onnx")}}
diff = np.abs(encoders["onnx"].encode_batch(queries) - encoders["torch"].encode_batch(queries)).max()
diff = max(diff, np.abs(encoders["onnx"].encode(queries[1]) - encoders["torch"].encode(queries[1])).max())
hits = {{backend: [(hit.docid, hit.score) for hit in FaissSearcher(index_dir, encoder).search(queries[1], k=3)]
         for backend, encoder in encoders.items()}}
assert [d for d, _ in hits["onnx"]] == [d for d, _ in hits["torch"]], hits
print("max_abs_diff", diff)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    diff = float(result.stdout.split()[-1])
    assert diff < TOLERANCE, f"PetirQueryEncoder onnx vs torch: max abs diff {diff:.2e}"


@pytest.mark.parametrize("task_class", TASK_MODELS, ids=TASK_IDS)
def test_the_int8_graph_runs_as_a_backend_and_stays_close(tiny_backbone, tmp_path, task_class):
    model_dir = saved_model(task_class, tiny_backbone, tmp_path / "model", "iaa", {})
    export(model_dir)
    config = json.loads((model_dir / ONNX_DIR / ONNX_CONFIG_FILE).read_text())
    int8 = load_inference_model(model_dir, "onnx-int8")
    fp32 = load_inference_model(model_dir, "onnx")
    found, expected = int8.outputs(QUERIES, PASSAGES), fp32.outputs(QUERIES, PASSAGES)  # vectors, or scores
    assert found.dtype == np.float32 and found.shape == expected.shape
    assert 0 < max_diff(found, expected) < 0.1  # lossy, yet close on a tiny random model
    assert 0 < config["int8_max_abs_diff"] < 0.1


@pytest.mark.parametrize("damage", ["missing", "garbage"])
def test_an_export_of_a_model_with_missing_or_garbage_tokenizer_files_fails_at_export(tiny_backbone, tmp_path, damage):
    model_dir = saved_model(BiEncoder, tiny_backbone, tmp_path / "model", "adapter", {})
    for path in model_dir.iterdir():
        if path.name.startswith(("tokenizer", "vocab", "special_tokens")):
            path.unlink() if damage == "missing" else path.write_text("\x00garbage{")
    with pytest.raises(PetirError, match=r"the tokenizer saved in .*model"):
        export(model_dir)
    assert not (model_dir / "onnx").exists()


def test_a_model_path_that_is_a_file_is_said_to_be_no_model_before_its_output_is_checked(tmp_path):
    """The default output lies inside the model directory; a file given as the model is named as no model, not as
    an output that cannot be made in it."""
    (tmp_path / "run.trec").write_text("q1 Q0 d1 1 1.0 x\n")
    with pytest.raises(PetirError, match=r"run\.trec is not a petir model directory \(no config\.json\)$"):
        export(tmp_path / "run.trec")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["run.trec"]

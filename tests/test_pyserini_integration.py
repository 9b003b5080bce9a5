"""A petir model through the stock Pyserini CLIs: encode -> Faiss index -> search -> trec_eval.

These tests run Pyserini in subprocesses, as a user would; they rely on petir being installed (``pip install
-e .``), which puts the ``petir_pyserini.pth`` start-up hook in site-packages. Cross-cutting: it covers the plug-in
(integrations/pyserini/petir_pyserini) together with petir.onnx and stock Pyserini, as a user runs them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TINY_PASSAGES, flags, needs_pyserini_hook, run_cli
from petir.data import Document, read_run, write_pyserini_collection, write_qrels, write_topics
from petir.tasks.retrieval import BiEncoder

TOPICS = {"q1": "the cat sat", "q2": "cancer risk increase", "q3": "protein gene cell"}
DOCS = TINY_PASSAGES


pytestmark = [needs_pyserini_hook, pytest.mark.slow]  # Pyserini in subprocesses: 7-38 s a test


@pytest.fixture(scope="module")
def exported(tiny_backbone, tmp_path_factory) -> Path:
    """A trained-looking IAA-L bi-encoder saved as a petir directory."""
    model = BiEncoder(str(tiny_backbone), "iaa", {"placement": "layer", "r": "8", "ar": "8"})
    torch.manual_seed(5)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn_like(parameter) * 0.2)
    return model.save(tmp_path_factory.mktemp("export") / "iaa-model")


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("collection")
    corpus = {f"d{i}": Document(f"d{i}", "", text) for i, text in enumerate(DOCS)}
    write_pyserini_collection(corpus, root / "docs")
    write_topics(TOPICS, root / "topics.tsv")
    write_qrels({"q1": {"d0": 1}, "q2": {"d3": 2, "d2": 1}, "q3": {"d4": 1}}, root / "qrels.txt")
    return root


def pyserini(module: str, *args: str, cwd: Path, status: int = 0) -> subprocess.CompletedProcess:
    """Run a stock Pyserini CLI in a fresh interpreter with no JAVA_HOME (the hook must pick Java itself); it must
    end with exit ``status``."""
    env = {key: value for key, value in os.environ.items() if key != "JAVA_HOME"}
    result = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == status, result.stderr[-3000:]
    return result


def encode(exported: Path, collection: Path, output: Path, *input_flags: str) -> Path:
    """``python -m pyserini.encode`` of the test collection into a Faiss index."""
    corpus = ["input", "--corpus", str(collection / "docs"), *input_flags]
    encoder = ["encoder", "--encoder", str(exported), "--dimension", "32", "--device", "cpu", "--batch-size", "4"]
    pyserini(
        "pyserini.encode", *corpus, "output", "--embeddings", str(output), "--to-faiss", *encoder, cwd=output.parent
    )
    return output


def search(index: Path, exported: Path, collection: Path, output: Path) -> dict:
    """``python -m pyserini.search.faiss`` of the test topics; returns the run."""
    topics = ["--topics", str(collection / "topics.tsv"), "--hits", "10"]
    flags = ["--index", str(index), "--encoder", str(exported), "--device", "cpu", "--output", str(output)]
    pyserini("pyserini.search.faiss", *flags, *topics, cwd=output.parent)
    return read_run(output)


@pytest.fixture(scope="module")
def dense_index(exported, collection, tmp_path_factory) -> Path:
    return encode(exported, collection, tmp_path_factory.mktemp("dense") / "faiss-index")


def assert_scores_are_petirs(run: dict, model_dir: Path) -> None:
    """Each query's hits in ``run`` (a search of DOCS) score as petir's own encodings do, best first."""
    model = BiEncoder.load(model_dir)
    passages = model.encode(DOCS)
    for qid, text in TOPICS.items():
        expected = passages @ model.encode([text], "query")[0]
        docids = [docid for docid, _ in run[qid]]
        scores = np.array([score for _, score in run[qid]])
        np.testing.assert_allclose(scores, expected[[int(d[1:]) for d in docids]], atol=1e-4)
        assert docids[0] == f"d{int(np.argmax(expected))}"


def test_stock_encode_and_search_reproduce_petir_scores(exported, collection, dense_index, tmp_path):
    assert_scores_are_petirs(search(dense_index, exported, collection, tmp_path / "run.trec"), exported)


@pytest.mark.parametrize("method", ["full", "lora"])
def test_an_encoder_outside_the_layer_map_trains_and_encodes_through_stock_pyserini(collection, tmp_path, method):
    """A tiny random ModernBERT (no entry in petir.anatomy) trained for 2 steps from the CLI, then stock
    ``pyserini.encode`` and ``pyserini.search.faiss`` with the plug-in: petir's own scores (slow: Pyserini starts
    twice; 85 s a method on 2 busy cores)."""
    from test_anatomy import modernbert, write_triples

    from petir.train import main as train_main

    write_triples(tmp_path / "triples.tsv")
    argv = flags(triples=tmp_path / "triples.tsv", backbone=modernbert(tmp_path), method=method, steps=2, lr=1e-3)
    argv += [*flags(batch_size=2, dev_queries=1, device="cpu", output=tmp_path / "run"), "--no-keep-best"]
    assert run_cli(train_main, argv) is None  # --no-keep-best: the trained model, not the untrained start
    model_dir = tmp_path / "run" / "model"
    index = encode(model_dir, collection, tmp_path / "faiss-index")
    assert_scores_are_petirs(search(index, model_dir, collection, tmp_path / "run.trec"), model_dir)


def test_a_petir_error_under_a_stock_pyserini_command_is_one_line(exported, collection, tmp_path):
    """A directory petir refuses (here a re-ranker's, which encodes no passages) ends ``python -m pyserini.encode``
    as petir's own commands end: one line, exit status 2, no traceback."""
    model = shutil.copytree(exported, tmp_path / "reranker")
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "task": "rerank"}))
    corpus = ["input", "--corpus", str(collection / "docs")]
    encoder = ["encoder", "--encoder", str(model), "--device", "cpu"]
    result = pyserini("pyserini.encode", *corpus, "output", "--embeddings", "index", *encoder, cwd=tmp_path, status=2)
    assert "Traceback" not in result.stderr
    error = result.stderr.strip().splitlines()[-1]
    refusal = f"{model} holds a rerank model; passage encoding needs a bi-encoder"
    assert error == f"python -m pyserini.encode: error: {refusal}"
    assert not (tmp_path / "index").exists()


def test_python_api_with_faiss_searcher(exported, dense_index, tmp_path):
    """``FaissSearcher(index, PetirQueryEncoder(DIR))`` in a fresh interpreter gives petir's own ranking."""
    script = (
        "from pyserini.search.faiss import FaissSearcher\n"
        "from petir_pyserini import PetirQueryEncoder\n"
        f"searcher = FaissSearcher({str(dense_index)!r}, PetirQueryEncoder({str(exported)!r}))\n"
        "hits = searcher.search('cancer risk increase', k=3)\n"
        "print(' '.join(hit.docid for hit in hits))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    model = BiEncoder.load(exported)
    expected = model.encode(DOCS) @ model.encode(["cancer risk increase"], "query")[0]
    assert result.stdout.split()[-3:] == [f"d{i}" for i in np.argsort(-expected)[:3]]


def test_auto_and_petir_encoder_classes_agree(exported):
    """Pyserini's AutoDocumentEncoder (any pooling flag) and PetirDocumentEncoder give the trained embedding."""
    script = (
        "import numpy as np\n"
        "from pyserini.encode import AutoDocumentEncoder, document_encoder_class_map\n"
        "from petir_pyserini import PetirDocumentEncoder\n"
        f"path = {str(exported)!r}\n"
        "texts = ['the cat sat on the mat', 'a dog']\n"
        "ours = PetirDocumentEncoder(path).encode(texts)\n"
        "for pooling in ('cls', 'mean'):\n"
        "    auto = AutoDocumentEncoder(path, device='cpu', pooling=pooling, l2_norm=True).encode(texts)\n"
        "    assert np.abs(auto - ours).max() < 1e-5, (pooling, np.abs(auto - ours).max())\n"
        "assert document_encoder_class_map['petir'] is PetirDocumentEncoder\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]


def test_sharded_encoding_and_merge_give_the_unsharded_index(exported, collection, dense_index, tmp_path):
    """The documented sharding path: two ``--shard-id`` encodes, Pyserini's merge, then the usual search."""
    for shard in ("0", "1"):
        encode(exported, collection, tmp_path / f"shard-{shard}", "--shard-id", shard, "--shard-num", "2")
    merge = ["--dimension", "32", "--input", str(tmp_path / "shard-*"), "--output", str(tmp_path / "merged")]
    pyserini("pyserini.encode.merge_faiss_index", *merge, cwd=tmp_path)
    merged = search(tmp_path / "merged", exported, collection, tmp_path / "merged.trec")
    assert merged == search(dense_index, exported, collection, tmp_path / "unsharded.trec")

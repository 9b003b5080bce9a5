"""Standard exports: a full, BitFit or LoRA retriever as a plain Hugging Face model that transformers,
sentence-transformers, PEFT and stock Pyserini load with no petir code, giving petir's own vectors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import TINY_PASSAGES, perturb, run_cli
from petir.export import export, main
from petir.pet.lora import PEFT_DIR
from petir.tasks.rerank import CrossEncoder
from petir.tasks.retrieval import BiEncoder

TEXTS = TINY_PASSAGES[:5]


def plain_vectors(directory, texts) -> np.ndarray:
    """Mean-pooled, L2-normalised vectors from transformers alone."""
    from transformers import AutoModel, AutoTokenizer

    model, tokenizer = AutoModel.from_pretrained(directory).eval(), AutoTokenizer.from_pretrained(directory)
    return mean_pooled(model, tokenizer, texts)


def mean_pooled(model, tokenizer, texts) -> np.ndarray:
    features = tokenizer(list(texts), padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        states = model(**features).last_hidden_state
    mask = features["attention_mask"].unsqueeze(-1).float()
    pooled = (states * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(pooled, dim=-1).numpy()


@pytest.fixture(params=["full", "bitfit", "lora"])
def trained(request, tiny_backbone, tmp_path):
    model = perturb(BiEncoder(str(tiny_backbone), request.param), seed=7).eval()
    return model, model.save(tmp_path / "model")


def test_a_merged_export_gives_petirs_vectors_through_transformers_and_sentence_transformers(trained, tmp_path):
    model, directory = trained
    out = export(directory, tmp_path / "plain")
    expected = model.encode(TEXTS)
    np.testing.assert_allclose(plain_vectors(out, TEXTS), expected, atol=1e-5)
    from sentence_transformers import SentenceTransformer

    np.testing.assert_allclose(SentenceTransformer(str(out), device="cpu").encode(TEXTS), expected, atol=1e-5)
    assert "--encoder-class auto --pooling mean --l2-norm" in (out / "README.md").read_text()


def test_loading_an_export_warns_of_nothing(tiny_backbone, tmp_path):
    """transformers and sentence-transformers load every weight their class expects: the backbone's pooler, which
    petir drops for training, is back in the export (once every load warned that pooler.dense.* was missing)."""
    out = export(perturb(BiEncoder(str(tiny_backbone), "lora"), seed=7).save(tmp_path / "model"), tmp_path / "plain")
    script = (
        "import logging, warnings\n"
        "warnings.simplefilter('always')\n"
        "logging.basicConfig(level=logging.WARNING)\n"
        "from transformers import AutoModel\n"
        "from sentence_transformers import SentenceTransformer\n"
        f"AutoModel.from_pretrained({str(out)!r})\n"
        f"SentenceTransformer({str(out)!r}, device='cpu')\n"
        "print('loaded')\n"
    )
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "warning", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    assert result.stdout.strip() == "loaded", result.stderr[-2000:]
    complaints = [line for line in result.stderr.splitlines() if line.strip() and "%|" not in line]  # bars: no warning
    assert complaints == [], "\n".join(complaints)
    assert "pooler.dense.weight" in safe_open_keys(out / "model.safetensors")


def safe_open_keys(path) -> set[str]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as weights:
        return set(weights.keys())


def test_stock_pyserini_encodes_an_export_like_petir(trained, tmp_path):
    import pyserini.encode  # noqa: F401
    from pyserini.encode import AutoDocumentEncoder

    model, directory = trained
    out = export(directory, tmp_path / "plain")
    encoder = AutoDocumentEncoder(str(out), device="cpu", pooling="mean", l2_norm=True)
    np.testing.assert_allclose(encoder.encode(TEXTS, titles=None, max_length=256), model.encode(TEXTS), atol=1e-5)


def test_a_lora_export_also_holds_the_peft_adapter(tiny_backbone, tmp_path):
    from peft import PeftModel
    from transformers import AutoModel, AutoTokenizer

    model = perturb(BiEncoder(str(tiny_backbone), "lora"), seed=7).eval()
    out = export(model.save(tmp_path / "model"), tmp_path / "plain")
    base = AutoModel.from_pretrained(str(tiny_backbone))
    adapted = PeftModel.from_pretrained(base, str(out / PEFT_DIR)).eval()
    vectors = mean_pooled(adapted, AutoTokenizer.from_pretrained(str(tiny_backbone)), TEXTS)
    np.testing.assert_allclose(vectors, model.encode(TEXTS), atol=1e-5)


@pytest.mark.parametrize("method", ["adapter", "iaa", "prefix"])
def test_methods_with_their_own_modules_are_not_exported_and_say_why(tiny_backbone, tmp_path, method):
    directory = BiEncoder(str(tiny_backbone), method).save(tmp_path / "model")
    error = run_cli(main, [str(directory), "--output", str(tmp_path / "plain")])
    assert error is not None and "has no place for" in error and "full, bitfit, lora" in error
    assert not (tmp_path / "plain").exists()


def test_rerankers_are_not_exported_and_say_why(tiny_backbone, tmp_path):
    directory = CrossEncoder(str(tiny_backbone), "lora").save(tmp_path / "reranker")
    error = run_cli(main, [str(directory), "--output", str(tmp_path / "plain")])
    assert error is not None and "only retrievers export" in error

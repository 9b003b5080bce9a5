"""The task registry (petir/tasks): a task is one module and one registry line, as a PET method is.

A toy third task (late interaction: one vector per token, scored by MaxSim, as ColBERT does) and a toy PET method are
registered here, in the test (the registries patched, the library untouched), and go through the public entry points:
``petir.train`` trains, saves and loads each; ``petir.onnx`` exports the toy task (its per-token output: a dynamic
sequence axis, and texts of different lengths batched together) and ``petir.rerank`` re-ranks with its twin;
``petir.export`` refuses the toy task in one line and exports the toy method's retriever. The other tests over tasks
enumerate :data:`petir.tasks.TASKS`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import TINY_PASSAGES, flags, run_cli
from petir import cli, pet, tasks
from petir.batching import MAX_LENGTH, GraphOutput, TextEncoder
from petir.data import Corpus, Document, Pools, Queries, Run, read_run, write_run, write_topics
from petir.errors import PetirError
from petir.losses import listwise_loss
from petir.models import CONFIG_FILE, PetModel
from petir.onnx import OnnxModel, export, load_inference_model
from petir.pet.base import PetConfig, PetMethod, Variant, encoder_layers, freeze, nothing_to_merge
from petir.rerank import main as rerank_main
from petir.sampling import Group
from petir.tasks import RENAMED, TASKS, Task, get_task, saved_task_name
from petir.train import main as train_main
from petir.train import task_flags

# -- a toy PET method: the LayerNorms of the top layers ---------------------------------------------------------


@dataclasses.dataclass
class ToyConfig(PetConfig):
    layers: int = cli.option(1, "encoder layers that get a toy module", bounds=cli.Bounded(int, minimum=1))


def apply_toy(model: nn.Module, config: ToyConfig) -> None:
    freeze(model)
    for layer in encoder_layers(model)[-config.layers :]:
        for module in layer.modules():
            if isinstance(module, nn.LayerNorm):
                module.requires_grad_(True)


TOY_METHOD = PetMethod(
    "toy",
    ToyConfig,
    apply_toy,
    "the top layers' LayerNorms (a test's method)",
    reference="this test",
    learning_rate=1e-3,
    variants=(Variant("toy", budgets={"0.5": {}}),),
    scattered=True,
    merge=nothing_to_merge,  # it trains the backbone's own weights
)


# -- a toy task: late interaction, one vector per token ---------------------------------------------------------
@dataclasses.dataclass
class ToyOptions:
    toy_max_length: int = cli.option(32, "toy: tokens per text", bounds=MAX_LENGTH)


TOKENS = GraphOutput("token_embeddings", ("batch", "sequence", "hidden"))


def per_text(states: np.ndarray, mask: np.ndarray) -> list[np.ndarray]:
    """Each text's own token vectors: [its tokens, hidden], padding left out."""
    return [row[row_mask > 0] for row, row_mask in zip(states, mask, strict=True)]


def maxsim(query: np.ndarray, passage: np.ndarray) -> float:
    return float((query @ passage.T).max(axis=1).sum())


class MaxSim(TextEncoder):
    """A late-interaction encoder's score of (query, passage) pairs: each query token's best passage token, summed."""

    def pair_scorer(self, batch_size: int):
        def score(queries: list[str], passages: list[str]) -> np.ndarray:
            queries, passages = self.encode(queries, "query", batch_size), self.encode(passages, "passage", batch_size)
            scores = [maxsim(query, passage) for query, passage in zip(queries, passages, strict=True)]
            return np.array(scores, dtype=np.float32)

        return score


class LateInteraction(PetModel, MaxSim):
    task = "toy"
    options_class = ToyOptions
    graph_output = TOKENS

    def _setup(self, options: ToyOptions) -> None:
        self.toy_max_length = min(options.toy_max_length, self.length_limit)
        self.query_max_length = self.passage_max_length = self.toy_max_length

    @property
    def dimension(self) -> int:
        return self.encoder.config.hidden_size

    def inference(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        states = F.normalize(self.encoder(**features).last_hidden_state, dim=-1)
        return states * features["attention_mask"].unsqueeze(-1).to(states.dtype)  # padding: zero vectors

    def example_features(self, queries: Sequence[str], passages: Sequence[str]) -> dict[str, torch.Tensor]:
        return self.tokenize(passages, self.passage_max_length)

    def collate(self, groups: Sequence[Group]) -> dict[str, Any]:
        passages = [passage for group in groups for passage in group.passages]
        return {
            "queries": self.tokenize([group.query for group in groups], self.query_max_length),
            "passages": self.tokenize(passages, self.passage_max_length),
        }

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        queries = self.inference(batch["queries"])  # [q, tq, h]
        passages = self.inference(batch["passages"])
        passages = passages.view(queries.shape[0], -1, *passages.shape[1:])  # [q, group, tp, h]
        scores = torch.einsum("qih,qgjh->qgij", queries, passages).max(-1).values.sum(-1)
        return listwise_loss(scores, torch.zeros_like(scores, dtype=torch.bool))

    @torch.inference_mode()
    def _embed_batch(self, texts: Sequence[str], max_length: int) -> list[np.ndarray]:
        features = self.tokenize(texts, max_length)
        return per_text(self.inference(features).float().cpu().numpy(), features["attention_mask"].cpu().numpy())

    def rank(self, queries: Queries, pools: Pools, corpus: Corpus, batch_size: int = 32, progress: bool = False) -> Run:
        score = self.pair_scorer(batch_size)
        run = {}
        for qid, pool in pools.items():
            scores = score([queries[qid]] * len(pool), [corpus[docid].contents for docid in pool]).tolist()
            run[qid] = sorted(zip(pool, scores, strict=True), key=lambda hit: -hit[1])
        return run


class OnnxLateInteraction(OnnxModel, MaxSim):
    task = "toy"
    graph_output = TOKENS

    def _setup(self, config: dict[str, Any]) -> None:
        self.query_max_length = self.passage_max_length = config["toy_max_length"]
        self.dimension = self.session.get_outputs()[0].shape[2]

    def _embed_batch(self, texts: Sequence[str], max_length: int) -> list[np.ndarray]:
        features = self.tokenize(texts, max_length)
        return per_text(self.run(features), features["attention_mask"])


TOY_TASK = Task(
    model=LateInteraction,
    onnx=OnnxLateInteraction,
    kind="late-interaction encoder",
    noun="toy model",
    dev_pools=lambda corpus, first_stage, dev_qrels, options: first_stage,  # re-rank the BM25 candidates
    pipeline_tag="feature-extraction",
    usage=lambda model: "```python\npetir.tasks.load(THIS_DIR).encode(texts)   # per text: [tokens, hidden]\n```",
    no_export="a test's toy has no standard form",
)


@pytest.fixture
def toys(monkeypatch):
    """The toy task and the toy method, registered for this test only."""
    monkeypatch.setitem(TASKS, "toy", TOY_TASK)
    monkeypatch.setitem(pet.METHODS, "toy", TOY_METHOD)
    monkeypatch.setitem(pet.VARIANTS, "toy", (TOY_METHOD, TOY_METHOD.variants[0]))


@pytest.fixture
def beir(tmp_path) -> tuple[Path, Path]:
    """A small BEIR directory over the tiny vocabulary and a BM25-like run of its queries (no Java needed)."""
    root = tmp_path / "beir"
    (root / "qrels").mkdir(parents=True)
    docs = [json.dumps({"_id": f"d{i}", "title": "", "text": text}) for i, text in enumerate(TINY_PASSAGES)]
    (root / "corpus.jsonl").write_text("\n".join(docs) + "\n")
    queries = {f"q{i}": " ".join(TINY_PASSAGES[i].split()[:2]) for i in range(6)}
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries.items()))
    qrels = "".join(f"q{i}\td{i}\t1\n" for i in range(6))
    (root / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" + qrels)
    run = {qid: [(f"d{j}", 10.0 - j) for j in range(len(TINY_PASSAGES))] for qid in queries}
    write_run(run, tmp_path / "bm25.trec", "bm25")
    return root, tmp_path / "bm25.trec"


def train(beir: tuple[Path, Path], backbone: Path, output: Path, *extra: str) -> Path:
    """``python -m petir.train`` for two steps with a dev check; returns the saved model directory."""
    argv = flags(data=beir[0], negatives_run=beir[1], dev_queries=2, dev_depth=4, eval_every=2, steps=2)
    argv += flags(backbone=backbone, batch_size=2, device="cpu", threads=1, output=output)
    assert run_cli(train_main, [*argv, *extra]) is None
    return output / "model"


def test_a_task_and_a_method_registered_in_a_test_train_save_load_and_export(toys, beir, tiny_backbone, tmp_path):
    from petir.export import main as export_main

    # The toy task, with the toy method: trained, saved and loaded through petir.train and petir.tasks.load.
    model_dir = train(beir, tiny_backbone, tmp_path / "toy", *flags(task="toy", method="toy", toy_max_length=16))
    config = json.loads((model_dir / CONFIG_FILE).read_text())
    assert (config["task"], config["pet_method"], config["toy_max_length"]) == ("toy", "toy", 16)
    assert "late-interaction encoder" in (model_dir / "README.md").read_text()  # the card reads the task entry
    model = tasks.load(model_dir)
    assert isinstance(model, LateInteraction) and model.passage_max_length == 16
    trained = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    assert trained and all("LayerNorm" in name for name in trained)
    vectors = model.encode(TINY_PASSAGES, batch_size=3)  # texts of different lengths in one batch
    assert [len(v) for v in vectors] != [len(vectors[0])] * len(vectors)
    assert all(v.shape[1] == 32 for v in vectors)
    alone = [model.encode([text])[0] for text in TINY_PASSAGES]
    assert all(np.allclose(a, b, atol=1e-5) for a, b in zip(alone, vectors, strict=True))  # no padding leaks

    # ONNX through the public exporter: the per-token output is a dynamic axis, and the twin batches like torch.
    _, check = export(model_dir)
    assert check < 1e-4
    onnx_model = load_inference_model(model_dir, "onnx")
    assert isinstance(onnx_model, OnnxLateInteraction)
    found = onnx_model.encode(TINY_PASSAGES, batch_size=4)
    assert all(np.abs(a - b).max() < 1e-4 for a, b in zip(found, vectors, strict=True))

    # petir.rerank with the ONNX twin: the task's own pair score, the same as torch's ranking of the pools.
    write_topics({"q1": "the cat", "q2": "gene risk"}, tmp_path / "topics.tsv")
    write_run({qid: [(f"d{j}", 1.0) for j in range(6)] for qid in ("q1", "q2")}, tmp_path / "first.trec", "x")
    argv = flags(run=tmp_path / "first.trec", topics=tmp_path / "topics.tsv", corpus=beir[0] / "corpus.jsonl")
    argv += flags(model=model_dir, backend="onnx", output=tmp_path / "reranked.trec")
    assert run_cli(rerank_main, argv) is None
    corpus = {f"d{i}": Document(f"d{i}", "", text) for i, text in enumerate(TINY_PASSAGES)}
    ranked = model.rank({"q1": "the cat"}, {"q1": [f"d{j}" for j in range(6)]}, corpus)
    assert [docid for docid, _ in read_run(tmp_path / "reranked.trec")["q1"]] == [docid for docid, _ in ranked["q1"]]

    # petir.export: the toy task has no standard form, said in one line.
    error = run_cli(export_main, [str(model_dir), "--output", str(tmp_path / "plain")])
    assert error is not None and "is a toy model; only retrievers export: a test's toy" in error
    assert not (tmp_path / "plain").exists()

    # The toy method on the retrieval task: trained through petir.train, exported as a plain model.
    retriever = train(beir, tiny_backbone, tmp_path / "retriever", *flags(method="toy"))
    assert tasks.load(retriever).method == "toy"
    assert run_cli(export_main, [str(retriever), "--output", str(tmp_path / "plain")]) is None
    assert (tmp_path / "plain" / "modules.json").exists()


def another_value(option: dataclasses.Field) -> str:
    """A valid value of a task's option other than its default, as typed on a command line."""
    if option.metadata["choices"]:
        return next(choice for choice in option.metadata["choices"] if choice != option.default)
    if option.default is None:  # an optional number: one its bounds allow
        bounds = option.metadata["bounds"]
        return str(bounds.minimum) if bounds is not None and bounds.kind is int else "0.5"
    return str(option.default + 1)


def test_a_tasks_own_flags_are_refused_for_every_other_task(toys, tmp_path):
    """Every task's own flags (options, data options: :func:`petir.train.task_flags`), given to any other task that
    has no flag of that name, are one line naming the tasks that have it, whatever the tasks registered (the toy's
    included). The same idea has the same name in every task (``--passage-max-length``): such a flag is the other
    task's own."""
    for task in TASKS.values():
        classes = [task.model.options_class, *([task.data_options] if task.data_options else [])]
        options = [option for options_class in classes for option in dataclasses.fields(options_class)]
        assert [option.name for option in options] == task_flags(task)
        for option, other in ((option, other) for option in options for other in TASKS if other != task.name):
            if option.name in task_flags(TASKS[other]):
                continue
            flag = f"--{option.name.replace('_', '-')}"
            argv = [flag, another_value(option), "--task", other, "--data", str(tmp_path), "--output", str(tmp_path)]
            error = run_cli(train_main, argv)
            assert error is not None and f"{flag} applies to --task " in error and task.name in error, (flag, error)


@pytest.mark.parametrize("task", list(TASKS))
def test_every_task_has_a_model_a_twin_and_a_graph_output(task):
    entry = get_task(task)
    assert entry.name == task == entry.model.task == entry.onnx.task
    assert entry.onnx.graph_output == entry.model.graph_output
    assert entry.model.graph_output.axes[0] == "batch"
    assert (entry.export is None) == bool(entry.no_export)


def test_an_unknown_task_is_one_line(tiny_backbone, tmp_path):
    with pytest.raises(PetirError, match="unknown task 'colbert'; petir has retrieval, rerank, sparse"):
        get_task("colbert")
    model_dir = get_task("retrieval").model(str(tiny_backbone), "bitfit").save(tmp_path / "model")
    config = json.loads((model_dir / CONFIG_FILE).read_text())
    (model_dir / CONFIG_FILE).write_text(json.dumps({**config, "task": "colbert"}))
    with pytest.raises(PetirError, match=r"config.json: unknown task 'colbert'; petir has retrieval, rerank, sparse$"):
        tasks.load(model_dir)


@pytest.mark.parametrize("old", list(RENAMED))
def test_a_model_saved_under_an_old_task_name_loads_as_its_task(tiny_backbone, tmp_path, old):
    task = get_task(saved_task_name(old))
    model_dir = task.model(str(tiny_backbone), "bitfit").save(tmp_path / "model")
    config = json.loads((model_dir / CONFIG_FILE).read_text())
    (model_dir / CONFIG_FILE).write_text(json.dumps({**config, "task": old}))
    assert type(tasks.load(model_dir)) is task.model

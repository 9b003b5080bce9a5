"""petir's promises, tested over what the code declares rather than over hand-picked cases: a bad value or a
damaged file ends as one line on stderr naming it and what to do, exit status 2, no traceback, never a silently wrong
result.

Options: the tables come from the code (every module with a ``main`` is a CLI; its options are its parser's
actions; PET and task options are their dataclass fields), so a new CLI, option or method is covered without editing
this file.

Files: the readers come from :data:`petir.readers.READERS`; each has examples here (a valid file, the call that
reads it, through a CLI where one reads it), and every example file is damaged every way that applies to its kind:
missing, empty, truncated inside its last record, binary bytes, valid text of another format, and per file a wrong
JSON type, a wrong tensor shape, a non-finite tensor or flipped gzip bytes. A reader added to the registry fails
:func:`test_every_reader_has_an_example` until it has one. Then the bullets of issue 23 one by one: BEIR qrels and
a missing run in ``petir.evaluate``, ``--model`` without config.json, and loading that runs no code.

Cross-cutting: these promises hold for every CLI and reader at once, so they live here rather than in the
``test_<module>.py`` files that mirror the package.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import math
import os
import pickle
import shutil
import subprocess
import sys
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import pytest
import torch
from safetensors.torch import load, save

from conftest import REPO, TINY_PASSAGES, cli_modules, flags, run_cli
from petir import cli, tasks
from petir.checkpoint import TRAINER_STATE, TRAINER_TENSORS
from petir.data import Document, write_pyserini_collection, write_run, write_topics
from petir.errors import ModelMismatchError, PetirError
from petir.evaluate import main as evaluate_main
from petir.models import CONFIG_FILE, STATE_FILE
from petir.onnx import ONNX_CONFIG_FILE, ONNX_DIR, ONNX_FILE, export
from petir.options import make_options
from petir.pet import METHODS, make_config
from petir.readers import READERS
from petir.run_directory import CHECKPOINT_DIR
from petir.tasks import TASKS
from petir.tasks.rerank import CrossEncoder
from petir.tasks.retrieval import BiEncoder
from petir.train import main as train_main

# ==================================================================================================================
# Options: every number of every CLI, PET method and task has a declared range
# ==================================================================================================================


CLIS = cli_modules()

#: The fewest arguments each CLI needs before it parses an option (paths need not exist: parsing fails first).
REQUIRED = {
    "petir.train": ["--output", "out"],
    "petir.rerank": ["--run", "run", "--topics", "topics", "--corpus", "corpus", "--model", "m", "--output", "out"],
    "petir.onnx": ["model"],
    "petir.export": ["model", "--output", "out"],
    "petir.reproduce": ["retrieval", "--output", "out"],
    "petir.workspace": ["--data", "data", "--output", "out"],
    "petir.evaluate": ["qrels", "run"],
    "petir.java": [],
    "petir.backbone": ["fetch", "splade-tiny"],
}


def run_expecting_one_line(main, argv: list[str], capsys) -> str:
    """Run a CLI's ``main`` as ``python -m`` does; asserts exit status 2 and one line on stderr, and returns it."""
    with pytest.raises(SystemExit) as exit_:
        cli.run(main, argv)
    stderr = capsys.readouterr().err
    assert exit_.value.code == 2, stderr
    assert "Traceback" not in stderr and len(stderr.splitlines()) == 1, stderr
    return stderr.strip()


def outside(bounds: cli.Bounded) -> list[str]:
    """Values just outside each bound of ``bounds``, and ones that are no number of its kind."""
    values = ["abc", "1.5" if bounds.kind is int else "nan"]
    for inclusive, exclusive, direction in ((bounds.minimum, bounds.above, -1), (bounds.maximum, bounds.below, 1)):
        if exclusive is not None:
            values.append(str(exclusive))
        elif inclusive is not None and bounds.kind is int:
            values.append(str(inclusive + direction))
        elif inclusive is not None:
            values.append(repr(math.nextafter(inclusive, direction * math.inf)))
    return values


def inside(bounds: cli.Bounded) -> list[str]:
    """Values at (or just inside) each bound of ``bounds``."""
    values = []
    for inclusive, exclusive, direction in ((bounds.minimum, bounds.above, 1), (bounds.maximum, bounds.below, -1)):
        if inclusive is not None:
            values.append(str(inclusive))
        elif exclusive is not None:
            values.append(repr(math.nextafter(exclusive, direction * math.inf)))
    return values or ["1"]


def numeric_actions(module: ModuleType) -> list:
    """The parser actions of ``module`` that take a number: typed int or float, or with a numeric default."""
    numeric = (int, float)
    return [
        action
        for action in module.build_parser()._actions
        if action.nargs != 0
        and (isinstance(action.type, cli.Bounded) or action.type in numeric or type(action.default) in numeric)
    ]


def flag_of(action) -> str:
    return max(action.option_strings, key=len) if action.option_strings else action.dest


def _option_cases() -> list:
    return [
        pytest.param(name, flag_of(action), value, action.type, id=f"{name}{flag_of(action)}={value}")
        for name, module in CLIS.items()
        for action in numeric_actions(module)
        if isinstance(action.type, cli.Bounded)
        for value in outside(action.type)
    ]


def numeric_fields(options_class: type) -> list[dataclasses.Field]:
    hints = typing.get_type_hints(options_class)
    return [
        field
        for field in dataclasses.fields(options_class)
        if set(typing.get_args(hints[field.name]) or (hints[field.name],)) & {int, float}
    ]


def _pet_cases() -> list:
    return [
        pytest.param(method, field.name, value, field.metadata["bounds"], id=f"{method}-{field.name}={value}")
        for method, entry in METHODS.items()
        for field in numeric_fields(entry.config_class)
        if field.metadata.get("bounds") is not None
        for value in outside(field.metadata["bounds"])
    ]


# -- options ----------------------------------------------------------------------------------------------------
def test_every_cli_builds_its_parser_with_petirs_parser():
    assert set(CLIS) == set(REQUIRED), "a new CLI needs its minimal arguments in REQUIRED"
    for name, module in CLIS.items():
        assert callable(getattr(module, "build_parser", None)), f"{name} has main but no build_parser"
        assert isinstance(module.build_parser(), cli.ArgumentParser), f"{name} does not use cli.ArgumentParser"


@pytest.mark.parametrize("name", sorted(CLIS))
def test_every_number_option_declares_a_range_its_default_and_bounds_are_in(name):
    for action in numeric_actions(CLIS[name]):
        assert isinstance(action.type, cli.Bounded), f"{name} {flag_of(action)} declares no range (cli.Bounded)"
        if action.default is not None:
            action.type.parse(action.default)
        parser = CLIS[name].build_parser()
        for value in inside(action.type):
            parser.parse_args([*REQUIRED[name], f"{flag_of(action)}={value}"])


@pytest.mark.parametrize("name", sorted(CLIS))
def test_help_shows_every_declared_range(name):
    text = " ".join(CLIS[name].build_parser().format_help().split())
    for action in numeric_actions(CLIS[name]):
        assert f"[{action.type.description}]" in text, flag_of(action)


@pytest.mark.parametrize(("name", "flag", "value", "bounds"), _option_cases())
def test_a_value_out_of_range_is_one_line_naming_the_flag_and_its_range(name, flag, value, bounds, capsys):
    line = run_expecting_one_line(CLIS[name].main, [*REQUIRED[name], f"{flag}={value}"], capsys)
    assert f"argument {flag}: must be {bounds.description}, got " in line, line


@pytest.mark.parametrize("name", sorted(CLIS))
def test_unknown_flags_and_missing_arguments_are_one_line(name, capsys):
    line = run_expecting_one_line(CLIS[name].main, [*REQUIRED[name], "--no-such-flag"], capsys)
    assert "--no-such-flag" in line and "--help" in line
    if REQUIRED[name]:
        assert "required" in run_expecting_one_line(CLIS[name].main, [], capsys)


def test_every_pet_and_task_number_declares_a_range_its_default_is_in():
    classes = [entry.config_class for entry in METHODS.values()] + [task.model.options_class for task in TASKS.values()]
    for options_class in classes:
        for option in numeric_fields(options_class):
            assert option.metadata.get("bounds"), f"{options_class.__name__}.{option.name} declares no range"
            if option.default is not None:
                option.metadata["bounds"].parse(option.default)


def test_every_pet_and_task_option_has_help_text():
    """PET options are options like a task's: their help is field metadata, shown by petir.train --help."""
    classes = [entry.config_class for entry in METHODS.values()] + [task.model.options_class for task in TASKS.values()]
    for options_class in classes:
        for option in dataclasses.fields(options_class):
            assert option.metadata.get("help"), f"{options_class.__name__}.{option.name} has no help text"


@pytest.mark.parametrize(("method", "option", "value", "bounds"), _pet_cases())
def test_a_pet_option_out_of_range_is_refused_from_the_cli_and_from_a_saved_config(
    method, option, value, bounds, tmp_path, capsys
):
    with pytest.raises(PetirError) as error:
        make_config(method, {option: value})
    assert f"PET option {option} must be {bounds.description}" in str(error.value)
    argv = ["--method", method, "--pet", f"{option}={value}", "--output", str(tmp_path / "run")]
    line = run_expecting_one_line(train_main, argv, capsys)
    assert f"PET option {option} must be {bounds.description}" in line
    assert not (tmp_path / "run").exists()  # refused before anything was read or written


@pytest.mark.parametrize("task", sorted(TASKS))
def test_a_task_option_out_of_range_is_refused_where_options_are_made(task):
    options_class = TASKS[task].model.options_class
    for option in numeric_fields(options_class):
        for value in outside(option.metadata["bounds"]):
            with pytest.raises(PetirError, match=f"^{option.name} must be {option.metadata['bounds'].description}"):
                make_options(options_class, {option.name: value})


# ==================================================================================================================
# Files: every file petir reads, damaged
# ==================================================================================================================

QUERIES = {"q1": "the cat", "q2": "cancer risk"}
CORPUS = {f"d{i}": Document(f"d{i}", "", text) for i, text in enumerate(TINY_PASSAGES)}
RUN = {qid: [(f"d{k}", 5.0 - k) for k in range(4)] for qid in QUERIES}
BINARY = bytes(range(256)) * 4


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """In-place readers index files in petir's cache: one per test, so no test reads another's index."""
    monkeypatch.setenv("PETIR_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="session")
def saved(tiny_backbone, tmp_path_factory) -> dict[str, Path]:
    """A saved cross-encoder with its ONNX export, made once and copied by the examples that need one."""
    root = tmp_path_factory.mktemp("saved")
    model = CrossEncoder(str(tiny_backbone), "adapter", max_length=32).save(root / "reranker")
    export(model)
    return {"backbone": tiny_backbone, "reranker": model}


# --- the examples: a valid file per reader, and how petir reads it -----------------------------------------------


def _jsonl(records: list[dict]) -> str:
    return "".join(json.dumps(record) + "\n" for record in records)


def write_beir(directory: Path, gz: bool = False) -> Path:
    (directory / "qrels").mkdir(parents=True)
    corpus = _jsonl([{"_id": d.id, "title": "", "text": d.text} for d in CORPUS.values()])
    if gz:  # long enough for a deflate stream of some size, where flipped bytes land inside the data
        more = _jsonl([{"_id": f"x{i}", "text": f"{TINY_PASSAGES[i % 10]} {i}"} for i in range(200)])
        (directory / "corpus.jsonl.gz").write_bytes(gzip.compress((corpus + more).encode(), mtime=0))
    else:
        (directory / "corpus.jsonl").write_text(corpus)
    (directory / "queries.jsonl").write_text(_jsonl([{"_id": q, "text": t} for q, t in QUERIES.items()]))
    (directory / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td0\t1\nq2\td2\t1\n")
    return directory


def write_rerank_inputs(directory: Path, saved: dict[str, Path]) -> None:
    write_run(RUN, directory / "run.trec", "bm25")
    write_topics(QUERIES, directory / "topics.tsv")
    write_pyserini_collection(CORPUS, directory / "collection")
    shutil.copytree(saved["reranker"], directory / "model")


def rerank(directory: Path, saved: dict[str, Path], **options: object) -> str | None:
    from petir.rerank import main

    inputs = {
        "run": directory / "run.trec",
        "topics": directory / "topics.tsv",
        "corpus": directory / "collection" / "docs.jsonl",
        "model": directory / "model",
        **options,
    }
    return run_cli(main, flags(**inputs, output=directory / "out" / "reranked.trec"))


def train(directory: Path, saved: dict[str, Path], *argv: str) -> str | None:
    from petir.train import main

    options = flags(backbone=saved["backbone"], steps=1, batch_size=1, dev_queries=0, output=directory / "run")
    return run_cli(main, [*options, *argv])  # argv last: it may override the defaults above


def read(name: str, path: Path) -> str | None:
    """Read ``path`` with registry reader ``name`` directly (where no CLI reads the format): its one-line error."""
    try:
        READERS[name].read(path)
    except PetirError as error:
        return str(error)
    return None


def replace_first_line(line: str) -> Callable[[bytes], bytes]:
    return lambda data: (line + "\n").encode() + data.split(b"\n", 1)[1]


def json_edit(**changes: object) -> Callable[[bytes], bytes]:
    return lambda data: json.dumps({**json.loads(data), **changes}).encode()


def state_edit(change: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[bytes], bytes]:
    """Safetensors bytes with the first tensor replaced by ``change`` of it."""

    def edit(data: bytes) -> bytes:
        state = load(data)
        first = sorted(state)[0]
        return save({**state, first: change(state[first])})

    return edit


#: The damages every file gets; a gzip file is also "flipped" (bytes inverted, not cut short).
DAMAGES = ("missing", "empty", "binary", "truncated", "other-format")


@dataclass(frozen=True)
class Target:
    """A file of an example (relative to its directory), its kind (lines, json, binary, gzip: how it is cut and
    what another format is), and damages of its own: name -> the damaged bytes from the valid ones."""

    file: str
    kind: str
    extra: dict[str, Callable[[bytes], bytes]] = field(default_factory=dict)
    named: str = ""  # what the message must name, where not the file's name (a tokenizer is several files)
    skip: tuple[str, ...] = ()  # damages that are none for this file (each with a test of why)

    def damages(self) -> list[str]:
        damages = [*DAMAGES, *(["flipped"] if self.kind == "gzip" else []), *self.extra]
        return [how for how in damages if how not in self.skip]


@dataclass(frozen=True)
class Example:
    """A valid input of a reader: ``make(directory, saved)`` writes it, ``path`` is what the reader is given, and
    ``call(directory, saved)`` reads it as petir does, returning the one-line error (None: read)."""

    make: Callable[[Path, dict[str, Path]], object]
    path: str
    call: Callable[[Path, dict[str, Path]], str | None]
    targets: tuple[Target, ...]
    slow: bool = False  # marks its cases slow (over ~5 s each, as a checkpoint trains twice): see setup.cfg


def _copy_reranker(directory: Path, saved: dict[str, Path]) -> None:
    shutil.copytree(saved["reranker"], directory, dirs_exist_ok=True)


def _onnx_cli(directory: Path, saved: dict[str, Path]) -> str | None:
    from petir.onnx import main

    return run_cli(main, [str(directory), "--output", str(directory / "export")])


CONFIG_DAMAGES = {
    "wrong-type-option": json_edit(max_length="abc"),
    "bool-for-int": json_edit(max_length=True),
    "pet-config-string": json_edit(pet_config="abc"),
    "pet-config-value": json_edit(pet_config={"bottleneck": "x"}),
    "pet-config-list-value": json_edit(pet_config={"bottleneck": [16]}),
    "backbone-not-string": json_edit(backbone=5),
    "fingerprint-not-string": json_edit(backbone_fingerprint=3),
    "missing-keys": lambda data: b'{"model_type": "petir"}',
    "another-model": lambda data: b'{"model_type": "bert"}',
    "unknown-task": json_edit(task="colbert"),
}
STATE_DAMAGES = {
    "wrong-shape": state_edit(lambda tensor: torch.zeros(3)),
    "nan": state_edit(lambda tensor: torch.full_like(tensor, float("nan"))),
    "infinite": state_edit(lambda tensor: torch.full_like(tensor, float("inf"))),
    "integer": state_edit(lambda tensor: tensor.to(torch.int64)),
}

EXAMPLES: dict[str, list[Example]] = {
    "corpus": [
        Example(
            lambda d, s: write_beir(d),
            ".",
            lambda d, s: train(d, s, "--data", str(d)),
            (Target("corpus.jsonl", "lines", {"wrong-type": replace_first_line('{"_id": "d0", "text": 5}')}),),
        ),
        Example(
            lambda d, s: write_beir(d, gz=True),
            ".",
            lambda d, s: train(d, s, "--data", str(d)),
            (Target("corpus.jsonl.gz", "gzip"),),
        ),
        Example(
            lambda d, s: (d / "collection.tsv").write_text("".join(f"{i}\t{doc.text}\n" for i, doc in CORPUS.items())),
            "collection.tsv",
            lambda d, s: read("corpus", d / "collection.tsv"),
            (Target("collection.tsv", "lines"),),
        ),
    ],
    "corpus-in-place": [
        Example(
            write_rerank_inputs,
            "collection/docs.jsonl",
            rerank,
            (
                Target(
                    "collection/docs.jsonl", "lines", {"wrong-type": replace_first_line('{"id": 1.5, "contents": 2}')}
                ),
            ),
        ),
        Example(
            lambda d, s: (write_rerank_inputs(d, s), write_beir(d / "beir", gz=True)),
            "beir/corpus.jsonl.gz",
            lambda d, s: rerank(d, s, corpus=d / "beir" / "corpus.jsonl.gz"),
            (Target("beir/corpus.jsonl.gz", "gzip"),),
        ),
    ],
    "queries": [
        Example(write_rerank_inputs, "topics.tsv", rerank, (Target("topics.tsv", "lines"),)),
        Example(
            lambda d, s: write_beir(d),
            "queries.jsonl",
            lambda d, s: train(d, s, "--data", str(d)),
            (Target("queries.jsonl", "lines", {"wrong-type": replace_first_line('{"_id": "q1", "text": ["a"]}')}),),
        ),
        Example(
            lambda d, s: (d / "topics.tsv.gz").write_bytes(
                gzip.compress("".join(f"q{i}\tthe cat {i}\n" for i in range(100)).encode())
            ),
            "topics.tsv.gz",
            lambda d, s: read("queries", d / "topics.tsv.gz"),
            (Target("topics.tsv.gz", "gzip"),),
        ),
    ],
    "queries-in-place": [
        Example(
            lambda d, s: (
                write_beir(d),
                (d / "ids.tsv").write_text("q1\td0\td1\nq2\td2\td3\n"),
                (d / "queries.tsv").write_text("q1\tthe cat\nq2\tcancer risk\n"),
            ),
            "queries.tsv",
            lambda d, s: train(
                d, s, *flags(triples=d / "ids.tsv", corpus=d / "corpus.jsonl", queries=d / "queries.tsv")
            ),
            (Target("queries.tsv", "lines"),),
        ),
    ],
    "qrels": [
        Example(
            lambda d, s: (
                (d / "qrels.trec").write_text("q1 0 d0 1\nq2 0 d2 1\n"),
                write_run(RUN, d / "run.trec", "bm25"),
            ),
            "qrels.trec",
            lambda d, s: run_cli(evaluate_main, [str(d / "qrels.trec"), str(d / "run.trec")]),
            (Target("qrels.trec", "lines", {"wrong-type": replace_first_line("q1 0 d0 high")}),),
        ),
        Example(
            lambda d, s: write_beir(d),
            "qrels/train.tsv",
            lambda d, s: train(d, s, "--data", str(d)),
            (Target("qrels/train.tsv", "lines", {"wrong-type": replace_first_line("q1\td0\t0.5")}),),
        ),
    ],
    "run": [
        Example(
            write_rerank_inputs,
            "run.trec",
            rerank,
            (Target("run.trec", "lines", {"wrong-type": replace_first_line("q1 Q0 d0 1 high bm25")}),),
        ),
    ],
    "triples": [
        Example(
            lambda d, s: (d / "triples.tsv").write_text("the cat\tcat sat on the mat\ta dog\n" * 3),
            "triples.tsv",
            lambda d, s: read("triples", d / "triples.tsv"),
            (Target("triples.tsv", "lines"),),
        ),
    ],
    "triples-in-place": [
        Example(
            lambda d, s: (d / "triples.tsv").write_text(
                "the cat\tcat sat on the mat\ta dog\ncancer risk\trisk\tgene\n"
            ),
            "triples.tsv",
            lambda d, s: train(d, s, "--triples", str(d / "triples.tsv")),
            (Target("triples.tsv", "lines"),),
        ),
    ],
    "model": [
        Example(
            write_rerank_inputs,
            "model",
            rerank,
            (
                Target(f"model/{CONFIG_FILE}", "json", CONFIG_DAMAGES),
                Target(f"model/{STATE_FILE}", "binary", STATE_DAMAGES),
            ),
        ),
    ],
    "model-config": [
        Example(_copy_reranker, ".", _onnx_cli, (Target(CONFIG_FILE, "json", CONFIG_DAMAGES),)),
    ],
    "model-state": [
        Example(_copy_reranker, STATE_FILE, _onnx_cli, (Target(STATE_FILE, "binary", STATE_DAMAGES),)),
    ],
    "onnx-export": [
        Example(
            write_rerank_inputs,
            "model",
            lambda d, s: rerank(d, s, backend="onnx"),
            (
                Target(
                    f"model/{ONNX_DIR}/{ONNX_CONFIG_FILE}",
                    "json",
                    {
                        "inputs-not-a-list": json_edit(inputs="input_ids"),
                        "inputs-wrong": json_edit(inputs=["input_ids"]),
                    },
                    named=ONNX_DIR,
                ),
                Target(f"model/{ONNX_DIR}/{ONNX_FILE}", "binary", named=ONNX_DIR),
                Target("model/tokenizer.json", "json", named="tokenizer"),
                Target("model/tokenizer_config.json", "json", named="tokenizer"),
            ),
        ),
    ],
    "trainer-checkpoint": [
        Example(
            lambda d, s: (write_beir(d), train(d, s, "--data", str(d), "--steps", "2", "--save-every", "1")),
            f"run/{CHECKPOINT_DIR}",
            lambda d, s: train(d, s, "--data", str(d), "--steps", "3", "--resume"),
            (
                Target(
                    f"run/{CHECKPOINT_DIR}/{TRAINER_STATE}",
                    "json",
                    {"wrong-type": json_edit(step="two"), "no-optimizer": json_edit(optimizer=[])},
                ),
                Target(f"run/{CHECKPOINT_DIR}/{TRAINER_TENSORS}", "binary", STATE_DAMAGES),
            ),
            slow=True,
        ),
    ],
    "metrics-log": [
        Example(
            lambda d, s: (d / "metrics.jsonl").write_text(
                _jsonl([{"step": 1, "loss": 0.5}, {"step": 2, "dev": {"ndcg@10": 0.3}}])
            ),
            "metrics.jsonl",
            lambda d, s: read("metrics-log", d / "metrics.jsonl"),
            (
                Target(
                    "metrics.jsonl",
                    "lines",
                    {
                        "wrong-type": replace_first_line('{"step": "one", "loss": 0.5}'),
                        "loss-not-a-number": replace_first_line('{"step": 1, "loss": "low"}'),
                    },
                    # a torn last line is a crash mid-append, dropped by design, and an empty log a run resumed
                    # at step 0 (test below)
                    skip=("truncated", "empty"),
                ),
            ),
        ),
    ],
    "training-summary": [
        Example(
            lambda d, s: (d / "summary.json").write_text(
                json.dumps(
                    {
                        "steps": 2,
                        "wall_time_s": 1.5,
                        "peak_memory_mb": 10.0,
                        "parameters": {"trainable": 5, "backbone": 100, "percent": 5.0},
                    }
                )
            ),
            "summary.json",
            lambda d, s: read("training-summary", d / "summary.json"),
            (
                Target(
                    "summary.json",
                    "json",
                    {"wrong-type": json_edit(wall_time_s="abc"), "parameters-wrong": json_edit(parameters={"a": 1})},
                ),
            ),
        ),
    ],
    "lr-ladder": [
        Example(
            lambda d, s: (d / "ladder.json").write_text(
                json.dumps(
                    {
                        "rates": [0.001, 0.003],
                        "steps": 5,
                        "rungs": [{"lr": 0.001, "dev": {"ndcg@10": 0.5}, "dev_se": 0.1}],
                        "picked": None,
                        "start": {"metrics": {"ndcg@10": 0.4}, "per_query": [0.3, 0.5]},
                    }
                )
            ),
            "ladder.json",
            lambda d, s: read("lr-ladder", d / "ladder.json"),
            (
                Target(
                    "ladder.json",
                    "json",
                    {
                        "rung-wrong": json_edit(rungs=[{"lr": "fast"}]),
                        "start-wrong": json_edit(start={"metrics": 1}),
                        "picked-wrong": json_edit(picked="0.1"),
                    },
                ),
            ),
        ),
    ],
    "evaluation": [
        Example(
            lambda d, s: (d / "run.metrics.json").write_text(
                json.dumps({"ndcg@10": 0.5, "mrr@10": 0.4, "recall@100": 0.9, "recall@1000": 1.0})
            ),
            "run.metrics.json",
            lambda d, s: read("evaluation", d / "run.metrics.json"),
            (Target("run.metrics.json", "json", {"wrong-type": json_edit(**{"ndcg@10": "high"})}),),
        ),
    ],
}


def test_every_reader_has_an_example():
    assert set(EXAMPLES) == set(READERS), "give every reader of petir.readers.READERS an example here"


def marks(example: Example) -> tuple[pytest.MarkDecorator, ...]:
    return (pytest.mark.slow,) if example.slow else ()


@pytest.mark.parametrize(
    ("reader", "index"),
    [
        pytest.param(name, i, marks=marks(example))
        for name, examples in EXAMPLES.items()
        for i, example in enumerate(examples)
    ],
)
def test_the_examples_are_valid(saved, tmp_path, reader, index):
    example = EXAMPLES[reader][index]
    example.make(tmp_path, saved)
    READERS[reader].read(tmp_path / example.path)


# --- the damages --------------------------------------------------------------------------------------------------


def truncated(data: bytes, kind: str) -> bytes:
    """Cut inside the last record: a line-based file before its last line's last separator (a text file cut at a
    line's end is a valid shorter file, which no reader can tell), any other at half its size."""
    if kind != "lines":
        return data[: len(data) // 2]
    body = data.rstrip(b"\r\n")
    last = body[body.rfind(b"\n") + 1 :]
    separator = b"\t" if b"\t" in last else b" "
    return body[: len(body) - len(last) + last.rfind(separator)]


def flipped(data: bytes) -> bytes:
    """Gzip bytes with every 7th byte of the deflate stream inverted: not cut short, so only zlib or the CRC sees
    it."""
    damaged = bytearray(data)
    for position in range(20, len(damaged) - 8, 7):
        damaged[position] ^= 0xFF
    return bytes(damaged)


def damage(path: Path, how: str, target: Target) -> None:
    if how == "missing":
        path.unlink()
        return
    data = path.read_bytes()
    if how in target.extra:
        path.write_bytes(target.extra[how](data))
        return
    path.write_bytes(
        {
            "empty": b"",
            "binary": BINARY,
            "truncated": truncated(data, target.kind),
            "flipped": flipped(data),
            # valid text of another format: JSON where text lines are read, text where JSON or bytes are
            "other-format": b'["a", "list", "not", "this", "format"]\n' if target.kind == "lines" else b"q1\tthe cat\n",
        }[how]
    )


CASES = [
    pytest.param(name, index, position, how, id=f"{name}-{target.file}-{how}", marks=marks(example))
    for name, examples in EXAMPLES.items()
    for index, example in enumerate(examples)
    for position, target in enumerate(example.targets)
    for how in target.damages()
]


@pytest.mark.parametrize(("reader", "index", "position", "how"), CASES)
def test_a_damaged_file_is_one_line_naming_it(saved, tmp_path, reader, index, position, how):
    example = EXAMPLES[reader][index]
    target = example.targets[position]
    example.make(tmp_path, saved)
    damage(tmp_path / target.file, how, target)
    error = example.call(tmp_path, saved)  # anything but a PetirError propagates: a traceback fails the test
    assert error is not None, f"{target.file} damaged ({how}) was read without an error"
    assert "\n" not in error and (target.named or Path(target.file).name) in error, error


def test_metrics_log_keeps_the_records_before_a_torn_last_line(tmp_path):
    """What looks like damage and is not: a crash mid-append tears the last record, which is dropped; a run resumed
    at step 0 keeps no record."""
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 0.5}\n{"step": 2, "lo')
    assert READERS["metrics-log"].read(path) == [{"step": 1, "loss": 0.5}]
    path.write_text("")
    assert READERS["metrics-log"].read(path) == []


# --- the bullets of issue 23 ----------------------------------------------------------------------------------------


def evaluate_cli(*argv: object) -> subprocess.CompletedProcess:
    """``python -m petir.evaluate`` as a user runs it (it starts Java for trec_eval)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", "petir.evaluate", *map(str, argv)], capture_output=True, text=True, env=env
    )


@pytest.mark.slow
def test_evaluate_reads_beir_qrels_as_it_reads_trec_qrels(tmp_path):
    write_run(RUN, tmp_path / "run.trec", "bm25")
    (tmp_path / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td0\t1\nq2\td3\t2\nq2\td1\t0\n")
    (tmp_path / "qrels.trec").write_text("q1 0 d0 1\nq2 0 d3 2\nq2 0 d1 0\n")
    beir = evaluate_cli(tmp_path / "test.tsv", tmp_path / "run.trec")
    trec = evaluate_cli(tmp_path / "qrels.trec", tmp_path / "run.trec")
    assert beir.returncode == trec.returncode == 0, beir.stderr
    assert json.loads(beir.stdout) == json.loads(trec.stdout) and json.loads(trec.stdout)["mrr@10"] == 0.625


@pytest.mark.slow
def test_evaluate_names_the_line_of_a_run_trec_eval_cannot_read(tmp_path):
    (tmp_path / "qrels.trec").write_text("q1 0 d0 1\n")
    (tmp_path / "run.trec").write_text("q1 Q0 d0 1 2.0 bm25\nq1 Q0 d1 2\n")
    result = evaluate_cli(tmp_path / "qrels.trec", tmp_path / "run.trec")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().endswith(
        "run.trec:2: run line must be 'qid Q0 docid rank score tag' (6 columns), got 4: 'q1 Q0 d1 2'"
    )


def test_evaluate_reports_a_missing_run_as_missing(tmp_path):
    (tmp_path / "qrels.trec").write_text("q1 0 d0 1\n")
    error = run_cli(evaluate_main, [str(tmp_path / "qrels.trec"), str(tmp_path / "nothere.trec")])
    assert error is not None and error.endswith("nothere.trec: no such run file"), error


@pytest.mark.parametrize("model", ["not-a-model", "absent"])
def test_rerank_model_that_is_no_model_directory_says_so(saved, tmp_path, model):
    write_rerank_inputs(tmp_path, saved)
    if model == "not-a-model":
        (tmp_path / model).mkdir()
        (tmp_path / model / "notes.txt").write_text("not a model")
    error = rerank(tmp_path, saved, model=tmp_path / model)
    expected = "is not a model directory (no config.json)" if model == "not-a-model" else "no such model directory"
    assert error is not None and expected in error and "network" not in error, error


# --- loading runs no code -------------------------------------------------------------------------------------------


class _Payload:
    """Unpickled, it writes ``marker``: what a crafted pickle would do instead (run code)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('code ran')",)


@pytest.fixture
def pickled_backbone(saved, tmp_path) -> Path:
    """The tiny backbone with its weights as a pickle (pytorch_model.bin) that runs code when unpickled in full."""
    directory = tmp_path / "pickled"
    shutil.copytree(saved["backbone"], directory)
    (directory / "model.safetensors").unlink()
    with open(directory / "pytorch_model.bin", "wb") as out:
        pickle.dump({"weights": _Payload(tmp_path / "ran")}, out, protocol=2)  # torch.load's own protocol
    return directory


def test_a_pickled_backbone_is_refused_without_running_its_code(pickled_backbone, tmp_path):
    from petir.backbone import load_backbone

    with pytest.raises(PetirError, match="cannot load backbone .*pickled.*UnpicklingError") as error:
        load_backbone(str(pickled_backbone))
    assert "\n" not in str(error.value) and not (tmp_path / "ran").exists()


@pytest.mark.parametrize("name", ["/nonexistent/model", "./models/mine", "a/b/c"])
def test_a_backbone_path_that_does_not_exist_is_named_as_a_path_not_a_hub_id(name):
    from petir.backbone import load_backbone

    with pytest.raises(PetirError, match=f"cannot load backbone .*no such directory: {name}") as error:
        load_backbone(name)
    assert "\n" not in str(error.value) and "Repo id" not in str(error.value)


def test_a_model_directory_naming_a_pickled_backbone_runs_no_code(saved, pickled_backbone, tmp_path):
    """config.json's backbone decides what is loaded: a received model directory may name any path or hub model."""
    model = shutil.copytree(saved["reranker"], tmp_path / "model")
    config = json.loads((model / CONFIG_FILE).read_text())
    (model / CONFIG_FILE).write_text(json.dumps({**config, "backbone": str(pickled_backbone)}))
    with pytest.raises(PetirError, match="cannot load backbone"):
        tasks.load(model)
    assert not (tmp_path / "ran").exists()


def test_a_backbone_asking_for_remote_code_gets_none(saved, tmp_path):
    directory = shutil.copytree(saved["backbone"], tmp_path / "remote")
    config = json.loads((directory / "config.json").read_text())
    auto_map = {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"}
    (directory / "config.json").write_text(json.dumps({**config, "model_type": "evil", "auto_map": auto_map}))
    (directory / "evil.py").write_text(f"open({str(tmp_path / 'ran')!r}, 'w').write('code ran')\n")
    from petir.backbone import load_backbone

    with pytest.raises(PetirError, match="cannot load backbone") as error:
        load_backbone(str(directory))
    assert "\n" not in str(error.value) and not (tmp_path / "ran").exists()


def test_the_fingerprint_is_checked_before_the_trained_tensors_are_read(saved, tmp_path):
    model = shutil.copytree(saved["reranker"], tmp_path / "model")
    config = json.loads((model / CONFIG_FILE).read_text())
    (model / CONFIG_FILE).write_text(json.dumps({**config, "backbone_fingerprint": "0" * 16}))
    (model / STATE_FILE).write_bytes(BINARY)
    with pytest.raises(ModelMismatchError, match="fingerprint 0000000000000000"):
        tasks.load(model)


# --- model and checkpoint files that no single damage covers -------------------------------------------------------


def test_a_bi_encoder_state_file_from_another_method_is_one_line(tiny_backbone, tmp_path):
    lora = BiEncoder(str(tiny_backbone), "lora").save(tmp_path / "lora")
    adapter = BiEncoder(str(tiny_backbone), "adapter").save(tmp_path / "adapter")
    (adapter / STATE_FILE).write_bytes((lora / STATE_FILE).read_bytes())
    with pytest.raises(PetirError, match=f"{STATE_FILE} does not fit adapter on this backbone") as error:
        tasks.load(adapter)
    assert "\n" not in str(error.value)

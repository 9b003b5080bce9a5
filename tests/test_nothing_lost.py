"""Nothing lost: petir refuses outputs it cannot write, never deletes or replaces what it did not write in this run
(unless --overwrite says so), recovers a checkpoint a kill left mid-swap, never unpickles a checkpoint, and never
reuses re-ranking scores of other inputs.

Cross-cutting: the same promise over petir.files, petir.trainer, petir.train and petir.rerank, kept in one file
rather than in the ``test_<module>.py`` files that mirror the package."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from conftest import TINY_PASSAGES, flags, run_cli
from petir import tasks
from petir.checkpoint import LEGACY_TRAINER_STATE, TRAINER_STATE
from petir.data import Document, write_pyserini_collection, write_run, write_topics
from petir.errors import PetirError
from petir.files import (
    TEMPORARY_MARK,
    is_petir_temporary,
    recover_directory,
    replace_directory,
    staged_directory,
)
from petir.run_directory import CHECKPOINT_DIR, MODEL_DIR, SUMMARY_FILE
from petir.tasks.rerank import CrossEncoder
from petir.tasks.retrieval import BiEncoder


def tree(root: Path) -> dict[str, str]:
    """Every path under ``root`` with a digest of its bytes ("dir" for a directory): equal trees, equal files."""
    return {
        str(path.relative_to(root)): "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
    }


def assert_one_line(error: str | None, *names: object) -> None:
    assert error is not None, "accepted"
    assert "\n" not in error and ": error: " in error, error
    for name in names:
        assert str(name) in error, error


# -- the seven CLIs --------------------------------------------------------------------------------------------
def _train(out: Path) -> tuple[Callable, list[str]]:
    from petir.train import main

    return main, flags(data="scifact", output=out)


def _rerank(out: Path) -> tuple[Callable, list[str]]:
    from petir.rerank import main

    return main, flags(run="run.trec", topics="t.tsv", corpus="c.jsonl", model="m", output=out)


def _onnx(out: Path) -> tuple[Callable, list[str]]:
    from petir.onnx import main

    return main, ["model", *flags(output=out)]


def _export(out: Path) -> tuple[Callable, list[str]]:
    from petir.export import main

    return main, ["model", *flags(output=out)]


def _workspace(out: Path) -> tuple[Callable, list[str]]:
    from petir.workspace import main

    return main, flags(data="scifact", output=out)


def _evaluate(out: Path) -> tuple[Callable, list[str]]:
    from petir.evaluate import main

    return main, ["qrels.txt", "run.trec", *flags(output=out)]


def _reproduce(out: Path) -> tuple[Callable, list[str]]:
    from petir.reproduce import main

    return main, ["retrieval", *flags(data=tiny_beir_data(), output=out)]


def tiny_beir_data() -> Path:
    """A tiny BEIR directory in the working directory (a test's tmp_path, see ``in_tmp``)."""
    from test_reproduce import tiny_beir

    root = Path.cwd() / "beir"
    return root if root.is_dir() else tiny_beir(root)


#: Each CLI, its argv around an --output, and whether that output is a directory.
CLIS = {
    "train": (_train, True),
    "rerank": (_rerank, False),
    "onnx": (_onnx, True),
    "export": (_export, True),
    "workspace": (_workspace, True),
    "evaluate": (_evaluate, False),
    "reproduce": (_reproduce, True),
}


def test_the_table_holds_every_cli_with_an_output():
    """A new command with an --output is covered here only once it is in CLIS: this test says so."""
    import petir

    sources = {path.stem: path.read_text() for path in Path(petir.__file__).parent.glob("*.py")}
    assert {name for name, text in sources.items() if '"--output"' in text and "def main(" in text} == set(CLIS)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch) -> Path:
    """Run in tmp_path, with petir's cache there too."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PETIR_CACHE", str(tmp_path / "cache"))
    return tmp_path


def bad_outputs(tmp_path: Path, directory: bool) -> dict[str, tuple[Path, str]]:
    """Outputs no CLI can write, with what the one-line error must say."""
    (tmp_path / "a-file").write_text("mine\n")
    (tmp_path / "a-directory").mkdir()
    wrong_kind = tmp_path / ("a-file" if directory else "a-directory")
    return {
        "under-a-file": (tmp_path / "a-file" / "out", "is a file, not a directory"),
        # Tests run as root, whom permissions do not stop; /proc takes no new files from anyone.
        "unwritable": (Path("/proc/petir-test/out"), "cannot write in"),
        "wrong-kind": (wrong_kind, "give a file path" if not directory else "give a directory"),
    }


@pytest.mark.parametrize("case", ["under-a-file", "unwritable", "wrong-kind"])
@pytest.mark.parametrize("cli_name", list(CLIS))
def test_an_output_petir_cannot_write_is_one_line_in_every_cli(in_tmp, cli_name, case):
    build, directory = CLIS[cli_name]
    output, says = bad_outputs(in_tmp, directory)[case]
    before = tree(in_tmp)
    main, argv = build(output)
    assert_one_line(run_cli(main, argv), output, says)
    after = {path: digest for path, digest in tree(in_tmp).items() if not path.startswith(("beir", "cache"))}
    assert after == before


# -- training --------------------------------------------------------------------------------------------------
@pytest.fixture
def triples(tmp_path) -> Path:
    path = tmp_path / "triples.tsv"
    path.write_text("the cat\tcat sat on the mat\ta dog\ncancer risk\trisk increase in cancer\tgene\n" * 4)
    return path


def train_argv(tiny_backbone: Path, triples: Path, output: Path, *extra: str, steps: int = 2) -> list[str]:
    argv = flags(triples=triples, backbone=tiny_backbone, method="iaa-l", steps=steps, batch_size=2, dev_queries=0)
    return [*argv, *flags(seed=5, log_every=1, device="cpu", threads=1, output=output), *extra]


def test_a_finished_run_or_a_foreign_directory_is_refused_and_kept_byte_identical(tiny_backbone, triples, tmp_path):
    from petir.train import main

    finished = tmp_path / "finished"  # no checkpoint left: --save-every past the last step
    assert run_cli(main, train_argv(tiny_backbone, triples, finished, "--save-every", "100")) is None
    assert not (finished / CHECKPOINT_DIR).exists()
    foreign = tmp_path / "foreign"
    (foreign / MODEL_DIR).mkdir(parents=True)
    (foreign / MODEL_DIR / "weights.bin").write_bytes(b"someone else's model")
    (foreign / "notes.txt").write_text("keep me\n")
    stopped = tmp_path / "stopped"  # a run that logged, then died before its first checkpoint
    stopped.mkdir()
    (stopped / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    for output, says in (
        (finished, "holds a finished run (summary.json)"),
        (foreign, "not empty (model, notes.txt) and holds no petir run"),
        (stopped, "stopped before its first checkpoint (metrics.jsonl)"),
    ):
        before = tree(output)
        for resume in ([], ["--resume"]):
            error = run_cli(main, train_argv(tiny_backbone, triples, output, *resume))
            assert_one_line(error, output, "no checkpoint" if resume else says)
        assert tree(output) == before


def test_overwrite_replaces_only_what_a_run_writes(tiny_backbone, triples, tmp_path):
    from petir.train import main

    output = tmp_path / "run"
    assert run_cli(main, train_argv(tiny_backbone, triples, output, "--save-every", "1")) is None
    (output / "notes.txt").write_text("keep me\n")
    (output / "plots").mkdir()
    (output / "plots" / "loss.png").write_bytes(b"\x89PNG")
    kept = {path: digest for path, digest in tree(output).items() if path.startswith(("notes", "plots"))}
    error = run_cli(main, train_argv(tiny_backbone, triples, output, "--resume", "--overwrite"))
    assert_one_line(error, "--resume", "--overwrite")
    assert run_cli(main, train_argv(tiny_backbone, triples, output, "--overwrite", steps=3)) is None
    assert json.loads((output / SUMMARY_FILE).read_text())["steps"] == 3
    assert {path: digest for path, digest in tree(output).items() if path in kept} == kept
    assert not [path for path in tree(output) if TEMPORARY_MARK in path]


# -- the checkpoint window -------------------------------------------------------------------------------------
#: Runs petir.train with the second of the checkpoint swap's two renames never happening: the process dies right
#: after the first (the old checkpoint moved aside), as a kill there would leave it.
DIE_BETWEEN_RENAMES = """
import os, sys
from pathlib import Path
rename = os.replace
def replace(source, target):
    rename(source, target)
    if Path(target).name == ".checkpoint.petir-old":
        os._exit(9)
os.replace = replace
from petir import cli
from petir.train import main
cli.run(main, sys.argv[1:])
"""


def test_a_kill_between_the_checkpoint_renames_resumes_from_the_good_copy(tiny_backbone, triples, tmp_path):
    from petir.train import main

    reference, killed = tmp_path / "reference", tmp_path / "killed"
    assert run_cli(main, train_argv(tiny_backbone, triples, reference, "--save-every", "2", steps=6)) is None
    argv = train_argv(tiny_backbone, triples, killed, "--save-every", "2", steps=6)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    died = subprocess.run([sys.executable, "-c", DIE_BETWEEN_RENAMES, *argv], env=env, capture_output=True, text=True)
    assert died.returncode == 9, died.stderr[-2000:]  # at the second checkpoint (step 4): the first had no old copy
    assert not (killed / CHECKPOINT_DIR).exists() and (killed / ".checkpoint.petir-old").is_dir()
    assert list(killed.glob(".checkpoint.petir-staging-*"))  # the new copy, complete, but never renamed

    assert run_cli(main, [*argv, "--resume"]) is None
    expected, found = (tasks.load(path / MODEL_DIR).trainable_state_dict() for path in (reference, killed))
    assert expected.keys() == found.keys()
    assert all(torch.equal(expected[name], found[name]) for name in expected)
    assert not [path for path in tree(killed) if TEMPORARY_MARK in path]  # the dead run's staging was removed


def test_recovery_restores_the_old_copy_only_where_the_new_one_is_missing(tmp_path):
    target, backup = tmp_path / "checkpoint", tmp_path / ".checkpoint.petir-old"
    backup.mkdir()
    (backup / "state").write_text("old")
    recover_directory(target)
    assert (target / "state").read_text() == "old" and not backup.exists()
    backup.mkdir()  # a kill while the old copy was being removed, after the new one was in place
    (backup / "state").write_text("older")
    recover_directory(target)
    assert (target / "state").read_text() == "old" and not backup.exists()


def test_staging_is_recognisable_and_a_live_writers_is_kept(tmp_path):
    target = tmp_path / "out"
    live = tmp_path / f".out.petir-staging-{os.getppid()}-abc"  # a live process (pytest's parent)
    live.mkdir()
    with staged_directory(target) as staging:
        assert is_petir_temporary(staging.name) and staging.parent == tmp_path
        (staging / "f").write_text("new")
    assert live.is_dir() and (target / "f").read_text() == "new"


def test_replacing_a_directory_is_the_callers_explicit_choice(tiny_backbone, tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "f").write_text("old")
    (target / "mine.txt").write_text("not petir's")
    before = tree(target)
    with pytest.raises(PetirError, match="already exists; petir does not replace it"):
        with staged_directory(target):
            pass
    with pytest.raises(PetirError, match=r"holds 1 file\(s\) the new output does not replace \(e.g. mine.txt\)"):
        with staged_directory(target, replace=True) as staging:
            (staging / "f").write_text("new")
    assert tree(target) == before
    (target / "mine.txt").unlink()
    source = tmp_path / "source"
    source.mkdir()
    (source / "f").write_text("new")
    replace_directory(source, target, replace=True)
    assert (target / "f").read_text() == "new"
    model = BiEncoder(str(tiny_backbone), "bitfit")
    with pytest.raises(PetirError, match="already exists"):
        model.save(target)


# -- no pickle on resume ---------------------------------------------------------------------------------------
class _Exploit:
    """Unpickling this creates ``path``: what a crafted trainer_state.pt could do, with any code."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_crafted_pickle_checkpoint_never_runs(tiny_backbone, tmp_path):
    from test_trainer import make_trainer

    make_trainer(tiny_backbone, tmp_path, steps=2).train()
    marker = tmp_path / "pwned"
    legacy = tmp_path / CHECKPOINT_DIR / LEGACY_TRAINER_STATE
    legacy.write_bytes(pickle.dumps({"step": _Exploit(marker)}))
    make_trainer(tiny_backbone, tmp_path, steps=2).train(resume=True)  # beside the data-only state: ignored
    assert not marker.exists()
    for name in (TRAINER_STATE, "trainer_state.safetensors"):
        (tmp_path / CHECKPOINT_DIR / name).unlink()
    with pytest.raises(PetirError, match=f"{LEGACY_TRAINER_STATE}: a checkpoint of an older petir") as error:
        make_trainer(tiny_backbone, tmp_path, steps=4).train(resume=True)
    assert "\n" not in str(error.value) and not marker.exists()


# -- exports ---------------------------------------------------------------------------------------------------
@pytest.fixture
def lora_model(tiny_backbone, tmp_path) -> Path:
    return BiEncoder(str(tiny_backbone), "lora").save(tmp_path / "model")


def test_export_never_replaces_the_model_nor_a_foreign_directory(lora_model, tmp_path):
    from petir.export import main

    before = tree(tmp_path)
    for output, says in (
        (lora_model, "the same as, or holds, the model directory"),
        (tmp_path, "the same as, or holds, the model directory"),
        (lora_model / "plain", "inside the model directory"),
    ):
        for overwrite in ([], ["--overwrite"]):
            assert_one_line(run_cli(main, [str(lora_model), *flags(output=output), *overwrite]), says)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me\n")
    before = tree(tmp_path)
    assert_one_line(run_cli(main, [str(lora_model), *flags(output=foreign)]), "not empty (notes.txt)", "--overwrite")
    error = run_cli(main, [str(lora_model), *flags(output=foreign), "--overwrite"])
    assert_one_line(error, "does not replace (e.g. notes.txt)")
    assert tree(tmp_path) == before
    plain = tmp_path / "plain"
    assert run_cli(main, [str(lora_model), *flags(output=plain)]) is None
    assert_one_line(run_cli(main, [str(lora_model), *flags(output=plain)]), "not empty", "--overwrite")
    assert run_cli(main, [str(lora_model), *flags(output=plain), "--overwrite"]) is None
    assert not [path for path in tree(tmp_path) if TEMPORARY_MARK in path]


def test_onnx_export_refuses_an_existing_export_unless_overwrite(lora_model, tmp_path):
    from petir.onnx import main

    assert run_cli(main, [str(lora_model)]) is None
    exported = tree(lora_model)
    assert_one_line(run_cli(main, [str(lora_model)]), lora_model / "onnx", "--overwrite")
    assert_one_line(run_cli(main, [str(lora_model), *flags(output=lora_model)]), "the model directory")
    assert tree(lora_model) == exported
    (lora_model / "onnx" / "notes.txt").write_text("keep me\n")
    assert_one_line(run_cli(main, [str(lora_model), "--overwrite"]), "does not replace (e.g. notes.txt)")
    (lora_model / "onnx" / "notes.txt").unlink()
    assert run_cli(main, [str(lora_model), "--overwrite"]) is None


# -- re-ranking ------------------------------------------------------------------------------------------------
@pytest.fixture
def rerank_inputs(tiny_backbone, tmp_path) -> dict[str, Path]:
    corpus = {f"d{i}": Document(f"d{i}", "", text) for i, text in enumerate(TINY_PASSAGES)}
    write_pyserini_collection(corpus, tmp_path / "collection")
    write_topics({"q1": "cat on a mat", "q2": "cancer risk"}, tmp_path / "topics.tsv")
    run = {"q1": [(f"d{i}", 10.0 - i) for i in range(5)], "q2": [(f"d{i}", 10.0 - i) for i in range(3, 8)]}
    write_run(run, tmp_path / "run.trec", "bm25")
    return {
        "model": CrossEncoder(str(tiny_backbone), "adapter", max_length=32).save(tmp_path / "reranker"),
        "corpus": tmp_path / "collection" / "docs.jsonl",
        "topics": tmp_path / "topics.tsv",
        "run": tmp_path / "run.trec",
    }


def rerank_argv(inputs: dict[str, Path], output: Path, *extra: str) -> list[str]:
    return [*flags(**inputs, output=output, depth=3), *extra]


def test_rerank_refuses_an_existing_output_unless_overwrite(rerank_inputs, tmp_path):
    from petir.rerank import main

    output = tmp_path / "out.trec"
    output.write_text("my own run\n")
    assert_one_line(run_cli(main, rerank_argv(rerank_inputs, output)), output, "--overwrite")
    assert output.read_text() == "my own run\n"
    assert run_cli(main, rerank_argv(rerank_inputs, output, "--overwrite")) is None
    assert output.read_text().startswith("q1 Q0 ")


def interrupt_rerank(argv: list[str], monkeypatch) -> None:
    """Run petir.rerank with ``argv``, stopped once every query is scored, before the output is written."""
    import petir.rerank as rerank

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(rerank, "write_run", interrupt)
        with pytest.raises(SystemExit):
            run_cli(rerank.main, argv)


def test_interrupted_rerank_scores_are_reused_only_for_the_same_inputs(rerank_inputs, tmp_path, monkeypatch):
    import petir.rerank as rerank

    fresh = tmp_path / "fresh.trec"
    assert run_cli(rerank.main, rerank_argv(rerank_inputs, fresh)) is None
    output = tmp_path / "out.trec"
    partial = tmp_path / "out.trec.partial.jsonl"
    interrupt_rerank(rerank_argv(rerank_inputs, output), monkeypatch)
    kept = partial.read_bytes()
    edited = tmp_path / "edited.trec"
    edited.write_text(rerank_inputs["run"].read_text().replace(" d1 ", " d9 "))
    other_topics = tmp_path / "other-topics.tsv"
    other_topics.write_text("q1\tcat\nq2\tcancer risk\n")
    for changed, says in ((flags(run=edited), "other run"), (flags(topics=other_topics), "other topics")):
        error = run_cli(rerank.main, rerank_argv(rerank_inputs, output, *changed))
        assert_one_line(error, partial, says, "--overwrite")
        assert partial.read_bytes() == kept and not output.exists()

    calls = []
    original = CrossEncoder.pair_scorer
    monkeypatch.setattr(CrossEncoder, "pair_scorer", lambda *a: lambda q, p: calls.append(1) or original(*a)(q, p))
    assert run_cli(rerank.main, rerank_argv(rerank_inputs, output)) is None  # same inputs: continued, not re-scored
    assert not calls and output.read_text() == fresh.read_text() and not partial.exists()

    interrupt_rerank(rerank_argv(rerank_inputs, tmp_path / "again.trec", *flags(run=edited)), monkeypatch)
    again = tmp_path / "again.trec"
    error = run_cli(rerank.main, rerank_argv(rerank_inputs, again))
    assert_one_line(error, "other run", "--overwrite")
    assert run_cli(rerank.main, rerank_argv(rerank_inputs, again, "--overwrite")) is None
    assert again.read_text() == fresh.read_text()


# -- workspace, evaluate, reproduce ----------------------------------------------------------------------------
def test_workspace_keeps_identical_files_and_refuses_to_replace_others(in_tmp, monkeypatch):
    from petir.workspace import QRELS_FILE, TOPICS_FILE, Workspace, main

    monkeypatch.setattr(Workspace, "lucene_index", property(lambda self: self.root))  # no Java needed here
    data, output = tiny_beir_data(), in_tmp / "out"
    assert run_cli(main, flags(data=data, output=output)) is None
    written = tree(output)
    assert run_cli(main, flags(data=data, output=output)) is None  # the same content: fine, untouched
    assert tree(output) == written
    (output / TOPICS_FILE).write_text("q6\tmy own topics\n")
    before = tree(output)
    assert_one_line(run_cli(main, flags(data=data, output=output)), output / TOPICS_FILE, "--overwrite")
    assert tree(output) == before
    assert run_cli(main, [*flags(data=data, output=output), "--overwrite"]) is None
    assert tree(output) == written and QRELS_FILE in written


def test_evaluate_refuses_to_replace_an_existing_output(in_tmp):
    from petir.evaluate import main

    output = in_tmp / "metrics.json"
    output.write_text("{}\n")
    assert_one_line(run_cli(main, ["qrels.txt", "run.trec", *flags(output=output)]), output, "--overwrite")
    assert output.read_text() == "{}\n"


def test_reproduce_continues_its_own_study_directory_and_refuses_a_foreign_one(in_tmp):
    from petir.reproduce import main
    from petir.study import STAGES
    from petir.study.runner import COMMANDS_FILE, check_study_directory

    foreign = in_tmp / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me\n")
    before = tree(foreign)
    assert_one_line(run_cli(main, ["retrieval", *flags(data=tiny_beir_data(), output=foreign)]), foreign)
    assert tree(foreign) == before
    (foreign / COMMANDS_FILE).write_text("#!/usr/bin/env bash\n")
    assert check_study_directory(foreign, list(STAGES)) == foreign

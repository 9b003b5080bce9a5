"""Nothing lost, round two (issue 32): one writer per output (a second one, or a --resume of a live run, is refused
naming the holder's pid; a killed holder never blocks), --overwrite that replaces neither an input of the same
command nor a user's file, the metrics log rewritten only by rename, a final dev record made once however often a
run is resumed, and re-ranking scores keyed on the content of the passages."""

# ruff: noqa: F811  (the fixtures imported from test_nothing_lost are test arguments here)

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_nothing_lost import (  # noqa: F401  (its fixtures, used here as arguments)
    CLIS,
    assert_one_line,
    in_tmp,
    interrupt_rerank,
    rerank_argv,
    rerank_inputs,
    train_argv,
    tree,
    triples,
)

from conftest import run_cli
from petir.errors import PetirError
from petir.files import MANIFEST, output_lock
from petir.run_directory import BOARD_DIR, CHECKPOINT_DIR, METRICS_FILE, MODEL_DIR, SUMMARY_FILE, read_metrics

#: Holds the lock of argv[1] (a directory if argv[2] is "dir") until killed.
HOLD = """
import sys, time
from petir.files import output_lock
with output_lock(sys.argv[1], directory=sys.argv[2] == "dir"):
    print("held", flush=True)
    time.sleep(600)
"""


def hold_lock(path: Path, directory: bool) -> subprocess.Popen:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path), "dir" if directory else "file"], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline() == "held\n"
    return holder


def kill(holder: subprocess.Popen) -> None:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    holder.stdout.close()


# -- one writer per output -------------------------------------------------------------------------------------
#: petir.workspace is left out on purpose: petir.reproduce runs it on its own (locked) study directory, and its
#: writes are idempotent (an identical file is kept, another refused).
@pytest.mark.parametrize("cli_name", sorted(set(CLIS) - {"workspace"}))
def test_a_second_writer_is_refused_in_one_line_naming_the_holder(in_tmp, cli_name):
    make_cli, directory = CLIS[cli_name]
    output = in_tmp / "out"
    holder = hold_lock(output, directory)
    try:
        main, argv = make_cli(output)
        assert_one_line(run_cli(main, argv), output, f"pid {holder.pid}", "another petir process")
    finally:
        kill(holder)


def test_resume_of_a_live_run_is_refused_and_the_run_is_left_as_it_is(tiny_backbone, triples, tmp_path):
    from petir.train import main

    output = tmp_path / "run"
    assert run_cli(main, train_argv(tiny_backbone, triples, output, "--save-every", "1")) is None
    before = tree(output)
    holder = hold_lock(output, directory=True)  # the live run
    try:
        for extra in (["--resume"], ["--overwrite"], []):
            error = run_cli(main, train_argv(tiny_backbone, triples, output, *extra, steps=3))
            assert_one_line(error, output, f"pid {holder.pid}")
        assert tree(output) == before
    finally:
        kill(holder)


def test_a_killed_holder_never_blocks_the_next_writer(in_tmp):
    from petir.evaluate import main

    (in_tmp / "qrels.txt").write_text("q1 0 d1 1\n")
    (in_tmp / "run.trec").write_text("q1 Q0 d1 1 1.0 t\n")
    output = in_tmp / "metrics.json"
    kill(hold_lock(output, directory=False))
    assert (in_tmp / ".metrics.json.petir-lock").exists()  # the dead holder's file: its lock went with it
    assert run_cli(main, ["qrels.txt", "run.trec", "--output", str(output)]) is None
    assert json.loads(output.read_text())["ndcg@10"] == 1.0
    assert not (in_tmp / ".metrics.json.petir-lock").exists()
    with output_lock(output, directory=False), output_lock(output, directory=False):  # re-entrant in a process
        pass


#: Holds the cache lock of the workspace of corpus argv[1], writes its collection (one line, argv[2]) after a
#: second, then lets go: another run filling the cache while we start.
FILL_CACHE = """
import sys, time
from petir.files import cache_lock
from petir.workspace import Workspace
workspace = Workspace(sys.argv[1], {}, threads=1)
with cache_lock(workspace.root):
    print("held", flush=True)
    time.sleep(1)
    (workspace.root / "collection").mkdir(parents=True)
    (workspace.root / "collection" / "docs.jsonl").write_text(sys.argv[2] + "\\n")
"""


def test_runs_started_together_build_the_cache_once(tmp_path, monkeypatch, capsys):
    """Two lanes of a study started at once both found the collection missing; the second failed on the first's
    temporary file. Now it waits for the lock, then reuses what the first built."""
    from petir.workspace import Workspace

    monkeypatch.setenv("PETIR_CACHE", str(tmp_path / "cache"))
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"_id": "d1", "text": "a cat"}\n')
    other = subprocess.Popen(
        [sys.executable, "-c", FILL_CACHE, str(corpus), '{"id": "d1", "contents": "theirs"}'],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PETIR_CACHE": str(tmp_path / "cache")},
    )
    assert other.stdout.readline() == "held\n"
    collection = Workspace(corpus, {}, threads=1).collection
    assert other.wait() == 0
    other.stdout.close()
    assert (collection / "docs.jsonl").read_text() == '{"id": "d1", "contents": "theirs"}\n'  # reused, not rebuilt
    assert f"waiting for petir process {other.pid}" in capsys.readouterr().err
    assert not list((tmp_path / "cache").glob(".*petir-lock"))  # released and removed
    (workspace := Workspace(corpus, {}, threads=1)).root.joinpath("lucene-index").mkdir()  # not petir's index
    with pytest.raises(PetirError, match="lucene-index exists but holds no Lucene index; remove it"):
        workspace.lucene_index  # noqa: B018  (refused under the lock as before it, not passed on to Pyserini)


# -- --overwrite never replaces an input -----------------------------------------------------------------------
def test_rerank_overwrite_never_replaces_its_own_run(rerank_inputs, tmp_path):
    from petir.rerank import main

    run = rerank_inputs["run"]
    linked = tmp_path / "linked.trec"
    os.link(run, linked)  # another name, the same file
    before = run.read_bytes()
    for output in (run, linked, tmp_path / "." / run.name):
        error = run_cli(main, [*rerank_argv(rerank_inputs, output), "--overwrite"])
        assert_one_line(error, "--run", "reads")
    assert run.read_bytes() == before


def test_evaluate_overwrite_never_replaces_its_run_or_qrels(in_tmp):
    from petir.evaluate import main

    (in_tmp / "qrels.txt").write_text("q1 0 d1 1\n")
    (in_tmp / "run.trec").write_text("q1 Q0 d1 1 1.0 t\n")
    before = tree(in_tmp)
    for output, name in (("run.trec", "run"), ("qrels.txt", "qrels"), ("./sub/../run.trec", "run")):
        error = run_cli(main, ["qrels.txt", "run.trec", "--output", output, "--overwrite"])
        assert_one_line(error, f"the {name} this command reads")
    assert tree(in_tmp) == before


# -- --overwrite replaces only what petir wrote ----------------------------------------------------------------
def test_overwrite_keeps_a_users_files_in_model_and_tensorboard(tiny_backbone, triples, tmp_path):
    from petir.train import main

    output = tmp_path / "run"
    assert run_cli(main, train_argv(tiny_backbone, triples, output, "--save-every", "1")) is None
    (output / BOARD_DIR).mkdir()
    (output / BOARD_DIR / "my-notes.txt").write_text("mine\n")
    assert run_cli(main, train_argv(tiny_backbone, triples, output, "--overwrite", steps=3)) is None
    assert json.loads((output / SUMMARY_FILE).read_text())["steps"] == 3
    assert (output / BOARD_DIR / "my-notes.txt").read_text() == "mine\n"

    (output / MODEL_DIR / "my-weights.bin").write_bytes(b"mine")  # in a folder the run replaces whole
    before = tree(output)
    error = run_cli(main, train_argv(tiny_backbone, triples, output, "--overwrite"))
    assert_one_line(error, output / MODEL_DIR / "my-weights.bin", "not among the files petir recorded writing")
    assert tree(output) == before


def test_overwrite_beside_a_users_files_keeps_them_as_the_refusal_says(tiny_backbone, triples, tmp_path):
    from petir.train import main

    output = tmp_path / "mine"
    (output / BOARD_DIR).mkdir(parents=True)
    (output / BOARD_DIR / "events.out.tfevents.1.mine").write_bytes(b"my own curves")
    (output / "notes.txt").write_text("keep me\n")
    kept = tree(output)
    assert_one_line(run_cli(main, train_argv(tiny_backbone, triples, output)), "(they are kept)")
    assert run_cli(main, train_argv(tiny_backbone, triples, output, "--overwrite")) is None
    assert run_cli(main, train_argv(tiny_backbone, triples, output, "--overwrite")) is None  # its own run again
    assert {path: digest for path, digest in tree(output).items() if path in kept} == kept
    assert (output / MODEL_DIR).is_dir() and (output / MANIFEST).is_file()


# -- logs: rewritten by rename, the final dev record made once ------------------------------------------------
def stop_before_the_summary(trainer, monkeypatch) -> None:
    """Run ``trainer`` to its end, stopped as a kill between saving model/ and writing summary.json would stop it."""
    import petir.trainer

    write = petir.trainer.write_json_atomic

    def killed(path, value):
        if Path(path).name == SUMMARY_FILE:
            raise KeyboardInterrupt
        return write(path, value)

    with monkeypatch.context() as patch:
        patch.setattr(petir.trainer, "write_json_atomic", killed)
        with pytest.raises(KeyboardInterrupt):
            trainer.train()


def test_a_resume_after_a_kill_before_the_summary_logs_one_final_dev_check(tiny_backbone, tmp_path, monkeypatch):
    from test_trainer import make_trainer

    stop_before_the_summary(make_trainer(tiny_backbone, tmp_path, steps=4, eval_every=2), monkeypatch)
    assert (tmp_path / MODEL_DIR).is_dir() and not (tmp_path / SUMMARY_FILE).exists()
    for _ in range(2):  # resumed twice: still one record per check
        summary = make_trainer(tiny_backbone, tmp_path, steps=4, eval_every=2).train(resume=True)
        dev_steps = [record["step"] for record in read_metrics(tmp_path / METRICS_FILE) if "dev" in record]
        assert dev_steps == [0, 2, 4] and summary["dev_checks"] == 3


def test_resume_rewrites_the_log_by_rename_never_in_place(tiny_backbone, tmp_path):
    from test_trainer import make_trainer

    make_trainer(tiny_backbone, tmp_path, steps=4).train()
    log = tmp_path / METRICS_FILE
    records, before = read_metrics(log), log.read_bytes()
    assert (tmp_path / CHECKPOINT_DIR).is_dir()
    # A second name for the old log's inode: it keeps that inode from being reused by a later file (which made an
    # inode comparison alone flaky), and shows any write made in place.
    os.link(log, tmp_path / "old-log")
    make_trainer(tiny_backbone, tmp_path, steps=4).train(resume=True)
    assert not os.path.samefile(log, tmp_path / "old-log")  # a kill mid-rewrite leaves the old log whole
    assert (tmp_path / "old-log").read_bytes() == before
    # the final dev check is made again on resume (once: the old one is dropped), so only its timings may differ
    assert untimed(read_metrics(log)) == untimed(records)


def untimed(records: list[dict]) -> list[dict]:
    """Log records without their timings (``*_s``), which differ between two runs of the same steps."""
    return [{key: value for key, value in record.items() if not key.endswith("_s")} for record in records]


# -- re-ranking scores keyed on content ------------------------------------------------------------------------
def test_partial_scores_are_not_reused_for_a_corpus_edited_with_size_and_time_put_back(
    rerank_inputs, tmp_path, monkeypatch
):
    import petir.rerank as rerank

    output = tmp_path / "out.trec"
    interrupt_rerank(rerank_argv(rerank_inputs, output), monkeypatch)
    corpus = rerank_inputs["corpus"]
    stat, text = corpus.stat(), corpus.read_text()
    corpus.write_text(text.replace("cat", "cow"))  # same size
    os.utime(corpus, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (corpus.stat().st_size, corpus.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    error = run_cli(rerank.main, rerank_argv(rerank_inputs, output))
    assert_one_line(error, "other passages", "--overwrite")
    assert not output.exists()

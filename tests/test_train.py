"""petir.train as a user meets it: --help, one-line errors on bad input, and small real runs."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import flags, require_data, run_cli
from petir import tasks, train
from petir.cli import UsageError, run
from petir.train import main as train_main


@pytest.mark.slow  # a fresh interpreter importing torch: about 10 s
def test_train_help_lists_every_method_with_its_options():
    result = subprocess.run([sys.executable, "-m", "petir.train", "--help"], capture_output=True, text=True)
    for text in (
        "iaa-l",
        "placement=layer",
        "Ma et al., CIKM 2022",
        "linked-side",
        "lora",
        "r=16",
        "num_prefix=32",
        "default lr 2e-05",
    ):
        assert text in result.stdout


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["--method", "connected"], "is now called 'linked'"),
        (["--method", "bitfit", "--budget", "6.7"], "bitfit has no 6.7 % budget preset; its presets: 0.5"),
        (["--method", "iaa-m", "--pet", "placement=layer"], "iaa-m fixes placement=model"),
        (["--method", "iaa-l", "--pet", "r"], "--pet expects KEY=VALUE, got 'r'"),
    ],
)
def test_method_and_budget_mistakes_are_one_line_errors(tmp_path, argv, error):
    message = run_cli(train_main, [*argv, "--data", str(tmp_path / "missing"), "--output", str(tmp_path / "out")])
    assert message is not None and error in message and "\n" not in message


def run_train(argv: list[str]) -> str | None:
    return run_cli(train_main, argv)


@pytest.fixture
def beir(tmp_path) -> Path:
    """A small valid BEIR directory."""
    root = tmp_path / "beir"
    (root / "qrels").mkdir(parents=True)
    docs = [("d1", "the cat sat"), ("d2", "a dog"), ("d3", "cancer risk"), ("d4", "gene protein"), ("d5", "mat")]
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": i, "title": "", "text": t}) + "\n" for i, t in docs))
    queries = [("q1", "cat"), ("q2", "dog"), ("q3", "risk"), ("q4", "gene")]
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in queries))
    (root / "qrels" / "train.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\nq3\td3\t1\nq4\td4\t1\n"
    )
    return root


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            lambda r: r.joinpath("corpus.jsonl").write_text('{"_id": "d1", "text": "ok"}\n{"_id": "d2", "text": \n'),
            r"corpus.jsonl:2: .*JSON",
        ),
        (
            lambda r: r.joinpath("qrels", "train.tsv").write_text("q1\td1\t1\nq2\td99\t1\n"),
            r"1 judged docids are not in the corpus .*'d99'",
        ),
        (
            lambda r: r.joinpath("queries.jsonl").write_text(
                '{"_id": "q1", "text": "cat"}\n{"_id": "q2", "text": "  "}\n'
            ),
            r"queries.jsonl:2: .*empty",
        ),
        (lambda r: r.joinpath("qrels", "train.tsv").unlink(), r"no 'train' split"),
    ],
    ids=["malformed-jsonl", "unknown-docid-in-qrels", "empty-query", "missing-split"],
)
def test_train_reports_bad_input_in_one_line(beir, tmp_path, damage, message):
    damage(beir)
    error = run_train(["--data", str(beir), "--output", str(tmp_path / "run"), "--steps", "1"])
    assert error is not None and "\n" not in error and ": error: " in error, error
    assert __import__("re").search(message, error), error


def test_train_reports_bad_flags_in_one_line(beir, tmp_path):
    error = run_train(["--data", str(beir), "--output", str(tmp_path / "r"), "--pet", "rank=4", "--method", "lora"])
    assert error is not None and "LoraConfig has no option rank" in error and "\n" not in error
    error = run_train(["--corpus", str(beir / "corpus.jsonl"), "--output", str(tmp_path / "r")])
    assert error is not None and "missing: --queries, --qrels" in error
    error = run_train(["--data", str(beir), "--output", str(tmp_path / "r"), "--dev-queries", "100"])
    assert error is not None and "--dev-queries 100 leaves no training query (there are 4)" in error


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--task", "rerank", "--pooling", "cls"], "--pooling applies to --task retrieval only"),
        (["--loss", "pointwise"], "--loss applies to --task rerank only"),
        (["--task", "rerank", "--negatives", "0"], "--negatives 0 leaves a re-ranker no passage to rank"),
        (["--triples", "t.tsv"], "--data cannot be combined with --triples"),
        (["--patience", "2", "--eval-every", "0"], "--patience counts dev checks"),
        (["--patience", "2", "--no-keep-best"], "--patience stops after the best dev check and --keep-best saves it"),
    ],
)
def test_flags_that_would_do_nothing_are_refused(beir, tmp_path, extra, message):
    error = run_train(["--data", str(beir), "--output", str(tmp_path / "r"), *extra])
    assert error is not None and message in error, error


def test_train_with_negatives_and_dev_pools_from_a_given_run(beir, tiny_backbone, tmp_path):
    """--negatives-run replaces petir's own BM25 (no Java needed): negatives and dev pools come from the run."""
    from petir.data import write_run

    run = {
        q: [(d, 1.0 / (rank + 1)) for rank, d in enumerate(["d1", "d2", "d3", "d4", "d5"])]
        for q in "q1 q2 q3 q4".split()
    }
    write_run(run, tmp_path / "bm25.trec", "bm25")
    argv = flags(data=beir, negatives_run=tmp_path / "bm25.trec", dev_queries=1, dev_depth=3, eval_every=2, lr=1e-3)
    tiny = flags(backbone=tiny_backbone, method="lora", steps=2, batch_size=2, device="cpu", output=tmp_path / "r")
    assert run_train([*argv, *tiny]) is None
    records = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "dev" in r] == [0, 2]
    (tmp_path / "partial.trec").write_text("q1 Q0 d1 1 1.0 x\n")
    argv = flags(data=beir, negatives_run=tmp_path / "partial.trec", dev_queries=1, output=tmp_path / "r2")
    error = run_train([*argv, *flags(backbone=tiny_backbone)])
    assert error is not None and "--negatives-run has no results for dev query" in error


def test_train_from_msmarco_triples(tiny_backbone, tmp_path):
    triples = tmp_path / "triples.tsv"
    rows = [
        ("cat on a mat", "the cat sat on the mat", "a dog"),
        ("cancer risk", "cancer risk increase", "a mat"),
        ("gene", "protein gene cell", "the cat"),
        ("dog", "a dog sat", "gene study"),
    ]
    triples.write_text("".join("\t".join(row) + "\n" for row in rows))
    tiny = flags(backbone=tiny_backbone, steps=3, batch_size=2, device="cpu", eval_every=3, lr=1e-3)
    error = run_train([*flags(triples=triples, dev_queries=1, method="adapter", output=tmp_path / "run"), *tiny])
    assert error is None, error
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "dev" in r] == [0, 3]  # one held-out query, ranked among its passages
    assert tasks.load(tmp_path / "run" / "model").method == "adapter"
    assert json.loads((tmp_path / "run" / "model" / "config.json").read_text())["pet_budget"] == "0.5"  # resolved
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["parameters"]["percent"] < 100


def test_train_from_msmarco_id_triples_read_in_place(tiny_backbone, tmp_path):
    """qid<TAB>pid<TAB>pid triples with an MS MARCO collection and queries file, all read from disk."""
    (tmp_path / "collection.tsv").write_text("".join(f"{i}\t{text}\n" for i, text in enumerate(PASSAGES)))
    (tmp_path / "queries.tsv").write_text("".join(f"q{i}\t{text}\n" for i, text in enumerate(QUERY_TEXTS)))
    rows = [f"q{i}\t{i}\t{(i + 1) % len(PASSAGES)}\n" for i in range(len(QUERY_TEXTS))]
    (tmp_path / "triples.tsv").write_text("".join(rows))
    files = flags(
        triples=tmp_path / "triples.tsv", corpus=tmp_path / "collection.tsv", queries=tmp_path / "queries.tsv"
    )
    tiny = flags(
        backbone=tiny_backbone, steps=2, batch_size=2, device="cpu", eval_every=2, lr=1e-3, output=tmp_path / "run"
    )
    assert run_train([*files, *tiny, "--dev-queries", "2"]) is None
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "dev" in r] == [0, 2]
    error = run_train([*files, *tiny, "--negatives", "3", "--dev-queries", "0", "--output", str(tmp_path / "r1")])
    assert error is not None and "--negatives must be 1 with --triples" in error
    (tmp_path / "triples.tsv").write_text("".join(rows) + "q0\t0\tmissing\n" * 40)
    error = run_train([*files, *tiny, "--dev-queries", "0", "--steps", "30", "--output", str(tmp_path / "r2")])
    assert (
        error is not None and "id 'missing' is not in the corpus or queries file" in error and "triples.tsv:" in error
    )


PASSAGES = ["the cat sat on the mat", "cancer risk increase", "protein gene cell", "a dog sat", "gene study"]
QUERY_TEXTS = ["cat on a mat", "cancer risk", "gene", "dog", "study"]


@pytest.mark.slow
def test_train_on_msmarco_format_files_with_bm25_negatives(shared_data, tiny_backbone, tmp_path, monkeypatch):
    """MS MARCO-style inputs (TREC topics tsv, the DL19 passage sample), BM25 mining and a held-out dev set."""
    monkeypatch.setenv("PETIR_CACHE", str(tmp_path / "cache"))
    mini = shared_data / "msmarco-passage" / "dl19-mini"
    corpus, queries = mini / "corpus.jsonl.gz", shared_data / "msmarco-passage" / "topics.dl19-passage.txt"
    require_data(corpus, queries, mini / "qrels" / "test.tsv")
    inputs = flags(corpus=corpus, queries=queries, qrels=mini / "qrels" / "test.tsv")
    tiny = flags(backbone=tiny_backbone, method="iaa-l", steps=4, batch_size=4, device="cpu")
    dev = flags(dev_queries=5, dev_depth=5, eval_every=2, eval_budget=1000, output=tmp_path / "run")
    error = run_train([*inputs, *tiny, *dev])
    assert error is None, error
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "dev" in r] == [0, 2, 4]
    assert all(0 <= r["dev"]["ndcg@10"] <= 1 for r in records if "dev" in r)


# --report-to tensorboard without tensorboard is refused when the flag is parsed, not after the set-up.
def test_report_to_tensorboard_without_the_package_is_refused_at_parsing(monkeypatch, capsys, tmp_path):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else find_spec(name, *a)
    )
    reached = []
    monkeypatch.setattr(train, "check_flags", lambda *a: reached.append(a))  # nothing after parsing may run
    with pytest.raises(UsageError) as caught:
        run(train.main, ["--data", str(tmp_path), "--output", str(tmp_path / "run"), "--report-to", "tensorboard"])
    assert caught.value.code == 2 and not reached
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "--report-to" in err and "pip install tensorboard" in err


def test_report_to_tensorboard_parses_when_the_package_is_there(tmp_path):
    pytest.importorskip("tensorboard")
    args = train.build_parser([]).parse_args(["--output", str(tmp_path), "--report-to", "tensorboard"])
    assert args.report_to == "tensorboard"


def test_a_dev_qrels_without_a_relevant_judgment_is_refused_not_dropped(beir, tmp_path):
    (tmp_path / "dev.tsv").write_text("q1\t0\td1\t0\nq2\t0\td2\t0\n")
    error = run_train(["--data", str(beir), "--dev-qrels", str(tmp_path / "dev.tsv"), "--output", str(tmp_path / "r")])
    assert error is not None and "dev.tsv: no relevant judgment (every relevance is 0 or below)" in error, error


def test_a_training_passage_length_above_the_models_is_refused(beir, tmp_path):
    argv = ["--data", str(beir), "--output", str(tmp_path / "r"), "--passage-max-length", "64"]
    error = run_train([*argv, "--train-passage-length", "128"])
    assert error is not None and "--train-passage-length 128 is above --passage-max-length 64" in error, error

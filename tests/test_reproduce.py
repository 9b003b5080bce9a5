"""The study's runner (petir/reproduce.py, petir/study/runner.py and entries.py): entries, the study parser, the
GPU study, and a replayable commands.sh; its reporting is tested in study/test_report.py."""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, TINY_PASSAGES, flags, run_cli
from petir.data import read_run
from petir.errors import PetirError
from petir.pet import VARIANTS
from petir.reproduce import build_parser
from petir.reproduce import main as reproduce_main
from petir.study import STAGES, get_stage
from petir.study.entries import MAIN_VARIANTS, StudyEntry, study_entry


def test_study_entries_are_registry_variants_at_a_budget():
    assert study_entry("iaa-l") == StudyEntry("iaa-l")
    assert study_entry("adapter@6.7") == StudyEntry("adapter", "6.7")
    assert study_entry("iaa-l-near-identity") == StudyEntry("iaa-l", None, {"init": "near-identity"})
    assert study_entry("full-lr1e-4") == StudyEntry("full", learning_rate=1e-4)
    assert study_entry("adapter-lr3e-3@6.7") == StudyEntry("adapter", "6.7", learning_rate=3e-3)
    assert study_entry("iaa-l-near-identity-lr0.002") == StudyEntry("iaa-l", None, {"init": "near-identity"}, 0.002)
    bert_base_count = study_entry("iaa-l-bert-base-count")  # its widths replace the preset: the model records none
    assert (bert_base_count.variant, bert_base_count.preset) == ("iaa-l", None)
    assert study_entry("iaa-l-wide-aside").options == {"r": "6", "ar": "24"}
    assert study_entry("iaa-l-wide-inside").options == {"r": "17", "ar": "2"}
    assert study_entry("iaa-l-near-identity@6.7").preset == "6.7"  # its option is no width: the preset holds
    with pytest.raises(PetirError, match=r"sets its own widths \(r=24, ar=24\), so @6.7 would not"):
        study_entry("iaa-l-2x-count-lr1e-3@6.7")  # the preset would be silently ignored
    assert set(MAIN_VARIANTS) <= set(VARIANTS)
    with pytest.raises(PetirError, match="unknown method 'connected-bottleneck'"):
        study_entry("connected-bottleneck")
    with pytest.raises(PetirError, match="bitfit has no 6.7 % budget preset"):
        study_entry("bitfit@6.7")


def test_a_seed_or_method_given_twice_is_refused_before_anything_runs(tmp_path):
    """A repeated seed or entry would be one run counted twice in its row's mean (and a standard deviation of 0)."""
    argv = ["rerank", "--output", str(tmp_path / "s"), "--dry-run"]
    assert "seed 2 is given twice" in run_cli(reproduce_main, [*argv, "--seeds", "1,2,2"])
    assert run_cli(reproduce_main, [*argv, "--methods", "full-lr1e-4,iaa-l, full-lr1e-4"]).endswith(
        "--methods names full-lr1e-4 twice: its runs would count twice in the tables; name it once"
    )
    assert not (tmp_path / "s").exists()


def test_a_misspelt_seed_method_or_a_zero_rate_is_refused_before_anything_runs(tmp_path):
    """A --seed-methods name matching no method would leave the runs it meant on one seed, unnoticed; a rate of 0
    would train nothing. Spaces after the commas are allowed, as in --methods."""
    argv = ["rerank", "--output", str(tmp_path / "s"), "--dry-run"]
    error = run_cli(reproduce_main, [*argv, "--methods", "iaa-l", "--seed-methods", "iaa-l,iaa_l"])
    assert "error: argument --seed-methods: unknown method 'iaa_l'; choose from full," in error
    assert run_cli(reproduce_main, [*argv, "--methods", "iaa-l-lr0.0"]).endswith(
        ": iaa-l-lr0.0 trains at learning rate 0, which changes nothing; give a rate above 0"
    )
    assert not (tmp_path / "s").exists()
    args = build_parser().parse_args(["rerank", "--output", "out", "--seed-methods", "full-lr1e-4, iaa-l,"])
    assert args.seed_methods == ["full-lr1e-4", "iaa-l"]


def test_a_study_entry_carries_pet_options_as_petir_train_takes_them(tmp_path):
    """``iaa-l+r=17+ar=2`` is the named ``iaa-l-wide-inside`` without a name: a width point of a sweep needs no
    ablation entry. Its options are checked when the entry is read, before any run starts."""
    assert study_entry("iaa-l+r=17+ar=2") == study_entry("iaa-l-wide-inside")
    assert study_entry("iaa-l+r=17+ar=2-lr3e-3") == StudyEntry("iaa-l", None, {"r": "17", "ar": "2"}, 3e-3)
    assert study_entry("lora-ffn+r=8").options == {"target_modules": "intermediate.dense", "r": "8"}  # over it
    assert study_entry("iaa-l+init=near-identity@6.7").preset == "6.7"  # no width: the preset holds
    with pytest.raises(PetirError, match=r"iaa-l\+ar=2 sets its own widths \(ar=2\), so @6.7 would not apply"):
        study_entry("iaa-l+ar=2@6.7")
    with pytest.raises(PetirError, match=r"iaa-l\+r's \+option expects KEY=VALUE, got 'r'"):
        study_entry("iaa-l+r")
    with pytest.raises(PetirError, match="has no option widths"):
        study_entry("iaa-l+widths=3")
    with pytest.raises(PetirError, match="r must be an integer"):
        study_entry("iaa-l+r=wide")
    from petir.reproduce import build_parser, settings_from_args
    from petir.study.runner import train_command

    data = tiny_beir(tmp_path / "beir")  # the default --data (scifact) would need ../shared/data or a download
    settings = settings_from_args(build_parser().parse_args(["rerank", "--data", str(data), "--output", "out"]))
    argv = [str(arg) for arg in train_command(settings, get_stage("rerank"), "iaa-l+r=17+ar=2", 1, tmp_path / "run")]
    assert [argv[i + 1] for i, arg in enumerate(argv) if arg == "--pet"] == ["r=17", "ar=2"]


def test_a_study_entry_at_another_learning_rate_trains_with_it(tmp_path):
    from petir.reproduce import build_parser, settings_from_args
    from petir.study.runner import train_command

    data = tiny_beir(tmp_path / "beir")
    settings = settings_from_args(build_parser().parse_args(["rerank", "--data", str(data), "--output", "out"]))
    argv = [str(arg) for arg in train_command(settings, get_stage("rerank"), "adapter-lr3e-3@6.7", 2, tmp_path / "run")]
    assert argv[argv.index("--lr") + 1] == "0.003" and argv[argv.index("--budget") + 1] == "6.7"
    assert argv[argv.index("--method") + 1] == "adapter" and argv[argv.index("--seed") + 1] == "2"
    plain = [str(arg) for arg in train_command(settings, get_stage("rerank"), "adapter", 1, tmp_path / "run")]
    assert "--lr" not in plain  # a plain name: petir.train's defaults, the rate picked on dev by its ladder
    assert "--no-keep-best" not in plain and "--dev-queries" not in plain  # keep-best on, petir.train's dev rule
    off = build_parser().parse_args(["rerank", "--data", str(data), "--output", "out", "--no-keep-best"])
    off_argv = train_command(settings_from_args(off), get_stage("rerank"), "adapter", 1, tmp_path / "run")
    assert "--no-keep-best" in map(str, off_argv)
    old = build_parser().parse_args(["rerank", "--data", str(data), "--output", "out", "--keep-best"])  # docs' flag
    assert settings_from_args(old).keep_best


def test_a_seed_method_naming_only_other_rates_of_its_method_is_said(tmp_path, capsys):
    """--seed-methods full beside --methods full-lr1e-4: that entry runs one seed; the study says so before it runs
    (a note, not a refusal: the default --seed-methods names methods many studies leave out)."""
    data = tiny_beir(tmp_path / "beir")
    argv = ["rerank", "--data", str(data), "--output", str(tmp_path / "s"), "--dry-run", "--seeds", "1,2"]
    reproduce_main([*argv, "--methods", "full-lr1e-4,full-lr3e-5,iaa-l", "--seed-methods", "full,iaa-l"])
    err = capsys.readouterr().err
    assert "--seed-methods full names no entry of --methods; full-lr1e-4, full-lr3e-5 run with the first seed" in err
    reproduce_main([*argv, "--methods", "full,full-lr1e-4,iaa-l", "--seed-methods", "full,iaa-l"])
    assert "note" not in capsys.readouterr().err


def test_seeds_and_seed_methods_are_parsed_once_by_the_study_parser(capsys):
    from petir.reproduce import build_parser
    from petir.study.entries import seeds_of

    args = build_parser().parse_args(["rerank", "--output", "out", "--seeds", "1,2,3", "--seed-methods", "full,iaa-l"])
    assert args.seeds == [1, 2, 3] and args.seed_methods == ["full", "iaa-l"]
    assert seeds_of("iaa-l", args.seeds, args.seed_methods) == [1, 2, 3]
    assert seeds_of("lora", args.seeds, args.seed_methods) == [1]
    assert seeds_of("full-lr1e-4", args.seeds, args.seed_methods) == [1]  # names match exactly, as documented
    for seeds, shown in (("1,a", "'a'"), ("1,-1", "-1")):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["rerank", "--output", "out", "--seeds", seeds])
        assert f"seeds, each of which must be an integer from 0 to 4294967295, got {shown}" in capsys.readouterr().err


@pytest.mark.slow  # runs Pyserini (Java) a dozen times: about two minutes
def test_commands_sh_replays_a_study_from_scratch(tiny_backbone, tmp_path, monkeypatch, capsys):
    """A study on a tiny BEIR set, then its commands.sh in a new output directory with a new cache: the same
    runs and the same metrics come out. A --report-only of more seeds between the two reports the seed there and
    leaves the study as it was."""
    data = tiny_beir(tmp_path / "beir")
    monkeypatch.setenv("PETIR_CACHE", str(tmp_path / "cache-a"))
    first = tmp_path / "study"
    study = flags(backbone=tiny_backbone, methods="adapter", steps=2, batch_size=2, eval_every=1, dev_queries=2)
    study += flags(dev_depth=3, hits=10, train_passage_length=16, threads=1, output=first)
    assert run_cli(reproduce_main, ["retrieval", "--data", str(data), *study]) is None
    metrics = sorted(path.relative_to(first) for path in first.rglob("*.metrics.json"))
    assert len(metrics) == 3  # BM25, zero-shot backbone, the trained adapter
    from huggingface_hub import ModelCard

    (card,) = [ModelCard.load(path) for path in (first / "retrieval").glob("*/seed*/model/README.md")]  # adapter
    (adapter,) = [path for path in metrics if "adapter" in str(path)]
    tested = {r.metric_type: r.metric_value for r in card.data.eval_results if r.dataset_split == "test"}
    assert tested == json.loads((first / adapter).read_text())  # the study's test numbers, in the model's card
    assert {r.dataset_name for r in card.data.eval_results} == {"beir"} and "\n## Test\n\nbeir, test split" in card.text
    commands = (first / "commands.sh").read_text()
    more_seeds = [
        "retrieval",
        "--data",
        str(data),
        *study,
        "--report-only",
        "--seeds",
        "1,2",
        "--seed-methods",
        "adapter",
    ]
    capsys.readouterr()
    assert run_cli(reproduce_main, more_seeds) is None
    assert (
        "adapter seed 2 left out (--report-only): retrieval/adapter/seed2 is not trained yet" in capsys.readouterr().err
    )
    assert (first / "commands.sh").read_text() == commands and not (first / "retrieval" / "adapter" / "seed2").exists()
    assert "| adapter | 1 |" in (first / "results-retrieval.md").read_text()  # seed 1's row, reported again

    replay = tmp_path / "replay"
    env = {**os.environ, "OUT": str(replay), "PETIR_CACHE": str(tmp_path / "cache-b")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    result = subprocess.run(["bash", str(first / "commands.sh")], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(path.relative_to(replay) for path in replay.rglob("*.metrics.json")) == metrics
    for path in metrics:
        assert json.loads((replay / path).read_text()) == json.loads((first / path).read_text()), path
    assert (tmp_path / "cache-b").is_dir() and not list(replay.rglob("*.partial"))


def tiny_beir(root: Path) -> Path:
    """A BEIR directory over the tiny vocabulary: 10 passages, 6 training and 3 test queries."""
    (root / "qrels").mkdir(parents=True)
    docs = [json.dumps({"_id": f"d{i}", "title": "", "text": text}) for i, text in enumerate(TINY_PASSAGES)]
    (root / "corpus.jsonl").write_text("\n".join(docs) + "\n")
    queries = {f"q{i}": " ".join(TINY_PASSAGES[i].split()[:2]) for i in range(9)}
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries.items()))
    for split, ids in (("train", range(6)), ("test", range(6, 9))):
        rows = "".join(f"q{i}\td{i}\t1\n" for i in ids)
        (root / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + rows)
    return root


def begun_study(tmp_path: Path, monkeypatch) -> tuple[Path, Path]:
    """A tiny BEIR directory and a study directory holding the files an earlier command of the study left."""
    from petir.workspace import QRELS_FILE

    monkeypatch.setenv("PETIR_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "study"
    root.mkdir()
    for name in (QRELS_FILE, "commands.sh"):
        (root / name).write_text("")
    return tiny_beir(tmp_path / "beir"), root


def load_gpu_study():
    """benchmarks/gpu_study.py as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("gpu_study", REPO / "benchmarks" / "gpu_study.py")
    gpu_study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_study)
    return gpu_study


@pytest.mark.slow  # trains two models: about 10 s
def test_gpu_study_trains_and_reranks_a_studys_runs_where_pyserini_is_absent(tiny_backbone, tmp_path):
    """benchmarks/gpu_study.py leaves each run where petir.reproduce looks for it (so the study there only fuses,
    evaluates and reports), trained with the entry's learning rate, and packs it without checkpoints."""
    import tarfile

    from petir.data import write_run, write_topics

    gpu_study = load_gpu_study()
    data = tiny_beir(tmp_path / "beir")
    study = tmp_path / "study"
    bm25 = {f"q{i}": [(f"d{j}", 10.0 - j) for j in range(len(TINY_PASSAGES))] for i in range(9)}
    write_run({q: bm25[q] for q in ("q6", "q7", "q8")}, study / "retrieval" / "bm25" / "test.run.trec", "bm25")
    write_run(bm25, tmp_path / "train-dev.trec", "bm25")
    write_topics({q: "cat sat" for q in ("q6", "q7", "q8")}, study / "test-topics.tsv")
    argv = ["rerank", "--data", str(data), "--backbone", str(tiny_backbone), "--methods", "adapter-lr3e-3"]
    argv += flags(output=study, negatives_run=tmp_path / "train-dev.trec", steps=2, eval_every=1, dev_queries=2)
    argv += flags(dev_depth=3, rerank_depth=3, rerank_batch_size=2, rerank_max_length=32, threads=1, jobs=1)
    argv += flags(device="cpu", pack=tmp_path / "runs.tgz")
    gpu_study.main(argv)
    run_dir = study / "rerank" / "adapter-lr3e-3" / "seed1"
    assert json.loads((run_dir / "summary.json").read_text())["config"]["learning_rate"] == 0.003
    assert len(read_run(run_dir / "test.rerank-bm25.trec")["q6"]) == len(TINY_PASSAGES)  # top 3 re-scored, tail kept
    with tarfile.open(tmp_path / "runs.tgz") as tar:
        names = tar.getnames()
    assert "study/rerank/adapter-lr3e-3/seed1/test.rerank-bm25.trec" in names
    assert not any("checkpoint" in name for name in names)


def test_gpu_study_trains_a_retrieval_run_and_leaves_the_test_run_to_the_cpu_machine(tiny_backbone, tmp_path):
    """At retrieval gpu_study.py trains (dev checks included) where petir.reproduce looks for the run, so that
    petir.reproduce, with Pyserini, only encodes the corpus and searches; nothing of re-ranking is needed."""
    from petir.data import write_run

    gpu_study = load_gpu_study()
    data = tiny_beir(tmp_path / "beir")
    study = tmp_path / "study"
    write_run({f"q{i}": [(f"d{j}", 10.0 - j) for j in range(10)] for i in range(6)}, tmp_path / "bm25.trec", "bm25")
    argv = ["retrieval", "--data", str(data), "--backbone", str(tiny_backbone), "--methods", "lora-lr2e-3"]
    argv += flags(output=study, negatives_run=tmp_path / "bm25.trec", steps=2, eval_every=1, dev_queries=2)
    argv += flags(dev_depth=3, batch_size=2, train_passage_length=16, threads=1, jobs=1, device="cpu")
    gpu_study.main(argv)
    run_dir = study / "retrieval" / "lora-lr2e-3" / "seed1"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["config"]["learning_rate"] == 0.002 and (run_dir / "model").is_dir()
    assert not list(run_dir.glob("*.trec"))


def test_test_picked_searches_with_each_methods_dev_picked_rate_only(tmp_path, monkeypatch, capsys):
    """--test-picked: every rate is trained, the test queries are searched with the rate dev picks alone (the
    others keep their dev values, and their test values where an earlier command searched them), and a run whose
    weights stayed on another machine is reported by dev alone."""
    from petir.reproduce import build_parser, settings_from_args
    from petir.study.retrieval import RetrievalStage
    from petir.study.runner import Study

    data = tiny_beir(tmp_path / "beir")
    monkeypatch.setenv("PETIR_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "study"
    for entry, dev, weights in (
        ("adapter", 0.6, True),
        ("adapter-lr3e-3", 0.7, True),
        ("adapter-lr3e-4", 0.55, True),
        ("lora", 0.5, True),
        ("full", 0.8, False),
    ):
        run_dir = root / "retrieval" / entry / "seed1"
        (run_dir / "model").mkdir(parents=True)
        if weights:
            (run_dir / "model" / "petir_state.safetensors").write_bytes(b"")
            (run_dir / "model" / "README.md").write_text("---\nlicense: apache-2.0\n---\n# a model\n")
        summary = {"parameters": {"trainable": 1, "percent": 0.5}, "wall_time_s": 1.0, "peak_memory_mb": 1.0}
        (run_dir / "summary.json").write_text(json.dumps({**summary, "kept": {"step": 1, "dev": {"ndcg@10": dev}}}))
        (run_dir / "metrics.jsonl").write_text(json.dumps({"step": 1, "dev": {"ndcg@10": dev}}) + "\n")
    (root / "retrieval" / "adapter-lr3e-4" / "seed1" / "test.run.trec").write_text("")  # searched by an earlier command
    args = build_parser().parse_args(["retrieval", "--data", str(data), "--output", str(root), "--test-picked"])
    study = Study(settings_from_args(args), STAGES, planned_runs=5)
    searched = []
    stage = RetrievalStage
    monkeypatch.setattr(stage, "_bm25_row", lambda self, study: {"method": "bm25", "seed": ""})
    monkeypatch.setattr(stage, "_zero_shot_row", lambda self, study: {"method": "zero-shot", "seed": ""})
    monkeypatch.setattr(stage, "dense_run", lambda self, study, encoder, run_dir: searched.append(run_dir) or run_dir)
    monkeypatch.setattr(Study, "evaluate", lambda self, run: {"ndcg@10": 0.4})
    rows = stage().run(study, ["adapter", "adapter-lr3e-3", "adapter-lr3e-4", "lora", "full"], [1], [])
    assert sorted(path.parent.name for path in searched) == ["adapter-lr3e-3", "lora"]
    tested = {row["method"]: row.get("ndcg@10") for row in rows}
    assert tested == {
        "bm25": None,
        "zero-shot": None,
        "adapter": None,
        "adapter-lr3e-3": 0.4,
        "adapter-lr3e-4": 0.4,
        "lora": 0.4,
        "full": None,
    }
    assert "full seed 1: its weights are not here" in capsys.readouterr().out
    carded = [
        path.parents[2].name for path in root.glob("retrieval/*/seed1/model/README.md") if "## Test" in path.read_text()
    ]
    assert sorted(carded) == ["adapter-lr3e-3", "lora"]  # the searched models' cards carry their test numbers


def test_the_rerank_stage_writes_each_rerankers_bm25_test_numbers_into_its_card(tmp_path, monkeypatch):
    """A re-ranker's card gets the test numbers of its re-ranking of BM25 (the stage's main comparison), not of a
    fused or dense first stage, with the depth said."""
    from huggingface_hub import ModelCard

    from petir.reproduce import build_parser, settings_from_args
    from petir.study.rerank import RerankStage
    from petir.study.runner import Study

    data = tiny_beir(tmp_path / "beir")
    monkeypatch.setenv("PETIR_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "study"
    args = build_parser().parse_args(["rerank", "--data", str(data), "--output", str(root), "--rerank-depth", "20"])
    study = Study(settings_from_args(args), STAGES, planned_runs=1)

    def trained(self, task, variant, seed):
        run_dir = root / task / variant / f"seed{seed}"
        (run_dir / "model").mkdir(parents=True, exist_ok=True)
        (run_dir / "model" / "README.md").write_text(
            "---\nlicense: apache-2.0\npipeline_tag: text-ranking\n---\n# a re-ranker\n"
        )
        return run_dir

    scores = {"bm25": 0.61, "dense": 0.65}
    monkeypatch.setattr(Study, "train", trained)
    monkeypatch.setattr(Study, "row", lambda self, variant, seed, run_dir: {"method": variant, "seed": seed})
    monkeypatch.setattr(Study, "first_stages", lambda self, seed: {"bm25": root / "bm25.trec", "dense": root / "d"})
    monkeypatch.setattr(Study, "produce", lambda self, output, *argv: output)
    monkeypatch.setattr(RerankStage, "rerank_run", lambda self, study, run, model, directory, stage: Path(stage))
    monkeypatch.setattr(Study, "evaluate", lambda self, run: {"ndcg@10": scores.get(run.name.split(".")[0], 0.7)})
    RerankStage().run(study, ["adapter"], [1], [])
    card = ModelCard.load(root / "rerank" / "adapter" / "seed1" / "model" / "README.md")
    tested = {r.metric_type: r.metric_value for r in card.data.eval_results if r.dataset_split == "test"}
    assert tested == {"ndcg@10": 0.61}  # BM25 re-ranked alone: neither the fused run (0.7) nor the dense one
    assert "petir.rerank of BM25's top 20" in card.text


def test_report_only_tables_what_the_study_holds_and_runs_nothing(tmp_path, monkeypatch, capsys):
    """--report-only (a study's lanes trained in other directories and copied in): a finished run with its test
    results is reported, one trained but not re-ranked or not trained at all is left out and named, and nothing is
    run or written for them."""
    from petir.reproduce import build_parser, settings_from_args
    from petir.study.rerank import RerankStage
    from petir.study.runner import Study
    from petir.workspace import Workspace

    data, root = begun_study(tmp_path, monkeypatch)
    # seed 1 trained and re-ranked; seed 2 trained only; seed 3 not trained; seed 4 re-ranked, copied without model/
    for seed in (1, 2, 4):
        (root / "rerank" / "adapter" / f"seed{seed}").mkdir(parents=True)
        (root / "rerank" / "adapter" / f"seed{seed}" / "summary.json").write_text("{}")
    for seed in (1, 2):
        (root / "rerank" / "adapter" / f"seed{seed}" / "model").mkdir()
    seed1 = root / "rerank" / "adapter" / "seed1"
    (seed1 / "model" / "README.md").write_text("---\nlicense: apache-2.0\npipeline_tag: text-ranking\n---\n# a model\n")
    for seed, name in itertools.product((1, 4), ("test.rerank-bm25.trec", "test.rerank-bm25.rrf.trec")):
        (root / "rerank" / "adapter" / f"seed{seed}" / name).write_text("")
    before = sorted(root.rglob("*"))
    monkeypatch.setattr(Study, "run", lambda self, *argv, **kwargs: pytest.fail(f"ran {argv[0]}"))
    monkeypatch.setattr(Workspace, "lucene_index", property(lambda self: tmp_path / "index"))
    monkeypatch.setattr(Study, "first_stages", lambda self, seed: {"bm25": root / "bm25.trec"})
    monkeypatch.setattr(Study, "row", lambda self, variant, seed, run_dir: {"method": variant, "seed": seed})
    monkeypatch.setattr(Study, "evaluate", lambda self, run: {"ndcg@10": 0.5})
    args = build_parser().parse_args(["rerank", "--data", str(data), "--output", str(root), "--report-only"])
    rows = RerankStage().run(
        Study(settings_from_args(args), STAGES, planned_runs=4), ["adapter"], [1, 2, 3, 4], ["adapter"]
    )
    assert [(row["method"], row["seed"], row["first_stage"]) for row in rows] == [
        ("no re-ranking", "", "bm25"),
        ("adapter", 1, "bm25"),
        ("adapter", 1, "bm25 + RRF"),
        ("adapter", 4, "bm25"),
        ("adapter", 4, "bm25 + RRF"),
    ]
    err = capsys.readouterr().err
    assert "cosine re-ranking bm25 left out (--report-only): rerank/cosine/test.rerank-bm25.trec is not made yet" in err
    assert "adapter seed 2 re-ranking bm25 left out (--report-only): rerank/adapter/seed2/test.rerank-bm25" in err
    assert "adapter seed 3 left out (--report-only): rerank/adapter/seed3 is not trained yet" in err
    assert sorted(root.rglob("*")) == before  # no file or folder made for the runs left out
    assert "## Test" in (seed1 / "model" / "README.md").read_text()  # the reported run's card has its numbers
    empty = ["rerank", "--data", str(data), "--output", str(tmp_path / "new"), "--report-only"]
    assert run_cli(reproduce_main, empty).endswith(
        ": --report-only: test-qrels.txt is not made yet; run the study without --report-only to make it"
    )
    assert not (tmp_path / "new").exists()
    assert "--report-only runs nothing, so --overwrite has nothing to do" in run_cli(
        reproduce_main, [*empty, "--overwrite"]
    )


def test_a_finished_run_is_reused_only_with_the_settings_that_made_it(tmp_path, monkeypatch):
    """A run trained with --steps 4 is reused by the same command, refused in one line by --steps 50, and trained
    again (its test run discarded) with --overwrite; a run without a settings record (older petir) is reused."""
    from petir.reproduce import build_parser, settings_from_args
    from petir.study.runner import Study

    data, root = begun_study(tmp_path, monkeypatch)
    ran: list[list[str]] = []
    monkeypatch.setattr(Study, "run", lambda self, *argv, **kwargs: ran.append(list(map(str, argv))))

    def study(*extra: str) -> Study:
        args = build_parser().parse_args(["retrieval", "--data", str(data), "--output", str(root), *extra])
        return Study(settings_from_args(args), STAGES, planned_runs=1, overwrite=args.overwrite)

    run_dir = study("--steps", "4", "--threads", "1").train("retrieval", "adapter", 1)
    assert "--steps" in ran[-1] and ran[-1][ran[-1].index("--steps") + 1] == "4"
    (run_dir / "summary.json").parent.mkdir(parents=True, exist_ok=True)
    (run_dir / "summary.json").write_text("{}")
    (run_dir / "test.run.trec").write_text("")
    ran.clear()
    study("--steps", "4", "--threads", "2").train("retrieval", "adapter", 1)  # threads: speed, not settings
    assert ran == []
    with pytest.raises(PetirError, match=r"seed1 was trained with other settings .*--steps 50 \(was 4\); pass"):
        study("--steps", "50").train("retrieval", "adapter", 1)
    assert ran == [] and (run_dir / "test.run.trec").exists()
    study("--steps", "50", "--overwrite").train("retrieval", "adapter", 1)
    assert ran[-1][-1] == "--overwrite" and ran[-1][ran[-1].index("--steps") + 1] == "50"
    assert not (run_dir / "test.run.trec").exists()
    (run_dir.with_name("seed1.settings.json")).unlink()  # a study of an older petir: no record, reused as it is
    ran.clear()
    study("--steps", "7").train("retrieval", "adapter", 1)
    assert ran == []


def test_a_dry_run_with_a_missing_backbone_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("PETIR_CACHE", str(tmp_path / "cache"))
    argv = ["retrieval", "--data", str(tiny_beir(tmp_path / "beir")), "--output", str(tmp_path / "study")]
    error = run_cli(reproduce_main, [*argv, "--backbone", str(tmp_path / "nonexistent"), "--dry-run"])
    assert error is not None and "cannot load the config of backbone" in error and "nonexistent" in error, error
    assert "\n" not in error


def test_a_study_with_patience_passes_it_to_every_run_and_one_without_trains_every_step(tmp_path):
    from petir.reproduce import build_parser, settings_from_args
    from petir.study.runner import train_command
    from petir.train import build_parser as train_parser

    data = tiny_beir(tmp_path / "beir")
    flags = ["rerank", "--data", str(data), "--output", "out", "--steps", "600"]
    patient = settings_from_args(build_parser().parse_args([*flags, "--patience", "3"]))
    argv = [str(arg) for arg in train_command(patient, get_stage("rerank"), "iaa-l", 1, tmp_path / "run")]
    assert argv[argv.index("--patience") + 1] == "3" and argv[argv.index("--steps") + 1] == "600"
    assert train_parser(argv[1:]).parse_args(argv[1:]).patience == 3  # petir.train takes what the study passes
    plain = train_command(
        settings_from_args(build_parser().parse_args(flags)), get_stage("rerank"), "iaa-l", 1, tmp_path / "r"
    )
    assert "--patience" not in map(str, plain)

"""The study: its reporting (petir/report.py: convergence steps, results tables) and its runner (petir/reproduce.py:
entries, a replayable commands.sh)."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, TINY_PASSAGES, flags, run_cli
from petir.data import read_run
from petir.errors import PetirError
from petir.pet import VARIANTS
from petir.report import StudyEntry, plot_convergence, steps_to_fraction, study_entry, write_tables
from petir.reproduce import MAIN_VARIANTS
from petir.reproduce import main as reproduce_main

CURVE = [(0, 0.80), (10, 0.82), (20, 0.90), (30, 0.84)]


def test_steps_to_fraction_of_the_final_value_and_of_the_gain():
    assert steps_to_fraction(CURVE, 0.95) == 0  # 0.80 >= 0.95 * 0.84 already at the start
    assert steps_to_fraction(CURVE, 0.95, of_gain=True) == 20  # 0.80 + 0.95 * 0.04 = 0.838
    assert steps_to_fraction([(0, 0.8), (10, 0.7)], 0.95, of_gain=True) is None  # no gain to reach
    assert steps_to_fraction([], 0.95) is None
    assert steps_to_fraction([(0, 0.8), (150, 0.9)], 0.95) is None  # --eval-every 0: start and end, no curve


def row(method, seed, ndcg, steps):
    return {"method": method, "seed": seed, "ndcg@10": ndcg, "dev_ndcg@10": ndcg + 0.1, "steps_to_95%": steps}


def test_tables_say_whether_dev_ranks_methods_as_test_does(tmp_path):
    rows = [{"method": "bm25", "seed": "", "ndcg@10": 0.6789}]
    rows += [row(method, 1, ndcg, 10) for method, ndcg in (("a", 0.60), ("b", 0.65), ("c", 0.62), ("d", 0.70))]
    write_tables(rows, tmp_path / "agree")
    assert "Spearman's rho 1.00" in (tmp_path / "agree.md").read_text()
    rows[1:] = [{**r, "dev_ndcg@10": 1 - r["ndcg@10"]} for r in rows[1:]]
    write_tables(rows, tmp_path / "disagree")
    assert (
        "Spearman's rho -1.00" in (tmp_path / "disagree.md").read_text()
        and "4 trained methods" in (tmp_path / "disagree.md").read_text()
    )
    write_tables(rows[:3], tmp_path / "few")
    assert "Spearman" not in (tmp_path / "few.md").read_text()


def test_tables_keep_every_run_in_csv_and_summarise_seeds_in_markdown(tmp_path):
    rows = [{"method": "bm25", "seed": "", "ndcg@10": 0.6789}, row("full", 1, 0.70, 60), row("full", 2, 0.72, 30)]
    write_tables(rows, tmp_path / "results")

    with open(tmp_path / "results.csv") as handle:
        assert [r["seed"] for r in csv.DictReader(handle)] == ["", "1", "2"]
    lines = (tmp_path / "results.md").read_text().splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    cells = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")] for line in lines[2:]}
    assert "first stage" not in header  # only re-ranking tables have one
    column = {name: header.index(name) for name in ("seeds", "nDCG@10", "dev nDCG@10", "steps to 95%")}
    assert cells["bm25"][column["nDCG@10"]] == "0.6789" and cells["bm25"][column["steps to 95%"]] == "–"
    full = cells["full"]
    assert full[column["seeds"]] == "2"
    assert full[column["nDCG@10"]] == "0.7100 ± 0.0141"
    assert full[column["dev nDCG@10"]] == "0.8100 ± 0.0141"
    assert full[column["steps to 95%"]] == "45 ± 21"


def test_convergence_plot_draws_the_seeds_a_table_uses_not_every_seed_on_disk(tmp_path, monkeypatch):
    for seed in (1, 2, 3):
        run = tmp_path / "retrieval" / "lora" / f"seed{seed}"
        run.mkdir(parents=True)
        records = [{"step": step, "loss": 1.0 / (step + 1), "dev": {"ndcg@10": 0.6 + step / 1000}} for step in (0, 25)]
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    import matplotlib.figure

    legends = []

    def keep_legend(figure, path, **_):
        legends.extend(text.get_text() for axis in figure.axes if axis.get_legend() for text in axis.get_legend().texts)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", keep_legend)
    plot_convergence(tmp_path, "retrieval", {"lora": [1], "absent": [1]})
    assert legends == ["lora (1 seed)"]


def test_study_entries_are_registry_variants_at_a_budget():
    assert study_entry("iaa-l") == StudyEntry("iaa-l")
    assert study_entry("adapter@6.7") == StudyEntry("adapter", "6.7")
    assert study_entry("iaa-l-near-identity") == StudyEntry("iaa-l", None, {"init": "near-identity"})
    assert study_entry("full-lr1e-4") == StudyEntry("full", learning_rate=1e-4)
    assert study_entry("adapter-lr3e-3@6.7") == StudyEntry("adapter", "6.7", learning_rate=3e-3)
    assert study_entry("iaa-l-near-identity-lr0.002") == StudyEntry("iaa-l", None, {"init": "near-identity"}, 0.002)
    assert set(MAIN_VARIANTS) <= set(VARIANTS)
    with pytest.raises(PetirError, match="unknown method 'connected-bottleneck'"):
        study_entry("connected-bottleneck")
    with pytest.raises(PetirError, match="bitfit has no 6.7 % budget preset"):
        study_entry("bitfit@6.7")


def test_a_study_entry_at_another_learning_rate_trains_with_it(tmp_path):
    from petir.reproduce import build_parser, settings_from_args, train_command

    data = tiny_beir(tmp_path / "beir")
    settings = settings_from_args(build_parser().parse_args(["rerank", "--data", str(data), "--output", "out"]))
    argv = [str(arg) for arg in train_command(settings, "rerank", "adapter-lr3e-3@6.7", 2, tmp_path / "run")]
    assert argv[argv.index("--lr") + 1] == "0.003" and argv[argv.index("--budget") + 1] == "6.7"
    assert argv[argv.index("--method") + 1] == "adapter" and argv[argv.index("--seed") + 1] == "2"
    assert "--lr" not in map(str, train_command(settings, "rerank", "adapter", 1, tmp_path / "run"))


def test_seeds_and_seed_methods_are_parsed_once_by_the_study_parser(capsys):
    from petir.reproduce import build_parser, seeds_of

    args = build_parser().parse_args(["rerank", "--output", "out", "--seeds", "1,2,3", "--seed-methods", "full,iaa-l"])
    assert args.seeds == [1, 2, 3] and args.seed_methods == ["full", "iaa-l"]
    assert seeds_of("iaa-l", args.seeds, args.seed_methods) == [1, 2, 3]
    assert seeds_of("lora", args.seeds, args.seed_methods) == [1]
    for seeds, shown in (("1,a", "'a'"), ("1,-1", "-1")):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["rerank", "--output", "out", "--seeds", seeds])
        assert f"seeds, each of which must be an integer from 0 to 4294967295, got {shown}" in capsys.readouterr().err


@pytest.mark.slow  # runs Pyserini (Java) a dozen times: about two minutes
def test_commands_sh_replays_a_study_from_scratch(tiny_backbone, tmp_path, monkeypatch):
    """A study on a tiny BEIR set, then its commands.sh in a new output directory with a new cache: the same
    runs and the same metrics come out."""
    data = tiny_beir(tmp_path / "beir")
    monkeypatch.setenv("PETIR_CACHE", str(tmp_path / "cache-a"))
    first = tmp_path / "study"
    study = flags(backbone=tiny_backbone, methods="adapter", steps=2, batch_size=2, eval_every=1, dev_queries=2)
    study += flags(dev_depth=3, hits=10, train_passage_length=16, threads=1, output=first)
    assert run_cli(reproduce_main, ["retrieval", "--data", str(data), *study]) is None
    metrics = sorted(path.relative_to(first) for path in first.rglob("*.metrics.json"))
    assert len(metrics) == 3  # BM25, zero-shot backbone, the trained adapter

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


def load_gpu_study():
    """benchmarks/gpu_study.py as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("gpu_study", REPO / "benchmarks" / "gpu_study.py")
    gpu_study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_study)
    return gpu_study


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
    from petir.reproduce import Study, build_parser, settings_from_args
    from petir.tasks.retrieval import RetrievalStage

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
        summary = {"parameters": {"trainable": 1, "percent": 0.5}, "wall_time_s": 1.0, "peak_memory_mb": 1.0}
        (run_dir / "summary.json").write_text(json.dumps({**summary, "kept": {"step": 1, "dev": {"ndcg@10": dev}}}))
        (run_dir / "metrics.jsonl").write_text(json.dumps({"step": 1, "dev": {"ndcg@10": dev}}) + "\n")
    (root / "retrieval" / "adapter-lr3e-4" / "seed1" / "test.run.trec").write_text("")  # searched by an earlier command
    args = build_parser().parse_args(["retrieval", "--data", str(data), "--output", str(root), "--test-picked"])
    study = Study(settings_from_args(args), planned_runs=5)
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


def test_significance_marks_follow_a_paired_t_test_against_full_and_the_best_scattered_method(tmp_path):
    from petir.data import write_run
    from petir.report import significance

    qrels = {f"q{i}": {"rel": 1} for i in range(30)}

    def run_file(name: str, misses: int) -> str:
        """The relevant passage first for every query but the first ``misses``, where it comes third."""
        run = {
            q: [(d, 3.0 - k) for k, d in enumerate(["rel", "x", "y"] if i >= misses else ["x", "y", "rel"])]
            for i, q in enumerate(qrels)
        }
        write_run(run, tmp_path / name, name)
        return name

    rows = [
        {"method": "full", "seed": 1, "run": run_file("full", 0)},
        {"method": "adapter", "seed": 1, "run": run_file("adapter", 15)},
        {"method": "lora", "seed": 1, "run": run_file("lora", 20)},
        {"method": "iaa-l", "seed": 1, "run": run_file("iaa-l", 1)},
        {"method": "adapter@6.7", "seed": 1, "run": run_file("adapter-6.7", 2)},
    ]
    tests = significance(rows, qrels, tmp_path)
    marks = tests.marks
    assert marks[("adapter", "")] == "†"  # 15 of 30 queries worse than full; it is the best scattered at 0.5 %
    assert marks[("lora", "")] == "†"  # 5 queries below the adapter: p = 0.023, 0.068 once corrected over 6 tests
    assert marks[("iaa-l", "")] == "‡"  # one query apart from full: no difference; far above the adapter
    assert ("adapter@6.7", "") not in marks  # two queries apart from full, and the only scattered one at 6.7 %
    first_stage = run_file("bm25", 20)
    reranked = [
        {"method": "cosine", "first_stage": "bm25", "run": run_file("cosine", 0), "first_stage_run": first_stage},
        {"method": "iaa-l", "first_stage": "bm25", "run": run_file("iaa-l-bm25", 19), "first_stage_run": first_stage},
    ]
    marks_vs_first_stage = significance(reranked, qrels, tmp_path).marks
    assert marks_vs_first_stage == {("cosine", "bm25"): "§"}  # 20 queries better; iaa-l's one query is no difference
    write_tables([{**row, "ndcg@10": 0.5} for row in rows], tmp_path / "t", tests, {"paper": {"iaa-l": 0.314}})
    table = (tmp_path / "t.md").read_text()
    assert "| iaa-l | 1 | 0.5000 ‡ |" in table and "| 0.314 |" in table and "two-tailed paired t-test" in table


def test_holm_multiplies_the_ith_smallest_p_value_by_m_minus_i_plus_1_and_keeps_the_order():
    from petir.report import holm

    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == [1.0, 1.0] and holm([]) == []


def test_significance_marks_hold_after_holm_correction_over_the_whole_table(tmp_path):
    """A mark an uncorrected test would give (the adapter vs full, p = 0.043) is dropped once the table's five tests
    are corrected together; the strong ones stay, and the CSV keeps both p-values of every test."""
    from petir.data import write_run
    from petir.report import significance

    qrels = {f"q{i}": {"rel": 1} for i in range(30)}

    def run_file(name: str, misses: int) -> str:
        """The relevant passage first for every query but the first ``misses``, where it comes third."""
        run = {
            q: [(d, 3.0 - k) for k, d in enumerate(["rel", "x", "y"] if i >= misses else ["x", "y", "rel"])]
            for i, q in enumerate(qrels)
        }
        write_run(run, tmp_path / name, name)
        return name

    rows = [
        {"method": "full", "seed": 1, "run": run_file("full", 0), "ndcg@10": 1.0},
        {"method": "adapter", "seed": 1, "run": run_file("adapter", 4), "ndcg@10": 0.93},  # best scattered
        {"method": "lora", "seed": 1, "run": run_file("lora", 12), "ndcg@10": 0.8},
        {"method": "iaa-l", "seed": 1, "run": run_file("iaa-l", 1), "ndcg@10": 0.98},
    ]
    tests = significance(rows, qrels, tmp_path)
    p = {(t.method, t.mark): (round(t.p, 4), round(t.p_holm, 4)) for t in tests.tests}
    assert p[("adapter", "†")] == (0.0434, 0.1302)  # 4 of 30 queries worse: marked without correction, not with
    assert p[("lora", "‡")] == (0.0029, 0.0118)  # 8 queries worse than the adapter: marked either way
    assert len(tests.tests) == 5  # adapter †, lora † ‡, iaa-l † ‡ (the adapter is not tested against itself)
    assert tests.marks == {("lora", ""): "†‡"}
    write_tables(rows, tmp_path / "t", tests)
    table = (tmp_path / "t.md").read_text()
    assert "| adapter | 1 | 0.9300 |" in table and "Holm-Bonferroni correction over this table's 5 tests" in table
    with open(tmp_path / "t.csv") as handle:
        adapter = next(row for row in csv.DictReader(handle) if row["method"] == "adapter")
    assert float(adapter["p_vs_full"]) == pytest.approx(0.0434, abs=1e-4)
    assert float(adapter["p_vs_full_holm"]) == pytest.approx(0.1302, abs=1e-4)
    assert adapter["p_vs_best_scattered"] == ""


def test_a_new_scattered_method_is_compared_and_drawn_as_one_by_its_registry_entry(tmp_path, monkeypatch):
    """The report asks the registry, not a list of names: a method registered here, scattered, becomes the best
    scattered method the others are marked against (‡), its preset budget comes from the registry, and its curves
    are dashed."""
    from dataclasses import dataclass

    import matplotlib.figure

    from petir.data import write_run
    from petir.pet import METHODS, VARIANTS, PetConfig, PetMethod, Variant
    from petir.pet.base import freeze
    from petir.report import significance

    @dataclass
    class ToyConfig(PetConfig):
        """No options: the toy trains nothing."""

    variant = Variant("toy", budgets={"0.5": {}})
    toy = PetMethod(
        "toy", ToyConfig, lambda model, _: freeze(model), "a toy", "this test", 1e-3, (variant,), scattered=True
    )
    monkeypatch.setitem(METHODS, "toy", toy)
    monkeypatch.setitem(VARIANTS, "toy", (toy, variant))
    assert study_entry("toy").preset == "0.5"

    qrels = {f"q{i}": {"rel": 1} for i in range(30)}

    def run_file(name: str, misses: int) -> str:
        run = {q: [("rel", 2.0 if i >= misses else 0.0), ("x", 1.0)] for i, q in enumerate(qrels)}
        write_run(run, tmp_path / name, name)
        return name

    rows = [
        {"method": "full", "seed": 1, "run": run_file("full", 0)},
        {"method": "toy", "seed": 1, "run": run_file("toy", 15)},
        {"method": "iaa-l", "seed": 1, "run": run_file("iaa-l", 1)},
    ]
    assert significance(rows, qrels, tmp_path).marks == {("toy", ""): "†", ("iaa-l", ""): "‡"}

    for variant in ("toy", "iaa-l"):
        run = tmp_path / "retrieval" / variant / "seed1"
        run.mkdir(parents=True)
        records = [{"step": step, "loss": 1.0, "dev": {"ndcg@10": 0.5}} for step in (0, 25)]
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    styles = {}

    def keep_styles(figure, path, **_):
        styles.update({line.get_label(): line.get_linestyle() for line in figure.axes[0].get_lines()})

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", keep_styles)
    plot_convergence(tmp_path, "retrieval", {"toy": [1], "iaa-l": [1]})
    assert styles == {"toy (1 seed)": "--", "iaa-l (1 seed)": "-"}


def test_the_dev_set_chooses_each_methods_learning_rate_and_marks_compare_with_the_choice(tmp_path):
    from petir.data import write_run
    from petir.report import chosen_on_dev, significance, split_learning_rate

    assert split_learning_rate("adapter-lr3e-3@6.7") == ("adapter@6.7", 0.003)
    assert split_learning_rate("iaa-l") == ("iaa-l", None)
    qrels = {f"q{i}": {"rel": 1} for i in range(30)}

    def run_file(name: str, misses: int) -> str:
        run = {q: [("rel", 2.0 if i >= misses else 0.0), ("x", 1.0)] for i, q in enumerate(qrels)}
        write_run(run, tmp_path / name, name)
        return name

    rows = [  # full at its default rate is far below; the dev set prefers full-lr1e-4, which iaa-l matches
        {"method": "full", "seed": 1, "run": run_file("full", 20), "dev_ndcg@10": 0.5, "ndcg@10": 0.4},
        {"method": "full-lr1e-4", "seed": 1, "run": run_file("full-lr", 0), "dev_ndcg@10": 0.7, "ndcg@10": 0.9},
        {"method": "full-lr1e-4", "seed": 2, "run": run_file("full-lr", 0), "dev_ndcg@10": 0.6, "ndcg@10": 0.9},
        {"method": "iaa-l", "seed": 1, "run": run_file("iaa-l", 1), "dev_ndcg@10": 0.6, "ndcg@10": 0.9},
    ]
    assert chosen_on_dev(rows) == {"full": "full-lr1e-4", "iaa-l": "iaa-l"}  # mean dev 0.65 > 0.5
    tests = significance(rows, qrels, tmp_path)
    assert tests.marks == {}  # iaa-l is one query from full-lr1e-4 (against full at 2e-5 it would be marked †)
    write_tables(rows, tmp_path / "t", tests)
    table = (tmp_path / "t.md").read_text()
    assert "| full-lr1e-4 ◆ | 2 |" in table and "| full | 1 |" in table and "| iaa-l | 1 |" in table
    assert "learning rate the dev set chose" in table


def test_depth_sweep_restricts_the_rerankers_scores_to_the_first_stage_top_k(tmp_path):
    from petir.data import write_run
    from petir.report import depth_sweep

    qrels = {"q1": {"c": 1}, "q2": {"e": 1}}
    write_run(
        {"q1": [("a", 3.0), ("b", 2.0), ("c", 1.0)], "q2": [("d", 3.0), ("e", 2.0), ("f", 1.0)]},
        tmp_path / "first.trec",
        "bm25",
    )
    write_run(
        {"q1": [("c", 9.0), ("b", 8.0), ("a", 7.0)], "q2": [("f", 9.0), ("e", 8.0), ("d", 7.0)]},
        tmp_path / "re.trec",
        "ce",
    )
    rows = [{"method": "ce", "first_stage": "bm25", "run": "re.trec", "first_stage_run": "first.trec"}]
    table = depth_sweep(rows, qrels, tmp_path, depths=(1, 2, 3))
    third, second = 1 / math.log2(4), 1 / math.log2(3)  # nDCG@10 of one relevant passage at rank 3, rank 2
    expected = [(third + second) / 2, (third + 1) / 2, (1 + second) / 2]  # q2's e rises to rank 1 only at depth 2
    assert table.splitlines()[2] == "| ce | bm25 | " + " | ".join(f"{value:.4f}" for value in expected) + " |"


def test_depth_sweep_at_full_depth_gives_the_runs_own_value_when_a_collapsed_reranker_ties(tmp_path):
    from petir.data import write_run
    from petir.evaluate import evaluate_run
    from petir.report import depth_sweep

    qrels = {"q1": {"a": 1}}
    write_run({"q1": [("a", 3.0), ("b", 2.0), ("c", 1.0)]}, tmp_path / "first.trec", "bm25")
    collapsed = {"q1": [("a", 0.5), ("b", 0.5), ("c", 0.5)]}  # trec_eval breaks the tie by docid: c, b, a
    write_run(collapsed, tmp_path / "re.trec", "ce")
    rows = [{"method": "ce", "first_stage": "bm25", "run": "re.trec", "first_stage_run": "first.trec"}]
    full_depth = depth_sweep(rows, qrels, tmp_path, depths=(3,)).splitlines()[2].split("|")[3]
    assert float(full_depth) == pytest.approx(evaluate_run(qrels, collapsed)["ndcg@10"], abs=1e-4)
    assert float(full_depth) == pytest.approx(1 / math.log2(4), abs=1e-4)  # not 1.0, BM25's order

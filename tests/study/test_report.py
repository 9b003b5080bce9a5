"""The study's reporting (petir/study/report.py, petir/study/plots.py): convergence steps, results tables,
significance marks, the depth sweep, the plots."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from petir.study.entries import study_entry
from petir.study.plots import plot_convergence
from petir.study.report import steps_to_fraction, write_tables

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


def test_gain_share_legend_files_each_bar_under_its_kind_and_lists_only_the_kinds_drawn(tmp_path, monkeypatch):
    """Full fine-tuning's ablations (``partial``) train the backbone's own weights: filed apart from connected PET."""
    import matplotlib.figure

    from petir.study.plots import plot_gain_share

    rows = [{"method": "cosine", "seed": "", "ndcg@10": 0.6, "trainable_%": None}]
    for method, ndcg in (("full", 0.7), ("partial-ffn", 0.68), ("iaa-l", 0.64), ("lora", 0.62)):
        rows += [{"method": method, "seed": 1, "ndcg@10": ndcg, "dev_ndcg@10": 0.5, "trainable_%": 1.0}]
    drawn = {}

    def keep_drawing(figure, path, **_):
        (axis,) = figure.axes
        labels = [label.get_text().split(" (")[0] for label in axis.get_yticklabels()]
        kinds = {tuple(patch.get_facecolor()): patch.get_label() for patch in axis.get_legend().get_patches()}
        drawn["kinds"] = {
            labels[round(p.get_y() + p.get_height() / 2)]: kinds[tuple(p.get_facecolor())] for p in axis.patches
        }
        drawn["legend"] = list(kinds.values())

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", keep_drawing)
    plot_gain_share(tmp_path, "retrieval", rows, "cosine")
    assert drawn["kinds"] == {
        "cosine": "baseline",
        "full": "full fine-tuning",
        "partial-ffn": "full fine-tuning, parts frozen",
        "iaa-l": "connected",
        "lora": "scattered",
    }
    plot_gain_share(tmp_path, "retrieval", [r for r in rows if r["method"] in ("cosine", "full", "lora")], "cosine")
    assert drawn["legend"] == ["full fine-tuning", "scattered", "baseline"]


#: Thirty queries, each with one relevant passage "rel" (the significance tests' judgments).
THIRTY_QUERIES = {f"q{i}": {"rel": 1} for i in range(30)}


def write_missing_run(directory: Path, name: str, misses: int) -> str:
    """A run named ``name`` in ``directory``: "rel" first for every query but the first ``misses``, where it comes
    third; returns the name."""
    from petir.data import write_run

    run = {
        q: [(d, 3.0 - k) for k, d in enumerate(["rel", "x", "y"] if i >= misses else ["x", "y", "rel"])]
        for i, q in enumerate(THIRTY_QUERIES)
    }
    write_run(run, directory / name, name)
    return name


def test_significance_marks_follow_a_paired_t_test_against_full_and_the_best_scattered_method(tmp_path):
    from petir.study.report import significance

    qrels = THIRTY_QUERIES

    def run_file(name: str, misses: int) -> str:
        return write_missing_run(tmp_path, name, misses)

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


def test_every_trained_entry_off_a_preset_is_tested_against_full_but_against_no_scattered_method(tmp_path):
    """Issue 35's diagnosis asks each full-fine-tuning ablation's paired test against full, and petir's lora-ffn
    replaces LoRA's preset rank: neither has a budget preset, so ‡ has nothing to compare them with, but † does."""
    from petir.study.report import significance

    rows = [
        {"method": "full-lr1e-4", "seed": 1, "run": write_missing_run(tmp_path, "full", 0)},
        {"method": "full", "seed": 1, "run": write_missing_run(tmp_path, "full-2e-5", 3)},  # full's own: no test
        {"method": "partial-ffn", "seed": 1, "run": write_missing_run(tmp_path, "partial-ffn", 15)},
        {"method": "lora-ffn", "seed": 1, "run": write_missing_run(tmp_path, "lora-ffn", 1)},
        {"method": "lora", "seed": 1, "run": write_missing_run(tmp_path, "lora", 20)},
    ]
    tests = significance(rows, THIRTY_QUERIES, tmp_path)
    assert sorted((t.method, t.mark) for t in tests.tests) == [
        ("lora", "†"),
        ("lora-ffn", "†"),
        ("partial-ffn", "†"),
    ]  # lora is the only scattered entry at 0.5 %: nothing to ‡ it against
    assert tests.marks == {("partial-ffn", ""): "†", ("lora", ""): "†"}  # lora-ffn is one query from full


def test_holm_multiplies_the_ith_smallest_p_value_by_m_minus_i_plus_1_and_keeps_the_order():
    from petir.study.report import holm

    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == [1.0, 1.0] and holm([]) == []


def test_significance_marks_hold_after_holm_correction_over_the_whole_table(tmp_path):
    """A mark an uncorrected test would give (the adapter vs full, p = 0.043) is dropped once the table's five tests
    are corrected together; the strong ones stay, and the CSV keeps both p-values of every test."""
    from petir.study.report import significance

    qrels = THIRTY_QUERIES

    def run_file(name: str, misses: int) -> str:
        return write_missing_run(tmp_path, name, misses)

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
    from petir.study.report import significance

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
    from petir.study.entries import split_learning_rate
    from petir.study.report import chosen_on_dev, significance

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
    assert chosen_on_dev(rows) == {"full": "full-lr1e-4", "iaa-l": "iaa-l"}  # seed 1's dev 0.7 > 0.5
    later = [  # the picked rate's later, worse seed does not hand the pick to a rate that ran seed 1 alone
        {"method": "adapter-lr1e-3", "seed": 1, "dev_ndcg@10": 0.70},
        {"method": "adapter-lr3e-3", "seed": 1, "dev_ndcg@10": 0.68},
        {"method": "adapter-lr1e-3", "seed": 2, "dev_ndcg@10": 0.60},
    ]
    assert chosen_on_dev(later) == {"adapter": "adapter-lr1e-3"}  # over every seed it would be 0.65 < 0.68
    tests = significance(rows, qrels, tmp_path)
    assert tests.marks == {}  # iaa-l is one query from full-lr1e-4 (against full at 2e-5 it would be marked †)
    write_tables(rows, tmp_path / "t", tests)
    table = (tmp_path / "t.md").read_text()
    assert "| full-lr1e-4 ◆ | 2 |" in table and "| full | 1 |" in table and "| iaa-l | 1 |" in table
    assert "learning rate the dev set chose" in table


def test_depth_sweep_restricts_the_rerankers_scores_to_the_first_stage_top_k(tmp_path):
    from petir.data import write_run
    from petir.study.report import depth_sweep

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
    from petir.study.report import depth_sweep

    qrels = {"q1": {"a": 1}}
    write_run({"q1": [("a", 3.0), ("b", 2.0), ("c", 1.0)]}, tmp_path / "first.trec", "bm25")
    collapsed = {"q1": [("a", 0.5), ("b", 0.5), ("c", 0.5)]}  # trec_eval breaks the tie by docid: c, b, a
    write_run(collapsed, tmp_path / "re.trec", "ce")
    rows = [{"method": "ce", "first_stage": "bm25", "run": "re.trec", "first_stage_run": "first.trec"}]
    full_depth = depth_sweep(rows, qrels, tmp_path, depths=(3,)).splitlines()[2].split("|")[3]
    assert float(full_depth) == pytest.approx(evaluate_run(qrels, collapsed)["ndcg@10"], abs=1e-4)
    assert float(full_depth) == pytest.approx(1 / math.log2(4), abs=1e-4)  # not 1.0, BM25's order


def test_each_method_gets_its_share_of_full_fine_tunings_gain_in_the_table_and_in_gain_share_csv(tmp_path):
    """The share is (method - untrained) / (full - untrained) on the same first stage, full at its dev-picked rate;
    gain-share.csv keeps one line per dev-picked entry of the stage's main first stage, with the Holm-adjusted p
    against full, and a second stage's lines join the first's without replacing them."""
    from petir.study.report import GAIN_SHARE_COLUMNS, significance, write_gain_share

    def reranked(method, seed, ndcg, dev, misses, stage="bm25", kept=None):
        run = write_missing_run(tmp_path, f"{method}-{seed}-{stage}", misses)
        values = {"ndcg@10": ndcg, "dev_ndcg@10": dev, "trainable_%": 0.7, "kept_step": kept, "run": run}
        return {"method": method, "seed": seed, "first_stage": stage, **values}

    rows = [
        {"method": "cosine", "seed": "", "first_stage": "bm25", "ndcg@10": 0.60},
        {"method": "cosine", "seed": "", "first_stage": "dense", "ndcg@10": 0.50},
        reranked("full-lr1e-4", 1, 0.70, 0.80, 0, kept=500),
        reranked("full-lr1e-4", 2, 0.70, 0.80, 0, kept=300),
        reranked("full", 1, 0.90, 0.70, 0),  # higher on test, lower on dev: not the reference
        reranked("iaa-l", 1, 0.65, 0.75, 10, kept=550),
        reranked("iaa-l-lr1e-4", 1, 0.69, 0.60, 1),  # not picked on dev: no line
        reranked("full-lr1e-4", 1, 0.60, 0.80, 0, stage="dense"),
        reranked("iaa-l", 1, 0.55, 0.75, 10, stage="dense"),
    ]
    tests = significance(rows, THIRTY_QUERIES, tmp_path)
    write_tables(rows, tmp_path / "results", tests, untrained="cosine")
    lines = (tmp_path / "results.md").read_text().splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    share, kept = header.index("share of full's gain"), header.index("kept step")
    rows_by_name = [line.strip("|").split("|") for line in lines[2 : lines.index("")]]
    cells = {(line[0].split()[0], line[1].strip()): line for line in rows_by_name}
    assert [line[0].strip() for line in rows_by_name[:2]] == ["cosine", "cosine"]  # one rate, on two first stages
    assert cells[("iaa-l", "bm25")][share].strip() == "50%"  # (0.65 - 0.60) / (0.70 - 0.60)
    assert cells[("iaa-l", "dense")][share].strip() == "50%"  # against the dense first stage's own references
    assert cells[("full", "bm25")][share].strip() == "300%"
    assert cells[("full-lr1e-4", "bm25")][kept].strip() == "400 ± 141"

    path = tmp_path / "gain-share.csv"
    write_gain_share(path, "rerank", rows, tests, "cosine", "bm25")
    write_gain_share(path, "retrieval", [{"method": "zero-shot", "seed": "", "ndcg@10": 0.5}], tests, "zero-shot")
    write_gain_share(path, "rerank", rows, tests, "cosine", "bm25")  # rewritten: the retrieval line stays
    with open(path, newline="") as handle:
        table = list(csv.DictReader(handle))
    assert tuple(table[0]) == GAIN_SHARE_COLUMNS
    assert [(line["stage"], line["method"]) for line in table] == [
        ("retrieval", "zero-shot"),
        ("rerank", "cosine"),
        ("rerank", "full-lr1e-4"),
        ("rerank", "iaa-l"),
    ]
    iaa_l = table[-1]
    assert float(iaa_l["gain_share"]) == pytest.approx(0.5) and iaa_l["seeds"] == "1"
    assert float(iaa_l["ndcg10_mean"]) == 0.65 and iaa_l["ndcg10_sd"] == "" and float(iaa_l["kept_step_mean"]) == 550
    p_holm = next(t.p_holm for t in tests.tests if (t.method, t.first_stage, t.mark) == ("iaa-l", "bm25", "†"))
    assert float(iaa_l["p_vs_full_holm"]) == pytest.approx(p_holm) and p_holm < 0.05  # 10 of 30 queries missed
    assert table[2]["gain_share"] == "1.0" and table[2]["p_vs_full_holm"] == ""  # full is its own reference
    assert float(table[1]["gain_share"]) == 0.0


def test_gain_share_plot_draws_each_gain_share_line_as_a_bar_with_its_seeds_as_dots(tmp_path, monkeypatch):
    """The bars are gain-share.csv's shares (baselines and dev-picked rates of the main first stage, in its order);
    the dots are each seed against the same means; a stage without full fine-tuning says so and draws no bar."""
    import matplotlib.figure

    from petir.study.plots import plot_gain_share

    def row(method, seed, ndcg, dev=0.5, stage="bm25"):
        return {"method": method, "seed": seed, "first_stage": stage, "ndcg@10": ndcg, "dev_ndcg@10": dev}

    rows = [
        row("no re-ranking", "", 0.55),
        row("cosine", "", 0.60),
        *(row("full-lr1e-4", seed, ndcg, dev=0.8) for seed, ndcg in ((1, 0.68), (2, 0.72))),
        row("full", 1, 0.90, dev=0.7),  # not picked on dev: no bar
        *(row("lora", seed, ndcg) for seed, ndcg in ((1, 0.62), (2, 0.66))),
        row("lora", 1, 0.0, stage="bm25 + RRF"),  # another first stage: not drawn
    ]
    for row_ in rows:
        row_["trainable_%"] = 0.7 if row_["seed"] else None
    drawn = {}

    def keep_drawing(figure, path, **_):
        (axis,) = figure.axes
        labels = [label.get_text() for label in axis.get_yticklabels()]
        drawn["bars"] = {labels[round(p.get_y() + p.get_height() / 2)]: p.get_width() for p in axis.patches}
        dots = [line for line in axis.get_lines() if line.get_marker() == "."]
        drawn["dots"] = {labels[int(line.get_ydata()[0])]: list(line.get_xdata()) for line in dots}
        drawn["title"] = axis.get_title()

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", keep_drawing)
    path = plot_gain_share(tmp_path, "rerank", rows, "cosine", "bm25")
    assert path == tmp_path / "gain-share-rerank.png"
    assert drawn["bars"] == pytest.approx(
        {"no re-ranking": -50, "cosine": 0, "full-lr1e-4 (0.7 %)": 100, "lora (0.7 %)": 40}
    )
    assert list(drawn["dots"]) == ["lora (0.7 %)", "full-lr1e-4 (0.7 %)"]  # drawn bottom up
    assert drawn["dots"]["full-lr1e-4 (0.7 %)"] == pytest.approx([80, 120])
    assert drawn["dots"]["lora (0.7 %)"] == pytest.approx([20, 60])
    assert drawn["title"] == "rerank (first stage bm25)"

    plot_gain_share(tmp_path, "rerank", [r for r in rows if not r["method"].startswith("full")], "cosine", "bm25")
    assert drawn["bars"] == {} and drawn["title"].endswith("no full fine-tuning gain to share")

    # retrieval rows have no first stage at all: the same bars and dots
    dense = [{k: v for k, v in r.items() if k != "first_stage"} for r in rows if r["first_stage"] == "bm25"]
    plot_gain_share(tmp_path, "retrieval", [r for r in dense if r["method"] != "no re-ranking"], "cosine")
    assert drawn["bars"] == pytest.approx({"cosine": 0, "full-lr1e-4 (0.7 %)": 100, "lora (0.7 %)": 40})
    assert drawn["dots"]["lora (0.7 %)"] == pytest.approx([20, 60]) and drawn["title"] == "retrieval"

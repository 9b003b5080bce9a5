"""The study's reporting: one reader of ``metrics.jsonl`` curves, the results tables (every run in CSV, mean ± sd
per method in Markdown), each method's share of full fine-tuning's gain and the paired tests behind the tables' marks.
The runner (:mod:`petir.study.runner`), the stages and the plots (:mod:`petir.study.plots`) call these."""

from __future__ import annotations

import csv
import io
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from petir.data import Qrels, read_run
from petir.evaluate import evaluate_queries
from petir.files import write_lines_atomic
from petir.pet import REFERENCE_METHOD
from petir.run_directory import read_metrics
from petir.study.entries import split_learning_rate, trained_entry

METRICS = ("ndcg@10", "mrr@10", "recall@100", "recall@1000")


def dev_curve(metrics_file: Path, metric: str = "ndcg@10") -> list[tuple[int, float]]:
    return [(r["step"], r["dev"][metric]) for r in read_metrics(metrics_file) if "dev" in r]


#: Fewer dev points than this are not a curve: steps-to-95 % stays empty.
MIN_CURVE_POINTS = 3


def steps_to_fraction(curve: list[tuple[int, float]], fraction: float, of_gain: bool = False) -> int | None:
    """First step whose dev metric reaches ``fraction`` of the final value (``of_gain``: of the gain over step 0).

    With a backbone that is already a good retriever, the step-0 value alone can exceed 95% of the final one, which
    makes the plain criterion 0 for every method; the gain version measures how fast the improvement arrives.
    """
    if len(curve) < MIN_CURVE_POINTS:  # no dev curve (--eval-every 0): start and end are not a curve
        return None
    start, final = curve[0][1], curve[-1][1]
    target = start + fraction * (final - start) if of_gain else fraction * final
    if of_gain and final <= start:
        return None
    return next(step for step, value in curve if value >= target)


NUMERIC = (
    *METRICS,
    "dev_ndcg@10",
    "trainable_%",
    "state_mb",
    "train_s",
    "dev_s",
    "peak_mem_mb",
    "steps_to_95%",
    "steps_to_95%_gain",
    "kept_step",
)


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per method (and first stage): the mean over seeds, with the standard deviation where there are
    several seeds."""
    keys = list(dict.fromkeys((row["method"], row.get("first_stage", "")) for row in rows))
    table = []
    for method, first_stage in keys:
        group = [row for row in rows if (row["method"], row.get("first_stage", "")) == (method, first_stage)]
        merged: dict[str, Any] = {
            "method": method,
            "first_stage": first_stage,
            "seeds": len([r for r in group if r["seed"] != ""]) or "",
        }
        for key in (*NUMERIC, "trainable"):
            values = [row[key] for row in group if row.get(key) is not None]
            if values:
                merged[key] = statistics.fmean(values)
                if len(values) > 1:
                    merged[f"{key}_std"] = statistics.stdev(values)
        table.append(merged)
    return table


COLUMNS = {  # Markdown header -> row key
    "method": "method",
    "first stage": "first_stage",
    "seeds": "seeds",
    "nDCG@10": "ndcg@10",
    "MRR@10": "mrr@10",
    "R@100": "recall@100",
    "R@1000": "recall@1000",
    "dev nDCG@10": "dev_ndcg@10",
    "trainable (%)": "trainable_%",
    "state (MB)": "state_mb",
    "train time (s)": "train_s",
    "dev time (s)": "dev_s",
    "peak mem (MB)": "peak_mem_mb",
    "steps to 95%": "steps_to_95%",
    "steps to 95% of gain": "steps_to_95%_gain",
    "kept step": "kept_step",
    "share of full's gain": "gain_share",
}
#: Columns shown only where some row has a value: a first stage (re-ranking), a kept step (--keep-best), a gain share
#: (a table with full fine-tuning and the untrained model in it).
OPTIONAL_COLUMNS = ("first_stage", "kept_step", "gain_share")


def write_tables(
    rows: list[dict[str, Any]],
    path_stem: Path,
    tests: Significance | None = None,
    paper: dict[str, dict[str, float]] | None = None,
    untrained: str | None = None,
) -> None:
    """``STEM.csv`` with every run (and, with ``tests``, the p-values of its method's tests, uncorrected and
    Holm-adjusted), ``STEM.md`` with the per-method summary (mean ± std over seeds), nDCG@10 marked where a test of
    :func:`significance` holds after correction, each row's share of full fine-tuning's gain over the ``untrained``
    row (:func:`gain_shares`), and the paper's figures (``paper``: column -> method -> value) beside."""
    csv_rows = [{**row, **tests.p_values(row)} for row in rows] if tests is not None else rows
    columns = list(dict.fromkeys(key for row in csv_rows for key in row))
    with open(path_stem.with_suffix(".csv"), "w", newline="") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        writer.writerows(csv_rows)
    table = aggregate(rows)
    shares = gain_shares(rows, untrained) if untrained is not None else {}
    for row in table:
        row["gain_share"] = shares.get((row["method"], row["first_stage"]))
    methods = dict.fromkeys(row["method"] for row in table)  # once each, whatever first stages it re-ranks
    tried = [split_learning_rate(method)[0] for method in methods]
    several = {family for family in tried if tried.count(family) > 1}
    chosen = {entry for family, entry in chosen_on_dev(rows).items() if family in several}
    headers = [
        header
        for header, key in COLUMNS.items()
        if key not in OPTIONAL_COLUMNS or any(row.get(key) not in (None, "") for row in table)
    ]
    paper = paper or {}
    lines = ["| " + " | ".join([*headers, *paper]) + " |", "|" + "---|" * (len(headers) + len(paper))]
    for row in table:
        cells = [_cell(row, COLUMNS[header]) for header in headers]
        cells[0] += f" {CHOSEN_MARK}" if row["method"] in chosen else ""
        mark = tests.marks.get((row["method"], row["first_stage"]), "") if tests is not None else ""
        cells[headers.index("nDCG@10")] += f" {mark}" if mark else ""
        paper_entry = split_learning_rate(row["method"])[0]
        cells += [f"{column[paper_entry]:.3f}" if paper_entry in column else "–" for column in paper.values()]
        lines.append("| " + " | ".join(cells) + " |")
    if tests is not None:
        lines += ["", tests.legend(path_stem.with_suffix(".csv").name)]
    if chosen:
        lines += ["", CHOSEN_LEGEND]
    agreement = dev_test_agreement(table)
    if agreement:
        lines += ["", agreement]
    path_stem.with_suffix(".md").write_text("\n".join(lines) + "\n")


def gain_shares(rows: list[dict[str, Any]], untrained: str) -> dict[tuple[str, str], float]:
    """(method, first stage) -> its share of full fine-tuning's gain over the untrained model: (nDCG@10 - the
    ``untrained`` row's) / (full fine-tuning's - the untrained row's), means over seeds, full fine-tuning at the rate
    its dev set picked and both references of the same first stage. Where either is missing, or full fine-tuning
    gains nothing over the untrained model, there is no share."""
    means = ndcg_means(rows)
    spans = gain_spans(means, rows, untrained)
    return {
        (method, stage): share_of_gain(value, spans[stage])
        for (method, stage), value in means.items()
        if stage in spans
    }


def ndcg_means(rows: list[dict[str, Any]]) -> dict[tuple[str, str], float]:
    """(method, first stage) -> its mean test nDCG@10 over seeds."""
    return {(row["method"], row["first_stage"]): row["ndcg@10"] for row in aggregate(rows) if "ndcg@10" in row}


def gain_spans(
    means: dict[tuple[str, str], float], rows: list[dict[str, Any]], untrained: str
) -> dict[str, tuple[float, float]]:
    """First stage -> (the untrained row's mean nDCG@10, full fine-tuning's at its dev-picked rate), where full
    fine-tuning gains over the untrained model: the 0 % and 100 % of a gain share."""
    full = chosen_on_dev(rows).get(REFERENCE_METHOD, REFERENCE_METHOD)
    spans = {}
    for stage in dict.fromkeys(stage for _, stage in means):
        start, reference = means.get((untrained, stage)), means.get((full, stage))
        if start is not None and reference is not None and reference > start:
            spans[stage] = (start, reference)
    return spans


def share_of_gain(value: float, span: tuple[float, float]) -> float:
    """Where ``value`` lies on a :func:`gain_spans` span: 0 at the untrained model, 1 at full fine-tuning."""
    start, reference = span
    return (value - start) / (reference - start)


GAIN_SHARE_FILE = "gain-share.csv"
GAIN_SHARE_COLUMNS = (
    "stage",
    "method",
    "trainable_percent",
    "seeds",
    "ndcg10_mean",
    "ndcg10_sd",
    "gain_share",
    "p_vs_full_holm",
    "kept_step_mean",
)


def write_gain_share(
    path: Path, stage: str, rows: list[dict[str, Any]], tests: Significance, untrained: str, first_stage: str = ""
) -> None:
    """The study's one-line-per-method summary of how much of full fine-tuning's gain each keeps (``path``, one file
    for every stage: this ``stage``'s lines replace its old ones, the others' stay): the baselines, and each method at
    the learning rate its dev set picked, on the stage's main ``first_stage`` (re-ranking: BM25's run), with its
    Holm-adjusted p-value against full fine-tuning (:func:`significance`) and the mean step keep-best saved."""
    shares = gain_shares(rows, untrained)
    p_vs_full = {(t.method, t.first_stage): t.p_holm for t in tests.tests if MARKS[t.mark] == "p_vs_full"}
    lines = []
    for row in picked_on_dev(rows, first_stage):
        key = (row["method"], row["first_stage"])
        values = {
            "stage": stage,
            "method": row["method"],
            "trainable_percent": row.get("trainable_%"),
            "seeds": row["seeds"],
            "ndcg10_mean": row.get("ndcg@10"),
            "ndcg10_sd": row.get("ndcg@10_std"),
            "gain_share": shares.get(key),
            "p_vs_full_holm": p_vs_full.get(key),
            "kept_step_mean": row.get("kept_step"),
        }
        lines.append({name: "" if value is None else value for name, value in values.items()})
    if path.exists():
        with open(path, newline="") as handle:
            lines = [line for line in csv.DictReader(handle) if line.get("stage") != stage] + lines
    text = io.StringIO()
    writer = csv.DictWriter(text, GAIN_SHARE_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(lines)
    write_lines_atomic(path, text.getvalue().splitlines(keepends=True))


def picked_on_dev(rows: list[dict[str, Any]], first_stage: str) -> list[dict[str, Any]]:
    """The per-method summary rows (:func:`aggregate`) of ``first_stage``: the baselines, and each method at the
    learning rate its dev set picked."""
    chosen = set(chosen_on_dev(rows).values())
    return [row for row in aggregate(rows) if row["first_stage"] == first_stage and row["method"] in chosen]


SIGNIFICANCE_LEVEL = 0.05
#: Each mark, and the CSV column stem of its tests' p-values: what the marked row is compared with.
MARKS = {"†": "p_vs_full", "‡": "p_vs_best_scattered", "§": "p_vs_first_stage"}


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the order given: the i-th smallest of m is multiplied by m - i + 1 (at
    most 1) and kept at least as large as every smaller one's adjusted value, so that "adjusted p <= level" is
    Holm's step-down test at ``level``: the chance of any false mark in the family stays below ``level``."""
    adjusted = [0.0] * len(p_values)
    running = 0.0
    for rank, index in enumerate(sorted(range(len(p_values)), key=p_values.__getitem__)):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


@dataclass(frozen=True)
class PairedTest:
    """One two-tailed paired t-test of a row's per-query nDCG@10 against a reference's (``mark`` names which)."""

    method: str
    first_stage: str
    mark: str
    p: float
    p_holm: float  # adjusted over every test of the same table (:func:`holm`)


@dataclass(frozen=True)
class Significance:
    """Every test behind one table's marks (:func:`significance`), one family for the correction: a table is read as
    a whole, so dozens of uncorrected tests at 0.05 would mark a few differences that are not there."""

    tests: tuple[PairedTest, ...]

    @property
    def marks(self) -> dict[tuple[str, str], str]:
        """(method, first stage) -> its marks in ``†‡§`` order, each where the adjusted p is at most the level."""
        marks: dict[tuple[str, str], str] = {}
        for test in self.tests:
            if test.p_holm <= SIGNIFICANCE_LEVEL:
                key = (test.method, test.first_stage)
                marks[key] = marks.get(key, "") + test.mark
        return marks

    def p_values(self, row: Mapping[str, Any]) -> dict[str, float]:
        """The CSV columns of a run's row: its method's p-values, uncorrected and Holm-adjusted (the tests compare
        per-query values averaged over seeds, so every seed's row repeats them)."""
        key = (row["method"], row.get("first_stage", ""))
        columns = {}
        for test in self.tests:
            if (test.method, test.first_stage) == key:
                columns |= {MARKS[test.mark]: test.p, f"{MARKS[test.mark]}_holm": test.p_holm}
        return columns

    def legend(self, csv_name: str) -> str:
        return (
            "Marks on nDCG@10, as in the paper: † differs from full fine-tuning, ‡ from the best scattered method at "
            "the same budget; and § (re-ranking) from the first stage it re-ranks (two-tailed paired t-test over the "
            f"test queries, per-query nDCG@10 averaged over seeds; p ≤ {SIGNIFICANCE_LEVEL} after Holm-Bonferroni "
            f"correction over this table's {len(self.tests)} tests; {csv_name} keeps each p-value, uncorrected "
            f"({', '.join(MARKS.values())}) and adjusted (_holm))."
        )


CHOSEN_MARK = "◆"
CHOSEN_LEGEND = (
    f"{CHOSEN_MARK} the learning rate the dev set chose for its method, of those tried (highest dev nDCG@10, mean "
    "over the seeds every rate ran); † and ‡ compare with the chosen rates."
)


def chosen_on_dev(rows: list[dict[str, Any]]) -> dict[str, str]:
    """For each method tried at several learning rates, the entry with the highest mean dev nDCG@10 over the seeds
    all of its rates ran (the study's rule for picking a learning rate, the same for every method: the picked rate's
    later seeds do not move the pick); a method tried at one rate is its own choice."""
    dev: dict[str, dict[Any, float]] = {}
    for row in rows:
        if not row.get("fused"):
            values = dev.setdefault(row["method"], {})
            if row.get("dev_ndcg@10") is not None:
                values[row.get("seed")] = row["dev_ndcg@10"]
    families: dict[str, list[str]] = {}
    for entry in dev:
        families.setdefault(split_learning_rate(entry)[0], []).append(entry)
    chosen: dict[str, str] = {}
    for family, entries in families.items():
        shared = set.intersection(*(set(dev[entry]) for entry in entries)) or None  # None: no seed all ran
        means = {entry: _mean_over(dev[entry], shared) for entry in entries}
        chosen[family] = max(entries, key=means.__getitem__)  # the first of equals, in the rows' order
    return chosen


def _mean_over(by_seed: dict[Any, float], seeds: set[Any] | None) -> float:
    """The mean of ``by_seed``'s values over ``seeds`` (None: all of them); -inf where there is none."""
    values = [value for seed, value in by_seed.items() if seeds is None or seed in seeds]
    return statistics.fmean(values) if values else float("-inf")


def significance(rows: list[dict[str, Any]], qrels: Qrels, root: Path) -> Significance:
    """The tests behind the marks of :func:`write_tables`: ``†`` where a trained entry's per-query nDCG@10 differs
    from full fine-tuning's (every entry but full's own rates: the ablations and petir's entries too), ``‡`` where an
    entry at a budget preset differs from the best scattered method's at that preset (the one with the highest
    mean), each reference at its learning rate chosen on dev (:func:`chosen_on_dev`); ``§`` where a
    re-ranked run's differs from its first stage's; each by a two-tailed paired t-test, Holm-adjusted over all of
    them (:func:`holm`). A row identical to its reference is not tested. Rows name their run file in ``run`` and a
    re-ranked one its first stage's in ``first_stage_run``."""
    from scipy.stats import ttest_rel

    qids = sorted(qrels)

    @cache  # every re-ranked run of a study shares its first stage's
    def per_query(run: str) -> list[float]:
        scores = evaluate_queries(qrels, read_run(root / run))
        return [scores[qid]["ndcg@10"] if qid in scores else 0.0 for qid in qids]

    per_seed: dict[tuple[str, str], list[list[float]]] = {}
    first_stages: dict[tuple[str, str], list[float]] = {}
    for row in rows:
        if row.get("run"):
            key = (row["method"], row.get("first_stage", ""))
            per_seed.setdefault(key, []).append(per_query(row["run"]))
            if row.get("first_stage_run"):
                first_stages[key] = per_query(row["first_stage_run"])
    means = {key: [statistics.fmean(column) for column in zip(*seeds, strict=True)] for key, seeds in per_seed.items()}

    chosen = set(chosen_on_dev(rows).values())  # the reference rows: each method at its dev-chosen learning rate
    full = next((e for e in chosen if split_learning_rate(e)[0] == REFERENCE_METHOD), REFERENCE_METHOD)
    entries = {method: trained_entry(method) for method, _ in means}
    found: list[tuple[str, str, str, float]] = []
    for (method, stage), values in means.items():
        references: dict[str, list[float] | None] = {"§": first_stages.get((method, stage))}
        if entries[method] is not None and split_learning_rate(method)[0] != REFERENCE_METHOD:
            references["†"] = means.get((full, stage))  # every trained entry, ablations and petir's own included
        budget = entries[method].preset if entries[method] is not None else None
        if budget is not None:  # ‡ needs a budget preset: the scattered methods are compared at the same one
            scattered = [
                k
                for k in means
                if k[1] == stage
                and k[0] in chosen
                and (entry := entries[k[0]]) is not None
                and entry.method.scattered
                and entry.preset == budget
            ]
            best = max(scattered, key=lambda k: statistics.fmean(means[k]), default=None)
            references["‡"] = means[best] if best is not None else None
        for mark in MARKS:  # in †‡§ order, as the marks are printed
            other = references.get(mark)
            if other is not None and other != values:
                found.append((method, stage, mark, float(ttest_rel(values, other).pvalue)))
    adjusted = holm([p for *_, p in found])
    return Significance(tuple(PairedTest(*test, p_holm) for test, p_holm in zip(found, adjusted, strict=True)))


#: Re-ranking depths the sweep reports (each at most the study's --rerank-depth).
SWEEP_DEPTHS = (5, 10, 20, 30, 50, 100)
DEPTH_SWEEP_NOTE = (
    "Test nDCG@10 had each re-ranker re-ranked only the first stage's top k (its scores restricted to those "
    "candidates; below k the first stage's order is kept), mean over seeds. Computed from the runs above, no model "
    "run again; the deepest column is the table's re-ranked run."
)


def depth_sweep(rows: list[dict[str, Any]], qrels: Qrels, root: Path, depths: Sequence[int] = SWEEP_DEPTHS) -> str:
    """Markdown: test nDCG@10 of each re-ranker had it re-ranked only the first stage's top k, for each k. A
    cross-encoder scores each pair on its own, so the top-k re-ranking is the full one's scores restricted to the
    first stage's top k (the rest keep the first stage's order; ties within the top k go as trec_eval breaks them,
    so the full depth gives the table's value): no model is run again. Rows name their re-ranked
    run in ``run`` and the first stage's in ``first_stage_run``; scores are averaged over seeds."""
    from petir.evaluate import evaluate_run, ranked

    table: dict[tuple[str, str], list[list[float]]] = {}
    for row in rows:
        if not row.get("first_stage_run") or not row.get("run") or row.get("fused"):
            continue
        first = read_run(root / row["first_stage_run"])
        scores = {qid: dict(hits) for qid, hits in read_run(root / row["run"]).items()}
        values = []
        for depth in depths:
            run = {}
            for qid, hits in first.items():
                rescored = [(docid, scores.get(qid, {}).get(docid, float("-inf"))) for docid, _ in hits[:depth]]
                order = [*ranked(rescored), *(docid for docid, _ in hits[depth:])]
                run[qid] = [(docid, float(len(hits) - rank)) for rank, docid in enumerate(order)]
            values.append(evaluate_run(qrels, run)["ndcg@10"])
        table.setdefault((row["method"], row["first_stage"]), []).append(values)
    lines = [
        "| re-ranker | first stage | " + " | ".join(f"top {depth}" for depth in depths) + " |",
        "|---|---|" + "---:|" * len(depths),
    ]
    for (method, stage), per_seed in table.items():
        means = [statistics.fmean(column) for column in zip(*per_seed, strict=True)]
        lines.append(f"| {method} | {stage} | " + " | ".join(f"{value:.4f}" for value in means) + " |")
    return "\n".join(lines)


def dev_test_agreement(table: list[dict[str, Any]]) -> str | None:
    """Does the dev metric rank methods as the test does? Spearman's rho between dev and test nDCG@10 over the
    trained methods (one first stage: the first listed), or None with fewer than 3."""
    from scipy.stats import spearmanr

    stage = next((row["first_stage"] for row in table if row.get("dev_ndcg@10") is not None), None)
    pairs = [
        (row["dev_ndcg@10"], row["ndcg@10"])
        for row in table
        if row.get("dev_ndcg@10") is not None and row.get("ndcg@10") is not None and row["first_stage"] == stage
    ]
    if len(pairs) < 3:
        return None
    rho = spearmanr(*zip(*pairs, strict=True)).statistic
    where = f" (first stage {stage})" if stage else ""
    # no p-value: scipy's t approximation is meaningless for a handful of methods (it gives 1e-24 for rho = 1, n = 5)
    return (
        f"Dev vs test{where}: Spearman's rho {rho:.2f} between dev and test nDCG@10 over the {len(pairs)} trained "
        "methods: how far the dev set ranks methods as the test split does."
    )


def _cell(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    if value is None or value == "":
        return "–"
    if key == "gain_share":
        return f"{value:.0%}"
    if not isinstance(value, float):
        return str(value)
    digits = 4 if "@" in key else 3 if key == "trainable_%" else 0 if "step" in key else 1
    text = f"{value:.{digits}f}"
    std = row.get(f"{key}_std")
    return f"{text} ± {std:.{digits}f}" if std is not None else text

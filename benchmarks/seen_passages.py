"""How much of a fine-tuned retriever's or re-ranker's test gain is its training passages found again?

In a BEIR set whose train and test queries cite the same passages (SciFact: 187 of its 300 test claims cite an
abstract a training claim cites), a model can gain on test by learning where its training passages sit, which a
corpus whose test queries ask for other passages would not reward. This splits the test queries in two, those with
a relevant passage that was a relevant passage of a training query ("seen") and the rest ("unseen"), and gives each
run's nDCG@10 on both, its gain over a reference run (the untrained model) and the paired t-test of that gain. A run
is any TREC run: a retriever's, or a re-ranker's (then the reference is the untrained re-ranking of the same
candidates). The training queries are the train qrels less the dev queries petir.train held out (the same seeded
split, so ``--dev-queries`` is the value the runs were trained with; left out, petir's default share).

    python benchmarks/seen_passages.py --train-qrels ../shared/data/scifact/qrels/train.tsv --dev-queries 50 \\
        --qrels runs/study/test-qrels.txt --reference zero-shot \\
        zero-shot=runs/study/retrieval/zero-shot/test.run.trec full=runs/study/retrieval/full/seed1/test.run.trec \\
        iaa-l=runs/study/retrieval/iaa-l/seed1/test.run.trec --output docs/results/seen-passages

A NAME given more than once names the seeds of one row: the row is their mean (± their standard deviation), and its
gain is tested query by query on the seeds' mean score.

Writes OUTPUT.json (each row: nDCG@10 on all, seen and unseen queries, each seed's, gains and p-values), OUTPUT.md
and OUTPUT.png (each row's mean gain on the two groups, each seed a dot).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from petir import cli
from petir.data import read_qrels, read_run, relevant, split_dev
from petir.errors import PetirError
from petir.evaluate import evaluate_queries
from petir.files import check_new_file, write_json_atomic, write_lines_atomic
from petir.training_data import dev_size


def training_passages(train_qrels: dict, dev_queries: int | None) -> set[str]:
    """The passages judged relevant to the queries petir.train trained on (its dev split held out)."""
    size = dev_size(dev_queries, len(train_qrels))
    if size >= len(train_qrels):
        raise PetirError(
            f"--dev-queries {size} leaves no training query (the train qrels have {len(train_qrels)}); give the "
            "value the runs were trained with"
        )
    if size:
        train_qrels, _ = split_dev(train_qrels, size, seed=0)
    return {docid for qid in train_qrels for docid in relevant(train_qrels, qid)}


def split_queries(qrels: dict, seen: set[str]) -> dict[str, list[str]]:
    """The test queries (every one of ``qrels``, as petir.evaluate averages them), all of them and split by whether
    a relevant passage of theirs was a training one."""
    hit = {qid for qid in qrels if relevant(qrels, qid) & seen}
    return {
        "all": sorted(qrels),
        "seen": sorted(hit),
        "unseen": sorted(qid for qid in qrels if qid not in hit),
    }


def parse_run(spec: str) -> tuple[str, Path]:
    name, sep, path = spec.partition("=")
    if not sep or not name or not path:
        raise PetirError(f"run {spec!r}: give NAME=PATH (a name for the table, then a TREC run file)")
    return name, Path(path)


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(prog="python benchmarks/seen_passages.py", description=__doc__)
    parser.add_argument("runs", nargs="+", metavar="NAME=RUN", help="test runs (TREC), each with a name")
    parser.add_argument("--qrels", type=Path, required=True, help="test qrels (TREC)")
    parser.add_argument("--train-qrels", type=Path, required=True, help="the training qrels the models trained on")
    parser.add_argument(
        "--dev-queries",
        type=cli.Bounded(int, minimum=0),
        default=None,
        help="the --dev-queries the models were trained with (default: petir.train's, 15 %% within 50-200)",
    )
    parser.add_argument("--reference", required=True, help="the NAME of the run gains are measured from")
    parser.add_argument("--output", type=Path, required=True, help="stem of OUTPUT.json, OUTPUT.md, OUTPUT.png")
    cli.add_overwrite_flag(parser, "the outputs of an earlier run")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    runs: dict[str, list[Path]] = {}
    for name, path in map(parse_run, args.runs):
        runs.setdefault(name, []).append(path)
    if args.reference not in runs:
        raise PetirError(f"--reference {args.reference!r} is not one of the runs' names ({', '.join(runs)})")
    for suffix in (".json", ".md", ".png"):
        check_new_file(args.output.with_suffix(suffix), args.overwrite)
    qrels = read_qrels(args.qrels)
    groups = split_queries(qrels, training_passages(read_qrels(args.train_qrels), args.dev_queries))
    scores = {}
    for name, paths in runs.items():
        seeds = [evaluate_queries(qrels, read_run(path)) for path in paths]
        scores[name] = [{qid: per_query[qid]["ndcg@10"] for qid in groups["all"]} for per_query in seeds]
    write_report(args.output, measure(scores, groups, args.reference), groups, args.reference)


def measure(scores: dict[str, list[dict[str, float]]], groups: dict[str, list[str]], reference: str) -> dict[str, dict]:
    """Each row's nDCG@10 on each group (the mean of its seeds, each seed's, their standard deviation), its gain over
    ``reference`` and the gain's paired t-test over the group's queries, on each query's mean over the seeds."""
    from scipy.stats import ttest_rel

    def per_query_mean(seeds: list[dict[str, float]], qids: list[str]) -> list[float]:
        return [statistics.fmean(seed[q] for seed in seeds) for q in qids]

    rows = {}
    for name, seeds in scores.items():
        row = rows[name] = {}
        for group, qids in groups.items():
            values, base = per_query_mean(seeds, qids), per_query_mean(scores[reference], qids)
            mean = statistics.fmean(values) if qids else None
            each = [statistics.fmean(seed[q] for q in qids) for seed in seeds] if qids else []
            differs = name != reference and len(qids) > 1 and values != base
            row[group] = {
                "queries": len(qids),
                "ndcg@10": mean,
                "seeds": each,
                "sd": statistics.stdev(each) if len(each) > 1 else None,
                "gain": mean - statistics.fmean(base) if qids else None,
                "p_vs_reference": float(ttest_rel(values, base).pvalue) if differs else None,
            }
    return rows


def write_report(output: Path, rows: dict[str, dict], groups: dict[str, list[str]], reference: str) -> None:
    """The JSON, Markdown and bar chart of :func:`measure`'s rows."""
    write_json_atomic(output.with_suffix(".json"), {"reference": reference, "runs": rows})
    sizes = {group: len(qids) for group, qids in groups.items()}
    lines = [
        f"Test queries: {sizes['all']}; seen (a relevant passage was a training query's): {sizes['seen']}; "
        f"unseen: {sizes['unseen']}. Gains over `{reference}`, p: paired t-test over the group's queries (on each "
        "query's mean over the seeds). nDCG@10: the seeds' mean ± standard deviation.",
        "",
        "| run | seeds | nDCG@10 | seen | gain on seen | p | unseen | gain on unseen | p |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def cell(value: float | None, form: str) -> str:
        return "–" if value is None else format(value, form)

    def score(v: dict) -> str:
        return cell(v["ndcg@10"], ".4f") + ("" if v["sd"] is None else f" ± {v['sd']:.4f}")

    for name, row in rows.items():
        cells = [str(len(row["all"]["seeds"])), score(row["all"])]
        for group in ("seen", "unseen"):
            v = row[group]
            cells += [score(v), cell(v["gain"], "+.4f"), cell(v["p_vs_reference"], ".2g")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    write_lines_atomic(output.with_suffix(".md"), [line + "\n" for line in lines])
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rows)
    figure, axis = plt.subplots(figsize=(max(6.0, 0.9 * len(names) + 2), 3.8))
    dotted = False  # the seeds' dots are labelled once
    for offset, group, colour in ((-0.2, "seen", "tab:orange"), (0.2, "unseen", "tab:blue")):
        values = [rows[name][group]["gain"] or 0.0 for name in names]
        label = f"{group} ({sizes[group]})"
        axis.bar([i + offset for i in range(len(names))], values, width=0.4, color=colour, label=label)
        base = rows[reference][group]["ndcg@10"] or 0.0
        for i, name in enumerate(names):
            if len(seeds := rows[name][group]["seeds"]) > 1:  # each seed's gain over the reference's mean
                dot_label = None if dotted else "each seed"
                axis.plot([i + offset] * len(seeds), [v - base for v in seeds], "k.", markersize=4, label=dot_label)
                dotted = True
    axis.axhline(0, color="black", linewidth=0.8)
    axis.set_xticks(range(len(names)), names, rotation=30, ha="right")
    axis.set(
        ylabel=f"test nDCG@10 gain over {reference}",
        title="on test queries whose relevant passage a training query had (seen),\nand on the others",
    )
    axis.legend(loc="upper left")
    figure.tight_layout()
    figure.savefig(output.with_suffix(".png"), dpi=120)
    plt.close(figure)


if __name__ == "__main__":
    cli.run(main)

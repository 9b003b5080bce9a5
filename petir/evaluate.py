"""Retrieval metrics two ways: Pyserini's trec_eval for reported numbers, and a pure-Python twin for dev evaluation.

:func:`trec_eval` runs the commands Pyserini documents (``python -m pyserini.eval.trec_eval -c -m ndcg_cut.10``;
MRR@10 as for MS MARCO, ``-c -M 10 -m recip_rank``) and is what papers and regression tables quote.
:func:`evaluate_run` computes the same four numbers in-process, without Java, for evaluation during training; it
follows trec_eval's conventions so the two agree (a slow test checks this on SciFact):

- every query in the qrels counts once, including one judged only non-relevant (it scores 0, as
  ``trec_eval -c`` has it: measured, ``num_q`` counts it), and a judged query missing from the run scores 0;
  run queries without judgments are ignored. To leave queries without relevant docs out of the average, drop them
  from the qrels, and both functions agree again;
- a ranking is ordered by score, descending, ties broken by docid, descending (trec_eval ignores the rank column);
- nDCG gains are the relevance grades themselves (not 2^rel - 1), discounted by log2(rank + 1); the ideal ranking
  is the query's judgments sorted by grade;
- recall@k counts relevant docs (rel > 0) in the top k over all relevant docs; MRR@10 is 1 / rank of the first
  relevant doc within the top 10, else 0.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

from petir import cli
from petir.data import PathLike, Qrels, Run, read_json, read_qrels, read_run, write_qrels
from petir.errors import DataError, PetirError
from petir.files import check_new_file, check_not_input, output_lock, write_lines_atomic
from petir.java import run_pyserini

DEFAULT_METRICS = ("ndcg_cut.10", "recip_rank", "recall.100", "recall.1000")
MRR_DEPTH = 10  # recip_rank is evaluated on the top 10 only (MS MARCO's MRR@10)

_OUTPUT_LINE = re.compile(r"^(\S+)\s+all\s+(\S+)$")


def _key(trec_name: str) -> str:
    """trec_eval's output name -> petir's: ndcg_cut_10 -> ndcg@10, recall_100 -> recall@100, P_5 -> p@5,
    recip_rank -> mrr@10 (evaluated with -M 10); anything else as trec_eval prints it."""
    if trec_name == "recip_rank":
        return f"mrr@{MRR_DEPTH}"
    match = re.fullmatch(r"(ndcg_cut|recall|P)_(\d+)", trec_name)
    if match:
        name = {"ndcg_cut": "ndcg", "recall": "recall", "P": "p"}[match.group(1)]
        return f"{name}@{match.group(2)}"
    return trec_name


def _keys(measure: str) -> list[str]:
    """The keys a requested measure yields: "recall.100,1000" -> ["recall@100", "recall@1000"]."""
    name, _, cutoffs = measure.partition(".")
    return [_key(f"{name}_{c}") for c in cutoffs.split(",")] if cutoffs else [_key(name)]


def trec_eval(qrels_path: PathLike, run_path: PathLike, metrics: Sequence[str] = DEFAULT_METRICS) -> dict[str, float]:
    """Evaluate a TREC run file against qrels with Pyserini's trec_eval (``-c``: averaged over all judged queries, a
    query missing from the run counting 0). The qrels may be in any format :func:`petir.data.read_qrels` reads (BEIR
    TSV too): trec_eval is given a TREC copy.

    ``metrics`` are trec_eval measure names (``ndcg_cut.10``, ``recall.100``, ``recip_rank``, ``map``, ...);
    ``recip_rank`` runs separately with ``-M 10``, since that option cuts every measure's ranking to 10 docs.

    Returns:
        {"ndcg@10": ..., "mrr@10": ..., "recall@100": ..., "recall@1000": ...} for the default metrics, values in
        [0, 1] as trec_eval prints them (4 decimals).
    """
    if not metrics:
        raise PetirError("trec_eval: no metrics asked for")
    if not Path(run_path).is_file():
        raise DataError(f"{run_path}: no such run file")
    # petir's reader first, as petir.rerank's: it names the file and line of a malformed line, and of a NaN score,
    # which trec_eval would rank somewhere without a word
    read_run(run_path)
    with tempfile.TemporaryDirectory(prefix="petir-qrels-") as directory:
        trec_qrels = Path(directory) / "qrels.trec"
        write_qrels(read_qrels(qrels_path), trec_qrels)
        results = _trec_eval(trec_qrels, run_path, metrics)
    missing = [m for m in metrics if any(key not in results for key in _keys(m))]
    if missing:
        raise PetirError(
            f"trec_eval printed no value for {', '.join(missing)}; check the measure names "
            f"(e.g. ndcg_cut.10, recall.100, recip_rank)"
        )
    return results


def read_results(path: PathLike) -> dict[str, float]:
    """What ``python -m petir.evaluate --output`` wrote: the default metrics' values (the study caches them)."""
    metrics = {key: float for measure in DEFAULT_METRICS for key in _keys(measure)}
    return read_json(path, "petir.evaluate result", "delete it, and the run is evaluated again", metrics)


def _trec_eval(qrels_path: Path, run_path: PathLike, metrics: Sequence[str]) -> dict[str, float]:
    groups: list[list[str]] = []
    # trec_eval keeps only the last cutoffs given for a measure (-m recall.100 -m recall.1000 prints recall_1000
    # only), so cutoffs of one measure go together: -m recall.100,1000.
    cutoffs: dict[str, list[str]] = {}
    for measure in metrics:
        if measure != "recip_rank":
            name, _, params = measure.partition(".")
            cutoffs.setdefault(name, []).extend(p for p in params.split(",") if p)
    if cutoffs:
        groups.append(
            ["-c"]
            + [
                arg
                for name, params in cutoffs.items()
                for arg in ("-m", f"{name}.{','.join(params)}" if params else name)
            ]
        )
    if "recip_rank" in metrics:
        groups.append(["-c", "-M", str(MRR_DEPTH), "-m", "recip_rank"])
    results: dict[str, float] = {}
    for options in groups:
        process = run_pyserini(
            "pyserini.eval.trec_eval", [*options, qrels_path, run_path], what=f"trec_eval of {run_path}"
        )
        for line in process.stdout.splitlines():
            match = _OUTPUT_LINE.match(line.strip())
            if match and match.group(1) != "runid":
                results[_key(match.group(1))] = float(match.group(2))
    return results


def ranked(hits: Sequence[tuple[str, float]]) -> list[str]:
    """Docids in trec_eval's order: score descending, then docid descending (it never reads the rank column)."""
    return [docid for docid, _ in sorted(hits, key=lambda hit: (hit[1], hit[0]), reverse=True)]


def _dcg(gains: Sequence[float]) -> float:
    return sum(g / math.log2(rank + 1) for rank, g in enumerate(gains, 1) if g > 0)


def evaluate_run(
    qrels: Qrels, run: Run, k_ndcg: int = 10, k_mrr: int = 10, k_recall: Sequence[int] = (100, 1000)
) -> dict[str, float]:
    """nDCG@k_ndcg, MRR@k_mrr and recall@k for each k in ``k_recall``, averaged over the queries in ``qrels``, with
    the conventions of ``trec_eval -c`` (module docstring). Pure Python, no Java; SciFact's 300 queries x 1000 hits
    take about 0.2 s.

    Returns:
        {"ndcg@10": ..., "mrr@10": ..., "recall@100": ..., "recall@1000": ...} for the defaults, values in [0, 1].
    """
    per_query = evaluate_queries(qrels, run, k_ndcg, k_mrr, k_recall)
    names = next(iter(per_query.values())).keys()
    return {name: sum(values[name] for values in per_query.values()) / len(per_query) for name in names}


def evaluate_queries(
    qrels: Qrels, run: Run, k_ndcg: int = 10, k_mrr: int = 10, k_recall: Sequence[int] = (100, 1000)
) -> dict[str, dict[str, float]]:
    """The measures of :func:`evaluate_run` for each query of ``qrels`` (what paired significance tests compare);
    a query without a relevant passage scores 0 on every measure, as in ``trec_eval -c``."""
    if not qrels:
        raise PetirError("evaluate_run: empty qrels, nothing to evaluate")
    names = [f"ndcg@{k_ndcg}", f"mrr@{k_mrr}"] + [f"recall@{k}" for k in k_recall]
    results = {}
    for qid, judgments in qrels.items():
        values = results[qid] = dict.fromkeys(names, 0.0)
        n_relevant = sum(rel > 0 for rel in judgments.values())
        if n_relevant == 0:
            continue
        ranking = ranked(run.get(qid, []))
        grades = [max(judgments.get(docid, 0), 0) for docid in ranking]
        ideal = _dcg(sorted((max(rel, 0) for rel in judgments.values()), reverse=True)[:k_ndcg])
        values[f"ndcg@{k_ndcg}"] = _dcg(grades[:k_ndcg]) / ideal
        first = next((rank for rank, grade in enumerate(grades[:k_mrr], 1) if grade > 0), None)
        values[f"mrr@{k_mrr}"] = 1.0 / first if first else 0.0
        for k in k_recall:
            values[f"recall@{k}"] = sum(grade > 0 for grade in grades[:k]) / n_relevant
    return results


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(
        prog="python -m petir.evaluate",
        description="Pyserini's trec_eval (nDCG@10, MRR@10, R@100, R@1000) of a TREC run, as JSON",
    )
    parser.add_argument("qrels", type=Path, help="qrels: TREC ('qid 0 docid rel') or BEIR TSV (with its header)")
    parser.add_argument("run", type=Path, help="TREC run ('qid Q0 docid rank score tag')")
    parser.add_argument("--output", type=Path, help="JSON file to write (default: print)")
    cli.add_overwrite_flag(parser, "an existing --output file")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m petir.evaluate QRELS RUN --output METRICS.json``: :func:`trec_eval`'s numbers as JSON, the form
    the study runner caches beside each run."""
    args = build_parser().parse_args(argv)
    if args.output is None:
        print(json.dumps(trec_eval(args.qrels, args.run), indent=2))
        return
    check_not_input(args.output, {"qrels": args.qrels, "run": args.run})
    with output_lock(args.output, directory=False):
        check_new_file(args.output, args.overwrite)
        write_lines_atomic(args.output, [json.dumps(trec_eval(args.qrels, args.run), indent=2) + "\n"])


if __name__ == "__main__":
    cli.run(main)

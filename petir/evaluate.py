"""Retrieval metrics: trec_eval's numbers in process, and a pure-Python twin for dev evaluation.

:func:`evaluate_files` (``python -m petir.evaluate``) computes trec_eval's measures in process with pytrec_eval
(trec_eval's own C code, shipped with ir_measures), as Pyserini's commands do (``python -m pyserini.eval.trec_eval
-c -m ndcg_cut.10``; MRR@10 as for MS MARCO, ``-c -M 10 -m recip_rank``): the same values to the digit, without
Java (SciFact's BM25 run, 2 cores: ``python -m petir.evaluate`` 0.7 s, 6.2 s with Java's trec_eval).
:func:`trec_eval` runs Pyserini's Java trec_eval itself, the reference the other two are tested against.
:func:`evaluate_run` computes the four default numbers in pure Python from a run in memory, for evaluation during
training; all three follow trec_eval's conventions (slow tests check this on SciFact):

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

import pytrec_eval

from petir import cli
from petir.data import PathLike, Qrels, Run, read_json, read_qrels, read_run, require_file, write_qrels
from petir.errors import PetirError
from petir.files import check_new_file, check_not_input, output_lock, write_lines_atomic
from petir.java import run_pyserini

DEFAULT_METRICS = ("ndcg_cut.10", "recip_rank", "recall.100", "recall.1000")
MRR_DEPTH = 10  # recip_rank is evaluated on the top 10 only (MS MARCO's MRR@10)

_OUTPUT_LINE = re.compile(r"^(\S+)\s+all\s+(\S+)$")
#: trec_eval's measures that are numbers: all it names but runid and relstring, which print text.
MEASURES = sorted(pytrec_eval.supported_measures - {"runid", "relstring"})


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
    require_file(run_path, "run file")
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


def evaluate_files(
    qrels_path: PathLike, run_path: PathLike, metrics: Sequence[str] = DEFAULT_METRICS
) -> dict[str, float]:
    """What :func:`trec_eval` returns for the same arguments, computed in process by pytrec_eval (trec_eval's C
    code): ``-c`` (a judged query missing from the run counts, with an empty ranking), ``recip_rank`` on the top
    :data:`MRR_DEPTH` (``-M 10``), values rounded to 4 decimals as trec_eval prints them. ``metrics`` are trec_eval
    measure names (any of :data:`MEASURES`, with trec_eval's parameters: ``ndcg_cut.10``, ``recall.100,1000``,
    ``P.5``, ``map``); an unknown one is a one-line error."""
    if not metrics:
        raise PetirError("evaluate: no metrics asked for")
    unknown = [m for m in metrics if m.partition(".")[0] not in MEASURES]
    if unknown:
        raise PetirError(
            f"unknown trec_eval measure {unknown[0]!r}; trec_eval's measures: {', '.join(MEASURES)} "
            "(parameters after a dot, e.g. ndcg_cut.10, recall.100,1000, P.5)"
        )
    require_file(run_path, "run file")
    qrels, run = read_qrels(qrels_path), read_run(run_path)
    results = {}
    others = [m for m in metrics if m != "recip_rank"]
    if others:
        results |= _pytrec_eval(qrels, run, others)
    if "recip_rank" in metrics:
        top = {qid: hits_in_order(hits)[:MRR_DEPTH] for qid, hits in run.items()}
        results |= _pytrec_eval(qrels, top, ["recip_rank"])
    return results


def _pytrec_eval(qrels: Qrels, run: Run, measures: Sequence[str]) -> dict[str, float]:
    """pytrec_eval's measures averaged as ``trec_eval -c`` does, under petir's names (:func:`_key`)."""
    try:
        evaluator = pytrec_eval.RelevanceEvaluator(qrels, set(measures))
    except ValueError as error:  # a measure's parameters it cannot read, e.g. ndcg_cut.x
        raise PetirError(f"trec_eval measures {', '.join(measures)}: {error}") from None
    per_query = evaluator.evaluate({qid: dict(run.get(qid, [])) for qid in qrels})
    names = next(iter(per_query.values()), {}).keys()
    return {
        _key(name): round(pytrec_eval.compute_aggregated_measure(name, [v[name] for v in per_query.values()]), 4)
        for name in names
    }


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


def hits_in_order(hits: Sequence[tuple[str, float]]) -> list[tuple[str, float]]:
    """``(docid, score)`` hits in trec_eval's order: score descending, then docid descending (it never reads the
    rank column)."""
    return sorted(hits, key=lambda hit: (hit[1], hit[0]), reverse=True)


def ranked(hits: Sequence[tuple[str, float]]) -> list[str]:
    """Docids in trec_eval's order (:func:`hits_in_order`)."""
    return [docid for docid, _ in hits_in_order(hits)]


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
        description="trec_eval's nDCG@10, MRR@10, R@100 and R@1000 (or --metrics) of a TREC run, as JSON, "
        "computed in process by pytrec_eval (trec_eval's code)",
    )
    parser.add_argument("qrels", type=Path, help="qrels: TREC ('qid 0 docid rel') or BEIR TSV (with its header)")
    parser.add_argument("run", type=Path, help="TREC run ('qid Q0 docid rank score tag')")
    parser.add_argument(
        "--metrics",
        nargs="+",
        default=list(DEFAULT_METRICS),
        metavar="MEASURE",
        help="trec_eval measure names, e.g. ndcg_cut.10 recall.100,1000 map P.5 (recip_rank is cut at 10, MRR@10; "
        f"default: {' '.join(DEFAULT_METRICS)})",
    )
    parser.add_argument("--output", type=Path, help="JSON file to write (default: print)")
    cli.add_overwrite_flag(parser, "an existing --output file")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m petir.evaluate QRELS RUN --output METRICS.json``: :func:`evaluate_files`' numbers (trec_eval's) as
    JSON, the form the study runner caches beside each run."""
    args = build_parser().parse_args(argv)
    if args.output is None:
        print(json.dumps(evaluate_files(args.qrels, args.run, args.metrics), indent=2))
        return
    check_not_input(args.output, {"qrels": args.qrels, "run": args.run})
    with output_lock(args.output, directory=False):
        check_new_file(args.output, args.overwrite)
        write_lines_atomic(
            args.output, [json.dumps(evaluate_files(args.qrels, args.run, args.metrics), indent=2) + "\n"]
        )


if __name__ == "__main__":
    cli.run(main)

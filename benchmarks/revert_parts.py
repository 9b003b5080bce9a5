"""Where does a fully fine-tuned re-ranker keep its gain? Each part of its backbone put back to the untrained weights.

The partial fine-tuning ablations (``--method partial-*``) train the backbone with a part frozen: they say what a
model can reach without that part, the rest free to make up for it. This asks the other question, of the one model
full fine-tuning found, at the cost of one re-ranking per part and no training: set the part's weights back to the
backbone's (the head and every other part keep their fine-tuned values), re-rank the same first-stage run, and see
how much of the model's gain over the untrained cosine re-ranking is left. A part whose reversal costs most of the
gain is where full fine-tuning's change matters; one whose reversal costs nothing changed in a way the model does
not need, which a PET method at 0.5 % can leave alone. Parts are petir's partial-fine-tuning parts
(:mod:`petir.pet.partial`), plus ``bottom_half`` and ``encoder`` (every backbone weight: only the head stays trained).

``lowrank-R`` asks whether a PET budget could hold the change at all: every layer matrix keeps only the top R
singular directions of its fine-tuning change (what a rank-R LoRA on every matrix could store), every other
backbone weight (embeddings, LayerNorms, biases) goes back to the untrained one; its "weights" are what the
rank-R change takes to store, R x (rows + columns) a matrix (rank 4 on MiniLM: 165,888, IAA-L's budget). If a rank
within the budget keeps the gain, the budget is not what PET lacks: training is.

    python benchmarks/revert_parts.py --model runs/study/rerank/full-lr1e-4/seed1/model \\
        --run runs/study/retrieval/bm25/test.run.trec --topics runs/study/test-topics.tsv \\
        --corpus ../shared/data/scifact/corpus.jsonl.gz --qrels runs/study/test-qrels.txt \\
        --untrained runs/study/rerank/cosine/test.rerank-bm25.trec --depth 20 --output docs/results/revert-parts

Writes OUTPUT.json (every part: nDCG@10, the relative size of full fine-tuning's change to it, the share of the gain
left, the paired t-test against the model unchanged), OUTPUT.md and OUTPUT.png (the share left per part).
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
from pathlib import Path
from typing import NamedTuple

import torch

from petir import cli
from petir.backbone import load_backbone
from petir.data import read_qrels, read_queries, read_run
from petir.errors import check_choice
from petir.evaluate import evaluate_queries
from petir.files import check_new_file, write_json_atomic, write_lines_atomic
from petir.pet.base import encoder_layers
from petir.pet.partial import part
from petir.rerank import passage_lookup, rerank

#: The parts reverted one at a time ("none": the fine-tuned model as it is, the reference).
PARTS = (
    *("none", "word_embeddings", "embeddings", "layer_norms"),
    *("attention", "ffn", "bottom_half", "top_half", "encoder"),
)


LOW_RANK = re.compile(r"lowrank-(?P<rank>[1-9][0-9]*)")


def check_part(name: str) -> None:
    if not LOW_RANK.fullmatch(name):
        check_choice("--parts", name, (*PARTS, "lowrank-R (R a positive integer)"))


def low_rank(change: torch.Tensor, rank: int) -> torch.Tensor:
    """``change`` truncated to its top ``rank`` singular directions (itself where its rank is lower)."""
    u, s, vh = torch.linalg.svd(change, full_matrices=False)
    return (u[:, :rank] * s[:rank]) @ vh[:rank]


class Replacement(NamedTuple):
    """What one row of the report sets in the encoder, and what it measures."""

    values: dict[str, torch.Tensor]  # by parameter name: the weights set for the re-ranking
    numbers: int  # how many numbers the row's weights are: reverted ones, or the low-rank change stored
    changed: dict[str, torch.Tensor]  # weights whose change from the untrained ones the row reports


def part_values(
    encoder: torch.nn.Module, name: str, tuned: dict[str, torch.Tensor], untrained: dict[str, torch.Tensor]
) -> Replacement:
    """A part's weights reverted (its reported change: the one taken away), or ``lowrank-R``'s layer matrices with
    their change cut to rank R and every other weight reverted (its reported change: the one kept)."""
    names = {parameter: key for key, parameter in encoder.named_parameters()}
    match = LOW_RANK.fullmatch(name)
    if match is None:
        keys = sorted(names[p] for p in part_parameters(encoder, name))
        reverted = {key: untrained[key] for key in keys}
        return Replacement(reverted, sum(tuned[key].numel() for key in keys), {key: tuned[key] for key in keys})
    rank = int(match["rank"])
    matrices = {names[p] for layer in encoder_layers(encoder) for p in layer.parameters() if p.ndim == 2}
    kept = {key: untrained[key] + low_rank(tuned[key] - untrained[key], rank) for key in sorted(matrices)}
    values = {key: untrained[key] for key in names.values() if key not in matrices} | kept
    return Replacement(values, sum(rank * sum(tuned[key].shape) for key in matrices), kept)


def part_parameters(encoder: torch.nn.Module, name: str) -> set[torch.nn.Parameter]:
    """The parameters of ``name`` (:data:`PARTS`): petir's partial-fine-tuning parts, the lower half of the layers,
    or the whole encoder."""
    if name == "none":
        return set()
    if name == "encoder":
        return set(encoder.parameters())
    if name == "bottom_half":
        layers = {p for layer in encoder_layers(encoder) for p in layer.parameters()}
        return layers - part(encoder, "top_half")
    return part(encoder, name)


def relative_change(tuned: list[torch.Tensor], untrained: list[torch.Tensor]) -> float:
    """||tuned - untrained|| / ||untrained|| over a part's weights taken together (Frobenius)."""
    change = sum(float((a - b).pow(2).sum()) for a, b in zip(tuned, untrained, strict=True))
    size = sum(float(b.pow(2).sum()) for b in untrained)
    return (change / size) ** 0.5 if size else 0.0


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(prog="python benchmarks/revert_parts.py", description=__doc__)
    parser.add_argument("--model", type=Path, required=True, help="a fully fine-tuned petir re-ranker (OUTPUT/model)")
    parser.add_argument("--run", type=Path, required=True, help="the first-stage test run it re-ranks (TREC)")
    parser.add_argument("--topics", type=Path, required=True, help="its queries (TSV: qid, text)")
    parser.add_argument("--corpus", type=Path, required=True, help="the BEIR corpus (passages by docid)")
    parser.add_argument("--qrels", type=Path, required=True, help="test qrels (TREC)")
    parser.add_argument("--untrained", type=Path, required=True, help="the untrained cosine's re-ranking of --run")
    parser.add_argument("--depth", type=cli.Bounded(int, minimum=1), default=20, help="passages re-scored per query")
    parser.add_argument(
        "--parts", default=",".join(PARTS), help="comma-separated, from: " + ", ".join(PARTS) + ", lowrank-R"
    )
    parser.add_argument("--output", type=Path, required=True, help="stem of OUTPUT.json, OUTPUT.md, OUTPUT.png")
    cli.add_overwrite_flag(parser, "the outputs of an earlier run")
    return parser


def main(argv: list[str] | None = None) -> None:
    from petir.tasks import load

    args = build_parser().parse_args(argv)
    parts = [name.strip() for name in args.parts.split(",") if name.strip()]
    for name in parts:
        check_part(name)
    for suffix in (".json", ".md", ".png"):
        check_new_file(args.output.with_suffix(suffix), args.overwrite)
    qrels, run, queries = read_qrels(args.qrels), read_run(args.run), read_queries(args.topics)
    passage = passage_lookup(None, args.corpus)
    model = load(args.model).eval()
    encoder = model.encoder
    untrained = {name: p.detach() for name, p in load_backbone(model.backbone)[0].named_parameters()}
    parameters = dict(encoder.named_parameters())
    tuned = {name: parameter.detach().clone() for name, parameter in parameters.items()}

    def per_query(scores_run: dict) -> dict[str, float]:
        values = evaluate_queries(qrels, scores_run)
        return {qid: values[qid]["ndcg@10"] if qid in values else 0.0 for qid in qrels}

    start = per_query(read_run(args.untrained))
    results = {}
    for name in parts:
        # rerank()'s partial scores carry no key of the weights that made them: a fresh file per part, never
        # one an interrupted run (another part, another model) left behind
        with torch.no_grad(), tempfile.TemporaryDirectory() as scratch:
            replacement = part_values(encoder, name, tuned, untrained)
            for key, value in replacement.values.items():
                parameters[key].copy_(value)
            partial = Path(scratch) / "scores.partial.jsonl"
            values = per_query(rerank(run, queries, passage, model.pair_scorer(32), args.depth, partial))
            for key in replacement.values:
                parameters[key].copy_(tuned[key])
        changed = sorted(replacement.changed)
        results[name] = {
            "parameters": replacement.numbers,
            "relative_change": relative_change(
                [replacement.changed[k] for k in changed], [untrained[k] for k in changed]
            ),
            "per_query": values,
        }
    write_report(args.output, results, start)


def write_report(output: Path, results: dict[str, dict], start: dict[str, float]) -> None:
    """The JSON, Markdown and bar chart of :func:`main`'s measurements."""
    from scipy.stats import ttest_rel

    qids = sorted(start)
    reference = [results["none"]["per_query"][q] for q in qids] if "none" in results else None
    base = statistics.fmean(start.values())
    full = statistics.fmean(reference) if reference else None
    rows = {}
    for name, result in results.items():
        values = [result["per_query"][q] for q in qids]
        mean = statistics.fmean(values)
        rows[name] = {
            "ndcg@10": mean,
            "share_of_gain_left": (mean - base) / (full - base) if full is not None and full != base else None,
            "p_vs_unchanged": float(ttest_rel(values, reference).pvalue) if reference and values != reference else None,
            "parameters": result["parameters"],
            "relative_change": result["relative_change"],
        }
    write_json_atomic(output.with_suffix(".json"), {"untrained_cosine_ndcg@10": base, "parts": rows})
    lines = [
        f"Untrained cosine re-ranking: nDCG@10 {base:.4f}; the fine-tuned model unchanged is the row `none`.",
        "",
        "| part put back to the untrained weights | weights | relative change in fine-tuning | nDCG@10 | share of "
        "the gain left | paired p vs unchanged |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, row in rows.items():
        share = "–" if row["share_of_gain_left"] is None else f"{row['share_of_gain_left']:.0%}"
        p = "–" if row["p_vs_unchanged"] is None else f"{row['p_vs_unchanged']:.3g}"
        lines.append(
            f"| {name} | {row['parameters']:,} | {row['relative_change']:.4f} | {row['ndcg@10']:.4f} | {share} | {p} |"
        )
    if any(LOW_RANK.fullmatch(name) for name in rows):
        lines += [
            "",
            "lowrank-R: every layer matrix keeps its fine-tuning change cut to rank R (weights: what that takes to "
            "store; relative change: the change kept), every other backbone weight is put back.",
        ]
    write_lines_atomic(output.with_suffix(".md"), [line + "\n" for line in lines])
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = {name: row["share_of_gain_left"] for name, row in rows.items() if row["share_of_gain_left"] is not None}
    figure, axis = plt.subplots(figsize=(7, 3.5))
    axis.barh(list(shown), [100 * share for share in shown.values()], color="tab:blue")
    axis.axvline(0, color="black", linewidth=0.8)
    axis.axvline(100, color="grey", linestyle="--", linewidth=0.8)
    axis.invert_yaxis()
    axis.set(xlabel="share of full fine-tuning's gain left (%)", title="each part put back to the untrained weights")
    figure.tight_layout()
    figure.savefig(output.with_suffix(".png"), dpi=120)
    plt.close(figure)


if __name__ == "__main__":
    cli.run(main)

"""The study's plots: dev nDCG@10 and loss against steps (``convergence-STAGE.png``) and each method's share of full
fine-tuning's gain (``gain-share-STAGE.png``), drawn from the runs and rows :mod:`petir.study.report` reads."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from petir.pet import REFERENCE_METHOD
from petir.pet.partial import METHOD as PARTIAL
from petir.run_directory import METRICS_FILE, read_metrics
from petir.study.entries import study_entry
from petir.study.report import dev_curve, gain_spans, ndcg_means, picked_on_dev, share_of_gain


def loss_curve(metrics_file: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in read_metrics(metrics_file) if "loss" in r]


def plot_convergence(root: Path, stage: str, variants: Mapping[str, Sequence[int]]) -> Path:
    """Dev nDCG@10 and training loss against steps; mean over each variant's seeds (those its table row uses, not
    every seed found on disk) with the min-max band. Connected variants (and full fine-tuning) are drawn solid,
    scattered ones dashed; the legend sits beside the plots, so a long list of methods hides no curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    figure, (dev_axis, loss_axis) = plt.subplots(1, 2, figsize=(14, 4.5))
    palette = plt.get_cmap("tab10" if len(variants) <= 10 else "tab20").colors  # no two methods share a colour
    for (variant, seeds), color in zip(variants.items(), itertools.cycle(palette), strict=False):
        files = [path for seed in seeds if (path := root / stage / variant / f"seed{seed}" / METRICS_FILE).exists()]
        if not files:
            continue
        style = "--" if study_entry(variant).method.scattered else "-"
        for axis, read in ((dev_axis, dev_curve), (loss_axis, loss_curve)):
            curves = [read(path) for path in files]
            length = min(len(curve) for curve in curves)
            if length == 0:
                continue
            steps = [step for step, _ in curves[0][:length]]
            values = np.array([[value for _, value in curve[:length]] for curve in curves])
            label = f"{variant} ({len(files)} seed{'s' if len(files) > 1 else ''})"
            axis.plot(steps, values.mean(0), style, color=color, label=label)
            if len(files) > 1:
                axis.fill_between(steps, values.min(0), values.max(0), color=color, alpha=0.15)
    dev_axis.set(title=f"{stage}: dev nDCG@10", xlabel="step", ylabel="nDCG@10")
    loss_axis.set(title=f"{stage}: training loss", xlabel="step", ylabel="loss (mean per logged window)")
    loss_axis.legend(*dev_axis.get_legend_handles_labels(), fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1))
    figure.tight_layout()
    path = root / f"convergence-{stage}.png"
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)
    return path


def plot_gain_share(root: Path, stage: str, rows: list[dict[str, Any]], untrained: str, first_stage: str = "") -> Path:
    """``gain-share-STAGE.png``: each method's share of full fine-tuning's gain (the lines of
    :func:`write_gain_share`) as a bar, its seeds as dots, each against the same means of the untrained model (0 %)
    and full fine-tuning (100 %); full fine-tuning, its ablations (``partial``), connected and scattered methods each
    in a colour, baselines grey; the legend (the kinds drawn) sits beside the bars, so it hides no seed. Where the
    stage has no gain to share (no full fine-tuning or no untrained row), the figure says so instead of drawing
    bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    means = ndcg_means(rows)
    span = gain_spans(means, rows, untrained).get(first_stage)
    picked = picked_on_dev(rows, first_stage) if span else []
    figure, axis = plt.subplots(figsize=(8, 0.5 * len(picked) + 1.8))
    colors = {
        "full fine-tuning": "tab:blue",
        "full fine-tuning, parts frozen": "tab:cyan",
        "connected": "tab:green",
        "scattered": "tab:orange",
        "baseline": "0.6",
    }
    kinds = [_bar_kind(row["method"]) if row["seeds"] else "baseline" for row in picked]
    for y, (row, kind) in enumerate(zip(reversed(picked), reversed(kinds), strict=True)):
        method = row["method"]
        axis.barh(y, 100 * share_of_gain(means[(method, first_stage)], span), color=colors[kind], alpha=0.8)
        seeds = [
            r["ndcg@10"] for r in rows if (r["method"], r.get("first_stage", "")) == (method, first_stage) and r["seed"]
        ]
        if seeds:
            axis.plot([100 * share_of_gain(value, span) for value in seeds], [y] * len(seeds), "k.", markersize=6)
    axis.set_yticks(
        range(len(picked)),
        [f"{row['method']} ({row['trainable_%']:.3g} %)" if row["seeds"] else row["method"] for row in picked][::-1],
    )
    handles = [Patch(color=color, alpha=0.8, label=kind) for kind, color in colors.items() if kind in kinds]
    axis.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1))
    for share in (0, 100):
        axis.axvline(share, color="0.3", linewidth=0.8, linestyle=":" if share else "-")
    where = f" (first stage {first_stage})" if first_stage else ""
    axis.set(xlabel=f"share of full fine-tuning's gain over {untrained}, % (bars: mean; dots: seeds)")
    axis.set_title(f"{stage}{where}" + ("" if span else ": no full fine-tuning gain to share"), fontsize=10)
    figure.tight_layout()
    path = root / f"gain-share-{stage}.png"
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)
    return path


def _bar_kind(method: str) -> str:
    """The legend entry a trained row's bar is filed under: an ablation of full fine-tuning (``partial``) trains the
    backbone's own weights, so it is neither a connected nor a scattered PET method."""
    entry = study_entry(method).method
    if entry.name == REFERENCE_METHOD:
        return "full fine-tuning"
    if entry is PARTIAL:
        return "full fine-tuning, parts frozen"
    return "scattered" if entry.scattered else "connected"

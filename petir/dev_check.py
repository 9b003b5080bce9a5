"""What a dev check gives, and its noise: the standard error of the dev value and of its gain over the untrained
start, which the kept state, the learning-rate ladder and every progress line report."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class DevCheck:
    """What a dev check gives: its metrics (the first one, nDCG@10, picks the kept state and the learning rate) and,
    where the evaluator has them, the first metric's value per dev query, in a fixed query order: what its standard
    error and the paired standard error of a gain are computed from."""

    metrics: dict[str, float]
    per_query: list[float] | None = None


def dev_noise(check: DevCheck, start: DevCheck | None) -> dict[str, float]:
    """The noise of ``check``'s first metric: its standard error over the dev queries (``dev_se``) and, against the
    ``start`` check (step 0) of the same queries, the gain and its paired standard error (``gain``, ``gain_se``).
    Empty without per-query values (fewer than two queries have no spread to measure)."""
    values = np.asarray(check.per_query or [], dtype=float)
    if len(values) < 2:
        return {}
    noise = {"dev_se": round(float(values.std(ddof=1) / np.sqrt(len(values))), 4)}
    if start is not None and start.per_query is not None and len(start.per_query) == len(values):
        gains = values - np.asarray(start.per_query, dtype=float)
        noise["gain"] = round(float(gains.mean()), 4)
        noise["gain_se"] = round(float(gains.std(ddof=1) / np.sqrt(len(gains))), 4)
    return noise


def describe_noise(noise: dict[str, float]) -> str:
    """``noise`` (:func:`dev_noise`) for a progress line: ``± 0.0310 SE, gain over step 0 +0.0120 ± 0.0050``."""
    text = f" ± {noise['dev_se']:.4f} SE" if "dev_se" in noise else ""
    if "gain" in noise:
        text += f", gain over step 0 {noise['gain']:+.4f} ± {noise['gain_se']:.4f}"
    return text

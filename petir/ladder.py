"""The learning rate, picked on dev: ``petir.train`` without ``--lr``.

The study (docs/results.md) found the rate matters more than the method, and a method's default rate lost to the
rate its dev set picked (IAA-L at retrieval: 1e-3 default, 3e-3 picked, SciFact test nDCG@10 0.6720 vs 0.6887;
full fine-tuning: 2e-5 vs 6e-5, 0.6948 vs 0.7352). So, by one rule for every method and dataset, training tries
the method's default rate times F, 1 and 1/F (``--lr-factor``, 3: the study's sweep), highest first. Each rung is
a whole short run at its rate (its own warm-up and decay over its part of ``--lr-search-share`` of the steps),
ended by a dev check; the first rung whose dev value is not significantly below the untrained start (its paired
gain above -2 standard errors) sets the rate, and the full run trains at it from the same seeded weights, so the
saved model is the one ``--lr PICKED`` trains. Where every rung is significantly below the start, the best of
them is taken, and keep-best (on by default) still saves the start if nothing beats it.

Why the highest acceptable rate and not the best rung: a short run judges rates by where they are after a few
steps, which favours small rates (the short-horizon bias of greedy learning-rate tuning: Wu et al., ICLR 2018).
On SciFact (IAA-L, seed 1) 15-step rungs ranked 1e-3 > 3e-4 > 3e-3 on dev (+0.006, +0.005, -0.011 over the
start, none more than 1.6 paired standard errors from it): 3e-3 last, where 150-step runs put it first, on dev
and on test. What a short rung can tell reliably is that a rate does harm; so the ladder only rules rates out, highest
first, and usually runs one rung.

While it runs, the rungs are run directories under OUTPUT/ladder/ and OUTPUT/ladder.json records each finished
rung: ``--resume`` continues an interrupted ladder where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from petir.cli import progress, say
from petir.data import read_json, require_fields
from petir.dev_check import DevCheck, describe_noise
from petir.files import record_written, recover_directory, remove_output, write_json_atomic, write_lines_atomic
from petir.models import PetModel
from petir.run_directory import CHECKPOINT_DIR, LADDER_DIR, LADDER_FILE, METRICS_FILE, resumable
from petir.sampling import GroupSampler
from petir.train_config import TrainConfig
from petir.trainer import DivergedError, Trainer


def ladder_rates(default: float, factor: float) -> list[float]:
    """The rates of the ladder, lowest first (they are tried highest first): ``default`` times 1/``factor``, 1 and
    ``factor``."""
    return [float(f"{default / factor:.3g}"), default, float(f"{default * factor:.3g}")]


def rung_steps(steps: int, share: float, rungs: int) -> int:
    """Steps each rung runs: together the rungs take ``share`` of ``steps`` (at least one step each)."""
    return max(1, round(share * steps / rungs))


def describe_ladder(default: float, config: TrainConfig) -> str:
    """The plan line of a ladder."""
    rates = ladder_rates(default, config.lr_factor)
    return (
        f"learning rate: picked on dev among {', '.join(f'{r:g}' for r in rates)} (the method's {default:g} x "
        f"1/{config.lr_factor:g}, 1, {config.lr_factor:g}), highest first: the first whose "
        f"{rung_steps(config.steps, config.lr_search_share, len(rates))}-step rung (its own warm-up and decay; "
        f"{config.lr_search_share:.0%} of {config.steps} steps for all three) is not significantly below the start; "
        "the full run trains at it (--lr fixes one)"
    )


def read_ladder(path: Path) -> dict[str, Any]:
    """An OUTPUT/ladder.json: the rates, each rung's steps, the finished rungs and the picked rate (None until
    all rungs ran)."""
    remedy = f"remove {path} and {Path(path).parent / LADDER_DIR} and rerun with --resume"
    ladder = read_json(path, "learning-rate ladder record", remedy, {"rates": tuple[float, ...], "steps": int})
    require_fields(ladder, {"rungs": tuple[dict, ...], "picked": float | None}, f"{path}", remedy)
    for rung in ladder["rungs"]:
        require_fields(rung, {"lr": float, "dev": dict}, f"{path}: a rung", remedy)
    if ladder.get("start") is not None:
        require_fields(ladder["start"], {"metrics": dict, "per_query": tuple[float, ...] | None}, f"{path}", remedy)
    return ladder


def pick_learning_rate(
    build_model: Callable[[], PetModel],
    sampler: GroupSampler,
    config: TrainConfig,
    evaluate: Callable[[PetModel], Any],
    default: float,
    resume: bool,
) -> dict[str, Any]:
    """Run the ladder in ``config.output_dir`` (continuing an interrupted one when ``resume``); leave the full run
    at the picked rate as a step-0 checkpoint in it (:func:`_hand_over`), for :class:`Trainer` to continue with
    ``resume=True``. Returns the record summary.json keeps: ``rates``, ``steps`` (each rung's), ``rungs`` (rate, dev
    metrics and noise each), ``picked``. ``build_model`` builds the model as the run does (seeded): each rung
    starts from the same weights."""
    output = Path(config.output_dir)
    path = output / LADDER_FILE
    record_written(output, path, output / METRICS_FILE)  # the files the ladder writes itself (its rungs record theirs)
    rates = ladder_rates(default, config.lr_factor)
    steps = rung_steps(config.steps, config.lr_search_share, len(rates))
    fresh = {"rates": rates, "steps": steps, "rungs": [], "picked": None}
    ladder = read_ladder(path) if resume and path.exists() else fresh
    start = ladder.get("start")
    done = [rung["lr"] for rung in ladder["rungs"]]
    remaining = [rate for rate in sorted(ladder["rates"], reverse=True) if rate not in done]
    bar = progress(total=len(ladder["rates"]), initial=len(done), desc="learning-rate ladder")
    for rate in remaining:
        if ladder.get("picked") is not None or any(acceptable(rung) for rung in ladder["rungs"]):
            break
        rung_dir = output / LADDER_DIR / f"lr-{rate:g}"
        again = resumable(rung_dir)
        rung = dataclasses.replace(
            config,
            output_dir=rung_dir,
            learning_rate=rate,
            steps=ladder["steps"],
            eval_every=0,
            keep_best=False,
            patience=0,  # a rung is a fixed-length run, judged by its one final check
            report_to="none",
            extra={},
        )
        trainer = Trainer(build_model(), sampler, rung, evaluate, start=DevCheck(**start) if start else None)
        try:
            record = trainer.train_rung(resume=again, overwrite=not again and rung_dir.exists())
        except DivergedError as error:
            record = {"dev": {}, "diverged": error.symptom}  # a failed rung: acceptable() and winner() rule it out
            say(f"learning rate {rate:g}: ruled out, {error.symptom} (diverged)")
        else:
            verdict = "taken" if acceptable(record) else "significantly below the start"
            say(
                f"learning rate {rate:g}: dev {record['dev']}{describe_noise(record)} at step {ladder['steps']}: "
                + verdict
            )
        checked = record.pop("start", None) or (dataclasses.asdict(trainer.start) if trainer.start else None)
        start = start or checked
        ladder["rungs"].append({"lr": rate, **record})
        ladder["start"] = start
        bar.update(1)
        write_json_atomic(path, ladder)
    bar.close()
    if ladder.get("picked") is None:
        ladder["picked"] = winner(ladder["rungs"])
        write_json_atomic(path, ladder)
    result = {key: value for key, value in ladder.items() if key != "start"}
    run = dataclasses.replace(config, learning_rate=ladder["picked"], extra={**config.extra, "lr_ladder": result})
    _hand_over(Trainer(build_model(), sampler, run, evaluate, start=DevCheck(**start) if start else None), result)
    return result


#: A rung is ruled out when its dev gain over the start is below minus this many paired standard errors.
SIGNIFICANT = 2.0


def acceptable(rung: dict[str, Any]) -> bool:
    """Whether a rung's dev value is not significantly below the untrained start's (without per-query values to
    measure noise: not below it); a rung that went non-finite never is."""
    return math.isfinite(rung_value(rung)) and rung.get("gain", 0.0) >= -SIGNIFICANT * rung.get("gain_se", 0.0)


def rung_value(rung: dict[str, Any]) -> float:
    """A rung's first dev metric; minus infinity for a rung that diverged (non-finite loss, gradient or check)."""
    value = next(iter(rung["dev"].values()), None)
    return value if isinstance(value, int | float) and math.isfinite(value) else -math.inf


def winner(rungs: list[dict[str, Any]]) -> float:
    """The rate picked from the rungs in the order they ran (highest rate first): the first acceptable one; where
    none is, the one with the best first dev metric (ties, diverged rungs among them: the lower rate)."""
    taken = [rung for rung in rungs if acceptable(rung)]
    if taken:
        return taken[0]["lr"]
    return max(rungs, key=lambda rung: (rung_value(rung), -rung["lr"]))["lr"]


def _hand_over(run: Trainer, ladder: dict[str, Any]) -> None:
    """Leave the full run at the picked rate as a checkpoint at step 0 (its seeded weights, the shared step-0
    check, a log holding the ladder's record) for :class:`Trainer` to continue with ``resume=True``, then delete
    the rungs (all of them this run's). The checkpoint is written last, so a kill before it redoes the hand-over
    on --resume, and one after it finds nothing left to do but the deletion."""
    output = run.output
    if not recover_directory(output / CHECKPOINT_DIR).is_dir():
        record = json.dumps({"step": 0, "lr_ladder": ladder})
        write_lines_atomic(output / METRICS_FILE, [record + "\n"])
        run.save_checkpoint()
    remove_output(output / LADDER_DIR)

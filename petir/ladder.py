"""The learning rate, picked on dev: ``petir.train`` without ``--lr``.

The study (docs/results.md) found the rate matters more than the method, and a method's default rate lost to the
rate its dev set picked (IAA-L at retrieval: 1e-3 default, 3e-3 picked, SciFact test nDCG@10 0.6720 vs 0.6887;
full fine-tuning: 2e-5 vs 6e-5, 0.6948 vs 0.7352). So, by one rule for every method and dataset, training tries
the method's default rate times 1/F, 1 and F (``--lr-factor``, 3: the study's sweep). Each rung is the START of
the full run at its rate (the same warm-up and decay over ``--steps``), stopped after its part of
``--lr-search-share`` of the steps with a dev check and a checkpoint. The best rung on dev (ties: the default
rate) continues from its checkpoint to ``--steps``, so the saved model is the one ``--lr WINNER`` trains; the
others are deleted. The rungs share the one step-0 check: every rung starts from the same weights.

While it runs, the rungs are run directories under OUTPUT/ladder/ and OUTPUT/ladder.json records each finished
rung: ``--resume`` continues an interrupted ladder where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from petir.cli import progress
from petir.data import read_json, require_fields
from petir.files import recover_directory, remove_output, staged_directory, write_lines_atomic
from petir.models import PetModel
from petir.sampling import GroupSampler
from petir.trainer import (
    CHECKPOINT_DIR,
    LADDER_DIR,
    LADDER_FILE,
    METRICS_FILE,
    DevCheck,
    TrainConfig,
    Trainer,
    _say,
    _write_json,
    describe_noise,
    resumable,
)


def ladder_rates(default: float, factor: float) -> list[float]:
    """The rates tried, lowest first: ``default`` times 1/``factor``, 1 and ``factor``."""
    return [float(f"{default / factor:.3g}"), default, float(f"{default * factor:.3g}")]


def rung_steps(steps: int, share: float, rungs: int) -> int:
    """Steps each rung runs: together the rungs take ``share`` of ``steps`` (at least one step each)."""
    return max(1, round(share * steps / rungs))


def describe_ladder(default: float, config: TrainConfig) -> str:
    """The plan line of a ladder."""
    rates = ladder_rates(default, config.lr_factor)
    return (
        f"learning rate: picked on dev among {', '.join(f'{r:g}' for r in rates)} (the method's {default:g} x "
        f"1/{config.lr_factor:g}, 1, {config.lr_factor:g}), each rung "
        f"{rung_steps(config.steps, config.lr_search_share, len(rates))} steps ({config.lr_search_share:.0%} of "
        f"{config.steps} together); the best continues (--lr fixes one)"
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
    """Run the ladder in ``config.output_dir`` (continuing an interrupted one when ``resume``); leave the winner's
    checkpoint and log as the run's own, for :class:`Trainer` to continue with ``resume=True``. Returns the record
    summary.json keeps: ``rates``, ``steps`` (each rung's), ``rungs`` (rate, dev metrics and noise each),
    ``picked``. ``build_model`` builds the model as the run does (seeded): each rung starts from the same weights."""
    output = Path(config.output_dir)
    path = output / LADDER_FILE
    rates = ladder_rates(default, config.lr_factor)
    steps = rung_steps(config.steps, config.lr_search_share, len(rates))
    fresh = {"rates": rates, "steps": steps, "rungs": [], "picked": None}
    ladder = read_ladder(path) if resume and path.exists() else fresh
    start = ladder.get("start")
    done = [rung["lr"] for rung in ladder["rungs"]]
    remaining = [rate for rate in ladder["rates"] if rate not in done]
    for rate in progress(remaining, initial=len(done), total=len(ladder["rates"]), desc="learning-rate ladder"):
        rung_dir = output / LADDER_DIR / f"lr-{rate:g}"
        again = resumable(rung_dir)
        trainer = Trainer(
            build_model(),
            sampler,
            dataclasses.replace(config, output_dir=rung_dir, learning_rate=rate, extra={}),
            evaluate,
            start=DevCheck(**start) if start else None,
        )
        record = trainer.train(resume=again, overwrite=not again and rung_dir.exists(), stop_at=ladder["steps"])
        start = start or record.pop("start")
        record.pop("start", None)
        ladder["rungs"].append({"lr": rate, **record})
        ladder["start"] = start
        _say(f"learning rate {rate:g}: dev {record.get('dev')}{describe_noise(record)} at step {ladder['steps']}")
        _write_json(path, ladder)
    if ladder.get("picked") is None:
        ladder["picked"] = winner(ladder["rungs"], default)
        _write_json(path, ladder)
    result = {key: value for key, value in ladder.items() if key != "start"}
    _hand_over(output, output / LADDER_DIR / f"lr-{ladder['picked']:g}", result)
    return result


def winner(rungs: list[dict[str, Any]], default: float) -> float:
    """The rate of the rung with the best first dev metric; ties go to the default rate, then the lower rate."""

    def score(rung: dict[str, Any]) -> tuple[float, bool]:
        return next(iter(rung["dev"].values())), rung["lr"] == default

    return max(rungs, key=score)["lr"]


def _hand_over(output: Path, winner: Path, ladder: dict[str, Any]) -> None:
    """Make the winning rung's log (plus a record of the ladder) and checkpoint the run's own, then delete the
    rungs (all of them this run's). The run's checkpoint is written last, so a kill before it redoes all on
    --resume, and one after it finds nothing left to do but the deletion."""
    if not recover_directory(output / CHECKPOINT_DIR).is_dir():
        log = (winner / METRICS_FILE).read_text()
        record = json.dumps({"step": ladder["steps"], "lr_ladder": ladder})
        write_lines_atomic(output / METRICS_FILE, [log, record + "\n"])
        with staged_directory(output / CHECKPOINT_DIR) as staging:
            shutil.copytree(recover_directory(winner / CHECKPOINT_DIR), staging, dirs_exist_ok=True)
    remove_output(output / LADDER_DIR)

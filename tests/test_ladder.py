"""The learning rate picked on dev (petir/ladder.py), keep-best's step-0 candidate and the dev checks' noise."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from test_trainer import CORPUS, QUERIES

from conftest import flags, run_cli
from petir import tasks
from petir.dev_check import DevCheck
from petir.errors import PetirError
from petir.ladder import acceptable, ladder_rates, pick_learning_rate, read_ladder, rung_steps, winner
from petir.models import PetModel
from petir.pet import get_method
from petir.run_directory import LADDER_DIR, LADDER_FILE, METRICS_FILE, MODEL_DIR, check_run_directory
from petir.sampling import GroupSampler
from petir.tasks.retrieval import BiEncoder
from petir.train import last_line
from petir.train import main as train_main
from petir.train_config import TrainConfig
from petir.trainer import Trainer, set_seed
from petir.training_data import dev_size

DEFAULT = 1e-2


def build(backbone: Path):
    def model() -> BiEncoder:
        set_seed(11)
        return BiEncoder(str(backbone), "iaa", {"r": "4", "ar": "4"})

    return model


def config(output: Path, **overrides) -> TrainConfig:
    settings = {"steps": 9, "save_every": 100, "log_every": 1, "eval_every": 3, "eval_budget": 1000.0}
    settings.update({"learning_rate": DEFAULT, "lr_search_share": 1 / 3, **overrides})
    return TrainConfig(output_dir=output, **settings)


def sampler() -> GroupSampler:
    return GroupSampler(QUERIES, CORPUS, batch_size=4, negatives=1, seed=3)


class Distance:
    """A dev metric that falls as the weights move from where they started: the lowest rate climbs the highest.
    Per query values: the metric, and the metric shifted, so the noise has a spread."""

    def __init__(self, start: dict[str, torch.Tensor], fail_on_call: int | None = None):
        self.start, self.calls, self.fail_on_call = start, 0, fail_on_call

    def __call__(self, model: PetModel) -> DevCheck:
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise PetirError("interrupted (test)")
        state = model.trainable_state_dict()
        moved = sum(float((state[name] - value).abs().sum()) for name, value in self.start.items())
        value = round(1 / (1 + moved), 6)
        return DevCheck({"ndcg@10": value}, [value, value / 2, value / 3])


class Still(Distance):
    """A dev metric that training does not move: every rung is level with the start."""

    def __call__(self, model: PetModel) -> DevCheck:
        self.calls += 1
        return DevCheck({"ndcg@10": 0.5}, [0.5, 0.25, 0.75])


def run_ladder(backbone: Path, output: Path, evaluate, resume: bool = False) -> tuple[dict, dict]:
    """The ladder, then the full run at the winner from its step-0 checkpoint (what petir.train does); returns
    (ladder, summary)."""
    make = build(backbone)
    settings = config(output)
    picked = pick_learning_rate(make, sampler(), settings, evaluate, DEFAULT, resume)
    settings.learning_rate, settings.extra = picked["picked"], {"lr_ladder": picked}
    summary = Trainer(make(), sampler(), settings, evaluate).train(resume=True)
    return picked, summary


def saved(output: Path) -> dict[str, torch.Tensor]:
    return tasks.load(output / MODEL_DIR).trainable_state_dict()


def test_the_ladder_picks_the_best_rung_and_the_run_trains_at_its_rate_from_the_start(tiny_backbone, tmp_path):
    start = build(tiny_backbone)().trainable_state_dict()
    evaluate = Distance(start)
    ladder, summary = run_ladder(tiny_backbone, tmp_path / "ladder", evaluate)
    rates = ladder_rates(DEFAULT, 3.0)
    assert rates == [0.00333, 0.01, 0.03] and ladder["steps"] == rung_steps(9, 1 / 3, 3) == 1
    assert [rung["lr"] for rung in ladder["rungs"]] == rates[::-1]  # highest first
    values = [rung["dev"]["ndcg@10"] for rung in ladder["rungs"]]
    assert not any(acceptable(rung) for rung in ladder["rungs"])  # every rung significantly below the start ...
    assert values == sorted(values) and ladder["picked"] == rates[0]  # ... so the best: the least moved here
    assert all(rung["dev_se"] > 0 and "gain_se" in rung for rung in ladder["rungs"])
    assert summary["lr_ladder"] == ladder and summary["config"]["learning_rate"] == rates[0]
    assert not (tmp_path / "ladder" / LADDER_DIR).exists()  # the losers are gone
    records = [json.loads(line) for line in (tmp_path / "ladder" / METRICS_FILE).read_text().splitlines()]
    assert [r["lr_ladder"]["picked"] for r in records if "lr_ladder" in r] == [rates[0]]
    # the rungs share the one step-0 check; each rung ends with one; the run checks at 3, 6 and 9
    assert evaluate.calls == 1 + 3 + 3
    # the saved model is the one a run at the picked rate trains (the same keep-best candidates, the same steps)
    fixed = config(tmp_path / "fixed", learning_rate=rates[0])
    Trainer(build(tiny_backbone)(), sampler(), fixed, Distance(start)).train()
    for name, tensor in saved(tmp_path / "fixed").items():
        assert torch.equal(tensor, saved(tmp_path / "ladder")[name]), name


def test_an_interrupted_ladder_resumes_where_it_stopped_and_ends_as_an_uninterrupted_one(tiny_backbone, tmp_path):
    start = build(tiny_backbone)().trainable_state_dict()
    whole, _ = run_ladder(tiny_backbone, tmp_path / "whole", Distance(start))
    with pytest.raises(PetirError, match="interrupted"):  # calls: step 0, rung 1's end, rung 2's end
        run_ladder(tiny_backbone, tmp_path / "cut", Distance(start, fail_on_call=3))
    kept = read_ladder(tmp_path / "cut" / LADDER_FILE)
    assert [rung["lr"] for rung in kept["rungs"]] == [whole["rates"][-1]]  # rung 1 recorded, rung 2 not
    again = Distance(start)
    resumed, _ = run_ladder(tiny_backbone, tmp_path / "cut", again, resume=True)
    assert outcome(resumed) == outcome(whole)
    assert again.calls == 2 + 3  # rungs 2 and 3 only (rung 1 and the step-0 check are not redone), then the run
    for name, tensor in saved(tmp_path / "whole").items():
        assert torch.equal(tensor, saved(tmp_path / "cut")[name]), name


def test_the_highest_rate_not_significantly_below_the_start_is_taken_else_the_best_rung():
    def rung(rate: float, value: float, gain: float, se: float) -> dict:
        return {"lr": rate, "dev": {"ndcg@10": value}, "gain": gain, "gain_se": se}

    # rungs in the order they ran, highest rate first: -0.011 +- 0.010 is within noise of the start, so taken
    assert winner([rung(0.003, 0.731, -0.011, 0.010)]) == 0.003
    assert winner([rung(0.003, 0.70, -0.04, 0.01), rung(0.001, 0.74, -0.001, 0.005)]) == 0.001
    # every one significantly below the start: the best of them, a tie to the lower rate
    below = [rung(0.003, 0.70, -0.04, 0.01), rung(0.001, 0.72, -0.03, 0.01), rung(0.0003, 0.72, -0.03, 0.01)]
    assert winner(below) == 0.0003
    assert acceptable({"lr": 0.1, "dev": {"ndcg@10": 0.5}})  # no per-query values: no noise to rule it out


def test_a_rung_within_noise_of_the_start_ends_the_ladder_after_one_rung(tiny_backbone, tmp_path):
    start = build(tiny_backbone)().trainable_state_dict()
    still = Still(start)
    ladder, summary = run_ladder(tiny_backbone, tmp_path / "one", still)
    assert [rung["lr"] for rung in ladder["rungs"]] == [ladder["rates"][-1]] == [ladder["picked"]]
    assert still.calls == 1 + 1 + 3  # the start, the one rung, the run's checks at 3, 6 and 9
    assert summary["config"]["learning_rate"] == ladder["rates"][-1]


def test_a_run_stopped_in_its_ladder_is_resumed_not_replaced(tmp_path):
    (tmp_path / LADDER_DIR / "lr-0.001").mkdir(parents=True)  # a kill before the first rung's checkpoint
    check_run_directory(tmp_path, resume=True, overwrite=False)
    with pytest.raises(PetirError, match="already holds a run; pass --resume"):
        check_run_directory(tmp_path, resume=False, overwrite=False)


def outcome(ladder: dict) -> tuple:
    """A ladder's rates, rung checks and pick (its timings aside)."""
    checks = [{key: value for key, value in rung.items() if not key.endswith("_s")} for rung in ladder["rungs"]]
    return ladder["rates"], ladder["steps"], checks, ladder["picked"]


def test_keep_best_keeps_the_start_when_training_never_beats_it_and_says_so(tiny_backbone, tmp_path):
    make = build(tiny_backbone)
    start = make().trainable_state_dict()
    summary = Trainer(make(), sampler(), config(tmp_path, steps=4, eval_every=2), Distance(start)).train()
    assert summary["kept"]["step"] == 0 and summary["improved"] is False
    for name, tensor in saved(tmp_path).items():
        assert torch.equal(tensor, start[name]), name
    line = last_line(summary, tmp_path).splitlines()[-1]
    assert line.startswith("petir: training did not improve on the starting model on dev (step 0")
    assert "the saved model is the untrained start" in line
    off = Trainer(make(), sampler(), config(tmp_path / "off", steps=4, keep_best=False), Distance(start)).train()
    assert off["kept"] is None and off["improved"] is None
    assert not torch.equal(next(iter(saved(tmp_path / "off").values())), next(iter(start.values())))


def test_the_default_dev_set_is_a_share_of_the_training_queries_within_bounds():
    assert dev_size(None, 809) == 121  # SciFact: 15 %
    assert [dev_size(None, n) for n in (60, 200, 5000)] == [30, 50, 200]  # at most half, at least 50, at most 200
    assert dev_size(7, 809) == 7 and dev_size(0, 809) == 0


@pytest.fixture
def beir_with_run(tmp_path) -> list[str]:
    """A small BEIR directory and a first-stage run of its queries (no Java): petir.train's data flags."""
    root = tmp_path / "beir"
    (root / "qrels").mkdir(parents=True)
    docs = {f"d{i}": text for i, text in enumerate(["the cat sat", "a dog", "cancer risk", "gene protein", "mat"])}
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in docs.items()))
    queries = {"q0": "cat", "q1": "dog", "q2": "risk", "q3": "gene", "q4": "mat", "q5": "cat dog"}
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in queries.items()))
    qrels = "".join(f"{q}\td{int(q[1]) % 5}\t1\n" for q in queries)
    (root / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" + qrels)
    run = "".join(f"{q} Q0 {d} {r + 1} {1 / (r + 1)} bm25\n" for q in queries for r, d in enumerate(docs))
    (tmp_path / "run.trec").write_text(run)
    return flags(data=root, negatives_run=tmp_path / "run.trec", dev_queries=2, negatives=1, batch_size=2)


def train(backbone: Path, data: list[str], output: Path, *extra: str) -> dict:
    tiny = flags(backbone=backbone, method="bitfit", steps=6, eval_every=2, device="cpu", output=output)
    assert run_cli(train_main, [*data, *tiny, *extra]) is None
    return json.loads((output / "summary.json").read_text())


def test_petir_train_picks_the_rate_by_default_and_lr_fixes_it(tiny_backbone, beir_with_run, tmp_path, capsys):
    picked = train(tiny_backbone, beir_with_run, tmp_path / "picked")
    ladder = picked["lr_ladder"]
    default = get_method("bitfit").learning_rate
    assert ladder["rates"] == ladder_rates(default, 3.0) and 1 <= len(ladder["rungs"]) <= 3
    assert picked["config"]["learning_rate"] == ladder["picked"]
    assert "picked on dev among" in capsys.readouterr().out
    card = (tmp_path / "picked" / MODEL_DIR / "README.md").read_text()
    assert f"picked on dev among {', '.join(f'{rate:g}' for rate in ladder['rates'])}" in card
    fixed = train(tiny_backbone, beir_with_run, tmp_path / "fixed", "--lr", str(ladder["picked"]))
    assert fixed["lr_ladder"] is None and "picked on dev" not in capsys.readouterr().out
    for name, tensor in saved(tmp_path / "fixed").items():  # the ladder's run is the run at its rate
        assert torch.equal(tensor, saved(tmp_path / "picked")[name]), name


def test_petir_train_without_a_dev_set_trains_at_the_methods_rate_and_says_so(tiny_backbone, beir_with_run, tmp_path):
    summary = train(tiny_backbone, [*beir_with_run, "--dev-queries", "0"], tmp_path / "run")
    assert summary["lr_ladder"] is None and summary["config"]["learning_rate"] == get_method("bitfit").learning_rate


def test_a_rung_that_diverges_is_ruled_out_not_a_crash(tiny_backbone, tmp_path, monkeypatch, capsys):
    """The highest rung's loss goes NaN (injected): the rung loses, the next one is taken, the run finishes."""
    built = Trainer.__init__

    def diverging_at_the_top_rate(self, *args, **kwargs):
        built(self, *args, **kwargs)
        if self.config.learning_rate == ladder_rates(DEFAULT, 3.0)[-1]:
            forward = self.trained
            self.trained = lambda batch: forward(batch) * math.nan

    monkeypatch.setattr(Trainer, "__init__", diverging_at_the_top_rate)
    ladder, summary = run_ladder(tiny_backbone, tmp_path / "run", Still(build(tiny_backbone)().trainable_state_dict()))
    top, second = ladder["rungs"]
    assert top["diverged"] == "the loss at step 1 is not finite" and not acceptable(top)
    assert ladder["picked"] == second["lr"] == DEFAULT and summary["config"]["learning_rate"] == DEFAULT
    assert "learning rate 0.03: ruled out, the loss at step 1 is not finite (diverged)" in capsys.readouterr().err


def test_a_rung_gone_non_finite_loses_to_every_finite_one():
    def rung(rate: float, value: float) -> dict:
        return {"lr": rate, "dev": {"ndcg@10": value}, "gain": -0.1, "gain_se": 0.01}

    assert not acceptable({"lr": 0.1, "dev": {"ndcg@10": math.nan}})
    assert winner([rung(0.03, math.nan), rung(0.01, 0.2), rung(0.003, 0.1)]) == 0.01
    assert winner([{"lr": 0.03, "dev": {}, "diverged": "the loss at step 1 is not finite"}, rung(0.01, 0.1)]) == 0.01


def test_petir_train_at_a_diverging_rate_ends_in_one_line_and_saves_no_model(tiny_backbone, beir_with_run, tmp_path):
    tiny = flags(backbone=tiny_backbone, method="bitfit", steps=6, eval_every=2, device="cpu", output=tmp_path / "run")
    error = run_cli(train_main, [*beir_with_run, *tiny, "--lr", "1e30"])
    assert "not finite: training diverged, likely because the learning rate 1e+30 is too high" in error
    assert "\n" not in error and not (tmp_path / "run" / MODEL_DIR).exists()

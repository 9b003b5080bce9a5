"""The trainer: logs, checkpoints, exact resume after an interruption, and seeded determinism."""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import petir
from conftest import PET_IDS, PET_VARIANTS, TASK_IDS, TASK_MODELS, perturb
from petir import tasks
from petir.checkpoint import read_trainer_state
from petir.data import Document
from petir.errors import PetirError
from petir.run_directory import CHECKPOINT_DIR, METRICS_FILE, MODEL_DIR, SUMMARY_FILE
from petir.sampling import Group, GroupSampler, Permutation, TrainingQuery, Triples, TripleSampler
from petir.tasks.retrieval import BiEncoder
from petir.train_config import TrainConfig
from petir.trainer import DivergedError, Trainer, set_seed

WORDS = "the cat dog sat on mat a protein cell gene cancer risk increase study".split()
CORPUS = {f"d{i}": Document(f"d{i}", "", " ".join(WORDS[i % 14 : i % 14 + 3])) for i in range(24)}
QUERIES = [
    TrainingQuery(f"q{i}", " ".join(WORDS[i : i + 2]), (f"d{i}",), (f"d{i + 1}", f"d{i + 2}")) for i in range(12)
]


def make_trainer(backbone: Path, output: Path, steps: int = 6, task=BiEncoder, **overrides) -> Trainer:
    set_seed(11)
    model = task(str(backbone), "iaa", {"r": "4", "ar": "4"})
    # Every scheduled dev check runs (no time budget): on a loaded machine a budget skips some, and the tests that
    # count checks failed now and then; the budget's own test sets one.
    config = TrainConfig(
        output_dir=output, steps=steps, learning_rate=1e-2, save_every=2, log_every=1, eval_every=0, eval_budget=1e9
    )
    for key, value in overrides.items():
        setattr(config, key, value)
    sampler = GroupSampler(QUERIES, CORPUS, batch_size=4, negatives=1, seed=3)
    return Trainer(model, sampler, config, evaluate=lambda m: {"ndcg@10": 0.5})


def trained_state(output: Path) -> dict[str, torch.Tensor]:
    return tasks.load(output / MODEL_DIR).trainable_state_dict()


def test_sampler_batches_depend_only_on_seed_and_index():
    a = GroupSampler(QUERIES, CORPUS, batch_size=4, negatives=2, seed=3)
    b = GroupSampler(QUERIES, CORPUS, batch_size=4, negatives=2, seed=3)
    assert [b.groups(i) for i in (5, 0, 2)] == [a.groups(i) for i in (5, 0, 2)]
    assert a.groups(0) != GroupSampler(QUERIES, CORPUS, batch_size=4, negatives=2, seed=4).groups(0)
    epoch = [group.query for i in range(3) for group in a.groups(i)]  # 12 queries / 4 per batch: one epoch
    assert sorted(epoch) == sorted(q.text for q in QUERIES)
    for group in a.groups(1):
        source = next(q for q in QUERIES if q.text == group.query)
        assert group.passages[0] == CORPUS[source.positives[0]].contents and len(group.passages) == 3
        assert group.docids[0] == source.positives[0] and group.positives == frozenset(source.positives)


def test_sampler_never_draws_a_judged_passage_as_a_negative():
    # Triples can name a query's positive as another triple's negative: the sampler must not use it as one.
    query = TrainingQuery("q", "the cat", ("d0", "d1"), ("d1", "d2", "d0", "d3"))
    sampler = GroupSampler([query], CORPUS, batch_size=1, negatives=2, seed=0)
    for index in range(20):
        (group,) = sampler.groups(index)
        assert not set(group.docids[1:]) & {"d0", "d1"}


def test_dev_checks_past_their_budget_are_skipped_but_the_first_and_final_run(tiny_backbone, tmp_path):
    def slow_check(model):
        time.sleep(1.0)  # a check 1 s, a budget of 5 %: a check fits only after 20 s of training, far beyond 6 steps
        return {"ndcg@10": 0.5}

    trainer = make_trainer(tiny_backbone, tmp_path, steps=6, eval_every=1, eval_budget=0.05)
    trainer.evaluate = slow_check
    summary = trainer.train()
    records = [json.loads(line) for line in (tmp_path / METRICS_FILE).read_text().splitlines()]
    assert [r["step"] for r in records if "dev" in r] == [0, 6]
    assert summary["dev_checks"] == 2 and summary["dev_time_s"] >= 2.0
    unbounded = make_trainer(tiny_backbone, tmp_path / "all", steps=6, eval_every=1, eval_budget=1000)
    assert unbounded.train()["dev_checks"] == 7  # the fast check of make_trainer, at every step


def test_run_writes_model_log_and_summary(tiny_backbone, tmp_path):
    summary = make_trainer(tiny_backbone, tmp_path, eval_every=3).train()
    records = [json.loads(line) for line in (tmp_path / METRICS_FILE).read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in records if "dev" in r] == [0, 3, 6]
    assert summary["steps"] == 6 and summary["final_dev"] == {"ndcg@10": 0.5}
    written = json.loads((tmp_path / SUMMARY_FILE).read_text())
    assert written["parameters"]["trainable"] > 0
    # what the numbers depend on beyond the seed: the versions that ran, and the CPU kernels' instruction set
    assert written["environment"]["torch"] == importlib.metadata.version("torch")
    assert written["environment"]["petir"] == petir.__version__ and written["environment"]["torch_cpu_capability"]
    card = (tmp_path / MODEL_DIR / "README.md").read_text()  # the model card says what the directory holds
    for text in ("# petir retrieval model: iaa-l", "Ma et al., CIKM 2022", "6 optimizer steps", "ndcg@10 0.5"):
        assert text in card, text
    assert "python -m pyserini.search.faiss" in card
    assert isinstance(tasks.load(tmp_path / MODEL_DIR), BiEncoder)


@pytest.mark.parametrize("task", TASK_MODELS, ids=TASK_IDS)
def test_interrupted_and_resumed_run_ends_with_the_same_weights(tiny_backbone, tmp_path, task):
    make_trainer(tiny_backbone, tmp_path / "straight", task=task).train()

    interrupted = make_trainer(tiny_backbone, tmp_path / "resumed", task=task)
    original_step = interrupted._optimizer_step
    calls = []

    def step_with_ctrl_c():
        calls.append(1)
        if len(calls) == 3:  # Ctrl-C arrives during the 3rd step: it finishes, then the run stops with a checkpoint
            os.kill(os.getpid(), signal.SIGINT)
        return original_step()

    interrupted._optimizer_step = step_with_ctrl_c
    with pytest.raises(PetirError, match="interrupted at step 3; checkpoint saved .* --resume"):
        interrupted.train()
    with pytest.raises(PetirError, match="already holds a run; pass --resume"):
        make_trainer(tiny_backbone, tmp_path / "resumed", task=task).train()
    make_trainer(tiny_backbone, tmp_path / "resumed", task=task).train(resume=True)

    straight, resumed = trained_state(tmp_path / "straight"), trained_state(tmp_path / "resumed")
    assert straight.keys() == resumed.keys()
    for name in straight:
        assert torch.equal(straight[name], resumed[name]), name
    steps = [json.loads(line)["step"] for line in (tmp_path / "resumed" / METRICS_FILE).read_text().splitlines()]
    assert [s for s in steps] == sorted(steps) and steps.count(3) == 1  # no duplicated log records


def interrupt_at_step(trainer: Trainer, step: int) -> None:
    """Send Ctrl-C during optimizer step ``step``: the run finishes it, checks dev if due, then stops with a
    checkpoint."""
    original_step = trainer._optimizer_step

    def step_with_ctrl_c():
        if trainer.step + 1 == step:
            os.kill(os.getpid(), signal.SIGINT)
        return original_step()

    trainer._optimizer_step = step_with_ctrl_c


def test_keep_best_saves_the_best_dev_checks_state_and_survives_a_resume(tiny_backbone, tmp_path):
    """--keep-best: dev at steps 0, 2, 4, 6 peaks at step 2, so step 2's state is saved, also across an interruption
    after that check."""
    curve = {0: 0.1, 2: 0.5, 4: 0.3, 6: 0.5}  # the tie at step 6 goes to the earlier step

    def run(output: Path, interrupt_at: int | None = None) -> tuple[Trainer, dict[int, dict[str, torch.Tensor]]]:
        trainer = make_trainer(tiny_backbone, output, steps=6, eval_every=2, eval_budget=1000, keep_best=True)
        states = {}

        def check(model):
            states[trainer.step] = {k: v.clone() for k, v in model.trainable_state_dict().items()}
            return {"ndcg@10": curve[trainer.step], "mrr@10": 0.0}

        trainer.evaluate = check
        if interrupt_at is not None:
            interrupt_at_step(trainer, interrupt_at)
        return trainer, states

    trainer, states = run(tmp_path / "straight")
    summary = trainer.train()
    assert summary["kept"] == {"step": 2, "dev": {"ndcg@10": 0.5, "mrr@10": 0.0}}
    assert summary["final_dev"]["ndcg@10"] == 0.5
    saved = trained_state(tmp_path / "straight")
    assert all(torch.equal(saved[name], states[2][name]) for name in saved)
    assert not all(torch.equal(saved[name], states[6][name]) for name in saved)
    assert (
        "saved: the best dev check, step 2 (ndcg@10 0.5"
        in (tmp_path / "straight" / MODEL_DIR / "README.md").read_text()
    )

    interrupted, _ = run(tmp_path / "resumed", interrupt_at=3)
    with pytest.raises(PetirError, match="interrupted at step 3"):
        interrupted.train()
    resumed, _ = run(tmp_path / "resumed")
    assert resumed.train(resume=True)["kept"]["step"] == 2
    again = trained_state(tmp_path / "resumed")
    assert all(torch.equal(again[name], saved[name]) for name in saved)


def test_patience_stops_after_the_best_check_and_a_resumed_run_stops_at_the_same_step(tiny_backbone, tmp_path):
    """--patience 3 on a dev curve that peaks at step 2: checks 3, 4 and 5 do not beat it, so the run stops at step 5
    of a cap of 12 and saves step 2's state; interrupted at step 4 and resumed, it stops at the same step with the
    same weights (the checks before the checkpoint count)."""
    curve = {0: 0.1, 1: 0.2, 2: 0.5, 3: 0.4, 4: 0.5, 5: 0.3}  # a tie (step 4) is no improvement

    def run(output: Path, interrupt_at: int | None = None) -> Trainer:
        trainer = make_trainer(tiny_backbone, output, steps=12, eval_every=1, eval_budget=1000, patience=3)
        trainer.evaluate = lambda model: {"ndcg@10": curve.get(trainer.step, 0.9)}  # 0.9: past step 5, a new best
        if interrupt_at is not None:
            interrupt_at_step(trainer, interrupt_at)
        return trainer

    summary = run(tmp_path / "straight").train()
    assert summary["steps"] == 5 and summary["stopped_by_patience"] is True
    assert summary["kept"]["step"] == 2 and summary["final_dev"] == {"ndcg@10": 0.3}
    with pytest.raises(PetirError, match="interrupted at step 4"):
        run(tmp_path / "resumed", interrupt_at=4).train()
    resumed = run(tmp_path / "resumed").train(resume=True)
    assert resumed["steps"] == 5 and resumed["kept"]["step"] == 2
    straight, again = trained_state(tmp_path / "straight"), trained_state(tmp_path / "resumed")
    assert all(torch.equal(straight[name], again[name]) for name in straight)
    steps = [json.loads(line)["step"] for line in (tmp_path / "resumed" / METRICS_FILE).read_text().splitlines()]
    assert max(steps) == 5


def test_without_patience_the_run_trains_every_step(tiny_backbone, tmp_path):
    trainer = make_trainer(tiny_backbone, tmp_path, steps=4, eval_every=1, eval_budget=1000)
    trainer.evaluate = lambda model: {"ndcg@10": 0.5 if trainer.step == 0 else 0.1}  # never beats the start
    summary = trainer.train()
    assert summary["steps"] == 4 and summary["stopped_by_patience"] is False and summary["kept"]["step"] == 0


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"eval_every": 0}, "give --eval-every"),
        ({"keep_best": False}, "--no-keep-best"),
        ({"evaluate": None}, "no dev set"),
    ],
)
def test_patience_that_could_never_stop_or_would_save_the_wrong_state_is_refused(
    tiny_backbone, tmp_path, overrides, message
):
    config = TrainConfig(output_dir=tmp_path, steps=4, eval_every=1, patience=2)
    for key, value in overrides.items():
        if key != "evaluate":
            setattr(config, key, value)
    sampler = GroupSampler(QUERIES, CORPUS, batch_size=4, negatives=1, seed=3)
    evaluate = overrides.get("evaluate", lambda model: {"ndcg@10": 0.5})
    with pytest.raises(PetirError, match=message):
        Trainer(BiEncoder(str(tiny_backbone), "iaa", {"r": "4", "ar": "4"}), sampler, config, evaluate)


def test_a_second_ctrl_c_stops_at_once_without_a_checkpoint(tiny_backbone, tmp_path):
    trainer = make_trainer(tiny_backbone, tmp_path)
    original_step = trainer._optimizer_step

    def impatient_user():
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
        return original_step()

    trainer._optimizer_step = impatient_user
    with pytest.raises(PetirError, match="stopped during step 1 without a checkpoint"):
        trainer.train()
    assert not (tmp_path / CHECKPOINT_DIR).exists()


def test_resume_without_checkpoint_is_a_clear_error(tiny_backbone, tmp_path):
    with pytest.raises(PetirError, match="no checkpoint in"):
        make_trainer(tiny_backbone, tmp_path).train(resume=True)


def test_gradient_accumulation_draws_consecutive_micro_batches(tiny_backbone, tmp_path):
    trainer = make_trainer(tiny_backbone, tmp_path, steps=2, grad_accumulation=3)
    drawn = []
    groups = trainer.sampler.groups
    trainer.sampler.groups = lambda index: drawn.append(index) or groups(index)
    trainer.train()
    assert drawn == [0, 1, 2, 3, 4, 5]


def test_triples_are_read_in_place_one_group_per_line(tmp_path):
    path = tmp_path / "triples.tsv"
    path.write_text("q a\tpos a\tneg 1\nq a\tpos a\tneg 2\n\nq b\tpos b\tneg 1\n")
    triples = Triples(path)
    assert len(triples) == 3  # the blank line is skipped
    assert triples.group(2) == Group("q b", ["pos b", "neg 1"], ("pos b", "neg 1"), frozenset({"pos b"}))


def test_triple_sampler_is_a_seeded_shuffle_without_the_held_out_lines(tmp_path):
    path = tmp_path / "triples.tsv"
    path.write_text("".join(f"q{i}\tp{i}\tn{i}\n" for i in range(10)))
    sampler = TripleSampler(Triples(path), batch_size=4, seed=3, held_out=[2, 7])
    assert sampler.batches_per_epoch == 2
    epoch = [group.query for index in range(2) for group in sampler.groups(index)]
    assert len(set(epoch)) == 8 and not {"q2", "q7"} & set(epoch)
    assert epoch == [group.query for index in range(2) for group in sampler.groups(index)]  # a pure function
    assert epoch != [group.query for index in range(2, 4) for group in sampler.groups(index)]  # a new epoch's order


@pytest.mark.parametrize("size", [1, 2, 3, 10, 257, 1000])
def test_permutation_visits_every_position_once(size):
    order = Permutation(size, (7, 0))
    assert sorted(order[i] for i in range(size)) == list(range(size))
    if size >= 10:
        assert [order[i] for i in range(size)] != list(range(size))
        assert [order[i] for i in range(size)] != [Permutation(size, (7, 1))[i] for i in range(size)]


@pytest.mark.slow  # torchrun subprocesses: about 10 s
@pytest.mark.skipif(sys.platform != "linux", reason="torchrun with gloo is exercised on Linux")
def test_two_process_torchrun_training_on_cpu(tiny_backbone, tmp_path):
    """Distributed data parallel with the gloo backend: both ranks step together, rank 0 writes the run."""
    script = tmp_path / "ddp_train.py"
    script.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from pathlib import Path\n"
        "from test_trainer import make_trainer\n"
        f"make_trainer(Path({str(tiny_backbone)!r}), Path({str(tmp_path / 'ddp')!r}), steps=2, device='cpu').train()\n"
    )
    # loopback: the host name may resolve to an address the ranks cannot reach on sandboxed CI machines
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(script)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "ddp" / SUMMARY_FILE).read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 2
    assert (tmp_path / "ddp" / CHECKPOINT_DIR).exists()


@pytest.mark.slow  # kills and resumes subprocesses: about 20 s
def test_sigkill_at_random_points_then_resume_reaches_the_uninterrupted_weights(tiny_backbone, tmp_path):
    """``petir.train`` killed with SIGKILL (no handler runs: mid-step, mid-log, mid-checkpoint), resumed each time,
    ends with exactly the weights of a run that was never interrupted."""
    import random

    triples = tmp_path / "triples.tsv"
    lines = [f"{q.text}\t{CORPUS[q.positives[0]].contents}\t{CORPUS[q.negatives[0]].contents}" for q in QUERIES]
    triples.write_text("\n".join(lines) + "\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def command(output: Path, resume: bool) -> list[str]:
        argv = [sys.executable, "-m", "petir.train", "--triples", str(triples), "--backbone", str(tiny_backbone)]
        argv += ["--method", "iaa-l", "--steps", "30", "--batch-size", "4", "--dev-queries", "0", "--seed", "5"]
        argv += ["--save-every", "1", "--log-every", "1", "--device", "cpu", "--threads", "1", "--output", str(output)]
        return argv + (["--resume"] if resume else [])

    reference = subprocess.run(command(tmp_path / "reference", False), env=env, capture_output=True, text=True)
    assert reference.returncode == 0, reference.stderr[-2000:]

    killed = tmp_path / "killed"
    rng = random.Random(0)
    # Kill once the run has logged past each of these steps, after a random extra moment (mid-step, mid-log or
    # mid-checkpoint: a checkpoint is written after every step); progress, not time, so load cannot skip a kill.
    targets = sorted(rng.sample(range(2, 28), 4))
    kills = 0
    while not (killed / SUMMARY_FILE).exists():
        process = subprocess.Popen(
            command(killed, (killed / CHECKPOINT_DIR).exists()),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        if kills < len(targets):
            while process.poll() is None and last_logged_step(killed) < targets[kills]:
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.3))
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                kills += 1
        _, stderr = process.communicate(timeout=600)
        assert process.returncode in (0, -signal.SIGKILL), stderr[-2000:]
    assert kills == len(targets)
    expected, found = trained_state(tmp_path / "reference"), trained_state(killed)
    assert expected.keys() == found.keys()
    assert all(torch.equal(expected[name], found[name]) for name in expected)


def last_logged_step(output: Path) -> int:
    from petir.run_directory import read_metrics

    path = output / METRICS_FILE
    records = read_metrics(path) if path.exists() else []
    return records[-1]["step"] if records else -1


def test_report_to_tensorboard_logs_loss_and_dev_metrics(tiny_backbone, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    make_trainer(tiny_backbone, tmp_path, steps=4, eval_every=2, report_to="tensorboard").train()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert {"train/loss", "train/lr", "dev/ndcg@10"} <= set(events.Tags()["scalars"])
    assert [event.step for event in events.Scalars("train/loss")] == [1, 2, 3, 4]
    assert [event.step for event in events.Scalars("dev/ndcg@10")] == [0, 2, 4]


@pytest.mark.parametrize("method, options", PET_VARIANTS, ids=PET_IDS)
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(tiny_backbone, method, options):
    """Recomputed activations (dropout replayed) must not change what any PET method learns."""
    batch_groups = GroupSampler(QUERIES, CORPUS, batch_size=4, negatives=1, seed=3).groups(0)
    results = []
    for checkpointing in (False, True):
        set_seed(5)
        model = perturb(BiEncoder(str(tiny_backbone), method, options)).train()
        if checkpointing and method == "linked":
            with pytest.raises(PetirError, match="pass state between layers"):
                model.enable_gradient_checkpointing()
            return
        if checkpointing:
            model.enable_gradient_checkpointing()
        set_seed(6)
        loss = model(model.collate(batch_groups))
        loss.backward()
        results.append((loss.item(), {n: p.grad for n, p in model.named_parameters() if p.requires_grad}))
    (loss, gradients), (checkpointed_loss, checkpointed) = results
    assert checkpointed_loss == pytest.approx(loss, rel=1e-6)
    for name, gradient in gradients.items():
        torch.testing.assert_close(checkpointed[name], gradient, msg=name)


def test_fp16_trains_with_a_gradient_scaler_and_resumes_it(tiny_backbone, tmp_path):
    trainer = make_trainer(tiny_backbone, tmp_path, steps=4, fp16=True, gradient_checkpointing=True, device="cpu")
    summary = trainer.train()
    from petir.checkpoint import read_trainer_state
    from petir.run_directory import read_metrics

    losses = [record["loss"] for record in read_metrics(tmp_path / METRICS_FILE) if "loss" in record]
    assert summary["steps"] == 4 and len(losses) == 4 and all(math.isfinite(loss) for loss in losses)
    state = read_trainer_state(tmp_path / CHECKPOINT_DIR)
    assert state["scaler"]["scale"] > 0  # the scaler's state is in the checkpoint, for an exact --resume
    with pytest.raises(PetirError, match="exclude each other"):
        make_trainer(tiny_backbone, tmp_path / "both", bf16=True, fp16=True)


def test_a_run_gone_non_finite_stops_at_that_step_saves_nothing_and_keeps_the_last_checkpoint(tiny_backbone, tmp_path):
    """A NaN loss at step 5 (injected): one line naming the step and the rate, no model or summary, the step-4
    checkpoint kept and no NaN logged."""
    trainer = make_trainer(tiny_backbone, tmp_path)
    forward = trainer.trained
    trainer.trained = lambda batch: forward(batch) * (math.nan if trainer.step == 4 else 1.0)
    with pytest.raises(DivergedError, match=r"^the loss at step 5 is not finite: .*learning rate 0\.01 .*--lr$"):
        trainer.train()
    assert read_trainer_state(tmp_path / CHECKPOINT_DIR)["step"] == 4
    assert not (tmp_path / MODEL_DIR).exists() and not (tmp_path / SUMMARY_FILE).exists()
    assert "NaN" not in (tmp_path / METRICS_FILE).read_text()


def test_a_huge_learning_rate_ends_in_one_line_not_a_nan_model(tiny_backbone, tmp_path):
    with pytest.raises(DivergedError, match=r"not finite: training diverged, .*learning rate 1e\+30 is too high"):
        make_trainer(tiny_backbone, tmp_path, learning_rate=1e30).train()
    assert not (tmp_path / MODEL_DIR).exists() and not (tmp_path / SUMMARY_FILE).exists()


def test_a_non_finite_dev_check_stops_the_run_and_is_never_printed_as_a_value(tiny_backbone, tmp_path, capsys):
    trainer = make_trainer(tiny_backbone, tmp_path, eval_every=2)
    trainer.evaluate = lambda model: {"ndcg@10": math.nan if trainer.step == 4 else 0.5}
    with pytest.raises(DivergedError, match=r"^the dev check \(\{'ndcg@10': nan\}\) at step 4 is not finite"):
        trainer.train()
    assert "dev at step 4" not in capsys.readouterr().err and not (tmp_path / SUMMARY_FILE).exists()


def test_a_ladder_rung_ends_in_its_dev_record_and_a_checkpoint_not_a_model(tiny_backbone, tmp_path):
    record = make_trainer(tiny_backbone, tmp_path, steps=2).train_rung()
    assert record["dev"] == {"ndcg@10": 0.5} and record["start"]["metrics"] == {"ndcg@10": 0.5}
    assert {"train_s", "dev_s"} <= set(record)
    assert (tmp_path / CHECKPOINT_DIR).is_dir()
    assert not (tmp_path / MODEL_DIR).exists() and not (tmp_path / SUMMARY_FILE).exists()


def test_resuming_a_checkpoint_past_the_steps_asked_for_is_refused(tiny_backbone, tmp_path):
    make_trainer(tiny_backbone, tmp_path, steps=4).train()
    with pytest.raises(PetirError, match=r"checkpoint in .* is at step 4, past --steps 2; resume with the --steps"):
        make_trainer(tiny_backbone, tmp_path, steps=2).train(resume=True)

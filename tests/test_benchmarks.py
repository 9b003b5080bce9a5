"""The efficiency benchmark's measuring functions (benchmarks/efficiency.py) on a tiny random BERT."""

from __future__ import annotations

import importlib.util
import sys
import types

import numpy as np
import pytest
import torch

from conftest import REPO, TINY_PASSAGES, flags, needs_pyserini_hook, run_cli
from petir.data import split_dev, write_qrels, write_run
from petir.pet import VARIANTS
from petir.sampling import Group
from petir.study import STAGES
from petir.tasks.rerank import CrossEncoder
from petir.tasks.retrieval import BiEncoder

QUERIES = ["the cat sat", "cancer risk increase", "protein gene cell", "a dog on the mat"]
PASSAGES = TINY_PASSAGES


def load_benchmark(name: str, register: pytest.MonkeyPatch | None = None) -> types.ModuleType:
    """benchmarks/NAME.py as a module (benchmarks/ is not a package); ``register``: put it in sys.modules first,
    for a module whose dataclasses look their module up."""
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    if register is not None:
        register.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def efficiency():
    """benchmarks/efficiency.py as a module."""
    return load_benchmark("efficiency")


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from threads; and torch was imported before the benchmark could set
    OMP_WAIT_POLICY=PASSIVE, so on cores shared with other jobs spinning OpenMP threads make each tiny step
    take seconds instead of milliseconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def groups(queries: int, group_size: int) -> list[Group]:
    return [
        Group(QUERIES[i % len(QUERIES)], [PASSAGES[(i + j) % len(PASSAGES)] for j in range(group_size)])
        for i in range(queries)
    ]


@pytest.mark.parametrize("task", list(STAGES))
def test_training_costs_rank_methods_as_expected(efficiency, tiny_backbone, task):
    task_class, _, _, group_size = efficiency.study_training()[task]  # the study's groups (passages per query)
    torch.manual_seed(0)
    models = {name: efficiency.variant_model(task_class, str(tiny_backbone), name) for name in VARIANTS}
    rows = efficiency.training_costs(models, groups(4, group_size), steps=2)

    assert set(rows) == set(VARIANTS)
    for name, row in rows.items():
        assert len(row["steps"]) == 2 and row["step_seconds"] > 0, name
        assert row["activation_bytes"] > 0, name
        # every trainable tensor got a gradient, and AdamW keeps two moments per element (plus step counters)
        assert row["gradient_bytes"] == row["parameter_bytes"] == 4 * row["trainable_parameters"], name
        assert 2 * row["parameter_bytes"] <= row["optimizer_bytes"] <= 2 * row["parameter_bytes"] + 4096, name
        assert row["total_bytes"] == sum(
            row[key] for key in ("activation_bytes", "parameter_bytes", "gradient_bytes", "optimizer_bytes")
        ), name
    # The side path never feeds back into the frozen layers, so nothing below it is kept for backward.
    assert rows["linked-side"]["activation_bytes"] < rows["adapter"]["activation_bytes"] / 2
    assert all(rows["full"]["parameter_bytes"] > row["parameter_bytes"] for name, row in rows.items() if name != "full")
    # A 32-slot prefix quadruples the attention maps of these 10-token texts (on 128-256-token passages it adds a
    # small share), so the prefix methods are left out of the total.
    without_prefix = [row for name, row in rows.items() if name not in ("full", "prefix", "mam")]
    assert all(rows["full"]["total_bytes"] > row["total_bytes"] for row in without_prefix)


def test_training_memory_counts_saved_activations_exactly(efficiency, tiny_backbone):
    """With only the cross-encoder head trained, backward keeps the head's input and the loss's few bytes."""
    model = efficiency.variant_model(CrossEncoder, str(tiny_backbone), "adapter", max_length=32)
    for parameter in model.encoder.parameters():
        parameter.requires_grad_(False)
    model.head[0].p = 0.0  # no dropout mask
    batch = model.collate(groups(2, 3))
    report = efficiency.training_memory(model, efficiency.make_optimizer(model), batch)
    pairs, length = batch["pairs"]["input_ids"].shape
    # The head's input, the [CLS] states, is a view: the whole [pairs, length, 32] float32 output stays alive.
    states = pairs * length * 32 * 4
    assert states <= report["activation_bytes"] <= states + 64  # + cross-entropy's log-probabilities and targets
    assert report["parameter_bytes"] == (32 + 1) * 4


def test_overhead_is_the_median_paired_ratio(efficiency):
    reference = {"batch_seconds": [[1.0, 2.0, 4.0], [1.0, 1.0, 1.0]]}
    row = {"batch_seconds": [[1.1, 2.2, 4.4], [1.1, 1.1, 9.0]]}  # one outlier batch does not move the median
    assert efficiency.overhead_pct(row, reference) == pytest.approx(10.0)


@needs_pyserini_hook
def test_the_encoding_benchmark_refuses_a_task_pyserini_cannot_index(efficiency, capsys):
    """It asks the task for the capability it measures (Task.pyserini), and names the tasks that have it."""
    with pytest.raises(SystemExit) as exit:
        efficiency.main(["--task", "sparse", "--output", "unused"])
    assert exit.value.code == 2
    refusal = "--task sparse: pyserini.encode cannot index its models in Faiss; choose retrieval"
    assert refusal in capsys.readouterr().err


def test_encoding_throughput_through_pyserini(efficiency, tiny_backbone, tmp_path):
    directory = efficiency.variant_model(BiEncoder, str(tiny_backbone), "linked-side").save(tmp_path / "model")
    encoders = {
        "backbone": efficiency.pyserini_encoder(tiny_backbone, max_length=32),
        "backbone-inference": efficiency.pyserini_encoder(tiny_backbone, max_length=32, inference_mode=True),
        "linked-side": efficiency.pyserini_encoder(directory, max_length=32),
    }
    # Pyserini's class on a petir directory gives the bi-encoder's own (normalised) vectors.
    vectors = encoders["linked-side"](PASSAGES[:3])
    expected = BiEncoder.load(directory).encode(PASSAGES[:3], max_length=32)
    np.testing.assert_allclose(vectors, expected, atol=1e-5)

    rows = efficiency.encoding_throughput(encoders, PASSAGES, batch_size=4, repeats=2)
    for name, row in rows.items():
        assert row["dimension"] == 32, name
        assert np.asarray(row["batch_seconds"]).shape == (2, 3), name  # 10 passages in batches of 4
        assert row["passages_per_second"] == pytest.approx(len(PASSAGES) / row["seconds"])
        assert row["passages_per_second"] > 0, name
    assert np.isfinite(efficiency.overhead_pct(rows["linked-side"], rows["backbone-inference"]))


@pytest.mark.slow  # every method, trained: about 8 s
def test_gpu_check_runs_every_method_without_pyserini_on_cpu(tmp_path):
    """The GPU check's smoke test: a separate process (so nothing the test session imported counts), the toy
    backbone, every registry variant, a finite loss each, CPU against itself, and no Pyserini import."""
    import json
    import os
    import subprocess
    import sys

    output = tmp_path / "gpu-check.json"
    argv = [sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--tiny", "--device", "cpu"]
    argv += ["--steps", "2", "--batch-size", "4", "--passages", "32", "--output", str(output)]
    result = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(output.read_text())
    assert report["ok"] and not report["pyserini_imported"]
    assert list(report["training"]) == list(VARIANTS)
    assert all(row["finite"] and row["steps"] == 2 for row in report["training"].values())
    assert set(report["inference"]) == {"full/fp32", "full/bf16", "iaa-l/fp32", "iaa-l/bf16"}
    assert "| **iaa-l** |" in output.with_suffix(".md").read_text()


@pytest.mark.slow  # every method, trained on the sparse task: about 20 s
def test_gpu_check_trains_a_task_the_study_has_no_stage_for(tmp_path):
    """--task sparse (no stage of the study) trains with the task's own defaults and says so, instead of failing on
    the study settings it does not have."""
    import json
    import os
    import subprocess
    import sys

    output = tmp_path / "gpu-check.json"
    argv = [sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--tiny", "--device", "cpu", "--task", "sparse"]
    argv += ["--steps", "1", "--batch-size", "2", "--passages", "8", "--output", str(output)]
    result = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(output.read_text())
    assert report["task"] == "sparse" and report["task_options"].startswith("the task's defaults")
    assert all(row["finite"] for row in report["training"].values())


# -- benchmarks/peers.py -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def peers(monkeypatch_module):
    """benchmarks/peers.py as a module, registered under its name (its dataclasses look their module up)."""
    return load_benchmark("peers", register=monkeypatch_module)


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_peers_evaluation_is_exact_cosine_search(peers):
    passages = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    queries = np.array([[1.0, 0.0], [0.0, 1.0]])
    qrels = {"q1": {"d1": 1}, "q2": {"d1": 1}}
    per_query = peers.evaluate_vectors(queries, passages, ["q1", "q2"], ["d1", "d2", "d3"], qrels)
    assert per_query["q1"] == pytest.approx(1.0)  # its judged passage ranks first
    assert per_query["q2"] == pytest.approx(0.5)  # third, after d2 (1.0) and d3 (0.8): 1 / log2(4)


def test_peers_summary_tests_seed_averaged_queries(peers):
    from scipy.stats import ttest_rel

    def run(system, seed, values):
        per_query = {f"q{i}": v for i, v in enumerate(values)}
        return {
            **{"system": system, "seed": seed, "per_query_ndcg@10": per_query, "ndcg@10": float(np.mean(values))},
            **{"seconds_per_step": 1.0 + seed, "peak_memory_mb": 100.0, "trainable_parameters": 5},
            "learning_rate": 1e-3,
        }

    results = {
        "petir-full": [run("petir-full", 1, [0.5, 0.7, 0.9, 0.2]), run("petir-full", 2, [0.7, 0.7, 0.5, 0.4])],
        "st-full": [run("st-full", 1, [0.4, 0.6, 0.8, 0.3]), run("st-full", 2, [0.4, 0.5, 0.6, 0.1])],
    }
    summary = peers.summarize(results)
    row = summary["systems"]["petir-full"]
    assert row["ndcg@10"]["mean"] == pytest.approx(0.575)
    assert row["seconds_per_step"] == {"mean": pytest.approx(2.5), "sd": pytest.approx(np.std([2, 3], ddof=1))}
    (test,) = summary["tests"]  # petir IAA-L and ST+LoRA did not run: only the full pair is tested
    expected = ttest_rel([0.6, 0.7, 0.7, 0.3], [0.4, 0.55, 0.7, 0.2]).pvalue
    assert (test["system"], test["reference"]) == ("petir-full", "st-full")
    assert test["difference"] == pytest.approx(0.1125)
    assert test["p"] == pytest.approx(expected) and test["p_holm"] == pytest.approx(expected)


@pytest.mark.slow  # four trainings in subprocesses, then one in-process: about 3 minutes on 2 busy cores
def test_peers_quick_trains_every_system_on_petirs_groups(peers, tiny_backbone, shared_data, tmp_path, monkeypatch):
    import json

    from petir import train
    from petir.sampling import GroupSampler

    work, output = tmp_path / "work", tmp_path / "out"
    argv = ["--quick", "--data", str(shared_data / "scifact"), "--backbone", str(tiny_backbone)]
    argv += ["--passage-length", "32", "--threads", "1", "--work", str(work), "--output", str(output)]
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    report = peers.main(argv)

    assert list(report["systems"]) == list(peers.SYSTEMS)
    assert [(t["system"], t["reference"]) for t in report["tests"]] == list(peers.COMPARISONS)
    for name, row in report["systems"].items():
        assert 0 <= row["ndcg@10"]["mean"] <= 1 and row["seconds_per_step"]["mean"] > 0, name
        result = json.loads(peers.run_path(work, name, 1).read_text())
        assert len(result["per_query_ndcg@10"]) == 20, name  # the quick sample's test queries
    systems = report["systems"]
    assert systems["st-lora"]["trainable_parameters"] < systems["st-full"]["trainable_parameters"] / 4
    assert json.loads((output / "peers.json").read_text())["systems"] == json.loads(json.dumps(systems))
    assert "| petir IAA-L (seeds 1) |" in (output / "peers.md").read_text()
    assert (output / "peers.png").stat().st_size > 0

    # A second run finds every result saved and trains nothing.
    def train_again(*args, **kwargs):
        pytest.fail("a finished run was trained again")

    monkeypatch.setattr(peers, "subprocess", types.SimpleNamespace(run=train_again))
    assert peers.main(argv)["systems"] == report["systems"]

    # sentence-transformers' rows are the groups petir.train itself trains on, batch after batch.
    drawn = []
    original = GroupSampler.groups
    monkeypatch.setattr(GroupSampler, "groups", lambda self, i: drawn.append(original(self, i)) or drawn[-1])
    spec = {"data": str(work / "data"), "seed": 1, "steps": 3, "batch_size": 4, "dev_queries": 8, "threads": 1}
    train.main(
        ["--data", spec["data"], "--backbone", str(tiny_backbone), "--method", "iaa-l", "--seed", "1", "--steps", "3"]
        + ["--batch-size", "4", "--dev-queries", "8", "--eval-every", "0", "--threads", "1"]
        + ["--passage-max-length", "32", "--output", str(tmp_path / "petir")]
    )
    # the last three draws are the full run's (the learning-rate ladder's rungs draw before it, from the same start)
    assert [group for batch in drawn[-3:] for group in batch] == peers.petir_groups(spec)


def test_revert_parts_puts_each_part_back_and_measures_what_is_left(tiny_backbone, tmp_path):
    """benchmarks/revert_parts.py: the model unchanged keeps 100 % of its gain and a changed part shows its change;
    each part is restored before the next is reverted (the unchanged model scores the same after another part)."""
    import json

    from petir.data import Document, write_pyserini_collection, write_topics

    revert_parts = load_benchmark("revert_parts")
    torch.manual_seed(0)
    model = CrossEncoder(str(tiny_backbone), "full", max_length=64)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.5)
    model.save(tmp_path / "model")
    corpus = {f"d{i}": Document(f"d{i}", "", text) for i, text in enumerate(PASSAGES)}
    write_pyserini_collection(corpus, tmp_path / "collection")
    write_topics({f"q{i}": query for i, query in enumerate(QUERIES)}, tmp_path / "topics.tsv")
    first_stage = {f"q{i}": [(f"d{(i + k) % len(PASSAGES)}", 9.0 - k) for k in range(6)] for i in range(len(QUERIES))}
    write_run(first_stage, tmp_path / "bm25.trec", "bm25")
    write_run(first_stage, tmp_path / "untrained.trec", "untrained")
    (tmp_path / "qrels.txt").write_text("".join(f"q{i} 0 d{(i + 2) % len(PASSAGES)} 1\n" for i in range(len(QUERIES))))
    files = {
        "model": tmp_path / "model",
        "run": tmp_path / "bm25.trec",
        "topics": tmp_path / "topics.tsv",
        "corpus": tmp_path / "collection" / "docs.jsonl",
        "qrels": tmp_path / "qrels.txt",
        "untrained": tmp_path / "untrained.trec",
    }
    revert_parts.main(flags(**files, depth=4, parts="none", output=tmp_path / "alone"))
    revert_parts.main(flags(**files, depth=4, parts="attention,ffn,top_half,bottom_half,none", output=tmp_path / "r"))
    alone = json.loads((tmp_path / "alone.json").read_text())["parts"]["none"]
    parts = json.loads((tmp_path / "r.json").read_text())["parts"]
    assert parts["none"] == alone  # restored after three parts were reverted and put back
    assert parts["none"]["parameters"] == 0 and parts["none"]["relative_change"] == 0
    if parts["none"]["share_of_gain_left"] is not None:  # the tiny model may gain nothing over the first stage
        assert parts["none"]["share_of_gain_left"] == pytest.approx(1.0)
    assert parts["attention"]["parameters"] + parts["ffn"]["parameters"] == (
        parts["top_half"]["parameters"] + parts["bottom_half"]["parameters"]
    )
    assert 0.1 < parts["attention"]["relative_change"] < 10  # noise of sd 0.5 over weights of sd about 0.02-1
    assert "| attention |" in (tmp_path / "r.md").read_text() and (tmp_path / "r.png").stat().st_size > 0
    revert_parts.main(flags(**files, depth=4, parts="lowrank-1,lowrank-4096", output=tmp_path / "low"))
    low = json.loads((tmp_path / "low.json").read_text())["parts"]
    assert low["lowrank-1"]["parameters"] * 4096 == low["lowrank-4096"]["parameters"]  # R x (rows + columns)
    assert 0 < low["lowrank-1"]["relative_change"] < low["lowrank-4096"]["relative_change"]  # the change kept
    change = torch.randn(6, 4)
    assert torch.linalg.matrix_rank(revert_parts.low_rank(change, 2)) == 2
    assert torch.allclose(revert_parts.low_rank(change, 4), change, atol=1e-5)  # rank 4 of a 6 x 4 change: all
    assert "lowrank-0" in run_cli(revert_parts.main, flags(**files, parts="lowrank-0", output=tmp_path / "bad"))


def test_the_allocator_benchmark_tables_medians_and_the_kernels_share():
    allocator = load_benchmark("allocator")

    def run(step: float, kernel: float) -> dict[str, float]:
        return {"step_s": step, "user_s": 90.0, "kernel_s": kernel, "peak_rss_mb": 1000.0}

    text = allocator.table({"runs": {"glibc default": [run(4.0, 10.0), run(5.0, 30.0)], "petir": [run(3.0, 1.0)]}})
    assert "| glibc default | 2 | 4.50 | 90 | 20 | 18% | 1000 |" in text  # medians; 20 / (90 + 20) in the kernel
    assert "| petir | 1 | 3.00 | 90 | 1 | 1% | 1000 |" in text


def test_seen_passages_splits_test_queries_by_the_training_passages_and_measures_each_groups_gain(tmp_path):
    """benchmarks/seen_passages.py: a test query is "seen" when a relevant passage of it was relevant to a query
    the model trained on (the dev queries petir.train held out do not count), and each group's gain is its own."""
    import json

    seen_passages = load_benchmark("seen_passages")
    train = {f"t{i}": {f"p{i}": 1} for i in range(10)}
    write_qrels(train, tmp_path / "train.tsv")
    trained_on, _ = split_dev(train, 2, seed=0)  # petir.train's dev split: the held-out passages are not training's
    assert seen_passages.training_passages(train, 2) == {f"p{qid[1:]}" for qid in trained_on} and len(trained_on) == 8
    test = {"a": {"p0": 1, "x": 1}, "b": {"y": 1}, "c": {"z": 1}, "d": {"p1": 0}}  # d: judged, nothing relevant
    groups = seen_passages.split_queries(test, {"p0", "p1"})
    assert groups == {"all": ["a", "b", "c", "d"], "seen": ["a"], "unseen": ["b", "c", "d"]}
    write_qrels(test, tmp_path / "qrels.txt")
    base = {"a": ["n", "p0"], "b": ["n", "y"], "c": ["z"]}
    tuned = {"a": ["p0", "x"], "b": ["n", "y"], "c": ["n", "z"]}  # gains on a, loses on c
    for name, run in (("base", base), ("tuned", tuned)):
        write_run(
            {q: [(d, 9.0 - r) for r, d in enumerate(docs)] for q, docs in run.items()}, tmp_path / f"{name}.trec", name
        )
    runs = [f"{name}={tmp_path / name}.trec" for name in ("base", "tuned")]
    common = flags(qrels=tmp_path / "qrels.txt", train_qrels=tmp_path / "train.tsv", dev_queries=0)
    seen_passages.main([*runs, *common, *flags(reference="base", output=tmp_path / "s")])
    rows = json.loads((tmp_path / "s.json").read_text())["runs"]
    assert rows["base"]["seen"]["gain"] == 0 and rows["tuned"]["seen"]["gain"] > 0
    assert rows["tuned"]["unseen"]["gain"] < 0 and rows["tuned"]["unseen"]["queries"] == 3
    assert (tmp_path / "s.md").read_text().count("\n| ") == 3 and (tmp_path / "s.png").stat().st_size > 0
    # a name given twice is one row of two seeds: their mean, each seed's score, and the test on the per-query mean
    seeds = [*runs, f"tuned={tmp_path / 'base'}.trec"]
    seen_passages.main([*seeds, *common, *flags(reference="base", output=tmp_path / "m")])
    two = json.loads((tmp_path / "m.json").read_text())["runs"]["tuned"]["seen"]
    assert two["seeds"] == [rows["tuned"]["seen"]["ndcg@10"], rows["base"]["seen"]["ndcg@10"]]
    assert two["gain"] == pytest.approx(rows["tuned"]["seen"]["gain"] / 2) and two["sd"] > 0
    assert "| tuned | 2 | " in (tmp_path / "m.md").read_text()
    too_many = flags(qrels=tmp_path / "qrels.txt", train_qrels=tmp_path / "train.tsv", dev_queries=10)
    assert "--dev-queries 10" in run_cli(
        seen_passages.main, [*runs, *too_many, *flags(reference="base", output=tmp_path / "e")]
    )
    bad = flags(reference="base", output=tmp_path / "e")
    assert "NAME=PATH" in run_cli(seen_passages.main, [str(tmp_path / "base.trec"), *common, *bad])
    assert "--reference" in run_cli(seen_passages.main, [*runs, *common, *flags(reference="x", output=tmp_path / "e")])

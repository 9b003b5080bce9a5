"""The run directory (petir/run_directory.py): the readers of the files a run writes."""

from __future__ import annotations

import json
import math

import pytest

from petir.errors import PetirError
from petir.run_directory import METRICS_FILE, SUMMARY_FILE, read_metrics, read_summary


def test_metrics_log_drops_a_record_torn_by_a_crash_and_refuses_garbage(tmp_path):
    path = tmp_path / METRICS_FILE
    path.write_text('{"step": 1, "loss": 0.5}\n{"step": 2, "lo')
    assert read_metrics(path) == [{"step": 1, "loss": 0.5}]
    path.write_text('{"step": 1}\nnot json\n')
    with pytest.raises(PetirError, match="not a petir metrics log"):
        read_metrics(path)


def test_a_saved_run_whose_dev_check_is_not_finite_is_not_a_finished_run(tmp_path):
    summary = {"parameters": {"trainable": 1, "percent": 0.5}, "wall_time_s": 1.0, "peak_memory_mb": 1.0}
    path = tmp_path / SUMMARY_FILE
    path.write_text(json.dumps({**summary, "final_dev": {"ndcg@10": 0.5}}))
    assert read_summary(path)["final_dev"] == {"ndcg@10": 0.5}
    path.write_text(json.dumps({**summary, "final_dev": {"ndcg@10": math.nan}}))
    with pytest.raises(PetirError, match="dev check is not finite .*diverged and is no finished run"):
        read_summary(path)

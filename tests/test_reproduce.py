"""The study runner's bookkeeping (petir/reproduce.py): convergence steps and the results tables."""

from __future__ import annotations

import csv

import pytest

from petir.errors import PetirError
from petir.pet import VARIANTS
from petir.reproduce import MAIN_VARIANTS, steps_to_fraction, study_entry, write_tables

CURVE = [(0, 0.80), (10, 0.82), (20, 0.90), (30, 0.84)]


def test_steps_to_fraction_of_the_final_value_and_of_the_gain():
    assert steps_to_fraction(CURVE, 0.95) == 0  # 0.80 >= 0.95 * 0.84 already at the start
    assert steps_to_fraction(CURVE, 0.95, of_gain=True) == 20  # 0.80 + 0.95 * 0.04 = 0.838
    assert steps_to_fraction([(0, 0.8), (10, 0.7)], 0.95, of_gain=True) is None  # no gain to reach
    assert steps_to_fraction([], 0.95) is None


def row(method, seed, ndcg, steps):
    return {"method": method, "seed": seed, "ndcg@10": ndcg, "dev_ndcg@10": ndcg + 0.1, "steps_to_95%": steps}


def test_tables_keep_every_run_in_csv_and_summarise_seeds_in_markdown(tmp_path):
    rows = [{"method": "bm25", "seed": "", "ndcg@10": 0.6789}, row("full", 1, 0.70, 60), row("full", 2, 0.72, 30)]
    write_tables(rows, tmp_path / "results")

    with open(tmp_path / "results.csv") as handle:
        assert [r["seed"] for r in csv.DictReader(handle)] == ["", "1", "2"]
    lines = (tmp_path / "results.md").read_text().splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    cells = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")] for line in lines[2:]}
    assert "first stage" not in header  # only re-ranking tables have one
    column = {name: header.index(name) for name in ("seeds", "nDCG@10", "dev nDCG@10", "steps to 95%")}
    assert cells["bm25"][column["nDCG@10"]] == "0.6789" and cells["bm25"][column["steps to 95%"]] == "–"
    full = cells["full"]
    assert full[column["seeds"]] == "2"
    assert full[column["nDCG@10"]] == "0.7100 ± 0.0141"
    assert full[column["dev nDCG@10"]] == "0.8100 ± 0.0141"
    assert full[column["steps to 95%"]] == "45 ± 21"


def test_study_entries_are_registry_variants_at_a_budget():
    assert study_entry("iaa-l") == ("iaa-l", None, {})
    assert study_entry("adapter@6.7") == ("adapter", "6.7", {})
    assert study_entry("iaa-l-near-identity") == ("iaa-l", None, {"init": "near-identity"})
    assert set(MAIN_VARIANTS) <= set(VARIANTS)
    with pytest.raises(PetirError, match="unknown method 'connected-bottleneck'"):
        study_entry("connected-bottleneck")
    with pytest.raises(PetirError, match="bitfit has no 6.7 % budget preset"):
        study_entry("bitfit@6.7")

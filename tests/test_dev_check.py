"""A dev check's noise (petir/dev_check.py): the standard error of the dev value and of its gain over the start."""

from __future__ import annotations

import math

from petir.dev_check import DevCheck, dev_noise


def test_dev_noise_is_the_standard_error_and_the_paired_one_of_the_gain():
    start = DevCheck({"ndcg@10": 0.25}, [0.5, 0.0, 0.5, 0.0])
    check = DevCheck({"ndcg@10": 0.5}, [1.0, 0.0, 0.5, 0.5])
    # values: mean 0.5, sample SD sqrt(0.5 / 3); gains [0.5, 0, 0, 0.5]: mean 0.25, SD sqrt(0.25 / 3); SE = SD / 2
    assert dev_noise(check, start) == {
        "dev_se": round(math.sqrt(0.5 / 3) / 2, 4),
        "gain": 0.25,
        "gain_se": round(math.sqrt(0.25 / 3) / 2, 4),
    }
    assert dev_noise(check, None) == {"dev_se": 0.2041}
    assert dev_noise(DevCheck({"ndcg@10": 1.0}), start) == {}  # no per-query values: no noise to report

"""The checkpoint codec (petir/checkpoint.py): a trainer state stored as data only, read back exactly."""

from __future__ import annotations

import json
import random

import numpy as np
import torch

from petir.checkpoint import TRAINER_STATE, read_trainer_state, rng_state, write_trainer_state


def test_the_trainer_state_round_trips_exactly_and_holds_no_pickle(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.standard_normal()  # a cached Gaussian in NumPy's state
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.randn(3, 2))], lr=0.1)
    optimizer.param_groups[0]["params"][0].grad = torch.ones(3, 2)
    optimizer.step()
    state = {"optimizer": optimizer.state_dict(), "rng": [rng_state()], "step": 1, "elapsed": 0.1, "x": {7: (1,)}}
    state["scheduler"] = {"__tuple__": "a str key that looks like a marker", "lrs": [0.1, float("inf")]}
    write_trainer_state(tmp_path, state)
    back = read_trainer_state(tmp_path)
    assert back["x"] == {7: (1,)} and back["scheduler"]["__tuple__"].startswith("a str")
    assert back["optimizer"]["state"][0]["exp_avg"].equal(state["optimizer"]["state"][0]["exp_avg"])
    assert back["optimizer"]["param_groups"] == state["optimizer"]["param_groups"]  # betas stay a tuple
    python, numpy_state = back["rng"][0]["python"], back["rng"][0]["numpy"]
    assert python == random.getstate() and back["rng"][0]["torch"].equal(torch.get_rng_state())
    expected = np.random.get_state()
    assert numpy_state[0] == expected[0] and numpy_state[2:] == expected[2:]
    assert numpy_state[1].dtype == expected[1].dtype and (numpy_state[1] == expected[1]).all()
    draws = []
    for numpy_source in (expected, numpy_state):
        random.setstate(python)
        np.random.set_state(numpy_source)
        draws.append((random.random(), np.random.standard_normal(), np.random.standard_normal()))
    assert draws[0] == draws[1]
    assert isinstance(json.loads((tmp_path / TRAINER_STATE).read_text()), dict)  # JSON text, not a pickle

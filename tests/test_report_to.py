"""``--report-to tensorboard`` without tensorboard is refused when the flag is parsed, not after the set-up."""

import importlib.util

import pytest

from petir import train
from petir.cli import UsageError, run


def test_report_to_tensorboard_without_the_package_is_refused_at_parsing(monkeypatch, capsys, tmp_path):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else find_spec(name, *a)
    )
    reached = []
    monkeypatch.setattr(train, "check_flags", lambda *a: reached.append(a))  # nothing after parsing may run
    with pytest.raises(UsageError) as caught:
        run(train.main, ["--data", str(tmp_path), "--output", str(tmp_path / "run"), "--report-to", "tensorboard"])
    assert caught.value.code == 2 and not reached
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "--report-to" in err and "pip install tensorboard" in err


def test_report_to_tensorboard_parses_when_the_package_is_there(tmp_path):
    pytest.importorskip("tensorboard")
    args = train.build_parser([]).parse_args(["--output", str(tmp_path), "--report-to", "tensorboard"])
    assert args.report_to == "tensorboard"

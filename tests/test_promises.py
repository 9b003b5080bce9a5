"""petir's promises, tested over what the code declares rather than over hand-picked cases: a bad value ends as one
line on stderr naming it and what to do, exit status 2, no traceback.

The tables come from the code (every module with a ``main`` is a CLI; its options are its parser's actions; PET and
task options are their dataclass fields), so a new CLI, option or method is covered without editing this file.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import pkgutil
import typing
from types import ModuleType

import pytest

import petir
from petir import cli
from petir.errors import PetirError
from petir.models import TASKS, make_options
from petir.pet import METHODS, make_config
from petir.train import main as train_main


def _cli_modules() -> dict[str, ModuleType]:
    """Every petir module with a ``main``: the ``python -m petir.NAME`` commands."""
    modules = (importlib.import_module(info.name) for info in pkgutil.walk_packages(petir.__path__, "petir."))
    return {module.__name__: module for module in modules if callable(getattr(module, "main", None))}


CLIS = _cli_modules()

#: The fewest arguments each CLI needs before it parses an option (paths need not exist: parsing fails first).
REQUIRED = {
    "petir.train": ["--output", "out"],
    "petir.rerank": ["--run", "run", "--topics", "topics", "--corpus", "corpus", "--model", "m", "--output", "out"],
    "petir.onnx": ["model"],
    "petir.export": ["model", "--output", "out"],
    "petir.reproduce": ["retrieval", "--output", "out"],
    "petir.workspace": ["--data", "data", "--output", "out"],
    "petir.evaluate": ["qrels", "run"],
    "petir.java": [],
}


def run_expecting_one_line(main, argv: list[str], capsys) -> str:
    """Run a CLI's ``main`` as ``python -m`` does; asserts exit status 2 and one line on stderr, and returns it."""
    with pytest.raises(SystemExit) as exit_:
        cli.run(main, argv)
    stderr = capsys.readouterr().err
    assert exit_.value.code == 2, stderr
    assert "Traceback" not in stderr and len(stderr.splitlines()) == 1, stderr
    return stderr.strip()


def outside(bounds: cli.Bounded) -> list[str]:
    """Values just outside each bound of ``bounds``, and ones that are no number of its kind."""
    values = ["abc", "1.5" if bounds.kind is int else "nan"]
    for inclusive, exclusive, direction in ((bounds.minimum, bounds.above, -1), (bounds.maximum, bounds.below, 1)):
        if exclusive is not None:
            values.append(str(exclusive))
        elif inclusive is not None and bounds.kind is int:
            values.append(str(inclusive + direction))
        elif inclusive is not None:
            values.append(repr(math.nextafter(inclusive, direction * math.inf)))
    return values


def inside(bounds: cli.Bounded) -> list[str]:
    """Values at (or just inside) each bound of ``bounds``."""
    values = []
    for inclusive, exclusive, direction in ((bounds.minimum, bounds.above, 1), (bounds.maximum, bounds.below, -1)):
        if inclusive is not None:
            values.append(str(inclusive))
        elif exclusive is not None:
            values.append(repr(math.nextafter(exclusive, direction * math.inf)))
    return values or ["1"]


def numeric_actions(module: ModuleType) -> list:
    """The parser actions of ``module`` that take a number: typed int or float, or with a numeric default."""
    numeric = (int, float)
    return [
        action
        for action in module.build_parser()._actions
        if action.nargs != 0
        and (isinstance(action.type, cli.Bounded) or action.type in numeric or type(action.default) in numeric)
    ]


def flag_of(action) -> str:
    return max(action.option_strings, key=len) if action.option_strings else action.dest


def _option_cases() -> list:
    return [
        pytest.param(name, flag_of(action), value, action.type, id=f"{name}{flag_of(action)}={value}")
        for name, module in CLIS.items()
        for action in numeric_actions(module)
        if isinstance(action.type, cli.Bounded)
        for value in outside(action.type)
    ]


def numeric_fields(options_class: type) -> list[dataclasses.Field]:
    hints = typing.get_type_hints(options_class)
    return [
        field
        for field in dataclasses.fields(options_class)
        if set(typing.get_args(hints[field.name]) or (hints[field.name],)) & {int, float}
    ]


def _pet_cases() -> list:
    return [
        pytest.param(method, field.name, value, field.metadata["bounds"], id=f"{method}-{field.name}={value}")
        for method, entry in METHODS.items()
        for field in numeric_fields(entry.config_class)
        if "bounds" in field.metadata
        for value in outside(field.metadata["bounds"])
    ]


# -- options ----------------------------------------------------------------------------------------------------
def test_every_cli_builds_its_parser_with_petirs_parser():
    assert set(CLIS) == set(REQUIRED), "a new CLI needs its minimal arguments in REQUIRED"
    for name, module in CLIS.items():
        assert callable(getattr(module, "build_parser", None)), f"{name} has main but no build_parser"
        assert isinstance(module.build_parser(), cli.ArgumentParser), f"{name} does not use cli.ArgumentParser"


@pytest.mark.parametrize("name", sorted(CLIS))
def test_every_number_option_declares_a_range_its_default_and_bounds_are_in(name):
    for action in numeric_actions(CLIS[name]):
        assert isinstance(action.type, cli.Bounded), f"{name} {flag_of(action)} declares no range (cli.Bounded)"
        if action.default is not None:
            action.type.parse(action.default)
        parser = CLIS[name].build_parser()
        for value in inside(action.type):
            parser.parse_args([*REQUIRED[name], f"{flag_of(action)}={value}"])


@pytest.mark.parametrize("name", sorted(CLIS))
def test_help_shows_every_declared_range(name):
    text = " ".join(CLIS[name].build_parser().format_help().split())
    for action in numeric_actions(CLIS[name]):
        assert f"[{action.type.description}]" in text, flag_of(action)


@pytest.mark.parametrize(("name", "flag", "value", "bounds"), _option_cases())
def test_a_value_out_of_range_is_one_line_naming_the_flag_and_its_range(name, flag, value, bounds, capsys):
    line = run_expecting_one_line(CLIS[name].main, [*REQUIRED[name], f"{flag}={value}"], capsys)
    assert f"argument {flag}: must be {bounds.description}, got " in line, line


@pytest.mark.parametrize("name", sorted(CLIS))
def test_unknown_flags_and_missing_arguments_are_one_line(name, capsys):
    line = run_expecting_one_line(CLIS[name].main, [*REQUIRED[name], "--no-such-flag"], capsys)
    assert "--no-such-flag" in line and "--help" in line
    if REQUIRED[name]:
        assert "required" in run_expecting_one_line(CLIS[name].main, [], capsys)


def test_every_pet_and_task_number_declares_a_range_its_default_is_in():
    classes = [entry.config_class for entry in METHODS.values()] + [task.options_class for task in TASKS.values()]
    for options_class in classes:
        for field in numeric_fields(options_class):
            assert "bounds" in field.metadata, f"{options_class.__name__}.{field.name} declares no range"
            if field.default is not None:
                field.metadata["bounds"].parse(field.default)


@pytest.mark.parametrize(("method", "option", "value", "bounds"), _pet_cases())
def test_a_pet_option_out_of_range_is_refused_from_the_cli_and_from_a_saved_config(
    method, option, value, bounds, tmp_path, capsys
):
    with pytest.raises(PetirError) as error:
        make_config(method, {option: value})
    assert f"PET option {option} must be {bounds.description}" in str(error.value)
    argv = ["--method", method, "--pet", f"{option}={value}", "--output", str(tmp_path / "run")]
    line = run_expecting_one_line(train_main, argv, capsys)
    assert f"PET option {option} must be {bounds.description}" in line
    assert not (tmp_path / "run").exists()  # refused before anything was read or written


@pytest.mark.parametrize("task", sorted(TASKS))
def test_a_task_option_out_of_range_is_refused_where_options_are_made(task):
    options_class = TASKS[task].options_class
    for field in numeric_fields(options_class):
        for value in outside(field.metadata["bounds"]):
            with pytest.raises(PetirError, match=f"^{field.name} must be {field.metadata['bounds'].description}"):
                make_options(options_class, {field.name: value})

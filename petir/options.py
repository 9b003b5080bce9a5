"""The one validator of option dataclasses: a task's options (saved in config.json), its data options and a PET
method's config (``--pet KEY=VALUE``, saved too). Their fields are :func:`petir.cli.option` fields: the metadata
holds the help text, the choices and a number's range, which this module checks, so a bad value is refused where
options are made, from the command line or a saved file alike."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Sequence
from typing import Any

from petir.errors import PetirError, check_choice, check_type


def make_options(options_class: type, values: dict[str, Any], what: str = "", strings: bool = False) -> Any:
    """``options_class`` with ``values`` over its defaults. An unknown option, a value of the wrong type (from a
    saved config.json), out of its range or not among its choices is one line naming it (after ``what``: "PET
    option "). ``strings``: values may be CLI text (``--pet r=8``), turned into the field's type (a comma-separated
    tuple, a true/false switch); otherwise only numbers are parsed (:class:`petir.cli.Bounded`) and the rest must
    already have their type."""
    fields = {field.name: field for field in dataclasses.fields(options_class)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise PetirError(
            f"{options_class.__name__} has no option {', '.join(unknown)}; options: {', '.join(sorted(fields))}"
        )
    hints = typing.get_type_hints(options_class)
    made = {name: _value(fields[name], hints[name], value, what, strings) for name, value in values.items()}
    return options_class(**made)


def key_values(pairs: Sequence[str], what: str) -> dict[str, str]:
    """``KEY=VALUE`` texts (``--pet r=8``, a study entry's ``+r=8``) as strings by key, for :func:`make_options` with
    ``strings``; a text without a key and ``=`` is one line naming ``what``."""
    values = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise PetirError(f"{what} expects KEY=VALUE, got {pair!r}")
        values[key.strip()] = value.strip()
    return values


def _value(field: dataclasses.Field, hint: Any, value: Any, what: str, strings: bool) -> Any:
    name = f"{what}{field.name}"
    bounds = field.metadata.get("bounds")
    if bounds is not None and not (value is None and field.default is None):
        try:
            value = bounds.parse(value)  # the type and the range, in one message
        except ValueError as error:
            raise PetirError(f"{name} {error}") from None
    elif strings and isinstance(value, str):
        value = _from_text(name, hint, value)
    else:
        check_type(name, value, hint)
        value = tuple(value) if typing.get_origin(hint) is tuple else value  # a JSON list
    if field.metadata.get("choices"):
        check_choice(field.name, value, field.metadata["choices"])
    return value


def _from_text(name: str, hint: Any, text: str) -> Any:
    """A CLI string as the field's type: a comma-separated tuple, a true/false switch, or the string itself."""
    if typing.get_origin(hint) is tuple:
        return tuple(text.split(","))
    if hint is bool:
        if text.lower() not in ("true", "false", "1", "0"):
            raise PetirError(f"{name} must be true or false, got {text!r}")
        return text.lower() in ("true", "1")
    return text

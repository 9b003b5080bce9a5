"""User-facing errors: one line that says what is wrong and what to do.

Every error a user can cause with bad input or a bad flag is a :class:`PetirError`; the CLIs print it as a single
line and exit with status 2 instead of showing a traceback (see :func:`petir.cli.run`).
"""

import types
import typing
from collections.abc import Collection


class PetirError(Exception):
    """An error caused by input or configuration, reported to the user as one line."""


class DataError(PetirError, ValueError):
    """Malformed or inconsistent input data (corpus, queries, qrels, runs)."""


class ModelMismatchError(PetirError):
    """A saved PET state was loaded onto a backbone other than the one it was trained on."""


def check_choice(what: str, value: object, choices: Collection[object]) -> None:
    """Raise ``unknown WHAT 'value'; choose from a, b`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise PetirError(f"unknown {what} {value!r}; choose from {', '.join(map(str, choices))}")


def check_type(what: str, value: object, hint: object) -> None:
    """Raise ``WHAT must be int, got 'abc'`` unless ``value``, as JSON decodes it, fits the type ``hint``: int, float
    (an int fits), str, bool, dict, a tuple of one of them (a JSON list), or an optional one. A bool is no number,
    though Python counts it as an int: ``"max_length": true`` in a saved config is damage, not 1."""
    if not _fits(value, hint):
        name = getattr(hint, "__name__", None) if typing.get_origin(hint) is None else None
        shown = repr(value)
        raise PetirError(f"{what} must be {name or hint}, got {shown if len(shown) <= 60 else shown[:57] + '...'}")


def _fits(value: object, hint: object) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, option) for option in typing.get_args(hint))
    if origin is tuple:
        return isinstance(value, list | tuple) and all(_fits(item, typing.get_args(hint)[0]) for item in value)
    if hint is type(None):
        return value is None
    if hint in (int, float):
        numbers = int if hint is int else int | float
        return isinstance(value, numbers) and not isinstance(value, bool)
    return isinstance(value, hint)  # type: ignore[arg-type]

"""User-facing errors: one line that says what is wrong and what to do.

Every error a user can cause with bad input or a bad flag is a :class:`PetirError`; the CLIs print it as a single
line and exit with status 2 instead of showing a traceback (see :func:`petir.cli.run`).
"""

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

"""Shared plumbing for petir's ``python -m petir.<tool>`` commands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from petir.errors import PetirError


def run(main: Callable[[Sequence[str] | None], None], argv: Sequence[str] | None = None) -> None:
    """Run a CLI ``main`` so that user errors end as one line on stderr with exit status 2."""
    prog = _prog_name()
    try:
        main(argv)
    except PetirError as error:
        sys.exit(f"{prog}: error: {error}")
    except KeyboardInterrupt:
        sys.exit(f"{prog}: interrupted")


def _prog_name() -> str:
    import __main__

    spec = getattr(__main__, "__spec__", None)
    return f"python -m {spec.name}" if spec is not None else "petir"


def resolve_device(device: str | None) -> str:
    """``auto`` (or None) picks CUDA when present, else CPU; anything else is passed through to torch."""
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise PetirError(f"--device {device} asked for CUDA, but torch sees no GPU here; use --device cpu")
    return device


def flags(**options: object) -> list[str]:
    """``flags(batch_size=8, output=path)`` -> ``["--batch-size", "8", "--output", "path"]``."""
    return [item for name, value in options.items() for item in (f"--{name.replace('_', '-')}", str(value))]


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults and keep the hand-wrapped examples in descriptions."""

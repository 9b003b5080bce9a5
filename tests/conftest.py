"""Shared pytest fixtures for petir's tests."""

from __future__ import annotations

import importlib
import os
import pkgutil
import sysconfig
from pathlib import Path
from types import ModuleType

import pytest

import petir
from petir.pet import VARIANTS, resolve
from petir.tasks import TASKS

REPO = Path(__file__).resolve().parents[1]


def data_root() -> Path:
    """Where the shared real datasets are: ``$PETIR_DATA``, else ``<repo>/../shared/data`` (present or not)."""
    return Path(os.environ.get("PETIR_DATA", REPO.parent / "shared" / "data"))


def require_data(*paths: Path) -> None:
    """Skip the calling test (a skip, never a pass) unless every path of real data exists; the reason names the
    missing path and what to set."""
    for path in paths:
        if not path.exists():
            pytest.skip(
                f"real data not found: {path} is missing; set PETIR_DATA to the shared datasets directory "
                "(default <repo>/../shared/data)"
            )


@pytest.fixture
def shared_data() -> Path:
    """Path to the shared real datasets; skips the test, saying what to set, where they are not present."""
    root = data_root()
    require_data(root)
    return root


#: Marks a test that runs the stock Pyserini CLIs in subprocesses: they find petir through the start-up hook that
#: ``pip install -e .`` puts in site-packages, so without it the test is skipped, saying so.
needs_pyserini_hook = pytest.mark.skipif(
    not (Path(sysconfig.get_paths()["purelib"]) / "petir_pyserini.pth").exists(),
    reason="petir is not pip-installed (no petir_pyserini.pth in site-packages): run pip install -e .",
)


@pytest.fixture
def restore_java_env(monkeypatch):
    """ensure_java edits JAVA_HOME and PATH of this process; undo that after the test."""
    for name in ("JAVA_HOME", "PATH"):
        original = os.environ.get(name)
        monkeypatch.setenv(name, "")  # records the original value, or its absence, to restore afterwards
        if original is None:
            monkeypatch.delenv(name)
        else:
            monkeypatch.setenv(name, original)


TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefghijklmnopqrstuvwxyz0123456789"] + [
    "the",
    "cat",
    "dog",
    "sat",
    "on",
    "mat",
    "a",
    "protein",
    "cell",
    "gene",
    "cancer",
    "risk",
    "increase",
    "study",
]


def make_tiny_backbone(directory: Path, seed: int = 0, layers: int = 2) -> Path:
    """A randomly initialised BERT (hidden 32, ``layers`` layers) with a small word-piece vocabulary, saved with a
    random masked-LM head (which the sparse task needs; every other task loads the encoder alone)."""
    from petir.backbone import random_backbone

    shape = {"hidden_size": 32, "num_attention_heads": 4, "intermediate_size": 64, "max_position_embeddings": 128}
    return random_backbone(directory, TINY_VOCAB, seed, masked_lm=True, num_hidden_layers=layers, **shape)


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory) -> Path:
    """Directory of a tiny random BERT backbone, shared by the whole test session (read-only)."""
    return make_tiny_backbone(tmp_path_factory.mktemp("tiny-bert"))


def flags(**options) -> list[str]:
    """``flags(run=path, depth=3)`` -> ``["--run", "path", "--depth", "3"]``: CLI arguments from keywords."""
    return [item for name, value in options.items() for item in (f"--{name.replace('_', '-')}", str(value))]


def cli_modules() -> dict[str, ModuleType]:
    """Every petir module with a ``main``: the ``python -m petir.NAME`` commands (and ``petir-NAME`` scripts)."""
    modules = (importlib.import_module(info.name) for info in pkgutil.walk_packages(petir.__path__, "petir."))
    return {module.__name__: module for module in modules if callable(getattr(module, "main", None))}


def run_cli(main, argv: list[str]) -> str | None:
    """Run a petir CLI ``main`` the way ``python -m`` does; returns its one-line error, or None on success."""
    from petir import cli

    try:
        cli.run(main, argv)
    except cli.UsageError as exit_:
        assert exit_.code == 2
        return exit_.message
    return None


#: Every named variant of every PET method in the registry, as (method, options) at its default budget, with the
#: variant names as test ids: a method added to the registry is picked up by every property test.
PET_VARIANTS = [resolve(name) for name in VARIANTS]
PET_IDS = list(VARIANTS)
#: Every task's model class, with the task names as test ids: a task added to the registry is picked up by every
#: test over tasks.
TASK_MODELS = [task.model for task in TASKS.values()]
TASK_IDS = list(TASKS)


#: A handful of passages over the tiny vocabulary (ids d0..d9 where a test needs ids).
TINY_PASSAGES = [
    "the cat sat on the mat",
    "a dog sat",
    "cancer risk study",
    "risk increase in cancer",
    "protein and gene",
    "cell protein study",
    "the mat",
    "a cat and a dog",
    "gene risk",
    "study on cell",
]


def inputs() -> dict:
    """A padded batch of 3 token sequences over ids 5..49 (real lengths 9, 5 and 2) for tiny random encoders."""
    import torch

    torch.manual_seed(1)
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[1, 5:] = 0
    mask[2, 2:] = 0
    return {"input_ids": torch.randint(5, 50, (3, 9)), "attention_mask": mask}


def train_one_step(model) -> None:
    """Two AdamW steps (with weight decay) on a loss over every output position of ``inputs()``; the second moves
    parameters whose gradient was zero at the start (behind zero up-projections)."""
    import torch

    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    for _ in range(2):
        model(**inputs()).last_hidden_state.pow(2).mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()


def perturb(model, seed: int = 3):
    """Move every trainable tensor off its start (zero up-projections would hide a module that is lost or
    misplaced), as training would; returns the model."""
    import torch

    torch.manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn_like(parameter) * 0.1)
    return model

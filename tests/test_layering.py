"""petir's import graph (every module of petir/): no cycle, and every import runs down the layers docs/extending.md
draws ("Layers"). Imports are read with ast, so those inside functions and under ``TYPE_CHECKING`` count: a deferred
import is still an import. Spans the package, so it mirrors no one module."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

from conftest import REPO

PACKAGE = REPO / "petir"

#: The layers, lowest first: a module may import its own layer's modules and any lower layer's, never a higher one's.
#: A module is named by its dotted name; a name ending in ".*" is every module below that package (and the package).
LAYERS: dict[str, tuple[str, ...]] = {
    "foundation": (
        "petir",
        "petir.errors",
        "petir.allocator",
        "petir.cli",
        "petir.options",
        "petir.files",
        "petir.java",
        "petir.anatomy",
        "petir.data",
        "petir.datasets",
        "petir.ondisk",
        "petir.distributed",
        "petir.batching",
        "petir.sampling",
        "petir.losses",
        "petir.backbone",
        "petir.evaluate",
        "petir.bm25",
        "petir.workspace",
    ),
    "pet": ("petir.pet.*",),
    "model format": ("petir.card", "petir.models", "petir.onnx_runtime"),
    "tasks": ("petir.tasks.*",),
    "training": (
        "petir.trainer",
        "petir.train_config",
        "petir.dev_check",
        "petir.checkpoint",
        "petir.run_directory",
        "petir.ladder",
        "petir.training_data",
    ),
    "commands": ("petir.train", "petir.rerank", "petir.onnx", "petir.export", "petir.readers", "petir.console"),
    "study": ("petir.study.*", "petir.reproduce"),
}
#: The most lines a module may have.
MAX_LINES = 500


def modules() -> dict[str, Path]:
    """Every module of petir/ by dotted name (a package by its own name)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The petir modules ``name`` imports anywhere in its file: ``from petir.x import y`` imports ``petir.x.y`` where
    that is a module, else ``petir.x``; relative imports are resolved against the package."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in known}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                target = f"{base}.{alias.name}"
                found |= {target} if target in known else {base} if base in known else set()
    return found - {name}


def layer_of(name: str) -> str | None:
    for layer, members in LAYERS.items():
        for member in members:
            if name == member or (member.endswith(".*") and (name + ".").startswith(member[:-1])):
                return layer
    return None


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(name, path, set(found)) for name, path in found.items()}


def test_every_module_has_a_layer(graph):
    assert [name for name in graph if layer_of(name) is None] == [], "add the new module to LAYERS and the doc"


def test_the_import_graph_has_no_cycle(graph):
    try:
        list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as error:
        pytest.fail(f"import cycle: {' -> '.join(error.args[1])}")


def test_every_import_runs_down_the_layers(graph):
    rank = {layer: index for index, layer in enumerate(LAYERS)}
    upward = [
        f"{name} ({layer_of(name)}) imports {target} ({layer_of(target)})"
        for name, targets in sorted(graph.items())
        for target in sorted(targets)
        if rank[layer_of(target)] > rank[layer_of(name)]
    ]
    assert upward == []


def test_the_doc_draws_these_layers():
    """docs/extending.md's picture names every layer, top (study) to bottom (foundation), as LAYERS has them."""
    doc = (REPO / "docs" / "extending.md").read_text()
    picture = doc[doc.index("## Layers") :].split("```")[1]
    positions = [picture.find(f"[{layer}]") for layer in reversed(LAYERS)]
    assert -1 not in positions and positions == sorted(positions), positions


def test_no_module_is_over_500_lines():
    long = [
        f"{path.relative_to(REPO)}: {lines}"
        for path in PACKAGE.rglob("*.py")
        if (lines := len(path.read_text().splitlines())) > MAX_LINES
    ]
    assert long == []


def test_the_check_sees_deferred_and_type_checking_imports(tmp_path):
    """The graph counts what a plain reading of module-level imports would miss."""
    module = tmp_path / "m.py"
    module.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from petir.models import PetModel\n"
        "def f():\n    from petir.tasks import load\n    import petir.study\n"
        "from petir import cli\n"
    )
    known = {"petir", "petir.models", "petir.tasks", "petir.study", "petir.cli"}
    assert imports("petir.m", module, known) == {"petir.models", "petir.tasks", "petir.study", "petir.cli"}

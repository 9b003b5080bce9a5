"""Writing outputs so that a crash or Ctrl-C never leaves a half-written file or directory that a later step trusts,
and so that petir never deletes or replaces what it did not write.

Files and directories are built beside their target and renamed into place; permissions follow the umask (not the
0600/0700 of ``tempfile``, which would survive the rename and hide outputs from other users). Everything petir
leaves beside a target while writing carries ``.petir-`` in its name (:func:`is_petir_temporary`), so a check for
foreign files skips it and a later run can clean it up. Replacing a directory is the caller's explicit choice, and
even then only a directory whose files the new one all replaces is swapped out.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import filecmp
import glob
import gzip
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from petir.errors import PetirError

#: Marks every name petir gives its temporary files and folders (staging, swap backups, probes, locks).
TEMPORARY_MARK = ".petir-"
#: The record, inside a run directory, of every file petir wrote there: all that ``--overwrite`` may delete. Not a
#: temporary file (it stays), yet not a foreign one either (:func:`foreign_entries`).
MANIFEST = ".written-by-petir.json"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def is_petir_temporary(name: str) -> bool:
    """Whether ``name`` is one petir gives to what it writes beside a target (hidden, with ``.petir-``)."""
    return name.startswith(".") and TEMPORARY_MARK in name


def check_output(path: str | os.PathLike, *, directory: bool, flag: str = "--output") -> Path:
    """Refuse, as one line naming ``flag`` and ``path``, an output petir could not write: one under a regular file,
    in a place it cannot write, or of the wrong kind (a directory where a file is wanted, or a file where a
    directory is). Creates the missing parent directories (what every writer does first)."""
    path = Path(path)
    if path.exists() and path.is_dir() != directory:
        wanted = "a directory" if directory else "a file path (inside a directory)"
        raise PetirError(f"{flag} {path} is {'a directory' if path.is_dir() else 'a file'}; give {wanted}")
    existing = path.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise PetirError(f"{flag} {path}: {existing} is a file, not a directory; pick a path outside it")
    place = path if path.is_dir() else path.parent
    try:
        place.mkdir(parents=True, exist_ok=True)
        os.rmdir(tempfile.mkdtemp(prefix=f"{TEMPORARY_MARK}probe-", dir=place))  # access() says yes to root anywhere
    except OSError as error:
        raise PetirError(f"{flag} {path}: cannot write in {place} ({error.strerror}); pick a writable place") from None
    return path


def _lock_file(target: Path) -> Path:
    """The lock of ``target``, beside it: a directory petir swaps into place by rename would lose one held inside."""
    return target.parent / f".{target.name}{TEMPORARY_MARK}lock"


#: The locks this process holds, by lock file: [descriptor, depth] (a CLI and the trainer it runs both take one).
_held: dict[Path, list[int]] = {}


@contextlib.contextmanager
def output_lock(path: str | os.PathLike, *, directory: bool, flag: str = "--output") -> Iterator[Path]:
    """Hold the advisory lock of the output ``path`` (a file or a directory, checked by :func:`check_output`) for
    the block, so a second writer is refused at once, in one line naming the holder's pid, instead of both writing
    and one silently replacing the other. The lock is an ``flock`` on a hidden file beside ``path``: the OS releases
    it when its holder dies, so a killed run never blocks the next one. Re-entrant within a process."""
    path = check_output(path, directory=directory, flag=flag)

    def refuse(holder: str) -> None:
        raise PetirError(
            f"{flag} {path} is being written by another petir process (pid {holder}); wait for it to end, or "
            f"pick another {flag}"
        )

    with _holding(_lock_file(Path(os.path.realpath(path))), path, flag, on_busy=refuse):
        yield path


@contextlib.contextmanager
def cache_lock(directory: Path) -> Iterator[Path]:
    """Hold the lock of a cache ``directory`` that any number of runs share, waiting while another process holds
    it: two runs started together then build the cached artifact once (the second waits, then reuses it) instead of
    both building it and the slower one failing on the other's files. Re-entrant within a process."""

    def wait(holder: str) -> None:
        print(f"petir: waiting for petir process {holder}, which is filling the cache {directory}", file=sys.stderr)

    directory.parent.mkdir(parents=True, exist_ok=True)
    with _holding(_lock_file(directory), directory, "cache", on_busy=wait):
        yield directory


@contextlib.contextmanager
def _holding(lock: Path, path: Path, flag: str, on_busy: Callable[[str], None]) -> Iterator[None]:
    """Hold ``lock`` for the block; ``on_busy(holder pid)`` runs if another process holds it, and the lock is then
    waited for unless it raises. The lock file is removed on release while still held, so a process waiting on it
    finds it gone and opens the new one."""
    if lock in _held:
        _held[lock][1] += 1
    else:
        _held[lock] = [_take_lock(lock, path, flag, on_busy), 1]
    try:
        yield
    finally:
        _held[lock][1] -= 1
        if not _held[lock][1]:
            descriptor = _held.pop(lock)[0]
            lock.unlink(missing_ok=True)
            os.close(descriptor)


def _take_lock(lock: Path, path: Path, flag: str, on_busy: Callable[[str], None]) -> int:
    while True:
        try:
            descriptor = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as error:
            reason = f"cannot create its lock {lock} ({error.strerror})"
            raise PetirError(f"{flag} {path}: {reason}; pick a writable place") from None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(descriptor, 32, 0).decode(errors="replace").strip() or "unknown"
            try:
                on_busy(holder)
            except BaseException:
                os.close(descriptor)
                raise
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        try:
            current = os.stat(lock).st_ino == os.fstat(descriptor).st_ino
        except FileNotFoundError:
            current = False
        if current:  # else its holder removed it between our open and flock: lock the new one
            os.ftruncate(descriptor, 0)
            os.write(descriptor, f"{os.getpid()}\n".encode())
            return descriptor
        os.close(descriptor)


def same_file(first: str | os.PathLike, second: str | os.PathLike) -> bool:
    """Whether two paths name the same file or directory: the same inode (links, bind mounts) or, where one does
    not exist, the same resolved path."""
    try:
        return os.path.samefile(first, second)
    except OSError:
        return Path(first).resolve() == Path(second).resolve()


def check_not_input(output: Path, inputs: dict[str, Path | None], flag: str = "--output") -> None:
    """Refuse, in one line, an ``output`` that is one of the command's ``inputs`` (``{"--run": path}``): even with
    ``--overwrite``, a command never replaces what it reads."""
    for name, path in inputs.items():
        if path is not None and same_file(output, path):
            raise PetirError(f"{flag} {output} is the {name} this command reads; write the output elsewhere")


def check_new_file(path: str | os.PathLike, overwrite: bool, flag: str = "--output") -> Path:
    """:func:`check_output` for a file, which must not exist yet unless ``overwrite`` (the user's ``--overwrite``)."""
    path = check_output(path, directory=False, flag=flag)
    if path.exists() and not overwrite:
        raise PetirError(f"{flag} {path} exists; pick a new path, or pass --overwrite to replace it")
    return path


def check_new_directory(
    path: str | os.PathLike, overwrite: bool, *, source: Path | None = None, inside_source: bool = False
) -> Path:
    """:func:`check_output` for the directory an export writes (``--output``): it must be new or empty unless
    ``overwrite`` (which still replaces only a directory holding nothing but files the export writes again, see
    :func:`replace_directory`). ``source``, the directory read, is never the output nor inside it; the output may
    lie inside it only if ``inside_source``."""
    path = check_output(path, directory=True)
    if source is not None:
        out, read = path.resolve(), Path(source).resolve()
        if same_file(path, source) or out in read.parents or (read in out.parents and not inside_source):
            where = "inside" if read in out.parents else "the same as, or holds,"
            raise PetirError(f"--output {path} is {where} the model directory {source}; write the export elsewhere")
    found = foreign_entries(path)
    if found and not overwrite:
        raise PetirError(
            f"--output {path} is not empty ({listing(found)}); pick a new "
            "directory, or pass --overwrite to replace an earlier export there"
        )
    return path


def listing(names: list[str], shown: int = 3) -> str:
    """The first ``shown`` names, comma-separated, with "..." if there are more: a directory's content in one line."""
    return ", ".join(names[:shown]) + (", ..." if len(names) > shown else "")


def foreign_entries(directory: Path) -> list[str]:
    """The names in ``directory`` (sorted) other than petir's temporary ones and its :data:`MANIFEST`; empty where it
    does not exist."""
    if not directory.is_dir():
        return []
    return sorted(
        entry.name for entry in directory.iterdir() if not is_petir_temporary(entry.name) and entry.name != MANIFEST
    )


#: A full file system and a spent disk quota: a write that meets one ends in one line (:func:`space_checked`).
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


@contextlib.contextmanager
def space_checked(target: Path, partial: Path | None = None) -> Iterator[None]:
    """Turn a full disk or quota met while writing ``target`` into one line naming the directory and the space
    needed. Written through ``partial`` (its temporary file or staging directory): more than ``partial`` held when
    the write failed, and ``partial`` is removed, so nothing is left half-written and nothing earlier replaced.
    Appended to (``partial`` None: a log, whose torn last record its reader drops): a record more."""
    try:
        yield
    except OSError as error:
        if error.errno not in NO_SPACE:
            raise
        needed = "a record more"
        if partial is not None:
            files = [partial] if partial.is_file() else [item for item in partial.rglob("*") if item.is_file()]
            needed = f"more than {_size(sum(item.stat().st_size for item in files))}"
            remove_output(partial)
        try:
            free = f", {_size(shutil.disk_usage(target.parent).free)} free there"
        except OSError:
            free = ""
        raise PetirError(
            f"{target.parent}: no space left to write {target.name} ({error.strerror}); it needs {needed}{free}: "
            "free some space, or write elsewhere (nothing earlier was replaced)"
        ) from None


def _size(size: int) -> str:
    return f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size} bytes"


def write_lines_atomic(path: str | os.PathLike, lines: Iterable[str]) -> Path:
    """Write ``lines`` (each ending in "\\n") to ``path`` through a temporary file; gzip if the name ends in .gz."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}{TEMPORARY_MARK}{os.getpid()}.tmp")
    gz = path.suffix == ".gz"
    try:
        with space_checked(path, tmp):
            # mtime=0 keeps gzipped outputs byte-identical across runs.
            with (
                open(tmp, "wb") as raw,
                gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) if gz else contextlib.nullcontext(raw) as out,
            ):
                for line in lines:
                    out.write(line.encode("utf-8"))
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: str | os.PathLike, value: Any) -> Path:
    """``value`` as indented JSON at ``path``, written whole or not at all (a reader never sees half a file)."""
    return write_lines_atomic(path, [json.dumps(value, indent=2) + "\n"])


def write_file_unless_different(path: Path, write: Callable[[Path], object], overwrite: bool) -> None:
    """Write ``path`` with ``write`` (called with the path to write), refusing to replace an existing ``path`` that
    holds other content unless ``overwrite``; an identical file is left as it is."""
    fresh = path.with_name(f".{path.name}{TEMPORARY_MARK}{os.getpid()}.new")
    try:
        write(fresh)
        if path.exists() and filecmp.cmp(fresh, path, shallow=False):
            return
        if path.exists() and not overwrite:
            raise PetirError(
                f"{path} exists with other content; pass --overwrite to replace it, or pick another --output"
            )
        os.replace(fresh, path)
    finally:
        fresh.unlink(missing_ok=True)


def _backup(target: Path) -> Path:
    """Where the old copy of ``target`` waits while :func:`replace_directory` swaps in the new one."""
    return target.with_name(f".{target.name}{TEMPORARY_MARK}old")


def _staging_prefix(target: Path) -> str:
    return f".{target.name}{TEMPORARY_MARK}staging-"


def recover_directory(target: str | os.PathLike) -> Path:
    """Finish a swap of ``target`` that a kill interrupted: between the two renames of :func:`replace_directory`
    the old copy is the only complete one, so it is put back; after them, the leftover old copy is removed."""
    target = Path(target)
    backup = _backup(target)
    if not backup.exists():
        return target
    try:
        if target.exists():
            shutil.rmtree(backup)
        else:
            os.replace(backup, target)
    except OSError as error:
        raise PetirError(
            f"{target} was being replaced when a run stopped, and its previous copy {backup} cannot be moved back "
            f"({error.strerror}); rename it to {target.name}"
        ) from None
    return target


def _remove_stale_staging(target: Path) -> None:
    """Remove staging folders of ``target`` left by killed processes (their pid is in the name; a live writer's
    folder, or one whose pid cannot be told dead, is kept)."""
    prefix = _staging_prefix(target)
    for path in target.parent.glob(f"{glob.escape(prefix)}*"):
        pid = path.name[len(prefix) :].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


@contextlib.contextmanager
def staged_directory(target: str | os.PathLike, *, replace: bool = False) -> Iterator[Path]:
    """Yield an empty directory beside ``target``; if the block succeeds it becomes ``target``, if it fails it is
    removed and ``target`` is left as it was. An existing ``target`` is replaced only if ``replace`` (see
    :func:`replace_directory`), else refused before the block runs."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    recover_directory(target)
    if target.exists() and not replace:
        raise _exists(target)
    _remove_stale_staging(target)
    staging = Path(tempfile.mkdtemp(prefix=f"{_staging_prefix(target)}{os.getpid()}-", dir=target.parent))
    os.chmod(staging, 0o777 & ~_umask())
    try:
        with space_checked(target, staging):
            yield staging
            replace_directory(staging, target, replace=replace)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def replace_directory(source: Path, target: Path, *, replace: bool = False) -> None:
    """Move ``source`` to ``target`` so that ``target`` is at all times either the old or the new directory (a kill
    between the two renames leaves the old one beside it, which :func:`recover_directory` puts back). An existing
    ``target`` is replaced only if ``replace``, and only if every file in it has a namesake in ``source``: files
    petir would not write again are never deleted."""
    if not target.exists():
        os.replace(source, target)
        return
    if not replace:
        raise _exists(target)
    kept = _relative_files(target) - _relative_files(source)
    if kept:
        raise PetirError(
            f"{target} holds {len(kept)} file(s) the new output does not replace (e.g. {sorted(kept)[0]}); petir "
            "replaces only what it writes: move them away or pick another path"
        )
    backup = _backup(target)
    shutil.rmtree(backup, ignore_errors=True)
    os.replace(target, backup)
    os.replace(source, target)
    shutil.rmtree(backup, ignore_errors=True)


def _exists(target: Path) -> PetirError:
    return PetirError(f"{target} already exists; petir does not replace it: pick another path or remove it")


def _relative_files(directory: Path) -> set[str]:
    return {str(path.relative_to(directory)) for path in directory.rglob("*") if not path.is_dir()}


def remove_output(path: Path) -> None:
    """Delete an output petir wrote at ``path`` (a file or directory), with the old copy an interrupted swap of it
    may have left: ``--overwrite``'s start over."""
    for item in (path, _backup(path)):
        if item.is_dir() and not item.is_symlink():
            shutil.rmtree(item)
        else:
            item.unlink(missing_ok=True)


def read_manifest(directory: Path) -> set[str]:
    """The files (relative paths) ``directory``'s :data:`MANIFEST` records petir writing there; empty without one."""
    path = Path(directory) / MANIFEST
    try:
        names = json.loads(path.read_text())
    except FileNotFoundError:
        return set()
    except (OSError, ValueError):
        names = None
    if not isinstance(names, list) or not all(isinstance(name, str) and _inside(name) for name in names):
        raise PetirError(f"{path}: damaged record of the files petir wrote; remove it, and what petir wrote, by hand")
    return set(names)


def _inside(name: str) -> bool:
    return bool(name) and not Path(name).is_absolute() and ".." not in Path(name).parts


def record_written(directory: Path, *paths: Path) -> None:
    """Add ``paths`` (inside ``directory``) to its :data:`MANIFEST`: a file, recorded before petir writes it (a kill
    mid-write leaves nothing unrecorded), or a folder petir has just moved into place whole, recorded file by file."""
    names = read_manifest(directory)
    for path in paths:
        found = [item for item in path.rglob("*") if not item.is_dir()] if path.is_dir() else [path]
        names.update(str(item.relative_to(directory)) for item in found)
    write_json_atomic(directory / MANIFEST, sorted(names))


def unrecorded(directory: Path, folder: str) -> list[str]:
    """The files in ``directory/folder`` (relative to ``directory``, sorted) that its :data:`MANIFEST` does not
    record: files petir did not write."""
    recorded, root = read_manifest(directory), Path(directory) / folder
    found = (str(item.relative_to(directory)) for item in root.rglob("*") if not item.is_dir()) if root.is_dir() else ()
    return sorted(name for name in found if name not in recorded and not is_petir_temporary(Path(name).name))


def remove_written(directory: Path) -> None:
    """``--overwrite``'s start over: delete the files that the manifests in ``directory`` (its own, and those of
    runs inside it: a learning-rate ladder's rungs) record, the old copies an interrupted swap left beside them, and
    the folders that leaves empty; nothing else."""
    for manifest in sorted(Path(directory).rglob(MANIFEST), key=lambda path: -len(path.parts)):
        root = manifest.parent
        names = read_manifest(root)
        for name in names:
            remove_output(root / name)
        for top in {Path(name).parts[0] for name in names}:
            remove_output(_backup(root / top))
        manifest.unlink()
        for folder in sorted({(root / name).parent for name in names}, key=lambda path: -len(path.parts)):
            while folder != Path(directory) and folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
                folder = folder.parent

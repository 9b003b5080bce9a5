"""Big line files read in place: MS MARCO-sized collections, queries and training triples without holding them.

A :class:`LineFile` gives positional access to a file's non-blank lines through an array of byte offsets, built once
in bounded memory and cached (``$PETIR_CACHE/offsets``, keyed by the file's path, size and modification time), then
read two offsets at a time with ``pread``: every process of a ``torchrun`` job shares the operating system's page
cache instead of holding its own copy. (Memory-mapping the offsets would be simpler, but the kernel maps pages
around each one read, so random access maps the whole array into the resident set: 80 MB per 10 M lines,
measured.) :class:`KeyedLines` adds lookup by id (a corpus' docids, a queries file's qids) through an SQLite index
built once beside it. A gzipped file is decompressed once into the cache, since a gzip stream cannot be read by
offset.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np

from petir.data import (
    GZIP_ERRORS,
    Document,
    PathLike,
    _decode,
    _is_jsonl,
    _lines,
    corpus_path,
    corpus_record,
    query_record,
    require_file,
)
from petir.errors import DataError

V = TypeVar("V")
_BLOCK = 1 << 24  # bytes read at a time while indexing: memory stays bounded whatever the file's size
_ROWS = 100_000  # ids written to the SQLite index per transaction batch


def _cache_dir() -> Path:
    from petir.datasets import cache_root, writable_cache

    return writable_cache(cache_root() / "offsets")


def _key(path: Path, kind: str) -> str:
    stat = path.stat()
    fingerprint = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{kind}"
    return hashlib.sha256(fingerprint.encode()).hexdigest()[:24]


def _plain(path: Path) -> Path:
    """``path``, or for a ``.gz`` file its decompressed copy in the cache (made once, streamed)."""
    if path.suffix != ".gz":
        return path
    target = _cache_dir() / f"{_key(path, 'gunzip')}-{path.stem}"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            with gzip.open(path, "rb") as source, open(tmp, "wb") as out:
                shutil.copyfileobj(source, out, _BLOCK)
        except (OSError, *GZIP_ERRORS) as e:
            tmp.unlink(missing_ok=True)
            raise DataError(f"{path}: cannot decompress the file ({type(e).__name__}: {e})") from None
        os.replace(tmp, target)
    return target


def _line_starts(path: Path) -> Iterator[np.ndarray]:
    """Byte offsets of the non-blank lines' starts, block by block (a line of only CR or nothing is blank)."""
    position = 0
    start = 0  # the start of the line being read
    previous = b""  # the byte before the current block
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            data = np.frombuffer(block, dtype=np.uint8)
            ends = np.flatnonzero(data == 10) + position  # newline offsets
            starts = np.concatenate([[start], ends[:-1] + 1]) if len(ends) else np.empty(0, dtype=np.int64)
            lengths = ends - starts
            before = np.array([_byte(data, previous, e - position - 1) for e in ends[lengths == 1]], dtype=np.uint8)
            blank = lengths == 0
            blank[np.flatnonzero(lengths == 1)[before == 13]] = True
            yield starts[~blank].astype(np.uint64)
            if len(ends):
                start = int(ends[-1]) + 1
            position += len(block)
            previous = block[-1:]
    if start < position:  # a last line without a newline
        with open(path, "rb") as f:
            f.seek(start)
            if f.read().strip(b"\r"):
                yield np.array([start], dtype=np.uint64)


def _byte(data: np.ndarray, previous: bytes, index: int) -> int:
    return int(data[index]) if index >= 0 else previous[0]


class LineFile(Sequence[str]):
    """The non-blank lines of a text file by position (0-based), read from disk on demand."""

    def __init__(self, path: PathLike, what: str = "data", check: Callable[[str, str], object] | None = None):
        """``check(line, "file:line")`` runs over every line once, when the index is built (a file that fails it
        gets no index), so a malformed line is reported before training rather than when it is drawn."""
        self.source = require_file(path)
        self.what = what
        self.check = check
        self.path = _plain(self.source)
        index = _cache_dir() / f"{_key(self.path, 'lines-' + what)}.u64"
        if not index.is_file():
            index.parent.mkdir(parents=True, exist_ok=True)
            tmp = index.with_name(f".{index.name}.{os.getpid()}.tmp")
            try:
                with open(tmp, "wb") as out:
                    for starts in _line_starts(self.path):
                        out.write(starts.tobytes())
                    out.write(np.array([self.path.stat().st_size], dtype=np.uint64).tobytes())
                for lineno, line in _lines(self.path) if check else ():
                    check(line, f"{self.source}:{lineno}")
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            os.replace(tmp, index)
        self._index = os.open(index, os.O_RDONLY)
        self._length = os.fstat(self._index).st_size // 8 - 1
        if len(self) == 0:
            raise DataError(f"{self.source}: empty {what} file")
        self._file = os.open(self.path, os.O_RDONLY)

    def __del__(self) -> None:
        for fd in (getattr(self, "_index", None), getattr(self, "_file", None)):
            if fd is not None:
                os.close(fd)

    def __len__(self) -> int:
        return self._length

    def offset(self, position: int) -> int:
        """Byte offset of a line's start (``len(self)`` gives the end of the last line)."""
        return int(np.frombuffer(os.pread(self._index, 8, 8 * position), dtype=np.uint64)[0])

    def __getitem__(self, position: int) -> str:  # type: ignore[override]
        if not 0 <= position < len(self):
            raise IndexError(position)
        start, end = np.frombuffer(os.pread(self._index, 16, 8 * position), dtype=np.uint64).tolist()
        raw = os.pread(self._file, end - start, start)
        try:
            return raw.decode("utf-8-sig" if position == 0 else "utf-8").rstrip("\r\n")
        except UnicodeDecodeError as e:
            raise DataError(f"{self.where(position)}: cannot read the line ({e})") from None

    def where(self, position: int) -> str:
        """``file:line`` of a position for messages (counts newlines, so only when something is wrong)."""
        start = self.offset(position)
        with open(self.path, "rb") as f:
            lineno = f.read(start).count(b"\n") + 1
        return f"{self.source}:{lineno}"

    def __getstate__(self) -> dict:  # an open file cannot be pickled (DataLoader workers, spawn)
        return {"source": self.source, "what": self.what, "check": self.check}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["source"], state["what"], state["check"])


class KeyedLines(Mapping[str, V], Generic[V]):
    """Records of a line file looked up by id: ``parse(record, where) -> (id, value)`` reads one line, decoded as
    JSON or TSV as the file's name and first line say. Every line is parsed once when the id index is built, so a
    malformed line or a duplicate id is reported (``file:line``) before training starts, as the readers in
    :mod:`petir.data` do."""

    def __init__(self, path: PathLike, what: str, parse: Callable[[str | dict, str], tuple[str, V]]):
        self.lines = LineFile(path, what)
        self.what = what
        self.parse = parse
        self.jsonl = _is_jsonl(self.lines.source, self.lines[0])
        index = _cache_dir() / f"{_key(self.lines.path, 'ids-' + what)}.sqlite"
        if not index.is_file():
            self._build(index)
        self._db = sqlite3.connect(f"file:{index}?mode=ro", uri=True, check_same_thread=False)

    def _record(self, position: int) -> tuple[str, V]:
        # Messages name file:line; the line number is counted only if something is wrong.
        placeholder = f"{self.lines.source}:#{position}"
        try:
            record = _decode(self.lines.source, f"#{position}", self.lines[position], self.jsonl, self.what)
            return self.parse(record, placeholder)
        except DataError as e:
            raise DataError(str(e).replace(placeholder, self.lines.where(position))) from None

    def _build(self, index: Path) -> None:
        tmp = index.with_name(f".{index.name}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        db = sqlite3.connect(tmp)
        try:
            db.execute("CREATE TABLE ids (id TEXT PRIMARY KEY, position INTEGER NOT NULL) WITHOUT ROWID")
            for first in range(0, len(self.lines), _ROWS):
                rows = [(self._record(p)[0], p) for p in range(first, min(first + _ROWS, len(self.lines)))]
                try:
                    db.executemany("INSERT INTO ids VALUES (?, ?)", rows)
                except sqlite3.IntegrityError:
                    raise DataError(self._duplicate(rows, db)) from None
            db.commit()
            db.close()
            os.replace(tmp, index)
        except BaseException:
            db.close()
            tmp.unlink(missing_ok=True)
            raise

    def _duplicate(self, rows: list[tuple[str, int]], db: sqlite3.Connection) -> str:
        seen: set[str] = set()
        for key, position in rows:
            stored = db.execute("SELECT position FROM ids WHERE id = ?", (key,)).fetchone()
            if key in seen or (stored and stored[0] != position):
                return f"{self.lines.where(position)}: duplicate {self.what} id {key!r}"
            seen.add(key)
        return f"{self.lines.source}: duplicate {self.what} ids"

    def position(self, key: str) -> int | None:
        row = self._db.execute("SELECT position FROM ids WHERE id = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def __getitem__(self, key: str) -> V:
        position = self.position(key)
        if position is None:
            raise KeyError(key)
        return self._record(position)[1]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.position(key) is not None

    def __len__(self) -> int:
        return len(self.lines)

    def __iter__(self) -> Iterator[str]:
        return (self._record(position)[0] for position in range(len(self.lines)))

    @property
    def ids(self) -> Sequence[str]:
        """The ids in file order, read on demand (random negatives are drawn by position)."""
        return _Ids(self)

    def __getstate__(self) -> dict:
        return {"path": self.lines.source, "what": self.what, "parse": self.parse}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"], state["what"], state["parse"])


class _Ids(Sequence[str]):
    def __init__(self, keyed: KeyedLines):
        self.keyed = keyed

    def __len__(self) -> int:
        return len(self.keyed)

    def __getitem__(self, position: int) -> str:  # type: ignore[override]
        return self.keyed._record(position)[0]


def ids_by_position(mapping: Mapping[str, object]) -> Sequence[str]:
    """A mapping's ids in order, indexable: read on demand for :class:`KeyedLines`, a list otherwise."""
    return mapping.ids if isinstance(mapping, KeyedLines) else list(mapping)


def open_corpus(path: PathLike) -> KeyedLines[Document]:
    """A corpus file (any format :func:`petir.data.read_corpus` reads) as a docid -> Document mapping on disk."""
    return KeyedLines(corpus_path(path), "corpus", _corpus_entry)


def open_queries(path: PathLike) -> KeyedLines[str]:
    """A queries file (any format :func:`petir.data.read_queries` reads) as a qid -> text mapping on disk."""
    return KeyedLines(path, "queries", query_record)


def _corpus_entry(record: str | dict, where: str) -> tuple[str, Document]:
    document = corpus_record(record, where)
    return document.id, document

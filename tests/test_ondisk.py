"""Big files read in place: positional line access, id lookup, errors and the cache."""

from __future__ import annotations

import gzip
import json

import pytest

from petir import ondisk
from petir.data import Document, read_corpus
from petir.errors import DataError
from petir.ondisk import LineFile, ids_by_position, open_corpus, open_queries


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PETIR_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(ondisk, "_BLOCK", 7)  # blocks smaller than a line: every boundary case is crossed


def test_line_file_skips_blank_lines_and_strips_line_endings(tmp_path):
    path = tmp_path / "lines.txt"
    path.write_bytes("\ufeffalpha\r\n\r\n\nbeta gamma delta\n\nlast é".encode())
    lines = LineFile(path)
    assert list(lines) == ["alpha", "beta gamma delta", "last é"]
    assert lines.where(2) == f"{path}:6"
    with pytest.raises(IndexError):
        lines[3]


def test_gzipped_file_is_decompressed_once_and_index_reused(tmp_path):
    path = tmp_path / "lines.txt.gz"
    with gzip.open(path, "wt") as f:
        f.write("one\ntwo\n")
    assert list(LineFile(path)) == ["one", "two"]
    cached = sorted(p.name for p in (tmp_path / "cache" / "offsets").iterdir())
    assert (
        list(LineFile(path)) == ["one", "two"]
        and sorted(p.name for p in (tmp_path / "cache" / "offsets").iterdir()) == cached
    )
    path.write_bytes(b"not gzip")
    with pytest.raises(DataError, match="cannot decompress"):
        LineFile(path)


def test_changed_file_gets_a_new_index(tmp_path):
    path = tmp_path / "lines.txt"
    path.write_text("a\nb\n")
    assert len(LineFile(path)) == 2
    path.write_text("a\nb\nc\n")
    assert list(LineFile(path)) == ["a", "b", "c"]


@pytest.mark.parametrize(
    "name, text",
    [
        (
            "corpus.jsonl",
            "".join(json.dumps({"_id": f"d{i}", "title": "t", "text": f"x {i}"}) + "\n" for i in range(5)),
        ),
        ("collection.tsv", "".join(f"d{i}\tt x {i}\n" for i in range(5))),
    ],
)
def test_corpus_on_disk_matches_the_reader(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    corpus = open_corpus(path)
    assert dict(corpus.items()) == read_corpus(path)
    assert corpus["d3"].contents == read_corpus(path)["d3"].contents and "d9" not in corpus and corpus.get("d9") is None
    assert list(ids_by_position(corpus)) == [f"d{i}" for i in range(5)]


def test_queries_on_disk_and_their_errors(tmp_path):
    path = tmp_path / "queries.tsv"
    path.write_text("1\tfirst  query\n2\tsecond\n")
    assert dict(open_queries(path).items()) == {"1": "first query", "2": "second"}
    path.write_text("1\tfirst\n\n1\tagain\n")
    with pytest.raises(DataError, match=r"queries\.tsv:3: duplicate queries id '1'"):
        open_queries(path)
    path.write_text("1\tfirst\n\nno tab here\n")
    with pytest.raises(DataError, match=r"queries\.tsv:3: topics line must be 'qid<TAB>text'"):
        open_queries(path)


def test_ids_by_position_of_a_dict():
    assert ids_by_position({"b": Document("b", "", ""), "a": Document("a", "", "")}) == ["b", "a"]

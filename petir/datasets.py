"""Datasets as directories: finding a BEIR dataset (a path, ``$PETIR_DATA``, the project's shared data, petir's
cache, else a download), loading one split of it, and where petir caches what it derives.

File formats are :mod:`petir.data`; this module only knows where datasets live and how a BEIR directory is laid out.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from petir.data import Corpus, PathLike, Qrels, Queries, check_qrels, read_corpus, read_qrels, read_queries
from petir.errors import DataError
from petir.files import check_output


@dataclass
class Dataset:
    corpus: Corpus
    queries: Queries  # only the queries of the split, in queries-file order
    qrels: Qrels  # the requested split; only queries with a judgment rel > 0 count as "judged" in evaluation
    name: str


def load_beir(directory: PathLike, split: str = "test") -> Dataset:
    """Load a BEIR dataset directory (corpus.jsonl(.gz), queries.jsonl, qrels/{split}.tsv), keeping only the queries
    that appear in that split's qrels, and check that qrels, corpus and queries agree."""
    directory = Path(directory)
    qrels_path = directory / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        splits = sorted(p.stem for p in (directory / "qrels").glob("*.tsv"))
        raise DataError(
            f"{qrels_path}: no {split!r} split in {directory}; splits present: {', '.join(splits) or 'none'}"
        )
    corpus = read_corpus(directory)
    all_queries = read_queries(directory / "queries.jsonl")
    qrels = read_qrels(qrels_path)
    check_qrels(qrels, corpus, all_queries, str(qrels_path))
    queries = {qid: text for qid, text in all_queries.items() if qid in qrels}
    return Dataset(corpus=corpus, queries=queries, qrels=qrels, name=directory.name)


BEIR_URL = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/{name}.zip"
#: The datasets BEIR_URL serves (BEIR's public ones): any other name is a typo or a missing directory, not a download.
BEIR_DATASETS = (
    "msmarco",
    "trec-covid",
    "nfcorpus",
    "nq",
    "hotpotqa",
    "fiqa",
    "arguana",
    "webis-touche2020",
    "cqadupstack",
    "quora",
    "dbpedia-entity",
    "scidocs",
    "fever",
    "climate-fever",
    "scifact",
)


def cache_root() -> Path:
    """Where petir keeps downloads and derived artifacts: ``$PETIR_CACHE``, else ``~/.cache/petir``."""
    return Path(os.environ.get("PETIR_CACHE", Path.home() / ".cache" / "petir"))


def writable_cache(path: Path) -> Path:
    """``path``, a place in :func:`cache_root` that petir is about to write, checked first: a cache under a regular
    file or on a read-only file system is one line naming PETIR_CACHE (:func:`petir.files.check_output`)."""
    return check_output(path, directory=True, flag="PETIR_CACHE: the cache directory")


#: The project's shared datasets beside a checkout (``<repo>/../shared/data``), found wherever the command runs from.
REPO_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def resolve_beir(spec: PathLike) -> Path:
    """A BEIR dataset directory for ``spec``: an existing directory as given; a dataset name (``scifact``) found in
    ``$PETIR_DATA``, ``../shared/data`` or petir's cache; else the official BEIR zip downloaded into the cache."""
    path = Path(spec)
    if path.is_dir():
        return path
    if path.name != str(spec):
        raise DataError(f"{spec}: no such dataset directory")
    roots = [Path(os.environ["PETIR_DATA"])] if "PETIR_DATA" in os.environ else []
    roots += [REPO_DATA, cache_root() / "datasets"]
    for root in roots:
        if (root / path.name / "queries.jsonl").exists():
            return root / path.name
    if path.name not in BEIR_DATASETS:
        raise DataError(
            f"{spec}: no such dataset directory, and not a BEIR dataset name to download ({', '.join(BEIR_DATASETS)})"
        )
    return _download_beir(path.name, writable_cache(cache_root() / "datasets"))


def _download_beir(name: str, root: Path) -> Path:
    import shutil
    import tempfile
    import urllib.error
    import urllib.request
    import zipfile

    url = BEIR_URL.format(name=name)
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as staging:
        archive = Path(staging) / f"{name}.zip"
        print(f"petir: downloading {url}")
        try:
            urllib.request.urlretrieve(url, archive)
        except (urllib.error.URLError, OSError) as error:
            raise DataError(
                f"cannot download BEIR dataset {name!r} from {url} ({error}); pass the path of a local copy instead"
            ) from None
        try:
            with zipfile.ZipFile(archive) as bundle:
                bundle.extractall(staging)
        except (zipfile.BadZipFile, OSError) as error:
            raise DataError(f"{url}: the download is not a readable zip ({error}); try again later") from None
        if not (Path(staging) / name / "queries.jsonl").exists():
            raise DataError(f"{url} did not contain {name}/queries.jsonl")
        shutil.move(str(Path(staging) / name), root / name)
    return root / name

"""What a task is to petir: one :class:`Task` entry, read by every command, so that none of them asks which task a
model is (as :class:`petir.pet.PetMethod` is for a PET method)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from petir.data import Document, Pools, Qrels

if TYPE_CHECKING:
    from petir.models import PetModel
    from petir.onnx import OnnxModel
    from petir.reproduce import Study, StudySettings

#: Rows of a study's results table, one per run (method, seed, metrics...).
Rows = list[dict[str, Any]]
#: Each first stage's run of the test queries, in its run directory of the study.
TEST_RUN_FILE = "test.run.trec"
#: A command of the study: ``python -m`` arguments, with ``"OUTPUT"`` where it writes its output.
Command = list[object]


class StudyStage:
    """A task's stage of the study (``python -m petir.reproduce STAGE``, and ``benchmarks/gpu_study.py``): what its
    training runs add to ``petir.train``, what the stage runs and reports. The runner (:class:`petir.reproduce.Study`)
    and the tables are shared; everything a stage does differently is here, so the runner never asks which stage it
    runs. The stage's directory in the study is the task's name."""

    #: A dataclass of the stage's own flags (each field a :func:`petir.cli.option`), made from the command line into
    #: ``StudySettings.stages[task name]``.
    options: type

    def train_flags(self, options: Any) -> dict[str, object]:
        """The ``petir.train`` flags this stage's runs add, from its ``options`` (batch size, lengths, negatives)."""
        raise NotImplementedError

    def run(self, study: Study, variants: Sequence[str], seeds: Sequence[int], seed_variants: Sequence[str]) -> Rows:
        """Train every variant (with its seeds: :func:`petir.reproduce.seeds_of`), test it, and return the rows of the
        stage's results table (baselines first)."""
        raise NotImplementedError

    def first_stages(self, study: Study, seed: int) -> dict[str, Path]:
        """Test runs this stage offers a later stage to re-rank, by name (for ``seed``'s trained runs); none here."""
        return {}

    def report(self, study: Study, rows: Rows) -> None:
        """Write what this stage reports beyond its results table and convergence plot; nothing here."""

    def gpu_inputs(self, root: Path) -> tuple[Path, ...]:
        """Files of the study directory ``root`` a GPU machine needs carried to run this stage's GPU steps."""
        return ()

    def gpu_steps(
        self, settings: StudySettings, run_dir: Path, corpus: Path, device: str
    ) -> list[tuple[Command, Path]]:
        """What a run of this stage does on a GPU machine after training, as (command, output) pairs; none here."""
        return []


@dataclasses.dataclass(frozen=True)
class Task:
    """One task: its model, its ONNX twin, how its dev check and its saved model are made, and what it can do.

    - ``model``: its :class:`~petir.models.PetModel` subclass (options dataclass, loss, ranking, inference and
      :class:`~petir.batching.GraphOutput`), whose ``task`` is the task's :attr:`name`; ``onnx``: its
      :class:`~petir.onnx.OnnxModel` twin, with the same ``encode`` or ``score`` and ``pair_scorer``;
    - ``kind``: what its model is ("bi-encoder": the model card, ``--task`` help); ``noun``: what a trained one is
      called in messages ("retriever");
    - ``dev_pools(corpus, first_stage, dev_qrels, data_options)``: the candidates each dev query ranks, from its
      BM25 top ``--dev-depth`` (``first_stage``); ``data_options``: a dataclass of the flags only this task's data
      reads (each field a :func:`petir.cli.option`), or None;
    - ``usage(model)``: the model card's "Use" section (markdown): commands that run as written on a CPU machine,
      placeholders in capitals (``THIS_DIR``, ``TOPICS``), the model's own dimension and lengths filled in;
    - ``pipeline_tag``: its Hugging Face pipeline tag (the model card's front matter: what hub tooling lists it as);
    - ``min_negatives``: the fewest hard negatives per query its loss can learn from;
    - ``export(model, directory, source)``: writes what makes a merged backbone in ``directory`` a standard model of
      this task (``python -m petir.export``); None where there is none, ``no_export`` saying why;
    - ``pyserini``: its ``encode`` gives one vector per text that Pyserini's Faiss encode and search take (the
      plug-in's encoders);
    - ``impact``: its model gives masked-LM ``logits`` and integer ``term_weights`` per text that Pyserini's Lucene
      impact indexes take (the plug-in's ``AutoModelForMaskedLM`` view and impact query encoder);
    - ``study``: its stage of ``python -m petir.reproduce`` (a :class:`StudyStage`), or None.
    """

    model: type[PetModel]
    onnx: type[OnnxModel]
    kind: str
    noun: str
    dev_pools: Callable[[Mapping[str, Document], Pools, Qrels, Any], Pools]
    usage: Callable[[PetModel], str]
    pipeline_tag: str
    data_options: type | None = None
    min_negatives: int = 0
    export: Callable[[PetModel, Path, Path], None] | None = None
    no_export: str = ""
    pyserini: bool = False
    impact: bool = False
    study: StudyStage | None = None

    @property
    def name(self) -> str:
        """The one word for the task in ``--task``, config.json, the study's stage directories and the docs."""
        return self.model.task

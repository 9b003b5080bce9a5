"""What a task is to petir: one :class:`Task` entry, read by every command, so that none of them asks which task a
model is (as :class:`petir.pet.PetMethod` is for a PET method)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from petir.data import Document, Pools, Qrels

if TYPE_CHECKING:
    from petir.models import PetModel
    from petir.onnx_runtime import OnnxModel


@dataclasses.dataclass(frozen=True)
class Task:
    """One task: its model, its ONNX twin, how its dev check and its saved model are made, and what it can do.

    - ``model``: its :class:`~petir.models.PetModel` subclass (options dataclass, loss, ranking, inference and
      :class:`~petir.batching.GraphOutput`), whose ``task`` is the task's :attr:`name`; ``onnx``: its
      :class:`~petir.onnx_runtime.OnnxModel` twin, with the same ``encode`` or ``score`` and ``pair_scorer``;
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

    def __post_init__(self) -> None:
        # The model knows its entry, so that its card reads the task's kind, usage and export without a registry.
        self.model.task_record = self

    @property
    def name(self) -> str:
        """The one word for the task in ``--task``, config.json, the study's stage directories and the docs."""
        return self.model.task

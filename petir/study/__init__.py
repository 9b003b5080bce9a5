"""The study (``python -m petir.reproduce``): the stages, one per task that has one, registered here by task name as
:mod:`petir.tasks` registers tasks. The study sits above the library: it imports the tasks, never the reverse.

>>> from petir.study import STAGES
>>> list(STAGES)        # the tasks with a stage, in the order ``python -m petir.reproduce all`` runs them
['retrieval', 'rerank']
"""

from __future__ import annotations

import dataclasses
from typing import Any

from petir.errors import PetirError
from petir.sampling import SamplingOptions
from petir.study import rerank, retrieval
from petir.study.runner import StudyStage
from petir.tasks import get_task

#: The study's stages by task name, in the order ``petir.reproduce all`` runs them (re-ranking re-ranks what
#: retrieval found).
STAGES: dict[str, StudyStage] = {}
for _stage in (retrieval.RetrievalStage(), rerank.RerankStage()):
    if _stage.task in STAGES:
        raise RuntimeError(f"two stages of the study train task {_stage.task!r}")
    STAGES[_stage.task] = _stage


def get_stage(task: str) -> StudyStage:
    """The study's stage of ``task``; a task without one is one line naming those there are."""
    if task not in STAGES:
        raise PetirError(f"the study has no stage for task {task!r}; it has {', '.join(STAGES)}")
    return STAGES[task]


def stage_training(task: str) -> tuple[dict[str, Any], int, int]:
    """How the study trains ``task`` by default: (model options, queries per batch, hard negatives per query), from
    its stage's ``petir.train`` flags (petir.train's defaults where the stage sets none); a task without a stage is
    one line."""
    stage = get_stage(task)
    flags = {**dataclasses.asdict(SamplingOptions()), **stage.train_flags(stage.options())}
    names = [option.name for option in dataclasses.fields(get_task(task).model.options_class)]
    return {name: flags[name] for name in names if name in flags}, flags["batch_size"], flags["negatives"]


__all__ = ["STAGES", "StudyStage", "get_stage", "stage_training"]

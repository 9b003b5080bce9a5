"""The task registry: one module per task, one line here per task (as :mod:`petir.pet` is for PET methods).

>>> from petir.tasks import get_task
>>> task = get_task("retrieval")
>>> model = task.model("sentence-transformers/all-MiniLM-L6-v2", "iaa")    # a BiEncoder

Every command reads a task from here (its model, ONNX twin, dev check, card, export, flags), so none of them
switches on a task's name or class: a task added here works with every PET method, and every command works with it.
The study's stages are registered apart, above the library (:mod:`petir.study`).
"""

from __future__ import annotations

from petir.errors import PetirError
from petir.tasks import rerank, retrieval, sparse
from petir.tasks.base import Task

TASKS: dict[str, Task] = {}
for _task in (retrieval, rerank, sparse):
    if _task.TASK.name in TASKS:
        raise RuntimeError(f"two tasks are named {_task.TASK.name!r}")
    TASKS[_task.TASK.name] = _task.TASK

#: The task ``--task`` trains when none is named.
DEFAULT_TASK = retrieval.NAME
#: The task a plain backbone directory serves as where a model is asked for (``petir.rerank --model BACKBONE``): its
#: untrained model, the backbone's mean-pooled cosine, is the baseline a trained re-ranker must beat.
PLAIN_BACKBONE_TASK = retrieval.NAME
#: Task names of earlier petir versions, still found in saved config.json files.
RENAMED = {"bi-encoder": retrieval.NAME, "cross-encoder": rerank.NAME}


def get_task(name: str) -> Task:
    """The registered task ``name``; an unknown one is one line naming those there are."""
    if name not in TASKS:
        raise PetirError(f"unknown task {name!r}; petir has {', '.join(TASKS)}")
    return TASKS[name]


def saved_task_name(name: str) -> str:
    """The current name of a task recorded in a saved model (which may predate a rename)."""
    return RENAMED.get(name, name)


__all__ = ["DEFAULT_TASK", "PLAIN_BACKBONE_TASK", "RENAMED", "TASKS", "Task", "get_task", "saved_task_name"]

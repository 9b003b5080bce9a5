"""The task registry: one module per task, one line here per task (as :mod:`petir.pet` is for PET methods).

>>> from petir.tasks import get_task
>>> task = get_task("retrieval")
>>> model = task.model("sentence-transformers/all-MiniLM-L6-v2", "iaa")    # a BiEncoder
>>> model = load("my-model")      # a saved model of any task, its class found by the task its config.json names

Every command reads a task from here (its model, ONNX twin, dev check, card, export, flags), so none of them
switches on a task's name or class: a task added here works with every PET method, and every command works with it.
The study's stages are registered apart, above the library (:mod:`petir.study`).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from petir.backbone import DEFAULT_BACKBONE, load_backbone
from petir.errors import PetirError
from petir.models import CONFIG_FILE, PetModel, read_saved_config
from petir.onnx_runtime import OnnxModel
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


# -- loading a saved model: the one place a saved task name picks a class ---------------------------------------
def read_config(directory: str | os.PathLike) -> dict[str, Any]:
    """A saved model's ``config.json``, read and checked once: what every task's has
    (:func:`petir.models.read_saved_config`), the task and its options under their current names, and the task's own
    values (PET config, options: :meth:`petir.models.PetModel.check_config`). Every problem is one line naming the
    file."""
    config = read_saved_config(directory)
    path = Path(directory) / CONFIG_FILE
    config["task"] = saved_task_name(config["task"])
    try:
        task = get_task(config["task"])
    except PetirError as error:
        raise PetirError(f"{path}: {error}") from None
    task.model.check_config(config, path)
    return {**config, **task.model.saved_options(config)}  # options under their current names, for every reader


def load(
    directory: str | os.PathLike,
    backbone: str | None = None,
    device: str | torch.device = "cpu",
    *,
    loaded: tuple[nn.Module, Any] | None = None,
    config: dict[str, Any] | None = None,
) -> PetModel:
    """The saved model in ``directory``, of whichever task it is (:meth:`petir.models.PetModel.load`: ``backbone``
    overrides where the backbone weights are read from, ``loaded`` gives them already in memory); ``config``: its
    config.json as :func:`read_config` returned it, where the caller read it first."""
    config = read_config(directory) if config is None else config
    return get_task(config["task"]).model.load(directory, backbone, device, loaded=loaded, config=config)


def load_onnx(
    directory: str | os.PathLike,
    onnx_dir: str | os.PathLike | None = None,
    device: str = "cpu",
    session_config: dict[str, str] | None = None,
    int8: bool = False,
    *,
    config: dict[str, Any] | None = None,
) -> OnnxModel:
    """The onnxruntime twin of the saved model in ``directory``, of whichever task it is
    (:meth:`petir.onnx_runtime.OnnxModel.load`); ``config`` as in :func:`load`."""
    config = read_config(directory) if config is None else config
    return get_task(config["task"]).onnx.load(directory, onnx_dir, device, session_config, int8, config=config)


class SharedBackbone:
    """One frozen backbone in memory serving many trained PET models: the practical point of PET.

    Each :meth:`load` builds a model whose frozen weights are the backbone's own tensors (not copies); only the
    PET modules and heads are per task. Switching task means calling another model, with no reload::

        shared = SharedBackbone("sentence-transformers/all-MiniLM-L6-v2")
        rerankers = {name: shared.load(path) for name, path in [("scifact", ...), ("trec-covid", ...)]}
    """

    def __init__(self, backbone: str = DEFAULT_BACKBONE):
        self.name = backbone
        self.encoder, self.tokenizer = load_backbone(backbone)
        for parameter in self.encoder.parameters():
            parameter.requires_grad_(False)

    def load(self, directory: str | os.PathLike, device: str | torch.device = "cpu") -> PetModel:
        """Load a saved petir model onto this backbone (its fingerprint must match)."""
        shared = {id(tensor): tensor for tensor in (*self.encoder.parameters(), *self.encoder.buffers())}
        shell = copy.deepcopy(self.encoder, memo=shared)
        return load(directory, backbone=self.name, device=device, loaded=(shell, self.tokenizer))


__all__ = [
    "DEFAULT_TASK",
    "PLAIN_BACKBONE_TASK",
    "RENAMED",
    "TASKS",
    "SharedBackbone",
    "Task",
    "get_task",
    "load",
    "load_onnx",
    "read_config",
    "saved_task_name",
]

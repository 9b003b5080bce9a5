"""``transformers.AutoModel`` (and ``AutoModelForMaskedLM``) support for petir directories, which is what Pyserini's
Auto (and SPLADE) encoders call.

Pyserini's fallback encoders (``AutoDocumentEncoder``/``AutoQueryEncoder``, used for any encoder path without a
known keyword) run ``AutoModel.from_pretrained(path)`` and pool ``outputs[0]`` with ``--pooling`` (default cls)
and ``--l2-norm``. A petir bi-encoder pools and normalises itself, so :class:`PetirAutoModel` returns its
embedding at every token position: cls and mean pooling then both give exactly the trained embedding, and
``--l2-norm`` cannot change a cosine model's vectors. It is an inference-only view of a petir model whose task
gives Pyserini one vector per text (:attr:`petir.tasks.Task.pyserini`: a bi-encoder).

Pyserini's SPLADE encoders (``--encoder-class splade``) run ``AutoModelForMaskedLM.from_pretrained(path)`` and pool
its ``logits`` as SPLADE does; :class:`PetirMaskedLM` returns the masked-LM logits of a petir model whose task
gives impact term weights (:attr:`petir.tasks.Task.impact`: a sparse retriever), PET modules applied, so the stock
encoder writes exactly the weights the model was trained and dev-checked with.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM, PretrainedConfig
from transformers.modeling_outputs import BaseModelOutput, MaskedLMOutput

from petir.errors import PetirError
from petir.models import CONFIG_FILE, MODEL_TYPE, PetModel
from petir.onnx import load_inference_model
from petir.tasks import TASKS, get_task, read_config


def load_dense_encoder(directory: str, purpose: str, backend: str = "torch", device: str = "cpu") -> Any:
    """The petir model in ``directory`` (torch, or its ONNX twin), if its task gives Pyserini's Faiss one vector per
    text (:attr:`petir.tasks.Task.pyserini`); else one line saying which tasks ``purpose`` needs."""
    return _load_serving(directory, purpose, "pyserini", backend, device)


def load_impact_encoder(directory: str, purpose: str, device: str = "cpu") -> Any:
    """The petir model in ``directory`` if its task gives Lucene impact term weights
    (:attr:`petir.tasks.Task.impact`); else one line saying which tasks ``purpose`` needs."""
    return _load_serving(directory, purpose, "impact", "torch", device)


def load_passage_encoder(directory: str, purpose: str, device: str = "cpu") -> tuple[Any, bool]:
    """The petir model in ``directory`` and whether it writes impact term weights (its task's ``impact``) rather than
    vectors for Faiss (``pyserini``): asked of its task, once; a task with neither is one line naming those there
    are."""
    config = read_config(directory)
    impact = get_task(config["task"]).impact
    model = _load_serving(directory, purpose, "impact" if impact else "pyserini", "torch", device, config)
    return model, impact


def _load_serving(
    directory: str, purpose: str, capability: str, backend: str, device: str, config: dict[str, Any] | None = None
) -> Any:
    """The model, through petir's one loader, once its task is known to have ``capability`` (a :class:`Task` flag);
    else one line, before any weights are read. ``config``: the directory's, where the caller read it."""
    config = read_config(directory) if config is None else config
    if not getattr(get_task(config["task"]), capability):
        kinds = " or ".join(f"a {task.kind}" for task in TASKS.values() if getattr(task, capability))
        raise PetirError(f"{directory} holds a {config['task']} model; {purpose} needs {kinds}")
    return load_inference_model(directory, backend, device, config)


def serves_impact(path: str | None) -> bool:
    """Whether ``path`` is a petir model directory whose task gives impact term weights (its config.json read by
    petir's loader; any other encoder name, or a directory petir cannot read, passes through untouched to
    Pyserini's own choice)."""
    if not path or not (Path(path) / CONFIG_FILE).is_file():
        return False
    try:
        return get_task(read_config(path)["task"]).impact
    except PetirError:
        return False


class PetirConfig(PretrainedConfig):
    """config.json of a petir directory; every petir field (task, backbone, PET method...) is kept as is."""

    model_type = MODEL_TYPE


class _PetirView(nn.Module):
    """A petir model behind one of transformers' Auto classes (``auto_class``), loaded by ``load`` (which refuses,
    in one line, a directory of a task that class cannot serve)."""

    config_class = PetirConfig
    auto_class: str
    load: Callable[[str, str], PetModel]

    def __init__(self, model: PetModel):
        super().__init__()
        self.model = model
        self.config = model.encoder.config

    @classmethod
    def from_pretrained(cls, path, *args, **kwargs) -> _PetirView:
        return cls(cls.load(path, cls.auto_class))


class PetirAutoModel(_PetirView):
    """What ``AutoModel.from_pretrained(petir_dir)`` returns: the bi-encoder behind a BERT-like output."""

    auto_class = "AutoModel"
    load = staticmethod(load_dense_encoder)

    @torch.inference_mode()
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **features):
        embedding = self.model.inference(_features(input_ids, attention_mask, features))
        states = embedding.unsqueeze(1).expand(-1, input_ids.shape[1], -1)
        return BaseModelOutput(last_hidden_state=states)


class PetirMaskedLM(_PetirView):
    """What ``AutoModelForMaskedLM.from_pretrained(petir_dir)`` returns: a sparse retriever's masked-LM logits."""

    auto_class = "AutoModelForMaskedLM"
    load = staticmethod(load_impact_encoder)

    @torch.inference_mode()
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **features):
        return MaskedLMOutput(logits=self.model.logits(_features(input_ids, attention_mask, features)))


def _features(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, others: dict) -> dict[str, torch.Tensor]:
    """The model's inputs from a transformers-style call (Pyserini's SPLADE query encoder passes no mask)."""
    mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
    return {"input_ids": input_ids, **others, "attention_mask": mask}


def register_auto_classes() -> None:
    AutoConfig.register(MODEL_TYPE, PetirConfig, exist_ok=True)
    AutoModel.register(PetirConfig, PetirAutoModel, exist_ok=True)
    AutoModelForMaskedLM.register(PetirConfig, PetirMaskedLM, exist_ok=True)

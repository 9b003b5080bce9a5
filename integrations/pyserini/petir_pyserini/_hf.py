"""``transformers.AutoModel`` support for petir directories, which is what Pyserini's Auto encoders call.

Pyserini's fallback encoders (``AutoDocumentEncoder``/``AutoQueryEncoder``, used for any encoder path without a
known keyword) run ``AutoModel.from_pretrained(path)`` and pool ``outputs[0]`` with ``--pooling`` (default cls)
and ``--l2-norm``. A petir bi-encoder pools and normalises itself, so :class:`PetirAutoModel` returns its
embedding at every token position: cls and mean pooling then both give exactly the trained embedding, and
``--l2-norm`` cannot change a cosine model's vectors. It is an inference-only view of a petir model whose task
gives Pyserini one vector per text (:attr:`petir.tasks.Task.pyserini`: a bi-encoder).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig
from transformers.modeling_outputs import BaseModelOutput

from petir.errors import PetirError
from petir.models import MODEL_TYPE, PetModel
from petir.onnx import load_inference_model
from petir.tasks import TASKS, get_task


def load_dense_encoder(directory: str, purpose: str, backend: str = "torch", device: str = "cpu") -> Any:
    """The petir model in ``directory`` (torch, or its ONNX twin), if its task gives Pyserini's Faiss one vector per
    text (:attr:`petir.tasks.Task.pyserini`); else one line saying which tasks ``purpose`` needs."""
    model = load_inference_model(directory, backend, device)
    if not get_task(model.task).pyserini:
        kinds = " or ".join(f"a {task.kind}" for task in TASKS.values() if task.pyserini)
        raise PetirError(f"{directory} holds a {model.task} model; {purpose} needs {kinds}")
    return model


class PetirConfig(PretrainedConfig):
    """config.json of a petir directory; every petir field (task, backbone, PET method...) is kept as is."""

    model_type = MODEL_TYPE


class PetirAutoModel(nn.Module):
    """What ``AutoModel.from_pretrained(petir_dir)`` returns: the bi-encoder behind a BERT-like output."""

    config_class = PetirConfig

    def __init__(self, model: PetModel):
        super().__init__()
        self.model = model
        self.config = model.encoder.config

    @classmethod
    def from_pretrained(cls, path, *args, **kwargs) -> PetirAutoModel:
        return cls(load_dense_encoder(path, "AutoModel"))

    @torch.inference_mode()
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **features):
        features = {"input_ids": input_ids, **features}
        features["attention_mask"] = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
        embedding = self.model.inference(features)
        states = embedding.unsqueeze(1).expand(-1, input_ids.shape[1], -1)
        return BaseModelOutput(last_hidden_state=states)


def register_auto_classes() -> None:
    AutoConfig.register(MODEL_TYPE, PetirConfig, exist_ok=True)
    AutoModel.register(PetirConfig, PetirAutoModel, exist_ok=True)

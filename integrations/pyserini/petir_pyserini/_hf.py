"""``transformers.AutoModel`` support for petir directories, which is what Pyserini's Auto encoders call.

Pyserini's fallback encoders (``AutoDocumentEncoder``/``AutoQueryEncoder``, used for any encoder path without a
known keyword) run ``AutoModel.from_pretrained(path)`` and pool ``outputs[0]`` with ``--pooling`` (default cls)
and ``--l2-norm``. A petir bi-encoder pools and normalises itself, so :class:`PetirAutoModel` returns its
embedding at every token position: cls and mean pooling then both give exactly the trained embedding, and
``--l2-norm`` cannot change a cosine model's vectors. It is an inference-only view of a :class:`BiEncoder`.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig
from transformers.modeling_outputs import BaseModelOutput

from petir.models import MODEL_TYPE, BiEncoder


class PetirConfig(PretrainedConfig):
    """config.json of a petir directory; every petir field (task, backbone, PET method...) is kept as is."""

    model_type = MODEL_TYPE


class PetirAutoModel(nn.Module):
    """What ``AutoModel.from_pretrained(petir_dir)`` returns: the bi-encoder behind a BERT-like output."""

    config_class = PetirConfig

    def __init__(self, bi_encoder: BiEncoder):
        super().__init__()
        self.bi_encoder = bi_encoder
        self.config = bi_encoder.encoder.config

    @classmethod
    def from_pretrained(cls, path, *args, **kwargs) -> PetirAutoModel:
        return cls(BiEncoder.load(path))

    @torch.inference_mode()
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **features):
        features = {"input_ids": input_ids, **features}
        features["attention_mask"] = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
        embedding = self.bi_encoder.embed(features)
        states = embedding.unsqueeze(1).expand(-1, input_ids.shape[1], -1)
        return BaseModelOutput(last_hidden_state=states)


def register_auto_classes() -> None:
    AutoConfig.register(MODEL_TYPE, PetirConfig, exist_ok=True)
    AutoModel.register(PetirConfig, PetirAutoModel, exist_ok=True)

"""petir's additions that any PET method can take, counted in its trainable weights (issue 35): a low-rank update of
the word-embedding matrix (``embedding_rank``) and the LayerNorms' gains and biases (``layer_norms``).

Why: at 0.5 % every PET method on SciFact keeps only part of full fine-tuning's gain (docs/results.md), and a PET
method leaves two parts of the backbone untouched that full fine-tuning trains: the word embeddings (on MiniLM
30,522 x 384, over half its weights: a domain's vocabulary, SciFact's biomedical terms, is where they move) and the
LayerNorms. Both are cheap to open a little: a rank-k update ``E + (B A)^T`` costs k x (vocabulary + hidden)
weights (30,906 a rank on MiniLM), the LayerNorms 2 x hidden each (9,984 on MiniLM). ``iaa-l-plus``
(:mod:`petir.pet.iaa`) re-fits IAA-L's widths so that the total stays inside IAA-L's own count. Not in the paper.

The update sits beside the embedding (a forward hook adds it to the embedding's output), so the backbone's
``nn.Embedding`` and any weight tied to it (a masked-LM head) stay as they are; ``A`` starts at zero, so the model
starts as the backbone, and ``B`` is drawn at the embedding matrix's own scale, so that a step of ``A`` moves a
word's embedding by about the learning rate relative to its size, whatever the backbone.
"""

from __future__ import annotations

import torch
from torch import nn

from petir.pet.base import PetConfig

LOW_RANK = "low_rank"  # the update's module, a child of the word embedding


class LowRankUpdate(nn.Module):
    """``(B A)^T`` as a lookup: token ids [batch, tokens] -> float [batch, tokens, hidden], the update of each
    token's embedding. ``a``: [rank, vocabulary], zero at the start; ``b``: [hidden, rank]."""

    def __init__(self, vocabulary: int, hidden: int, rank: int, scale: float):
        super().__init__()
        self.a = nn.Parameter(torch.zeros(rank, vocabulary))
        self.b = nn.Parameter(torch.randn(hidden, rank) * scale)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return nn.functional.embedding(ids, self.a.t()) @ self.b.t()

    def delta(self) -> torch.Tensor:
        """The update of the whole matrix: [vocabulary, hidden]."""
        return (self.b @ self.a).t()


def _add_update(embedding: nn.Embedding, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
    """The word embedding's forward hook: its output plus the low-rank update, while there is one (a module-level
    function, so a deep copy of the model hooks its own copy of the update)."""
    update = getattr(embedding, LOW_RANK, None)
    return output if update is None else output + update(inputs[0]).to(output.dtype)


def apply_additions(model: nn.Module, config: PetConfig) -> None:
    """Add what ``config``'s ``embedding_rank`` and ``layer_norms`` ask for, trainable, after the method has frozen
    the backbone and added its own modules."""
    if config.layer_norms:
        for module in model.modules():
            if isinstance(module, nn.LayerNorm):
                module.requires_grad_(True)
    if config.embedding_rank:
        embedding = model.get_input_embeddings()
        weight = embedding.weight
        scale = float(weight.float().std()) if weight.device.type != "meta" else 1.0  # meta: counting only
        update = LowRankUpdate(weight.shape[0], weight.shape[1], config.embedding_rank, scale)
        embedding.add_module(LOW_RANK, update.to(weight.device))
        embedding.register_forward_hook(_add_update)


def merge_additions(model: nn.Module) -> None:
    """Fold a low-rank embedding update into the word-embedding matrix (for ``python -m petir.export``); the
    LayerNorms are the backbone's own weights, trained in place."""
    embedding = model.get_input_embeddings()
    update = getattr(embedding, LOW_RANK, None)
    if update is not None:
        with torch.no_grad():
            embedding.weight += update.delta().to(embedding.weight.dtype)
        delattr(embedding, LOW_RANK)  # the hook stays, and adds nothing from now on

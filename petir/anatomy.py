"""Encoder anatomy: where each architecture keeps the parts that PET methods attach to, one small entry per
``config.model_type`` (as PEFT keeps one target-module mapping per architecture).

PET methods speak of roles, never of module names: the layers, each layer's two post-LN sub-layers (self-attention
and feed-forward, each ending in an Add & Norm ``LayerNorm(h + x)``), the attention's query/key/value projections,
and the encoder block (from the embedding output to the last layer's output). An :class:`Anatomy` says where those
are in one architecture; :func:`anatomy_of` finds the entry for a loaded model. Adding an architecture is one entry
in :data:`ANATOMIES` (docs/extending.md, "Adding an architecture"); the test matrix in tests/test_anatomy.py picks
it up.

A sub-layer's Add & Norm comes in two shapes. BERT's is one module, ``output(hidden, x) = LayerNorm(dropout(
dense(hidden)) + x)`` (:class:`FusedAddNorm`). DistilBERT's transformer block and MPNet's attention add the
residual in their own forward instead (:class:`OpenAddNorm`): there the sub-layer's input ``x``, its output ``h``
and the LayerNorm are three places, which PET methods wrap separately.

Architectures without an entry (ModernBERT, whose pre-LN layers, ``x + Attention(LayerNorm(x))``, have no Add &
Norm after a sub-layer, so the paper's placements before and after it have no faithful counterpart; DeBERTa v1,
whose attention projects query, key and value in one matrix) still train with the methods that need no map (full
fine-tuning, BitFit, LoRA: the registry's ``needs_layer_map``); the other methods refuse them in one line.
Architectures that are another's code under their own ``model_type`` (camembert and data2vec-text are RoBERTa's)
share its entry.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from petir.errors import PetirError


@dataclass(frozen=True)
class FusedAddNorm:
    """A sub-layer that ends in one module ``output(hidden, x)`` computing ``LayerNorm(dropout(dense(hidden)) + x)``
    (BERT's ``BertSelfOutput`` and ``BertOutput``): it has ``dense``, ``dropout`` and ``LayerNorm`` children and
    gets the sub-layer's input ``x`` as its second argument. ``output`` is its path from the layer."""

    output: str


@dataclass(frozen=True)
class OpenAddNorm:
    """A sub-layer whose parent adds the residual itself, ``norm(h + x)``. Paths from the layer: ``input`` gets the
    sub-layer's input ``x`` as its first argument; ``branch`` returns ``h``, the sub-layer's output just before the
    residual Add (a tensor, or a tuple whose first item is ``h``); ``norm`` is the LayerNorm that receives ``h + x``.
    ``input`` and ``branch`` may be the same module."""

    input: str
    branch: str
    norm: str


AddNorm = FusedAddNorm | OpenAddNorm


@dataclass(frozen=True)
class Anatomy:
    """Where one architecture keeps what PET methods attach to (module paths; ``layers`` and ``encoder`` from the
    model, the rest from a layer).

    - ``encoder``: the block from the embedding output to the last layer's output (IAA-M's aside module sits beside
      it); ``layers``: the ModuleList of Transformer layers;
    - ``attention``, ``ffn``: the two sub-layers' Add & Norm (:class:`FusedAddNorm` or :class:`OpenAddNorm`);
    - ``self_attention``: the attention core, from the layer, whose children are the ``projections``
      (role -> child name: ``query``, ``key``, ``value``; LoRA's ``target_modules`` name roles or modules) and,
      where the core also applies the attention's output projection, ``attention_output`` (its child name);
    - ``no_prefix``: why trainable prefix keys and values cannot join this attention, where they cannot (empty:
      they can; prefix-tuning re-implements the core with scaled dot-product attention);
    - ``config_names``: generic config names (BERT's) -> this architecture's, where they differ;
    - ``positions_after_padding``: position ids start after the padding index (RoBERTa's scheme), so
      ``pad_token_id + 1`` position embeddings are never used by a token.
    """

    encoder: str
    layers: str
    attention: AddNorm
    ffn: AddNorm
    self_attention: str
    projections: Mapping[str, str]
    attention_output: str | None = None
    no_prefix: str = ""
    config_names: Mapping[str, str] = field(default_factory=dict)
    positions_after_padding: bool = False

    def sublayer(self, position: str) -> AddNorm:
        """The Add & Norm of sub-layer ``position``: "attention" or "ffn"."""
        return {"attention": self.attention, "ffn": self.ffn}[position]

    def config_value(self, config: Any, name: str) -> Any:
        """``config``'s value for the generic (BERT) config name ``name``, e.g. ``hidden_dropout_prob``."""
        return getattr(config, self.config_names.get(name, name))

    def max_tokens(self, config: Any) -> int:
        """The most tokens one text may have: the position embeddings a token can use."""
        limit = config.max_position_embeddings
        return limit - (config.pad_token_id + 1) if self.positions_after_padding else limit


_BERT = Anatomy(
    encoder="encoder",
    layers="encoder.layer",
    attention=FusedAddNorm("attention.output"),
    ffn=FusedAddNorm("output"),
    self_attention="attention.self",
    projections={"query": "query", "key": "key", "value": "value"},
)

_ROBERTA = dataclasses.replace(_BERT, positions_after_padding=True)

#: Every mapped architecture, by ``config.model_type``.
ANATOMIES: dict[str, Anatomy] = {
    "bert": _BERT,  # also MiniLM and other BERT-architecture checkpoints
    "electra": _BERT,
    "roberta": _ROBERTA,
    "xlm-roberta": _ROBERTA,
    "camembert": _ROBERTA,  # RoBERTa's code under its own model_type, as is data2vec-text
    "data2vec-text": _ROBERTA,
    "distilbert": Anatomy(
        encoder="transformer",
        layers="transformer.layer",
        attention=OpenAddNorm(input="attention", branch="attention", norm="sa_layer_norm"),
        ffn=OpenAddNorm(input="ffn", branch="ffn", norm="output_layer_norm"),
        self_attention="attention",
        projections={"query": "q_lin", "key": "k_lin", "value": "v_lin"},
        attention_output="out_lin",
        config_names={"intermediate_size": "hidden_dim", "hidden_dropout_prob": "dropout"},
    ),
    "mpnet": Anatomy(
        encoder="encoder",
        layers="encoder.layer",
        # MPNetAttention computes LayerNorm(dropout(attn(x)[0]) + x) itself: h is its dropout's output.
        attention=OpenAddNorm(input="attention", branch="attention.dropout", norm="attention.LayerNorm"),
        ffn=FusedAddNorm("output"),
        self_attention="attention.attn",
        projections={"query": "q", "key": "k", "value": "v"},
        attention_output="o",
        positions_after_padding=True,
    ),
    "deberta-v2": Anatomy(
        encoder="encoder",
        layers="encoder.layer",
        attention=FusedAddNorm("attention.output"),
        ffn=FusedAddNorm("output"),
        self_attention="attention.self",
        projections={"query": "query_proj", "key": "key_proj", "value": "value_proj"},
        no_prefix="DeBERTa's disentangled attention scores every key by its position relative to the query, "
        "which prefix keys do not have",
    ),
}


def anatomy_for(model_type: str) -> Anatomy:
    """The entry for ``model_type``; an unsupported one is a one-line error naming the supported ones."""
    if model_type not in ANATOMIES:
        raise PetirError(
            f"petir does not know where the layers of a {model_type!r} encoder are; supported architectures "
            f"(config.model_type): {', '.join(ANATOMIES)}"
        )
    return ANATOMIES[model_type]


def max_tokens(config: Any) -> int:
    """The most tokens one text may have on an encoder of ``config``, mapped or not (:meth:`Anatomy.max_tokens`;
    an architecture without an entry numbers positions from 0, as ModernBERT's rotary positions do)."""
    anatomy = ANATOMIES.get(config.model_type)
    return anatomy.max_tokens(config) if anatomy else config.max_position_embeddings


def hidden_dropout(config: Any) -> float:
    """The dropout a head over the encoder's states gets: the hidden-state dropout (``hidden_dropout_prob``, under
    a mapped architecture's own name); where the architecture has no entry, what transformers' own classification
    heads take, ``classifier_dropout`` (ModernBERT's), else none."""
    anatomy = ANATOMIES.get(config.model_type)
    if anatomy:
        return anatomy.config_value(config, "hidden_dropout_prob")
    return getattr(config, "classifier_dropout", None) or getattr(config, "hidden_dropout_prob", None) or 0.0


def anatomy_of(model: nn.Module) -> Anatomy:
    """The entry for a transformers encoder (a model without head), from its ``config.model_type``."""
    config = getattr(model, "config", None)
    if not hasattr(config, "model_type"):
        raise PetirError(
            f"{type(model).__name__} is not a transformers encoder (no config.model_type); supported "
            f"architectures: {', '.join(ANATOMIES)}"
        )
    return anatomy_for(config.model_type)


def find(module: nn.Module, path: str) -> nn.Module:
    """The submodule at ``path`` (dotted, from ``module``); a missing one is a one-line error."""
    try:
        return module.get_submodule(path)
    except AttributeError:
        raise PetirError(
            f"{type(module).__name__} has no module {path!r} where its architecture keeps one: a modified "
            "or custom model class? petir supports the transformers classes of "
            f"{', '.join(ANATOMIES)}"
        ) from None


def replace(module: nn.Module, path: str, new: nn.Module) -> None:
    """Put ``new`` at ``path`` (dotted, from ``module``) in place of what is there."""
    parent, _, name = path.rpartition(".")
    setattr(find(module, parent) if parent else module, name, new)

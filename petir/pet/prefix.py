"""Prefix-tuning as in P-tuning v2 (Liu et al., 2022): trainable key/value vectors prepended in every layer.

Every token attends to ``num_prefix`` extra key/value slots per layer ("deep prompts"); nothing else changes.
The frozen self-attention module is wrapped so the prefix joins its keys and values; the attention mask is
widened so the prefix is always visible, whichever mask form (none, boolean, additive) the backbone passes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from petir.cli import Bounded
from petir.pet.base import PetConfig, PetMethod, Variant, encoder_layers, freeze, ranged


@dataclass
class PrefixConfig(PetConfig):
    """``num_prefix``: prefix length per layer; ``init_std``: std of the initial prefix keys and values."""

    num_prefix: int = ranged(32, Bounded(int, minimum=1))
    init_std: float = ranged(0.02, Bounded(float, minimum=0))


class PrefixSelfAttention(nn.Module):
    """A frozen BERT self-attention whose keys and values are extended by a trainable per-layer prefix."""

    def __init__(self, frozen: nn.Module, num_prefix: int, init_std: float):
        super().__init__()
        self.frozen = frozen
        heads, head_size = frozen.num_attention_heads, frozen.attention_head_size
        self.prefix_key = nn.Parameter(torch.randn(heads, num_prefix, head_size) * init_std)
        self.prefix_value = nn.Parameter(torch.randn(heads, num_prefix, head_size) * init_std)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs):
        batch, length, _ = hidden_states.shape
        frozen = self.frozen

        def heads(linear: nn.Module) -> torch.Tensor:
            return linear(hidden_states).view(batch, length, -1, frozen.attention_head_size).transpose(1, 2)

        prefix_key = self.prefix_key.unsqueeze(0).expand(batch, -1, -1, -1)
        prefix_value = self.prefix_value.unsqueeze(0).expand(batch, -1, -1, -1)
        key = torch.cat([prefix_key, heads(frozen.key)], dim=2)
        value = torch.cat([prefix_value, heads(frozen.value)], dim=2)
        output = F.scaled_dot_product_attention(
            heads(frozen.query),
            key,
            value,
            attn_mask=_widen_mask(attention_mask, self.prefix_key.shape[1]),
            dropout_p=frozen.dropout.p if self.training else 0.0,
            scale=frozen.scaling,
        )
        return output.transpose(1, 2).reshape(batch, length, -1), None


def _widen_mask(mask: torch.Tensor | None, num_prefix: int) -> torch.Tensor | None:
    """Prepend always-visible columns for the prefix to a [batch, 1, query, key] mask (boolean or additive)."""
    if mask is None:
        return None
    visible = torch.ones if mask.dtype == torch.bool else torch.zeros
    pad = visible(*mask.shape[:-1], num_prefix, dtype=mask.dtype, device=mask.device)
    return torch.cat([pad, mask], dim=-1)


def insert_prefixes(model: nn.Module, num_prefix: int, init_std: float) -> None:
    """Give every layer's self-attention a trainable prefix of ``num_prefix`` keys and values."""
    for layer in encoder_layers(model):
        layer.attention.self = PrefixSelfAttention(layer.attention.self, num_prefix, init_std)


def apply_prefix(model: nn.Module, config: PrefixConfig) -> None:
    freeze(model)
    insert_prefixes(model, config.num_prefix, config.init_std)


METHOD = PetMethod(
    "prefix",
    PrefixConfig,
    apply_prefix,
    "prefix-tuning / P-tuning v2 deep prompts (trainable keys and values in every layer)",
    reference="Li & Liang, ACL 2021; Liu et al., ACL 2022",
    learning_rate=5e-3,
    variants=(Variant("prefix", budgets={"0.5": {"num_prefix": 32}, "6.7": {"num_prefix": 200}}),),
    scattered=True,
)

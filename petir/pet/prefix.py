"""Prefix-tuning as in P-tuning v2 (Liu et al., 2022): trainable key/value vectors prepended in every layer.

Every token attends to ``num_prefix`` extra key/value slots per layer ("deep prompts"); nothing else changes.
The frozen self-attention module is wrapped so the prefix joins its keys and values; the attention mask is
widened so the prefix is always visible, whichever mask form (none, boolean, additive) the backbone passes.
Architectures whose attention scores need a position for every key (DeBERTa's disentangled attention) take no
prefix: their anatomy says why (``no_prefix``), and prefix and MAM refuse them in one line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from petir.anatomy import anatomy_of
from petir.cli import Bounded, option
from petir.errors import PetirError
from petir.pet.base import WIDTH, PetConfig, PetMethod, Variant, encoder_layers, freeze, replace_block


@dataclass
class PrefixConfig(PetConfig):
    """Prefix-tuning's options (``--pet KEY=VALUE``)."""

    num_prefix: int = option(32, "prefix length per layer", bounds=WIDTH)
    init_std: float = option(0.02, "std of the initial prefix keys and values", bounds=Bounded(float, minimum=0))


class PrefixSelfAttention(nn.Module):
    """A frozen self-attention core whose keys and values are extended by a trainable per-layer prefix.

    The core is re-implemented with scaled dot-product attention from its own projections (named by the
    architecture's anatomy: ``projections`` role -> child name, and ``output``, the output projection where the core
    applies it). It takes the arguments every supported core is called with: the hidden states, the attention mask
    and, where the architecture adds one to the scores (MPNet), a relative position bias; prefix keys have no
    position, so the bias is zero for them.
    """

    def __init__(
        self,
        frozen: nn.Module,
        num_prefix: int,
        init_std: float,
        heads: int,
        projections: Mapping[str, str],
        output: str | None,
    ):
        super().__init__()
        self.frozen = frozen
        self.head_size = frozen.get_submodule(projections["query"]).out_features // heads
        self.projections = dict(projections)
        self.output = output
        self.prefix_key = nn.Parameter(torch.randn(heads, num_prefix, self.head_size) * init_std)
        self.prefix_value = nn.Parameter(torch.randn(heads, num_prefix, self.head_size) * init_std)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_bias: torch.Tensor | None = None,
        **kwargs,
    ):
        batch, length, _ = hidden_states.shape
        frozen = self.frozen

        def heads(role: str) -> torch.Tensor:
            projected = getattr(frozen, self.projections[role])(hidden_states)
            return projected.view(batch, length, -1, self.head_size).transpose(1, 2)

        num_prefix = self.prefix_key.shape[1]
        prefix_key = self.prefix_key.unsqueeze(0).expand(batch, -1, -1, -1)
        prefix_value = self.prefix_value.unsqueeze(0).expand(batch, -1, -1, -1)
        key = torch.cat([prefix_key, heads("key")], dim=2)
        value = torch.cat([prefix_value, heads("value")], dim=2)
        output = F.scaled_dot_product_attention(
            heads("query"),
            key,
            value,
            attn_mask=_scores_bias(_widen_mask(attention_mask, num_prefix), position_bias, num_prefix),
            dropout_p=frozen.dropout.p if self.training else 0.0,
            scale=self.head_size**-0.5,
        )
        output = output.transpose(1, 2).reshape(batch, length, -1)
        if self.output is not None:
            output = getattr(frozen, self.output)(output)
        return output, None


def _widen_mask(mask: torch.Tensor | None, num_prefix: int) -> torch.Tensor | None:
    """Prepend always-visible columns for the prefix to a [batch, 1, query, key] mask (boolean or additive)."""
    if mask is None:
        return None
    visible = torch.ones if mask.dtype == torch.bool else torch.zeros
    pad = visible(*mask.shape[:-1], num_prefix, dtype=mask.dtype, device=mask.device)
    return torch.cat([pad, mask], dim=-1)


def _scores_bias(mask: torch.Tensor | None, position_bias: torch.Tensor | None, num_prefix: int) -> torch.Tensor | None:
    """The widened mask with a [batch, heads, query, key] position bias added (zero for the prefix keys)."""
    if position_bias is None:
        return mask
    bias = F.pad(position_bias, (num_prefix, 0))
    if mask is None:
        return bias
    return bias.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else bias + mask


def insert_prefixes(model: nn.Module, num_prefix: int, init_std: float) -> None:
    """Give every layer's self-attention a trainable prefix of ``num_prefix`` keys and values."""
    anatomy = anatomy_of(model)
    if anatomy.no_prefix:
        raise PetirError(
            f"trainable prefixes cannot join a {model.config.model_type} encoder's attention: {anatomy.no_prefix}; "
            "choose a method without a prefix"
        )
    for layer in encoder_layers(model):
        replace_block(
            layer,
            anatomy.self_attention,
            lambda core: PrefixSelfAttention(
                core,
                num_prefix,
                init_std,
                model.config.num_attention_heads,
                anatomy.projections,
                anatomy.attention_output,
            ),
        )


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

"""IAA, the paper's method (Ma et al., CIKM 2022, Figure 3): inside adapters connected by aside modules.

Scattered adapters each sit between frozen layers, so the gradient reaching a low adapter has crossed every frozen
layer above it. IAA keeps the serial **inside** adapters (width ``r``, after both sub-layers of every layer, as in
:mod:`petir.pet.adapter`) and adds **aside** bottleneck modules (``W_up f(W_down x)``, width ``ar``) beside frozen
blocks: each reads its block's input ``x`` and is added after the block's last Add & Norm, ``Block(x) + BN(x)``,
so the trainable modules form one pathway that skips the frozen blocks. ``placement`` picks the blocks:

- ``sublayer`` (IAA-S): one aside module beside each sub-layer (self-attention, feed-forward): 2 per layer;
- ``layer`` (IAA-L, the paper's best): one beside each Transformer layer: ``x_i = Layer_i(x_{i-1}) + BN_i(x_{i-1})``;
- ``model`` (IAA-M): one from the embedding output to the last layer's output.

The paper gives neither the initialisation nor any scaling of the aside output. petir starts every up-projection
at zero (``init=zero``), so the model starts as the unchanged backbone, as the other adapter methods do; ``init=
near-identity`` draws them from N(0, 0.01^2) (Houlsby et al.'s start) instead. Widths per budget: the paper's
(:data:`METHOD` variants; ../shared/PAPER.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from petir.anatomy import anatomy_of
from petir.cli import option
from petir.errors import check_choice
from petir.pet.base import (
    SUBLAYERS,
    WIDTH,
    BesideBlock,
    Bottleneck,
    PetConfig,
    PetMethod,
    Variant,
    encoder_layers,
    freeze,
    replace_block,
    wrap_sublayer_outputs,
)

PLACEMENTS = ("sublayer", "layer", "model")
#: init -> std of the up-projections (0: zero, an exact start as the backbone).
INITS = {"zero": 0.0, "near-identity": 1e-2}


@dataclass
class IaaConfig(PetConfig):
    """IAA's options (``--pet KEY=VALUE``)."""

    placement: str = option(
        "layer", "blocks the aside modules sit beside (sublayer | layer | model: IAA-S / IAA-L / IAA-M)", PLACEMENTS
    )
    r: int = option(12, "inside adapter width", bounds=WIDTH)
    ar: int = option(12, "aside module width", bounds=WIDTH)
    activation: str = option("relu", "nonlinearity of both")
    init: str = option("zero", "up-projections at zero (start as the backbone) or near-identity (N(0, 0.01^2))")


def apply_iaa(model: nn.Module, config: IaaConfig) -> None:
    check_choice("init", config.init, INITS)
    freeze(model)
    up_std = INITS[config.init]

    def bottleneck(width: int):
        return lambda hidden: Bottleneck(hidden, width, config.activation, up_std=up_std)

    # Inside modules first: the layer and model placements wrap blocks that already hold them.
    aside_per_sublayer = bottleneck(config.ar) if config.placement == "sublayer" else None
    wrap_sublayer_outputs(model, SUBLAYERS, serial=bottleneck(config.r), aside=aside_per_sublayer)
    hidden_size = model.config.hidden_size
    if config.placement == "layer":
        layers = encoder_layers(model)
        for index, layer in enumerate(layers):
            layers[index] = BesideBlock(layer, bottleneck(config.ar)(hidden_size))
    elif config.placement == "model":
        aside = bottleneck(config.ar)(hidden_size)
        replace_block(model, anatomy_of(model).encoder, lambda encoder: BesideBlock(encoder, aside))


METHOD = PetMethod(
    "iaa",
    IaaConfig,
    apply_iaa,
    "the paper's IAA: inside adapters + aside modules beside each sub-layer, layer or the model",
    reference="Ma et al., CIKM 2022 (the paper petir implements)",
    learning_rate=1e-3,
    variants=(
        Variant("iaa-s", {"placement": "sublayer"}, budgets={"0.5": {"r": 8, "ar": 8}, "6.7": {"r": 100, "ar": 100}}),
        # petir's addition, not the paper's (petir.pet.additions): a rank-1 update of the word embeddings and the
        # LayerNorms, with the widths re-fitted so the total stays inside IAA-L's own 0.5 % count (172,380 of
        # 173,016 on MiniLM). Before iaa-l: petir.pet.variant_of takes the first variant a config matches.
        Variant(
            "iaa-l-plus",
            {"placement": "layer", "embedding_rank": 1, "layer_norms": True},
            budgets={"0.5": {"r": 9, "ar": 9}},
        ),
        Variant("iaa-l", {"placement": "layer"}, budgets={"0.5": {"r": 12, "ar": 12}, "6.7": {"r": 50, "ar": 300}}),
        # The paper prints IAA-L's 0.5 % widths as 12/12, 12.5 % over every other 0.5 % row on BERT-base; at
        # 2r + ar = 32 it holds the budget exactly, so a lead over the adapter is not bought with weights.
        Variant(
            "iaa-l-equal", {"placement": "layer"}, budgets={"0.5": {"r": 12, "ar": 8}, "6.7": {"r": 50, "ar": 300}}
        ),
        Variant("iaa-m", {"placement": "model"}, budgets={"0.5": {"r": 15, "ar": 24}, "6.7": {"r": 185, "ar": 960}}),
    ),
    scattered=False,
)

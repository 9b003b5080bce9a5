"""Partial fine-tuning, petir's ablation of full fine-tuning (issue 35): which of the backbone's own weights does
full fine-tuning's gain need?

Every PET method trains less than the whole backbone, and at 0.5 % every one keeps only part of full fine-tuning's
gain on SciFact (docs/results.md). Training the backbone's weights with one part frozen, or only one part, says
where that gain sits. ``train`` names the parts trained, ``freeze`` the parts then kept frozen; a part is found by
its role (:mod:`petir.anatomy`), so the same names work on every supported architecture:

- ``all``: every weight of the encoder;
- ``embeddings``: everything before the first layer (word, position and type embeddings and their LayerNorm);
- ``word_embeddings``: the word-embedding matrix alone (on MiniLM 30,522 x 384, 52 % of its weights);
- ``layer_norms``: every LayerNorm's gain and bias;
- ``attention``: each layer's attention sub-layer (query, key, value, output projection and its Add & Norm);
- ``ffn``: each layer's feed-forward sub-layer (the rest of the layer);
- ``top_half``: the upper half of the layers (with an odd count, the middle layer is in the lower half).

The variants are the ablations the issue asks for; ``partial`` itself freezes the word embeddings only.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from petir.anatomy import FusedAddNorm, anatomy_of, find
from petir.cli import option
from petir.errors import PetirError, check_choice
from petir.pet.base import PetConfig, PetMethod, Variant, encoder_layers, freeze, nothing_to_merge

PARTS = ("all", "embeddings", "word_embeddings", "layer_norms", "attention", "ffn", "top_half")


@dataclass
class PartialConfig(PetConfig):
    """Partial fine-tuning's options (``--pet KEY=VALUE``; part names: :data:`PARTS`)."""

    train: tuple[str, ...] = option(("all",), f"the parts trained ({', '.join(PARTS)})")
    freeze: tuple[str, ...] = option(("word_embeddings",), "the parts then frozen again")


def part(model: nn.Module, name: str) -> set[nn.Parameter]:
    """The parameters of part ``name`` of a supported encoder (:data:`PARTS`)."""
    anatomy = anatomy_of(model)
    layers = encoder_layers(model)
    if name == "all":
        return set(model.parameters())
    if name == "embeddings":
        return set(model.parameters()) - set(find(model, anatomy.encoder).parameters())
    if name == "word_embeddings":
        return set(model.get_input_embeddings().parameters())
    if name == "layer_norms":
        return {p for module in model.modules() if isinstance(module, nn.LayerNorm) for p in module.parameters()}
    if name == "top_half":
        return {p for layer in layers[len(layers) // 2 + len(layers) % 2 :] for p in layer.parameters()}
    attention = set()
    add_norm = anatomy.attention
    if isinstance(add_norm, FusedAddNorm):
        paths: tuple[str, ...] = (add_norm.output,)
    else:  # the attention's Add & Norm is spread over its input, branch and LayerNorm
        paths = (add_norm.input, add_norm.branch, add_norm.norm)
    for layer in layers:
        for path in (anatomy.self_attention, *paths):
            attention |= set(find(layer, path).parameters())
    if name == "attention":
        return attention
    return {p for layer in layers for p in layer.parameters()} - attention  # ffn


def apply_partial(model: nn.Module, config: PartialConfig) -> None:
    for name in (*config.train, *config.freeze):
        check_choice("part", name, PARTS)
    if not config.train:
        raise PetirError(f"partial fine-tuning trains nothing: give train=PART[,PART] (parts: {', '.join(PARTS)})")
    trained = set().union(*(part(model, name) for name in config.train))
    frozen = set().union(*(part(model, name) for name in config.freeze))
    freeze(model)
    for parameter in trained - frozen:
        parameter.requires_grad_(True)


METHOD = PetMethod(
    "partial",
    PartialConfig,
    apply_partial,
    "partial fine-tuning: the backbone's own weights with parts frozen (an ablation of full fine-tuning)",
    reference="petir's ablation (issue 35), not a PET method of the paper",
    learning_rate=2e-5,  # full fine-tuning's: these are its weights
    # The first match wins in petir.pet.variant_of: ``partial`` (its defaults) comes last.
    variants=(
        Variant("partial-no-layer-norms", {"train": ("all",), "freeze": ("layer_norms",)}),
        Variant("partial-top-half", {"train": ("top_half",), "freeze": ()}),
        Variant("partial-attention", {"train": ("attention",), "freeze": ()}),
        Variant("partial-ffn", {"train": ("ffn",), "freeze": ()}),
        Variant("partial"),
    ),
    scattered=False,
    merge=nothing_to_merge,
)

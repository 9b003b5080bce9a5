"""The PET method registry: one module per method, one line here per method.

>>> from petir.pet import apply_pet, resolve
>>> method, options = resolve("iaa-l", budget="0.5")    # ("iaa", {"placement": "layer", "r": 12, "ar": 12})
>>> apply_pet(model, method, make_config(method, options))   # freezes the backbone, adds the modules in place

Each method has named variants (``iaa-s``, ``iaa-l``, ``iaa-m``; ``linked-side``...; a plain method is its own only
variant) and, per variant, the paper's budget presets (``--budget 0.5`` / ``--budget 6.7``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from torch import nn

from petir.anatomy import ANATOMIES
from petir.backbone import without_pooler
from petir.errors import PetirError
from petir.pet import adapter, bitfit, full, iaa, linked, lora, mam, partial, prefix
from petir.pet.additions import apply_additions
from petir.pet.base import PetConfig, PetMethod, Variant

METHODS: dict[str, PetMethod] = {}
for _method in (full, bitfit, lora, adapter, prefix, mam, iaa, linked, partial):
    if _method.METHOD.name in METHODS:
        raise RuntimeError(f"two PET methods are named {_method.METHOD.name!r}")
    METHODS[_method.METHOD.name] = _method.METHOD

#: Every named variant: name -> (method, variant). A method's name also names its default variant.
VARIANTS: dict[str, tuple[PetMethod, Variant]] = {
    variant.name: (method, variant) for method in METHODS.values() for variant in method.variants
}
#: The paper's budgets (percent of BERT-base's weights; ../shared/PAPER.md).
BUDGETS = ("0.5", "6.7")
#: The preset a variant gets when no budget is asked for: the paper's main setting.
DEFAULT_BUDGET = "0.5"
#: Method names of earlier petir versions, still found in saved config.json files.
RENAMED = {"connected": "linked"}
#: The default method: the paper's best variant, IAA-L, at its 0.5 % widths (IaaConfig's defaults).
DEFAULT_METHOD = "iaa"
#: The method every PET method is measured against (the study's † marks), and which, untrained, is the backbone
#: itself: it adds no modules.
REFERENCE_METHOD = "full"


def get_method(name: str) -> PetMethod:
    if name in RENAMED:
        raise PetirError(
            f"PET method {name!r} is now called {RENAMED[name]!r} (petir's own linked adapters); "
            "the paper's method is 'iaa' (iaa-s, iaa-l, iaa-m)"
        )
    if name not in METHODS:
        raise PetirError(f"unknown PET method {name!r}; choose from {', '.join(METHODS)}")
    return METHODS[name]


def saved_method_name(name: str) -> str:
    """The current name of a method recorded in a saved model (which may predate a rename)."""
    return RENAMED.get(name, name)


def make_config(name: str, options: dict[str, Any] | None = None) -> PetConfig:
    """The method's config with ``options`` (strings from the CLI or values from JSON) over its defaults."""
    return get_method(name).config_class.from_dict(options or {})


def variant_of(name: str, config: PetConfig) -> Variant:
    """The named variant of method ``name`` that ``config`` is (e.g. iaa with placement=model -> iaa-m)."""
    values = config.to_dict()
    for variant in get_method(name).variants:
        expected = make_config(name, dict(variant.options)).to_dict()
        if all(values[key] == expected[key] for key in variant.options):
            return variant
    raise PetirError(f"{name} {values} is none of the variants {', '.join(v.name for v in get_method(name).variants)}")


@dataclasses.dataclass(frozen=True)
class Resolved:
    """What a method or variant name, PET options and a budget come to, derived once (:func:`resolve_method`)."""

    method: str  #: the method's registry name
    options: dict[str, Any]  #: the variant's options, the budget preset's widths, then the explicit options
    config: PetConfig  #: ``options`` as the method's config, checked
    variant: Variant  #: the named variant ``config`` is (iaa with placement=model: iaa-m)
    budget: str | None  #: the preset as a model records it (:func:`resolved_budget`)


def resolve_method(name: str, options: dict[str, Any] | None = None, budget: str | None = None) -> Resolved:
    """Everything :func:`resolve` and :func:`resolved_budget` give for the same arguments, with the checked config
    and its variant: what ``petir.train`` trains and records. A bad option fails here, before any data is read."""
    method, merged, recorded = _resolution(name, options, budget)
    config = make_config(method, merged)
    return Resolved(method, merged, config, variant_of(method, config), recorded)


def resolve(name: str, options: dict[str, Any] | None = None, budget: str | None = None) -> tuple[str, dict[str, Any]]:
    """``(method, options)`` for a method or variant ``name``: the variant's options, then the ``budget`` preset's
    widths (no budget: the :data:`DEFAULT_BUDGET` preset where the variant has one), then ``options`` (explicit
    options win)."""
    method, merged, _ = _resolution(name, options, budget)
    return method, merged


def resolved_budget(name: str, options: dict[str, Any] | None = None, budget: str | None = None) -> str | None:
    """The budget preset :func:`resolve` applies for the same arguments, or None where it applies none or
    ``options`` replace one of its widths: what a model trained from them records (config.json's ``pet_budget``)."""
    return _resolution(name, options, budget)[2]


def _resolution(
    name: str, options: dict[str, Any] | None, budget: str | None
) -> tuple[str, dict[str, Any], str | None]:
    """(method, merged options, recorded budget preset) for :func:`resolve`, :func:`resolved_budget` and
    :func:`resolve_method`."""
    method, variant, budget = _resolve(name, options, budget)
    preset = variant.budgets[budget] if budget is not None else {}
    replaced = any(key in (options or {}) for key in preset)
    return method.name, {**variant.options, **preset, **(options or {})}, None if replaced else budget


def _resolve(name: str, options: dict[str, Any] | None, budget: str | None) -> tuple[PetMethod, Variant, str | None]:
    """The method and variant ``name`` (with ``options``) is, and the budget preset it gets, checked."""
    if name in VARIANTS:
        method, variant = VARIANTS[name]
        clash = [key for key in variant.options if key in (options or {})]
        if clash:
            raise PetirError(
                f"{name} fixes {clash[0]}={variant.options[clash[0]]}; name another variant of {method.name} "
                f"({', '.join(v.name for v in method.variants)}) instead of setting {clash[0]}"
            )
    else:
        method = get_method(name)
        variant = variant_of(method.name, make_config(method.name, options))
    if budget is None and DEFAULT_BUDGET in variant.budgets:
        budget = DEFAULT_BUDGET
    if budget is not None and budget not in variant.budgets:
        presets = ", ".join(variant.budgets) or "none (it trains a fixed set of weights)"
        raise PetirError(f"{variant.name} has no {budget} % budget preset; its presets: {presets}")
    return method, variant, budget


def saved_budget(saved: Mapping[str, Any]) -> str | None:
    """The budget preset of a saved model, from its config.json (``saved``): the ``pet_budget`` it records, or, for
    a model saved before petir recorded it, the preset whose widths its ``pet_config`` has."""
    name = saved_method_name(saved["pet_method"])
    variant = variant_of(name, make_config(name, saved["pet_config"]))
    if "pet_budget" not in saved:
        widths = saved["pet_config"]
        matching = (b for b, preset in variant.budgets.items() if all(widths.get(k) == v for k, v in preset.items()))
        return next(matching, None)
    budget = saved["pet_budget"]
    if budget is not None and budget not in variant.budgets:
        presets = ", ".join(variant.budgets) or "none"
        raise PetirError(
            f"saved pet_budget {budget!r} is no budget preset of {variant.name} (its presets: {presets}); "
            "save the model again"
        )
    return budget


def apply_pet(model: nn.Module, name: str, config: PetConfig) -> None:
    """Freeze ``model`` and add method ``name``'s trainable modules in place, then petir's additions that
    ``config`` asks for (:mod:`petir.pet.additions`)."""
    method = get_method(name)
    if not isinstance(config, method.config_class):
        raise PetirError(f"method {name!r} needs a {method.config_class.__name__}, got {type(config).__name__}")
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if method.needs_layer_map and model_type is not None and model_type not in ANATOMIES:
        raise PetirError(
            f"{name} cannot train a {model_type!r} encoder: it attaches where petir's layer map (petir.anatomy) "
            f"says, and the map has no {model_type!r}; on it train {', '.join(any_encoder_methods())}, or pick a "
            f"backbone of a mapped architecture ({', '.join(ANATOMIES)})"
        )
    method.apply(model, config)
    apply_additions(model, config)


def any_encoder_methods() -> list[str]:
    """The methods that train on any ``AutoModel`` encoder, mapped by petir.anatomy or not."""
    return [name for name, method in METHODS.items() if not method.needs_layer_map]


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts of ``model`` as it is now."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def count_on_config(backbone_config: Any, name: str, config: PetConfig) -> tuple[int, int]:
    """(trainable, backbone) parameter counts of method ``name`` on a backbone of ``backbone_config``, built on the
    meta device: no weights are read or allocated, so any size is counted in milliseconds."""
    import torch
    from transformers import AutoModel

    with torch.device("meta"):
        model = without_pooler(AutoModel.from_config(backbone_config))
        total = count_parameters(model)[1]
        apply_pet(model, name, config)
    return count_parameters(model)[0], total


__all__ = [
    "BUDGETS",
    "DEFAULT_BUDGET",
    "DEFAULT_METHOD",
    "METHODS",
    "REFERENCE_METHOD",
    "VARIANTS",
    "PetConfig",
    "PetMethod",
    "Variant",
    "any_encoder_methods",
    "apply_pet",
    "count_on_config",
    "count_parameters",
    "get_method",
    "make_config",
    "Resolved",
    "resolve",
    "resolve_method",
    "resolved_budget",
    "saved_budget",
    "saved_method_name",
    "variant_of",
]

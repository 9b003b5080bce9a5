"""The PET method registry: one module per method, one line here per method.

>>> from petir.pet import apply_pet, get_method
>>> config = get_method("connected").config_class(topology="bottleneck", bottleneck=16)
>>> apply_pet(model, "connected", config)   # freezes the backbone, adds the trainable modules in place
"""

from __future__ import annotations

from typing import Any

from torch import nn

from petir.errors import PetirError
from petir.pet import adapter, bitfit, connected, full, lora, prefix
from petir.pet.base import PetConfig, PetMethod

METHODS: dict[str, PetMethod] = {
    method.name: method
    for method in (full.METHOD, bitfit.METHOD, lora.METHOD, adapter.METHOD, prefix.METHOD, connected.METHOD)
}


def get_method(name: str) -> PetMethod:
    if name not in METHODS:
        raise PetirError(f"unknown PET method {name!r}; choose from {', '.join(METHODS)}")
    return METHODS[name]


def make_config(name: str, options: dict[str, Any] | None = None) -> PetConfig:
    """The method's config with ``options`` (strings from the CLI or values from JSON) over its defaults."""
    return get_method(name).config_class.from_dict(options or {})


def apply_pet(model: nn.Module, name: str, config: PetConfig) -> None:
    """Freeze ``model`` and add method ``name``'s trainable modules in place."""
    method = get_method(name)
    if not isinstance(config, method.config_class):
        raise PetirError(f"method {name!r} needs a {method.config_class.__name__}, got {type(config).__name__}")
    method.apply(model, config)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts of ``model`` as it is now."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


__all__ = ["METHODS", "PetConfig", "PetMethod", "apply_pet", "count_parameters", "get_method", "make_config"]

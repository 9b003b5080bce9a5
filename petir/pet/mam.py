"""MAM adapter (He et al., ICLR 2022, "Towards a Unified View of Parameter-Efficient Transfer Learning"): the
paper's strongest scattered baseline.

Prefix-tuning in every self-attention (as :mod:`petir.pet.prefix`) plus a **parallel** adapter beside every
feed-forward block: it reads the block's input ``x`` and its scaled output joins the block's output before the
Add & Norm, ``LayerNorm(FFN(x) + s * W_up f(W_down x) + x)``, with He et al.'s scaling ``s = 4``. The parallel
adapter differs from IAA-S's aside module only in where its output lands: before the frozen LayerNorm, not after.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from petir.cli import Bounded, option
from petir.pet.base import WIDTH, Bottleneck, PetConfig, PetMethod, Variant, freeze, wrap_sublayer_outputs
from petir.pet.prefix import insert_prefixes


@dataclass
class MamConfig(PetConfig):
    """The MAM adapter's options (``--pet KEY=VALUE``)."""

    num_prefix: int = option(16, "prefix length per layer (l)", bounds=WIDTH)
    bottleneck: int = option(16, "parallel adapter width (r)", bounds=WIDTH)
    scaling: float = option(4.0, "the parallel adapter's output scale (s)", bounds=Bounded(float, above=0))
    activation: str = option("relu", "the parallel adapter's nonlinearity")
    prefix_init_std: float = option(0.02, "std of the initial prefix keys and values", bounds=Bounded(float, minimum=0))


def apply_mam(model: nn.Module, config: MamConfig) -> None:
    freeze(model)
    insert_prefixes(model, config.num_prefix, config.prefix_init_std)
    wrap_sublayer_outputs(
        model,
        ("ffn",),
        parallel=lambda hidden: Bottleneck(hidden, config.bottleneck, config.activation),
        scaling=config.scaling,
    )


METHOD = PetMethod(
    "mam",
    MamConfig,
    apply_mam,
    "MAM adapter: prefix-tuning + a scaled parallel adapter beside each feed-forward block (scattered)",
    reference="He et al., ICLR 2022",
    learning_rate=1e-3,
    variants=(
        Variant(
            "mam",
            budgets={"0.5": {"num_prefix": 16, "bottleneck": 16}, "6.7": {"num_prefix": 200, "bottleneck": 200}},
        ),
    ),
    scattered=True,
)

"""PET methods on tiny random BERTs: what is trained, what stays frozen, and the connected pathway."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import BertConfig, BertModel

from conftest import PET_IDS, PET_VARIANTS
from petir.errors import PetirError
from petir.pet import METHODS, apply_pet, count_parameters, make_config
from petir.pet.connected import BottleneckLinkedModule


def tiny_bert(layers: int = 2, hidden: int = 32) -> BertModel:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=50,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=2 * hidden,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return BertModel(config, add_pooling_layer=False).eval()


def inputs() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[1, 5:] = 0
    mask[2, 2:] = 0
    return {"input_ids": torch.randint(5, 50, (3, 9)), "attention_mask": mask}


def with_method(base: BertModel, name: str, options: dict) -> BertModel:
    model = copy.deepcopy(base)
    apply_pet(model, name, make_config(name, options))
    return model


def train_one_step(model: BertModel) -> None:
    """One AdamW step (with weight decay) on a loss that involves every output position."""
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    for _ in range(2):  # the second step moves parameters whose gradient was zero at init (behind zero up-projections)
        model(**inputs()).last_hidden_state.pow(2).mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()


def test_registry_lists_every_method():
    assert set(METHODS) == {"full", "bitfit", "lora", "adapter", "prefix", "connected"}


@pytest.mark.parametrize(("name", "options"), PET_VARIANTS, ids=PET_IDS)
def test_frozen_weights_stay_unchanged_and_trainable_ones_move(name, options):
    base = tiny_bert()
    model = with_method(base, name, options)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train_one_step(model)
    for n, p in model.named_parameters():
        changed = not torch.equal(before[n], p)
        assert changed == p.requires_grad, f"{n}: requires_grad={p.requires_grad} but changed={changed}"


@pytest.mark.parametrize(("name", "options"), PET_VARIANTS, ids=PET_IDS)
def test_padding_does_not_leak_into_real_tokens(name, options):
    model = with_method(tiny_bert(), name, options)
    train_one_step(model)  # make every module non-trivial
    batch = inputs()
    full = model(**batch).last_hidden_state
    alone = model(input_ids=batch["input_ids"][1:2, :5], attention_mask=batch["attention_mask"][1:2, :5])
    torch.testing.assert_close(alone.last_hidden_state[0], full[1, :5], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("name", "options"), [v for v in PET_VARIANTS if v[0] != "prefix"], ids=[i for i in PET_IDS if i != "prefix"]
)
def test_inserted_modules_start_as_the_unchanged_backbone(name, options):
    base = tiny_bert()
    model = with_method(base, name, options)
    torch.testing.assert_close(model(**inputs()).last_hidden_state, base(**inputs()).last_hidden_state)


def test_trainable_counts_match_the_architecture():
    hidden, r, layers = 32, 8, 2
    base = tiny_bert(layers, hidden)
    total = count_parameters(base)[1]
    bottleneck = 2 * hidden * r + r + hidden  # down (weight + bias) and up (weight + bias)
    expected = {
        ("full", ()): total,
        ("bitfit", ()): sum(p.numel() for n, p in base.named_parameters() if n.endswith(".bias")),
        ("lora", (("r", r),)): layers * 2 * (2 * hidden * r),  # query and value: A (r x d) and B (d x r)
        ("adapter", (("bottleneck", r),)): layers * 2 * bottleneck,
        ("prefix", (("num_prefix", r),)): layers * 2 * r * hidden,
        ("connected", (("bottleneck", r), ("topology", "bottleneck"))): layers * 2 * bottleneck
        + (2 * layers - 1) * r * r,
        ("connected", (("bottleneck", r), ("topology", "hidden"))): layers * 2 * bottleneck
        + (2 * layers - 1) * hidden * r,
        ("connected", (("bottleneck", r), ("topology", "side"))): 2 * layers * (hidden * r + r)
        + (2 * layers - 1) * r * r
        + (r * hidden + hidden),
    }
    for (name, options), count in expected.items():
        model = with_method(base, name, dict(options))
        assert count_parameters(model)[0] == count, (name, options)


@pytest.mark.parametrize("name", [n for n in METHODS if n != "full"])
def test_default_configs_train_under_one_percent_of_a_minilm_sized_backbone(name):
    config = BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
    base = BertModel(config, add_pooling_layer=False)
    total = count_parameters(base)[1]
    topologies = ("bottleneck", "hidden", "side") if name == "connected" else (None,)
    for topology in topologies:
        model = with_method(base, name, {"topology": topology} if topology else {})
        assert count_parameters(model)[0] / total < 0.01, (name, topology)


def test_connected_links_give_the_bottom_module_a_trainable_path_to_the_output():
    """With every up-projection but the top one at zero, only the aside links can carry a change of the bottom
    module to the output: connected modules do, scattered adapters cannot."""
    base = tiny_bert(layers=3)
    outputs = {}
    for name, options in (("connected", {"topology": "bottleneck", "link_init": "identity"}), ("adapter", {})):
        model = with_method(base, name, options)
        modules = [m for m in model.modules() if hasattr(m, "up") and hasattr(m, "down")]
        torch.nn.init.normal_(modules[-1].up.weight)
        reference = model(**inputs()).last_hidden_state
        with torch.no_grad():
            modules[0].down.weight.add_(1.0)
        outputs[name] = (model(**inputs()).last_hidden_state - reference).abs().max().item()
    assert outputs["connected"] > 1e-3
    assert outputs["adapter"] == 0.0


def test_side_topology_needs_no_backpropagation_through_the_backbone():
    model = with_method(tiny_bert(), "connected", {"topology": "side"})
    flags = []
    model.encoder.frozen.layer[0].register_forward_hook(lambda m, i, out: flags.append(out.requires_grad))
    output = model(**inputs()).last_hidden_state
    assert flags == [False] and output.requires_grad


def test_bottleneck_links_start_closed_unless_asked():
    model = with_method(tiny_bert(), "connected", {"topology": "bottleneck", "bottleneck": 4})
    links = [m.link for m in model.modules() if isinstance(m, BottleneckLinkedModule) and m.link is not None]
    assert links and all(not link.weight.any() for link in links)
    model = with_method(tiny_bert(), "connected", {"topology": "bottleneck", "bottleneck": 4, "link_init": "identity"})
    assert all(
        torch.equal(m.link.weight, torch.eye(4))
        for m in model.modules()
        if isinstance(m, BottleneckLinkedModule) and m.link
    )


def test_closed_links_get_gradient_once_the_up_projections_have_moved():
    """Zero-initialised links are not a dead end: the pathway opens through training."""
    model = with_method(tiny_bert(layers=3), "connected", {"topology": "bottleneck", "bottleneck": 4})
    sites = [m for m in model.modules() if isinstance(m, BottleneckLinkedModule)]
    torch.nn.init.normal_(sites[-1].up.weight)  # as after a first optimizer step
    model(**inputs()).last_hidden_state.sum().backward()
    assert sites[-1].link.weight.grad.abs().sum() > 0


def test_configs_coerce_cli_strings_and_refuse_unknown_options():
    config = make_config("connected", {"bottleneck": "32", "positions": "ffn", "topology": "side"})
    assert (config.bottleneck, config.positions, config.topology) == (32, ("ffn",), "side")
    assert make_config("lora", {"target_modules": ["query", "key"]}).target_modules == ("query", "key")
    with pytest.raises(PetirError, match="has no option rank; options: alpha, dropout, r, target_modules"):
        make_config("lora", {"rank": "4"})
    with pytest.raises(PetirError, match="expected int, got 'big'"):
        make_config("adapter", {"bottleneck": "big"})
    with pytest.raises(PetirError, match="unknown PET method 'ia3'"):
        make_config("ia3")
    with pytest.raises(PetirError, match="unknown topology 'ring'"):
        with_method(tiny_bert(), "connected", {"topology": "ring"})


def test_non_bert_backbones_are_refused_with_a_clear_message():
    with pytest.raises(PetirError, match="not a BERT-family encoder"):
        apply_pet(torch.nn.Linear(4, 4), "adapter", make_config("adapter"))

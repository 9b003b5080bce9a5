"""PET methods on tiny random BERTs: what is trained, what stays frozen, where IAA's modules sit, the paper's
budgets, and petir's own linked pathway."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import BertConfig, BertModel

from conftest import PET_IDS, PET_VARIANTS, inputs, perturb, train_one_step
from petir.errors import PetirError
from petir.pet import (
    METHODS,
    VARIANTS,
    apply_pet,
    count_on_config,
    count_parameters,
    make_config,
    resolve,
    resolve_method,
    resolved_budget,
    saved_budget,
    saved_method_name,
)
from petir.pet.additions import merge_additions
from petir.pet.base import BesideBlock, SublayerOutput
from petir.pet.linked import BottleneckLinkedModule


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


def with_method(base: BertModel, name: str, options: dict) -> BertModel:
    model = copy.deepcopy(base)
    apply_pet(model, name, make_config(name, options))
    return model


def test_registry_lists_every_method():
    assert set(METHODS) == {"full", "bitfit", "lora", "adapter", "prefix", "mam", "iaa", "linked", "partial"}
    assert {"iaa-s", "iaa-l", "iaa-m", "linked-bottleneck", "linked-hidden", "linked-side"} <= set(VARIANTS)
    # the paper's scattered baselines; IAA and the linked adapters connect their modules, full trains everything
    scattered = {name for name, method in METHODS.items() if method.scattered}
    assert scattered == {"bitfit", "lora", "adapter", "prefix", "mam"}


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


#: Methods with a prefix: its random keys and values take attention mass from the first step, by design.
WITH_PREFIX = {"prefix", "mam"}


@pytest.mark.parametrize(
    ("name", "options"),
    [v for v in PET_VARIANTS if v[0] not in WITH_PREFIX],
    ids=[i for i, v in zip(PET_IDS, PET_VARIANTS, strict=True) if v[0] not in WITH_PREFIX],
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
        ("mam", (("num_prefix", r), ("bottleneck", r))): layers * (2 * r * hidden + bottleneck),
        ("iaa", (("placement", "sublayer"), ("r", r), ("ar", r))): 2 * layers * 2 * bottleneck,
        ("iaa", (("placement", "layer"), ("r", r), ("ar", r))): 3 * layers * bottleneck,
        ("iaa", (("placement", "model"), ("r", r), ("ar", r))): (2 * layers + 1) * bottleneck,
        ("linked", (("bottleneck", r), ("topology", "bottleneck"))): layers * 2 * bottleneck + (2 * layers - 1) * r * r,
        ("linked", (("bottleneck", r), ("topology", "hidden"))): layers * 2 * bottleneck
        + (2 * layers - 1) * hidden * r,
        ("linked", (("bottleneck", r), ("topology", "side"))): 2 * layers * (hidden * r + r)
        + (2 * layers - 1) * r * r
        + (r * hidden + hidden),
    }
    for (name, options), count in expected.items():
        model = with_method(base, name, dict(options))
        assert count_parameters(model)[0] == count, (name, options)


#: The variants with a budget preset: full fine-tuning and its partial ablations train the backbone's own weights.
BUDGETED = [(name, pair) for name, pair in zip(PET_IDS, PET_VARIANTS, strict=True) if VARIANTS[name][1].budgets]


@pytest.mark.parametrize(("name", "options"), [pair for _, pair in BUDGETED], ids=[variant for variant, _ in BUDGETED])
def test_default_configs_train_under_one_percent_of_a_minilm_sized_backbone(name, options):
    config = BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
    trainable, total = count_on_config(config, name, make_config(name, options))
    assert trainable / total < 0.01


def test_linked_adapters_give_the_bottom_module_a_trainable_path_to_the_output():
    """With every up-projection but the top one at zero, only the aside links can carry a change of the bottom
    module to the output: linked modules do, scattered adapters cannot."""
    base = tiny_bert(layers=3)
    outputs = {}
    for name, options in (("linked", {"topology": "bottleneck", "link_init": "identity"}), ("adapter", {})):
        model = with_method(base, name, options)
        modules = [m for m in model.modules() if hasattr(m, "up") and hasattr(m, "down")]
        torch.nn.init.normal_(modules[-1].up.weight)
        reference = model(**inputs()).last_hidden_state
        with torch.no_grad():
            modules[0].down.weight.add_(1.0)
        outputs[name] = (model(**inputs()).last_hidden_state - reference).abs().max().item()
    assert outputs["linked"] > 1e-3
    assert outputs["adapter"] == 0.0


def test_side_topology_needs_no_backpropagation_through_the_backbone():
    model = with_method(tiny_bert(), "linked", {"topology": "side"})
    flags = []
    model.encoder.frozen.layer[0].register_forward_hook(lambda m, i, out: flags.append(out.requires_grad))
    output = model(**inputs()).last_hidden_state
    assert flags == [False] and output.requires_grad


def test_bottleneck_links_start_closed_unless_asked():
    model = with_method(tiny_bert(), "linked", {"topology": "bottleneck", "bottleneck": 4})
    links = [m.link for m in model.modules() if isinstance(m, BottleneckLinkedModule) and m.link is not None]
    assert links and all(not link.weight.any() for link in links)
    model = with_method(tiny_bert(), "linked", {"topology": "bottleneck", "bottleneck": 4, "link_init": "identity"})
    assert all(
        torch.equal(m.link.weight, torch.eye(4))
        for m in model.modules()
        if isinstance(m, BottleneckLinkedModule) and m.link
    )


def test_closed_links_get_gradient_once_the_up_projections_have_moved():
    """Zero-initialised links are not a dead end: the pathway opens through training."""
    model = with_method(tiny_bert(layers=3), "linked", {"topology": "bottleneck", "bottleneck": 4})
    sites = [m for m in model.modules() if isinstance(m, BottleneckLinkedModule)]
    torch.nn.init.normal_(sites[-1].up.weight)  # as after a first optimizer step
    model(**inputs()).last_hidden_state.sum().backward()
    assert sites[-1].link.weight.grad.abs().sum() > 0


def test_configs_coerce_cli_strings_and_refuse_unknown_options():
    config = make_config("linked", {"bottleneck": "32", "positions": "ffn", "topology": "side"})
    assert (config.bottleneck, config.positions, config.topology) == (32, ("ffn",), "side")
    assert make_config("lora", {"target_modules": ["query", "key"]}).target_modules == ("query", "key")
    with pytest.raises(
        PetirError, match="has no option rank; options: alpha, dropout, embedding_rank, layer_norms, r, target_modules"
    ):
        make_config("lora", {"rank": "4"})
    with pytest.raises(PetirError, match="PET option bottleneck must be an integer from 1 to 4096, got 'big'"):
        make_config("adapter", {"bottleneck": "big"})
    with pytest.raises(PetirError, match="unknown PET method 'ia3'"):
        make_config("ia3")
    with pytest.raises(PetirError, match="unknown topology 'ring'"):
        with_method(tiny_bert(), "linked", {"topology": "ring"})
    with pytest.raises(PetirError, match="unknown placement 'stack'"):
        with_method(tiny_bert(), "iaa", {"placement": "stack"})
    # as petir.train resolves --method iaa --pet placement=stack: the choice is named, not "none of the variants"
    for method, key in (("iaa", "placement"), ("linked", "topology")):
        with pytest.raises(PetirError, match=f"^unknown {key} 'stack'; choose from "):
            resolve_method(method, {key: "stack"}, None)


def test_non_transformers_modules_are_refused_with_a_clear_message():
    with pytest.raises(PetirError, match="not a transformers encoder.*supported architectures: bert"):
        apply_pet(torch.nn.Linear(4, 4), "adapter", make_config("adapter"))


# -- IAA: where the aside modules sit (the paper's Figure 3) ---------------------------------------------------------
def _recorder(records: dict, key: str):
    def hook(module, args, output):
        records[key] = (args, output)

    return hook


def test_iaa_l_aside_reads_each_layer_input_and_is_added_after_its_last_add_and_norm():
    model = perturb(with_method(tiny_bert(layers=3), "iaa", {"placement": "layer", "r": 4, "ar": 6}))
    blocks = list(model.encoder.layer)
    assert all(isinstance(block, BesideBlock) for block in blocks)
    records: dict = {}
    for i, block in enumerate(blocks):
        block.frozen.register_forward_hook(_recorder(records, f"layer{i}"))
        block.frozen.output.frozen.LayerNorm.register_forward_hook(_recorder(records, f"norm{i}"))
        block.aside.register_forward_hook(_recorder(records, f"aside{i}"))
        block.register_forward_hook(_recorder(records, f"block{i}"))
    model(**inputs())
    for i in range(len(blocks)):
        layer_input, layer_output = records[f"layer{i}"][0][0], records[f"layer{i}"][1]
        assert records[f"aside{i}"][0][0] is layer_input  # exactly the block's input
        torch.testing.assert_close(layer_output, records[f"norm{i}"][1])  # the layer ends with its Add & Norm
        torch.testing.assert_close(records[f"block{i}"][1], layer_output + records[f"aside{i}"][1])
        if i > 0:  # the sum is the next layer's input: one pathway through the stack
            assert records[f"block{i - 1}"][1] is layer_input


def test_iaa_s_aside_reads_each_sublayer_input_and_is_added_after_its_add_and_norm():
    model = perturb(with_method(tiny_bert(layers=2), "iaa", {"placement": "sublayer", "r": 4, "ar": 6}))
    records: dict = {}
    for i, layer in enumerate(model.encoder.layer):
        layer.attention.register_forward_hook(_recorder(records, f"attention{i}"))
        layer.intermediate.register_forward_hook(_recorder(records, f"ffn{i}"))
        for name, sublayer in (("attention-out", layer.attention.output), ("ffn-out", layer.output)):
            assert isinstance(sublayer, SublayerOutput) and sublayer.serial is not None
            sublayer.aside.register_forward_hook(_recorder(records, f"{name}-aside{i}"))
            sublayer.frozen.LayerNorm.register_forward_hook(_recorder(records, f"{name}-norm{i}"))
            sublayer.register_forward_hook(_recorder(records, f"{name}{i}"))
    model(**inputs())
    for i in range(2):
        attention_input = records[f"attention{i}"][0][0]
        ffn_input = records[f"ffn{i}"][0][0]  # the attention block's output, aside included
        assert records[f"attention-out-aside{i}"][0][0] is attention_input
        assert records[f"ffn-out-aside{i}"][0][0] is ffn_input
        assert records[f"attention-out{i}"][1] is ffn_input
        for name in ("attention-out", "ffn-out"):
            after_norm, aside = records[f"{name}-norm{i}"][1], records[f"{name}-aside{i}"][1]
            torch.testing.assert_close(records[f"{name}{i}"][1], after_norm + aside)


def test_iaa_m_aside_runs_from_the_embeddings_to_the_last_layer_output():
    model = perturb(with_method(tiny_bert(layers=3), "iaa", {"placement": "model", "r": 4, "ar": 6}))
    assert isinstance(model.encoder, BesideBlock)
    records: dict = {}
    model.embeddings.register_forward_hook(_recorder(records, "embeddings"))
    model.encoder.frozen.layer[-1].register_forward_hook(_recorder(records, "last"))
    model.encoder.aside.register_forward_hook(_recorder(records, "aside"))
    output = model(**inputs()).last_hidden_state
    assert records["aside"][0][0] is records["embeddings"][1]
    torch.testing.assert_close(output, records["last"][1] + records["aside"][1])
    # The inside adapters stay in every layer.
    assert all(isinstance(layer.output, SublayerOutput) for layer in model.encoder.frozen.layer)


def test_mam_adds_a_scaled_parallel_adapter_before_the_ffn_layer_norm_and_a_prefix_in_attention():
    model = perturb(with_method(tiny_bert(), "mam", {"num_prefix": 3, "bottleneck": 4, "scaling": 4.0}))
    for layer in model.encoder.layer:
        sublayer = layer.output
        assert sublayer.parallel is not None and sublayer.serial is None and sublayer.aside is None
        assert layer.attention.self.prefix_key.shape[1] == 3
        assert not isinstance(layer.attention.output, SublayerOutput)  # nothing after self-attention
    records: dict = {}
    sublayer = model.encoder.layer[0].output
    sublayer.register_forward_hook(_recorder(records, "out"))
    sublayer.parallel.register_forward_hook(_recorder(records, "parallel"))
    model(**inputs())
    (hidden, ffn_input), output = records["out"]
    assert records["parallel"][0][0] is ffn_input
    h = sublayer.frozen.dense(hidden)
    expected = sublayer.frozen.LayerNorm(h + 4.0 * records["parallel"][1] + ffn_input)
    torch.testing.assert_close(output, expected)


def test_a_method_is_resolved_once_into_what_training_records():
    """petir.train resolves --method, --pet and --budget once (resolve_method): the options resolve gives, the
    checked config, the variant the options make and the budget a model records."""
    from petir.pet import make_config, resolve, resolve_method, resolved_budget

    resolved = resolve_method("iaa", {"placement": "model"}, "6.7")
    assert (resolved.method, resolved.options) == resolve("iaa", {"placement": "model"}, "6.7")
    assert resolved.config == make_config("iaa", resolved.options) and resolved.variant.name == "iaa-m"
    assert resolved.budget == resolved_budget("iaa", {"placement": "model"}, "6.7") == "6.7"
    assert resolve_method("adapter", {"bottleneck": "8"}).budget is None  # an explicit width replaces the preset's
    with pytest.raises(PetirError, match="PET option r must be"):
        resolve_method("lora", {"r": "0"})


# -- the paper's budgets (../shared/PAPER.md) -----------------------------------------------------------------------
def weight_count(variant: str, budget: str) -> int:
    """Trainable weights (matrices and prefix vectors, no biases) of a preset on BERT-base, counted on the meta
    device: the paper's #Params arithmetic."""
    from transformers import AutoModel

    name, options = resolve(variant, budget=budget)
    with torch.device("meta"):
        model = AutoModel.from_config(BertConfig(), add_pooling_layer=False)
        apply_pet(model, name, make_config(name, options))
    return sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and not n.endswith("bias"))


@pytest.mark.parametrize(
    ("variant", "budget", "weights"),
    [
        ("iaa-s", "0.5", 589_824),  # r=8, ar=8
        ("iaa-m", "0.5", 589_824),  # r=15, ar=24
        ("adapter", "0.5", 589_824),  # r=16
        ("mam", "0.5", 589_824),  # r=16, l=16
        ("lora", "0.5", 589_824),  # r=16 on query and value
        ("prefix", "0.5", 589_824),  # l=32
        ("iaa-s", "6.7", 7_372_800),  # r=100, ar=100
        ("adapter", "6.7", 7_372_800),  # r=200
        ("iaa-l", "6.7", 7_372_800),  # r=50, ar=300
        ("iaa-l", "0.5", 663_552),  # r=12, ar=12: the paper's widths give 0.6 %, a little over the budget
        ("iaa-l-equal", "0.5", 589_824),  # r=12, ar=8: 2r + ar = 32, the budget exactly
        ("iaa-l-equal", "6.7", 7_372_800),  # r=50, ar=300, as iaa-l
    ],
)
def test_budget_presets_reproduce_the_papers_parameter_counts_on_bert_base(variant, budget, weights):
    assert weight_count(variant, budget) == weights


def test_resolve_applies_variant_then_budget_then_explicit_options():
    assert resolve("iaa-l", budget="0.5") == ("iaa", {"placement": "layer", "r": 12, "ar": 12})
    assert resolve("iaa", {"placement": "model"}, "6.7") == ("iaa", {"placement": "model", "r": 185, "ar": 960})
    assert resolve("iaa-s", {"ar": "4"}, "0.5") == ("iaa", {"placement": "sublayer", "r": 8, "ar": "4"})
    assert resolve("adapter") == ("adapter", {"bottleneck": 16})  # no budget: the 0.5 % preset
    assert resolve("full") == ("full", {})
    with pytest.raises(PetirError, match="bitfit has no 6.7 % budget preset; its presets: 0.5"):
        resolve("bitfit", budget="6.7")
    with pytest.raises(PetirError, match="full has no 0.5 % budget preset; its presets: none"):
        resolve("full", budget="0.5")


def test_the_budget_a_model_records_is_the_preset_resolve_applies_and_keeps():
    assert resolved_budget("iaa-l", budget="6.7") == "6.7"
    assert resolved_budget("adapter") == "0.5"  # no budget: the 0.5 % preset
    assert resolved_budget("iaa-s", {"init": "near-identity"}) == "0.5"  # options beside the widths keep the preset
    assert resolved_budget("adapter", {"bottleneck": "200"}, "0.5") is None  # its width replaced: no preset holds
    assert resolved_budget("full") is None
    with pytest.raises(PetirError, match="bitfit has no 6.7 % budget preset"):
        resolved_budget("bitfit", budget="6.7")


def test_a_saved_budget_is_read_as_recorded_and_derived_from_the_widths_of_older_saves():
    name, options = resolve("lora", budget="6.7")
    saved = {"pet_method": name, "pet_config": make_config(name, options).to_dict()}
    assert saved_budget({**saved, "pet_budget": None}) is None  # recorded: no preset was named
    assert saved_budget(saved) == "6.7"  # saved before petir recorded it: the preset whose widths it has
    assert saved_budget({**saved, "pet_config": {**saved["pet_config"], "r": 7}}) is None
    with pytest.raises(PetirError, match="saved pet_budget '7' is no budget preset of lora"):
        saved_budget({**saved, "pet_budget": "7"})


def test_the_old_connected_name_points_to_linked_and_to_iaa():
    assert saved_method_name("connected") == "linked"
    with pytest.raises(PetirError, match="now called 'linked'.*the paper's method is 'iaa'"):
        make_config("connected")


#: What each partial fine-tuning ablation trains on a tiny BERT, by parameter name.
PARTIAL_TRAINS = {
    "partial": lambda name: "word_embeddings" not in name,
    "partial-no-layer-norms": lambda name: "LayerNorm" not in name,
    "partial-top-half": lambda name: name.startswith("encoder.layer.1."),
    "partial-attention": lambda name: ".attention." in name,
    "partial-ffn": lambda name: name.startswith("encoder.layer.") and ".attention." not in name,
}


@pytest.mark.parametrize("variant", PARTIAL_TRAINS)
def test_partial_fine_tuning_trains_exactly_its_part_of_the_backbone(variant):
    model = with_method(tiny_bert(), *resolve(variant))
    trained = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trained == {name for name, _ in model.named_parameters() if PARTIAL_TRAINS[variant](name)}
    assert trained  # every ablation trains something


def test_partial_parts_combine_and_unknown_ones_are_refused():
    model = with_method(tiny_bert(), "partial", {"train": "attention,embeddings", "freeze": "layer_norms"})
    trained = {name for name, p in model.named_parameters() if p.requires_grad}
    assert "embeddings.word_embeddings.weight" in trained and "encoder.layer.0.attention.self.query.weight" in trained
    assert not any("LayerNorm" in name or ".intermediate." in name for name in trained)
    with pytest.raises(PetirError, match="unknown part 'heads'; choose from all, embeddings"):
        with_method(tiny_bert(), "partial", {"train": "heads"})
    with pytest.raises(PetirError, match="trains nothing"):
        with_method(tiny_bert(), "partial", {"train": []})  # an empty list in a config.json


def test_lora_targets_that_name_no_module_are_refused_in_one_line_naming_them():
    """PEFT raises a traceback where no target matches, and drops a target that matches nothing beside others."""
    expected = (
        "LoRA target_modules 'nosuch' name no module of this 'bert' encoder; its linear layers: attention.self.query, "
        "attention.self.key, attention.self.value, attention.output.dense, intermediate.dense, output.dense"
    )
    for targets in ("nosuch", "intermediate.dense,nosuch"):
        with pytest.raises(PetirError) as refused:
            with_method(tiny_bert(), "lora", {"target_modules": targets})
        assert str(refused.value) == expected
    model = with_method(tiny_bert(), "lora", {"target_modules": "dense,word_embeddings"})  # PEFT's name matching
    trained = [name for name, p in model.named_parameters() if p.requires_grad]
    assert any("word_embeddings.lora" in name for name in trained) and any(".output.dense.lora" in n for n in trained)


def test_additions_count_in_any_methods_trainable_weights():
    """petir's additions: a rank-k embedding update costs k x (vocabulary + hidden), the LayerNorms 2 x hidden each,
    on top of the method's own modules, for any method (BitFit trains the LayerNorms' biases already)."""
    base = tiny_bert(layers=2, hidden=32)
    vocabulary, hidden, layer_norms = 50, 32, 1 + 2 * 2  # the embeddings' LayerNorm, two per layer
    for name, options, per_layer_norm in (
        ("adapter", {"bottleneck": 4}, 2 * hidden),
        ("lora", {"r": 4}, 2 * hidden),
        ("bitfit", {}, hidden),
    ):
        plain = count_parameters(with_method(base, name, options))[0]
        added = with_method(base, name, {**options, "embedding_rank": 3, "layer_norms": "true"})
        assert count_parameters(added)[0] == plain + 3 * (vocabulary + hidden) + layer_norms * per_layer_norm, name


@pytest.mark.parametrize(
    "config", [BertConfig(), BertConfig(hidden_size=384, num_hidden_layers=6, intermediate_size=1536)]
)
def test_iaa_l_plus_stays_inside_iaa_ls_own_count(config):
    """The fix is bought within the budget: iaa-l-plus (rank-1 embedding update, LayerNorms, r = ar = 9) trains no
    more weights than the paper's IAA-L widths, on BERT-base and on a MiniLM-sized backbone (172,380 of 173,016)."""
    plus = count_on_config(config, "iaa", make_config(*resolve("iaa-l-plus")))[0]
    paper = count_on_config(config, "iaa", make_config(*resolve("iaa-l")))[0]
    assert plus <= paper
    if config.hidden_size == 384:
        assert (plus, paper) == (172_380, 173_016)


def test_a_low_rank_embedding_update_folds_into_the_embedding_matrix():
    """petir.export's merge: the merged plain model computes what the trained one did, and keeps no extra module."""
    model = perturb(with_method(tiny_bert(), "lora", {"r": 4, "embedding_rank": 2})).eval()  # no LoRA dropout
    trained = model(**inputs()).last_hidden_state
    METHODS["lora"].merge(model)
    merge_additions(model)
    assert not any("low_rank" in name or "lora" in name for name, _ in model.named_parameters())
    torch.testing.assert_close(model(**inputs()).last_hidden_state, trained, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "config", [BertConfig(), BertConfig(hidden_size=384, num_hidden_layers=6, intermediate_size=1536)]
)
def test_iaa_ls_count_depends_on_two_inside_widths_plus_the_aside_width(config):
    """Why the study's iaa-l-wide-aside (6/24) and iaa-l-wide-inside (17/2) hold the 0.5 % preset's own count: per
    layer IAA-L has two inside adapters of width r and one aside of width ar, so pairs with equal 2r + ar match."""
    counts = {
        (r, ar): count_on_config(config, "iaa", make_config(*resolve("iaa-l", {"r": r, "ar": ar})))[0]
        for r, ar in ((12, 12), (6, 24), (17, 2))
    }
    assert len(set(counts.values())) == 1, counts
    if config.hidden_size == 384:
        assert counts[(12, 12)] == 173_016

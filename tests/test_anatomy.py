"""Every PET variant on a tiny random encoder of every architecture in the anatomy table (petir/anatomy.py): the
start equals the backbone, frozen weights stay frozen, padding does not leak, IAA's aside modules read their block's
input, LoRA finds the attention projections, the ONNX export matches torch, and training runs from the CLI.

The matrix is the anatomy table times the PET registry: an architecture or a method added to either is tested here
with no edit. A pair an architecture declares impossible (its ``no_prefix``) is skipped with that reason, and a test
checks the refusal is one line."""

from __future__ import annotations

import copy
import functools

import numpy as np
import pytest
import torch
from torch import nn

from conftest import (
    PET_IDS,
    PET_VARIANTS,
    TINY_PASSAGES,
    TINY_VOCAB,
    flags,
    inputs,
    perturb,
    run_cli,
    train_one_step,
)
from petir import tasks
from petir.anatomy import ANATOMIES, find
from petir.backbone import random_backbone, random_encoder, without_pooler
from petir.errors import PetirError
from petir.models import PetModel
from petir.onnx import export, load_inference_model
from petir.pet import DEFAULT_METHOD, apply_pet, make_config, resolve
from petir.pet.base import BesideBlock, SublayerNorm, SublayerOutput
from petir.pet.iaa import METHOD as IAA
from petir.pet.prefix import PrefixSelfAttention
from petir.tasks.rerank import CrossEncoder
from petir.tasks.retrieval import BiEncoder

ARCHITECTURES = list(ANATOMIES)
SIZES = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "max_position_embeddings": 64,
}
#: Settings under which a tiny config works as the checkpoints people use do, where the architecture's defaults
#: differ: DeBERTa-v3 (deberta-v2 model type) uses relative (disentangled) attention and no absolute positions or
#: token types.
AS_USED = {
    "deberta-v2": {
        "relative_attention": True,
        "position_biased_input": False,
        "pos_att_type": ["p2c", "c2p"],
        "max_relative_positions": -1,
        "position_buckets": 16,
        "norm_rel_ebd": "layer_norm",
        "share_att_key": True,
        "type_vocab_size": 0,
    }
}
MATRIX = [(arch, *variant) for arch in ARCHITECTURES for variant in PET_VARIANTS]
MATRIX_IDS = [f"{arch}-{variant}" for arch in ARCHITECTURES for variant in PET_IDS]


@functools.cache
def tiny_encoder(arch: str) -> nn.Module:
    """A tiny random encoder of ``arch`` without pooler, as petir loads backbones (cached: copy before changing)."""
    config = {**SIZES, **AS_USED.get(arch, {})}
    return without_pooler(random_encoder(arch, vocab_size=50, pad_token_id=0, **config)).eval()


def with_method(arch: str, name: str, options: dict) -> nn.Module:
    """The tiny encoder of ``arch`` with the method applied; skips a pair the architecture declares impossible."""
    model = copy.deepcopy(tiny_encoder(arch))
    try:
        apply_pet(model, name, make_config(name, options))
    except PetirError as error:
        gap = ANATOMIES[arch].no_prefix
        if gap and gap in str(error):
            pytest.skip(f"{arch} takes no prefix: {gap}")
        raise
    return model.eval()  # modules the method adds (LoRA's dropout, prefix attention) start in training mode


def states(output) -> torch.Tensor:
    """The hidden states of a block's output: a tensor, a tuple led by them, or a model output."""
    if isinstance(output, torch.Tensor):
        return output
    return output[0] if isinstance(output, tuple) else output.last_hidden_state


@pytest.mark.parametrize(("arch", "name", "options"), MATRIX, ids=MATRIX_IDS)
def test_the_model_starts_as_the_backbone(arch, name, options):
    """Zero up-projections start every module as the identity; a prefix cannot (its keys take attention mass),
    so there the test checks the prefix attention itself: with an empty prefix it is the architecture's own."""
    model = with_method(arch, name, options)
    prefixes = [module for module in model.modules() if isinstance(module, PrefixSelfAttention)]
    for module in prefixes:
        module.prefix_key = nn.Parameter(module.prefix_key[:, :0].detach())
        module.prefix_value = nn.Parameter(module.prefix_value[:, :0].detach())
    expected = tiny_encoder(arch)(**inputs()).last_hidden_state
    found = model(**inputs()).last_hidden_state
    if prefixes:  # scaled dot-product attention against the architecture's own kernel: rounding only
        torch.testing.assert_close(found, expected, atol=1e-5, rtol=1e-4)
    else:
        assert torch.equal(found, expected)


@pytest.mark.parametrize(("arch", "name", "options"), MATRIX, ids=MATRIX_IDS)
def test_frozen_weights_stay_unchanged_and_trainable_ones_move(arch, name, options):
    model = with_method(arch, name, options)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    assert any(p.requires_grad for p in model.parameters())
    train_one_step(model)
    for n, p in model.named_parameters():
        changed = not torch.equal(before[n], p)
        assert changed == p.requires_grad, f"{n}: requires_grad={p.requires_grad} but changed={changed}"


@pytest.mark.parametrize(("arch", "name", "options"), MATRIX, ids=MATRIX_IDS)
def test_padding_does_not_leak_into_real_tokens(arch, name, options):
    model = with_method(arch, name, options)
    train_one_step(model)  # make every module non-trivial
    batch = inputs()
    full = model(**batch).last_hidden_state
    alone = model(input_ids=batch["input_ids"][1:2, :5], attention_mask=batch["attention_mask"][1:2, :5])
    torch.testing.assert_close(alone.last_hidden_state[0], full[1, :5], atol=1e-5, rtol=1e-5)


# -- IAA: each aside module reads its block's input and is added after the block (the paper's Figure 3) ---------------
def _record(records: dict, key: str):
    """A forward hook keeping (first input, output) of a module; the input may come as a keyword."""

    def hook(module, args, kwargs, output):
        first = args[0] if args else kwargs["hidden_states"]
        records[key] = (first, states(output))

    return hook


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("variant", [variant.name for variant in IAA.variants])
def test_iaa_aside_modules_read_their_block_input_and_add_after_it(arch, variant):
    model = perturb(with_method(arch, *resolve(variant)))
    records: dict = {}
    # IAA-L's layers, IAA-M's encoder: an aside module beside each block.
    blocks = [module for module in model.modules() if isinstance(module, BesideBlock)]
    for i, block in enumerate(blocks):
        block.frozen.register_forward_hook(_record(records, f"frozen{i}"), with_kwargs=True)
        block.aside.register_forward_hook(_record(records, f"aside{i}"), with_kwargs=True)
        block.register_forward_hook(_record(records, f"block{i}"), with_kwargs=True)
    # IAA-S: an aside module at each sub-layer's Add & Norm, fused (BERT) or open (DistilBERT, MPNet's attention).
    holders = [m for m in model.modules() if isinstance(m, SublayerOutput | SublayerNorm) and m.aside is not None]
    for i, holder in enumerate(holders):
        norm = holder.frozen.LayerNorm if isinstance(holder, SublayerOutput) else holder.frozen
        norm.register_forward_hook(_record(records, f"norm{i}"), with_kwargs=True)
        holder.aside.register_forward_hook(_record(records, f"sub-aside{i}"), with_kwargs=True)
        holder.register_forward_hook(_record(records, f"holder{i}"), with_kwargs=True)
    layers = [layer.frozen if isinstance(layer, BesideBlock) else layer for layer in encoder_layers_of(model)]
    for i, layer in enumerate(layers):
        layer.register_forward_hook(_record(records, f"layer{i}"), with_kwargs=True)
    output = model(**inputs()).last_hidden_state

    assert blocks or holders
    for i in range(len(blocks)):
        block_input, block_output = records[f"frozen{i}"]
        assert records[f"aside{i}"][0] is block_input
        torch.testing.assert_close(records[f"block{i}"][1], block_output + records[f"aside{i}"][1])
        if i > 0 and len(blocks) > 1:  # IAA-L: each layer's sum is the next layer's input, one pathway
            assert records[f"block{i - 1}"][1] is block_input
    if blocks:  # the last block's sum is what the model returns (DeBERTa reads it from its hidden states)
        assert torch.equal(output, records[f"block{len(blocks) - 1}"][1])
    if holders:
        assert len(holders) == 2 * len(layers)
        for i in range(len(layers)):
            attention, ffn = 2 * i, 2 * i + 1
            assert records[f"sub-aside{attention}"][0] is records[f"layer{i}"][0]  # the attention's input
            assert records[f"sub-aside{ffn}"][0] is records[f"holder{attention}"][1]  # the feed-forward's input
            for k in (attention, ffn):
                torch.testing.assert_close(
                    records[f"holder{k}"][1], records[f"norm{k}"][1] + records[f"sub-aside{k}"][1]
                )


def encoder_layers_of(model: nn.Module) -> nn.ModuleList:
    """The layer list as the architecture keeps it (layers may be wrapped, the list is not)."""
    path = ANATOMIES[model.config.model_type].layers
    encoder, _, rest = path.partition(".")
    top = find(model, encoder)
    return find(top.frozen if isinstance(top, BesideBlock) else top, rest)


# -- where the other methods attach -----------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_lora_updates_the_query_and_value_projections_whatever_their_names(arch):
    from peft.tuners.lora import LoraLayer

    model = with_method(arch, *resolve("lora"))
    anatomy = ANATOMIES[arch]
    updated = sorted(name for name, module in model.named_modules() if isinstance(module, LoraLayer))
    per_layer = sorted(f"{anatomy.self_attention}.{anatomy.projections[role]}" for role in ("query", "value"))
    layers = anatomy.layers
    assert updated == sorted(f"{layers}.{i}.{path}" for i in range(SIZES["num_hidden_layers"]) for path in per_layer)


@pytest.mark.parametrize("arch", [arch for arch in ARCHITECTURES if ANATOMIES[arch].no_prefix])
def test_an_architecture_without_prefixes_refuses_them_in_one_line(arch):
    refused = []
    for (name, options), variant in zip(PET_VARIANTS, PET_IDS, strict=True):
        model = copy.deepcopy(tiny_encoder(arch))
        try:
            apply_pet(model, name, make_config(name, options))
        except PetirError as error:
            assert "\n" not in str(error) and ANATOMIES[arch].no_prefix in str(error)
            refused.append(variant)
    assert refused  # the declared gap is real: some registry method needs a prefix
    assert len(refused) < len(PET_VARIANTS)


# -- an encoder outside the map (ModernBERT): the methods that need no map train, the others refuse in one line ----
#: A tiny ModernBERT whose special tokens are TINY_VOCAB's (its defaults point past a 50-token vocabulary).
MODERNBERT = {
    **SIZES,
    "max_position_embeddings": 128,
    **{f"{token}_token_id": TINY_VOCAB.index(f"[{token.upper()}]") for token in ("cls", "sep", "mask")},
    "bos_token_id": TINY_VOCAB.index("[CLS]"),
    "eos_token_id": TINY_VOCAB.index("[SEP]"),
}


def modernbert(tmp_path) -> str:
    """A saved tiny random ModernBERT backbone, with TINY_VOCAB's word-piece tokenizer."""
    return str(random_backbone(tmp_path / "modernbert", TINY_VOCAB, 0, "modernbert", **MODERNBERT))


def test_methods_that_need_no_map_train_an_encoder_outside_it_and_the_others_refuse(tmp_path):
    from peft.tuners.lora import LoraLayer

    assert "modernbert" not in ANATOMIES
    backbone = modernbert(tmp_path)
    full = BiEncoder(backbone, *resolve("full"))
    assert full.parameter_report()["trainable"] == full.parameter_report()["backbone"]
    lora = BiEncoder(backbone, *resolve("lora"))
    updated = sorted(name for name, module in lora.encoder.named_modules() if isinstance(module, LoraLayer))
    # query, key and value are one fused Wqkv: the roles stand for the linear layers inside the attention, and
    # attn.Wo is not the feed-forward's mlp.Wo
    assert updated == [f"layers.{i}.attn.{name}" for i in range(SIZES["num_hidden_layers"]) for name in ("Wo", "Wqkv")]
    for model in (full, lora):
        before = model.encode(["the cat"])
        train_one_step(model.encoder)
        assert not np.allclose(model.encode(["the cat"]), before)
    for name, options in PET_VARIANTS:
        if name in ("full", "lora"):
            continue
        with pytest.raises(PetirError) as refusal:
            BiEncoder(backbone, name, options)
        message = str(refusal.value)
        assert "\n" not in message and message.startswith(f"{name} ") and "'modernbert'" in message
    # BitFit needs no map, but ModernBERT has no bias to train; its LayerNorm gains it can
    assert BiEncoder(backbone, "bitfit", {"layer_norm": "true"}).parameter_report()["trainable"] > 0
    # a re-ranker's head takes the dropout transformers' own classification heads take there (classifier_dropout)
    scores = CrossEncoder(backbone, *resolve("lora")).score(["the cat"], ["the cat sat on the mat"])
    assert scores.shape == (1,) and np.isfinite(scores).all()


def test_lora_on_an_unmapped_architecture_that_peft_knows_takes_pefts_targets():
    from peft.tuners.lora import LoraLayer

    # DeBERTa v1 projects query, key and value in one matrix, which PEFT targets as in_proj
    model = random_encoder("deberta", vocab_size=50, pad_token_id=0, **SIZES)
    apply_pet(model, "lora", make_config(*resolve("lora")))
    updated = sorted(name for name, module in model.named_modules() if isinstance(module, LoraLayer))
    assert updated == [f"encoder.layer.{i}.attention.self.in_proj" for i in range(SIZES["num_hidden_layers"])]


def test_train_help_on_a_backbone_lists_exactly_what_training_accepts(tmp_path, capsys):
    from petir.train import main as train_main

    with pytest.raises(SystemExit, match="0"):
        train_main(["--help", "--backbone", modernbert(tmp_path)])
    listed = capsys.readouterr().out
    rows = listed[listed.index("variants (--method NAME)") :].split("\n\n")[0].splitlines()[1:]
    assert [row.split()[0] for row in rows[:-1]] == ["full", "lora", "lora"]  # ModernBERT has no bias for BitFit
    refused = [name for name in PET_IDS if name not in ("full", "lora")]
    assert rows[-1].startswith("  not on") and rows[-1].endswith(": " + ", ".join(refused))


def test_an_architecture_with_a_mapped_layout_under_another_name_takes_its_entry():
    # camembert is RoBERTa's code under its own model_type: IAA-L (which needs the map) trains on it.
    model = with_method("camembert", *resolve("iaa-l"))
    assert ANATOMIES["camembert"] == ANATOMIES["roberta"]
    assert any(parameter.requires_grad for parameter in model.parameters())


def test_length_limits_leave_out_the_positions_a_token_cannot_use():
    """RoBERTa-style position ids start after the padding index: 514 position embeddings hold 512 tokens."""
    from transformers import AutoConfig

    for arch, anatomy in ANATOMIES.items():
        config = AutoConfig.for_model(arch, max_position_embeddings=514, pad_token_id=1)
        assert anatomy.max_tokens(config) == (512 if anatomy.positions_after_padding else 514), arch


# -- the models, ONNX and the CLI on every architecture ---------------------------------------------------------------
@pytest.fixture(scope="session")
def backbone_dir(tmp_path_factory):
    """``backbone_dir(arch)``: a saved tiny random backbone of ``arch`` (one per session and architecture)."""
    root = tmp_path_factory.mktemp("backbones")

    @functools.cache
    def make(arch: str) -> str:
        shape = {**SIZES, "max_position_embeddings": 128, **AS_USED.get(arch, {})}
        return str(random_backbone(root / arch, TINY_VOCAB, 0, arch, **shape))

    return make


def built(task_class: type[PetModel], backbone: str, arch: str, name: str, options: dict) -> PetModel:
    """A model of ``task_class`` on ``backbone``; skips a pair the architecture declares impossible."""
    try:
        return task_class(backbone, name, options)
    except PetirError as error:
        gap = ANATOMIES[arch].no_prefix
        if gap and gap in str(error):
            pytest.skip(f"{arch} takes no prefix: {gap}")
        raise


#: Every variant on every architecture; the default run exports the default method's variants (IAA: beside-block,
#: open and fused Add & Norm), the rest are marked slow.
ONNX_MATRIX = [
    pytest.param(name, options, marks=() if name == DEFAULT_METHOD else pytest.mark.slow, id=variant)
    for (name, options), variant in zip(PET_VARIANTS, PET_IDS, strict=True)
]


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize(("name", "options"), ONNX_MATRIX)
def test_bi_encoder_onnx_export_matches_torch(backbone_dir, tmp_path, arch, name, options):
    model_dir = perturb(built(BiEncoder, backbone_dir(arch), arch, name, options), seed=11).save(tmp_path / "model")
    _, check = export(model_dir)
    assert check < 1e-4
    torch_model, onnx_model = load_inference_model(model_dir, "torch"), load_inference_model(model_dir, "onnx")
    for batch_size, max_length in ((3, None), (1, 6)):  # other lengths and batch sizes than the traced example's
        expected = torch_model.encode(TINY_PASSAGES, "passage", batch_size, max_length=max_length)
        found = onnx_model.encode(TINY_PASSAGES, "passage", batch_size, max_length=max_length)
        assert float(np.abs(found - expected).max()) < 1e-4


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_cross_encoder_builds_its_head_and_scores_on_every_architecture(backbone_dir, arch):
    model = built(CrossEncoder, backbone_dir(arch), arch, *resolve("iaa-l"))
    scores = model.score(["the cat", "gene"], ["the cat sat on the mat", "protein gene cell"])
    assert scores.shape == (2,) and np.isfinite(scores).all()
    assert model.max_length <= ANATOMIES[arch].max_tokens(model.encoder.config)


def write_triples(path) -> None:
    """Four (query, positive, negative) training triples over TINY_VOCAB, as a TSV file."""
    rows = [("cat on a mat", "the cat sat on the mat", "a dog"), ("cancer risk", "cancer risk increase", "a mat")]
    rows += [("gene", "protein gene cell", "the cat"), ("dog", "a dog sat", "gene study")]
    path.write_text("".join("\t".join(row) + "\n" for row in rows))


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_train_cli_trains_saves_and_loads_on_a_random_backbone_of_every_architecture(backbone_dir, tmp_path, arch):
    from petir.train import main as train_main

    write_triples(tmp_path / "triples.tsv")
    argv = flags(triples=tmp_path / "triples.tsv", backbone=backbone_dir(arch), steps=2, batch_size=2, device="cpu")
    error = run_cli(train_main, [*argv, *flags(dev_queries=1, eval_every=2, output=tmp_path / "run")])
    assert error is None, error
    model = tasks.load(tmp_path / "run" / "model")
    assert model.encoder.config.model_type == arch
    assert model.encode(["the cat"]).shape == (1, SIZES["hidden_size"])

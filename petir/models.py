"""The PET model format shared by every task: a frozen backbone, one PET method, the task's head, and the save
format. Each task (:mod:`petir.tasks`) is one subclass of :class:`PetModel`; :func:`petir.tasks.load` finds the
class by the task name the directory records (this module knows no task). A saved directory holds

- ``config.json``: ``model_type: petir``, the task, the backbone name and fingerprint, the PET method, its
  config and budget preset, and the task options (pooling, similarity, lengths). It explains the directory by
  itself, and lets ``transformers.AutoModel`` (and so Pyserini) load it once :mod:`petir_pyserini` is installed;
- ``petir_state.safetensors``: only the trained tensors (PET modules and task head);
- the tokenizer files.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

import petir
from petir.anatomy import max_tokens
from petir.backbone import DEFAULT_BACKBONE, fingerprint, load_backbone, portable_name
from petir.batching import GraphOutput, tokenize
from petir.data import Corpus, Pools, Queries, Run, read_json, require_fields
from petir.errors import ModelMismatchError, PetirError
from petir.files import recover_directory, staged_directory
from petir.options import make_options
from petir.pet import (
    DEFAULT_METHOD,
    Variant,
    apply_pet,
    count_parameters,
    get_method,
    make_config,
    saved_budget,
    saved_method_name,
    variant_of,
)
from petir.sampling import Group

CONFIG_FILE = "config.json"
STATE_FILE = "petir_state.safetensors"
CARD_FILE = "README.md"
MODEL_TYPE = "petir"


#: What every saved config.json names, with its JSON type, and what to do when a model directory is damaged.
REQUIRED_KEYS = {"task": str, "backbone": str, "backbone_fingerprint": str, "pet_method": str, "pet_config": dict}
DAMAGED = "the model directory is damaged: copy it again, or save the model again"


#: Parameter-name changes since earlier petir versions: (old, new) fragments. A sub-layer's serial module was
#: ``module`` before IAA added the parallel and aside ones.
RENAMED_PARAMETERS = ((".output.module.", ".output.serial."),)


def _current_name(name: str, expected: set[str]) -> str:
    """``name`` as this version calls it, where a saved state predates a rename."""
    for old, new in RENAMED_PARAMETERS:
        if name not in expected and old in name and name.replace(old, new) in expected:
            return name.replace(old, new)
    return name


def read_state(path: Path) -> dict[str, torch.Tensor]:
    """The trained tensors of a saved model (``petir_state.safetensors``); a truncated or foreign file, or a tensor
    holding NaN or infinity (which would score every passage NaN), is one line."""
    try:
        state = load_file(path)
    except (OSError, SafetensorError) as error:
        raise PetirError(f"{path}: cannot read the trained tensors ({error}); {DAMAGED}") from None
    for name, tensor in state.items():
        if not tensor.is_floating_point():
            raise PetirError(f"{path}: tensor {name} holds {tensor.dtype}, not trained weights; {DAMAGED}")
        if not torch.isfinite(tensor).all():
            raise PetirError(
                f"{path}: tensor {name} holds NaN or infinite values (a training that diverged, or damage); "
                "train it again (a lower --lr), or copy an undamaged model"
            )
    return state


class PetModel(nn.Module):
    """A frozen backbone with one PET method applied, plus the task's own head (if any).

    A task's model is one subclass (in its module of :mod:`petir.tasks`): its ``task`` name (what ``--task`` and
    config.json say), its options dataclass (saved in config.json, and the source of its CLI flags), its loss
    (``collate``/``forward``), its inference function for ONNX (``inference``, output ``graph_output``) and its
    ranking (``rank``). ``Subclass(backbone, method)`` loads the backbone; :meth:`on_backbone` builds on one already
    in memory. ``pet_budget`` is the budget preset the PET
    options were resolved at (:func:`petir.pet.resolved_budget`; None: none named), saved for the card and the study.
    """

    task: ClassVar[str]
    options_class: ClassVar[type]
    graph_output: ClassVar[GraphOutput]
    #: The task's registry entry (a :class:`petir.tasks.Task`), set when the entry is made: what the model card
    #: says of the task (its kind, usage, pipeline tag, export), read without asking a registry.
    task_record: ClassVar[Any]

    def __init__(
        self,
        backbone: str = DEFAULT_BACKBONE,
        method: str = DEFAULT_METHOD,
        pet_options: dict[str, Any] | None = None,
        pet_budget: str | None = None,
        **options: Any,
    ):
        encoder, tokenizer = load_backbone(backbone)
        self._build(backbone, encoder, tokenizer, method, pet_options, pet_budget, options)

    @classmethod
    def on_backbone(
        cls,
        backbone: str,
        encoder: nn.Module,
        tokenizer: Any,
        method: str = DEFAULT_METHOD,
        pet_options: dict[str, Any] | None = None,
        pet_budget: str | None = None,
        **options: Any,
    ) -> PetModel:
        """Build the model on a backbone already in memory (``encoder``, ``tokenizer``, loaded from ``backbone``)."""
        model = cls.__new__(cls)
        model._build(backbone, encoder, tokenizer, method, pet_options, pet_budget, options)
        return model

    def _build(
        self,
        backbone: str,
        encoder: nn.Module,
        tokenizer: Any,
        method: str,
        pet_options: dict[str, Any] | None,
        pet_budget: str | None,
        options: dict[str, Any],
    ) -> None:
        task_options = make_options(self.options_class, options)  # bad options fail before any PET work
        nn.Module.__init__(self)
        self.backbone = portable_name(backbone)
        self.encoder, self.tokenizer = encoder, tokenizer
        self.length_limit = _length_limit(self.encoder, self.tokenizer)
        self.backbone_fingerprint = fingerprint(self.encoder)
        self.backbone_parameters = count_parameters(self.encoder)[1]
        self.method = method
        self.pet_config = make_config(method, pet_options)
        self.pet_budget = pet_budget
        apply_pet(self.encoder, method, self.pet_config)
        _own_trainable_parameters(self.encoder)
        self._setup(task_options)

    def _setup(self, options: Any) -> None:
        """Keep the task's options (an ``options_class`` instance), each as an attribute of its name (what
        :meth:`options` saves in config.json, a length within the backbone's limit), and build its head, if any."""
        raise NotImplementedError

    @property
    def variant(self) -> Variant:
        """The named variant this model's PET config is (iaa with placement=model: iaa-m)."""
        return variant_of(self.method, self.pet_config)

    # -- what is trained -------------------------------------------------------------------------------------
    def enable_gradient_checkpointing(self) -> None:
        """Recompute each layer's activations in the backward pass (less memory, about a third more compute)."""
        if not get_method(self.method).layer_local:
            raise PetirError(
                f"--gradient-checkpointing cannot be used with {self.method}: its modules pass state between layers "
                "that a recomputed layer would not see"
            )
        if not self.encoder.supports_gradient_checkpointing:
            raise PetirError(
                f"--gradient-checkpointing cannot be used with a {self.encoder.config.model_type} backbone: "
                "transformers cannot checkpoint its layers"
            )
        kwargs = {"use_reentrant": False}  # the reentrant form needs inputs that require grad: frozen embeddings don't
        if hasattr(self.encoder, "activation_checkpointing_enable"):  # transformers' name since 5.2x
            self.encoder.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            self.encoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)

    def parameter_report(self) -> dict[str, float]:
        """Trainable parameters (PET modules + task head) and their share of the backbone, in percent."""
        trainable = count_parameters(self)[0]
        return {
            "trainable": trainable,
            "backbone": self.backbone_parameters,
            "percent": 100.0 * trainable / self.backbone_parameters,
        }

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return {name: p.detach() for name, p in self.named_parameters() if p.requires_grad}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor], source: str = "the saved state") -> None:
        """Copy ``state`` (trained tensors by name) into this model; ``source`` names it in errors (a file)."""
        expected = {name for name, p in self.named_parameters() if p.requires_grad}
        state = {_current_name(name, expected): tensor for name, tensor in state.items()}
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        if missing or unexpected:
            raise PetirError(
                f"{source} does not fit {self.method} on this backbone: "
                f"missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
                f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}"
            )
        parameters = dict(self.named_parameters())
        for name, tensor in state.items():
            if tensor.shape != parameters[name].shape:
                raise PetirError(
                    f"{source}: tensor {name} has shape {list(tensor.shape)}, but {self.method} on this backbone "
                    f"needs {list(parameters[name].shape)}; {DAMAGED}"
                )
        with torch.no_grad():
            for name, tensor in state.items():
                parameters[name].copy_(tensor)

    # -- task options (saved in config.json) -----------------------------------------------------------------
    def options(self) -> dict[str, Any]:
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self.options_class)}

    # -- save / load -----------------------------------------------------------------------------------------
    def config_dict(self) -> dict[str, Any]:
        return {
            "model_type": MODEL_TYPE,
            "petir_version": petir.__version__,
            "task": self.task,
            "backbone": self.backbone,
            "backbone_fingerprint": self.backbone_fingerprint,
            "pet_method": self.method,
            "pet_config": self.pet_config.to_dict(),
            "pet_budget": self.pet_budget,
            "parameters": self.parameter_report(),
            **self.options(),
        }

    def save(
        self, directory: str | os.PathLike, training: dict[str, Any] | None = None, *, replace: bool = False
    ) -> Path:
        """Write the model atomically (a crash mid-save leaves the previous directory intact), with its model card
        (``README.md``; ``training`` says how it was trained, see :func:`petir.card.model_card`). An existing
        ``directory`` is refused unless ``replace`` (and then replaced only if it holds nothing but a saved model's
        files, see :func:`petir.files.replace_directory`)."""
        from petir.card import model_card

        config = self.config_dict()
        with staged_directory(directory, replace=replace) as staging:
            state = {name: t.to("cpu").contiguous() for name, t in self.trainable_state_dict().items()}
            save_file(state, staging / STATE_FILE, metadata={"petir_method": self.method})
            (staging / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
            self.tokenizer.save_pretrained(staging)
            (staging / CARD_FILE).write_text(model_card(self, training))
        return Path(directory)

    @classmethod
    def saved_options(cls, config: dict[str, Any]) -> dict[str, Any]:
        """The task options a saved config holds, under their current names (an options class's ``RENAMED``: old ->
        current); the rest take their defaults (a config saved before they existed)."""
        renamed = getattr(cls.options_class, "RENAMED", {})
        values = {renamed.get(key, key): value for key, value in config.items()}
        names = {field.name for field in dataclasses.fields(cls.options_class)}
        return {key: values[key] for key in names if key in values}

    @classmethod
    def check_config(cls, config: dict[str, Any], path: Path) -> None:
        """The saved values' types and ranges (PET config and task options), so that nothing reading the config
        later (ONNX, Pyserini) meets a string for a size; a bad one is one line naming ``path``."""
        try:
            make_config(saved_method_name(config["pet_method"]), config["pet_config"])
            make_options(cls.options_class, cls.saved_options(config))
        except PetirError as error:
            raise PetirError(f"{path}: {error}; {DAMAGED}") from None

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike,
        backbone: str | None = None,
        device: str | torch.device = "cpu",
        *,
        loaded: tuple[nn.Module, Any] | None = None,
        config: dict[str, Any] | None = None,
    ) -> PetModel:
        """Load a saved model of this class's task (:func:`petir.tasks.load` loads one of any task); ``backbone``
        overrides where the backbone weights are read from (its fingerprint must still match the one the state was
        trained on), ``loaded`` gives them already in memory as ``(encoder, tokenizer)``
        (:class:`petir.tasks.SharedBackbone`), and ``config`` the directory's config.json already read and checked
        (:func:`petir.tasks.read_config`)."""
        if not hasattr(cls, "task"):
            raise TypeError("PetModel.load loads a model of the class's own task: petir.tasks.load loads any task's")
        if config is None:
            config = read_saved_config(directory)
            cls.check_config(config, Path(directory) / CONFIG_FILE)
        if config["task"] != cls.task:
            raise PetirError(f"{directory} holds a {config['task']} model, not a {cls.task} model ({cls.__name__})")
        source = backbone or config["backbone"]
        loaded = loaded or load_backbone(source)
        found = fingerprint(loaded[0])
        if found != config["backbone_fingerprint"]:
            raise ModelMismatchError(
                f"{directory} was trained on backbone {config['backbone']!r} (fingerprint "
                f"{config['backbone_fingerprint']}), but {source!r} has fingerprint {found}; "
                "load it onto the backbone it was trained on"
            )
        method = saved_method_name(config["pet_method"])
        try:  # what the saved config asks for may not build (a width the backbone cannot take): name the file
            budget = saved_budget(config)
            options = cls.saved_options(config)
            model = cls.on_backbone(source, *loaded, method, config["pet_config"], budget, **options)
        except PetirError as error:
            raise PetirError(f"{Path(directory) / CONFIG_FILE}: {error}") from None
        model.backbone = config["backbone"]
        model._load_state(directory)
        return model.to(device).eval()

    def restore(self, directory: str | os.PathLike) -> None:
        """Load the trained tensors saved in ``directory`` into this model, which must be built the same way."""
        config = read_saved_config(directory)
        same = (
            config["task"] == self.task
            and config["backbone_fingerprint"] == self.backbone_fingerprint
            and saved_method_name(config["pet_method"]) == self.method
            and make_config(self.method, config["pet_config"]) == self.pet_config
            and all(self.saved_options(config).get(name) == value for name, value in self.options().items())
        )
        if not same:
            raise PetirError(f"{directory} was saved from a differently configured model than this one")
        self._load_state(directory)

    def _load_state(self, directory: str | os.PathLike) -> None:
        path = Path(directory) / STATE_FILE
        self.load_trainable_state_dict(read_state(path), str(path))

    # -- training and ranking, per task ----------------------------------------------------------------------
    def collate(self, groups: Sequence[Group]) -> dict[str, Any]:
        """Tokenise training groups (query, [positive, negatives...]) into a batch for :meth:`forward`."""
        raise NotImplementedError

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """The training loss of a collated batch (a forward so that DistributedDataParallel can wrap it)."""
        raise NotImplementedError

    def inference(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """What the ONNX graph computes from the tokenizer's inputs: the task's :attr:`graph_output`."""
        raise NotImplementedError

    def example_features(self, queries: Sequence[str], passages: Sequence[str]) -> dict[str, torch.Tensor]:
        """A padded batch of :meth:`inference`'s inputs in the model's own tokenisation (ONNX tracing and parity
        checks), from example queries and passages."""
        raise NotImplementedError

    def rank(self, queries: Queries, pools: Pools, corpus: Corpus, batch_size: int = 32, progress: bool = False) -> Run:
        """Score each query's candidate passages; returns the run (per query, best first)."""
        raise NotImplementedError

    # -- shared plumbing -------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def tokenize(self, texts: Sequence[str], max_length: int, pairs: Sequence[str] | None = None) -> dict:
        features = tokenize(self.tokenizer, texts, min(max_length, self.length_limit), pairs)
        return {name: tensor.to(self.device) for name, tensor in features.items()}


def _length_limit(encoder: nn.Module, tokenizer: Any) -> int:
    """The most tokens the backbone takes: the position embeddings a token can use, or the tokenizer's limit if
    smaller."""
    limit = max_tokens(encoder.config)
    declared = getattr(tokenizer, "model_max_length", limit)
    return min(limit, declared) if declared < 10**6 else limit  # tokenizers without a limit declare 1e30


def _own_trainable_parameters(module: nn.Module) -> None:
    """Give every trainable parameter its own storage, so training or loading a state never writes into frozen
    weights that other models may share (see :class:`petir.tasks.SharedBackbone`)."""
    for submodule in module.modules():
        for name, parameter in list(submodule._parameters.items()):
            if parameter is not None and parameter.requires_grad:
                submodule._parameters[name] = nn.Parameter(parameter.detach().clone())


def read_saved_config(directory: str | os.PathLike) -> dict[str, Any]:
    """The saved ``config.json`` of a petir model directory, checked for what every task's has (its model type and
    :data:`REQUIRED_KEYS`); every problem is one line naming the file. Its task's own values are checked by the
    task's class (:meth:`PetModel.check_config`, :func:`petir.tasks.read_config`)."""
    path = recover_directory(directory) / CONFIG_FILE  # a save killed mid-swap left the previous copy beside it
    if not path.is_file():
        raise PetirError(f"{directory} is not a petir model directory (no {CONFIG_FILE})")
    config = read_json(path, "petir model config", DAMAGED)
    if config.get("model_type") != MODEL_TYPE:
        raise PetirError(f"{path} is not a petir model (model_type {config.get('model_type')!r})")
    require_fields(config, REQUIRED_KEYS, str(path), DAMAGED)
    return config

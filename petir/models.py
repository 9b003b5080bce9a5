"""Retrieval models built from one backbone and one PET method: the bi-encoder and the cross-encoder.

Both share everything PET-related (:class:`PetModel`): loading the backbone, applying the method, counting
parameters, and the save format. A saved directory holds

- ``config.json``: ``model_type: petir``, the task, the backbone name and fingerprint, the PET method, its
  config and budget preset, and the task options (pooling, similarity, lengths). It explains the directory by
  itself, and lets ``transformers.AutoModel`` (and so Pyserini) load it once :mod:`petir_pyserini` is installed;
- ``petir_state.safetensors``: only the trained tensors (PET modules and task head);
- the tokenizer files.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

import petir
from petir import cli
from petir.anatomy import anatomy_of
from petir.backbone import DEFAULT_BACKBONE, fingerprint, load_backbone, portable_name
from petir.data import Corpus, Queries, Run, read_json, require_fields
from petir.errors import ModelMismatchError, PetirError, check_choice, check_type
from petir.files import recover_directory, staged_directory
from petir.pet import (
    DEFAULT_METHOD,
    apply_pet,
    count_parameters,
    get_method,
    make_config,
    saved_budget,
    saved_method_name,
)
from petir.sampling import Group

CONFIG_FILE = "config.json"
STATE_FILE = "petir_state.safetensors"
CARD_FILE = "README.md"
MODEL_TYPE = "petir"


#: Task names of earlier petir versions, still found in saved config.json files.
RENAMED_TASKS = {"bi-encoder": "retrieval", "cross-encoder": "rerank"}
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

    A task is one subclass: its ``task`` name (what ``--task`` and config.json say), its options dataclass (saved in
    config.json, and the source of its CLI flags), its loss (``collate``/``forward``), its inference function for
    ONNX (``inference``, output ``graph_output``) and its ranking (``rank``). ``BiEncoder(backbone, method)`` loads
    the backbone; :meth:`on_backbone` builds on one already in memory. ``pet_budget`` is the budget preset the PET
    options were resolved at (:func:`petir.pet.resolved_budget`; None: none named), saved for the card and the study.
    """

    task: ClassVar[str]
    options_class: ClassVar[type]
    graph_output: ClassVar[str]
    _tasks: ClassVar[dict[str, type[PetModel]]] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.task in PetModel._tasks:
            raise RuntimeError(f"two tasks are named {cls.task!r}")
        PetModel._tasks[cls.task] = cls

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
        """Set the task's options (an ``options_class`` instance) and build its head, if any."""
        raise NotImplementedError

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
            (staging / CARD_FILE).write_text(model_card(config, training))
        return Path(directory)

    @staticmethod
    def read_config(directory: str | os.PathLike) -> dict[str, Any]:
        """The saved ``config.json``, checked: every problem is one line naming the file."""
        path = recover_directory(directory) / CONFIG_FILE  # a save killed mid-swap left the previous copy beside it
        if not path.is_file():
            raise PetirError(f"{directory} is not a petir model directory (no {CONFIG_FILE})")
        config = read_json(path, "petir model config", DAMAGED)
        if config.get("model_type") != MODEL_TYPE:
            raise PetirError(f"{path} is not a petir model (model_type {config.get('model_type')!r})")
        require_fields(config, REQUIRED_KEYS, str(path), DAMAGED)
        config["task"] = RENAMED_TASKS.get(config["task"], config["task"])
        if config["task"] not in PetModel._tasks:
            raise PetirError(f"{path}: unknown task {config['task']!r}; petir has {', '.join(PetModel._tasks)}")
        try:  # the values' types, so that nothing reading the config later (ONNX, Pyserini) meets a string for a size
            make_config(saved_method_name(config["pet_method"]), config["pet_config"])
            make_options(PetModel._tasks[config["task"]].options_class, _saved_options(config))
        except PetirError as error:
            raise PetirError(f"{path}: {error}; {DAMAGED}") from None
        return config

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike,
        backbone: str | None = None,
        device: str | torch.device = "cpu",
        *,
        loaded: tuple[nn.Module, Any] | None = None,
    ) -> PetModel:
        """Load a saved model; ``backbone`` overrides where the backbone weights are read from (its fingerprint
        must still match the one the state was trained on), and ``loaded`` gives them already in memory as
        ``(encoder, tokenizer)`` (:class:`SharedBackbone`)."""
        config = cls.read_config(directory)
        task_class = PetModel._tasks[config["task"]]
        if not issubclass(task_class, cls):
            raise PetirError(
                f"{directory} holds a {config['task']} model ({task_class.__name__}), not a {cls.task} model "
                f"({cls.__name__})"
            )
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
            options = _saved_options(config)
            model = task_class.on_backbone(source, *loaded, method, config["pet_config"], budget, **options)
        except PetirError as error:
            raise PetirError(f"{Path(directory) / CONFIG_FILE}: {error}") from None
        model.backbone = config["backbone"]
        model.restore(directory)
        return model.to(device).eval()

    def restore(self, directory: str | os.PathLike) -> None:
        """Load the trained tensors saved in ``directory`` into this model, which must be built the same way."""
        config = self.read_config(directory)
        same = (
            config["task"] == self.task
            and config["backbone_fingerprint"] == self.backbone_fingerprint
            and saved_method_name(config["pet_method"]) == self.method
            and make_config(self.method, config["pet_config"]) == self.pet_config
            and all(config.get(name) == value for name, value in self.options().items())
        )
        if not same:
            raise PetirError(f"{directory} was saved from a differently configured model than this one")
        path = Path(directory) / STATE_FILE
        self.load_trainable_state_dict(read_state(path), str(path))

    # -- training and ranking, per task ----------------------------------------------------------------------
    def collate(self, groups: Sequence[Group]) -> dict[str, Any]:
        """Tokenise training groups (query, [positive, negatives...]) into a batch for :meth:`forward`."""
        raise NotImplementedError

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """The training loss of a collated batch (a forward so that DistributedDataParallel can wrap it)."""
        raise NotImplementedError

    def rank(
        self,
        queries: Queries,
        pools: dict[str, list[str]],
        corpus: Corpus,
        batch_size: int = 32,
        progress: bool = False,
    ) -> Run:
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
    limit = anatomy_of(encoder).max_tokens(encoder.config)
    declared = getattr(tokenizer, "model_max_length", limit)
    return min(limit, declared) if declared < 10**6 else limit  # tokenizers without a limit declare 1e30


def tokenize(
    tokenizer: Any,
    texts: Sequence[str],
    max_length: int,
    pairs: Sequence[str] | None = None,
    return_tensors: str = "pt",
) -> Any:
    """The one tokenizer call of petir (torch models and their ONNX twins): padded to the batch's longest text,
    truncated to ``max_length`` tokens; for (query, passage) pairs only the passage is truncated."""
    return tokenizer(
        list(texts),
        list(pairs) if pairs is not None else None,
        max_length=max_length,
        truncation="only_second" if pairs is not None else True,
        padding=True,
        return_tensors=return_tensors,
    )


class TextEncoder:
    """``encode`` for a bi-encoder and its ONNX twin: batching, max lengths and progress in one place.

    Subclasses set ``query_max_length``, ``passage_max_length`` and ``dimension`` and implement ``_embed_batch``.
    """

    query_max_length: int
    passage_max_length: int
    dimension: int

    def _embed_batch(self, texts: Sequence[str], max_length: int) -> np.ndarray:
        raise NotImplementedError

    def encode(
        self,
        texts: Sequence[str],
        kind: str = "passage",
        batch_size: int = 32,
        progress: bool = False,
        max_length: int | None = None,
    ) -> np.ndarray:
        """Returns: float32 array [len(texts), hidden], L2-normalised when the similarity is cosine. ``kind``
        ("query" or "passage") picks the trained max length in tokens unless ``max_length`` overrides it."""
        max_length = max_length or (self.query_max_length if kind == "query" else self.passage_max_length)
        return _in_batches(
            lambda rows: self._embed_batch([texts[i] for i in rows], max_length),
            [len(text) for text in texts],
            batch_size,
            f"encoding {kind}s",
            progress,
            (0, self.dimension),
        )


class PairScorer:
    """``score`` for a cross-encoder and its ONNX twin. Subclasses implement ``_score_batch``."""

    def _score_batch(self, queries: Sequence[str], passages: Sequence[str]) -> np.ndarray:
        raise NotImplementedError

    def score(
        self, queries: Sequence[str], passages: Sequence[str], batch_size: int = 32, progress: bool = False
    ) -> np.ndarray:
        """Returns: float32 array [len(queries)] of scores (logits) for the aligned (query, passage) pairs."""
        return _in_batches(
            lambda rows: self._score_batch([queries[i] for i in rows], [passages[i] for i in rows]),
            [len(query) + len(passage) for query, passage in zip(queries, passages, strict=True)],
            batch_size,
            "re-ranking",
            progress,
            (0,),
        )


def _in_batches(
    compute: Callable[[list[int]], np.ndarray],
    lengths: Sequence[int],
    batch_size: int,
    desc: str,
    progress: bool,
    empty_shape: tuple[int, ...],
) -> np.ndarray:
    """``compute`` over batches of items of similar length (sorted by ``lengths``, in characters, so a batch pads
    little), the results put back in input order. Padding never changes a result (a test checks it)."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    chunks = [
        compute(order[start : start + batch_size])
        for start in cli.progress(range(0, len(order), batch_size), desc=desc, disable=not progress)
    ]
    if not chunks:
        return np.zeros(empty_shape, dtype=np.float32)
    results = np.concatenate(chunks)
    restored = np.empty_like(results)
    restored[order] = results
    return restored


def false_negatives(groups: Sequence[Group], in_batch: bool, rows: slice = slice(None)) -> torch.Tensor:
    """Bool mask [queries, candidates]: True where a candidate is judged relevant to the query but is not its own
    positive. Candidates are every passage of the batch (``in_batch``, the bi-encoder's contrastive loss) or the
    query's own group (the cross-encoder's). Passages are matched by id, so the same passage drawn for two queries
    is caught too. ``rows`` picks the queries (one rank's share of a gathered batch)."""
    sizes = [len(group.passages) for group in groups]
    starts = np.cumsum([0, *sizes])
    chosen = range(len(groups))[rows]
    mask = torch.zeros(len(chosen), int(starts[-1]) if in_batch else sizes[0], dtype=torch.bool)
    columns: dict[str, list[int]] = {}  # docid -> its columns among all candidates
    for group, start in zip(groups, starts, strict=False):
        for offset, docid in enumerate(group.docids):  # groups without ids match nothing
            columns.setdefault(docid, []).append(int(start) + offset)
    for row, index in enumerate(chosen):
        first = int(starts[index])
        for docid in groups[index].positives:
            for column in columns.get(docid, ()):
                local = column if in_batch else column - first
                if column != first and (in_batch or 0 < local < sizes[index]):
                    mask[row, local] = True
    return mask


def _ids_only(group: Group) -> Group:
    """What masking needs of a group (its ids), light enough to send to every rank."""
    return group._replace(query="", passages=[""] * len(group.passages))


class _GatherWithGradient(torch.autograd.Function):
    """All ranks' tensors concatenated in rank order; the gradient of each part returns, summed over the ranks
    whose losses used it, to the rank that computed it (all-reduce then slice: any backend, gloo included)."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, gradient: torch.Tensor) -> torch.Tensor:
        gradient = gradient.contiguous()
        dist.all_reduce(gradient)
        return gradient.chunk(dist.get_world_size())[dist.get_rank()]


def _own_trainable_parameters(module: nn.Module) -> None:
    """Give every trainable parameter its own storage, so training or loading a state never writes into frozen
    weights that other models may share (see :class:`SharedBackbone`)."""
    for submodule in module.modules():
        for name, parameter in list(submodule._parameters.items()):
            if parameter is not None and parameter.requires_grad:
                submodule._parameters[name] = nn.Parameter(parameter.detach().clone())


class SharedBackbone:
    """One frozen backbone in memory serving many trained PET models: the practical point of PET.

    Each :meth:`load` builds a model whose frozen weights are the backbone's own tensors (not copies); only the
    PET modules and heads are per task. Switching task means calling another model, with no reload::

        shared = SharedBackbone("sentence-transformers/all-MiniLM-L6-v2")
        rerankers = {name: shared.load(path) for name, path in [("scifact", ...), ("trec-covid", ...)]}
    """

    def __init__(self, backbone: str = DEFAULT_BACKBONE):
        self.name = backbone
        self.encoder, self.tokenizer = load_backbone(backbone)
        for parameter in self.encoder.parameters():
            parameter.requires_grad_(False)

    def load(self, directory: str | os.PathLike, device: str | torch.device = "cpu") -> PetModel:
        """Load a saved petir model onto this backbone (its fingerprint must match)."""
        shared = {id(tensor): tensor for tensor in (*self.encoder.parameters(), *self.encoder.buffers())}
        shell = copy.deepcopy(self.encoder, memo=shared)
        return PetModel.load(directory, backbone=self.name, device=device, loaded=(shell, self.tokenizer))


def make_options(options_class: type, values: dict[str, Any]) -> Any:
    """The task's options from ``values`` over the defaults; an unknown option, or a value of the wrong type (from a
    saved config.json) or not among the choices, is one line."""
    fields = {field.name: field for field in dataclasses.fields(options_class)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise PetirError(f"{options_class.__name__} has no option {', '.join(unknown)}; options: {', '.join(fields)}")
    values = dict(values)
    hints = typing.get_type_hints(options_class)
    for name, value in values.items():
        bounds = fields[name].metadata.get("bounds")
        if bounds is not None and not (value is None and fields[name].default is None):
            try:
                values[name] = bounds.parse(value)  # the type and the range, in one message
            except ValueError as error:
                raise PetirError(f"{name} {error}") from None
        else:
            check_type(name, value, hints[name])
        if fields[name].metadata.get("choices"):
            check_choice(name, value, fields[name].metadata["choices"])
    return options_class(**values)


def _saved_options(config: dict[str, Any]) -> dict[str, Any]:
    """The task options a saved config holds (the rest take their defaults: a config saved before they existed)."""
    names = {field.name for field in dataclasses.fields(PetModel._tasks[config["task"]].options_class)}
    return {key: config[key] for key in names if key in config}


#: Truncation lengths in tokens: below 8, the special tokens ([CLS], [SEP]; a RoBERTa pair has 4) leave a text little
#: or no room, and tokenizers silently ignore a max_length of 1.
MAX_LENGTH = cli.Bounded(int, minimum=8)


@dataclasses.dataclass
class RetrievalOptions:
    """The bi-encoder's options, saved in config.json."""

    pooling: str = cli.option("mean", "token pooling", ("mean", "cls"))
    similarity: str = cli.option("cosine", "score: cosine (L2-normalised vectors) or dot product", ("cosine", "dot"))
    query_max_length: int = cli.option(64, "query tokens", bounds=MAX_LENGTH)
    passage_max_length: int = cli.option(256, "passage tokens", bounds=MAX_LENGTH)
    # Cosine scores live in [-1, 1]: a temperature of 0.05 (scale 20, as all-MiniLM-L6-v2 was trained with) gives
    # the softmax enough range; dot products are unbounded and need none.
    temperature: float | None = cli.option(
        None,
        "softmax temperature of the contrastive loss (default: 0.05 for cosine, 1 for dot)",
        bounds=cli.Bounded(float, above=0),
    )


@dataclasses.dataclass
class RerankOptions:
    """The cross-encoder's options, saved in config.json."""

    max_length: int = cli.option(256, "query+passage tokens", bounds=MAX_LENGTH)
    loss: str = cli.option(
        "listwise",
        "listwise: softmax cross-entropy over each query's group; pointwise: binary cross-entropy",
        ("listwise", "pointwise"),
    )


class BiEncoder(PetModel, TextEncoder):
    """A shared query/passage encoder: pooled token states, L2-normalised for cosine similarity.

    Trained with a contrastive loss over in-batch and hard negatives.
    """

    task = "retrieval"
    options_class = RetrievalOptions
    graph_output = "embeddings"

    def _setup(self, options: RetrievalOptions) -> None:
        self.pooling = options.pooling
        self.similarity = options.similarity
        self.query_max_length = min(options.query_max_length, self.length_limit)
        self.passage_max_length = min(options.passage_max_length, self.length_limit)
        default_temperature = 0.05 if options.similarity == "cosine" else 1.0
        self.temperature = options.temperature if options.temperature is not None else default_temperature

    def inference(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """What the ONNX graph computes: :meth:`embed`."""
        return self.embed(features)

    def example_features(self, queries: Sequence[str], passages: Sequence[str]) -> dict[str, torch.Tensor]:
        """A padded batch in the model's own tokenisation (ONNX tracing and parity checks): the passages."""
        return self.tokenize(passages, self.passage_max_length)

    def embed(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Returns: float tensor [batch, hidden], L2-normalised when similarity is cosine."""
        states = self.encoder(**features).last_hidden_state
        if self.pooling == "cls":
            pooled = states[:, 0]
        else:
            mask = features["attention_mask"].unsqueeze(-1).to(states.dtype)
            pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, dim=-1) if self.similarity == "cosine" else pooled

    def collate(self, groups: Sequence[Group]) -> dict[str, Any]:
        passages = [passage for group in groups for passage in group.passages]
        return {
            "queries": self.tokenize([group.query for group in groups], self.query_max_length),
            "passages": self.tokenize(passages, self.passage_max_length),
            "groups": [_ids_only(group) for group in groups],
        }

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """Contrastive loss: each query against every passage in the batch (its positive, its hard negatives and
        all other queries' passages), except passages judged relevant to it other than its positive (false
        negatives, masked out). Passages come grouped per query, positive first.

        Under ``torchrun`` the batch is the global one, as in Tevatron and sentence-transformers: passage vectors
        are gathered from every rank (gradients flow back to the rank that encoded them), so each query sees
        every passage of every process as a candidate; the loss equals one process on the whole batch."""
        queries = self.embed(batch["queries"])
        passages = self.embed(batch["passages"])
        group = passages.shape[0] // queries.shape[0]
        groups, first = batch["groups"], 0
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            everyone: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(everyone, groups)
            first = dist.get_rank() * len(groups)
            groups = [group for part in everyone for group in part]
            passages = _GatherWithGradient.apply(passages)
        mask = false_negatives(groups, True, slice(first, first + queries.shape[0])).to(queries.device)
        scores = (queries @ passages.T / self.temperature).masked_fill(mask, float("-inf"))
        labels = (first + torch.arange(queries.shape[0], device=scores.device)) * group
        return F.cross_entropy(scores, labels)

    @property
    def dimension(self) -> int:
        return self.encoder.config.hidden_size

    @torch.inference_mode()
    def _embed_batch(self, texts: Sequence[str], max_length: int) -> np.ndarray:
        return self.embed(self.tokenize(texts, max_length)).float().cpu().numpy()

    def rank(
        self,
        queries: Queries,
        pools: dict[str, list[str]],
        corpus: Corpus,
        batch_size: int = 32,
        progress: bool = False,
    ) -> Run:
        docids = sorted({docid for pool in pools.values() for docid in pool})
        row = {docid: i for i, docid in enumerate(docids)}
        passages = self.encode([corpus[docid].contents for docid in docids], "passage", batch_size, progress)
        qids = list(pools)
        query_vectors = self.encode([queries[qid] for qid in qids], "query", batch_size)
        run = {}
        for qid, vector in zip(qids, query_vectors, strict=True):
            scores = passages[[row[docid] for docid in pools[qid]]] @ vector
            run[qid] = sorted(zip(pools[qid], scores.tolist(), strict=True), key=lambda hit: -hit[1])
        return run


class CrossEncoder(PetModel, PairScorer):
    """A monoBERT-style re-ranker: ``[CLS] query [SEP] passage [SEP]`` -> a relevance score from the [CLS] state.

    The score head is task-specific and always trained (counted with the trainable parameters).
    """

    task = "rerank"
    options_class = RerankOptions
    graph_output = "scores"

    def _setup(self, options: RerankOptions) -> None:
        self.max_length = min(options.max_length, self.length_limit)
        self.loss = options.loss
        hidden = self.encoder.config.hidden_size
        dropout = anatomy_of(self.encoder).config_value(self.encoder.config, "hidden_dropout_prob")
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, 1))

    def inference(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """What the ONNX graph computes: :meth:`scores`."""
        return self.scores(features)

    def example_features(self, queries: Sequence[str], passages: Sequence[str]) -> dict[str, torch.Tensor]:
        """A padded batch in the model's own tokenisation (ONNX tracing and parity checks): the pairs."""
        return self.tokenize(queries, self.max_length, pairs=passages)

    def scores(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Returns: float tensor [batch] of relevance scores (logits)."""
        return self.head(self.encoder(**features).last_hidden_state[:, 0]).squeeze(-1)

    def collate(self, groups: Sequence[Group]) -> dict[str, Any]:
        queries = [group.query for group in groups for _ in group.passages]
        passages = [passage for group in groups for passage in group.passages]
        return {
            "pairs": self.tokenize(queries, self.max_length, pairs=passages),
            "false_negatives": false_negatives(groups, in_batch=False).to(self.device),
        }

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """Listwise softmax cross-entropy over each query's group (positive first), or pointwise BCE; a negative
        judged relevant to the query (a false negative) is left out of either loss."""
        mask = batch["false_negatives"]
        scores = self.scores(batch["pairs"]).view(mask.shape)
        if self.loss == "pointwise":
            labels = torch.zeros_like(scores)
            labels[:, 0] = 1.0
            losses = F.binary_cross_entropy_with_logits(scores, labels, reduction="none")
            return losses[~mask].mean()
        labels = torch.zeros(scores.shape[0], dtype=torch.long, device=scores.device)
        return F.cross_entropy(scores.masked_fill(mask, float("-inf")), labels)

    @torch.inference_mode()
    def _score_batch(self, queries: Sequence[str], passages: Sequence[str]) -> np.ndarray:
        return self.scores(self.tokenize(queries, self.max_length, passages)).float().cpu().numpy()

    def rank(
        self,
        queries: Queries,
        pools: dict[str, list[str]],
        corpus: Corpus,
        batch_size: int = 32,
        progress: bool = False,
    ) -> Run:
        pairs = [(qid, docid) for qid, pool in pools.items() for docid in pool]
        scores = self.score(
            [queries[qid] for qid, _ in pairs], [corpus[docid].contents for _, docid in pairs], batch_size, progress
        )
        run: Run = {qid: [] for qid in pools}
        for (qid, docid), score in zip(pairs, scores.tolist(), strict=True):
            run[qid].append((docid, score))
        return {qid: sorted(hits, key=lambda hit: -hit[1]) for qid, hits in run.items()}


#: Every task, by the name ``--task`` and config.json use: one model class each (its options, loss and inference).
TASKS: dict[str, type[PetModel]] = PetModel._tasks

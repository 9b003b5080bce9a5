"""The checkpoint codec: a trainer state (optimizer, scheduler, scaler and RNG states, kept-best tensors) stored as
data only, JSON plus safetensors, so that loading a checkpoint received from someone else cannot run code on
``--resume``; an older petir's pickled state is refused, never unpickled."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from petir.dev_check import DevCheck
from petir.errors import PetirError
from petir.files import record_written, staged_directory
from petir.run_directory import CHECKPOINT_DIR, MODEL_DIR

if TYPE_CHECKING:
    from petir.models import PetModel

TRAINER_STATE = "trainer_state.json"  # the checkpoint's counters, states and RNG states; tensors by reference
TRAINER_TENSORS = "trainer_state.safetensors"  # the tensors TRAINER_STATE refers to
LEGACY_TRAINER_STATE = "trainer_state.pt"  # older petir's pickle: refused, as unpickling can run code

#: The single-key objects that stand for what JSON has no type for; a dict using one of these keys itself is stored
#: as items, so reading back is unambiguous.
_TENSOR, _ARRAY, _TUPLE, _ITEMS = "__tensor__", "__ndarray__", "__tuple__", "__items__"


def write_trainer_state(directory: Path, state: dict[str, Any]) -> None:
    """Write a trainer state (optimizer, scheduler, scaler and RNG states, kept-best tensors: nested dicts, lists,
    tuples, numbers, strings, tensors, NumPy arrays) as JSON plus a safetensors file of its tensors. Everything
    round-trips exactly: floats through their repr, tuples and non-string keys through marker objects."""
    tensors: dict[str, torch.Tensor] = {}
    document = _encode(state, tensors)
    from safetensors.torch import save_file

    save_file(tensors, directory / TRAINER_TENSORS)
    (directory / TRAINER_STATE).write_text(json.dumps(document) + "\n")


def read_trainer_state(directory: Path) -> dict[str, Any]:
    """The trainer state in checkpoint ``directory`` (the one reader of :data:`TRAINER_STATE` and
    :data:`TRAINER_TENSORS`); a damaged or missing file, or an older petir's pickle (never unpickled), is one line."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not (directory / TRAINER_STATE).exists() and (directory / LEGACY_TRAINER_STATE).exists():
        raise PetirError(
            f"{directory / LEGACY_TRAINER_STATE}: a checkpoint of an older petir, stored as a pickle, which petir no "
            "longer loads because unpickling can run code; start the run over with --overwrite, or finish it with "
            "the petir version that wrote it"
        )
    path = directory / TRAINER_STATE
    try:
        document = json.loads(path.read_text())
        path = directory / TRAINER_TENSORS
        tensors = load_file(path)
        path = directory / TRAINER_STATE
        state = _decode(document, tensors)
        if not _is_trainer_state(state):
            raise ValueError("not a trainer state")
    except (OSError, ValueError, KeyError, TypeError, IndexError, RecursionError, SafetensorError) as error:
        raise PetirError(
            f"{path}: cannot read the checkpoint ({type(error).__name__}); it is damaged: remove {directory} to start "
            "over"
        ) from None
    return state


def _is_trainer_state(state: Any) -> bool:
    """The shape :meth:`Trainer._load_checkpoint` relies on (the optimizer, scheduler and RNG states are checked
    by their own loaders)."""
    if not isinstance(state, dict) or not {"step", "elapsed", "optimizer", "scheduler", "rng"} <= set(state):
        return False
    best = state.get("best")
    return (
        isinstance(state["step"], int)
        and isinstance(state["elapsed"], int | float)
        and isinstance(state["rng"], list)
        and all(isinstance(rng, dict) for rng in state["rng"])
        and (best is None or isinstance(best, dict) and {"step", "dev", "value", "state"} <= set(best))
    )


def _encode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        key = str(len(tensors))
        tensors[key] = value.detach().to("cpu").contiguous()
        return {_TENSOR: key}
    if isinstance(value, np.ndarray):  # NumPy's RNG state; stored as its raw bytes
        key = str(len(tensors))
        tensors[key] = torch.frombuffer(bytearray(np.ascontiguousarray(value).tobytes()), dtype=torch.uint8)
        return {_ARRAY: key, "dtype": value.dtype.str, "shape": list(value.shape)}
    if isinstance(value, tuple):
        return {_TUPLE: [_encode(item, tensors) for item in value]}
    if isinstance(value, list):
        return [_encode(item, tensors) for item in value]
    if isinstance(value, dict):
        if all(isinstance(key, str) for key in value) and not {_TENSOR, _ARRAY, _TUPLE, _ITEMS} & set(value):
            return {key: _encode(item, tensors) for key, item in value.items()}
        return {_ITEMS: [[_encode(key, tensors), _encode(item, tensors)] for key, item in value.items()]}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"a trainer state cannot hold {type(value).__name__}")


def _decode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, list):
        return [_decode(item, tensors) for item in value]
    if not isinstance(value, dict):
        return value
    if set(value) == {_TENSOR}:
        return tensors[value[_TENSOR]]
    if set(value) == {_ARRAY, "dtype", "shape"}:
        raw = tensors[value[_ARRAY]].numpy().tobytes()
        return np.frombuffer(raw, dtype=np.dtype(value["dtype"])).reshape(value["shape"]).copy()
    if set(value) == {_TUPLE}:
        return tuple(_decode(item, tensors) for item in value[_TUPLE])
    if set(value) == {_ITEMS}:
        return {_decode(key, tensors): _decode(item, tensors) for key, item in value[_ITEMS]}
    return {key: _decode(item, tensors) for key, item in value.items()}


def rng_state() -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def check_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """Raise ValueError unless every per-parameter state tensor is a finite float, of its parameter's shape or a
    scalar (a step count): a damaged checkpoint would otherwise fail mid-step, or go on training on NaN."""
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            for name, value in optimizer.state.get(parameter, {}).items():
                if not isinstance(value, torch.Tensor):
                    continue
                if value.dim() and value.shape != parameter.shape:
                    raise ValueError(f"optimizer {name} of shape {tuple(value.shape)} for {tuple(parameter.shape)}")
                if not value.is_floating_point() or not torch.isfinite(value).all():
                    raise ValueError(f"optimizer {name} is not a finite float tensor")


def write_checkpoint(output: Path, model: PetModel, state: dict[str, Any]) -> None:
    """Write ``output``'s checkpoint: the model's trained tensors and the trainer ``state``, swapped in whole (a kill
    mid-write keeps the previous checkpoint), each file recorded as this run's before the swap."""
    with staged_directory(output / CHECKPOINT_DIR, replace=True) as staging:
        model.save(staging / MODEL_DIR)
        write_trainer_state(staging, state)
        files = [path.relative_to(staging) for path in staging.rglob("*") if path.is_file()]
        record_written(output, *(output / CHECKPOINT_DIR / file for file in files))  # before the swap


def restore_states(
    state: dict[str, Any],
    directory: Path,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler,
    rank: int,
) -> DevCheck | None:
    """Load the optimizer, scheduler, scaler and this ``rank``'s RNG states of a checkpoint's trainer ``state`` (read
    from ``directory``); returns its step-0 dev check, if it holds one. A state that does not fit is one line."""
    try:
        optimizer.load_state_dict(state["optimizer"])
        check_optimizer_state(optimizer)
        scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        restore_rng_state(state["rng"][rank])
        return DevCheck(**state["start"]) if state.get("start") else None
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as error:
        raise PetirError(
            f"{directory / TRAINER_STATE} and {TRAINER_TENSORS}: the checkpoint is damaged or does not fit this "
            f"run ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); resume with the "
            "command that wrote it, or start over with --overwrite"
        ) from None

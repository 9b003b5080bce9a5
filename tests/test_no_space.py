"""A full disk or a spent quota (ENOSPC, EDQUOT) met by petir's one write layer (petir.files): one line naming the
directory and the space needed, no half-written file, nothing earlier replaced. Simulated by a write that raises
the error, as the operating system would."""

from __future__ import annotations

import errno
import pathlib
from pathlib import Path

import pytest
from test_trainer import make_trainer

from petir.errors import PetirError
from petir.files import write_lines_atomic

FULL = OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_a_file_written_on_a_full_disk_is_one_line_and_the_old_copy_stays(tmp_path, code):
    target = tmp_path / "out" / "run.trec"
    write_lines_atomic(target, ["old\n"])

    def lines():
        yield "x" * 4096 + "\n"
        raise OSError(code, "No space left on device" if code == errno.ENOSPC else "Disk quota exceeded")

    with pytest.raises(
        PetirError, match=r"out: no space left to write run.trec \(.*\); it needs more than 4097 bytes, "
    ):
        write_lines_atomic(target, lines())
    assert target.read_text() == "old\n" and [path.name for path in target.parent.iterdir()] == ["run.trec"]


def test_other_write_errors_are_not_taken_for_a_full_disk(tmp_path):
    def lines():
        yield "x\n"
        raise OSError(errno.EIO, "Input/output error")

    with pytest.raises(OSError, match="Input/output error"):
        write_lines_atomic(tmp_path / "run.trec", lines())


def test_training_that_fills_the_disk_when_saving_its_model_keeps_its_checkpoint(tiny_backbone, tmp_path, monkeypatch):
    write_text = pathlib.Path.write_text

    def full_for_the_model_config(self: Path, *args, **kwargs):
        if self.name == "config.json" and "checkpoint" not in str(self):  # checkpoints fit; the final model does not
            raise FULL
        return write_text(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "write_text", full_for_the_model_config)
    with pytest.raises(PetirError, match=r"no space left to write model \(No space left on device\); it needs more"):
        make_trainer(tiny_backbone, tmp_path / "run", steps=4).train()
    run = tmp_path / "run"
    assert (run / "checkpoint").is_dir() and not (run / "model").exists() and not (run / "summary.json").exists()
    assert not [path.name for path in run.iterdir() if ".petir-" in path.name]  # no staging left behind


def test_an_onnx_export_onto_a_full_disk_is_one_line_and_leaves_nothing(tiny_backbone, tmp_path, monkeypatch):
    import torch

    from petir.onnx import export
    from petir.tasks.retrieval import BiEncoder

    model_dir = BiEncoder(str(tiny_backbone), "adapter").save(tmp_path / "model")
    monkeypatch.setattr(torch.onnx, "export", lambda *args, **kwargs: (_ for _ in ()).throw(FULL))
    with pytest.raises(PetirError, match=r"model: no space left to write onnx"):
        export(model_dir)
    assert sorted(path.name for path in model_dir.iterdir() if "onnx" in path.name) == []


def test_a_metrics_record_that_does_not_fit_ends_training_in_one_line(tiny_backbone, tmp_path, monkeypatch):
    import petir.trainer

    trainer = make_trainer(tiny_backbone, tmp_path / "run")

    def full_at_step_3(path, mode="r", *args, **kwargs):
        if mode == "a" and trainer.step == 3:
            raise FULL
        return open(path, mode, *args, **kwargs)

    monkeypatch.setattr(petir.trainer, "open", full_at_step_3, raising=False)
    with pytest.raises(PetirError, match=r"run: no space left to write metrics.jsonl \(.*\); it needs a record more"):
        trainer.train()
    assert (tmp_path / "run" / "checkpoint").is_dir()

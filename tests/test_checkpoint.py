"""No file seemore reads can run code (issue 11): every checkpoint is loaded with
`weights_only=True`; a crafted pickle is refused before its payload runs, a truncated file
gets a clear message."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from seemore.checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    clear_resume,
    load_checkpoint,
    resume_dir,
    save_atomic,
)
from seemore.train import load_inference_model

REPO = Path(__file__).resolve().parent.parent


class Payload:
    """Unpickling this object would call `open(marker, "w")`, creating the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def test_a_crafted_pickle_is_refused_and_its_payload_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    path = tmp_path / "model.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "state_dict": Payload(marker)}, path)
    for load in (load_checkpoint, load_inference_model):
        with pytest.raises(CheckpointError, match=r"model\.pt: refused: .*could run code"):
            load(path)
    assert not marker.exists()


def test_a_truncated_checkpoint_gets_a_clear_message(tmp_path: Path) -> None:
    path = tmp_path / "stage1.pt"
    save_atomic({"format": CHECKPOINT_FORMAT, "objective": {"w": torch.ones(1000)}}, path)
    assert load_checkpoint(path)["objective"]["w"].sum() == 1000
    data = path.read_bytes()
    for keep in (10, len(data) // 2, len(data) - 20):
        path.write_bytes(data[:keep])
        with pytest.raises(CheckpointError, match=r"stage1\.pt: truncated or corrupted"):
            load_checkpoint(path)


def test_foreign_files_are_not_seemore_checkpoints(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="not a seemore checkpoint"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="run the stage that writes it"):
        load_checkpoint(tmp_path / "missing.pt")


def test_every_torch_load_in_the_library_is_weights_only() -> None:
    for source in (REPO / "seemore").rglob("*.py"):
        for number, line in enumerate(source.read_text().splitlines(), 1):
            if "torch.load(" in line:
                assert "weights_only=True" in line, f"{source}:{number}: {line.strip()}"


def test_partial_checkpoints_live_under_resume_and_are_cleared(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    output = Path("results/moving_mnist/tau/bdn/seed1/stage1.pt")
    partial = resume_dir(output, "abc")
    assert partial == Path("resume/results/moving_mnist/tau/bdn/seed1/stage1.pt/abc")
    (partial / "checkpoint.pt").parent.mkdir(parents=True)
    (partial / "checkpoint.pt").write_bytes(b"x")
    sibling = resume_dir(Path("results/moving_mnist/tau/bdn/seed1/stage2.pt"), "abc")
    sibling.mkdir(parents=True)
    clear_resume(output)
    assert not partial.parent.exists() and sibling.exists()
    clear_resume(Path("results/moving_mnist/tau/bdn/seed1/stage2.pt"))
    assert not Path("resume").exists()

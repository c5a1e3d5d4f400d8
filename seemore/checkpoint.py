"""Checkpoint files (DESIGN.md §8): atomic writes, loading that can never run code, and where
the partial checkpoint of an unfinished stage lives.

A partial checkpoint sits under `resume/<output path>/<params hash>/`, outside every path
Snakemake or DVC manage (both delete a job's outputs before re-running it), so a re-run of
the same job with the same params finds it and continues; a run with other params looks in
another directory and never continues it. The stage deletes `resume/<output path>/` when it
completes.
"""

from __future__ import annotations

import io
import pickle
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from seemore.data.base import atomic_write_bytes

CHECKPOINT_FORMAT = 1
RESUME_ROOT = Path("resume")
PARTIAL_CHECKPOINT = "checkpoint.pt"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message names it and what to do."""


def save_atomic(obj: Any, path: Path) -> int:
    """Write `obj` with torch.save via a temp file and a rename; returns the bytes written."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, lambda file: file.write(buffer.getbuffer()))
    return buffer.getbuffer().nbytes


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a seemore checkpoint with `weights_only=True`: tensors and plain data only, so a
    file carrying a pickled object (which could run code when loaded) is refused unopened."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint missing; run the stage that writes it first")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"Unsupported (global|operand)[^\n.]*", str(error))
        detail = f" ({found.group(0).strip()})" if found else ""
        raise CheckpointError(
            f"{path}: refused: it holds pickled Python objects, not only tensors and plain "
            f"data{detail}; loading it could run code. Re-create it with `seemore train` "
            "or fetch it from a source you trust"
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CheckpointError(
            f"{path}: truncated or corrupted checkpoint ({reason[:120]}); delete it and "
            "re-run the stage that writes it"
        ) from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a seemore checkpoint of format {CHECKPOINT_FORMAT}")
    return checkpoint


def _relative(output: Path) -> Path:
    """`output` as a path inside the resume tree: relative to the working directory when it
    lies below it (the pipeline's case), else its absolute path without the root."""
    absolute = output.absolute()
    try:
        return absolute.relative_to(Path.cwd())
    except ValueError:
        return absolute.relative_to(absolute.anchor)


def resume_base(output: Path, root: Path = RESUME_ROOT) -> Path:
    """Everything partial of the stage that writes `output`, for all params hashes."""
    return root / _relative(output)


def resume_dir(output: Path, params_hash: str, root: Path = RESUME_ROOT) -> Path:
    """The partial checkpoint and live progress of that stage under these params."""
    return resume_base(output, root) / params_hash


def clear_resume(output: Path, root: Path = RESUME_ROOT) -> None:
    """The stage completed: its partial state (any params hash) is no longer needed."""
    shutil.rmtree(resume_base(output, root), ignore_errors=True)
    # Drop the now-empty parents and root, so the tree only shows unfinished stages.
    parent = resume_base(output, root).parent
    while parent.is_relative_to(root):
        try:
            parent.rmdir()
        except OSError:
            break
        parent = parent.parent

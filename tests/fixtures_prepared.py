"""What a preparation wrote, read with numpy's and json's own readers rather than the
library's, so the dataset tests check the real file formats."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from seemore.data.base import Benchmark, DataConfig


def load_split(out: Path, split: str) -> np.ndarray:
    return np.load(out / f"{split}.npy", mmap_mode="r")


def load_meta(out: Path) -> dict[str, Any]:
    return json.loads((out / "meta.json").read_text())


def split_bytes_by_seed(
    benchmark: type[Benchmark],
    section: DataConfig,
    seeds: tuple[int, ...],
    split: str,
    tmp_path: Path,
) -> list[bytes]:
    """The file `<split>.npy` as prepared from `section` with each of `seeds` as data_seed."""
    files = []
    for index, seed in enumerate(seeds):
        out = tmp_path / f"seed{index}"
        benchmark.prepare(section.model_copy(update={"data_seed": seed}), tmp_path / "raw", out)
        files.append((out / f"{split}.npy").read_bytes())
    return files

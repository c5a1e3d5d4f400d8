"""TaxiBJ (DESIGN.md §3): taxi crowd flows in Beijing on a 32x32 grid, 2 channels (inflow,
outflow) per 30-minute slot, 4 -> 4. Stored as float16 in [0, 1].

Two raw layouts:
- `dataset.npz` (the OpenSTL / SimVP file): `X_train, Y_train, X_test, Y_test`, each
  `(N, frames, 2, 32, 32)` with values in [-1, 1]; a clip is X followed by Y, mapped to
  [0, 1] by x = (v + 1) / 2. Its train / test split is the file's own. Inverse for
  reporting: v = 2x - 1 gives the file's scale back; vehicle counts need the min / max the
  file's author fitted, which the file does not carry.
- the yearly HDF5 files `BJ13_M32x32_T30_InOut.h5` ... `BJ16_...` of the original release
  (keys `data`: `(N, 2, 32, 32)` flows, `date`: `(N,)` byte strings `YYYYMMDDSS`, slot SS
  from 01 to 48). Preprocessed as DeepST / ST-ResNet's loader: days without all 48 slots are
  dropped, negative counts set to 0, the last `test_days` (28, i.e. four weeks) complete days
  are the test split, and flows are scaled by the min / max of the train days (recorded in
  meta.json; inverse for reporting: flow = min + x * (max - min)). Windows of consecutive
  slots, one every `clip_stride` slots, never cross a missing slot or the split boundary.

Each layout is a protocol (`data.taxibj.protocol`): `openstl` reads `dataset.npz`, with
`download` (OpenSTL's release `taxibj_dataset.zip`; no published SHA-256: trusted on first
use, once it holds a dataset.npz, and pinned in `taxibj_dataset.zip.sha256`) or `local`
(`root/dataset.npz`); `deepst` reads the `root/BJ*_M32x32_T30_InOut.h5` files (`local`).
Validation: the last `val_fraction` (10%) of the training data. `embedded` is an offline
stand-in, NOT the real benchmark (see `standins.taxibj_clips`).
Everything is read in blocks, never a whole array at once.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import h5py
import numpy as np
from pydantic import Field

from seemore.data import DATASETS
from seemore.data.base import DataConfig, write_split
from seemore.data.download import (
    DataError,
    RemoteFile,
    download_record,
    fetch_extracted,
    local_file_record,
    zip_names,
)
from seemore.data.protocols import Protocol, protocol_registry
from seemore.data.standins import SLOTS_PER_DAY, taxibj_clips
from seemore.data.video import NpzArray, SplitWriter, sliding_windows
from seemore.data.windowed import WindowedBenchmark, WindowedConfig

GRID = 32
CHANNELS = 2
FRAME_SHAPE = (CHANNELS, GRID, GRID)
NPZ_NAME = "dataset.npz"
NPZ_KEYS = ("X_train", "Y_train", "X_test", "Y_test")
HDF5_PATTERN = "BJ*_M32x32_T30_InOut.h5"
# Values a hair outside [-1, 1] are rounding in the file; anything further is a wrong file.
NPZ_TOLERANCE = 1e-3
BLOCK_ROWS = 1024
# Consecutive days of the stand-in's series, in this order.
EMBEDDED_DAYS = {"train": 19, "val": 2, "test": 7}

REMOTE_ARCHIVE = RemoteFile(
    name="taxibj_dataset.zip",
    url="https://github.com/chengtan9907/OpenSTL/releases/download/v0.1.0/taxibj_dataset.zip",
    sha256=None,
)
EXTRACTED_DIR = "extracted"


class TaxiBJConfig(WindowedConfig):
    # HDF5 layout: the last this many complete days are the test split (DeepST: 4 weeks).
    test_days: int = Field(default=28, gt=0)
    # HDF5 layout: 30-minute slots between window starts.
    clip_stride: int = Field(default=1, gt=0)
    # Share of the training data held out, at its end, as the validation split (ST-ResNet
    # validates on the last 10% of its training data).
    val_fraction: float = Field(default=0.1, gt=0, lt=1)


# --- dataset.npz ------------------------------------------------------------------------------


def _npz_arrays(path: Path, config: TaxiBJConfig) -> dict[str, NpzArray]:
    """The four arrays, their shapes checked against the layout and the configured horizons."""
    arrays = {key: NpzArray(path, key) for key in NPZ_KEYS}
    frames = {
        "X_train": ("input_frames", config.input_frames),
        "Y_train": ("output_frames", config.output_frames),
        "X_test": ("input_frames", config.input_frames),
        "Y_test": ("the test horizon", config.test_horizon),
    }
    for key, array in arrays.items():
        setting, count = frames[key]
        if len(array.shape) != 5 or array.shape[1:] != (count, *FRAME_SHAPE):
            raise DataError(
                f"{path}: {key} has shape {array.shape}, expected (clips, {count}, "
                f"{CHANNELS}, {GRID}, {GRID}): {count} frames as {setting} says, then in/out "
                "flow and the grid"
            )
        if not np.issubdtype(array.dtype, np.floating):
            raise DataError(f"{path}: {key} holds {array.dtype}, expected floats in [-1, 1]")
    for split in ("train", "test"):
        x, y = arrays[f"X_{split}"], arrays[f"Y_{split}"]
        if x.shape[0] != y.shape[0]:
            raise DataError(
                f"{path}: X_{split} has {x.shape[0]} clips but Y_{split} has {y.shape[0]}"
            )
    return arrays


def _npz_clips(path: Path, x: NpzArray, y: NpzArray) -> Iterator[np.ndarray]:
    """Clips X + Y mapped from [-1, 1] to [0, 1], float16, one block at a time."""
    for inputs, outputs in zip(x.blocks(BLOCK_ROWS), y.blocks(BLOCK_ROWS), strict=True):
        for key, block in ((x.key, inputs), (y.key, outputs)):
            low, high = float(block.min()), float(block.max())
            if low < -1 - NPZ_TOLERANCE or high > 1 + NPZ_TOLERANCE:
                raise DataError(
                    f"{path}: {key} holds values in [{low:g}, {high:g}], expected [-1, 1]"
                )
        clips = np.concatenate([inputs, outputs], axis=1).astype(np.float32)
        yield from np.clip((clips + 1) / 2, 0, 1).astype(np.float16)


def npz_train_rows(clips: int, length: int, fraction: float) -> tuple[range, range]:
    """Rows of X_train / Y_train kept for (training, validation): the last `fraction` of the
    rows (at least one) validate, and the `length - 1` rows before them are dropped, so that
    when the rows are consecutive windows in time order no slot is in both splits."""
    val = max(1, int(np.ceil(clips * fraction)))
    train_end = clips - val - (length - 1)
    if train_end < 1:
        raise ValueError(f"{clips} clips leave none for training after holding out {val}")
    return range(train_end), range(clips - val, clips)


def prepare_npz(path: Path, config: TaxiBJConfig, out_dir: Path) -> dict[str, object]:
    arrays = _npz_arrays(path, config)
    x_train = arrays["X_train"]
    length = x_train.shape[1] + arrays["Y_train"].shape[1]
    try:
        train_rows, val_rows = npz_train_rows(x_train.shape[0], length, config.val_fraction)
    except ValueError as error:
        raise DataError(f"{path}: X_train: {error}") from None
    rows = {"train": train_rows, "val": val_rows, "test": range(arrays["X_test"].shape[0])}
    counts = {}
    for split, chosen in rows.items():
        source = "test" if split == "test" else "train"
        x, y = arrays[f"X_{source}"], arrays[f"Y_{source}"]
        shape = (x.shape[1] + y.shape[1], *FRAME_SHAPE)
        with SplitWriter(out_dir, split, shape, np.float16) as writer:
            for row, clip in enumerate(_npz_clips(path, x, y)):
                if chosen.start <= row < chosen.stop:
                    writer.append(clip)
        counts[f"{split}_clips"] = writer.count
    return {
        "layout": "dataset.npz",
        "split_rule": f"the train / test split of {path.name} (X_/Y_train, X_/Y_test)",
        "val_rule": (
            f"the last {len(val_rows)} clips of X_/Y_train ({config.val_fraction:g} of them); "
            f"the {length - 1} before them dropped so no slot is in train and val"
        ),
        "normalisation": {
            "stored": "x = (v + 1) / 2 of the file's values v in [-1, 1]",
            "inverse": "v = 2 x - 1; vehicle counts need the min / max the file was scaled by",
        },
        "counts": counts,
    }


# --- the yearly HDF5 files --------------------------------------------------------------------


@dataclass(frozen=True)
class YearFile:
    """One HDF5 file: its rows and the absolute slot number of each (days since 1970 * 48 +
    slot - 1), so consecutive slots have consecutive numbers."""

    path: Path
    slots: np.ndarray


def _slot_numbers(path: Path, dates: np.ndarray) -> np.ndarray:
    numbers = np.empty(len(dates), dtype=np.int64)
    epoch = datetime.date(1970, 1, 1)
    for index, raw in enumerate(dates):
        text = raw.decode("ascii") if isinstance(raw, bytes) else str(raw)
        try:
            day = datetime.date(int(text[:4]), int(text[4:6]), int(text[6:8]))
            slot = int(text[8:])
        except ValueError:
            raise DataError(
                f"{path}: date[{index}] = {text!r}, expected YYYYMMDDSS (slot SS in 01-48)"
            ) from None
        if not 1 <= slot <= SLOTS_PER_DAY or len(text) != 10:
            raise DataError(f"{path}: date[{index}] = {text!r}, expected slot 01-48")
        numbers[index] = (day - epoch).days * SLOTS_PER_DAY + slot - 1
    if np.any(np.diff(numbers) <= 0):
        raise DataError(f"{path}: the dates are not strictly increasing")
    return numbers


def read_year_file(path: Path) -> YearFile:
    """Check the keys and shapes of one file and read its dates (not its flows)."""
    try:
        with h5py.File(path, "r") as file:
            for key in ("data", "date"):
                if key not in file:
                    raise DataError(f"{path}: has no key {key!r}; it holds {sorted(file.keys())}")
            data, dates = file["data"], file["date"]
            if data.ndim != 4 or data.shape[1:] != FRAME_SHAPE:
                raise DataError(
                    f"{path}: 'data' has shape {data.shape}, expected (slots, {CHANNELS}, "
                    f"{GRID}, {GRID})"
                )
            if dates.shape != (data.shape[0],):
                raise DataError(
                    f"{path}: 'date' has shape {dates.shape}, expected ({data.shape[0]},), "
                    "one per row of 'data'"
                )
            slots = _slot_numbers(path, dates[()])
    except OSError as error:
        raise DataError(f"{path}: not a readable HDF5 file ({error})") from None
    return YearFile(path, slots)


def complete_days(files: list[YearFile]) -> np.ndarray:
    """Sorted day numbers that have all 48 slots (DeepST drops the others)."""
    days = np.concatenate([f.slots // SLOTS_PER_DAY for f in files])
    numbers, counts = np.unique(days, return_counts=True)
    return numbers[counts == SLOTS_PER_DAY]


def _year_rows(year: YearFile, keep: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """`(slot numbers, float32 flows with negatives set to 0)` of the rows where `keep`, in
    blocks."""
    with h5py.File(year.path, "r") as file:
        data = file["data"]
        for start in range(0, len(year.slots), BLOCK_ROWS):
            chosen = keep[start : start + BLOCK_ROWS]
            if chosen.any():
                block = np.asarray(data[start : start + BLOCK_ROWS], dtype=np.float32)[chosen]
                yield year.slots[start : start + BLOCK_ROWS][chosen], np.maximum(block, 0)


class MinMaxScaling:
    """Flows mapped to [0, 1] by the train min / max; counts the values above the max (test
    slots can exceed it), which are stored as 1."""

    def __init__(self, low: float, high: float) -> None:
        self.low, self.high, self.clipped = low, high, 0

    def frames(
        self, files: list[YearFile], keep: list[np.ndarray]
    ) -> Iterator[tuple[int, np.ndarray]]:
        """`(slot number, float16 [2, 32, 32])` of the kept rows, in time order."""
        for year, chosen in zip(files, keep, strict=True):
            for slots, block in _year_rows(year, chosen):
                scaled = (block - self.low) / (self.high - self.low)
                self.clipped += int(np.count_nonzero(scaled > 1))
                frames = np.minimum(scaled, 1).astype(np.float16)
                yield from zip(slots.tolist(), frames, strict=True)


def prepare_hdf5(paths: list[Path], config: TaxiBJConfig, out_dir: Path) -> dict[str, object]:
    files = [read_year_file(path) for path in paths]
    all_slots = np.concatenate([f.slots for f in files])
    if len(np.unique(all_slots)) != len(all_slots):
        raise DataError(f"{', '.join(map(str, paths))}: the files share time slots")
    days = complete_days(files)
    if len(days) <= config.test_days:
        raise DataError(
            f"{', '.join(map(str, paths))}: {len(days)} complete days, test_days "
            f"{config.test_days} would leave none for training"
        )
    training_days = days[: -config.test_days]
    val_days = max(1, int(np.ceil(len(training_days) * config.val_fraction)))
    if val_days >= len(training_days):
        raise DataError(
            f"{', '.join(map(str, paths))}: {len(training_days)} complete training days, "
            f"val_fraction {config.val_fraction} would leave none for training"
        )
    split_days = {
        "train": training_days[:-val_days],
        "val": training_days[-val_days:],
        "test": days[-config.test_days :],
    }
    keep = {
        split: [np.isin(f.slots // SLOTS_PER_DAY, chosen) for f in files]
        for split, chosen in split_days.items()
    }
    low, high = np.inf, -np.inf
    for year, chosen in zip(files, keep["train"], strict=True):
        for _, block in _year_rows(year, chosen):
            low, high = min(low, float(block.min())), max(high, float(block.max()))
    if not high > low:
        raise DataError(f"{', '.join(map(str, paths))}: the train flows are constant ({low})")
    scaling = MinMaxScaling(low, high)
    lengths = config.clip_lengths
    counts = {}
    for split in split_days:
        shape = (lengths[split], *FRAME_SHAPE)
        frames = scaling.frames(files, keep[split])
        with SplitWriter(out_dir, split, shape, np.float16) as writer:
            for window in sliding_windows(frames, lengths[split], config.clip_stride):
                writer.append(window)
            if writer.count == 0:
                raise DataError(
                    f"TaxiBJ {split} split: no run of {lengths[split]} consecutive slots"
                )
        counts[f"{split}_clips"] = writer.count
    first_test = datetime.date(1970, 1, 1) + datetime.timedelta(days=int(split_days["test"][0]))
    return {
        "layout": "hdf5",
        "split_rule": (
            f"the last {config.test_days} complete days (from {first_test.isoformat()}) are "
            "the test split; days missing any of the 48 slots dropped (DeepST)"
        ),
        "val_rule": (
            f"the last {val_days} complete training days before the test days "
            f"({config.val_fraction:g} of them, as ST-ResNet validates on its last 10%)"
        ),
        "normalisation": {
            "min": low,
            "max": high,
            "fitted_on": "train days, after setting negative counts to 0",
            "inverse": "flow = min + x * (max - min)",
            "test_values_clipped_to_1": scaling.clipped,
        },
        "counts": {**counts, "complete_days": len(days)},
    }


# --- sources ----------------------------------------------------------------------------------


def _check_archive(archive: Path) -> None:
    if not any(PurePosixPath(name).name == NPZ_NAME for name in zip_names(archive)):
        raise DataError(f"{archive}: holds no {NPZ_NAME}; not OpenSTL's TaxiBJ archive")


def download_npz(raw_dir: Path) -> Path:
    """Fetch and verify OpenSTL's archive into `raw_dir` (its layout checked before a first
    copy is trusted) and unzip it (again only when it changed); returns the `dataset.npz`
    inside."""
    target = fetch_extracted(REMOTE_ARCHIVE, raw_dir, raw_dir / EXTRACTED_DIR, _check_archive)
    return sorted(target.rglob(NPZ_NAME))[0]


TAXIBJ_PROTOCOLS = protocol_registry("taxibj")


@DATASETS.register("taxibj")
class TaxiBJ(WindowedBenchmark):
    config_class = TaxiBJConfig
    channels = CHANNELS
    title = "TaxiBJ"
    stored_dtype = "float16"
    description = "Beijing taxi in/out flow, 2 channels 32x32, 4 -> 4 frames"
    protocols = TAXIBJ_PROTOCOLS
    default_protocol = "openstl"

    @classmethod
    def check(cls, config: DataConfig) -> list[str]:
        assert isinstance(config, TaxiBJConfig)
        problems = super().check(config)
        if config.image_size != GRID:
            problems.append(f"image_size = {config.image_size}: TaxiBJ's grid is {GRID}x{GRID}")
        problems += config.clip_count_problems("they hold")
        if config.source == "embedded":
            days = EMBEDDED_DAYS["train"]
            windows = days * SLOTS_PER_DAY - cls.stored_clip_length(config) + 1
            if config.train_clips is not None and config.train_clips > windows:
                problems.append(
                    f"train_clips = {config.train_clips}: the stand-in's {days} "
                    f"train days hold {windows} distinct clips"
                )
        return problems

    @classmethod
    def prepare_splits(cls, config: DataConfig, raw_dir: Path, out_dir: Path) -> dict[str, Any]:
        assert isinstance(config, TaxiBJConfig)
        if config.source == "embedded":
            meta = _prepare_embedded(config, out_dir)
        else:
            meta = cls.protocol(config).prepare_splits(config, raw_dir, out_dir)
        meta.setdefault(
            "description",
            f"TaxiBJ: in/out taxi flows on a {GRID}x{GRID} grid, 30-minute slots, from "
            f"{meta['layout']}",
        )
        # The stored grid, which `check` holds image_size to.
        return {"image_size": GRID, "channels": ["inflow", "outflow"], **meta}


@TAXIBJ_PROTOCOLS.register("openstl")
class OpenSTLArrays(Protocol):
    """OpenSTL's `dataset.npz` (from its release archive, or in `root`), its own split."""

    reference = "OpenSTL openstl/datasets/dataloader_taxibj.py on its release dataset.npz"

    @classmethod
    def prepare_splits(cls, config: DataConfig, raw_dir: Path, out_dir: Path) -> dict[str, Any]:
        assert isinstance(config, TaxiBJConfig)
        if config.source == "download":
            meta = prepare_npz(download_npz(raw_dir), config, out_dir)
            meta["files"] = {REMOTE_ARCHIVE.name: download_record(REMOTE_ARCHIVE, raw_dir)}
            return meta
        assert config.root is not None
        path = Path(config.root) / NPZ_NAME
        if not path.is_file():
            raise DataError(
                f"{path}: missing; protocol 'openstl' reads OpenSTL's dataset.npz "
                "(X_train/Y_train/X_test/Y_test); for the yearly BJ*_M32x32_T30_InOut.h5 files "
                "use protocol 'deepst'"
            )
        meta = prepare_npz(path, config, out_dir)
        meta["files"] = {NPZ_NAME: local_file_record(path, None)}
        return meta


@TAXIBJ_PROTOCOLS.register("deepst")
class DeepSTYears(Protocol):
    """The yearly HDF5 files of the original release, preprocessed as DeepST / ST-ResNet."""

    reference = "DeepST / ST-ResNet's TaxiBJ loader (last 4 weeks test, train min-max)"
    sources = ("local",)

    @classmethod
    def prepare_splits(cls, config: DataConfig, raw_dir: Path, out_dir: Path) -> dict[str, Any]:
        assert isinstance(config, TaxiBJConfig) and config.root is not None
        root = Path(config.root)
        years = sorted(root.glob(HDF5_PATTERN)) if root.is_dir() else []
        if not years:
            raise DataError(
                f"{root}: expected the yearly files {root}/BJ13_M32x32_T30_InOut.h5 ... "
                "BJ16_M32x32_T30_InOut.h5 (protocol 'deepst'); for OpenSTL's dataset.npz use "
                "protocol 'openstl'"
            )
        meta = prepare_hdf5(years, config, out_dir)
        meta["files"] = {path.name: local_file_record(path, None) for path in years}
        return meta


def _prepare_embedded(config: TaxiBJConfig, out_dir: Path) -> dict[str, object]:
    counts = config.stand_in_clips
    clips, scale = taxibj_clips(config.data_seed, counts, config.clip_lengths, EMBEDDED_DAYS)
    for split, split_clips in clips.items():
        write_split(out_dir, split, split_clips)
    days = EMBEDDED_DAYS
    return {
        "layout": "embedded",
        "description": (
            "Embedded stand-in, NOT the real TaxiBJ benchmark: synthetic in/out flows of "
            "residential, business and leisure hotspots with daily commuting peaks and "
            f"quieter weekends, {days['train']} train days, {days['val']} validation days, "
            f"then {days['test']} test days of 30-minute slots; generated with data_seed "
            f"{config.data_seed}"
        ),
        "split_rule": (
            f"train windows from the first {days['train']} days, validation windows from the "
            f"next {days['val']}, test windows from the last {days['test']}"
        ),
        "val_rule": f"the {days['val']} days between the train and the test days",
        "normalisation": {**scale, "inverse": "flow = min + x * (max - min)"},
        "counts": {f"{split}_clips": len(split_clips) for split, split_clips in clips.items()},
    }

"""What the benchmarks whose splits are windows cut from recordings share (KTH, Human3.6M,
TaxiBJ): the stand-in's clip counts and their checks, the stored clip length, the files a
preparation writes, and the checks on the members (persons, subjects) that put recordings
in a split."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, Field

from seemore.data.base import META_FILE, Benchmark, DataConfig, section_meta, write_meta
from seemore.data.video import fresh_outputs

# Removed before a preparation and again if it fails, so none is left from an earlier run.
PREPARED_FILES = (META_FILE, "train.npy", "val.npy", "test.npy")
# Random stream of each split of a stand-in; validation came later, hence 3.
SPLIT_STREAMS = {"train": 1, "val": 3, "test": 2}
STAND_IN_TRAIN_CLIPS = 256
STAND_IN_TEST_CLIPS = 64
# Small: validation is scored every few steps while training.
STAND_IN_VAL_CLIPS = 16


class WindowedConfig(DataConfig):
    """A section whose real data give as many windows as they hold, while the `embedded`
    stand-in generates a set number of clips per split."""

    # `embedded` only: how many stand-in clips to generate (None: 256 train, 16 val, 64 test).
    train_clips: int | None = Field(default=None, gt=0)
    val_clips: int | None = Field(default=None, gt=0)
    test_clips: int | None = Field(default=None, gt=0)

    @property
    def stand_in_clips(self) -> dict[str, int]:
        """How many clips the `embedded` stand-in generates for each split."""
        return {
            "train": self.train_clips or STAND_IN_TRAIN_CLIPS,
            "val": self.val_clips or STAND_IN_VAL_CLIPS,
            "test": self.test_clips or STAND_IN_TEST_CLIPS,
        }

    def clip_count_problems(self, real_count: str) -> list[str]:
        """`train_clips` / `test_clips` set for real data, whose count `real_count` decides
        (e.g. "their videos hold")."""
        if self.source == "embedded":
            return []
        return [
            f"{key} applies to source 'embedded' only; the real data give as many clips as "
            f"{real_count}"
            for key in ("train_clips", "val_clips", "test_clips")
            if getattr(self, key) is not None
        ]

    def stand_in_size_problems(self, minimum: int) -> list[str]:
        """An `embedded` image_size below the `minimum` the stand-in can draw in."""
        if self.source == "embedded" and self.image_size < minimum:
            return [
                f"image_size = {self.image_size}: the embedded stand-in needs at least {minimum}"
            ]
        return []


class WindowedBenchmark(Benchmark):
    """A benchmark that stores each split's windows at that split's length; subclasses
    implement `prepare_splits`."""

    config_class: ClassVar[type[WindowedConfig]]

    @classmethod
    def stored_clip_length(cls, config: DataConfig) -> int:
        return max(config.clip_lengths.values())

    @classmethod
    def planned_bytes(cls, config: DataConfig) -> int | None:
        assert isinstance(config, WindowedConfig)
        if config.source != "embedded":
            return None
        frame = cls.channels * config.image_size**2 * np.dtype(cls.stored_dtype).itemsize
        lengths = config.clip_lengths
        return sum(count * lengths[split] * frame for split, count in config.stand_in_clips.items())

    @classmethod
    def planned_val_clips(cls, config: DataConfig) -> int | None:
        assert isinstance(config, WindowedConfig)
        return config.stand_in_clips["val"] if config.source == "embedded" else None

    @classmethod
    def prepare(cls, config: DataConfig, raw_dir: Path, out_dir: Path) -> None:
        with fresh_outputs(out_dir, PREPARED_FILES):
            meta = cls.prepare_splits(config, raw_dir, out_dir)
            write_meta(out_dir, {**section_meta(config), **cls.protocol_meta(config), **meta})

    @classmethod
    def prepare_splits(cls, config: DataConfig, raw_dir: Path, out_dir: Path) -> dict[str, Any]:
        """Write `train.npy`, `val.npy` and `test.npy` into `out_dir` (as `prepare` says) and
        return the meta.json entries they add to, or override in, `section_meta`; `val_rule`
        among them says how the validation split was held out."""
        raise NotImplementedError


def listed_twice(config: BaseModel, keys: Iterable[str], entry: str) -> list[str]:
    """A problem for each list `keys` of `config` that holds an entry twice; `entry` names
    one in the message (e.g. "a subject")."""
    problems = []
    for key in keys:
        values = getattr(config, key)
        if len(set(values)) != len(values):
            problems.append(f"{key} = {values} lists {entry} twice")
    return problems


def shared_members(config: BaseModel, keys: tuple[str, ...], member: str) -> list[str]:
    """A problem for each pair of the lists `keys` (e.g. train / val / test persons) that share
    `member`s (e.g. "person"): a member's recordings belong to one split only."""
    problems = []
    for index, first in enumerate(keys):
        for second in keys[index + 1 :]:
            shared = sorted(set(getattr(config, first)) & set(getattr(config, second)))
            if shared:
                problems.append(
                    f"{first} and {second} share {member}s {shared}; a {member} must be in "
                    "one split only"
                )
    return problems

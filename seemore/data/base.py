"""The data contract (DESIGN.md §3): a benchmark declares its geometry and sources, prepares
splits once into `data/prepared/<name>/`, and serves clips `[B, T, C, H, W]`."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from seemore.backbones.base import ClipGeometry

if TYPE_CHECKING:
    from seemore.data.protocols import Protocol
    from seemore.registry import Registry

META_FILE = "meta.json"


class DataConfig(BaseModel):
    """Base of every dataset's params.yaml section; each benchmark extends it."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    source: Literal["embedded", "download", "local"] = "embedded"
    # The named preparation to reproduce (docs/protocols.md); None: the benchmark's default.
    protocol: str | None = None
    # `local`: where the user put the files; `download`: where the raw files are cached.
    root: str | None = None
    input_frames: int = Field(gt=0)
    output_frames: int = Field(gt=0)
    # Test horizon; None means the training horizon.
    output_frames_test: int | None = Field(default=None, gt=0)
    image_size: int = Field(gt=0)
    # Seed of everything fixed at preparation (stand-in generation, the stored test clips);
    # independent of the training seeds, so every run is evaluated on the same clips.
    data_seed: int = Field(default=0, ge=0)

    @property
    def test_horizon(self) -> int:
        return self.output_frames_test or self.output_frames

    @property
    def clip_lengths(self) -> dict[str, int]:
        """Frames per clip of each split: the inputs, then that split's horizon. Validation
        scores the training horizon, which is what checkpoint selection compares."""
        return {
            "train": self.input_frames + self.output_frames,
            "val": self.input_frames + self.output_frames,
            "test": self.input_frames + self.test_horizon,
        }


class Benchmark:
    """One registered benchmark. Subclasses set the class attributes and implement `prepare`;
    `train_batches` and `test_clips` read the common prepared format by default."""

    config_class: ClassVar[type[DataConfig]]
    channels: ClassVar[int]
    # A human label for reports, e.g. "Moving MNIST".
    title: ClassVar[str]
    # One line for `seemore --help`: what the benchmark is.
    description: ClassVar[str]
    # dtype of the prepared splits (uint8, or float16 for TaxiBJ).
    stored_dtype: ClassVar[str] = "uint8"
    protocols: ClassVar[Registry[type[Protocol]]]
    default_protocol: ClassVar[str]

    @classmethod
    def protocol_name(cls, config: DataConfig) -> str:
        return config.protocol or cls.default_protocol

    @classmethod
    def protocol(cls, config: DataConfig) -> type[Protocol]:
        return cls.protocols.get(cls.protocol_name(config))

    @classmethod
    def protocol_meta(cls, config: DataConfig) -> dict[str, Any]:
        """meta.json's `protocol` (its name), `protocol_reference` (what it reproduces) and
        `comparable_to_reference` (False for our own splits)."""
        protocol = cls.protocol(config)
        return {
            "protocol": cls.protocol_name(config),
            "protocol_reference": protocol.reference,
            "comparable_to_reference": protocol.comparable,
        }

    @classmethod
    def protocol_problems(cls, config: DataConfig) -> list[str]:
        """An unknown protocol, a source it cannot read, and the protocol's own problems."""
        name = cls.protocol_name(config)
        if name not in cls.protocols:
            return [f"protocol = {name!r}: expected one of {cls.protocols.names()}"]
        protocol = cls.protocols.get(name)
        if config.source != "embedded" and config.source not in protocol.sources:
            return [
                f"protocol {name!r} reads source {' or '.join(map(repr, protocol.sources))}, "
                f"not {config.source!r}"
            ]
        return protocol.check(config)

    @classmethod
    def stored_clip_length(cls, config: DataConfig) -> int:
        """Frames per stored clip for this configuration (the longest usable horizon)."""
        raise NotImplementedError

    @classmethod
    def geometry(cls, config: DataConfig) -> ClipGeometry:
        return ClipGeometry(
            channels=cls.channels,
            height=config.image_size,
            width=config.image_size,
            input_frames=config.input_frames,
            output_frames=config.output_frames,
        )

    @classmethod
    def check(cls, config: DataConfig) -> list[str]:
        """Problems spanning keys of the section (empty when it is usable)."""
        stored = cls.stored_clip_length(config)
        problems = []
        for key in ("output_frames", "output_frames_test"):
            horizon = getattr(config, key)
            if horizon is not None and config.input_frames + horizon > stored:
                problems.append(
                    f"input_frames + {key} = {config.input_frames} + {horizon} is longer than "
                    f"the {stored} frames of a stored clip"
                )
        if config.source == "local" and config.root is None:
            problems.append("source 'local' needs 'root': the folder that holds the files")
        return problems + cls.protocol_problems(config)

    @classmethod
    def planned_bytes(cls, config: DataConfig) -> int | None:
        """Bytes `prepare` will store for `config`, for `seemore plan`; None when only the raw
        files decide (real recordings cut into windows)."""
        return None

    @classmethod
    def planned_val_clips(cls, config: DataConfig) -> int | None:
        """Clips of the validation split (scored while training), for `seemore plan`; None
        when only the raw files decide."""
        return None

    @classmethod
    def prepare(cls, config: DataConfig, raw_dir: Path, out_dir: Path) -> None:
        """Obtain the raw data for `config.source` (download into `raw_dir`, read
        `config.root`, or generate the stand-in) and write the prepared splits and meta.json
        into `out_dir`."""
        raise NotImplementedError

    @classmethod
    def train_batches(
        cls, config: DataConfig, prepared_dir: Path, batch_size: int, rng: np.random.Generator
    ) -> Iterator[np.ndarray]:
        """An endless stream of training batches `[B, T, C, H, W]` (uint8 or float in [0, 1]),
        T = input_frames + output_frames, drawn with `rng` (so a seed fixes the stream)."""
        clips = open_split(prepared_dir, "train")
        length = config.clip_lengths["train"]
        while True:
            index = np.sort(
                rng.choice(len(clips), size=batch_size, replace=len(clips) < batch_size)
            )
            yield np.asarray(clips[index, :length])

    @classmethod
    def test_clips(cls, config: DataConfig, prepared_dir: Path) -> np.ndarray:
        """The fixed test clips `[N, T, C, H, W]`, memory-mapped, T = input + test horizon."""
        clips = open_split(prepared_dir, "test")
        return clips[:, : config.clip_lengths["test"]]

    @classmethod
    def val_clips(cls, config: DataConfig, prepared_dir: Path) -> np.ndarray:
        """The fixed validation clips `[N, T, C, H, W]` (same dtype and layout as
        `test_clips`), memory-mapped, T = input + training horizon. Drawn from training data
        and disjoint from the test split: what checkpoints are chosen on."""
        clips = open_split(prepared_dir, "val")
        return clips[:, : config.clip_lengths["val"]]


def to_unit_float(clips: np.ndarray) -> np.ndarray:
    """Stored clips (uint8 or float16 in [0, 1]) as float32 in [0, 1]."""
    if clips.dtype == np.uint8:
        return clips.astype(np.float32) / 255.0
    return clips.astype(np.float32)


def atomic_write_bytes(path: Path, write: Any) -> None:
    """Call `write(file)` on a temp file beside `path`, then rename it into place, so an
    interrupted write never leaves a file that looks valid."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
        # mkstemp creates 0600; give the file the mode a plain open() would (umask applies).
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp, 0o666 & ~umask)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def write_split(out_dir: Path, split: str, clips: np.ndarray) -> None:
    """Store one split `[N, T, C, H, W]` as `<split>.npy` (uint8 or float16)."""
    if clips.ndim != 5:
        raise ValueError(f"split {split!r}: expected [N, T, C, H, W], got shape {clips.shape}")
    if clips.dtype not in (np.uint8, np.float16):
        raise ValueError(f"split {split!r}: expected uint8 or float16, got {clips.dtype}")
    atomic_write_bytes(out_dir / f"{split}.npy", lambda file: np.save(file, clips))


def open_split(prepared_dir: Path, split: str) -> np.ndarray:
    path = prepared_dir / f"{split}.npy"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: prepared split missing; run `seemore prepare` first")
    return np.load(path, mmap_mode="r")


def section_meta(config: DataConfig) -> dict[str, Any]:
    """The meta.json entries every benchmark takes from its section; the `embedded` source is
    always a stand-in."""
    return {
        "source": config.source,
        "stand_in": config.source == "embedded",
        "image_size": config.image_size,
        "data_seed": config.data_seed,
    }


def write_meta(out_dir: Path, meta: dict[str, Any]) -> None:
    """meta.json: must say `source`, `stand_in` (True for an embedded substitute),
    `description` and `protocol`."""
    for key in ("source", "stand_in", "description", "protocol"):
        if key not in meta:
            raise ValueError(f"meta.json needs {key!r}")
    text = json.dumps(meta, indent=2, sort_keys=True).encode()
    atomic_write_bytes(out_dir / META_FILE, lambda file: file.write(text))


def read_meta(prepared_dir: Path) -> dict[str, Any]:
    path = prepared_dir / META_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; run `seemore prepare` first")
    return json.loads(path.read_text())

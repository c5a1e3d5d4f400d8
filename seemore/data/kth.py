"""KTH Action (DESIGN.md §3): grayscale people walking, jogging, running, boxing, waving and
clapping, resized to image_size (128 for the benchmark), 10 -> 20 with 10 -> 20 / 10 -> 40
test horizons.

Split by person, as the PredRNN / OpenSTL loaders: persons 01-16 for training, 17-25 test;
of the training persons, 16 is held out as the validation split (the references validate on
the test split; all three lists configurable, never overlapping). Windows are cut from one
video at a time and never cross a video (nor a gap in an image folder's frame numbering).
Window starts follow the same loaders unless `clip_stride` is set: one window every window
length (non-overlapping) for boxing, handclapping, handwaving and walking; every 3 frames for
jogging and running, whose person crosses the frame and leaves it empty for long stretches.
Train and validation windows hold input_frames + output_frames frames, test windows
input_frames + the test horizon.

Sources:
- `download`: the six official AVI zips from the KTH site. No SHA-256 is published for them:
  the first download is trusted and its SHA-256 recorded beside it (`<action>.zip.sha256`,
  verified on every later run); on that first download the SHA-1 that visym/vipy's KTH loader
  pins for each zip is checked.
- `local`: `root` holds either the unzipped videos
  (`<action>/personXX_<action>_dY_uncomp.avi`) or the widespread pre-extracted frames
  (`<action>/personXX_<action>_dY_uncomp/image_NNNN.png|jpg`), found at any depth.
- `embedded`: an offline stand-in, NOT the real benchmark (see `standins.kth_clips`).

Preparation streams (one decoded frame and one window in memory, windows appended to disk),
so its memory does not grow with the dataset.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from seemore.data import DATASETS
from seemore.data.base import DataConfig, write_split
from seemore.data.download import DataError, RemoteFile, expected_sha256, fetch, safe_extract
from seemore.data.standins import KTH_ACTIONS, kth_clips
from seemore.data.video import (
    SplitWriter,
    decode_video,
    numbered_images,
    read_image,
    sliding_windows,
)
from seemore.data.windowed import (
    SPLIT_STREAMS,
    WindowedBenchmark,
    WindowedConfig,
    listed_twice,
    shared_members,
)

PERSONS = range(1, 26)
# Windows start every 3 frames for these actions in the reference loaders.
DENSE_ACTIONS = ("jogging", "running")
DENSE_STRIDE = 3
# The stick figure needs this many pixels to keep its limbs apart.
EMBEDDED_MIN_SIZE = 32

# SHA-1 of each zip as pinned by visym/vipy (vipy/dataset/kthactions.py).
PUBLISHED_SHA1 = {
    "walking": "a3e81537271a0ab4576591774baa38c2d97b7e3a",
    "jogging": "21943bdbcef9dad106db0d74661e49eaeaa15a25",
    "running": "da83bb313edfd4455fffdda6263696fa10d43c6f",
    "boxing": "adb36ed9c29c846d44d2ba15f348bd115c951bbd",
    "handwaving": "0792f7cd69f7f895a205c08ac212ddaa7177e370",
    "handclapping": "d3b81261aa822ef63d0d1523f945bfaff27814d2",
}
REMOTE_FILES: dict[str, RemoteFile] = {
    action: RemoteFile(
        name=f"{action}.zip",
        url=f"http://www.csc.kth.se/cvap/actions/{action}.zip",
        sha256=None,
        sha1=PUBLISHED_SHA1[action],
    )
    for action in KTH_ACTIONS
}
VIDEOS_DIR = "videos"
SEQUENCE_NAME = re.compile(r"^person(\d\d)_([a-z]+)_d(\d)_uncomp$")
FRAME_PREFIX = "image_"

Action = Literal["boxing", "handclapping", "handwaving", "jogging", "running", "walking"]


class KTHConfig(WindowedConfig):
    train_persons: list[int] = Field(default_factory=lambda: list(range(1, 16)), min_length=1)
    # Held out of the references' training persons 1-16, so nothing is chosen on test.
    val_persons: list[int] = Field(default_factory=lambda: [16], min_length=1)
    test_persons: list[int] = Field(default_factory=lambda: list(range(17, 26)), min_length=1)
    actions: list[Action] = Field(default_factory=lambda: list(KTH_ACTIONS), min_length=1)
    # Frames between window starts; None: the reference loaders' rule (module docstring).
    clip_stride: int | None = Field(default=None, gt=0)


@dataclass(frozen=True)
class Sequence:
    """One KTH recording: a video file or a folder of its frames."""

    person: int
    action: str
    scenario: int
    path: Path

    @property
    def name(self) -> str:
        return f"person{self.person:02d}_{self.action}_d{self.scenario}"

    @property
    def is_video(self) -> bool:
        return self.path.suffix.lower() == ".avi"


def find_sequences(directory: Path, actions: list[str]) -> list[Sequence]:
    """Every recording of `actions` under `directory`: `personXX_<action>_dY_uncomp.avi`
    files and `personXX_<action>_dY_uncomp/` frame folders, at any depth; where both exist
    for one recording the video is used. Sorted by action, person, scenario."""
    found: dict[tuple[str, int, int], Sequence] = {}
    for path in sorted(directory.rglob("person*")):
        is_avi = path.is_file() and path.suffix.lower() == ".avi"
        match = SEQUENCE_NAME.match(path.stem if is_avi else path.name)
        if match is None or not (is_avi or path.is_dir()) or match.group(2) not in actions:
            continue
        person, action, scenario = int(match.group(1)), match.group(2), int(match.group(3))
        key = (action, person, scenario)
        if key in found and found[key].is_video:
            continue
        if is_avi or numbered_images(path, FRAME_PREFIX):
            found[key] = Sequence(person, action, scenario, path)
    return [found[key] for key in sorted(found)]


def sequence_frames(sequence: Sequence, size: int) -> Iterator[tuple[int, np.ndarray]]:
    """`(frame number, uint8 [1, size, size])` of one recording, in order."""
    if sequence.is_video:
        yield from decode_video(sequence.path, 1, size)
    else:
        for number, path in numbered_images(sequence.path, FRAME_PREFIX):
            yield number, read_image(path, 1, size)


def window_stride(config: KTHConfig, action: str, length: int) -> int:
    if config.clip_stride is not None:
        return config.clip_stride
    return DENSE_STRIDE if action in DENSE_ACTIONS else length


def write_sequences(
    config: KTHConfig, sequences: list[Sequence], out_dir: Path, split: str, length: int
) -> dict[str, int]:
    """Cut every sequence into windows of `length` frames and store them as `<split>.npy`;
    returns the number of windows per sequence."""
    size = config.image_size
    per_sequence: dict[str, int] = {}
    with SplitWriter(out_dir, split, (length, 1, size, size), np.uint8) as writer:
        for sequence in sequences:
            before = writer.count
            stride = window_stride(config, sequence.action, length)
            for window in sliding_windows(sequence_frames(sequence, size), length, stride):
                writer.append(window)
            per_sequence[sequence.name] = writer.count - before
        if writer.count == 0:
            persons = sorted({s.person for s in sequences})
            raise DataError(
                f"KTH {split} split: no recording of persons {persons} is {length} frames "
                "long; nothing to store"
            )
    return per_sequence


def download_videos(raw_dir: Path, actions: list[str]) -> Path:
    """Fetch and verify each action's zip into `raw_dir` and unzip it into
    `raw_dir/videos/<action>/` (again only when the zip changed); returns `raw_dir/videos`."""
    videos = raw_dir / VIDEOS_DIR
    for action in actions:
        remote = REMOTE_FILES[action]
        archive = fetch(remote, raw_dir)
        digest = expected_sha256(remote, raw_dir)
        target, marker = videos / action, videos / f".{action}.extracted"
        if target.is_dir() and marker.is_file() and marker.read_text().strip() == digest:
            continue
        partial = videos / f".{action}.partial"
        for stale in (target, partial):
            shutil.rmtree(stale, ignore_errors=True)
        marker.unlink(missing_ok=True)
        safe_extract(archive, partial)
        partial.rename(target)
        marker.write_text(f"{digest}\n")
    return videos


def layout_help(directory: Path) -> str:
    return (
        f"expected under {directory} the unzipped KTH videos "
        "(<action>/personXX_<action>_dY_uncomp.avi) or extracted frames "
        "(<action>/personXX_<action>_dY_uncomp/image_NNNN.png or .jpg)"
    )


@DATASETS.register("kth")
class KTH(WindowedBenchmark):
    config_class = KTHConfig
    channels = 1
    title = "KTH Action"

    @classmethod
    def check(cls, config: DataConfig) -> list[str]:
        assert isinstance(config, KTHConfig)
        problems = super().check(config)
        person_keys = ("train_persons", "val_persons", "test_persons")
        problems += listed_twice(config, (*person_keys, "actions"), "an entry")
        for key in person_keys:
            outside = [p for p in getattr(config, key) if p not in PERSONS]
            if outside:
                problems.append(f"{key} names persons {outside}; KTH has persons 1-25")
        problems += shared_members(config, person_keys, "person")
        problems += config.stand_in_size_problems(EMBEDDED_MIN_SIZE)
        problems += config.clip_count_problems("their videos hold")
        return problems

    @classmethod
    def prepare_splits(cls, config: DataConfig, raw_dir: Path, out_dir: Path) -> dict[str, Any]:
        assert isinstance(config, KTHConfig)
        if config.source == "embedded":
            meta = _prepare_embedded(config, out_dir)
        else:
            meta = _prepare_real(config, raw_dir, out_dir)
        split_rule = (
            f"by person: train persons {config.train_persons}, validation persons "
            f"{config.val_persons}, test persons {config.test_persons}; windows never cross "
            "a video"
        )
        val_rule = f"persons {config.val_persons} held out of the training persons"
        return {
            "clip_length": config.clip_lengths,
            "split_rule": split_rule,
            "val_rule": val_rule,
            **meta,
        }


def _prepare_real(config: KTHConfig, raw_dir: Path, out_dir: Path) -> dict[str, object]:
    if config.source == "download":
        directory = download_videos(raw_dir, list(config.actions))
        files = {
            REMOTE_FILES[a].name: expected_sha256(REMOTE_FILES[a], raw_dir) for a in config.actions
        }
    else:
        assert config.root is not None
        directory = Path(config.root)
        if not directory.is_dir():
            raise DataError(f"{directory}: not a folder; {layout_help(directory)}")
        files = {}
    sequences = find_sequences(directory, list(config.actions))
    missing = sorted(set(config.actions) - {s.action for s in sequences})
    if missing:
        raise DataError(f"{directory}: no recordings of {missing}; {layout_help(directory)}")
    counts: dict[str, int] = {}
    windows: dict[str, dict[str, int]] = {}
    persons: dict[str, list[int]] = {}
    for split, chosen_persons in split_persons(config).items():
        chosen = [s for s in sequences if s.person in chosen_persons]
        length = config.clip_lengths[split]
        windows[split] = write_sequences(config, chosen, out_dir, split, length)
        counts[f"{split}_clips"] = sum(windows[split].values())
        counts[f"{split}_recordings"] = len(chosen)
        persons[split] = sorted({s.person for s in chosen})
    return {
        "description": (
            f"KTH Action: {', '.join(config.actions)}; grayscale, resized to "
            f"{config.image_size}x{config.image_size}"
        ),
        "windows": (
            f"one every {config.clip_stride} frames"
            if config.clip_stride
            else "non-overlapping, except every 3 frames for jogging and running"
        ),
        "persons_present": persons,
        "counts": counts,
        "short_recordings": sorted(
            name for split in windows.values() for name, n in split.items() if n == 0
        ),
        "files": files,
    }


def split_persons(config: KTHConfig) -> dict[str, list[int]]:
    return {
        "train": config.train_persons,
        "val": config.val_persons,
        "test": config.test_persons,
    }


def _prepare_embedded(config: KTHConfig, out_dir: Path) -> dict[str, object]:
    counts, lengths = config.stand_in_clips, config.clip_lengths
    persons = split_persons(config)
    for split, stream in SPLIT_STREAMS.items():
        clips, _ = kth_clips(
            config.data_seed,
            stream,
            persons[split],
            list(config.actions),
            counts[split],
            lengths[split],
            config.image_size,
        )
        write_split(out_dir, split, clips)
    return {
        "description": (
            "Embedded stand-in, NOT the real KTH Action benchmark: an articulated stick "
            f"figure ({', '.join(config.actions)}) on a textured background in KTH's four "
            "scenarios, one look per person number; generated with data_seed "
            f"{config.data_seed}"
        ),
        "counts": {f"{split}_clips": n for split, n in counts.items()},
    }

"""Human3.6M (DESIGN.md §3): RGB video of people acting in a lab, resized to image_size (256,
or the lighter 128), 4 -> 4, one frame kept every `frame_step` (5, as OpenSTL: 50 fps -> 10).

Split by subject: train S1, S5, S6, S7, validation S8 (held out of the usual training
subjects S1, S5-S8), test S9, S11 (configurable, never overlapping).
Windows are cut from one recording (subject, action, camera) at a time and never cross it nor
a gap in its frame numbering; one window starts every `clip_stride` kept frames (default:
the window length, so windows do not overlap).

Human3.6M is licensed: the harness cannot download it. Sources:
- `local`: `root` holds either the official per-subject videos, unpacked as distributed
  (`S1/Videos/Directions 1.54138969.mp4`; the unsegmented `_ALL*` videos are skipped), or
  frames extracted as in OpenSTL's preparation (`images/S1_Directions_1.54138969_000001.jpg`,
  also accepted directly in `root`).
- `embedded`: an offline stand-in, NOT the real benchmark (see `standins.human_clips`).

Preparation streams: one decoded frame and one window in memory at a time.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from seemore.data import DATASETS
from seemore.data.base import DataConfig, write_split
from seemore.data.download import DataError
from seemore.data.standins import human_clips
from seemore.data.video import (
    IMAGE_SUFFIXES,
    SplitWriter,
    decode_video,
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

SUBJECT = re.compile(r"^S\d+$")
# `<action>.<camera>` of an official video; actions may hold spaces ("Directions 1").
VIDEO_NAME = re.compile(r"^(?P<action>[^_].*)\.(?P<camera>\d+)$")
# `<subject>_<action>.<camera>_<frame>` of an extracted frame (OpenSTL's layout).
FRAME_NAME = re.compile(r"^(?P<subject>S\d+)_(?P<action>.+)\.(?P<camera>\d+)_(?P<frame>\d+)$")
VIDEO_SUFFIXES = (".mp4",)
FRAMES_DIR = "images"
EMBEDDED_MIN_SIZE = 16

LICENCE_HELP = """\
Human3.6M is licensed, so the harness cannot download it. Register at
http://vision.imar.ro/human3.6m, then put the files under {root} in one of two layouts:
  videos: {root}/S1/Videos/Directions 1.54138969.mp4, ...  (each subject's official "Videos"
          archive unpacked into {root}/<subject>/)
  frames: {root}/images/S1_Directions_1.54138969_000001.jpg, ...  (frame files named by
          their frame number in the video, as OpenSTL's tools/prepare_data produce them;
          every frame, or every frame_step-th)
Subjects needed: {needed}. {problem}"""


class Human36MConfig(WindowedConfig):
    train_subjects: list[str] = Field(
        default_factory=lambda: ["S1", "S5", "S6", "S7"], min_length=1
    )
    # Held out of the usual training subjects, so nothing is chosen on test.
    val_subjects: list[str] = Field(default_factory=lambda: ["S8"], min_length=1)
    test_subjects: list[str] = Field(default_factory=lambda: ["S9", "S11"], min_length=1)
    # Keep one frame in this many (the videos run at 50 fps).
    frame_step: int = Field(default=5, gt=0)
    # Kept frames between window starts; None: the window length (no overlap).
    clip_stride: int | None = Field(default=None, gt=0)


@dataclass(frozen=True)
class Recording:
    """One subject's action seen by one camera: a video file, or numbered frame files."""

    subject: str
    action: str
    camera: str
    video: Path | None
    frames: tuple[tuple[int, str], ...] = ()

    @property
    def name(self) -> str:
        return f"{self.subject}_{self.action}.{self.camera}"


def _subject_key(subject: str) -> int:
    return int(subject[1:])


def find_recordings(root: Path) -> list[Recording]:
    """Every recording under `root` in either layout (videos first if both are there),
    sorted by subject number, action and camera."""
    found: dict[tuple[str, str, str], Recording] = {}
    for subject_dir in sorted(root.iterdir()):
        videos = subject_dir / "Videos"
        if not (SUBJECT.match(subject_dir.name) and videos.is_dir()):
            continue
        for path in sorted(videos.iterdir()):
            match = VIDEO_NAME.match(path.stem)
            if match and path.suffix.lower() in VIDEO_SUFFIXES:
                key = (subject_dir.name, match["action"], match["camera"])
                found[key] = Recording(*key, video=path)
    frames: dict[tuple[str, str, str], list[tuple[int, str]]] = {}
    for directory in (root / FRAMES_DIR, root):
        if not directory.is_dir():
            continue
        for entry in sorted(directory.iterdir()):
            match = FRAME_NAME.match(entry.stem)
            if match and entry.suffix.lower() in IMAGE_SUFFIXES:
                key = (match["subject"], match["action"], match["camera"])
                frames.setdefault(key, []).append((int(match["frame"]), str(entry)))
    for key, numbered in frames.items():
        if key not in found:
            found[key] = Recording(*key, video=None, frames=tuple(sorted(numbered)))
    return [found[key] for key in sorted(found, key=lambda k: (_subject_key(k[0]), *k[1:]))]


def recording_frames(
    recording: Recording, size: int, step: int
) -> Iterator[tuple[int, np.ndarray]]:
    """`(kept frame number, uint8 [3, size, size])`, keeping one frame in `step`; a missing
    frame file leaves a gap in the numbering."""
    if recording.video is not None:
        yield from decode_video(recording.video, 3, size, step)
        return
    first = recording.frames[0][0]
    for number, path in recording.frames:
        if (number - first) % step == 0:
            yield (number - first) // step, read_image(Path(path), 3, size)


def missing_files_error(root: Path, needed: list[str], problem: str) -> DataError:
    return DataError(LICENCE_HELP.format(root=root, needed=", ".join(needed), problem=problem))


@DATASETS.register("human36m")
class Human36M(WindowedBenchmark):
    config_class = Human36MConfig
    channels = 3
    title = "Human3.6M"

    @classmethod
    def check(cls, config: DataConfig) -> list[str]:
        assert isinstance(config, Human36MConfig)
        problems = super().check(config)
        if config.source == "download":
            problems.append(
                "source 'download' is not possible: Human3.6M is licensed; use source "
                "'local' with root set to where you put the files (see the README)"
            )
        subject_keys = ("train_subjects", "val_subjects", "test_subjects")
        for key in subject_keys:
            subjects = getattr(config, key)
            malformed = [s for s in subjects if not SUBJECT.match(s)]
            if malformed:
                problems.append(f"{key} = {subjects}: {malformed} are not like 'S1' or 'S11'")
            problems += listed_twice(config, (key,), "a subject")
        problems += shared_members(config, subject_keys, "subject")
        problems += config.stand_in_size_problems(EMBEDDED_MIN_SIZE)
        problems += config.clip_count_problems("their recordings hold")
        return problems

    @classmethod
    def prepare_splits(cls, config: DataConfig, raw_dir: Path, out_dir: Path) -> dict[str, Any]:
        assert isinstance(config, Human36MConfig)
        if config.source == "embedded":
            meta = _prepare_embedded(config, out_dir)
        else:
            meta = _prepare_local(config, out_dir)
        split_rule = (
            f"by subject: train {config.train_subjects}, validation {config.val_subjects}, "
            f"test {config.test_subjects}; windows never cross a recording"
        )
        val_rule = f"subjects {config.val_subjects} held out of the training subjects"
        return {
            "clip_length": config.clip_lengths,
            "split_rule": split_rule,
            "val_rule": val_rule,
            **meta,
        }


def _prepare_local(config: Human36MConfig, out_dir: Path) -> dict[str, object]:
    if config.root is None:
        raise DataError("data.human36m: source 'local' needs 'root'")
    root = Path(config.root)
    subjects_of = split_subjects(config)
    needed = [subject for subjects in subjects_of.values() for subject in subjects]
    if not root.is_dir():
        raise missing_files_error(root, needed, f"{root} does not exist.")
    recordings = find_recordings(root)
    present = {r.subject for r in recordings}
    missing = [s for s in needed if s not in present]
    if missing:
        found = f"found only {sorted(present, key=_subject_key)}" if present else "found none"
        raise missing_files_error(root, needed, f"Missing: {', '.join(missing)} ({found}).")
    size = config.image_size
    counts: dict[str, int] = {}
    for split, subjects in subjects_of.items():
        length = config.clip_lengths[split]
        stride = config.clip_stride or length
        chosen = [r for r in recordings if r.subject in subjects]
        with SplitWriter(out_dir, split, (length, 3, size, size), np.uint8) as writer:
            for recording in chosen:
                frames = recording_frames(recording, size, config.frame_step)
                for window in sliding_windows(frames, length, stride):
                    writer.append(window)
            if writer.count == 0:
                raise DataError(
                    f"{root}: no recording of {subjects} has {length} frames after keeping one "
                    f"in {config.frame_step}; nothing to store for the {split} split"
                )
        counts[f"{split}_clips"] = writer.count
        counts[f"{split}_recordings"] = len(chosen)
    layouts = {"videos" if r.video is not None else "frames" for r in recordings}
    return {
        "description": (
            f"Human3.6M: RGB, one frame in {config.frame_step}, resized to "
            f"{size}x{size}, from {' and '.join(sorted(layouts))}"
        ),
        "windows": (
            f"one every {config.clip_stride} kept frames" if config.clip_stride else "no overlap"
        ),
        "counts": counts,
    }


def split_subjects(config: Human36MConfig) -> dict[str, list[str]]:
    return {
        "train": config.train_subjects,
        "val": config.val_subjects,
        "test": config.test_subjects,
    }


def _prepare_embedded(config: Human36MConfig, out_dir: Path) -> dict[str, object]:
    counts, lengths = config.stand_in_clips, config.clip_lengths
    subjects = split_subjects(config)
    for split, stream in SPLIT_STREAMS.items():
        clips, _ = human_clips(
            config.data_seed,
            stream,
            subjects[split],
            counts[split],
            lengths[split],
            config.image_size,
        )
        write_split(out_dir, split, clips)
    return {
        "description": (
            "Embedded stand-in, NOT the real Human3.6M benchmark: striped ellipses gliding "
            "and turning over a textured RGB room, one room and palette per subject; "
            f"generated with data_seed {config.data_seed}"
        ),
        "counts": {f"{split}_clips": n for split, n in counts.items()},
    }

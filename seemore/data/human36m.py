"""Human3.6M (DESIGN.md §3): RGB video of people acting in a lab, resized to image_size (256,
or the lighter 128), 4 -> 4, one frame kept every `frame_step` (5, as OpenSTL: 50 fps -> 10).

Protocols (`data.human36m.protocol`):
- `openstl` (default): OpenSTL's split, read from its window lists `train.txt` / `test.txt`
  (73,404 / 8,582 windows; every subject in both; lines `images/S1_Directions.54138969_,226,
  296` give a recording's frame prefix and a first frame; starts 25 raw frames apart): each
  window is frames first, first + frame_step, ... of `root/images/`, which must already be
  at 256x256 as OpenSTL's preparation leaves them (resized, if image_size differs, as
  OpenSTL: OpenCV bicubic). The lists are read from `root`, else fetched from OpenSTL's
  repository into the raw folder; either way checked against their pinned SHA-256.
  Validation: a seeded `val_fraction` of the train windows that share no frame with any
  test window, removed from training.
- `subject`: our leak-free split by subject, NOT comparable to OpenSTL's table: train S1, S5,
  S6, S7, validation S8 (held out of the usual training subjects S1, S5-S8), test S9, S11
  (configurable, never overlapping). Windows are cut from one recording (subject, action,
  camera) at a time and never cross it nor a gap in its frame numbering; one window starts
  every `clip_stride` kept frames (default: the window length, so windows do not overlap).

Human3.6M is licensed: the harness cannot download it. Sources:
- `local`: for `subject`, `root` holds either the official per-subject videos, unpacked as
  distributed (`S1/Videos/Directions 1.54138969.mp4`; the unsegmented `_ALL*` videos are
  skipped), or frames extracted as in OpenSTL's preparation
  (`images/S1_Directions_1.54138969_000001.jpg`, also accepted directly in `root`); for
  `openstl`, the frames in `root/images/` (and optionally the two list files).
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
from PIL import Image, UnidentifiedImageError
from pydantic import Field

from seemore.data import DATASETS
from seemore.data.base import DataConfig, write_split
from seemore.data.download import DataError, RemoteFile, fetch, local_file_record
from seemore.data.protocols import Protocol, protocol_registry
from seemore.data.standins import human_clips
from seemore.data.video import (
    IMAGE_SUFFIXES,
    SplitWriter,
    decode_video,
    read_image,
    resize_like_cv2,
    sliding_windows,
    to_uint8,
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

# OpenSTL's window lists (from STRPM), pinned to the commit they were read at.
OPENSTL_COMMIT = "c74deb5d4c3da585291f9f18281f3fefdbba3a54"
OPENSTL_LISTS = {
    split: RemoteFile(
        name=f"{split}.txt",
        url=(
            f"https://raw.githubusercontent.com/chengtan9907/OpenSTL/{OPENSTL_COMMIT}/"
            f"tools/prepare_data/meta/human/{split}.txt"
        ),
        sha256=sha256,
    )
    for split, sha256 in (
        ("train", "40bcdf3d1ab76c6cea7428524ab6ae59ab90717e0dfba6be7e0697c6db8410bb"),
        ("test", "9b840384aa589f8d8c25867e850403bdaea8c7d0f98d72d37e8ec306efe4ec38"),
    )
}
# `images/S1_Directions.54138969_,226,296`: frame prefix, first frame, an end OpenSTL ignores.
LIST_LINE = re.compile(r"^(?P<prefix>images/S\d+_[^,/]+\.\d+_),(?P<first>\d+),(?P<end>\d+)$")
# Every subject is in both of OpenSTL's lists.
OPENSTL_SUBJECTS = ("S1", "S5", "S6", "S7", "S8", "S9", "S11")
OPENSTL_VAL_STREAM = 5

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
    # `subject`: kept frames between window starts; None: the window length (no overlap).
    clip_stride: int | None = Field(default=None, gt=0)
    # `openstl`: share of the train windows (those sharing no frame with a test window) held
    # out, drawn with data_seed, as the validation split.
    val_fraction: float = Field(default=0.05, gt=0, lt=1)


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


HUMAN36M_PROTOCOLS = protocol_registry("human36m")


@DATASETS.register("human36m")
class Human36M(WindowedBenchmark):
    config_class = Human36MConfig
    channels = 3
    title = "Human3.6M"
    description = "actors in 17 scenarios, RGB (licensed: you supply the files), 4 -> 4 frames"
    protocols = HUMAN36M_PROTOCOLS
    default_protocol = "openstl"

    @classmethod
    def check(cls, config: DataConfig) -> list[str]:
        assert isinstance(config, Human36MConfig)
        problems = []
        if config.source == "download":
            problems.append(
                "source 'download' is not possible: Human3.6M is licensed; use source "
                "'local' with root set to where you put the files (see the README)"
            )
        problems += super().check(config)
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
            meta = {**subject_split_meta(config), **_prepare_embedded(config, out_dir)}
        else:
            meta = cls.protocol(config).prepare_splits(config, raw_dir, out_dir)
        return {"clip_length": config.clip_lengths, **meta}


def subject_split_meta(config: Human36MConfig) -> dict[str, str]:
    return {
        "split_rule": (
            f"by subject: train {config.train_subjects}, validation {config.val_subjects}, "
            f"test {config.test_subjects}; windows never cross a recording"
        ),
        "val_rule": f"subjects {config.val_subjects} held out of the training subjects",
    }


@HUMAN36M_PROTOCOLS.register("subject")
class SubjectSplit(Protocol):
    """Our leak-free split: whole subjects per split, non-overlapping windows."""

    reference = "none: seemore's own split by subject (no subject in two splits)"
    comparable = False
    sources = ("local",)

    @classmethod
    def prepare_splits(cls, config: DataConfig, raw_dir: Path, out_dir: Path) -> dict[str, Any]:
        assert isinstance(config, Human36MConfig)
        return {**subject_split_meta(config), **_prepare_local(config, out_dir)}


@HUMAN36M_PROTOCOLS.register("openstl")
class OpenSTLLists(Protocol):
    """OpenSTL's window lists over its 256x256 frames (module docstring)."""

    reference = "OpenSTL openstl/datasets/dataloader_human.py with tools/prepare_data lists"
    sources = ("local",)

    @classmethod
    def check(cls, config: DataConfig) -> list[str]:
        assert isinstance(config, Human36MConfig)
        if config.clip_stride is not None:
            return ["clip_stride applies to protocol 'subject'; OpenSTL's lists fix the windows"]
        return []

    @classmethod
    def prepare_splits(cls, config: DataConfig, raw_dir: Path, out_dir: Path) -> dict[str, Any]:
        assert isinstance(config, Human36MConfig) and config.root is not None
        root = Path(config.root)
        if not (root / FRAMES_DIR).is_dir():
            raise DataError(
                f"{root / FRAMES_DIR}: missing; Human3.6M is licensed (register at "
                "http://vision.imar.ro/human3.6m); protocol 'openstl' reads OpenSTL's 256x256 "
                f"frames of subjects {', '.join(OPENSTL_SUBJECTS)} there "
                f"({root}/images/S1_Directions.54138969_000001.jpg, ..., as its "
                "tools/prepare_data/download_human3.6m.sh leaves them); for the official "
                "videos use protocol 'subject'"
            )
        files, listed = {}, {}
        for split in ("train", "test"):
            path, files[path.name] = window_list(split, root, raw_dir)
            listed[split] = read_window_list(path)
        splits = hold_out_val(config, listed["train"], listed["test"])
        counts = {}
        for split, windows in splits.items():
            counts[f"{split}_clips"] = write_listed_windows(config, root, windows, out_dir, split)
        return {
            "description": (
                f"Human3.6M: RGB, OpenSTL's windows of every {config.frame_step}th frame, "
                f"{config.image_size}x{config.image_size}"
            ),
            "split_rule": (
                "OpenSTL's window lists train.txt / test.txt (every subject in both; test "
                "windows share frames with train windows, as in OpenSTL)"
            ),
            "val_rule": (
                f"{counts['val_clips']} train-list windows ({config.val_fraction:g} of them) "
                f"drawn with data_seed {config.data_seed} from those sharing no frame with a "
                "test window; removed from training"
            ),
            "files": files,
            "counts": counts,
        }


@dataclass(frozen=True)
class ListedWindow:
    """One line of an OpenSTL list: the frame-name prefix of a recording, its first frame."""

    prefix: str
    first: int


def window_list(split: str, root: Path, raw_dir: Path) -> tuple[Path, dict[str, str]]:
    """OpenSTL's `<split>.txt` from `root` (checked against the pin), else fetched; with its
    meta.json record."""
    remote = OPENSTL_LISTS[split]
    given = root / remote.name
    if given.is_file():
        try:
            return given, local_file_record(given, remote.sha256)
        except DataError as error:
            raise DataError(
                f"{error}: protocol 'openstl' needs OpenSTL's own {remote.name} (delete it "
                f"and it is fetched from {remote.url})"
            ) from None
    path = fetch(remote, raw_dir)
    return path, {"sha256": remote.sha256 or "", "status": f"fetched from {remote.url}"}


def read_window_list(path: Path) -> list[ListedWindow]:
    windows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        match = LIST_LINE.match(line.strip())
        if match is None:
            if not line.strip():
                continue
            raise DataError(
                f"{path}: line {number} is {line[:80]!r}; expected lines like "
                "'images/S1_Directions.54138969_,226,296' (frame prefix, first frame, end)"
            )
        windows.append(ListedWindow(match["prefix"], int(match["first"])))
    if not windows:
        raise DataError(f"{path}: lists no windows")
    return windows


def hold_out_val(
    config: Human36MConfig, train: list[ListedWindow], test: list[ListedWindow]
) -> dict[str, list[ListedWindow]]:
    """Train, val and test windows: val drawn with data_seed among the train windows that
    share no frame with any test window (each window spans first ... first + (T - 1) *
    frame_step of its recording)."""
    step, lengths = config.frame_step, config.clip_lengths
    test_spans: dict[str, list[tuple[int, int]]] = {}
    for window in test:
        end = window.first + (lengths["test"] - 1) * step
        test_spans.setdefault(window.prefix, []).append((window.first, end))
    reach = (lengths["val"] - 1) * step
    eligible = [
        index
        for index, window in enumerate(train)
        if all(
            window.first + reach < first or window.first > last
            for first, last in test_spans.get(window.prefix, [])
        )
    ]
    count = min(len(eligible), int(np.ceil(len(train) * config.val_fraction)))
    if count == 0:
        raise DataError("OpenSTL's lists leave no train window apart from the test windows")
    rng = np.random.default_rng([config.data_seed, OPENSTL_VAL_STREAM])
    chosen = set(rng.choice(eligible, size=count, replace=False).tolist())
    return {
        "train": [w for i, w in enumerate(train) if i not in chosen],
        "val": [w for i, w in enumerate(train) if i in chosen],
        "test": test,
    }


def read_openstl_frame(path: Path, size: int) -> np.ndarray:
    """One of OpenSTL's frames as uint8 `[3, size, size]` (RGB): as stored when it is `size`
    high, else resized as OpenSTL's loader does (OpenCV bicubic, to size x size)."""
    try:
        with Image.open(path) as image:
            frame = np.asarray(image.convert("RGB"))
    except FileNotFoundError:
        raise DataError(f"{path}: missing; OpenSTL's list names this frame") from None
    except (UnidentifiedImageError, OSError) as error:
        raise DataError(f"{path}: not a readable image ({error})") from None
    if frame.shape[0] != size:
        frame = to_uint8(resize_like_cv2(frame, size, "cubic"))
    elif frame.shape[1] != size:
        raise DataError(f"{path}: {frame.shape[1]}x{frame.shape[0]}, expected square frames")
    return frame.transpose(2, 0, 1)


def write_listed_windows(
    config: Human36MConfig, root: Path, windows: list[ListedWindow], out_dir: Path, split: str
) -> int:
    size, length, step = config.image_size, config.clip_lengths[split], config.frame_step
    with SplitWriter(out_dir, split, (length, 3, size, size), np.uint8) as writer:
        for window in windows:
            frames = [
                read_openstl_frame(root / f"{window.prefix}{window.first + k * step:06d}.jpg", size)
                for k in range(length)
            ]
            writer.append(np.stack(frames))
    return writer.count


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

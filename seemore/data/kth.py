"""KTH Action (DESIGN.md §3): grayscale people walking, jogging, running, boxing, waving and
clapping, resized to image_size (128 for the benchmark), 10 -> 20 with 10 -> 20 / 10 -> 40
test horizons.

Split by person, as the PredRNN / OpenSTL loaders: persons 01-16 for training, 17-25 test;
of the training persons, 16 is held out as the validation split (the references validate on
the test split; all three lists configurable, never overlapping). Windows never cross a
recording (nor a gap in a frame folder's numbering). Train and validation windows hold
input_frames + output_frames frames, test windows input_frames + the test horizon.

Protocols (`data.kth.protocol`, docs/protocols.md):
- `openstl` (default) and `predrnn`: the PredRNN image release (frame folders
  `<action>/personXX_<action>_dY_uncomp/image_NNNN.png|jpg`), read as the references read it
  (first channel, OpenCV's bilinear rule), windows END-aligned walking backwards
  (`end_aligned_starts`). `download` fetches OpenSTL's `kth_action.zip` (no published
  SHA-256: pinned on first use once its layout is checked); `local` reads the folders in
  `root`. The two differ only in the reference horizons they record.
- `avi`: the six AVI zips of the KTH site (`download`; trusted on first use, checked against
  the SHA-1 that visym/vipy pins) or AVIs / frame folders in `root` (`local`), every frame,
  windows from each video's start: one every window length for boxing, handclapping,
  handwaving and walking, every 3 frames for jogging and running, or every `clip_stride`.
- `embedded`: an offline stand-in, NOT the real benchmark (see `standins.kth_clips`).

Preparation streams (one decoded frame and one window in memory, windows appended to disk),
so its memory does not grow with the dataset.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from PIL import Image, UnidentifiedImageError
from pydantic import Field

from seemore.data import DATASETS
from seemore.data.base import DataConfig, write_split
from seemore.data.download import (
    DataError,
    RemoteFile,
    download_record,
    fetch_extracted,
    zip_names,
)
from seemore.data.protocols import Protocol, protocol_registry
from seemore.data.standins import KTH_ACTIONS, kth_clips
from seemore.data.video import (
    SplitWriter,
    decode_video,
    numbered_images,
    read_image,
    resize_like_cv2,
    sliding_windows,
    to_uint8,
    windows_at,
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
RELEASE_ARCHIVE = RemoteFile(
    name="kth_action.zip",
    url="https://github.com/chengtan9907/OpenSTL/releases/download/v0.1.0/kth_action.zip",
    sha256=None,
)
VIDEOS_DIR = "videos"
FRAMES_DIR = "frames"
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


def find_sequences(directory: Path, actions: list[str], videos: bool = True) -> list[Sequence]:
    """Every recording of `actions` under `directory`: `personXX_<action>_dY_uncomp.avi`
    files (unless `videos` is False) and `personXX_<action>_dY_uncomp/` frame folders, at any
    depth; where both exist for one recording the video is used. Sorted by action, person,
    scenario."""
    found: dict[tuple[str, int, int], Sequence] = {}
    for path in sorted(directory.rglob("person*")):
        is_avi = videos and path.is_file() and path.suffix.lower() == ".avi"
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


def end_aligned_starts(numbers: list[int], length: int, action: str) -> list[int]:
    """Positions (0-based, ascending) in one recording's frames, numbered `numbers` in file
    order, where the references' KTH loaders start a window of `length` frames.

    Their rule: a candidate window ends at the last frame; it is kept when its first and last
    frame numbers are `length - 1` apart (no gap inside), and the next candidate then ends
    `length` frames earlier (non-overlapping) or 3 frames earlier for jogging and running;
    otherwise it ends one frame earlier. So windows are aligned to the END of each run of
    consecutive frames, walking backwards."""
    jump = DENSE_STRIDE if action in DENSE_ACTIONS else length
    starts = []
    end = len(numbers) - 1
    while end >= length - 1:
        start = end - length + 1
        if numbers[end] - numbers[start] == length - 1:
            starts.append(start)
            end -= jump
        else:
            end -= 1
    return starts[::-1]


def release_frame(path: Path, size: int) -> np.ndarray:
    """One frame of the image release as the references read it: its first channel (the
    release stores gray as RGB), resized by OpenCV's bilinear rule in floating point, as
    uint8 `[1, size, size]` (rounded: the references keep the float)."""
    try:
        with Image.open(path) as image:
            pixels = np.asarray(image)
    except (UnidentifiedImageError, OSError) as error:
        raise DataError(f"{path}: not a readable image ({error})") from None
    channel = pixels[:, :, 0] if pixels.ndim == 3 else pixels
    return to_uint8(resize_like_cv2(channel, size))[None]


WindowCutter = Callable[[Sequence, int], Iterator[np.ndarray]]


def avi_windows(config: KTHConfig) -> WindowCutter:
    """Windows from the start of each run of frames, strides as `window_stride` says."""

    def cut(sequence: Sequence, length: int) -> Iterator[np.ndarray]:
        stride = window_stride(config, sequence.action, length)
        frames = sequence_frames(sequence, config.image_size)
        return sliding_windows(frames, length, stride)

    return cut


def release_windows(config: KTHConfig) -> WindowCutter:
    """The references' end-aligned windows (`end_aligned_starts`) over an image folder."""

    def cut(sequence: Sequence, length: int) -> Iterator[np.ndarray]:
        numbered = numbered_images(sequence.path, FRAME_PREFIX)
        starts = end_aligned_starts([n for n, _ in numbered], length, sequence.action)
        frames = (release_frame(path, config.image_size) for _, path in numbered)
        return windows_at(frames, length, starts)

    return cut


def write_sequences(
    config: KTHConfig,
    sequences: list[Sequence],
    out_dir: Path,
    split: str,
    cut: WindowCutter,
) -> dict[str, int]:
    """Cut every sequence into windows of the split's length (as `cut` does) and store them
    as `<split>.npy`; returns the number of windows per sequence."""
    size, length = config.image_size, config.clip_lengths[split]
    per_sequence: dict[str, int] = {}
    with SplitWriter(out_dir, split, (length, 1, size, size), np.uint8) as writer:
        for sequence in sequences:
            before = writer.count
            for window in cut(sequence, length):
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
        fetch_extracted(REMOTE_FILES[action], raw_dir, videos / action)
    return videos


def _check_release(actions: list[str]) -> Callable[[Path], None]:
    """A structural check of the image-release zip: frames of every action in its layout."""

    def check(archive: Path) -> None:
        names = zip_names(archive)
        for action in actions:
            layout = re.compile(rf"(^|/){action}/person\d\d_{action}_d\d_uncomp/image_\d+\.")
            if not any(layout.search(name) for name in names):
                raise DataError(
                    f"{archive}: holds no frames {action}/personXX_{action}_dY_uncomp/"
                    "image_NNNN.*; not the KTH image release"
                )

    return check


def download_release(raw_dir: Path, actions: list[str]) -> Path:
    """Fetch OpenSTL's `kth_action.zip` into `raw_dir` (checked, and pinned on first use) and
    unzip it into `raw_dir/frames/`; returns that folder."""
    return fetch_extracted(RELEASE_ARCHIVE, raw_dir, raw_dir / FRAMES_DIR, _check_release(actions))


def layout_help(directory: Path, videos: bool) -> str:
    frames = "(<action>/personXX_<action>_dY_uncomp/image_NNNN.png or .jpg)"
    if not videos:
        return (
            f"expected under {directory} the KTH image release's frame folders {frames}; "
            "for the AVIs use protocol 'avi'"
        )
    return (
        f"expected under {directory} the unzipped KTH videos "
        f"(<action>/personXX_<action>_dY_uncomp.avi) or extracted frames {frames}"
    )


KTH_PROTOCOLS = protocol_registry("kth")


@DATASETS.register("kth")
class KTH(WindowedBenchmark):
    config_class = KTHConfig
    channels = 1
    title = "KTH Action"
    description = "six human actions by 25 persons, gray, 128x128, 10 -> 20 frames"
    protocols = KTH_PROTOCOLS
    default_protocol = "openstl"

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
            protocol = cls.protocol(config)
            meta = protocol.prepare_splits(config, raw_dir, out_dir)
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


def horizons_meta(config: KTHConfig, reference: tuple[int, int, int]) -> dict[str, Any]:
    ours = (config.input_frames, config.output_frames, config.test_horizon)
    return {
        "reference_horizons": dict(zip(("input", "output", "output_test"), reference, strict=True)),
        "horizons_match_reference": ours == reference,
    }


@KTH_PROTOCOLS.register("openstl")
class ImageRelease(Protocol):
    """The PredRNN image release with the references' end-aligned windows."""

    reference = (
        "OpenSTL openstl/datasets/dataloader_kth.py on its kth_action.zip (the PredRNN image "
        "release)"
    )
    # (input, train output, test output) frames of the reference's KTH setting.
    horizons: ClassVar[tuple[int, int, int]] = (10, 20, 20)

    @classmethod
    def check(cls, config: DataConfig) -> list[str]:
        assert isinstance(config, KTHConfig)
        if config.clip_stride is not None:
            return [
                "clip_stride applies to protocol 'avi'; the image release's windows follow "
                "the references' rule"
            ]
        return []

    @classmethod
    def prepare_splits(cls, config: DataConfig, raw_dir: Path, out_dir: Path) -> dict[str, Any]:
        assert isinstance(config, KTHConfig)
        if config.source == "download":
            directory = download_release(raw_dir, list(config.actions))
            files = {RELEASE_ARCHIVE.name: download_record(RELEASE_ARCHIVE, raw_dir)}
        else:
            assert config.root is not None
            directory, files = Path(config.root), {}
        sequences = find_sequences_in(directory, list(config.actions), videos=False)
        meta = write_splits(config, sequences, out_dir, release_windows(config))
        return {
            **meta,
            "description": (
                f"KTH Action, the PredRNN image release: {', '.join(config.actions)}; first "
                f"channel, OpenCV-bilinear resized to {config.image_size}x{config.image_size}"
            ),
            "windows": (
                "end-aligned, walking back from each run's last frame: non-overlapping, every "
                "3 frames for jogging and running"
            ),
            "files": files,
            **horizons_meta(config, cls.horizons),
        }


@KTH_PROTOCOLS.register("predrnn")
class SeeMoreImageRelease(ImageRelease):
    """The SeeMore authors' loader (PredRNN's): the same frames and window rule as OpenSTL's,
    with train clips at the training horizon and test clips at the test horizon."""

    reference = (
        "DIG-Beihang/SeeMore core/data_provider/kth_action.py (PredRNN's loader) on the "
        "PredRNN image release"
    )
    horizons = (10, 10, 20)


@KTH_PROTOCOLS.register("avi")
class RawVideos(Protocol):
    """The six AVI zips of the KTH site (or AVIs / frame folders in `root`), every frame,
    windows from the start of each video: NOT the references' trimmed image release."""

    reference = "none exactly: the KTH site's AVIs with the references' window strides"
    comparable = False

    @classmethod
    def prepare_splits(cls, config: DataConfig, raw_dir: Path, out_dir: Path) -> dict[str, Any]:
        assert isinstance(config, KTHConfig)
        if config.source == "download":
            directory = download_videos(raw_dir, list(config.actions))
            files = {
                REMOTE_FILES[a].name: download_record(REMOTE_FILES[a], raw_dir)
                for a in config.actions
            }
        else:
            assert config.root is not None
            directory, files = Path(config.root), {}
        sequences = find_sequences_in(directory, list(config.actions), videos=True)
        meta = write_splits(config, sequences, out_dir, avi_windows(config))
        return {
            **meta,
            "description": (
                f"KTH Action from the AVIs: {', '.join(config.actions)}; grayscale, resized to "
                f"{config.image_size}x{config.image_size}"
            ),
            "windows": (
                f"one every {config.clip_stride} frames"
                if config.clip_stride
                else "from each video's start: non-overlapping, every 3 frames for jogging and "
                "running"
            ),
            "files": files,
        }


def find_sequences_in(directory: Path, actions: list[str], videos: bool) -> list[Sequence]:
    """`find_sequences`, refusing a folder that is missing or lacks an action."""
    if not directory.is_dir():
        raise DataError(f"{directory}: not a folder; {layout_help(directory, videos)}")
    sequences = find_sequences(directory, actions, videos)
    missing = sorted(set(actions) - {s.action for s in sequences})
    if missing:
        raise DataError(
            f"{directory}: no recordings of {missing}; {layout_help(directory, videos)}"
        )
    return sequences


def write_splits(
    config: KTHConfig, sequences: list[Sequence], out_dir: Path, cut: WindowCutter
) -> dict[str, Any]:
    """Each split's persons' windows as `cut` makes them, with the counts for meta.json."""
    counts: dict[str, int] = {}
    windows: dict[str, dict[str, int]] = {}
    persons: dict[str, list[int]] = {}
    for split, chosen_persons in split_persons(config).items():
        chosen = [s for s in sequences if s.person in chosen_persons]
        windows[split] = write_sequences(config, chosen, out_dir, split, cut)
        counts[f"{split}_clips"] = sum(windows[split].values())
        counts[f"{split}_recordings"] = len(chosen)
        persons[split] = sorted({s.person for s in chosen})
    return {
        "persons_present": persons,
        "counts": counts,
        "short_recordings": sorted(
            name for split in windows.values() for name, n in split.items() if n == 0
        ),
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

"""Human3.6M: the real preprocessing on tiny files in both local layouts (official per-subject
MP4 videos written with PyAV, OpenSTL's extracted JPEG frames), the subject split, windows
within one recording, the one clear message for missing files, and the embedded stand-in."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from fixtures_prepared import load_meta, load_split, split_bytes_by_seed
from fixtures_video import write_images, write_video

from seemore.config import ConfigError, validate_params
from seemore.data import DATASETS
from seemore.data import human36m as h36m
from seemore.data.download import DataError, sha256_file

BENCHMARK = DATASETS.get("human36m")
RAW_SHAPE = (24, 32)
SIZE = 16
# One colour per subject, so every stored window tells which subject it came from.
COLOURS = {
    "S1": (200, 30, 30),
    "S5": (30, 200, 30),
    "S8": (30, 200, 200),
    "S9": (30, 30, 200),
    "S11": (200, 200, 30),
}


def config(**changes: object) -> h36m.Human36MConfig:
    values: dict[str, object] = {
        "source": "local",
        "protocol": "subject",
        "image_size": SIZE,
        "input_frames": 2,
        "output_frames": 2,
        "train_subjects": ["S1", "S5"],
        "val_subjects": ["S8"],
        "test_subjects": ["S9", "S11"],
        "frame_step": 2,
    }
    return h36m.Human36MConfig(**{**values, **changes})


def subject_frames(subject: str, count: int) -> np.ndarray:
    """RGB frames of the subject's colour, brightening by 4 per frame (a visible frame clock)."""
    colour = np.array(COLOURS[subject])
    ramp = np.clip(colour[None] + 4 * np.arange(count)[:, None], 0, 255)
    return np.broadcast_to(ramp[:, None, None, :], (count, *RAW_SHAPE, 3)).astype(np.uint8)


def write_official_videos(root: Path, lengths: dict[str, int]) -> None:
    """`root/<subject>/Videos/<Action>.<camera>.mp4` as the official archives unpack, plus an
    unsegmented `_ALL` video that must be skipped."""
    for subject, count in lengths.items():
        videos = root / subject / "Videos"
        write_video(videos / "Walking 1.54138969.mp4", subject_frames(subject, count), rate=50)
        write_video(videos / "_ALL.54138969.mp4", np.zeros((4, *RAW_SHAPE, 3), np.uint8))


def subject_of(window: np.ndarray) -> str:
    first = window[0].reshape(3, -1).mean(axis=1)
    return min(COLOURS, key=lambda s: np.abs(first - np.array(COLOURS[s])).sum())


def test_official_videos_are_split_by_subject(tmp_path: Path) -> None:
    write_official_videos(tmp_path / "h36m", {"S1": 12, "S5": 9, "S8": 16, "S9": 8, "S11": 10})
    section = config(root=str(tmp_path / "h36m"))
    BENCHMARK.prepare(section, tmp_path / "raw", tmp_path / "out")
    train, test = load_split(tmp_path / "out", "train"), load_split(tmp_path / "out", "test")
    assert train.shape[1:] == (4, 3, SIZE, SIZE) and train.dtype == np.uint8
    # One frame kept in 2: 6, 5, 8, 4, 5 kept frames; non-overlapping windows of 4.
    assert [subject_of(w) for w in train] == ["S1", "S5"]
    assert [subject_of(w) for w in test] == ["S9", "S11"]
    val = BENCHMARK.val_clips(section, tmp_path / "out")
    assert [subject_of(w) for w in val] == ["S8", "S8"] and val.dtype == test.dtype
    # RGB order is kept, and the frames of a window are 2 source frames (8 levels) apart.
    np.testing.assert_allclose(train[0, 0, :, 4, 4], COLOURS["S1"], atol=3)
    np.testing.assert_allclose(np.diff(train[0, :, 0, 4, 4].astype(int)), 8, atol=2)
    meta = load_meta(tmp_path / "out")
    assert meta["stand_in"] is False and "from videos" in meta["description"]
    assert meta["counts"] == {
        "train_clips": 2,
        "train_recordings": 2,
        "val_clips": 2,
        "val_recordings": 1,
        "test_clips": 2,
        "test_recordings": 2,
    }
    assert meta["val_rule"] == "subjects ['S8'] held out of the training subjects"


def write_openstl_frames(root: Path, subject: str, numbers: list[int]) -> None:
    frames = subject_frames(subject, max(numbers))[np.array(numbers) - 1]
    names = [f"{subject}_Walking_1.54138969_{n:06d}.jpg" for n in numbers]
    write_images(root / "images", frames, names)


def test_openstl_frames_keep_one_in_frame_step_and_windows_skip_gaps(tmp_path: Path) -> None:
    root = tmp_path / "human"
    # Every frame of S1, with frame 11 missing: kept frames 1 3 5 7 9 | 13 15 17 19.
    write_openstl_frames(root, "S1", [n for n in range(1, 20) if n != 11])
    # S9 extracted every 2nd frame already (numbers keep the video's frame index).
    write_openstl_frames(root, "S9", list(range(1, 17, 2)))
    write_openstl_frames(root, "S8", list(range(1, 9)))
    section = config(root=str(root), train_subjects=["S1"], test_subjects=["S9"])
    BENCHMARK.prepare(section, tmp_path / "raw", tmp_path / "out")
    train, test = load_split(tmp_path / "out", "train"), load_split(tmp_path / "out", "test")
    # 5 kept frames then a gap then 4: one window of 4 on each side, none across the gap.
    assert len(train) == 2 and len(test) == 2
    red = train[:, :, 0, 4, 4].astype(int)
    np.testing.assert_allclose(red, [[200, 208, 216, 224], [248, 255, 255, 255]], atol=3)
    assert {subject_of(w) for w in test} == {"S9"}


@pytest.mark.parametrize(
    ("present", "message"),
    [
        ({"S1": 8, "S5": 8}, r"Missing: S8, S9, S11 \(found only \['S1', 'S5'\]\)"),
        ({}, r"Missing: S1, S5, S8, S9, S11 \(found none\)"),
    ],
)
def test_missing_subjects_give_one_message_saying_what_to_put_where(
    tmp_path: Path, present: dict[str, int], message: str
) -> None:
    root = tmp_path / "h36m"
    root.mkdir()
    write_official_videos(root, present)
    with pytest.raises(DataError, match=message) as raised:
        BENCHMARK.prepare(config(root=str(root)), tmp_path / "raw", tmp_path / "out")
    text = str(raised.value)
    assert "licensed" in text and "vision.imar.ro/human3.6m" in text
    assert f"{root}/S1/Videos/Directions 1.54138969.mp4" in text
    assert f"{root}/images/S1_Directions_1.54138969_000001.jpg" in text
    assert "Subjects needed: S1, S5, S8, S9, S11" in text
    assert not (tmp_path / "out" / "train.npy").exists()


def test_a_missing_root_gives_the_same_message(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"licensed(.|\n)*nowhere does not exist"):
        BENCHMARK.prepare(config(root=str(tmp_path / "nowhere")), tmp_path / "raw", tmp_path)


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        (
            {"test_subjects": ["S7", "S9"], "train_subjects": ["S1", "S7"]},
            r"train_subjects and test_subjects share subjects \['S7'\]",
        ),
        ({"val_subjects": ["S9"]}, r"val_subjects and test_subjects share subjects \['S9'\]"),
        ({"train_subjects": ["s1"]}, "not like 'S1'"),
        ({"source": "download"}, "licensed"),
        ({"test_clips": 4}, "'embedded' only"),
    ],
)
def test_check_refuses(changes: dict[str, object], problem: str) -> None:
    section = config(**{"root": "/data/h36m", **changes})
    assert any(re.search(problem, p) for p in BENCHMARK.check(section))


def test_default_split_holds_s8_out_of_the_published_training_subjects() -> None:
    section = h36m.Human36MConfig(image_size=128, input_frames=4, output_frames=4)
    assert section.train_subjects == ["S1", "S5", "S6", "S7"]
    assert section.val_subjects == ["S8"]
    assert section.test_subjects == ["S9", "S11"]
    assert section.frame_step == 5


def test_params_with_a_human36m_section_validate(embedded_raw: dict) -> None:
    embedded_raw["experiment"]["datasets"] = ["human36m"]
    embedded_raw["data"]["human36m"] = {
        "source": "embedded",
        "image_size": 64,
        "input_frames": 4,
        "output_frames": 4,
    }
    assert validate_params(embedded_raw).data["human36m"].test_subjects == ["S9", "S11"]
    embedded_raw["data"]["human36m"]["source"] = "download"
    with pytest.raises(ConfigError, match=r"data\.human36m: .*licensed"):
        validate_params(embedded_raw)


def embedded(**changes: object) -> h36m.Human36MConfig:
    values = {"source": "embedded", "train_clips": 5, "val_clips": 3, "test_clips": 2}
    return config(**{**values, **changes})


def test_embedded_stand_in_has_the_benchmark_geometry(tmp_path: Path) -> None:
    BENCHMARK.prepare(embedded(), tmp_path / "raw", tmp_path / "out")
    train, test = load_split(tmp_path / "out", "train"), load_split(tmp_path / "out", "test")
    assert train.shape == (5, 4, 3, SIZE, SIZE) and test.shape == (2, 4, 3, SIZE, SIZE)
    assert load_split(tmp_path / "out", "val").shape == (3, 4, 3, SIZE, SIZE)
    # Colour and motion: the channels differ, and consecutive frames change.
    assert np.abs(train[:, :, 0].astype(int) - train[:, :, 2]).mean() > 1
    assert np.abs(np.diff(train.astype(int), axis=1)).mean() > 0.5
    meta = load_meta(tmp_path / "out")
    assert meta["stand_in"] is True and "NOT the real Human3.6M" in meta["description"]


def test_embedded_stand_in_is_fixed_by_data_seed(tmp_path: Path) -> None:
    first, again, other = split_bytes_by_seed(BENCHMARK, embedded(), (3, 3, 4), "test", tmp_path)
    assert first == again != other


# --- protocol `openstl`: OpenSTL's window lists --------------------------------------------

PREFIX = "images/S1_Walking.54138969_"


def write_openstl_images(root: Path, prefix: str, count: int, size: int = SIZE) -> None:
    """Frames 1..count named as OpenSTL's lists expect (`<prefix>000001.jpg`): flat colour,
    red = the frame number, so a stored frame tells which frame it is."""
    frames = np.zeros((count, size, size, 3), np.uint8)
    frames[..., 0] = np.arange(1, count + 1)[:, None, None] * 4
    frames[..., 1] = 100
    names = [f"{Path(prefix).name}{n:06d}.jpg" for n in range(1, count + 1)]
    write_images(root / "images", frames, names)


def write_lists(directory: Path, lines: dict[str, list[str]]) -> dict[str, h36m.RemoteFile]:
    """train.txt / test.txt with `lines`, and RemoteFiles pinning them (served by file://)."""
    directory.mkdir(parents=True, exist_ok=True)
    remotes = {}
    for split, content in lines.items():
        path = directory / f"{split}.txt"
        path.write_text("\n".join(content) + "\n")
        remotes[split] = h36m.RemoteFile(path.name, path.as_uri(), sha256_file(path))
    return remotes


def openstl(**changes: object) -> h36m.Human36MConfig:
    values = {"protocol": "openstl", "frame_step": 5, "val_fraction": 0.05}
    return config(**{**values, **changes})


LINES = {
    "train": [f"{PREFIX},1,71", f"{PREFIX},21,91", f"{PREFIX},41,111"],
    "test": [f"{PREFIX},26,96"],
}


def reds(windows: np.ndarray) -> list[list[int]]:
    """The frame numbers of each window's frames (red / 4, JPEG rounding removed)."""
    return np.rint(windows[:, :, 0, 4, 4].astype(float) / 4).astype(int).tolist()


def test_openstl_lists_give_their_windows_and_a_disjoint_validation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "human"
    write_openstl_images(root, PREFIX, 60)
    monkeypatch.setattr(h36m, "OPENSTL_LISTS", write_lists(root, LINES))
    BENCHMARK.prepare(openstl(root=str(root)), tmp_path / "raw", tmp_path / "out")
    out = tmp_path / "out"
    # 4 frames, every 5th from the listed first frame. Train windows spanning 1-16, 21-36,
    # 41-56; the test window 26-41 shares frames with the last two, so the validation
    # window (ceil(0.05 * 3) = 1) can only be the first, and it leaves training.
    assert reds(load_split(out, "val")) == [[1, 6, 11, 16]]
    assert reds(load_split(out, "train")) == [[21, 26, 31, 36], [41, 46, 51, 56]]
    assert reds(load_split(out, "test")) == [[26, 31, 36, 41]]
    meta = load_meta(out)
    assert meta["protocol"] == "openstl" and meta["comparable_to_reference"] is True
    assert meta["files"]["train.txt"]["status"] == "verified against the pinned SHA-256"
    assert meta["counts"] == {"train_clips": 2, "val_clips": 1, "test_clips": 1}


def test_openstl_lists_are_fetched_when_absent_and_must_be_openstls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "human"
    write_openstl_images(root, PREFIX, 60)
    monkeypatch.setattr(h36m, "OPENSTL_LISTS", write_lists(tmp_path / "server", LINES))
    BENCHMARK.prepare(openstl(root=str(root)), tmp_path / "raw", tmp_path / "out")
    assert (tmp_path / "raw" / "train.txt").is_file()
    # A list in root that is not OpenSTL's is refused, naming the pin.
    (root / "train.txt").write_text(f"{PREFIX},1,71\n")
    with pytest.raises(DataError, match=r"train\.txt: SHA-256 is .* needs OpenSTL's own"):
        BENCHMARK.prepare(openstl(root=str(root)), tmp_path / "raw", tmp_path / "out")


def test_openstl_resizes_frames_of_another_size_and_names_bad_lines_and_frames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "human"
    write_openstl_images(root, PREFIX, 60, size=2 * SIZE)
    monkeypatch.setattr(h36m, "OPENSTL_LISTS", write_lists(root, LINES))
    BENCHMARK.prepare(openstl(root=str(root)), tmp_path / "raw", tmp_path / "out")
    assert load_split(tmp_path / "out", "train").shape == (2, 4, 3, SIZE, SIZE)
    lines = {"train": [*LINES["train"], f"{PREFIX},200,270"], "test": LINES["test"]}
    monkeypatch.setattr(h36m, "OPENSTL_LISTS", write_lists(root, lines))
    missing = f"{PREFIX.split('/')[1]}000200.jpg: missing; OpenSTL's list names this frame"
    with pytest.raises(DataError, match=missing):
        BENCHMARK.prepare(openstl(root=str(root)), tmp_path / "raw", tmp_path / "out")
    lines = {"train": ["S1 Walking 1"], "test": LINES["test"]}
    monkeypatch.setattr(h36m, "OPENSTL_LISTS", write_lists(root, lines))
    with pytest.raises(DataError, match=r"train\.txt: line 1 is 'S1 Walking 1'; expected"):
        BENCHMARK.prepare(openstl(root=str(root)), tmp_path / "raw", tmp_path / "out")


def test_openstl_and_subject_protocols_differ_as_documented(tmp_path: Path) -> None:
    """`subject` keeps each subject in one split and is labelled not comparable; `openstl`
    needs OpenSTL's frames folder and refuses clip_stride."""
    assert BENCHMARK.check(openstl(root="/data", clip_stride=2)) == [
        "clip_stride applies to protocol 'subject'; OpenSTL's lists fix the windows"
    ]
    write_official_videos(tmp_path / "h36m", {"S1": 12, "S5": 9, "S8": 16, "S9": 8, "S11": 10})
    licensed = r"images: missing; Human3.6M is licensed .* protocol 'openstl' reads"
    with pytest.raises(DataError, match=licensed):
        BENCHMARK.prepare(openstl(root=str(tmp_path / "h36m")), tmp_path / "raw", tmp_path / "o")
    BENCHMARK.prepare(config(root=str(tmp_path / "h36m")), tmp_path / "raw", tmp_path / "out")
    meta = load_meta(tmp_path / "out")
    assert meta["protocol"] == "subject" and meta["comparable_to_reference"] is False

"""KTH Action: the real preprocessing on tiny AVIs (written with PyAV) and image folders in the
real layouts, the file:// download path, split and windowing rules, refusals, and the
embedded stand-in."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
from fixtures_prepared import load_meta, load_split, split_bytes_by_seed
from fixtures_video import ramp_frames, write_images, write_video, write_zip
from PIL import Image

from seemore.config import ConfigError, validate_params
from seemore.data import DATASETS
from seemore.data import kth as kth_module
from seemore.data.download import DataError, RemoteFile
from seemore.data.video import count_windows

BENCHMARK = DATASETS.get("kth")
RAW_SHAPE = (24, 32)  # KTH is 160x120; tiny here
SIZE = 16
STEP = 3


def config(**changes: object) -> kth_module.KTHConfig:
    values: dict[str, object] = {
        "source": "local",
        "protocol": "avi",
        "image_size": SIZE,
        "input_frames": 2,
        "output_frames": 3,
        "output_frames_test": 4,
        "train_persons": [1, 2],
        "val_persons": [3],
        "test_persons": [17],
    }
    return kth_module.KTHConfig(**{**values, **changes})


# A distinct gray level per recording, 45 apart (a 13-frame ramp rises 36), so a window's
# values tell which recording and which frames it came from.
BASES = {
    (1, "boxing"): 10,
    (2, "jogging"): 55,
    (3, "jogging"): 100,
    (17, "boxing"): 145,
    (17, "jogging"): 190,
}
VIDEO_LENGTHS = {
    (1, "boxing"): 12,
    (2, "jogging"): 11,
    (3, "jogging"): 9,
    (17, "boxing"): 13,
    (17, "jogging"): 6,
}


def write_kth_videos(root: Path, lengths: dict[tuple[int, str], int]) -> None:
    """`root/<action>/personXX_<action>_d1_uncomp.avi` of `lengths[(person, action)]` frames;
    frame i of a recording has the gray level base + 3 i."""
    for (person, action), count in lengths.items():
        # Recordings no test decodes with `origin` start from black.
        frames = ramp_frames(count, BASES.get((person, action), 0), STEP, RAW_SHAPE)
        write_video(root / action / f"person{person:02d}_{action}_d1_uncomp.avi", frames)


def origin(window: np.ndarray) -> tuple[tuple[int, str], int]:
    """(recording, index of its first frame) decoded from a window's gray levels."""
    levels = window.reshape(len(window), -1).mean(axis=1)
    # Consecutive frames of one recording: the level rises by STEP each frame.
    np.testing.assert_allclose(np.diff(levels), STEP, atol=1.0)
    recording = max((key for key, base in BASES.items() if base <= levels[0] + 2), key=BASES.get)
    return recording, round((levels[0] - BASES[recording]) / STEP)


def test_local_avis_become_windows_of_one_recording_each(tmp_path: Path) -> None:
    write_kth_videos(tmp_path / "kth", VIDEO_LENGTHS)
    section = config(root=str(tmp_path / "kth"), actions=["boxing", "jogging"])
    BENCHMARK.prepare(section, tmp_path / "raw", tmp_path / "out")
    train, test = load_split(tmp_path / "out", "train"), load_split(tmp_path / "out", "test")
    assert train.shape[1:] == (5, 1, SIZE, SIZE) and train.dtype == np.uint8
    assert test.shape[1:] == (6, 1, SIZE, SIZE)
    # Reference windowing: non-overlapping for boxing, every 3 frames for jogging.
    assert len(train) == count_windows(12, 5, 5) + count_windows(11, 5, 3)
    assert len(test) == count_windows(13, 6, 6) + count_windows(6, 6, 3)
    assert [origin(window) for window in train] == [
        ((1, "boxing"), 0),
        ((1, "boxing"), 5),
        ((2, "jogging"), 0),
        ((2, "jogging"), 3),
        ((2, "jogging"), 6),
    ]
    # Person 17 is in the test split only, and the 6-frame jogging video gives one window.
    assert [origin(window) for window in test] == [
        ((17, "boxing"), 0),
        ((17, "boxing"), 6),
        ((17, "jogging"), 0),
    ]
    # The held-out person 3 is the validation split, at the training horizon.
    val = BENCHMARK.val_clips(section, tmp_path / "out")
    assert val.shape[1:] == (5, 1, SIZE, SIZE) and val.dtype == test.dtype
    assert [origin(window) for window in val] == [((3, "jogging"), 0), ((3, "jogging"), 3)]
    meta = load_meta(tmp_path / "out")
    assert meta["stand_in"] is False and meta["source"] == "local"
    assert meta["persons_present"] == {"train": [1, 2], "val": [3], "test": [17]}
    assert meta["counts"]["train_clips"] == len(train)
    assert meta["counts"]["val_clips"] == 2
    assert meta["val_rule"] == "persons [3] held out of the training persons"


def test_clip_stride_overrides_the_reference_windowing(tmp_path: Path) -> None:
    write_kth_videos(tmp_path / "kth", {(1, "boxing"): 12, (3, "boxing"): 8, (17, "boxing"): 8})
    section = config(root=str(tmp_path / "kth"), actions=["boxing"], clip_stride=2)
    BENCHMARK.prepare(section, tmp_path / "raw", tmp_path / "out")
    assert len(load_split(tmp_path / "out", "train")) == count_windows(12, 5, 2)
    assert len(load_split(tmp_path / "out", "test")) == count_windows(8, 6, 2)


def test_image_folders_are_read_and_a_numbering_gap_splits_the_windows(tmp_path: Path) -> None:
    root = tmp_path / "kth_action"
    numbers = [*range(1, 8), *range(10, 17)]  # frames 8 and 9 were lost
    frames = ramp_frames(len(numbers), 0, 10, RAW_SHAPE)
    frames[:, 0, 0] = 255  # the one bright pixel makes the resize visible, not a flat frame
    names = [f"image_{n:04d}.png" for n in numbers]
    write_images(root / "boxing" / "person03_boxing_d2_uncomp", frames, names)
    test_frames = ramp_frames(6, 5, 7, RAW_SHAPE)
    write_images(
        root / "boxing" / "person20_boxing_d4_uncomp",
        test_frames,
        [f"image_{n:04d}.jpg" for n in range(1, 7)],
    )
    names = [f"image_{n:04d}.png" for n in range(1, 6)]
    write_images(root / "boxing" / "person04_boxing_d1_uncomp", test_frames[:5], names)
    section = config(
        root=str(root), actions=["boxing"], train_persons=[3], val_persons=[4], test_persons=[20]
    )
    BENCHMARK.prepare(section, tmp_path / "raw", tmp_path / "out")
    assert load_split(tmp_path / "out", "val").shape == (1, 5, 1, SIZE, SIZE)
    train = load_split(tmp_path / "out", "train")
    # Runs of 7 frames each side of the gap: one 5-frame window per run, none across the gap.
    assert len(train) == 2
    middle = train[:, :, 0, SIZE // 2, SIZE // 2].astype(int)
    np.testing.assert_array_equal(middle, [[0, 10, 20, 30, 40], [70, 80, 90, 100, 110]])
    test = load_split(tmp_path / "out", "test")
    assert test.shape == (1, 6, 1, SIZE, SIZE)
    np.testing.assert_allclose(test[0, :, 0, SIZE // 2, SIZE // 2], 5 + 7 * np.arange(6), atol=2)


def test_a_recording_shorter_than_a_window_gives_no_window(tmp_path: Path) -> None:
    write_kth_videos(tmp_path / "kth", {(1, "boxing"): 12, (3, "boxing"): 8, (17, "boxing"): 3})
    section = config(root=str(tmp_path / "kth"), actions=["boxing"])
    with pytest.raises(DataError, match=r"test split: no recording of persons \[17\] is 6"):
        BENCHMARK.prepare(section, tmp_path / "raw", tmp_path / "out")
    assert not (tmp_path / "out" / "test.npy").exists()
    assert not (tmp_path / "out" / "meta.json").exists()


def test_a_missing_action_names_the_expected_layout(tmp_path: Path) -> None:
    write_kth_videos(tmp_path / "kth", {(1, "boxing"): 12, (3, "boxing"): 12, (17, "boxing"): 12})
    section = config(root=str(tmp_path / "kth"), actions=["boxing", "walking"])
    with pytest.raises(DataError, match=r"no recordings of \['walking'\]; expected under"):
        BENCHMARK.prepare(section, tmp_path / "raw", tmp_path / "out")


def test_a_missing_root_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a folder"):
        BENCHMARK.prepare(config(root=str(tmp_path / "nowhere")), tmp_path / "raw", tmp_path / "o")


def serve_zips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sha1: str | None = None) -> None:
    """The boxing zip as KTH ships it (AVIs at the top level), served via file://."""
    lengths = {(1, "boxing"): 12, (3, "boxing"): 12, (17, "boxing"): 12}
    write_kth_videos(tmp_path / "videos", lengths)
    avis = {p.name: p for p in (tmp_path / "videos" / "boxing").iterdir()}
    archive = tmp_path / "server" / "boxing.zip"
    archive.parent.mkdir()
    write_zip(archive, avis)
    published = sha1 or hashlib.sha1(archive.read_bytes()).hexdigest()
    remote = RemoteFile("boxing.zip", archive.as_uri(), None, published)
    monkeypatch.setattr(kth_module, "REMOTE_FILES", {"boxing": remote})


def test_download_verifies_pins_on_first_use_and_unzips_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    serve_zips(tmp_path, monkeypatch)
    section = config(source="download", actions=["boxing"])
    raw, out = tmp_path / "raw", tmp_path / "out"
    BENCHMARK.prepare(section, raw, out)
    pin = (raw / "boxing.zip.sha256").read_text().strip()
    meta = load_meta(out)
    assert meta["files"]["boxing.zip"]["sha256"] == pin and meta["source"] == "download"
    assert len(load_split(out, "train")) == 2
    extracted = raw / "videos" / "boxing" / "person01_boxing_d1_uncomp.avi"
    stamp = extracted.stat().st_mtime_ns
    BENCHMARK.prepare(section, raw, out)
    assert extracted.stat().st_mtime_ns == stamp


def test_download_refuses_a_zip_whose_published_sha1_differs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    serve_zips(tmp_path, monkeypatch, sha1="0" * 40)
    with pytest.raises(DataError, match="SHA-1"):
        BENCHMARK.prepare(config(source="download", actions=["boxing"]), tmp_path / "raw", tmp_path)
    assert list((tmp_path / "raw").iterdir()) == []


def test_real_zips_are_pinned_to_vipys_sha1() -> None:
    for action, remote in kth_module.REMOTE_FILES.items():
        assert remote.url == f"http://www.csc.kth.se/cvap/actions/{action}.zip"
        assert remote.sha256 is None and len(remote.sha1 or "") == 40


# --- configuration -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"train_persons": [1, 17], "test_persons": [17, 18]}, r"share persons \[17\]"),
        ({"val_persons": [17]}, r"val_persons and test_persons share persons \[17\]"),
        ({"val_persons": [1]}, r"train_persons and val_persons share persons \[1\]"),
        ({"test_persons": [26]}, "persons 1-25"),
        ({"train_persons": [1, 1]}, "twice"),
        ({"train_clips": 10}, "'embedded' only"),
        ({"source": "embedded", "image_size": 16}, "at least 32"),
        ({"source": "local", "root": None}, "needs 'root'"),
    ],
)
def test_check_refuses(changes: dict[str, object], problem: str) -> None:
    section = config(**{"root": "/data/kth", **changes})
    assert any(re.search(problem, p) for p in BENCHMARK.check(section))


def test_params_with_a_kth_section_validate(embedded_raw: dict) -> None:
    embedded_raw["experiment"]["datasets"] = ["kth"]
    embedded_raw["data"]["kth"] = {
        "source": "embedded",
        "image_size": 64,
        "input_frames": 10,
        "output_frames": 20,
        "output_frames_test": 40,
    }
    params = validate_params(embedded_raw)
    assert BENCHMARK.stored_clip_length(params.data["kth"]) == 50
    embedded_raw["data"]["kth"]["test_persons"] = [16, 17]
    with pytest.raises(ConfigError, match=r"data\.kth: .*share persons \[16\]"):
        validate_params(embedded_raw)


# --- embedded stand-in ---------------------------------------------------------------------


def embedded(**changes: object) -> kth_module.KTHConfig:
    values = {
        "source": "embedded",
        "image_size": 32,
        "train_clips": 6,
        "val_clips": 2,
        "test_clips": 3,
    }
    return config(**{**values, **changes})


def test_embedded_stand_in_has_the_benchmark_geometry(tmp_path: Path) -> None:
    BENCHMARK.prepare(embedded(), tmp_path / "raw", tmp_path / "out")
    train, test = load_split(tmp_path / "out", "train"), load_split(tmp_path / "out", "test")
    assert train.shape == (6, 5, 1, 32, 32) and test.shape == (3, 6, 1, 32, 32)
    assert BENCHMARK.test_clips(embedded(), tmp_path / "out").shape == (3, 6, 1, 32, 32)
    val = BENCHMARK.val_clips(embedded(), tmp_path / "out")
    assert val.shape == (2, 5, 1, 32, 32) and val.dtype == np.uint8
    # Something moves: consecutive frames differ, and the figure stands out of the backdrop.
    assert np.abs(np.diff(train.astype(int), axis=1)).mean() > 0.1
    assert train.std() > 10
    meta = load_meta(tmp_path / "out")
    assert meta["stand_in"] is True and "NOT the real KTH" in meta["description"]
    # The stand-in carries the section's protocol name but stays labelled a stand-in.
    assert meta["protocol"] == "avi"
    assert meta["counts"] == {"train_clips": 6, "val_clips": 2, "test_clips": 3}
    assert meta["val_rule"] == "persons [3] held out of the training persons"


def test_embedded_stand_in_is_fixed_by_data_seed(tmp_path: Path) -> None:
    first, again, other = split_bytes_by_seed(BENCHMARK, embedded(), (0, 0, 1), "train", tmp_path)
    assert first == again != other


# --- protocols `openstl` / `predrnn`: the image release, end-aligned windows ---------------


@pytest.mark.parametrize(
    ("numbers", "length", "action", "starts"),
    [
        # Walking back from the last frame: 12 frames, windows of 5 end at 11 and 6.
        (list(range(1, 13)), 5, "boxing", [2, 7]),
        # Jogging steps back 3 frames after each window: ends at 11, 8, 5.
        (list(range(1, 13)), 5, "jogging", [1, 4, 7]),
        # Frames 8 and 9 lost: the window ending at 11 spans the gap, so the walk steps back
        # one frame at a time to the end of the first run (frame 7).
        ([*range(1, 8), *range(10, 17)], 5, "boxing", [2, 9]),
        # Two runs of 9 frames (10 and 11 lost), stepping back 3 inside each run.
        ([*range(1, 10), *range(12, 21)], 5, "running", [1, 4, 10, 13]),
        ([*range(1, 10), *range(12, 21)], 5, "boxing", [4, 13]),
        (list(range(1, 6)), 5, "walking", [0]),
        (list(range(1, 5)), 5, "walking", []),
    ],
)
def test_end_aligned_starts_follow_the_references_rule(
    numbers: list[int], length: int, action: str, starts: list[int]
) -> None:
    assert kth_module.end_aligned_starts(numbers, length, action) == starts


def write_release(root: Path, lengths: dict[tuple[int, str], int]) -> None:
    """The image release's layout, `root/<action>/personXX_<action>_d1_uncomp/image_NNNN.png`
    (gray stored as RGB, as released); frame i of a recording is the flat gray level
    base + 3 i, so a stored window's first value tells its recording and first frame."""
    for (person, action), count in lengths.items():
        frames = ramp_frames(count, BASES.get((person, action), 0), STEP, RAW_SHAPE)
        names = [f"image_{n:04d}.png" for n in range(1, count + 1)]
        write_images(root / action / f"person{person:02d}_{action}_d1_uncomp", frames, names)


def first_frames(windows: np.ndarray) -> list[tuple[tuple[int, str], int]]:
    """(recording, first frame index) of each window, from its exact flat gray levels."""
    found = []
    for window in windows:
        level = int(window[0, 0, 0, 0])
        assert np.all(window[0] == level), "a flat frame stays flat through the resize"
        recording = max((k for k, b in BASES.items() if b <= level), key=BASES.get)
        found.append((recording, (level - BASES[recording]) // STEP))
    return found


RELEASE_LENGTHS = {(1, "boxing"): 12, (2, "jogging"): 12, (3, "jogging"): 9, (17, "boxing"): 13}


@pytest.mark.parametrize("protocol", ["openstl", "predrnn"])
def test_image_release_windows_are_end_aligned(tmp_path: Path, protocol: str) -> None:
    write_release(tmp_path / "kth_action", RELEASE_LENGTHS)
    section = config(
        protocol=protocol, root=str(tmp_path / "kth_action"), actions=["boxing", "jogging"]
    )
    BENCHMARK.prepare(section, tmp_path / "raw", tmp_path / "out")
    out = tmp_path / "out"
    # Train windows of 5, hand-computed: boxing 12 frames -> 2, 7; jogging 12 -> 1, 4, 7.
    assert first_frames(load_split(out, "train")) == [
        ((1, "boxing"), 2),
        ((1, "boxing"), 7),
        ((2, "jogging"), 1),
        ((2, "jogging"), 4),
        ((2, "jogging"), 7),
    ]
    # Validation (person 3, jogging, 9 frames): ends at 8 and 5 -> starts 1, 4.
    assert first_frames(load_split(out, "val")) == [((3, "jogging"), 1), ((3, "jogging"), 4)]
    # Test windows of 6: boxing 13 frames -> ends at 12, 6 -> starts 1, 7.
    assert first_frames(load_split(out, "test")) == [((17, "boxing"), 1), ((17, "boxing"), 7)]
    meta = load_meta(out)
    assert meta["protocol"] == protocol and meta["comparable_to_reference"] is True
    assert meta["windows"].startswith("end-aligned")
    expected = {"openstl": (10, 20, 20), "predrnn": (10, 10, 20)}[protocol]
    assert tuple(meta["reference_horizons"].values()) == expected
    assert meta["horizons_match_reference"] is False


def test_the_same_frames_under_protocol_avi_are_start_aligned(tmp_path: Path) -> None:
    """The documented difference (docs/protocols.md): `avi` cuts from each video's start,
    the references from its end."""
    write_release(tmp_path / "kth_action", RELEASE_LENGTHS)
    section = config(
        protocol="avi", root=str(tmp_path / "kth_action"), actions=["boxing", "jogging"]
    )
    BENCHMARK.prepare(section, tmp_path / "raw", tmp_path / "out")
    assert [origin(w) for w in load_split(tmp_path / "out", "train")] == [
        ((1, "boxing"), 0),
        ((1, "boxing"), 5),
        ((2, "jogging"), 0),
        ((2, "jogging"), 3),
        ((2, "jogging"), 6),
    ]
    assert [origin(w) for w in load_split(tmp_path / "out", "test")] == [
        ((17, "boxing"), 0),
        ((17, "boxing"), 6),
    ]


def test_release_frames_take_the_first_channel_and_opencvs_bilinear_resize(
    tmp_path: Path,
) -> None:
    frame = np.zeros((2, 4, 3), np.uint8)
    frame[..., 0] = [[0, 40, 80, 120]] * 2  # red: what the references read
    frame[..., 1] = 255
    path = tmp_path / "image_0001.png"
    Image.fromarray(frame).save(path)
    # 4 -> 2 columns: OpenCV samples at 0.5 and 2.5 (half-pixel centres): 20 and 100.
    np.testing.assert_array_equal(kth_module.release_frame(path, 2), [[[20, 100], [20, 100]]])


def test_release_protocols_refuse_clip_stride_and_avis(tmp_path: Path) -> None:
    assert (
        "clip_stride applies to protocol 'avi'"
        in BENCHMARK.check(config(protocol="openstl", root="/data", clip_stride=2))[0]
    )
    write_kth_videos(tmp_path / "kth", {(1, "boxing"): 12})
    section = config(protocol="openstl", root=str(tmp_path / "kth"), actions=["boxing"])
    with pytest.raises(DataError, match=r"image release's frame folders .* use protocol 'avi'"):
        BENCHMARK.prepare(section, tmp_path / "raw", tmp_path / "out")


def serve_release(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layout: bool) -> RemoteFile:
    """OpenSTL's kth_action.zip (frames under kth_action/<action>/...) served via file://;
    with `layout` False, a zip of something else."""
    write_release(tmp_path / "files" / "kth_action", {(1, "boxing"): 6, (3, "boxing"): 6})
    write_release(tmp_path / "files" / "kth_action", {(17, "boxing"): 6})
    frames = sorted((tmp_path / "files").rglob("*.png"))
    names = {str(p.relative_to(tmp_path / "files")): p for p in frames}
    if not layout:
        names = {f"other/{i}.png": p for i, p in enumerate(frames)}
    archive = tmp_path / "server" / "kth_action.zip"
    archive.parent.mkdir(exist_ok=True)
    write_zip(archive, names)
    remote = RemoteFile("kth_action.zip", archive.as_uri(), None)
    monkeypatch.setattr(kth_module, "RELEASE_ARCHIVE", remote)
    return remote


def test_release_download_is_pinned_only_after_its_layout_is_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    serve_release(tmp_path, monkeypatch, layout=False)
    section = config(protocol="openstl", source="download", actions=["boxing"])
    raw, out = tmp_path / "raw", tmp_path / "out"
    with pytest.raises(DataError, match=r"holds no frames boxing/personXX_boxing_dY_uncomp/"):
        BENCHMARK.prepare(section, raw, out)
    # The bad first copy became neither the pin nor the cached archive.
    assert not (raw / "kth_action.zip.sha256").exists()
    assert not (raw / "kth_action.zip").exists()
    serve_release(tmp_path, monkeypatch, layout=True)
    BENCHMARK.prepare(section, raw, out)
    pin = (raw / "kth_action.zip.sha256").read_text().strip()
    assert load_meta(out)["files"]["kth_action.zip"]["sha256"] == pin
    assert first_frames(load_split(out, "train")) == [((1, "boxing"), 1)]

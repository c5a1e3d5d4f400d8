"""Moving MNIST: generator invariants, the embedded stand-in, and the real preprocessing run on
tiny files in the real formats (local and file:// download), including refusals."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
from fixtures_mnist import (
    IDX_NAME,
    SEQUENCES_NAME,
    tiny_digits,
    tiny_sequences,
    write_idx_images,
    write_predrnn_npz,
    write_raw_files,
)
from fixtures_prepared import load_meta, load_split, split_bytes_by_seed

from seemore.data import DATASETS
from seemore.data import moving_mnist as mm
from seemore.data.download import DataError, RemoteFile, sha256_file

BENCHMARK = DATASETS.get("moving_mnist")
PREPARED = ("digits.npy", "val.npy", "test.npy", "meta.json")


def config(**changes: object) -> mm.MovingMNISTConfig:
    values: dict[str, object] = {
        "source": "embedded",
        "image_size": 64,
        "input_frames": 10,
        "output_frames": 10,
        "test_clips": 4,
    }
    return mm.MovingMNISTConfig(**{**values, **changes})


# --- generator ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("velocity", "positions", "velocities"),
    [
        (2.0, [4, 6, 8, 6, 4, 2, 0, 2], [2, 2, -2, -2, -2, -2, 2, 2]),
        (-2.0, [4, 2, 0, 2, 4, 6, 8, 6], [-2, -2, 2, 2, 2, 2, -2, -2]),
        (3.0, [4, 7, 6, 3, 0, 3, 6, 7], [3, 3, -3, -3, 3, 3, 3, -3]),
    ],
)
def test_bounce_reflects_at_both_edges(
    velocity: float, positions: list[float], velocities: list[float]
) -> None:
    got_positions, got_velocities = mm.bounce(np.array(4.0), np.array(velocity), 8, limit=8.0)
    np.testing.assert_allclose(got_positions, positions)
    np.testing.assert_allclose(got_velocities, velocities)


def test_trajectories_follow_the_bounce_law_inside_the_frame() -> None:
    image_size, frames = 64, 20
    limit = image_size - mm.digit_size(image_size)
    assert (mm.digit_size(image_size), limit) == (28, 36)
    paths = mm.sample_trajectories(10, 200, frames, image_size, np.random.default_rng(3))
    positions, velocities = paths.positions, paths.velocities
    assert positions.shape == velocities.shape == (200, 2, frames, 2)
    assert paths.digit_index.shape == (200, 2)
    assert positions.min() >= 0 and positions.max() <= limit
    # 3.6 px per frame in total, split between the axes by the direction.
    np.testing.assert_allclose(np.hypot(velocities[..., 0], velocities[..., 1]), 3.6)
    # Each step: move by the velocity; past (or onto) an edge, mirror the position and flip
    # that velocity component; otherwise keep it.
    moved = positions[:, :, :-1] + velocities[:, :, :-1]
    outside = (moved <= 0) | (moved >= limit)
    mirrored = np.where(moved < 0, -moved, np.where(moved > limit, 2 * limit - moved, moved))
    np.testing.assert_allclose(positions[:, :, 1:], mirrored, atol=1e-9)
    flipped = np.sign(velocities[:, :, 1:]) != np.sign(velocities[:, :, :-1])
    np.testing.assert_array_equal(flipped, outside)
    assert outside.sum() > 50, "200 clips of 20 frames must bounce often"


def test_start_and_direction_cover_the_frame_and_the_circle() -> None:
    paths = mm.sample_trajectories(10, 2000, 2, 64, np.random.default_rng(4))
    start = paths.positions[:, :, 0].reshape(-1, 2)
    assert start.min() < 1 and start.max() > 35
    assert abs(start.mean() - 18) < 1
    angle = np.arctan2(paths.velocities[:, :, 0, 0], paths.velocities[:, :, 0, 1]).ravel()
    counts, _ = np.histogram(angle, bins=4, range=(-np.pi, np.pi))
    assert counts.min() > 0.2 * angle.size


def test_clip_is_the_pixelwise_max_of_two_whole_digits() -> None:
    digits = tiny_digits(6)
    paths = mm.sample_trajectories(len(digits), 16, 20, 64, np.random.default_rng(5))
    clips = mm.render(digits, paths, 64)
    assert clips.shape == (16, 20, 1, 64, 64) and clips.dtype == np.uint8
    first = mm.render(digits, paths.slots(slice(0, 1)), 64)
    second = mm.render(digits, paths.slots(slice(1, 2)), 64)
    np.testing.assert_array_equal(clips, np.maximum(first, second))
    # Every pixel of a fixture digit is lit: a digit wholly inside the frame lights exactly
    # 28 x 28 pixels and carries its full sum in every frame.
    for single, slot in ((first, 0), (second, 1)):
        lit = (single > 0).sum(axis=(2, 3, 4))
        assert np.all(lit == 28 * 28)
        sums = single.sum(axis=(2, 3, 4), dtype=np.int64)
        expected = digits[paths.digit_index[:, slot]].sum(axis=(1, 2), dtype=np.int64)
        np.testing.assert_array_equal(sums, np.repeat(expected[:, None], 20, axis=1))


def test_generate_clips_renders_the_sampled_trajectories() -> None:
    digits = tiny_digits(6)
    clips = mm.generate_clips(digits, 8, 12, 64, np.random.default_rng(6))
    paths = mm.sample_trajectories(len(digits), 8, 12, 64, np.random.default_rng(6))
    np.testing.assert_array_equal(clips, mm.render(digits, paths, 64))


def test_the_clip_stream_of_a_seed_is_pinned() -> None:
    """The clips of seed 7, as the generator made them before its render was rewritten for
    speed (benchmarks/mnist_generator.md): a change to the stream must be deliberate."""
    clips = mm.generate_clips(tiny_digits(6), 4, 20, 64, np.random.default_rng(7))
    digest = hashlib.sha256(clips.tobytes()).hexdigest()
    assert digest == "51d6b238fb2049eade1449f38a2d46a3c0d287a8a95078505860b7003e0ab7b0"


def test_same_seed_same_clips_other_seed_other_clips() -> None:
    digits = tiny_digits(6)
    first = mm.generate_clips(digits, 4, 20, 64, np.random.default_rng(7))
    again = mm.generate_clips(digits, 4, 20, 64, np.random.default_rng(7))
    other = mm.generate_clips(digits, 4, 20, 64, np.random.default_rng(8))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_generator_scales_digit_and_speed_with_the_frame() -> None:
    assert (mm.digit_size(32), mm.step_length(32)) == (14, 1.8)
    clips = mm.generate_clips(tiny_digits(3), 5, 20, 32, np.random.default_rng(9))
    assert clips.shape == (5, 20, 1, 32, 32)
    # Two 14x14 digits (resampled, so edges may dim) light at most 2 * 196 pixels.
    lit = (clips > 0).sum(axis=(2, 3, 4))
    assert lit.min() >= 14 * 14 and lit.max() <= 2 * 14 * 14


# --- embedded stand-in --------------------------------------------------------------------


def test_embedded_prepare_writes_a_labelled_stand_in(tmp_path: Path) -> None:
    section = config(test_clips=6)
    BENCHMARK.prepare(section, tmp_path / "raw", tmp_path / "out")
    digits = np.load(tmp_path / "out" / "digits.npy")
    test = BENCHMARK.test_clips(section, tmp_path / "out")
    meta = load_meta(tmp_path / "out")
    assert digits.dtype == np.uint8 and digits.shape[1:] == (28, 28)
    assert test.dtype == np.uint8 and test.shape == (6, 20, 1, 64, 64)
    assert test.max() > 200 and (test > 0).mean() > 0.05
    assert meta["source"] == "embedded" and meta["stand_in"] is True
    assert "NOT the real" in meta["description"]
    assert meta["counts"] == {"train_digits": len(digits), "val_clips": 16, "test_clips": 6}
    assert not (tmp_path / "raw").exists(), "the stand-in needs no raw files"


def test_val_clips_are_generated_once_from_the_training_digits(tmp_path: Path) -> None:
    section = config(input_frames=10, output_frames=5, val_clips=3, data_seed=4)
    BENCHMARK.prepare(section, tmp_path / "raw", tmp_path / "out")
    val = BENCHMARK.val_clips(section, tmp_path / "out")
    test = BENCHMARK.test_clips(section, tmp_path / "out")
    # The training horizon, in the test split's dtype and layout.
    assert val.shape == (3, 15, 1, 64, 64) and val.dtype == test.dtype
    # Its own random stream of data_seed, over the training digits (disjoint from the
    # embedded test digits).
    digits = np.load(tmp_path / "out" / "digits.npy")
    expected = mm.generate_clips(digits, 3, 15, 64, np.random.default_rng([4, mm.VAL_STREAM]))
    np.testing.assert_array_equal(val, expected)
    # Training draws from another stream: its first batch is not the validation clips.
    stream = BENCHMARK.train_batches(section, tmp_path / "out", 3, np.random.default_rng(4))
    assert not np.array_equal(next(stream), val)
    assert "generated once from the training digits" in load_meta(tmp_path / "out")["val_rule"]


def test_embedded_digit_sets_are_disjoint_and_mnist_shaped() -> None:
    train, test = mm.embedded_digits(np.random.default_rng(0))
    assert len(train) + len(test) == 1797 and len(test) == 300
    train_keys = {digit.tobytes() for digit in train}
    assert not any(digit.tobytes() in train_keys for digit in test)
    # MNIST layout: the digit lies in the central 20x20 box, a 4-pixel margin stays dark.
    assert train[:, :4].max() == 0 and train[:, :, -4:].max() == 0
    assert train.max() == 255


def test_embedded_test_clips_are_fixed_by_data_seed(tmp_path: Path) -> None:
    first, again, other = split_bytes_by_seed(BENCHMARK, config(), (0, 0, 1), "test", tmp_path)
    assert first == again != other


def test_train_batches_are_generated_from_the_prepared_digits(tmp_path: Path) -> None:
    section = config(input_frames=10, output_frames=5)
    BENCHMARK.prepare(section, tmp_path / "raw", tmp_path / "out")
    stream = BENCHMARK.train_batches(section, tmp_path / "out", 3, np.random.default_rng(0))
    batches = [next(stream) for _ in range(2)]
    assert all(b.shape == (3, 15, 1, 64, 64) and b.dtype == np.uint8 for b in batches)
    assert not np.array_equal(batches[0], batches[1])
    again = BENCHMARK.train_batches(section, tmp_path / "out", 3, np.random.default_rng(0))
    np.testing.assert_array_equal(next(again), batches[0])


# --- real formats -------------------------------------------------------------------------


def test_local_prepare_reads_the_real_formats(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    digits, sequences = tiny_digits(5), tiny_sequences(3)
    write_raw_files(tmp_path / "files", digits, sequences)
    point_downloads_at(monkeypatch, tmp_path / "files")
    section = config(source="local", root=str(tmp_path / "files"), test_clips=2, val_clips=2)
    BENCHMARK.prepare(section, tmp_path / "raw", tmp_path / "out")
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "digits.npy"), digits)
    test = BENCHMARK.test_clips(section, tmp_path / "out")
    assert test.shape == (2, 20, 1, 64, 64) and test.dtype == np.uint8
    # Time-major (T, N, H, W) becomes clip-major [N, T, 1, H, W].
    np.testing.assert_array_equal(test[1, 7, 0], sequences[7, 1])
    meta = load_meta(tmp_path / "out")
    assert meta["source"] == "local" and meta["stand_in"] is False
    assert meta["counts"] == {"train_digits": 5, "val_clips": 2, "test_clips": 2}
    assert meta["protocol"] == "openstl"
    # Local copies are held to the pinned SHA-256s, and meta.json says they were checked.
    assert meta["files"][IDX_NAME] == {
        "sha256": sha256_file(tmp_path / "files" / IDX_NAME),
        "status": "verified against the pinned SHA-256",
    }
    batch = next(BENCHMARK.train_batches(section, tmp_path / "out", 2, np.random.default_rng(0)))
    assert batch.shape == (2, 20, 1, 64, 64)


def test_a_local_file_that_differs_from_its_pin_is_refused(tmp_path: Path) -> None:
    # The real pins: the tiny fixture files are not the published ones.
    write_raw_files(tmp_path / "files", tiny_digits(2), tiny_sequences(3))
    section = config(source="local", root=str(tmp_path / "files"))
    with pytest.raises(DataError, match=rf"{IDX_NAME}: SHA-256 is [0-9a-f]{{64}}, expected 440f"):
        BENCHMARK.prepare(section, tmp_path / "raw", tmp_path / "out")
    assert not (tmp_path / "out" / "meta.json").exists()


def test_local_prepare_keeps_all_clips_when_test_clips_is_unset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_raw_files(tmp_path / "files", tiny_digits(2), tiny_sequences(3))
    point_downloads_at(monkeypatch, tmp_path / "files")
    section = config(source="local", root=str(tmp_path / "files"), test_clips=None, val_clips=1)
    BENCHMARK.prepare(section, tmp_path / "raw", tmp_path / "out")
    assert np.load(tmp_path / "out" / "test.npy").shape == (3, 20, 1, 64, 64)


def test_local_prepare_names_a_missing_file(tmp_path: Path) -> None:
    (tmp_path / "files").mkdir()
    write_idx_images(tmp_path / "files" / IDX_NAME, tiny_digits(2))
    section = config(source="local", root=str(tmp_path / "files"))
    with pytest.raises(DataError, match=SEQUENCES_NAME):
        BENCHMARK.prepare(section, tmp_path / "raw", tmp_path / "out")


def point_downloads_at(monkeypatch: pytest.MonkeyPatch, files: Path, **sha256: str) -> None:
    """Serve the raw files from `files` through file:// URLs, pinned to their real hashes
    unless a role is given another hash."""
    table = {
        role: RemoteFile(
            remote.name,
            (files / remote.name).as_uri(),
            sha256.get(role, sha256_file(files / remote.name)),
        )
        for role, remote in mm.REMOTE_FILES.items()
    }
    monkeypatch.setattr(mm, "REMOTE_FILES", table)
    md5 = hashlib.md5((files / SEQUENCES_NAME).read_bytes()).hexdigest()
    monkeypatch.setattr(mm, "TEST_SEQUENCES_MD5", md5)


def test_download_prepare_fetches_verifies_and_prepares(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    digits, sequences = tiny_digits(4), tiny_sequences(3)
    write_raw_files(tmp_path / "server", digits, sequences)
    point_downloads_at(monkeypatch, tmp_path / "server")
    section = config(source="download", test_clips=None, val_clips=1)
    BENCHMARK.prepare(section, tmp_path / "raw", tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == sorted(
        [IDX_NAME, SEQUENCES_NAME]
    )
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "digits.npy"), digits)
    test = np.load(tmp_path / "out" / "test.npy")
    np.testing.assert_array_equal(test[:, :, 0], sequences.transpose(1, 0, 2, 3))
    meta = load_meta(tmp_path / "out")
    assert meta["source"] == "download" and meta["stand_in"] is False


def test_checksum_mismatch_leaves_nothing_that_looks_valid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_raw_files(tmp_path / "server", tiny_digits(2), tiny_sequences(2))
    out = tmp_path / "out"
    # An earlier, valid preparation must not survive a failed one.
    BENCHMARK.prepare(config(), tmp_path / "raw", out)
    assert all((out / name).is_file() for name in PREPARED)
    point_downloads_at(monkeypatch, tmp_path / "server", test_sequences="0" * 64)
    with pytest.raises(DataError, match="SHA-256"):
        BENCHMARK.prepare(config(source="download"), tmp_path / "raw", out)
    assert not (tmp_path / "raw" / SEQUENCES_NAME).exists()
    assert not list((tmp_path / "raw").glob("*.part"))
    assert not list(out.iterdir())


def test_md5_disagreeing_with_the_pinned_sha256_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_raw_files(tmp_path / "server", tiny_digits(2), tiny_sequences(2))
    point_downloads_at(monkeypatch, tmp_path / "server")
    monkeypatch.setattr(mm, "TEST_SEQUENCES_MD5", "0" * 32)
    with pytest.raises(DataError, match="MD5"):
        BENCHMARK.prepare(config(source="download"), tmp_path / "raw", tmp_path / "out")
    assert not (tmp_path / "raw" / SEQUENCES_NAME).exists()
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_wrong_idx_magic_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / IDX_NAME
    write_idx_images(path, tiny_digits(2), magic=2049)
    with pytest.raises(DataError, match=rf"{IDX_NAME}.*magic number is 2049, expected 2051"):
        mm.read_idx_images(path)


def test_truncated_or_wrongly_sized_idx_is_refused(tmp_path: Path) -> None:
    path = tmp_path / IDX_NAME
    write_idx_images(path, np.zeros((2, 20, 20), dtype=np.uint8))
    with pytest.raises(DataError, match="2 images of 20x20"):
        mm.read_idx_images(path)
    write_idx_images(path, tiny_digits(2))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=IDX_NAME):
        mm.read_idx_images(path)


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((10, 2, 64, 64), np.uint8), r"shape \(10, 2, 64, 64\)"),
        (np.zeros((2, 20, 64, 64), np.uint8), r"shape \(2, 20, 64, 64\)"),
        (np.zeros((20, 2, 32, 32), np.uint8), r"shape \(20, 2, 32, 32\)"),
        (np.zeros((20, 2, 64, 64), np.float32), "float32, expected a uint8"),
    ],
)
def test_wrong_test_array_is_refused_naming_the_file(
    tmp_path: Path, array: np.ndarray, message: str
) -> None:
    path = tmp_path / SEQUENCES_NAME
    np.save(path, array)
    with pytest.raises(DataError, match=rf"{SEQUENCES_NAME}.*{message}"):
        mm.read_test_sequences(path, None)


def test_asking_for_more_test_clips_than_the_file_holds_is_refused(tmp_path: Path) -> None:
    path = tmp_path / SEQUENCES_NAME
    np.save(path, tiny_sequences(2))
    with pytest.raises(DataError, match="holds 2 clips, test_clips asks for 3"):
        mm.read_test_sequences(path, 3)


# --- configuration rules ------------------------------------------------------------------


def test_check_accepts_the_reference_horizons() -> None:
    assert BENCHMARK.check(config()) == []
    assert BENCHMARK.check(config(source="download")) == []
    assert BENCHMARK.check(config(output_frames=5, output_frames_test=10)) == []


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"output_frames": 11}, "10 \\+ 11 is longer than the 20 frames"),
        ({"output_frames": 5, "output_frames_test": 15}, "output_frames_test = 10 \\+ 15"),
        ({"source": "download", "image_size": 32}, "test set is 64x64"),
        ({"source": "local", "root": "/data", "image_size": 128}, "test set is 64x64"),
        ({"source": "download", "test_clips": 10001}, "holds only 10000 clips"),
        ({"image_size": 1}, "no room for a moving digit"),
    ],
)
def test_check_refuses(changes: dict[str, object], message: str) -> None:
    problems = BENCHMARK.check(config(**changes))
    assert any(re.search(message, problem) for problem in problems), problems


# --- protocol `predrnn`: PredRNN's npz files ---------------------------------------------


def write_predrnn_files(root: Path) -> dict[str, np.ndarray]:
    """The three files with 5 train, 3 valid, 4 test clips of random uint8 frames."""
    rng = np.random.default_rng(9)
    clips = {
        split: rng.integers(0, 256, (count, 20, 64, 64), dtype=np.uint8)
        for split, count in (("train", 5), ("val", 3), ("test", 4))
    }
    for split, name in mm.PREDRNN_FILES.items():
        write_predrnn_npz(root / name, clips[split])
    return clips


def predrnn(root: Path, **changes: object) -> mm.MovingMNISTConfig:
    return config(source="local", protocol="predrnn", root=str(root), **changes)


def test_predrnn_files_become_the_fixed_splits(tmp_path: Path) -> None:
    clips = write_predrnn_files(tmp_path / "files")
    section = predrnn(tmp_path / "files", test_clips=None, output_frames=5, output_frames_test=10)
    BENCHMARK.prepare(section, tmp_path / "raw", tmp_path / "out")
    out = tmp_path / "out"
    # Input part then output part, at each split's length (train / val 10 + 5, test 10 + 10).
    np.testing.assert_array_equal(load_split(out, "train")[:, :, 0], clips["train"][:, :15])
    np.testing.assert_array_equal(BENCHMARK.val_clips(section, out)[:, :, 0], clips["val"][:, :15])
    np.testing.assert_array_equal(load_split(out, "test")[:, :, 0], clips["test"][:, :20])
    assert not (out / "digits.npy").exists()
    meta = load_meta(out)
    assert meta["protocol"] == "predrnn" and meta["counts"] == {
        "train_clips": 5,
        "val_clips": 3,
        "test_clips": 4,
    }
    assert meta["files"]["moving-mnist-train.npz"]["status"].startswith("unverified")
    assert meta["val_rule"] == "the clips of moving-mnist-valid.npz, the authors' validation file"
    # The documented difference from `openstl`: training draws from the fixed clips only.
    stream = BENCHMARK.train_batches(section, out, 3, np.random.default_rng(0))
    stored = {clip.tobytes() for clip in load_split(out, "train")}
    for _ in range(4):
        assert all(clip.tobytes() in stored for clip in next(stream))


def test_predrnn_clips_are_read_as_the_clips_key_says(tmp_path: Path) -> None:
    frames = np.random.default_rng(3).integers(0, 256, (1, 30, 64, 64), dtype=np.uint8)
    raw = (frames.reshape(-1, 1, 64, 64) / 255.0).astype(np.float32)
    # One clip whose input begins at frame 4: frames 4-13 then 14-23.
    layout = np.array([[[4, 10]], [[14, 10]]], dtype=np.int32)
    root = tmp_path / "files"
    for name in mm.PREDRNN_FILES.values():
        write_predrnn_npz(root / name, frames[:, :20], clips=layout, input_raw_data=raw)
    BENCHMARK.prepare(predrnn(root, test_clips=None), tmp_path / "raw", tmp_path / "out")
    np.testing.assert_array_equal(load_split(tmp_path / "out", "test")[0, :, 0], frames[0, 4:24])


@pytest.mark.parametrize(
    ("replace", "message"),
    [
        (
            {"dims": np.array([[3, 64, 64]])},
            r"'dims' is \[\[3, 64, 64\]\], expected \[\[1, 64, 64\]\]",
        ),
        (
            {"clips": np.zeros((2, 5), np.int32)},
            r"'clips' has shape \(2, 5\), expected \(2, clips, 2\)",
        ),
        (
            {"input_raw_data": np.full((100, 1, 64, 64), 2.0, np.float32)},
            r"'input_raw_data' holds values in \[2, 2\], expected \[0, 1\]",
        ),
        (
            {"input_raw_data": np.zeros((100, 64, 64), np.float32)},
            r"'input_raw_data' has shape \(100, 64, 64\), expected \(frames, 1, 64, 64\)",
        ),
        (
            {"clips": np.array([[[0, 8]], [[8, 10]]], np.int32)},
            r"'clips': an input part is not 10 frames \(input_frames\) \(clip 0: input \[0, 8\]",
        ),
        (
            {"clips": np.array([[[95, 10]], [[105, 10]]], np.int32)},
            r"'clips': a clip runs past input_raw_data \(clip 0",
        ),
    ],
)
def test_predrnn_files_are_checked_naming_file_and_key(
    tmp_path: Path, replace: dict[str, np.ndarray], message: str
) -> None:
    clips = write_predrnn_files(tmp_path / "files")
    path = tmp_path / "files" / "moving-mnist-train.npz"
    write_predrnn_npz(path, clips["train"], **replace)
    section = predrnn(tmp_path / "files")
    with pytest.raises(DataError, match=rf"moving-mnist-train\.npz: {message}"):
        BENCHMARK.prepare(section, tmp_path / "raw", tmp_path / "out")
    assert not (tmp_path / "out" / "meta.json").exists()
    assert not (tmp_path / "out" / "train.npy").exists()


def test_predrnn_names_a_missing_key_and_a_missing_file(tmp_path: Path) -> None:
    clips = write_predrnn_files(tmp_path / "files")
    path = tmp_path / "files" / "moving-mnist-valid.npz"
    np.savez(path, clips=np.zeros((2, 3, 2), np.int32), input_raw_data=clips["val"])
    with pytest.raises(DataError, match=r"moving-mnist-valid\.npz: has no array 'dims'"):
        BENCHMARK.prepare(predrnn(tmp_path / "files"), tmp_path / "raw", tmp_path / "out")
    path.unlink()
    with pytest.raises(DataError, match=r"moving-mnist-valid\.npz: missing; protocol 'predrnn'"):
        BENCHMARK.prepare(predrnn(tmp_path / "files"), tmp_path / "raw", tmp_path / "out")


def test_predrnn_reads_local_files_only() -> None:
    problems = BENCHMARK.check(config(source="download", protocol="predrnn"))
    assert "protocol 'predrnn' reads source 'local', not 'download'" in problems
    assert BENCHMARK.check(config(protocol="pred")) == [
        "protocol = 'pred': expected one of ['openstl', 'predrnn']"
    ]

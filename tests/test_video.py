"""The streaming helpers behind KTH, Human3.6M and TaxiBJ: the split writer, windowing that
never crosses a sequence, video / image decoding and block-wise .npz reading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fixtures_video import ramp_frames, write_images, write_video

from seemore.data.download import DataError
from seemore.data.video import (
    NpzArray,
    SplitWriter,
    count_windows,
    decode_video,
    numbered_images,
    read_image,
    resize_like_cv2,
    sliding_windows,
    windows_at,
)


def numbered(values: list[int]) -> list[tuple[int, np.ndarray]]:
    return [(value, np.array([value])) for value in values]


def test_windows_stride_from_each_run_start_and_never_span_a_gap() -> None:
    frames = numbered([*range(10), *range(20, 27)])
    windows = [w[:, 0].tolist() for w in sliding_windows(frames, length=4, stride=3)]
    assert windows == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9], [20, 21, 22, 23], [23, 24, 25, 26]]
    assert len(windows) == count_windows(10, 4, 3) + count_windows(7, 4, 3)


@pytest.mark.parametrize(("frames", "length", "stride"), [(3, 4, 1), (4, 4, 9), (30, 5, 5)])
def test_count_windows_matches_the_windowing(frames: int, length: int, stride: int) -> None:
    cut = list(sliding_windows(numbered(list(range(frames))), length, stride))
    assert len(cut) == count_windows(frames, length, stride)


def test_split_writer_streams_clips_into_a_loadable_npy(tmp_path: Path) -> None:
    clips = np.random.default_rng(0).integers(0, 256, (7, 3, 1, 4, 5), dtype=np.uint8)
    with SplitWriter(tmp_path, "train", clips.shape[1:], np.uint8) as writer:
        for clip in clips:
            writer.append(clip)
    loaded = np.load(tmp_path / "train.npy", mmap_mode="r")
    np.testing.assert_array_equal(loaded, clips)
    assert [p.name for p in tmp_path.iterdir()] == ["train.npy"]


def test_split_writer_stores_float16_and_empty_splits(tmp_path: Path) -> None:
    with SplitWriter(tmp_path, "test", (2, 2, 3, 3), np.float16):
        pass
    assert np.load(tmp_path / "test.npy").shape == (0, 2, 2, 3, 3)


def test_split_writer_leaves_nothing_after_an_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), SplitWriter(tmp_path, "train", (1, 1, 2, 2), np.uint8) as w:
        w.append(np.zeros((1, 1, 2, 2), np.uint8))
        raise RuntimeError("decoding failed")
    assert list(tmp_path.iterdir()) == []


def test_split_writer_refuses_a_clip_of_another_shape(tmp_path: Path) -> None:
    with (
        pytest.raises(ValueError, match=r"expected \(1, 1, 2, 2\) uint8"),
        SplitWriter(tmp_path, "train", (1, 1, 2, 2), np.uint8) as writer,
    ):
        writer.append(np.zeros((1, 1, 2, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_decode_video_subsamples_and_resizes(tmp_path: Path) -> None:
    write_video(tmp_path / "clip.avi", ramp_frames(10, 30, 10, (24, 32)))
    decoded = list(decode_video(tmp_path / "clip.avi", channels=1, size=8, step=3))
    assert [number for number, _ in decoded] == [0, 1, 2, 3]
    assert all(frame.shape == (1, 8, 8) and frame.dtype == np.uint8 for _, frame in decoded)
    np.testing.assert_allclose([f.mean() for _, f in decoded], [30, 60, 90, 120], atol=2)


def test_decode_video_refuses_a_file_that_is_not_a_video(tmp_path: Path) -> None:
    (tmp_path / "broken.avi").write_bytes(b"not a video at all" * 10)
    with pytest.raises(DataError, match=r"broken\.avi"):
        list(decode_video(tmp_path / "broken.avi", channels=1, size=8))


def test_read_image_keeps_rgb_order_and_resizes(tmp_path: Path) -> None:
    frame = np.zeros((1, 6, 10, 3), np.uint8)
    frame[..., 0] = 200
    write_images(tmp_path, frame, ["red.png"])
    image = read_image(tmp_path / "red.png", channels=3, size=4)
    assert image.shape == (3, 4, 4)
    np.testing.assert_array_equal(image[:, 0, 0], [200, 0, 0])


def test_numbered_images_sorts_by_number_not_by_name(tmp_path: Path) -> None:
    names = ["image_10.png", "image_9.png", "image_0011.jpg", "other_1.png", "image_3.txt"]
    for name in names:
        (tmp_path / name).touch()
    assert [n for n, _ in numbered_images(tmp_path, "image_")] == [9, 10, 11]


def test_npz_array_reads_blocks_of_compressed_and_plain_archives(tmp_path: Path) -> None:
    array = np.arange(7 * 3, dtype=np.float64).reshape(7, 3)
    np.savez(tmp_path / "plain.npz", X=array)
    np.savez_compressed(tmp_path / "packed.npz", X=array)
    for name in ("plain.npz", "packed.npz"):
        reader = NpzArray(tmp_path / name, "X")
        assert reader.shape == (7, 3) and reader.dtype == np.float64
        blocks = list(reader.blocks(3))
        assert [len(b) for b in blocks] == [3, 3, 1]
        np.testing.assert_array_equal(np.concatenate(blocks), array)


def test_npz_array_names_a_missing_key(tmp_path: Path) -> None:
    np.savez(tmp_path / "data.npz", X_train=np.zeros(2))
    with pytest.raises(DataError, match=r"no array 'Y_train'; it holds \['X_train'\]"):
        NpzArray(tmp_path / "data.npz", "Y_train")


def test_windows_at_given_starts_may_overlap() -> None:
    frames = [np.array([value]) for value in range(8)]
    windows = [w[:, 0].tolist() for w in windows_at(frames, 3, [1, 2, 5])]
    assert windows == [[1, 2, 3], [2, 3, 4], [5, 6, 7]]


def test_resize_like_cv2_uses_half_pixel_centres_and_clamps_at_the_edges() -> None:
    row = np.array([[0.0, 40.0, 80.0, 120.0]] * 2)
    # Bilinear 4 -> 2: sample points 0.5 and 2.5.
    np.testing.assert_allclose(resize_like_cv2(row, 2), [[20, 100]] * 2)
    # Bilinear 2 -> 4: sample points -0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped to 1).
    two = np.array([[0.0, 40.0], [0.0, 40.0]])
    np.testing.assert_allclose(resize_like_cv2(two, 4)[0], [0, 10, 30, 40])
    # Bicubic (A = -0.75) 4 -> 2 at 0.5: weights -0.09375, 0.59375, 0.59375, -0.09375 on
    # pixels -1 (the edge, clamped), 0, 1, 2; at 2.5 on pixels 1, 2, 3, 4 (clamped to 3).
    np.testing.assert_allclose(resize_like_cv2(row, 2, "cubic"), [[16.25, 103.75]] * 2)
    flat = np.full((32, 32, 3), 77.0)
    np.testing.assert_allclose(resize_like_cv2(flat, 16, "cubic"), 77.0, atol=1e-4)

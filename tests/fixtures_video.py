"""Tiny files in the real KTH, Human3.6M and TaxiBJ raw formats, written with the same
libraries the preprocessing reads them with (PyAV, Pillow, h5py, numpy)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import av
import h5py
import numpy as np
from PIL import Image


def write_video(path: Path, frames: np.ndarray, rate: int = 25) -> None:
    """An MPEG-4 Part 2 video (the codec of KTH's AVIs) of uint8 frames `[T, H, W]` (gray)
    or `[T, H, W, 3]` (RGB), in the container the suffix names (.avi, .mp4)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = frames.shape[1:3]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        # Near-lossless, so the tests can compare pixel values with a small tolerance.
        stream.codec_context.qmax = 2
        for frame in frames:
            rgb = frame if frame.ndim == 3 else np.repeat(frame[..., None], 3, axis=-1)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_images(directory: Path, frames: np.ndarray, names: list[str]) -> None:
    """One image file per frame (`[T, H, W]` gray or `[T, H, W, 3]` RGB), format by suffix."""
    directory.mkdir(parents=True, exist_ok=True)
    for frame, name in zip(frames, names, strict=True):
        image = Image.fromarray(frame)
        # KTH's extracted frames are stored as RGB even though the videos are gray.
        (image.convert("RGB") if frame.ndim == 2 else image).save(directory / name, quality=95)


def ramp_frames(count: int, base: int, step: int, shape: tuple[int, ...]) -> np.ndarray:
    """uint8 frames whose every pixel is `base + step * index`: a window's frame values tell
    which recording (base) and which frames (index) it came from."""
    values = base + step * np.arange(count)
    return np.broadcast_to(values.reshape(-1, *([1] * len(shape))), (count, *shape)).astype(
        np.uint8
    )


def write_zip(path: Path, files: dict[str, Path]) -> None:
    """A zip archive holding `files` (archive name -> file on disk)."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, source in files.items():
            archive.write(source, name)


def write_year_file(path: Path, data: np.ndarray, dates: list[str]) -> None:
    """A TaxiBJ HDF5 file with the real key names: `data` float64 `(N, 2, 32, 32)` and `date`
    fixed-length byte strings `YYYYMMDDSS`."""
    with h5py.File(path, "w") as file:
        file.create_dataset("data", data=data.astype(np.float64))
        file.create_dataset("date", data=np.array([d.encode() for d in dates], dtype="S10"))


def day_dates(day: str, slots: range = range(1, 49)) -> list[str]:
    return [f"{day}{slot:02d}" for slot in slots]

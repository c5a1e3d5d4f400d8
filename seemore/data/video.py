"""Streaming preprocessing shared by the video and field benchmarks: decode frames one at a
time, cut them into windows that never cross a sequence, and append the windows to a split
file on disk, so that peak memory is one window plus one decoded frame whatever the dataset
size (DESIGN.md §3).
"""

from __future__ import annotations

import os
import re
import struct
import tempfile
import zipfile
import zlib
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import IO

import av
import numpy as np
from PIL import Image, UnidentifiedImageError

from seemore.data.download import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# npy format 1.0: magic, version, little-endian uint16 header length, header padded to 64.
NPY_MAGIC = b"\x93NUMPY\x01\x00"
NPY_ALIGN = 64
NPY_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


def _npy_header(shape: tuple[int, ...], dtype: np.dtype, length: int) -> bytes:
    """A format-1.0 .npy header of exactly `length` bytes (padded with spaces)."""
    fields = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False}
    text = repr({**fields, "shape": shape}).encode("latin1")
    padding = length - len(NPY_MAGIC) - 2 - len(text) - 1
    if padding < 0:
        raise ValueError(f"a header for shape {shape} does not fit in {length} bytes")
    return (
        NPY_MAGIC + struct.pack("<H", length - len(NPY_MAGIC) - 2) + text + b" " * padding + b"\n"
    )


class SplitWriter:
    """Writes one split `[N, T, C, H, W]` as `<split>.npy` clip by clip, without knowing N in
    advance and without holding the split in memory.

    The clips are appended after a header slot sized for any N; on a clean exit the header
    with the final N is written into that slot and the temp file renamed into place. On an
    exception the temp file is removed, so a failed run never leaves a split that looks valid.
    """

    def __init__(
        self, out_dir: Path, split: str, clip_shape: tuple[int, ...], dtype: type | np.dtype
    ) -> None:
        if len(clip_shape) != 4:
            raise ValueError(f"split {split!r}: clip shape must be [T, C, H, W], got {clip_shape}")
        self.path = out_dir / f"{split}.npy"
        self.clip_shape = tuple(int(n) for n in clip_shape)
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.uint8, np.float16):
            raise ValueError(f"split {split!r}: expected uint8 or float16, got {self.dtype}")
        widest = len(_npy_header((2**63 - 1, *self.clip_shape), self.dtype, 1 << 16).rstrip())
        self._header_length = -(-(widest + 1) // NPY_ALIGN) * NPY_ALIGN
        self.count = 0

    def __enter__(self) -> SplitWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(
            dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".part"
        )
        self._temp = Path(temp)
        self._file = os.fdopen(handle, "wb")
        self._file.seek(self._header_length)
        return self

    def append(self, clip: np.ndarray) -> None:
        if clip.shape != self.clip_shape or clip.dtype != self.dtype:
            raise ValueError(
                f"{self.path.name}: clip {clip.shape} {clip.dtype}, expected "
                f"{self.clip_shape} {self.dtype}"
            )
        self._file.write(np.ascontiguousarray(clip).tobytes())
        self.count += 1

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            if kind is None:
                self._file.seek(0)
                shape = (self.count, *self.clip_shape)
                self._file.write(_npy_header(shape, self.dtype, self._header_length))
                self._file.flush()
                os.fsync(self._file.fileno())
            self._file.close()
            if kind is None:
                os.replace(self._temp, self.path)
        finally:
            self._temp.unlink(missing_ok=True)


@contextmanager
def fresh_outputs(out_dir: Path, names: tuple[str, ...]) -> Iterator[None]:
    """Remove the files `names` of `out_dir` before the block and again if it fails: an
    earlier run's outputs never look current, and a split finished before a later one
    failed is not left behind."""
    for name in names:
        (out_dir / name).unlink(missing_ok=True)
    try:
        yield
    except BaseException:
        for name in names:
            (out_dir / name).unlink(missing_ok=True)
        raise


def sliding_windows(
    frames: Iterable[tuple[int, np.ndarray]], length: int, stride: int
) -> Iterator[np.ndarray]:
    """Windows `[length, ...]` over `(frame number, frame)` pairs: one window every `stride`
    frames from the start of each run of consecutive frame numbers. A gap in the numbering
    starts a new run, so no window spans it; only `length` frames are held at a time."""
    if length < 1 or stride < 1:
        raise ValueError(f"length {length} and stride {stride} must be positive")
    buffer: deque[np.ndarray] = deque(maxlen=length)
    previous: int | None = None
    position = 0
    for number, frame in frames:
        if previous is not None and number != previous + 1:
            buffer.clear()
            position = 0
        previous = number
        buffer.append(frame)
        start = position - length + 1
        position += 1
        if start >= 0 and start % stride == 0:
            yield np.stack(buffer)


def windows_at(
    frames: Iterable[np.ndarray], length: int, starts: Iterable[int]
) -> Iterator[np.ndarray]:
    """Windows `[length, ...]` beginning at the given positions (0-based, in iteration order)
    of `frames`; only `length` frames are held at a time, so overlapping windows are fine."""
    wanted = set(starts)
    buffer: deque[np.ndarray] = deque(maxlen=length)
    for position, frame in enumerate(frames):
        buffer.append(frame)
        if position - length + 1 in wanted:
            yield np.stack(buffer)


def count_windows(frames: int, length: int, stride: int) -> int:
    """How many windows `sliding_windows` cuts from one run of `frames` consecutive frames."""
    return 0 if frames < length else (frames - length) // stride + 1


def _cubic_weights(fraction: np.ndarray) -> np.ndarray:
    """OpenCV's bicubic weights (A = -0.75) of the taps at -1, 0, 1, 2, `[n, 4]`."""
    a, x = -0.75, fraction[:, None] + np.array([1.0, 0.0, -1.0, -2.0])
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x <= 1, near, far)


def _cv2_taps(source: int, target: int, kernel: str) -> tuple[np.ndarray, np.ndarray]:
    """Source indices `[target, taps]` and weights of OpenCV's `resize` along one axis:
    pixel centres aligned (x_src = (x + 0.5) * source / target - 0.5), taps outside the
    image clamped to its edge; bilinear clamps the position itself, as OpenCV does."""
    position = (np.arange(target) + 0.5) * (source / target) - 0.5
    first = np.floor(position)
    fraction = position - first
    if kernel == "linear":
        low = first < 0
        high = first >= source - 1
        fraction = np.where(low | high, 0.0, fraction)
        first = np.clip(first, 0, source - 1)
        weights = np.stack([1 - fraction, fraction], axis=1)
        offsets = np.array([0, 1])
    elif kernel == "cubic":
        weights = _cubic_weights(fraction)
        offsets = np.array([-1, 0, 1, 2])
    else:
        raise ValueError(f"kernel {kernel!r}: expected 'linear' or 'cubic'")
    index = np.clip(first.astype(np.int64)[:, None] + offsets, 0, source - 1)
    return index, weights


def resize_like_cv2(image: np.ndarray, size: int, kernel: str = "linear") -> np.ndarray:
    """`image` `[H, W]` or `[H, W, C]` resized to `size` x `size` as OpenCV's `cv2.resize`
    with INTER_LINEAR or INTER_CUBIC computes it in floating point (no anti-aliasing), as
    float32; the reference loaders resize this way. Along rows first, then columns."""
    data = np.asarray(image, dtype=np.float64)
    rows, row_weights = _cv2_taps(data.shape[0], size, kernel)
    columns, column_weights = _cv2_taps(data.shape[1], size, kernel)
    horizontal = np.einsum("hwk...,wk->hw...", data[:, columns], column_weights)
    return np.einsum("hkw...,hk->hw...", horizontal[rows], row_weights).astype(np.float32)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Float pixel values in [0, 255] rounded to the nearest uint8 (storage)."""
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def resize_frame(frame: np.ndarray, size: int) -> np.ndarray:
    """A uint8 frame `[H, W]` or `[H, W, 3]` as `[C, size, size]` (bilinear, anti-aliased when
    shrinking; the aspect ratio is not kept, as in the reference loaders)."""
    image = Image.fromarray(frame)
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    array = np.asarray(image)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def decode_video(
    path: Path, channels: int, size: int, step: int = 1
) -> Iterator[tuple[int, np.ndarray]]:
    """Every `step`-th frame of a video file as `(number, uint8 [C, size, size])`, numbered
    0, 1, 2, ... after subsampling; decoded with PyAV (bundled FFmpeg), one frame at a time.
    `channels` 1 is luma (grayscale), 3 is RGB."""
    pixel_format = {1: "gray", 3: "rgb24"}[channels]
    try:
        container = av.open(str(path))
    except av.FFmpegError as error:
        raise DataError(f"{path}: cannot be opened as a video ({error})") from None
    with container:
        if not container.streams.video:
            raise DataError(f"{path}: holds no video stream")
        index = 0
        try:
            for index, frame in enumerate(container.decode(container.streams.video[0])):
                if index % step == 0:
                    yield index // step, resize_frame(frame.to_ndarray(format=pixel_format), size)
        except av.FFmpegError as error:
            raise DataError(f"{path}: decoding failed after frame {index} ({error})") from None


def read_image(path: Path, channels: int, size: int) -> np.ndarray:
    """One image file as uint8 `[C, size, size]` (`channels` 1: luma, 3: RGB)."""
    try:
        with Image.open(path) as image:
            converted = image.convert({1: "L", 3: "RGB"}[channels])
    except (UnidentifiedImageError, OSError) as error:
        raise DataError(f"{path}: not a readable image ({error})") from None
    return resize_frame(np.asarray(converted), size)


def numbered_images(directory: Path, prefix: str = "") -> list[tuple[int, Path]]:
    """The image files `<prefix><digits>.<png|jpg|jpeg>` of a folder, by frame number."""
    pattern = re.compile(rf"^{re.escape(prefix)}(\d+)$")
    found = []
    for path in directory.iterdir():
        match = pattern.match(path.stem)
        if match and path.suffix.lower() in IMAGE_SUFFIXES:
            found.append((int(match.group(1)), path))
    return sorted(found)


class NpzArray:
    """One array of an .npz archive, read in row blocks so that a large array is never loaded
    whole (np.load reads a member into memory at once)."""

    def __init__(self, path: Path, key: str) -> None:
        self.path, self.key = path, key
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError) as error:
            raise DataError(f"{path}: not a readable .npz archive ({error})") from None
        self.keys = sorted(name.removesuffix(".npy") for name in names)
        if f"{key}.npy" not in names:
            raise DataError(f"{path}: has no array {key!r}; it holds {self.keys}")
        with self._member() as (_, shape, dtype):
            self.shape, self.dtype = shape, dtype

    @contextmanager
    def _member(self) -> Iterator[tuple[IO[bytes], tuple[int, ...], np.dtype]]:
        """The member positioned after its .npy header, with its shape and dtype."""
        with zipfile.ZipFile(self.path) as archive, archive.open(f"{self.key}.npy") as file:
            try:
                version = np.lib.format.read_magic(file)
                read_header = NPY_HEADER_READERS.get(version)
                if read_header is None:
                    raise ValueError(f"unsupported .npy version {version}")
                shape, fortran_order, dtype = read_header(file)
            except ValueError as error:
                raise DataError(
                    f"{self.path}: array {self.key!r} is not a valid .npy ({error})"
                ) from None
            if fortran_order or dtype.hasobject:
                raise DataError(
                    f"{self.path}: array {self.key!r} is Fortran-ordered or holds objects; "
                    "expected a plain C-ordered numeric array"
                )
            yield file, shape, dtype

    def blocks(self, rows: int) -> Iterator[np.ndarray]:
        """The array in consecutive blocks of at most `rows` rows (first axis)."""
        row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        try:
            with self._member() as (file, shape, dtype):
                for start in range(0, shape[0], rows):
                    count = min(rows, shape[0] - start)
                    data = file.read(count * row_bytes)
                    if len(data) != count * row_bytes:
                        raise DataError(f"{self.path}: array {self.key!r} is truncated")
                    yield np.frombuffer(data, dtype=dtype).reshape(count, *shape[1:])
        except (zipfile.BadZipFile, zlib.error, EOFError) as error:
            raise DataError(f"{self.path}: array {self.key!r} is corrupt ({error})") from None

"""Moving MNIST (DESIGN.md §3): 64x64x1 clips of two bouncing handwritten digits, 10 -> 10.

Protocols (`data.moving_mnist.protocol`, docs/protocols.md):
- `openstl` (default): training clips generated on the fly from a set of 28x28 digits, the
  fixed test set stored; validation: `val_clips` clips generated once from the training
  digits with `data_seed` (their own random stream), of input_frames + output_frames frames.
  `download`: the MNIST training digits (`train-images-idx3-ubyte.gz`) and the fixed test set
  `mnist_test_seq.npy` (uint8, (20, 10000, 64, 64), time-major), SHA-256 verified; `local`:
  the same two files in `root`, verified against the same pins.
- `predrnn`: the SeeMore authors' fixed clips in PredRNN's npz format
  (`moving-mnist-train.npz`, `-valid.npz`, `-test.npz` in `root`; see `PredRNNClips`),
  stored as train / val / test; training draws batches from the stored clips.
- `embedded` (under either name): an offline stand-in, NOT the real benchmark: scikit-learn's
  8x8 digits upscaled to MNIST's 28x28 layout, split into disjoint train / test digit sets,
  the test clips generated once with `data_seed`.

The real test set is 64x64, so `download` and `local` need `image_size: 64`; the generator
itself works at any size (digit size and speed scale with image_size / 64).
"""

from __future__ import annotations

import gzip
import hashlib
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from seemore.data import DATASETS
from seemore.data.base import (
    META_FILE,
    Benchmark,
    DataConfig,
    atomic_write_bytes,
    section_meta,
    write_meta,
    write_split,
)
from seemore.data.download import (
    DataError,
    RemoteFile,
    download_record,
    fetch,
    local_file_record,
)
from seemore.data.protocols import Protocol, protocol_registry
from seemore.data.video import NpzArray, SplitWriter, fresh_outputs

# Geometry of the reference generator, defined at 64x64 and scaled with image_size / 64.
REFERENCE_SIZE = 64
DIGIT_SIZE = 28
STEP = 3.6
DIGITS_PER_CLIP = 2
CLIP_LENGTH = 20
REAL_TEST_CLIPS = 10000
EMBEDDED_TEST_CLIPS = 64
# Validation clips generated when `val_clips` is unset: few for the stand-in, scored often
# during `make run`; a tenth of the test set's size for the real benchmark.
DEFAULT_VAL_CLIPS = {"embedded": 16, "real": 1000}
# Random stream of the validation clips, apart from the training and test streams.
VAL_STREAM = 3
# Share of the scikit-learn digits held out for the embedded test clips (1797 in all).
EMBEDDED_TEST_DIGIT_FRACTION = 1 / 6

DIGITS_FILE = "digits.npy"
PREPARED_FILES = (META_FILE, DIGITS_FILE, "train.npy", "val.npy", "test.npy")
# PredRNN's npz files of each split (protocol `predrnn`).
PREDRNN_FILES = {
    "train": "moving-mnist-train.npz",
    "val": "moving-mnist-valid.npz",
    "test": "moving-mnist-test.npz",
}
# Frames of input_raw_data read at a time (16 MB of float32).
NPZ_BLOCK_FRAMES = 1024
IDX_IMAGES_MAGIC = 2051

TRAIN_DIGITS = "train_digits"
TEST_SEQUENCES = "test_sequences"
REMOTE_FILES: dict[str, RemoteFile] = {
    TRAIN_DIGITS: RemoteFile(
        name="train-images-idx3-ubyte.gz",
        url="https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz",
        sha256="440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    ),
    # The SHA-256 is pinned from a single public source; the MD5 below is the one torchvision
    # and many loaders pin for this file, checked as well so that a wrong SHA-256 pin cannot
    # silently admit a different file.
    TEST_SEQUENCES: RemoteFile(
        name="mnist_test_seq.npy",
        url="https://www.cs.toronto.edu/~nitish/unsupervised_video/mnist_test_seq.npy",
        sha256="c2a3e8d3939c001ab77bf543f130157424efa486bb4d0974d2cebb773b13f8b3",
    ),
}
TEST_SEQUENCES_MD5 = "be083ec986bfe91a449d63653c411eb2"


class MovingMNISTConfig(DataConfig):
    # How many test clips to store: for `embedded` the number generated (None: 64), for
    # `download` / `local` the first N of the 10000 (None: all).
    test_clips: int | None = Field(default=None, gt=0)
    # How many validation clips to generate from the training digits (None: 16 for
    # `embedded`, 1000 otherwise).
    val_clips: int | None = Field(default=None, gt=0)

    @property
    def val_count(self) -> int:
        default = DEFAULT_VAL_CLIPS["embedded" if self.source == "embedded" else "real"]
        return self.val_clips or default


# --- the generator ------------------------------------------------------------------------


def digit_size(image_size: int) -> int:
    return round(DIGIT_SIZE * image_size / REFERENCE_SIZE)


def fits_moving_digit(image_size: int) -> bool:
    return 0 < digit_size(image_size) < image_size


def step_length(image_size: int) -> float:
    return STEP * image_size / REFERENCE_SIZE


def bounce(
    start: np.ndarray, velocity: np.ndarray, frames: int, limit: float
) -> tuple[np.ndarray, np.ndarray]:
    """Positions and velocities `[..., frames]` of points moving at constant speed inside
    `[0, limit]` and reflecting off both ends (the velocity component flips sign).

    Frame 0 is at `start`; the velocity at frame t is the direction of travel just after it
    (already reflected when the point sits on an edge)."""
    # Unfold the motion onto a line and fold it back into the interval: a triangle wave.
    # Rising half of the period: the point moves as on the line; falling half: reversed.
    unfolded = start[..., None] + velocity[..., None] * np.arange(frames)
    phase = np.mod(unfolded, 2 * limit)
    positions = limit - np.abs(limit - phase)
    # On a turning point the velocity is the one after the reflection, so which half a
    # boundary phase belongs to depends on the direction of travel along the line.
    moving = velocity[..., None]
    rising = np.where(moving > 0, phase < limit, (phase > 0) & (phase <= limit))
    velocities = np.where(rising, moving, -moving)
    return positions, velocities


@dataclass(frozen=True)
class Trajectories:
    """Motion of the digits of `count` clips: `digit_index [N, K]` into the digit set,
    top-left corners `positions [N, K, T, 2]` (row, column, float pixels) and
    `velocities [N, K, T, 2]` (pixels per frame), for K digits per clip."""

    digit_index: np.ndarray
    positions: np.ndarray
    velocities: np.ndarray

    def slots(self, chosen: slice) -> Trajectories:
        """The same clips with only the digits in `chosen`."""
        return Trajectories(
            self.digit_index[:, chosen], self.positions[:, chosen], self.velocities[:, chosen]
        )


def sample_trajectories(
    available_digits: int, count: int, frames: int, image_size: int, rng: np.random.Generator
) -> Trajectories:
    """Two digits per clip drawn uniformly from the set, top-left corner uniform over the
    positions that keep the digit inside the frame, direction uniform in angle, speed
    3.6 px/frame at 64x64."""
    limit = image_size - digit_size(image_size)
    if not fits_moving_digit(image_size):
        raise ValueError(f"image_size {image_size} leaves no room for a moving digit")
    digit_index = rng.integers(available_digits, size=(count, DIGITS_PER_CLIP))
    start = rng.uniform(0.0, limit, size=(count, DIGITS_PER_CLIP, 2))
    angle = rng.uniform(0.0, 2 * np.pi, size=(count, DIGITS_PER_CLIP))
    speed = step_length(image_size)
    velocity = np.stack([np.sin(angle), np.cos(angle)], axis=-1) * speed
    positions, velocities = bounce(start, velocity, frames, limit)
    # bounce returns [N, K, 2, T]; store time before the (row, column) axis.
    return Trajectories(digit_index, positions.swapaxes(-1, -2), velocities.swapaxes(-1, -2))


def resize_digits(digits: np.ndarray, size: int) -> np.ndarray:
    """uint8 digits `[N, h, w]` resampled to `[N, size, size]` (bilinear, anti-aliased)."""
    if digits.shape[1:] == (size, size):
        return np.asarray(digits)
    from skimage.transform import resize

    scaled = resize(
        np.asarray(digits, dtype=np.float32) / 255.0,
        (len(digits), size, size),
        order=1,
        anti_aliasing=size < digits.shape[1],
    )
    return np.clip(np.rint(scaled * 255.0), 0, 255).astype(np.uint8)


def render(digits: np.ndarray, trajectories: Trajectories, image_size: int) -> np.ndarray:
    """uint8 clips `[N, T, 1, H, W]`: each digit pasted at its rounded position, digits
    combined by pixel-wise max. `digits` must already be `digit_size(image_size)` square."""
    size = digit_size(image_size)
    if digits.shape[1:] != (size, size):
        raise ValueError(f"digits are {digits.shape[1:]}, expected {(size, size)}")
    count, _, frames = trajectories.positions.shape[:3]
    clips = np.zeros((count, frames, image_size, image_size), dtype=np.uint8)
    corners = np.rint(trajectories.positions).astype(np.int64).tolist()
    # One in-place max per pasted digit on a view: measured faster than one fancy-indexed
    # gather / scatter over all clips (benchmarks/mnist_generator.md).
    for clip, (paths, chosen) in enumerate(zip(corners, trajectories.digit_index, strict=True)):
        for path, digit in zip(paths, digits[chosen], strict=True):
            for frame, (row, column) in enumerate(path):
                region = clips[clip, frame, row : row + size, column : column + size]
                np.maximum(region, digit, out=region)
    return clips[:, :, None]


def generate_clips(
    digits: np.ndarray, count: int, frames: int, image_size: int, rng: np.random.Generator
) -> np.ndarray:
    """`count` clips `[N, T, 1, H, W]` (uint8) of two digits from `digits` (uint8
    `[M, 28, 28]`) bouncing in an `image_size` square frame; fixed by the state of `rng`."""
    trajectories = sample_trajectories(len(digits), count, frames, image_size, rng)
    # Resample only the digits this batch uses: the set may be all 60000 MNIST digits.
    used, local_index = np.unique(trajectories.digit_index, return_inverse=True)
    scaled = resize_digits(digits[used], digit_size(image_size))
    local = Trajectories(
        local_index.reshape(trajectories.digit_index.shape),
        trajectories.positions,
        trajectories.velocities,
    )
    return render(scaled, local, image_size)


# --- raw formats --------------------------------------------------------------------------


def read_idx_images(path: Path) -> np.ndarray:
    """The images `[N, rows, cols]` (uint8) of a gzip-compressed IDX3 file (magic 2051,
    big-endian dimensions)."""
    try:
        with gzip.open(path, "rb") as file:
            data = file.read()
    except (OSError, EOFError) as error:
        raise DataError(f"{path}: not a readable gzip file ({error})") from None
    if len(data) < 16:
        raise DataError(f"{path}: {len(data)} bytes, too short for an IDX3 header")
    magic, count, rows, columns = struct.unpack(">4I", data[:16])
    if magic != IDX_IMAGES_MAGIC:
        raise DataError(
            f"{path}: IDX magic number is {magic}, expected {IDX_IMAGES_MAGIC} (uint8 images)"
        )
    if (rows, columns) != (DIGIT_SIZE, DIGIT_SIZE) or count == 0:
        raise DataError(
            f"{path}: holds {count} images of {rows}x{columns}, "
            f"expected MNIST digits of {DIGIT_SIZE}x{DIGIT_SIZE}"
        )
    expected = 16 + count * rows * columns
    if len(data) != expected:
        raise DataError(f"{path}: {len(data)} bytes, expected {expected} for {count} images")
    return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(count, rows, columns).copy()


def read_test_sequences(path: Path, limit: int | None) -> np.ndarray:
    """The first `limit` (None: all) clips of `mnist_test_seq.npy` (uint8, time-major
    `(20, N, 64, 64)`) as `[N, 20, 1, 64, 64]`."""
    try:
        sequences = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as error:
        raise DataError(f"{path}: not a readable .npy file ({error})") from None
    if not isinstance(sequences, np.ndarray) or sequences.dtype != np.uint8:
        kind = getattr(sequences, "dtype", type(sequences).__name__)
        raise DataError(f"{path}: holds {kind}, expected a uint8 array")
    shape = sequences.shape
    if len(shape) != 4 or shape[0] != CLIP_LENGTH or shape[2:] != (REFERENCE_SIZE,) * 2:
        raise DataError(
            f"{path}: shape {shape}, expected ({CLIP_LENGTH}, clips, {REFERENCE_SIZE}, "
            f"{REFERENCE_SIZE}) time-major"
        )
    if limit is not None and limit > shape[1]:
        raise DataError(f"{path}: holds {shape[1]} clips, test_clips asks for {limit}")
    chosen = sequences[:, :limit]
    return np.ascontiguousarray(chosen.transpose(1, 0, 2, 3)[:, :, None])


def md5_file(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# --- the embedded stand-in ----------------------------------------------------------------


def embedded_digits(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint (train, test) uint8 digit sets `[N, 28, 28]` from scikit-learn's 8x8 digits:
    each upscaled to 20x20 and centred with a 4-pixel margin, as MNIST digits are laid out."""
    from sklearn.datasets import load_digits

    images = load_digits().images
    as_uint8 = np.clip(np.rint(images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    margin = 4
    upscaled = resize_digits(as_uint8, DIGIT_SIZE - 2 * margin)
    digits = np.pad(upscaled, ((0, 0), (margin, margin), (margin, margin)))
    order = rng.permutation(len(digits))
    test_count = round(len(digits) * EMBEDDED_TEST_DIGIT_FRACTION)
    return digits[order[test_count:]], digits[order[:test_count]]


# --- the benchmark ------------------------------------------------------------------------


MOVING_MNIST_PROTOCOLS = protocol_registry("moving_mnist")


@DATASETS.register("moving_mnist")
class MovingMNIST(Benchmark):
    config_class = MovingMNISTConfig
    channels = 1
    title = "Moving MNIST"
    description = "two bouncing MNIST digits, 64x64 gray, 10 -> 10 frames"
    protocols = MOVING_MNIST_PROTOCOLS
    default_protocol = "openstl"

    @classmethod
    def stored_clip_length(cls, config: DataConfig) -> int:
        return CLIP_LENGTH

    @classmethod
    def check(cls, config: DataConfig) -> list[str]:
        assert isinstance(config, MovingMNISTConfig)
        problems = super().check(config)
        if config.source != "embedded":
            if config.image_size != REFERENCE_SIZE:
                problems.append(
                    f"image_size = {config.image_size}: the real Moving MNIST test set is "
                    f"{REFERENCE_SIZE}x{REFERENCE_SIZE}; use image_size {REFERENCE_SIZE} "
                    "or source 'embedded'"
                )
        elif not fits_moving_digit(config.image_size):
            problems.append(f"image_size = {config.image_size} leaves no room for a moving digit")
        return problems

    @classmethod
    def planned_bytes(cls, config: DataConfig) -> int | None:
        assert isinstance(config, MovingMNISTConfig)
        embedded = config.source == "embedded"
        if not embedded and cls.protocol_name(config) == "predrnn":
            return None  # the npz files decide how many clips are stored
        clips = config.test_clips or (EMBEDDED_TEST_CLIPS if embedded else REAL_TEST_CLIPS)
        # The training digits: scikit-learn's 1797 but the test share (embedded_digits), or
        # MNIST's 60000.
        digits = 1797 - round(1797 * EMBEDDED_TEST_DIGIT_FRACTION) if embedded else 60000
        frame = config.image_size**2
        val = config.val_count * config.clip_lengths["val"] * frame
        return clips * CLIP_LENGTH * frame + val + digits * DIGIT_SIZE**2

    @classmethod
    def planned_val_clips(cls, config: DataConfig) -> int | None:
        assert isinstance(config, MovingMNISTConfig)
        if config.source != "embedded" and cls.protocol_name(config) == "predrnn":
            return None
        return config.val_count

    @classmethod
    def prepare(cls, config: DataConfig, raw_dir: Path, out_dir: Path) -> None:
        assert isinstance(config, MovingMNISTConfig)
        # A failed preparation must not leave an earlier run's outputs looking current.
        with fresh_outputs(out_dir, PREPARED_FILES):
            if config.source == "embedded":
                meta = _prepare_embedded(config, out_dir)
            else:
                meta = cls.protocol(config).prepare_splits(config, raw_dir, out_dir)
            write_meta(out_dir, {**section_meta(config), **cls.protocol_meta(config), **meta})

    @classmethod
    def train_batches(
        cls, config: DataConfig, prepared_dir: Path, batch_size: int, rng: np.random.Generator
    ) -> Iterator[np.ndarray]:
        path = prepared_dir / DIGITS_FILE
        if not path.is_file():
            # A fixed training set (protocol `predrnn`) is served like any stored split.
            yield from super().train_batches(config, prepared_dir, batch_size, rng)
            return
        digits = np.load(path, mmap_mode="r")
        frames = config.clip_lengths["train"]
        while True:
            yield generate_clips(digits, batch_size, frames, config.image_size, rng)


def write_generated_val(config: MovingMNISTConfig, digits: np.ndarray, out_dir: Path) -> dict:
    """The validation clips generated once from the training `digits` (their own stream of
    data_seed), and their meta.json entries."""
    val = generate_clips(
        digits,
        config.val_count,
        config.clip_lengths["val"],
        config.image_size,
        np.random.default_rng([config.data_seed, VAL_STREAM]),
    )
    write_split(out_dir, "val", val)
    return {
        "val_rule": (
            f"{len(val)} clips generated once from the training digits with data_seed "
            f"{config.data_seed} (stream {VAL_STREAM}); training generates its own"
        ),
        "val_clips": len(val),
    }


def write_digits_and_test(
    config: MovingMNISTConfig, digits: np.ndarray, test: np.ndarray, out_dir: Path
) -> dict:
    """digits.npy (training clips are generated from it), val.npy, test.npy; meta.json's
    entries for them."""
    atomic_write_bytes(out_dir / DIGITS_FILE, lambda file: np.save(file, digits))
    val_meta = write_generated_val(config, digits, out_dir)
    write_split(out_dir, "test", test)
    return {
        "clip_length": CLIP_LENGTH,
        "val_rule": val_meta["val_rule"],
        "counts": {
            "train_digits": len(digits),
            "val_clips": val_meta["val_clips"],
            "test_clips": len(test),
        },
    }


@MOVING_MNIST_PROTOCOLS.register("openstl")
class GeneratedTraining(Protocol):
    """OpenSTL's: the fixed mnist_test_seq.npy for test, training clips generated on the fly
    from the MNIST training digits."""

    reference = "OpenSTL openstl/datasets/dataloader_moving_mnist.py"

    @classmethod
    def check(cls, config: DataConfig) -> list[str]:
        assert isinstance(config, MovingMNISTConfig)
        if config.source != "embedded" and (config.test_clips or 0) > REAL_TEST_CLIPS:
            return [
                f"test_clips = {config.test_clips}: mnist_test_seq.npy holds only "
                f"{REAL_TEST_CLIPS} clips"
            ]
        return []

    @classmethod
    def prepare_splits(cls, config: DataConfig, raw_dir: Path, out_dir: Path) -> dict[str, Any]:
        assert isinstance(config, MovingMNISTConfig)
        if config.source == "download":
            paths = {role: fetch(remote, raw_dir) for role, remote in REMOTE_FILES.items()}
            _check_test_md5(paths[TEST_SEQUENCES])
            files = {r.name: download_record(r, raw_dir) for r in REMOTE_FILES.values()}
        else:
            assert config.root is not None
            paths = {role: Path(config.root) / r.name for role, r in REMOTE_FILES.items()}
            for path in paths.values():
                if not path.is_file():
                    raise DataError(f"{path}: missing; source 'local' reads it from root")
            # Verified against the pins: a local copy is held to the same files.
            files = {
                REMOTE_FILES[role].name: local_file_record(path, REMOTE_FILES[role].sha256)
                for role, path in paths.items()
            }
        digits = read_idx_images(paths[TRAIN_DIGITS])
        test = read_test_sequences(paths[TEST_SEQUENCES], config.test_clips)
        return {
            "description": (
                "Moving MNIST: the fixed test set mnist_test_seq.npy; training clips "
                "generated on the fly from the MNIST training digits"
            ),
            "files": files,
            **write_digits_and_test(config, digits, test, out_dir),
        }


@MOVING_MNIST_PROTOCOLS.register("predrnn")
class PredRNNArrays(Protocol):
    """The SeeMore authors' (PredRNN's): fixed train / valid / test clips in PredRNN's npz
    format, put in `root` by hand (the authors share them from a cloud folder)."""

    reference = "DIG-Beihang/SeeMore core/data_provider/mnist.py (PredRNN's npz loader)"
    sources = ("local",)

    @classmethod
    def prepare_splits(cls, config: DataConfig, raw_dir: Path, out_dir: Path) -> dict[str, Any]:
        assert isinstance(config, MovingMNISTConfig) and config.root is not None
        limits = {"train": None, "val": config.val_clips, "test": config.test_clips}
        files, counts, worst = {}, {}, 0.0
        for split, name in PREDRNN_FILES.items():
            path = Path(config.root) / name
            if not path.is_file():
                raise DataError(
                    f"{path}: missing; protocol 'predrnn' reads PredRNN's "
                    f"{', '.join(PREDRNN_FILES.values())} from root (see the README)"
                )
            clips = PredRNNClips(
                path, config.input_frames, config.clip_lengths[split], limits[split]
            )
            with SplitWriter(out_dir, split, (clips.length, 1, *clips.frame), np.uint8) as writer:
                for clip in clips:
                    writer.append(clip)
            files[name] = local_file_record(path, None)
            counts[f"{split}_clips"] = writer.count
            worst = max(worst, clips.rounding)
        return {
            "description": (
                "Moving MNIST in PredRNN's npz format (the SeeMore authors' fixed "
                "moving-mnist-train / -valid / -test clips)"
            ),
            "clip_length": config.clip_lengths,
            "val_rule": f"the clips of {PREDRNN_FILES['val']}, the authors' validation file",
            "files": files,
            "counts": counts,
            "stored_rounding": (f"values x 255 rounded to uint8; largest change {worst:.3g} / 255"),
        }


class PredRNNClips:
    """The clips of one PredRNN npz file, checked and streamed.

    Format: `clips` int `[2, N, 2]`, the (begin, length) in `input_raw_data` of each clip's
    input and output part; `dims` `[[1, 64, 64]]`; `input_raw_data` float `[frames, 1, 64,
    64]` in [0, 1] (the output part is read from it too, as PredRNN does when `dims` has one
    row). A clip is its input part then its output part, cut to `length` frames, as uint8."""

    def __init__(self, path: Path, inputs: int, length: int, limit: int | None) -> None:
        self.path, self.length = path, length
        dims = _whole(NpzArray(path, "dims"))
        if dims.shape != (1, 3) or dims.tolist() != [[1, REFERENCE_SIZE, REFERENCE_SIZE]]:
            raise DataError(
                f"{path}: 'dims' is {dims.tolist()}, expected [[1, {REFERENCE_SIZE}, "
                f"{REFERENCE_SIZE}]] (one gray 64x64 frame shape)"
            )
        self.frame = (REFERENCE_SIZE, REFERENCE_SIZE)
        self.raw = NpzArray(path, "input_raw_data")
        if len(self.raw.shape) != 4 or self.raw.shape[1:] != (1, *self.frame):
            raise DataError(
                f"{path}: 'input_raw_data' has shape {self.raw.shape}, expected (frames, 1, "
                f"{REFERENCE_SIZE}, {REFERENCE_SIZE})"
            )
        if not np.issubdtype(self.raw.dtype, np.floating):
            raise DataError(f"{path}: 'input_raw_data' holds {self.raw.dtype}, expected floats")
        clips = _whole(NpzArray(path, "clips"))
        if clips.ndim != 3 or clips.shape[0] != 2 or clips.shape[2] != 2:
            raise DataError(
                f"{path}: 'clips' has shape {clips.shape}, expected (2, clips, 2): (begin, "
                "length) of each clip's input and output part"
            )
        if not np.issubdtype(clips.dtype, np.integer):
            raise DataError(f"{path}: 'clips' holds {clips.dtype}, expected integers")
        self.begins = self._checked_begins(clips.astype(np.int64), inputs)
        if limit is not None:
            if limit > len(self.begins):
                raise DataError(f"{path}: holds {len(self.begins)} clips, {limit} asked for")
            self.begins = self.begins[:limit]
        self.rounding = 0.0

    def _checked_begins(self, clips: np.ndarray, inputs: int) -> np.ndarray:
        (in_begin, in_length), (out_begin, out_length) = clips[0].T, clips[1].T
        outputs = self.length - inputs
        problems = [
            (in_length != inputs, f"an input part is not {inputs} frames (input_frames)"),
            (out_length < outputs, f"an output part is shorter than {outputs} frames"),
            (out_begin != in_begin + in_length, "an output part does not follow its input"),
            (in_begin < 0, "a clip begins before the first frame"),
            (out_begin + outputs > self.raw.shape[0], "a clip runs past input_raw_data"),
            (np.diff(in_begin, prepend=0) < 0, "the clips are not in frame order"),
        ]
        for bad, problem in problems:
            if bad.any():
                index = int(np.argmax(bad))
                raise DataError(
                    f"{self.path}: 'clips': {problem} (clip {index}: input "
                    f"{clips[0, index].tolist()}, output {clips[1, index].tolist()} as "
                    "(begin, length))"
                )
        return in_begin

    def __len__(self) -> int:
        return len(self.begins)

    def __iter__(self) -> Iterator[np.ndarray]:
        """Each clip as uint8 `[length, 1, 64, 64]`, reading input_raw_data block by block."""
        buffer = np.empty((0, 1, *self.frame), dtype=np.float32)
        offset = 0  # frame number of buffer[0]
        pending = iter(self.begins.tolist())
        begin = next(pending, None)
        for block in self.raw.blocks(NPZ_BLOCK_FRAMES):
            low, high = float(block.min()), float(block.max())
            if low < 0 or high > 1:
                raise DataError(
                    f"{self.path}: 'input_raw_data' holds values in [{low:g}, {high:g}], "
                    "expected [0, 1]"
                )
            buffer = np.concatenate([buffer, block.astype(np.float32)])
            while begin is not None and begin + self.length <= offset + len(buffer):
                scaled = buffer[begin - offset : begin - offset + self.length] * 255
                stored = np.rint(scaled)
                self.rounding = max(self.rounding, float(np.abs(scaled - stored).max()))
                yield stored.astype(np.uint8)
                begin = next(pending, None)
            keep_from = len(buffer) if begin is None else max(0, begin - offset)
            buffer, offset = buffer[keep_from:], offset + keep_from


def _whole(array: NpzArray) -> np.ndarray:
    """A small npz member read whole."""
    return np.concatenate(list(array.blocks(max(array.shape[0], 1))))


def _check_test_md5(path: Path) -> None:
    actual = md5_file(path)
    if actual != TEST_SEQUENCES_MD5:
        path.unlink()
        raise DataError(
            f"{path}: MD5 is {actual}, expected {TEST_SEQUENCES_MD5}; the pinned SHA-256 and "
            "MD5 disagree, so the file was removed"
        )


def _prepare_embedded(config: MovingMNISTConfig, out_dir: Path) -> dict[str, Any]:
    rng = np.random.default_rng(config.data_seed)
    train_digits, test_digits = embedded_digits(rng)
    count = config.test_clips or EMBEDDED_TEST_CLIPS
    test = generate_clips(test_digits, count, CLIP_LENGTH, config.image_size, rng)
    return {
        "description": (
            "Embedded stand-in, NOT the real Moving MNIST benchmark: two bouncing digits from "
            "scikit-learn's 8x8 handwritten digits (load_digits) upscaled to 28x28; train and "
            f"test use disjoint digit sets; {count} test clips generated with data_seed "
            f"{config.data_seed}"
        ),
        **write_digits_and_test(config, train_digits, test, out_dir),
    }

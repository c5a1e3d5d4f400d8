"""Tiny files in the real Moving MNIST raw formats, for running the real preprocessing offline."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

IDX_NAME = "train-images-idx3-ubyte.gz"
SEQUENCES_NAME = "mnist_test_seq.npy"


def write_idx_images(path: Path, images: np.ndarray, magic: int = 2051) -> None:
    """A gzip-compressed IDX3 file: big-endian magic and dimensions, then uint8 pixels."""
    count, rows, columns = images.shape
    header = struct.pack(">4I", magic, count, rows, columns)
    with gzip.open(path, "wb") as file:
        file.write(header + images.astype(np.uint8).tobytes())


def tiny_digits(count: int = 5, seed: int = 0) -> np.ndarray:
    """uint8 [count, 28, 28] with every pixel lit, so a digit's footprint is countable."""
    return np.random.default_rng(seed).integers(1, 256, size=(count, 28, 28), dtype=np.uint8)


def tiny_sequences(clips: int = 3, seed: int = 1) -> np.ndarray:
    """uint8 time-major (20, clips, 64, 64), as mnist_test_seq.npy is laid out."""
    return np.random.default_rng(seed).integers(0, 256, size=(20, clips, 64, 64), dtype=np.uint8)


def write_raw_files(directory: Path, digits: np.ndarray, sequences: np.ndarray) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    write_idx_images(directory / IDX_NAME, digits)
    np.save(directory / SEQUENCES_NAME, sequences)


def write_predrnn_npz(path: Path, frames: np.ndarray, **replace: np.ndarray) -> None:
    """A PredRNN-format Moving MNIST file of uint8 `frames` `[N, 20, 64, 64]`: `clips` (begin,
    length) of each clip's 10 input and 10 output frames in `input_raw_data` (float32 in
    [0, 1], `[N * 20, 1, 64, 64]`), `dims` `[[1, 64, 64]]`; `replace` swaps in other arrays."""
    count, length = frames.shape[:2]
    begins = np.arange(count) * length
    arrays = {
        "clips": np.stack(
            [
                np.stack([begins, np.full(count, 10)], axis=1),
                np.stack([begins + 10, np.full(count, length - 10)], axis=1),
            ]
        ).astype(np.int32),
        "dims": np.array([[1, 64, 64]], dtype=np.int32),
        "input_raw_data": (frames.reshape(-1, 1, 64, 64) / 255.0).astype(np.float32),
    }
    arrays.update(replace)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)

"""What a training step consumes, made before it needs it (DESIGN.md §8).

`BatchProducer` draws the benchmark's training batches on a background thread (pinned memory
on CUDA, copied with `non_blocking=True`), so the step does not wait for the host when data
are ready. `MaskStream` draws scheduled-sampling masks on the device from its own seeded
generator. Both streams can be saved after any step and continued bit-identically: every
batch carries the data generator's state just after it was drawn.
"""

from __future__ import annotations

import copy
import queue
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor

from seemore.config import ScheduledSamplingConfig
from seemore.method.sampling import true_frame_probabilities

_DONE = object()


def stream_seed(*words: int) -> int:
    """A 63-bit seed for one named random stream (e.g. seed, stage, stream index)."""
    return int(np.random.SeedSequence(list(words)).generate_state(1, dtype=np.uint64)[0] >> 1)


def to_unit_tensor(clips: Tensor) -> Tensor:
    """Stored clips (uint8, or float16/float32 in [0, 1]) as float32 in [0, 1], on their
    device; the same values as `seemore.data.base.to_unit_float`."""
    if clips.dtype == torch.uint8:
        return clips.to(torch.float32) / 255.0
    return clips.to(torch.float32)


class BatchProducer:
    """Batches of `batches` (an endless iterator driven by `rng` alone) made ahead on a thread.

    `next()` returns the clip on `device` as float32 and `rng`'s state right after that clip
    was drawn: restoring it into a fresh generator continues the stream at the next batch.
    """

    def __init__(
        self,
        batches: Iterator[np.ndarray],
        rng: np.random.Generator,
        device: torch.device,
        depth: int = 2,
    ) -> None:
        self._batches = batches
        self._rng = rng
        self._device = device
        self._pin = device.type == "cuda"
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, name="seemore-batches", daemon=True)
        self._thread.start()

    def _produce(self) -> None:
        try:
            for batch in self._batches:
                state = copy.deepcopy(self._rng.bit_generator.state)
                array = np.ascontiguousarray(batch)
                host = torch.from_numpy(array if array.flags.writeable else array.copy())
                if self._pin:
                    host = host.pin_memory()
                if not self._put((host, state)):
                    return
        except BaseException as error:  # handed to the consumer, raised there
            self._put(error)
            return
        self._put(_DONE)

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def next(self) -> tuple[Tensor, dict[str, Any]]:
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        if item is _DONE:
            raise RuntimeError("the training batch stream ended; it must be endless")
        host, state = item
        return to_unit_tensor(host.to(self._device, non_blocking=self._pin)), state

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
        self._thread.join()


class MaskStream:
    """Scheduled-sampling masks `[B, T-2]` (1 = feed the true frame at steps 1..T-2, 0 = the
    prediction; steps below `input_frames` are input steps), drawn on `device`."""

    def __init__(
        self,
        config: ScheduledSamplingConfig,
        batch_size: int,
        input_frames: int,
        total_frames: int,
        device: torch.device,
        seed: int,
    ) -> None:
        self.config = config
        self.shape = (batch_size, total_frames - 2)
        self.device = device
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)
        self._is_input = torch.arange(1, total_frames - 1, device=device) < input_frames

    def __call__(self, step: int) -> Tensor:
        input_p, prediction_p = true_frame_probabilities(self.config, step)
        probability = torch.where(self._is_input, input_p, prediction_p)
        draws = torch.rand(self.shape, generator=self.generator, device=self.device)
        return (draws < probability).to(torch.float32)

    def state(self) -> Tensor:
        return self.generator.get_state()

    def load_state(self, state: Tensor) -> None:
        self.generator.set_state(state)

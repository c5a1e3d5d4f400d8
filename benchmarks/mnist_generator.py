"""Moving MNIST training-clip generation: seemore's generator versus OpenSTL's.

Times batches of 8 clips of 20 frames at 64x64 from the 60000 training digits (random uint8
digits of MNIST's shape: the cost does not depend on the pixels). seemore's side is
`seemore.data.moving_mnist.generate_clips`; OpenSTL's side is its own
`MovingMNIST.generate_moving_mnist` (one clip per call, as its DataLoader workers call it),
loaded from a checkout of OpenSTL given with `--openstl` (the file
openstl/datasets/dataloader_moving_mnist.py is imported as is; its OpenCV and loader
imports, unused by the generator, are stubbed). Without `--openstl` only seemore is timed.

    .venv/bin/python benchmarks/mnist_generator.py [--openstl PATH/TO/OpenSTL] [--batches 300]

Writes benchmarks/mnist_generator.{json,md}. Single process, one thread of numpy.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import platform
import random
import sys
import time
import types
from pathlib import Path
from typing import Any

import numpy as np

from seemore.data.moving_mnist import generate_clips

BENCHMARKS_DIR = Path(__file__).resolve().parent
BATCH, FRAMES, SIZE = 8, 20, 64


def openstl_generator(checkout: Path, digits: np.ndarray) -> Any:
    """An OpenSTL MovingMNIST object whose generator draws from `digits`."""
    source = checkout / "openstl" / "datasets" / "dataloader_moving_mnist.py"
    # The generator needs neither OpenCV (CIFAR backgrounds only) nor OpenSTL's loader helpers.
    sys.modules.setdefault("cv2", types.ModuleType("cv2"))
    utils = types.ModuleType("openstl.datasets.utils")
    utils.create_loader = None  # type: ignore[attr-defined]
    for name in ("openstl", "openstl.datasets"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["openstl.datasets.utils"] = utils
    spec = importlib.util.spec_from_file_location("openstl_moving_mnist", source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    dataset = module.MovingMNIST.__new__(module.MovingMNIST)
    dataset.mnist, dataset.cifar = digits, None
    dataset.n_frames_total, dataset.image_size_, dataset.digit_size_ = FRAMES, SIZE, 28
    dataset.step_length_ = 0.1
    return dataset


def time_batches(make_batch: Any, batches: int) -> float:
    """Median milliseconds per batch over `batches` batches, after 10 warm-up batches."""
    for _ in range(10):
        make_batch()
    times = []
    for _ in range(batches):
        start = time.perf_counter()
        make_batch()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--openstl", type=Path, help="a checkout of chengtan9907/OpenSTL")
    parser.add_argument("--batches", type=int, default=300)
    args = parser.parse_args()
    digits = np.random.default_rng(0).integers(0, 256, (60000, 28, 28), dtype=np.uint8)
    rng = np.random.default_rng(0)
    results: dict[str, Any] = {
        "seemore_ms_per_batch": time_batches(
            lambda: generate_clips(digits, BATCH, FRAMES, SIZE, rng), args.batches
        )
    }
    if args.openstl is not None:
        dataset = openstl_generator(args.openstl, digits)
        random.seed(0)
        results["openstl_ms_per_batch"] = time_batches(
            lambda: [dataset.generate_moving_mnist(2) for _ in range(BATCH)], args.batches
        )
        results["seemore_speedup"] = (
            results["openstl_ms_per_batch"] / results["seemore_ms_per_batch"]
        )
    results.update(
        batch=BATCH,
        frames=FRAMES,
        image_size=SIZE,
        batches=args.batches,
        python=platform.python_version(),
        numpy=np.__version__,
        machine=platform.machine(),
        date=datetime.date.today().isoformat(),
    )
    (BENCHMARKS_DIR / "mnist_generator.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

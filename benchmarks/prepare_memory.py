"""Peak memory of preprocessing versus dataset size (KTH videos and image release, Moving
MNIST's PredRNN npz files, TaxiBJ yearly HDF5 files).

Builds synthetic raw data in the real formats at growing scales (KTH: 25 persons x 6 actions
of 160x120 MPEG-4 AVIs for protocol `avi`, and of 160x120 PNG frame folders for protocol
`openstl`, longer at each scale; Moving MNIST `predrnn`: three npz files of 500 clips per
scale; TaxiBJ `deepst`: one to four full-size year files of 7200 slots), runs the real
`prepare` for each in a fresh process, and records that process's resident set before
preparing (imports done) and its peak (VmHWM) after. Streaming preprocessing should show a
peak that stays flat while the data grow.

    .venv/bin/python benchmarks/prepare_memory.py [--scales 1 4] [--workdir /tmp/...]

Writes benchmarks/prepare_memory.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import av
import h5py
import numpy as np

BENCHMARKS_DIR = Path(__file__).resolve().parent
KTH_ACTIONS = ("boxing", "handclapping", "handwaving", "jogging", "running", "walking")
KTH_FRAMES_PER_SCALE = 60
MNIST_CLIPS_PER_SCALE = 500
TAXIBJ_SLOTS = 150 * 48

# Runs in a fresh interpreter: prepare one dataset, report this process's memory in KiB.
CHILD = """
import json, sys, time
from pathlib import Path
from seemore.data.{module} import {benchmark} as Benchmark

def status(key):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])

config = Benchmark.config_class.model_validate(json.loads(sys.argv[1]))
baseline = status("VmRSS")
start = time.perf_counter()
Benchmark.prepare(config, Path(sys.argv[2]), Path(sys.argv[3]))
print(json.dumps({{"baseline_kib": baseline, "peak_kib": status("VmHWM"),
                  "seconds": time.perf_counter() - start}}))
"""


def write_kth(root: Path, frames: int) -> None:
    """`root/<action>/personXX_<action>_d1_uncomp.avi`: 160x120 MPEG-4, a bright bar sweeping
    over noise so the encoder has real content."""
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 80, (120, 160), dtype=np.uint8)
    for action in KTH_ACTIONS:
        for person in range(1, 26):
            path = root / action / f"person{person:02d}_{action}_d1_uncomp.avi"
            path.parent.mkdir(parents=True, exist_ok=True)
            with av.open(str(path), "w") as container:
                stream = container.add_stream("mpeg4", rate=25)
                stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
                for index in range(frames):
                    image = noise.copy()
                    column = (index * 4 + person * 7) % 150
                    image[:, column : column + 10] = 230
                    frame = av.VideoFrame.from_ndarray(image, format="gray")
                    for packet in stream.encode(frame):
                        container.mux(packet)
                for packet in stream.encode():
                    container.mux(packet)


def write_kth_release(root: Path, frames: int) -> None:
    """The image release's layout, `root/<action>/personXX_<action>_d1_uncomp/image_NNNN.png`
    (160x120, gray stored as RGB), the same sweeping bar."""
    from PIL import Image

    noise = np.random.default_rng(0).integers(0, 80, (120, 160), dtype=np.uint8)
    for action in KTH_ACTIONS:
        for person in range(1, 26):
            folder = root / action / f"person{person:02d}_{action}_d1_uncomp"
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(frames):
                image = noise.copy()
                column = (index * 4 + person * 7) % 150
                image[:, column : column + 10] = 230
                Image.fromarray(image).convert("RGB").save(folder / f"image_{index + 1:04d}.png")


def write_predrnn_mnist(root: Path, clips: int) -> None:
    """PredRNN's three npz files of `clips` clips each (keys clips, dims, input_raw_data)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    begins = np.arange(clips) * 20
    layout = np.stack(
        [np.stack([begins, np.full(clips, 10)], 1), np.stack([begins + 10, np.full(clips, 10)], 1)]
    )
    for name in ("moving-mnist-train.npz", "moving-mnist-valid.npz", "moving-mnist-test.npz"):
        frames = rng.integers(0, 256, (clips * 20, 1, 64, 64), dtype=np.uint8)
        np.savez(
            root / name,
            clips=layout.astype(np.int32),
            dims=np.array([[1, 64, 64]], np.int32),
            input_raw_data=(frames / 255).astype(np.float32),
        )


def write_taxibj(root: Path, years: int) -> None:
    """`years` full-size files with the real keys: 150 complete days of 48 slots each."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for year in range(13, 13 + years):
        first = datetime.date(2000 + year, 1, 1)
        days = [first + datetime.timedelta(days=n) for n in range(TAXIBJ_SLOTS // 48)]
        dates = [f"{day:%Y%m%d}{slot:02d}" for day in days for slot in range(1, 49)]
        with h5py.File(root / f"BJ{year}_M32x32_T30_InOut.h5", "w") as file:
            data = file.create_dataset("data", (len(dates), 2, 32, 32), dtype=np.float64)
            for start in range(0, len(dates), 1200):
                count = min(1200, len(dates) - start)
                data[start : start + count] = rng.gamma(2.0, 50.0, (count, 2, 32, 32))
            file.create_dataset("date", data=np.array([d.encode() for d in dates], dtype="S10"))


def size_on_disk(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def measure(module: str, benchmark: str, config: dict, raw: Path, out: Path) -> dict[str, Any]:
    code = CHILD.format(module=module, benchmark=benchmark)
    command = [sys.executable, "-c", code, json.dumps(config), str(raw), str(out)]
    result = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def run(scales: list[int], workdir: Path) -> dict[str, Any]:
    rows = []
    kth = {"source": "local", "image_size": 128, "input_frames": 10, "output_frames": 20}
    kth["output_frames_test"] = 40
    cases = [
        ("avi", write_kth, "150 AVIs x {n} frames (160x120) -> 128x128"),
        ("openstl", write_kth_release, "150 PNG folders x {n} frames (160x120) -> 128x128"),
    ]
    for protocol, write, fixture in cases:
        for scale in scales:
            frames = KTH_FRAMES_PER_SCALE * scale
            raw = workdir / f"kth_{protocol}_x{scale}"
            if not raw.is_dir():
                write(raw, frames)
            config = {**kth, "protocol": protocol, "root": str(raw)}
            out = workdir / f"kth_{protocol}_x{scale}_prepared"
            memory = measure("kth", "KTH", config, workdir / "unused", out)
            rows.append(
                {
                    "dataset": f"kth `{protocol}`",
                    "fixture": fixture.format(n=frames),
                    "raw_mib": size_on_disk(raw) / 2**20,
                    "prepared_mib": size_on_disk(out) / 2**20,
                    **memory,
                }
            )
            shutil.rmtree(out)
    for scale in scales:
        clips = MNIST_CLIPS_PER_SCALE * scale
        raw = workdir / f"mnist_x{scale}"
        if not raw.is_dir():
            write_predrnn_mnist(raw, clips)
        config = {"source": "local", "protocol": "predrnn", "root": str(raw), "image_size": 64}
        config |= {"input_frames": 10, "output_frames": 10}
        out = workdir / f"mnist_x{scale}_prepared"
        memory = measure("moving_mnist", "MovingMNIST", config, workdir / "unused", out)
        rows.append(
            {
                "dataset": "moving_mnist `predrnn`",
                "fixture": f"3 npz files x {clips} clips (float32 input_raw_data)",
                "raw_mib": size_on_disk(raw) / 2**20,
                "prepared_mib": size_on_disk(out) / 2**20,
                **memory,
            }
        )
        shutil.rmtree(out)
    for years in sorted({min(scale, 4) for scale in scales}):
        raw = workdir / f"taxibj_{years}y"
        if not raw.is_dir():
            write_taxibj(raw, years)
        config = {"source": "local", "protocol": "deepst", "root": str(raw), "image_size": 32}
        config |= {"input_frames": 4, "output_frames": 4}
        out = workdir / f"taxibj_{years}y_prepared"
        memory = measure("taxibj", "TaxiBJ", config, workdir / "unused", out)
        rows.append(
            {
                "dataset": "taxibj `deepst`",
                "fixture": f"{years} HDF5 year file(s) x {TAXIBJ_SLOTS} slots",
                "raw_mib": size_on_disk(raw) / 2**20,
                "prepared_mib": size_on_disk(out) / 2**20,
                **memory,
            }
        )
        shutil.rmtree(out)
    return {
        "rows": rows,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "av": av.__version__,
        "h5py": h5py.__version__,
        "numpy": np.__version__,
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Peak memory of `prepare` versus dataset size",
        "",
        "Each row is one fresh process: RSS after imports (torch comes in with the data",
        "package), then the peak RSS (VmHWM) over the whole preparation. The peak above the",
        "imports stays flat as the data grow 4x (streaming). Seconds are wall time on a shared",
        "2-core machine running other jobs (`nice -n 10`): read them as rough.",
        "",
        "| dataset | fixture | raw MiB | prepared MiB | RSS after imports MiB "
        "| peak RSS MiB | peak - imports MiB | seconds |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["rows"]:
        base, peak = row["baseline_kib"] / 1024, row["peak_kib"] / 1024
        lines.append(
            f"| {row['dataset']} | {row['fixture']} | {row['raw_mib']:.0f} "
            f"| {row['prepared_mib']:.0f} | {base:.0f} | {peak:.0f} | {peak - base:.0f} "
            f"| {row['seconds']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/seemore-prepare-memory"))
    parser.add_argument("--keep", action="store_true", help="keep the raw fixtures")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    result = run(args.scales, args.workdir)
    result["wall_seconds"] = time.perf_counter() - started
    if not args.keep:
        shutil.rmtree(args.workdir)
    text = markdown(result)
    (BENCHMARKS_DIR / "prepare_memory.json").write_text(json.dumps(result, indent=2) + "\n")
    (BENCHMARKS_DIR / "prepare_memory.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()

"""Published reference numbers, shown beside a backbone's results only when it ran on the
real benchmark with the paper preset at the same horizon.

Source: OpenSTL model zoo (Tan et al., "OpenSTL: A Comprehensive Benchmark of
Spatio-Temporal Predictive Learning", NeurIPS 2023 Datasets and Benchmarks), tables
"STL Benchmarks" in docs/en/model_zoos/video_benchmarks.md and traffic_benchmarks.md of
github.com/chengtan9907/OpenSTL (revision c74deb5, March 2024). OpenSTL sums MSE/MAE over
C*H*W per frame on [0, 1] data, on the unclamped prediction, and computes SSIM with data
range 2 (its convention, `CONVENTION`): the report compares them with the values stored in
that convention. A value the source reports inconsistently (SimVP+IncepU's Moving MNIST
PSNR is 37.97 in one table and 21.84 in another) is left out.
"""

from __future__ import annotations

from dataclasses import dataclass

# The metric convention (seemore.metrics.REFERENCE_CONVENTIONS) and data protocol of these
# numbers: OpenSTL's.
CONVENTION = "openstl"
SOURCE = "OpenSTL model zoo (github.com/chengtan9907/OpenSTL, docs/en/model_zoos, rev. c74deb5)"


@dataclass(frozen=True)
class Reference:
    method: str  # the method's name in the source table
    metrics: dict[str, float]


@dataclass(frozen=True)
class ReferenceTable:
    setting: str
    input_frames: int
    output_frames: int
    image_size: int
    rows: dict[str, Reference]  # keyed by our backbone registry name


def _rows(
    entries: dict[str, tuple[str, tuple[float | None, ...]]], names: tuple[str, ...]
) -> dict[str, Reference]:
    return {
        backbone: Reference(
            method,
            {name: value for name, value in zip(names, values, strict=True) if value is not None},
        )
        for backbone, (method, values) in entries.items()
    }


_FOUR = ("mse", "mae", "ssim", "psnr")
_FIVE = ("mse", "mae", "ssim", "psnr", "lpips")

PUBLISHED: dict[str, ReferenceTable] = {
    "moving_mnist": ReferenceTable(
        setting="200 epochs, 10→10",
        input_frames=10,
        output_frames=10,
        image_size=64,
        rows=_rows(
            {
                "convlstm": ("ConvLSTM-S", (29.80, 90.64, 0.9288, 22.10)),
                "phydnet": ("PhyDNet", (28.19, 78.64, 0.9374, 22.62)),
                "predrnn": ("PredRNN", (23.97, 72.82, 0.9462, 23.28)),
                "predrnn_pp": ("PredRNN++", (22.06, 69.58, 0.9509, 23.65)),
                "mim": ("MIM", (22.55, 69.97, 0.9498, 23.56)),
                "mau": ("MAU", (26.86, 78.22, 0.9398, 22.76)),
                "e3d_lstm": ("E3D-LSTM", (35.97, 78.28, 0.9320, 21.11)),
                "predrnn_v2": ("PredRNN.V2", (24.13, 73.73, 0.9453, 23.21)),
                "simvp": ("SimVP+IncepU", (32.15, 89.05, 0.9268, None)),
                "tau": ("TAU", (24.60, 71.93, 0.9454, 23.19)),
            },
            _FOUR,
        ),
    ),
    "kth": ReferenceTable(
        setting="100 epochs, 10→20",
        input_frames=10,
        output_frames=20,
        image_size=128,
        rows=_rows(
            {
                "convlstm": ("ConvLSTM-S", (47.65, 445.5, 0.8977, 26.99, 0.26686)),
                "e3d_lstm": ("E3D-LSTM", (136.40, 892.7, 0.8153, 21.78, 0.48358)),
                "phydnet": ("PhyDNet", (91.12, 765.6, 0.8322, 23.41, 0.50155)),
                "mau": ("MAU", (51.02, 471.2, 0.8945, 26.73, 0.25442)),
                "mim": ("MIM", (40.73, 380.8, 0.9025, 27.78, 0.18808)),
                "predrnn": ("PredRNN", (41.07, 380.6, 0.9097, 27.95, 0.21892)),
                "predrnn_pp": ("PredRNN++", (39.84, 370.4, 0.9124, 28.13, 0.19871)),
                "predrnn_v2": ("PredRNN.V2", (39.57, 368.8, 0.9099, 28.01, 0.21478)),
                "simvp": ("SimVP+IncepU", (41.11, 397.1, 0.9065, 27.46, 0.26496)),
                "tau": ("TAU", (45.32, 421.7, 0.9086, 27.10, 0.22856)),
            },
            _FIVE,
        ),
    ),
    "human36m": ReferenceTable(
        setting="50 epochs, 4→4",
        input_frames=4,
        output_frames=4,
        image_size=256,
        rows=_rows(
            {
                "convlstm": ("ConvLSTM-S", (125.5, 1566.7, 0.9813, 33.40, 0.03557)),
                "e3d_lstm": ("E3D-LSTM", (143.3, 1442.5, 0.9803, 32.52, 0.04133)),
                "phydnet": ("PhyDNet", (125.7, 1614.7, 0.9804, 39.84, 0.03709)),
                "mau": ("MAU", (127.3, 1577.0, 0.9812, 33.33, 0.03561)),
                "mim": ("MIM", (112.1, 1467.1, 0.9829, 33.97, 0.03338)),
                "predrnn": ("PredRNN", (113.2, 1458.3, 0.9831, 33.94, 0.03245)),
                "predrnn_pp": ("PredRNN++", (110.0, 1452.2, 0.9832, 34.02, 0.03196)),
                "predrnn_v2": ("PredRNN.V2", (114.9, 1484.7, 0.9827, 33.84, 0.03334)),
                "simvp": ("SimVP+IncepU", (115.8, 1511.5, 0.9822, 33.73, 0.03467)),
                "tau": ("TAU", (113.3, 1390.7, 0.9839, 34.03, 0.02783)),
            },
            _FIVE,
        ),
    ),
    "taxibj": ReferenceTable(
        setting="50 epochs, 4→4",
        input_frames=4,
        output_frames=4,
        image_size=32,
        rows=_rows(
            {
                "convlstm": ("ConvLSTM-S", (0.3358, 15.32, 0.9836, 39.45)),
                "e3d_lstm": ("E3D-LSTM", (0.3427, 14.98, 0.9842, 39.64)),
                "phydnet": ("PhyDNet", (0.3622, 15.53, 0.9828, 39.46)),
                "predrnn": ("PredRNN", (0.3194, 15.31, 0.9838, 39.51)),
                "mim": ("MIM", (0.3110, 14.96, 0.9847, 39.65)),
                "mau": ("MAU", (0.3268, 15.26, 0.9834, 39.52)),
                "predrnn_pp": ("PredRNN++", (0.3348, 15.37, 0.9834, 39.47)),
                "predrnn_v2": ("PredRNN.V2", (0.3834, 15.55, 0.9826, 39.49)),
                "simvp": ("SimVP+IncepU", (0.3282, 15.45, 0.9835, 39.45)),
                "tau": ("TAU", (0.3108, 14.93, 0.9848, 39.74)),
            },
            _FOUR,
        ),
    ),
}

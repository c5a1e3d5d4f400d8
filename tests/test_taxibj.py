"""TaxiBJ: the real preprocessing on a tiny `dataset.npz` and tiny yearly HDF5 files with the
real key names, the [-1, 1] -> [0, 1] mapping and its inverse, the last-days test split,
refusals of wrong keys / shapes / ranges, the file:// download, and the embedded stand-in."""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np
import pytest
from fixtures_prepared import load_meta, load_split, split_bytes_by_seed
from fixtures_video import day_dates, write_year_file, write_zip

from seemore.data import DATASETS
from seemore.data import taxibj as taxibj_module
from seemore.data.download import DataError, RemoteFile, sha256_file

BENCHMARK = DATASETS.get("taxibj")
FRAME = (2, 32, 32)


def config(**changes: object) -> taxibj_module.TaxiBJConfig:
    values: dict[str, object] = {
        "source": "local",
        "image_size": 32,
        "input_frames": 4,
        "output_frames": 4,
    }
    return taxibj_module.TaxiBJConfig(**{**values, **changes})


# --- dataset.npz ---------------------------------------------------------------------------


def npz_arrays(train: int = 10, test: int = 3, frames: int = 4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, count in (("train", train), ("test", test)):
        for key in ("X", "Y"):
            arrays[f"{key}_{split}"] = rng.uniform(-1, 1, (count, frames, *FRAME))
    arrays["X_train"][0, 0, 0, 0, 0] = -1.0  # the ends of the range map to 0 and 1
    arrays["Y_train"][0, 0, 0, 0, 0] = 1.0
    return arrays


def test_npz_clips_are_inputs_then_outputs_mapped_to_unit_range(tmp_path: Path) -> None:
    arrays = npz_arrays(train=12)
    np.savez_compressed(tmp_path / "dataset.npz", **arrays)
    BENCHMARK.prepare(config(root=str(tmp_path)), tmp_path / "raw", tmp_path / "out")
    # val_fraction 0.1 of 12 clips: the last ceil(1.2) = 2 validate; the 8 - 1 = 7 before
    # them share slots with them if the rows are consecutive windows, so they are dropped.
    rows = {
        "train": ("train", slice(0, 3)),
        "val": ("train", slice(10, 12)),
        "test": ("test", slice(None)),
    }
    for split, (source, chosen) in rows.items():
        stored = load_split(tmp_path / "out", split)
        assert stored.dtype == np.float16 and stored.shape[1:] == (8, *FRAME)
        both = np.concatenate([arrays[f"X_{source}"], arrays[f"Y_{source}"]], axis=1)
        expected = both[chosen]
        np.testing.assert_allclose(stored, (expected + 1) / 2, atol=1e-3)
        # The documented inverse gives the file's [-1, 1] values back.
        np.testing.assert_allclose(2 * stored.astype(np.float32) - 1, expected, atol=2e-3)
    train = load_split(tmp_path / "out", "train")
    assert float(train.min()) == 0.0 and float(train.max()) == 1.0
    meta = load_meta(tmp_path / "out")
    assert meta["layout"] == "dataset.npz" and meta["stand_in"] is False
    assert meta["counts"] == {"train_clips": 3, "val_clips": 2, "test_clips": 3}
    assert meta["val_rule"].startswith("the last 2 clips of X_/Y_train (0.1 of them)")
    assert meta["normalisation"]["inverse"].startswith("v = 2 x - 1")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: a.pop("Y_test"), r"has no array 'Y_test'; it holds \['X_test', 'X_train'"),
        (
            lambda a: a.update(X_train=a["X_train"].transpose(0, 1, 3, 4, 2)),
            r"X_train has shape \(10, 4, 32, 32, 2\), expected \(clips, 4, 2, 32, 32\)",
        ),
        (
            lambda a: a.update(Y_train=a["Y_train"][:, :3]),
            r"Y_train has shape \(10, 3, 2, 32, 32\).*as output_frames says",
        ),
        (lambda a: a.update(Y_test=a["Y_test"][:2]), "X_test has 3 clips but Y_test has 2"),
        (lambda a: a.update(X_test=a["X_test"] * 600), r"X_test holds values in .* \[-1, 1\]"),
        (lambda a: a.update(X_test=(a["X_test"] > 0)), r"X_test holds bool, expected floats"),
    ],
)
def test_npz_refuses_wrong_keys_shapes_and_values(
    tmp_path: Path, change: object, message: str
) -> None:
    arrays = npz_arrays()
    change(arrays)  # type: ignore[operator]
    np.savez(tmp_path / "dataset.npz", **arrays)
    with pytest.raises(DataError, match=message):
        BENCHMARK.prepare(config(root=str(tmp_path)), tmp_path / "raw", tmp_path / "out")
    assert not (tmp_path / "out" / "train.npy").exists()
    assert not (tmp_path / "out" / "meta.json").exists()


def test_npz_with_too_few_train_clips_for_validation_is_refused(tmp_path: Path) -> None:
    np.savez(tmp_path / "dataset.npz", **npz_arrays(train=8))
    with pytest.raises(DataError, match=r"X_train: 8 clips leave none for training"):
        BENCHMARK.prepare(config(root=str(tmp_path)), tmp_path / "raw", tmp_path / "out")


def test_download_fetches_openstls_archive_and_pins_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    np.savez(tmp_path / "dataset.npz", **npz_arrays(train=10))
    archive = tmp_path / "server" / "taxibj_dataset.zip"
    archive.parent.mkdir()
    write_zip(archive, {"dataset.npz": tmp_path / "dataset.npz"})
    remote = RemoteFile("taxibj_dataset.zip", archive.as_uri(), sha256=None)
    monkeypatch.setattr(taxibj_module, "REMOTE_ARCHIVE", remote)
    raw, out = tmp_path / "raw", tmp_path / "out"
    BENCHMARK.prepare(config(source="download"), raw, out)
    pin = (raw / "taxibj_dataset.zip.sha256").read_text().strip()
    meta = load_meta(out)
    assert meta["files"] == {
        "taxibj_dataset.zip": {
            "sha256": pin,
            "status": "verified against the trust-on-first-use pin "
            f"{raw}/taxibj_dataset.zip.sha256",
        }
    }
    assert load_split(out, "test").shape == (3, 8, *FRAME)


def test_real_archive_url_is_openstls_release() -> None:
    remote = taxibj_module.REMOTE_ARCHIVE
    assert remote.url.startswith("https://github.com/chengtan9907/OpenSTL/releases/download/")
    assert remote.sha256 is None  # no published hash: trusted on first use


# --- yearly HDF5 files ---------------------------------------------------------------------


def flows_for(dates: list[str]) -> np.ndarray:
    """Flows that encode their own time: every cell of slot s on day d is 100 d + 2 s."""
    values = [100 * int(d[6:8]) + 2 * int(d[8:]) for d in dates]
    return np.broadcast_to(np.array(values, float)[:, None, None, None], (len(dates), *FRAME))


def write_two_years(root: Path) -> None:
    # Year one: 1 and 2 July complete, 3 July missing slot 30 (dropped, as DeepST does).
    first = day_dates("20130701") + day_dates("20130702")
    first += day_dates("20130703", range(1, 30)) + day_dates("20130703", range(31, 49))
    data = flows_for(first).copy()
    data[0, 0, 0, 0] = -5.0  # a negative count, set to 0
    write_year_file(root / "BJ13_M32x32_T30_InOut.h5", data, first)
    # Year two: 1 and 3 March complete (2 March missing).
    second = day_dates("20140301") + day_dates("20140303")
    write_year_file(root / "BJ14_M32x32_T30_InOut.h5", flows_for(second), second)


def test_hdf5_years_split_by_last_days_and_scale_by_train_min_max(tmp_path: Path) -> None:
    write_two_years(tmp_path)
    section = config(protocol="deepst", root=str(tmp_path), test_days=1, clip_stride=5)
    BENCHMARK.prepare(section, tmp_path / "raw", tmp_path / "out")
    meta = load_meta(tmp_path / "out")
    scale = meta["normalisation"]
    # Training days 2013-07-01, 2013-07-02, 2014-03-01; the last ceil(0.1 * 3) = 1 of them
    # validates. The train min is the zeroed negative.
    assert (scale["min"], scale["max"]) == (0.0, 100 * 2 + 2 * 48)
    assert meta["counts"]["complete_days"] == 4 and "from 2014-03-03" in meta["split_rule"]

    def decoded(split: str) -> np.ndarray:
        """A cell's flows, mapped back with the documented inverse."""
        stored = load_split(tmp_path / "out", split).astype(np.float64)
        return scale["min"] + stored[:, :, 1, 5, 5] * (scale["max"] - scale["min"])

    def windows(run: list[float]) -> list[list[float]]:
        return [run[start : start + 8] for start in range(0, len(run) - 7, 5)]

    # Runs of consecutive slots: 1-2 July (3 July lacks a slot, so it is dropped); 1 March
    # is the validation day.
    july = [100 * day + 2 * slot for day in (1, 2) for slot in range(1, 49)]
    march = [100 + 2 * slot for slot in range(1, 49)]
    np.testing.assert_allclose(decoded("train"), windows(july), atol=0.3)
    np.testing.assert_allclose(decoded("val"), windows(march), atol=0.3)
    assert meta["val_rule"].startswith("the last 1 complete training days before the test")
    # The test day: 3 March. Its flows exceed the train max, so they are stored as 1.
    test_day = [min(300 + 2 * slot, scale["max"]) for slot in range(1, 49)]
    np.testing.assert_allclose(decoded("test"), windows(test_day), atol=0.3)
    assert scale["test_values_clipped_to_1"] == 2 * 32 * 32 * 48
    assert scale["inverse"] == "flow = min + x * (max - min)"


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("no_data", r"has no key 'data'; it holds \['date'\]"),
        ("wrong_shape", r"'data' has shape \(96, 32, 32, 2\), expected \(slots, 2, 32, 32\)"),
        ("bad_date", r"date\[0\] = '2013x70101', expected YYYYMMDDSS"),
    ],
)
def test_hdf5_refuses_wrong_keys_shapes_and_dates(
    tmp_path: Path, damage: str, message: str
) -> None:
    dates = day_dates("20130701") + day_dates("20130702")
    data = flows_for(dates)
    path = tmp_path / "BJ13_M32x32_T30_InOut.h5"
    if damage == "bad_date":
        dates[0] = "2013x70101"
    write_year_file(path, data.transpose(0, 2, 3, 1) if damage == "wrong_shape" else data, dates)
    if damage == "no_data":
        with h5py.File(path, "a") as file:
            del file["data"]
    with pytest.raises(DataError, match=message):
        section = config(protocol="deepst", root=str(tmp_path), test_days=1)
        BENCHMARK.prepare(section, tmp_path / "raw", tmp_path)


@pytest.mark.parametrize(
    ("protocol", "message"),
    [
        ("openstl", r"dataset\.npz: missing; protocol 'openstl' reads OpenSTL's dataset\.npz"),
        ("deepst", r"/BJ13_M32x32_T30_InOut\.h5 \.\.\. BJ16_M32x32_T30_InOut\.h5 \(protocol"),
    ],
)
def test_a_root_without_the_protocols_layout_says_what_it_expects(
    tmp_path: Path, protocol: str, message: str
) -> None:
    section = config(protocol=protocol, root=str(tmp_path))
    with pytest.raises(DataError, match=message):
        BENCHMARK.prepare(section, tmp_path / "raw", tmp_path / "out")


def test_local_files_are_recorded_unverified_with_their_own_sha256(tmp_path: Path) -> None:
    np.savez(tmp_path / "dataset.npz", **npz_arrays())
    BENCHMARK.prepare(config(root=str(tmp_path)), tmp_path / "raw", tmp_path / "out")
    meta = load_meta(tmp_path / "out")
    assert meta["files"] == {
        "dataset.npz": {
            "sha256": sha256_file(tmp_path / "dataset.npz"),
            "status": "unverified (no pin exists for this file)",
        }
    }
    assert meta["protocol"] == "openstl"
    assert meta["protocol_reference"].startswith("OpenSTL")


def test_deepst_cannot_download() -> None:
    problems = BENCHMARK.check(config(protocol="deepst", source="download"))
    assert "protocol 'deepst' reads source 'local', not 'download'" in problems


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"image_size": 64}, "grid is 32x32"),
        ({"train_clips": 8}, "'embedded' only"),
        ({"source": "embedded", "train_clips": 5000}, "19 train days hold 905 distinct clips"),
    ],
)
def test_check_refuses(changes: dict[str, object], problem: str) -> None:
    section = config(**{"root": "/data/taxibj", **changes})
    assert any(re.search(problem, p) for p in BENCHMARK.check(section))


# --- embedded stand-in ---------------------------------------------------------------------


def test_embedded_stand_in_has_daily_rhythm_and_the_benchmark_geometry(tmp_path: Path) -> None:
    section = config(source="embedded", train_clips=40, val_clips=5, test_clips=6)
    BENCHMARK.prepare(section, tmp_path / "raw", tmp_path / "out")
    train, test = load_split(tmp_path / "out", "train"), load_split(tmp_path / "out", "test")
    assert train.shape == (40, 8, *FRAME) and test.shape == (6, 8, *FRAME)
    val = BENCHMARK.val_clips(section, tmp_path / "out")
    assert val.shape == (5, 8, *FRAME) and val.dtype == test.dtype
    assert train.dtype == np.float16 and float(train.min()) >= 0 and float(train.max()) <= 1
    meta = load_meta(tmp_path / "out")
    assert meta["stand_in"] is True and "NOT the real TaxiBJ" in meta["description"]
    # The series behind the clips repeats daily: flow totals a day apart correlate strongly,
    # half a day apart they do not.
    from seemore.data.standins import SLOTS_PER_DAY, city_flows

    totals = city_flows(np.random.default_rng(0), 14, 0).sum(axis=(1, 2, 3))
    day = np.corrcoef(totals[:-SLOTS_PER_DAY], totals[SLOTS_PER_DAY:])[0, 1]
    half = np.corrcoef(totals[: -SLOTS_PER_DAY // 2], totals[SLOTS_PER_DAY // 2 :])[0, 1]
    assert day > 0.8 > half


def test_embedded_stand_in_is_fixed_by_data_seed(tmp_path: Path) -> None:
    section = config(source="embedded", train_clips=4, test_clips=2)
    first, again, other = split_bytes_by_seed(BENCHMARK, section, (0, 0, 2), "train", tmp_path)
    assert first == again != other

"""The pieces KTH, Human3.6M and TaxiBJ share: split lengths, stand-in clip counts and the
exact messages of the checks on them and on the split members."""

from __future__ import annotations

from seemore.data.kth import KTH, KTHConfig
from seemore.data.windowed import WindowedConfig, listed_twice, shared_members


def section(**changes: object) -> WindowedConfig:
    values: dict[str, object] = {"image_size": 16, "input_frames": 2, "output_frames": 3}
    return WindowedConfig(**{**values, **changes})


def test_split_lengths_and_the_stored_length_follow_the_horizons() -> None:
    assert section().clip_lengths == {"train": 5, "val": 5, "test": 5}
    # Validation scores the training horizon, whatever the test horizon.
    longer_test = section(output_frames_test=7)
    assert longer_test.clip_lengths == {"train": 5, "val": 5, "test": 9}
    kth = KTHConfig(image_size=32, input_frames=2, output_frames=6, output_frames_test=4)
    assert KTH.stored_clip_length(kth) == 8


def test_stand_in_clip_counts_default_to_256_16_and_64() -> None:
    assert section().stand_in_clips == {"train": 256, "val": 16, "test": 64}
    counts = section(train_clips=5, val_clips=3, test_clips=2).stand_in_clips
    assert counts == {"train": 5, "val": 3, "test": 2}


def test_clip_counts_are_refused_for_real_data_only() -> None:
    assert section(source="embedded", train_clips=5).clip_count_problems("they hold") == []
    assert section(source="local", test_clips=2).clip_count_problems("they hold") == [
        "test_clips applies to source 'embedded' only; the real data give as many clips as "
        "they hold"
    ]
    assert section(source="local", val_clips=2).clip_count_problems("they hold") == [
        "val_clips applies to source 'embedded' only; the real data give as many clips as they hold"
    ]


def test_the_stand_in_size_is_checked_for_embedded_only() -> None:
    assert section(source="embedded").stand_in_size_problems(16) == []
    assert section(source="local").stand_in_size_problems(32) == []
    assert section(source="embedded").stand_in_size_problems(32) == [
        "image_size = 16: the embedded stand-in needs at least 32"
    ]


def test_split_members_must_be_listed_once_and_in_one_split() -> None:
    config = KTHConfig(
        image_size=32,
        input_frames=2,
        output_frames=2,
        train_persons=[1, 2, 2, 17],
        val_persons=[3, 18],
        test_persons=[17, 18, 1],
    )
    assert listed_twice(config, ("train_persons", "test_persons"), "a person") == [
        "train_persons = [1, 2, 2, 17] lists a person twice"
    ]
    keys = ("train_persons", "val_persons", "test_persons")
    assert shared_members(config, keys, "person") == [
        "train_persons and test_persons share persons [1, 17]; a person must be in one split only",
        "val_persons and test_persons share persons [18]; a person must be in one split only",
    ]
    apart = config.model_copy(update={"test_persons": [20]})
    assert shared_members(apart, keys, "person") == []

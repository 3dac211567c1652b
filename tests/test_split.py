"""Stage split: official folds, grouped validation, the study's holdout, and leakage checks."""

import numpy as np
import pandas as pd
import pytest

from audioclass.errors import ConfigError
from audioclass.splits import SplitConfig, assign_splits, keep_test_copies, split


def metadata(n_classes=10, sources_per_class=16, takes=(1, 1, 2, 3), n_folds=5, seed=0) -> pd.DataFrame:
    """ESC-like metadata: sources with 1–3 takes each; a source's takes share class and fold."""
    rng = np.random.default_rng(seed)
    rows = []
    for label in range(n_classes):
        for s in range(sources_per_class):
            source = f"{label:02d}{s:03d}"
            fold = s % n_folds + 1
            for t in range(int(rng.choice(takes))):
                rows.append((f"{fold}-{source}-{'ABC'[t]}", source, label, f"class{label}", fold))
    return pd.DataFrame(rows, columns=["clip_id", "source_id", "label", "class_name", "fold"])


def cfg(**overrides) -> SplitConfig:
    base = dict(strategy="folds", test_fold=1, val_fold=None, val_fraction=0.2, test_per_class=8, group_by_source=True, seed=42)
    return SplitConfig(**{**base, **overrides})


def sources_in(meta, splits, name):
    return set(meta.loc[splits == name, "source_id"])


def assert_no_source_straddles(meta, splits, *names):
    for a in names:
        for b in names:
            if a < b:
                assert not sources_in(meta, splits, a) & sources_in(meta, splits, b), (a, b)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_folds_with_grouped_val_fraction(seed):
    meta = metadata(seed=seed)
    splits = assign_splits(meta, cfg(seed=seed, test_fold=3))
    assert (splits[meta["fold"] == 3] == "test").all() and (splits[meta["fold"] != 3] != "test").all()
    assert_no_source_straddles(meta, splits, "train", "val", "test")
    non_test = (splits != "test").sum()
    assert 0.1 < (splits == "val").sum() / non_test < 0.3
    assert meta.loc[splits == "val", "label"].nunique() == 10  # stratified: every class validated


def test_folds_with_val_fold():
    meta = metadata()
    splits = assign_splits(meta, cfg(test_fold=5, val_fold=2))
    assert (splits[meta["fold"] == 2] == "val").all() and (splits[meta["fold"] == 5] == "test").all()
    assert set(splits[~meta["fold"].isin([2, 5])]) == {"train"}


def test_holdout_grouped_draws_exact_counts_and_whole_sources():
    meta = metadata()
    splits = assign_splits(meta, cfg(strategy="holdout", test_per_class=8))
    assert (meta[splits == "test"].groupby("label").size() == 8).all()
    assert_no_source_straddles(meta, splits, "train", "val", "test")


def test_holdout_plain_random_draw_reproduces_the_study_leak():
    meta = metadata(takes=(2, 3))  # every source has several takes, so a random draw splits some
    grouped = assign_splits(meta, cfg(strategy="holdout", group_by_source=True))
    plain = assign_splits(meta, cfg(strategy="holdout", group_by_source=False))
    assert (meta[plain == "test"].groupby("label").size() == 8).all()
    leaked = sources_in(meta, plain, "test") & (sources_in(meta, plain, "train") | sources_in(meta, plain, "val"))
    assert leaked, "the study's plain draw should let sources straddle test and train"
    assert not sources_in(meta, grouped, "test") & sources_in(meta, grouped, "train")
    assert_no_source_straddles(meta, plain, "train", "val")  # validation stays grouped even then


def test_split_is_deterministic_and_seed_dependent():
    meta = metadata()
    a, b = assign_splits(meta, cfg()), assign_splits(meta, cfg())
    c = assign_splits(meta, cfg(seed=7))
    assert a.equals(b) and not a.equals(c)


def test_unknown_folds_and_impossible_counts_are_named():
    meta = metadata()
    with pytest.raises(ConfigError, match=r"split\.test_fold: expected one of the folds \[1, 2, 3, 4, 5\], got 9"):
        assign_splits(meta, cfg(test_fold=9))
    with pytest.raises(ConfigError, match=r"split\.val_fold: expected one of the folds"):
        assign_splits(meta, cfg(val_fold=6))
    with pytest.raises(ConfigError, match=r"split\.test_per_class: expected fewer than the"):
        assign_splits(meta, cfg(strategy="holdout", test_per_class=500))


def test_output_table_columns():
    meta = metadata()
    table = split(meta, cfg())
    assert list(table.columns) == ["clip_id", "source_id", "label", "fold", "split"]
    assert len(table) == len(meta) and set(table["split"]) == {"train", "val", "test"}


def test_too_small_for_grouped_validation_names_the_param():
    meta = metadata(n_classes=3, sources_per_class=3, takes=(1,))
    with pytest.raises(
        ConfigError,
        match=r"split\.val_fraction: 5 grouped folds need .* at most 2 clips per class; "
        r"expected split\.val_fraction >= 1/2, or a split\.val_fold$",
    ):  # what to change
        assign_splits(meta, cfg(val_fraction=0.2))
    assert (assign_splits(meta, cfg(val_fraction=0.5)) == "val").sum() >= 1


def test_keep_test_copies_reduces_only_test_to_its_original_recordings():
    index = pd.DataFrame(
        {
            "clip_id": np.repeat(np.arange(6), 3),
            "copy": np.tile([0, 1, 2], 6),
            "split": np.repeat(["train", "train", "val", "val", "test", "test"], 3),
        }
    )
    original = keep_test_copies(index, "original")
    assert list(original.loc[original["split"] == "test", "copy"]) == [0, 0]
    assert original[original["split"] != "test"].equals(index[index["split"] != "test"])
    assert list(original.index) == list(range(len(original)))  # a fresh index: rows line up with the arrays written
    assert keep_test_copies(index, "all").equals(index)

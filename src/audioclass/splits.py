"""Splits: train / validation / test assignment without leakage, and the files of each split."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from audioclass.config import ParamError, require
from audioclass.errors import DataError
from audioclass.grouping import grouped_folds
from audioclass.tables import read_table

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
MIN_SOURCES = len(SPLITS)  # source recordings a class needs: one for each split
TestCopies = Literal["original", "all"]  # which of a test clip's files a feature stage keeps: they alone score the clip


@dataclass(frozen=True)
class SplitConfig:
    strategy: Literal["folds", "holdout"]
    test_fold: int
    val_fold: int | None
    val_fraction: float
    test_per_class: int
    group_by_source: bool
    seed: int

    def __post_init__(self):
        require(0 < self.val_fraction < 1, "val_fraction", "a fraction in (0, 1)", self.val_fraction)
        require(self.test_per_class >= 1, "test_per_class", "an integer >= 1", self.test_per_class)
        require(self.val_fold != self.test_fold, "val_fold", f"a fold other than test_fold={self.test_fold}", self.val_fold)


def grouped_fraction(clips: pd.DataFrame, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask selecting about ``fraction`` of ``clips``, stratified by label, whole sources only."""
    n_folds = max(2, round(1 / fraction))
    folds = grouped_folds(
        clips["label"],
        clips["source_id"],
        n_folds,
        seed,
        key="split.val_fraction",
        fix="expected split.val_fraction >= 1/{most}, or a split.val_fold",
    )
    return folds == 1


def _holdout_test(meta: pd.DataFrame, cfg: SplitConfig) -> np.ndarray:
    rng = np.random.default_rng(cfg.seed)
    test = np.zeros(len(meta), dtype=bool)
    for _, clips in meta.groupby("label", sort=True):
        if len(clips) <= cfg.test_per_class:
            raise ParamError(
                "split.test_per_class",
                f"expected fewer than the {len(clips)} clips of class {clips['class_name'].iloc[0]!r}, got {cfg.test_per_class}",
            )
        if not cfg.group_by_source:
            test[rng.choice(clips.index.to_numpy(), cfg.test_per_class, replace=False)] = True
            continue
        # Whole sources in random order, skipping any that would overshoot, so
        # the count is exact whenever the source sizes allow it.
        taken = 0
        for source in rng.permutation(clips["source_id"].unique()):
            members = clips.index[clips["source_id"] == source]
            if taken + len(members) <= cfg.test_per_class:
                test[members] = True
                taken += len(members)
            if taken == cfg.test_per_class:
                break
    return test


def check_class_sizes(meta: pd.DataFrame) -> None:
    """Stop, naming the class, if a class has too few source recordings to appear in train, validation and test."""
    sources = meta.groupby("class_name", sort=True).agg(clips=("clip_id", "size"), sources=("source_id", "nunique"))
    small = sources[sources["sources"] < MIN_SOURCES]
    if len(small):
        name, row = small.index[0], small.iloc[0]
        raise DataError(
            f"class {name!r}: {row.clips} clip(s) from {row.sources} source recording(s); expected at least "
            f"{MIN_SOURCES} source recordings, one for each of train, validation and test: add recordings "
            "of it to the corpus, or remove it"
        )


def check_coverage(meta: pd.DataFrame, split: np.ndarray) -> None:
    """A class absent from train is an error; absent from validation or test, a warning naming the classes."""
    for name in SPLITS:
        absent = sorted(set(meta["class_name"]) - set(meta["class_name"][split == name]))
        if absent and name == "train":
            raise DataError(
                f"class {absent[0]!r}: no training clips, every source recording of it is in validation or "
                "test; expected more recordings of it, or another split.test_fold / split.val_fold"
            )
        if absent:
            log.warning("no %s clips for class(es) %s: their %s accuracy is not measured", name, absent, name)


def assign_splits(meta: pd.DataFrame, cfg: SplitConfig) -> pd.Series:
    """'train' | 'val' | 'test' for each row of ``meta`` (index-aligned)."""
    meta = meta.reset_index(drop=True)
    check_class_sizes(meta)
    folds = sorted(meta["fold"].unique())
    if cfg.strategy == "folds":
        _check_fold("test_fold", cfg.test_fold, folds)
        test = (meta["fold"] == cfg.test_fold).to_numpy()
    else:
        test = _holdout_test(meta, cfg)
    split = np.where(test, "test", "train").astype(object)
    rest = np.flatnonzero(~test)
    if cfg.val_fold is not None:
        _check_fold("val_fold", cfg.val_fold, folds)
        val = rest[meta["fold"].to_numpy()[rest] == cfg.val_fold]
    else:
        val = rest[grouped_fraction(meta.iloc[rest], cfg.val_fraction, cfg.seed)]
    split[val] = "val"
    check_coverage(meta, split)
    return pd.Series(split, index=meta.index, name="split")


def _check_fold(key: str, value: int, folds: list) -> None:
    if value not in folds:
        raise ParamError(f"split.{key}", f"expected one of the folds {[int(f) for f in folds]}, got {value}")


def split(meta: pd.DataFrame, cfg: SplitConfig) -> pd.DataFrame:
    """The stage's output table: clip_id, source_id, label, fold, split."""
    table = meta[["clip_id", "source_id", "label", "fold"]].reset_index(drop=True).copy()
    table["split"] = assign_splits(meta, cfg)
    return table


def files_by_split(augmented: Path, split_csv: Path) -> pd.DataFrame:
    """The augment stage's manifest with each file's split, ordered by clip id, then copy.

    Stages that turn augmented files into features read their input through this,
    so every feature table has the same rows in the same order, less the copies a
    stage leaves out (``features.copies``, ``keep_test_copies``).
    """
    manifest = read_table(augmented / "manifest.csv")
    splits = read_table(split_csv)[["clip_id", "split"]]
    index = manifest.merge(splits, on="clip_id", how="left", validate="many_to_one")
    if index["split"].isna().any():
        missing = index.loc[index["split"].isna(), "clip_id"].iloc[0]
        raise DataError(f"{split_csv}: clip {missing!r} has no split; expected the split of the same extract output")
    return index.sort_values(["clip_id", "copy"], ignore_index=True)


def keep_test_copies(index: pd.DataFrame, test_copies: TestCopies) -> pd.DataFrame:
    """``files_by_split``'s rows, with test reduced to each clip's original recording (copy 0) for ``original``.

    A user's new clip has no augmented copies, so ``original`` scores test as
    such a clip would be; ``all`` scores each test clip by the mean over its
    copies (test-time averaging). Train and validation keep every copy.
    """
    return index[(index["split"] != "test") | scored_like_test(index, test_copies)].reset_index(drop=True)


def scored_like_test(index: pd.DataFrame, test_copies: TestCopies) -> np.ndarray:
    """Which of ``index``'s rows are of the kind test scores: each clip's original recording (copy 0) for
    ``original``, every copy for ``all``. Validation's such rows are the ones an ensemble fits on
    (:func:`audioclass.ensembling.validation_rows`), and all a pretrained head needs to predict."""
    if test_copies == "all":
        return np.ones(len(index), dtype=bool)
    return (index["copy"] == 0).to_numpy()

"""Grouped, stratified folds: one source recording (or speaker) never spans two folds."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from audioclass.config import ParamError


def grouped_folds(labels: np.ndarray, groups: np.ndarray, n_folds: int, seed: int, *, key: str, fix: str) -> np.ndarray:
    """Fold numbers 1..n_folds, balanced by label, whole groups only.

    labels, groups : array-like, shape (n,)
    key : the parameter that asked for these folds, named in errors.
    fix : what to change when there are too few groups, given the most folds they allow, e.g.
        ``"expected extract.n_folds <= {most}"``.
    """
    labels, groups = np.asarray(labels), np.asarray(groups)
    n_groups = len(np.unique(groups))
    largest_class = int(np.unique(labels, return_counts=True)[1].max())
    if n_groups < n_folds or largest_class < n_folds:
        most = min(n_groups, largest_class)
        raise ParamError(
            key,
            f"{n_folds} grouped folds need at least {n_folds} source recordings and a class with at least "
            f"{n_folds} clips, found {n_groups} recordings and at most {largest_class} clips per class; " + fix.format(most=most),
        )
    folds = np.zeros(len(labels), dtype=int)
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        # Small classes cannot be spread over every fold; that is expected, not news.
        warnings.filterwarnings("ignore", "The least populated class", UserWarning)
        for fold, (_, idx) in enumerate(splitter.split(labels, labels, groups), start=1):
            folds[idx] = fold
    return folds

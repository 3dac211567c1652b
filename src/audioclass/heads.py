"""A linear classifier on pretrained embeddings: standardised inputs, multinomial logistic regression.

:func:`fit_head` chooses the inverse L2 strength ``C`` within the training
split: its sources are dealt into four groups, a head is fitted on three and
scored on the fourth's original recordings (the kind of row test scores), and
the ``C`` of least log-loss summed over the four wins (ties to the smaller
``C``, the stronger regularisation). Validation chooses nothing, so its
predictions stay honest for the ensemble's weights. The head is then fitted
on the whole training split, and with ``refit`` again on training and
validation together. The head is stored as plain arrays
(:class:`LinearHead`, ``head.npz``): loading it runs no pickled code.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from audioclass.calibration import cross_entropy
from audioclass.config import require
from audioclass.dataset import Data, Split
from audioclass.errors import DataError, first_line


@dataclass(frozen=True)
class LinearHead:
    """softmax(((x - mean) / scale) · coefᵀ + intercept): what the fitted scaler and regression compute."""

    mean: np.ndarray  # (dim,)
    scale: np.ndarray  # (dim,)
    coef: np.ndarray  # (n_classes, dim)
    intercept: np.ndarray  # (n_classes,)

    @classmethod
    def of(cls, pipeline: Pipeline, n_classes: int) -> LinearHead:
        scaler, regression = pipeline[0], pipeline[-1]
        coef = np.zeros((n_classes, regression.coef_.shape[1]))
        intercept = np.zeros(n_classes)
        if len(regression.classes_) == 2:  # one logit, for the second class: the same softmax over (0, logit)
            coef[regression.classes_[1]], intercept[regression.classes_[1]] = regression.coef_[0], regression.intercept_[0]
        else:
            coef[regression.classes_], intercept[regression.classes_] = regression.coef_, regression.intercept_
        return cls(scaler.mean_, scaler.scale_, coef, intercept)

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """(n, dim) embeddings → (n, n_classes) float32 class probabilities."""
        logits = ((np.asarray(x, np.float64) - self.mean) / self.scale) @ self.coef.T + self.intercept
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)

    def save(self, path: Path) -> None:
        with path.open("wb") as f:
            np.savez(f, mean=self.mean, scale=self.scale, coef=self.coef, intercept=self.intercept)

    @classmethod
    def load(cls, path: Path) -> LinearHead:
        try:
            with path.open("rb") as f, np.load(f, allow_pickle=False) as arrays:  # closed also when it is no zip
                return cls(*(arrays[k] for k in ("mean", "scale", "coef", "intercept")))
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
            raise DataError(f"{path}: unreadable head ({first_line(err)}); expected a complete head.npz from the head stage") from None


def _fit(x: np.ndarray, y: np.ndarray, c: float) -> Pipeline:
    # lbfgs on standardised inputs: deterministic, and converged well within max_iter on 1,024 values.
    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000)).fit(x, y)


@dataclass(frozen=True)
class FittedHead:
    validated: LinearHead  # fitted on train: its validation predictions are honest, and the ensemble's weights use them
    final: LinearHead  # what predicts test and new audio: refitted on train + val, or the validated head itself
    pipeline: Pipeline  # the final head as scikit-learn fitted it, for the MLflow model
    c: float
    cv_log_loss_by_c: dict[float, float]  # per C, the log-loss on training's held-out originals


INNER_GROUPS = 4  # of training's sources, for choosing C


def cross_validated_log_loss(train: Split, cs: tuple[float, ...], n_classes: int) -> dict[float, float]:
    """Per C, the mean log-loss of heads fitted on three groups of training's sources, on the fourth's originals."""
    groups = train.index["source_id"] if "source_id" in train.index else train.index["clip_id"]
    originals = (train.index["copy"] == 0).to_numpy() if "copy" in train.index else np.ones(len(train.y), bool)
    n_groups = min(INNER_GROUPS, groups.nunique())
    if n_groups < 2:
        raise DataError(f"the training split has {groups.nunique()} source recording(s); expected at least 2 to choose head.C")
    losses = dict.fromkeys(cs, 0.0)
    for fit_rows, held in GroupKFold(n_groups).split(train.x, train.y, groups.to_numpy()):
        held = held[originals[held]]
        for c in cs:
            head = LinearHead.of(_fit(train.x[fit_rows], train.y[fit_rows], c), n_classes)
            losses[c] += cross_entropy(head.probabilities(train.x[held]), train.y[held]) * len(held)
    return {c: round(total / originals.sum(), 6) for c, total in losses.items()}


def fit_head(data: Data, cs: tuple[float, ...], *, refit: bool) -> FittedHead:
    """Choose ``C`` within training (see the module docstring) and fit the head."""
    n_classes = len(data.class_names)
    losses = cross_validated_log_loss(data.train, tuple(sorted(cs)), n_classes)
    best = min(losses, key=lambda c: (losses[c], c))
    fitted = _fit(data.train.x, data.train.y, best)
    validated = LinearHead.of(fitted, n_classes)
    if not refit:
        return FittedHead(validated, validated, fitted, best, losses)
    everything = data.train_and_val()
    pipeline = _fit(everything.x, everything.y, best)
    return FittedHead(validated, LinearHead.of(pipeline, n_classes), pipeline, best, losses)


@dataclass(frozen=True)
class HeadConfig:
    C: tuple[float, ...]  # inverse L2 strengths tried; the best within training is kept (module docstring)
    refit: bool  # refit the chosen C on train + val; that head predicts test

    def __post_init__(self):
        require(len(self.C) >= 1 and all(c > 0 for c in self.C), "C", "a list of positive numbers", list(self.C))

"""A linear classifier on pretrained embeddings: standardised inputs, multinomial logistic regression.

:func:`fit_head` fits one per value of the inverse L2 strength ``C`` on the
training split, keeps the one best on validation (ties to the smaller ``C``,
the stronger regularisation), and with ``refit`` fits that ``C`` again on
training and validation together. The head is stored as plain arrays
(:class:`LinearHead`, ``head.npz``): loading it runs no pickled code.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from audioclass.config import require
from audioclass.dataset import Data
from audioclass.errors import DataError, first_line
from audioclass.evaluation import accuracy


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
            with np.load(path, allow_pickle=False) as arrays:
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
    val_accuracy_by_c: dict[float, float]


def fit_head(data: Data, cs: tuple[float, ...], *, refit: bool) -> FittedHead:
    """Choose ``C`` on validation (see the module docstring) and fit the head."""
    n_classes = len(data.class_names)
    fitted = {c: _fit(data.train.x, data.train.y, c) for c in sorted(cs)}
    scores = {c: accuracy(LinearHead.of(p, n_classes).probabilities(data.val.x), data.val.y) for c, p in fitted.items()}
    best = max(scores, key=lambda c: (scores[c], -c))
    validated = LinearHead.of(fitted[best], n_classes)
    if not refit:
        return FittedHead(validated, validated, fitted[best], best, scores)
    everything = data.train_and_val()
    pipeline = _fit(everything.x, everything.y, best)
    return FittedHead(validated, LinearHead.of(pipeline, n_classes), pipeline, best, scores)


@dataclass(frozen=True)
class HeadConfig:
    C: tuple[float, ...]  # inverse L2 strengths tried; the best on validation is kept
    refit: bool  # refit the chosen C on train + val; that head predicts test

    def __post_init__(self):
        require(len(self.C) >= 1 and all(c > 0 for c in self.C), "C", "a list of positive numbers", list(self.C))

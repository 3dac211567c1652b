"""Estimators: the study's classical models on raw vectors, fitted and scored."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import RandomForestClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier, NearestCentroid
from sklearn.neural_network import MLPClassifier
from sklearn.svm import SVC, LinearSVC

from audioclass import study
from audioclass.config import ParamError, require
from audioclass.dataset import Data
from audioclass.errors import first_line
from audioclass.evaluation import summarize

ESTIMATORS = {
    cls.__name__: cls
    for cls in (
        DummyClassifier,
        NearestCentroid,
        KNeighborsClassifier,
        GaussianNB,
        RandomForestClassifier,
        LinearSVC,
        SVC,
        LogisticRegression,
        MLPClassifier,
    )
}


def make_estimator(spec: dict, seed: int, jobs: int = 1) -> Any:
    """The estimator a model spec names, seeded, with ``jobs`` workers where it takes them (never changes results)."""
    kwargs = {k: v for k, v in spec.items() if k != "estimator"}
    estimator = ESTIMATORS[spec["estimator"]](**kwargs)
    settable = estimator.get_params()
    estimator.set_params(**{k: v for k, v in {"random_state": seed, "n_jobs": jobs}.items() if k in settable and k not in kwargs})
    return estimator


def check_estimator_spec(key: str, spec: Any, seed: int) -> Any:
    """The estimator ``spec`` makes; a ConfigError naming ``key`` if it names no allowed class or a wrong argument."""
    require(
        isinstance(spec, dict) and spec.get("estimator") in ESTIMATORS, key, f"a mapping with estimator: one of {sorted(ESTIMATORS)}", spec
    )
    try:
        return make_estimator(spec, seed)
    except TypeError as err:  # an argument the estimator does not take
        require(False, key, f"arguments {spec['estimator']} takes ({err})", spec)


@dataclass(frozen=True)
class ClassicalConfig:
    models: dict  # name → {estimator: <scikit-learn class>, **its arguments}
    seed: int

    def __post_init__(self):
        require(len(self.models) >= 1, "models", "at least one model", self.models)
        for name, spec in self.models.items():
            check_estimator_spec(f"models.{name}", spec, self.seed)


def class_probabilities(estimator: Any, x: np.ndarray, n_classes: int) -> np.ndarray:
    """(n, n_classes) probabilities; one-hot predictions for estimators without ``predict_proba``."""
    out = np.zeros((len(x), n_classes), dtype=np.float32)
    if hasattr(estimator, "predict_proba"):
        out[:, estimator.classes_] = estimator.predict_proba(x)
    else:
        out[np.arange(len(x)), estimator.predict(x)] = 1.0
    return out


def fit_model(name: str, spec: dict, data: Data, seed: int, jobs: int) -> dict:
    """Fit one model on train; its validation and test scores, and the seconds the fit took."""
    n_classes = len(data.class_names)
    estimator = make_estimator(spec, seed, jobs)
    start = time.perf_counter()
    try:
        with warnings.catch_warnings(record=True) as caught:
            # An iterative fit that stops at its max_iter (the study's MLP does) is recorded and logged in
            # one line by the stage, rather than as scikit-learn's multi-line warning.
            warnings.simplefilter("always", ConvergenceWarning)
            estimator.fit(data.train.x, data.train.y)
    except ValueError as err:  # e.g. an argument value the estimator rejects
        raise ParamError(f"classical.models.{name}", first_line(err)) from None
    seconds = time.perf_counter() - start
    for warning in caught:
        if not issubclass(warning.category, ConvergenceWarning):
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    val = class_probabilities(estimator, data.val.x, n_classes)
    test = class_probabilities(estimator, data.test.x, n_classes)
    metrics = summarize(val, data.val.index, test, data.test.index, data.class_names)
    metrics["fit_seconds"] = round(seconds, 2)
    metrics["converged"] = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return metrics


def results_table(results: dict[str, dict]) -> str:
    lines = ["| model | test (file) | test (clip) | val (file) | study (file, its split) | fit (s) |", "|---|---:|---:|---:|---:|---:|"]
    for name, m in results.items():
        published = f"{study.RAW_1D[name]:.1f} %" if name in study.RAW_1D else "–"
        lines.append(
            f"| {name} | {100 * m['test_file_accuracy']:.1f} % | {100 * m['test_clip_accuracy']:.1f} % | "
            f"{100 * m['val_file_accuracy']:.1f} % | {published} | {m['fit_seconds']:.2f} |"
        )
    return "\n".join(lines) + "\n"

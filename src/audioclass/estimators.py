"""Estimators: the study's classical models on raw vectors, fitted and scored."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier, NearestCentroid
from sklearn.neural_network import MLPClassifier
from sklearn.svm import SVC, LinearSVC

from audioclass import study, tracking
from audioclass.config import ParamError, require
from audioclass.dataset import Data
from audioclass.evaluation import summarize
from audioclass.outputs import atomic_file
from audioclass.tables import json_text

log = logging.getLogger(__name__)

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
    """Fit one model on train; its validation and test scores, logged as a nested MLflow run."""
    n_classes = len(data.class_names)
    with tracking.run(f"classical-{name}", {"model": name, **spec}, nested=True, tags={"pipeline_role": "baseline"}):
        estimator = make_estimator(spec, seed, jobs)
        start = time.perf_counter()
        try:
            estimator.fit(data.train.x, data.train.y)
        except ValueError as err:  # e.g. an argument value the estimator rejects
            raise ParamError(f"classical.models.{name}", str(err).splitlines()[0]) from None
        seconds = time.perf_counter() - start
        val = class_probabilities(estimator, data.val.x, n_classes)
        test = class_probabilities(estimator, data.test.x, n_classes)
        metrics = summarize(val, data.val.index, test, data.test.index, data.class_names)
        metrics["fit_seconds"] = round(seconds, 2)
        tracking.log_metrics({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
        tracking.log_confusion_matrix(metrics["test_clip_confusion"], data.class_names, f"{name}, test clips")
    log.info("%s: test %.3f file / %.3f clip, fit %.1f s", name, metrics["test_file_accuracy"], metrics["test_clip_accuracy"], seconds)
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


def classical(cfg: ClassicalConfig, data: Data, out: Path, jobs: int) -> dict[str, dict]:
    """Run the stage: every model in turn, then the metrics file and the table."""
    with tracking.run("classical", {"models": ",".join(cfg.models), "seed": cfg.seed}, tags={"pipeline_role": "baselines"}):
        results = {name: fit_model(name, spec, data, cfg.seed, jobs) for name, spec in cfg.models.items()}
    metrics = {name: {k: v for k, v in m.items() if isinstance(v, (int, float))} for name, m in results.items()}
    with atomic_file(out / "classical.json") as tmp:
        tmp.write_text(json_text(metrics))
    with atomic_file(out / "classical.md") as tmp:
        tmp.write_text("# Classical baselines on raw 1D vectors\n\n" + results_table(results))
    return results

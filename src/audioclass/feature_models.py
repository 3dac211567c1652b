"""Estimators on feature vectors: MLP, forest and SVM chosen by grouped CV on training clips."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from audioclass import study
from audioclass.config import ParamError, require
from audioclass.dataset import Data, Split
from audioclass.errors import first_line
from audioclass.estimators import check_estimator_spec, class_probabilities, make_estimator
from audioclass.evaluation import test_scores
from audioclass.features import GROUPS


@dataclass(frozen=True)
class FeatureModelsConfig:
    sets: dict  # name → column groups of the features stage
    models: dict  # name → {estimator: <scikit-learn class>, **its arguments, grid: {argument: [values]}}
    cv_folds: int
    seed: int

    def __post_init__(self):
        require(len(self.sets) >= 1, "sets", "at least one feature set", self.sets)
        for name, groups in self.sets.items():
            require(
                isinstance(groups, list) and groups and set(groups) <= set(GROUPS),
                f"sets.{name}",
                f"a list of column groups from {list(GROUPS)}",
                groups,
            )
        require(len(self.models) >= 1, "models", "at least one model", self.models)
        for name, spec in self.models.items():
            estimator = check_estimator_spec(f"models.{name}", _without_grid(spec), self.seed)
            grid = spec.get("grid", {})
            require(
                isinstance(grid, dict) and all(isinstance(v, list) and v for v in grid.values()),
                f"models.{name}.grid",
                "a mapping of argument: [values to try]",
                grid,
            )
            unknown = sorted(set(grid) - set(estimator.get_params()))
            require(not unknown, f"models.{name}.grid", f"arguments {spec['estimator']} takes", unknown)
        require(self.cv_folds >= 2, "cv_folds", "an integer >= 2", self.cv_folds)


def _without_grid(spec: Any) -> Any:
    return {k: v for k, v in spec.items() if k != "grid"} if isinstance(spec, dict) else spec


def grouped_folds(index: pd.DataFrame, n_folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(training rows, held-out rows) per fold: stratified by label, no ``source_id`` in two folds."""
    n_sources = index.groupby("label")["source_id"].nunique().min()
    if n_folds > n_sources:
        raise ParamError(
            "feature_models.cv_folds",
            f"expected at most {n_sources} (the fewest source recordings of any class outside test), got {n_folds}",
        )
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(index)), index["label"], index["source_id"]))


def model_pipeline(spec: dict, seed: int) -> Pipeline:
    """Scaling inside the model: whatever fits the pipeline fits the scaler on the same rows, and no others."""
    return Pipeline([("scale", StandardScaler()), ("model", make_estimator(_without_grid(spec), seed))])


def select_columns(data: Data, columns: pd.DataFrame, groups: list[str]) -> Data:
    keep = columns.index[columns["group"].isin(groups)].to_numpy()
    pick = lambda split: Split(split.x[:, keep], split.index)  # noqa: E731
    return Data(pick(data.train), pick(data.val), pick(data.test), data.class_names)


def fit_model(name: str, spec: dict, data: Data, cfg: FeatureModelsConfig, jobs: int) -> tuple[dict, pd.DataFrame]:
    """Grid-search one model by grouped CV on train + val, refit the best on all of it, score test.

    Returns (metrics, one row per grid candidate with its mean and per-fold CV accuracy).
    """
    dev = data.train_and_val()
    folds = grouped_folds(dev.index, cfg.cv_folds, cfg.seed)
    grid = {f"model__{k}": v for k, v in spec.get("grid", {}).items()}
    search = GridSearchCV(model_pipeline(spec, cfg.seed), grid, cv=folds, n_jobs=jobs, error_score="raise")
    start = time.perf_counter()
    try:
        search.fit(dev.x, dev.y)
    except ValueError as err:  # e.g. an argument value the estimator rejects
        raise ParamError(f"feature_models.models.{name}", first_line(err)) from None
    seconds = time.perf_counter() - start
    results = pd.DataFrame(search.cv_results_)
    fold_scores = [results.loc[search.best_index_, f"split{i}_test_score"] for i in range(len(folds))]
    metrics = {
        "cv_accuracy": float(np.mean(fold_scores)),
        "cv_accuracy_sd": float(np.std(fold_scores, ddof=1)),
        **test_scores(class_probabilities(search.best_estimator_, data.test.x, len(data.class_names)), data.test.index, data.class_names),
        "fit_seconds": round(seconds, 2),
        "candidates": len(results),
        "best_params": {k.removeprefix("model__"): v for k, v in search.best_params_.items()},
    }
    candidates = results[["params", "mean_test_score", "std_test_score", "rank_test_score"]].assign(
        params=[json.dumps({k.removeprefix("model__"): v for k, v in p.items()}) for p in results["params"]]
    )
    return metrics, candidates


def results_table(results: dict[str, dict], cfg: FeatureModelsConfig) -> str:
    lines = [
        f"| features | model | CV ({cfg.cv_folds} grouped folds) | test (file) | test (clip) | best params | "
        "published ESC-10 (5-fold CV) |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for set_name, models in results.items():
        for name, m in models.items():
            label, figure = study.DATASET_PAPER.get(cfg.models[name]["estimator"], ("", None))
            published = f"{figure:.1f} % ({label})" if figure else "–"
            best = ", ".join(f"{k}={v}" for k, v in m["best_params"].items()) or "–"
            lines.append(
                f"| {set_name} | {name} | {100 * m['cv_accuracy']:.1f} ± {100 * m['cv_accuracy_sd']:.1f} % | "
                f"{100 * m['test_file_accuracy']:.1f} % | {100 * m['test_clip_accuracy']:.1f} % | {best} | {published} |"
            )
    return "\n".join(lines) + "\n"

"""Ensembling: members' probabilities combined, with weights fitted on validation only.

Every weight is fitted, and the group and method chosen among the weighted
means, by validation log-loss (a proper scoring rule) on the rows of the kind
test scores (:func:`validation_rows`): each validation clip's original
recording when ``spectrograms.test_copies`` is ``original``, its mean over its
augmented copies when it is ``all``. Accuracy is reported beside it; it
chooses nothing, since one clip moves it by a step and most weightings tie.
With ``ensemble.choose: held_out`` the group is chosen by its log-loss on rows
it was not fitted on (:func:`held_out_log_loss`), and the method within it as
before: chosen in sample, among some forty candidates, the larger groups won
more often than unseen rows bore out.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import softmax

from audioclass.calibration import EPS, calibrate, cross_entropy
from audioclass.config import require
from audioclass.errors import ConfigError, DataError
from audioclass.evaluation import accuracy, clip_level
from audioclass.outputs import load_array, require_inputs
from audioclass.splits import TestCopies, scored_like_test
from audioclass.swarm import OPTIMISERS

log = logging.getLogger(__name__)


# Methods whose scores only rank the classes: normalised to sum to 1 they are no forecast, and their log-loss
# measures the normalisation (a vote of 7 members in 8 reads as about 0.87, however sure they were), so they are
# reported but never chosen. Every other method is a weighted mean of the members' probabilities.
SCORES_ONLY = ("maximum", "vote")
SCRATCH, PRETRAINED, ALL = "from_scratch", "pretrained", "all"  # the groups, in report order, after one per architecture
_MEMBER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_+-]*")  # + joins backends in a head's name


@dataclass(frozen=True)
class EnsembleConfig:
    members: str | tuple[str, ...]  # "all", or names: a run of train.runs, head-<model> (a head on pretrained embeddings)
    optimisers: tuple[str, ...]
    population: int
    iterations: int
    seed: int
    chosen: str  # the method whose confusion matrix is plotted
    choose: Literal["in_sample", "held_out"]  # the shipped group: least log-loss on the rows fitted on, or held out
    target_precision: float  # each method's minimum confidence: the lowest at which validation's rows are this precise

    def __post_init__(self):
        if isinstance(self.members, str):
            require(self.members == "all", "members", "all, or a list of train.runs names and head-<model>", self.members)
        else:
            for name in self.members:
                require(bool(_MEMBER.fullmatch(name)), "members", "names of train.runs or head-<model>", name)
        for name in self.optimisers:
            require(name in OPTIMISERS, "optimisers", f"names from {sorted(OPTIMISERS)}", name)
        require(self.population >= 4, "population", "an integer >= 4", self.population)
        require(self.iterations >= 1, "iterations", "an integer >= 1", self.iterations)
        require(0 < self.target_precision <= 1, "target_precision", "a share in (0, 1]", self.target_precision)
        methods = ["average", "maximum", "vote", "val_weighted", "simplex", *(f"swarm_{o}" for o in self.optimisers)]
        require(self.chosen in methods, "chosen", f"one of {methods}", self.chosen)


def combine(probs: np.ndarray, method: str, weights: np.ndarray | None = None) -> np.ndarray:
    """Scores (n, n_classes) whose argmax is the ensemble's prediction.

    probs : (n_runs, n, n_classes) each run's probabilities
    """
    if method == "maximum":
        return probs.max(axis=0)
    if method == "vote":
        votes = np.zeros(probs.shape[1:])
        np.add.at(votes, (np.arange(probs.shape[1])[None, :], probs.argmax(axis=2)), 1)
        # Ties go to the class with the largest summed probability (a fraction below one vote).
        return votes + probs.sum(axis=0) / (probs.shape[0] + 1)
    if weights is None:
        weights = np.full(probs.shape[0], 1 / probs.shape[0])
    return np.tensordot(weights, probs, axes=1)


def normalise(x: np.ndarray) -> np.ndarray:
    """Non-negative weights summing to 1 (uniform if all are zero)."""
    x = np.maximum(x, 0)
    total = x.sum()
    return x / total if total > 0 else np.full_like(x, 1 / len(x))


def as_probabilities(scores: np.ndarray) -> np.ndarray:
    """A method's scores (n, n_classes) as rows summing to 1: ``maximum`` and ``vote`` give scores, not probabilities."""
    return scores / scores.sum(axis=1, keepdims=True)


def _true_class(rows: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(n_members, n) each member's probability of each row's true class: all a weighted log-loss needs."""
    return rows[:, np.arange(len(labels)), labels]


def fit_weights(rows: np.ndarray, labels: np.ndarray, cfg: EnsembleConfig, optimiser: str) -> tuple[np.ndarray, int]:
    """Swarm-fitted weights (n_members,) minimising the log-loss of the weighted mean on validation rows; returns
    (weights, fitness calls).

    rows : (n_members, n, n_classes) each member's validation probabilities (:func:`validation_rows`)
    """
    true = _true_class(rows, labels)

    def fitness(x: np.ndarray) -> float:
        return float(-np.mean(np.log(np.clip(normalise(x) @ true, EPS, 1))))

    rng = np.random.default_rng([cfg.seed, sorted(OPTIMISERS).index(optimiser)])
    result = OPTIMISERS[optimiser](fitness, rows.shape[0], rng=rng, population=cfg.population, iterations=cfg.iterations)
    return normalise(result.x), result.calls


def fit_simplex(rows: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, int]:
    """The weights (n_members,) of least validation log-loss on the simplex, and the loss evaluations it took: the
    reference the swarms are judged against.

    The log-loss of a weighted mean is convex in the weights, so a quasi-Newton search over a softmax
    parameterisation, started from equal weights, finds the optimum without a seed.
    """
    true = _true_class(rows, labels)

    def loss_and_gradient(z: np.ndarray) -> tuple[float, np.ndarray]:
        w = softmax(z)
        mixed = np.clip(w @ true, EPS, 1)
        by_weight = -np.mean(true / mixed, axis=1)
        return float(-np.mean(np.log(mixed))), w * (by_weight - w @ by_weight)

    result = minimize(loss_and_gradient, np.zeros(rows.shape[0]), jac=True, method="L-BFGS-B")
    return softmax(result.x), int(result.nfev)


def validation_rows(probs: np.ndarray, index: pd.DataFrame, test_copies: TestCopies) -> tuple[np.ndarray, np.ndarray]:
    """The validation rows the ensemble fits on and chooses by, of the kind test scores: one row per clip, clips
    sorted by id, and their labels.

    probs : (n_members, n_val_files, n_classes), rows aligned with ``index``
    test_copies : ``original`` → each clip's original recording (copy 0); ``all`` → its mean over its copies
    """
    if test_copies == "all":
        return _clip_level_runs(probs, index)
    originals = np.flatnonzero(scored_like_test(index, test_copies))
    order = originals[np.argsort(index["clip_id"].to_numpy()[originals], kind="stable")]
    return probs[:, order], index["label"].to_numpy()[order]


HELD_OUT_GROUPS = 4  # ensemble.choose: held_out deals validation's sources into this many groups


def validation_sources(index: pd.DataFrame) -> np.ndarray:
    """Each :func:`validation_rows` row's source recording: one per clip, clips sorted by id (both kinds of row)."""
    return index.drop_duplicates("clip_id").sort_values("clip_id", kind="stable")["source_id"].astype(str).to_numpy()


def source_groups(sources: np.ndarray, seed: int) -> np.ndarray | None:
    """Each row's group, 0 … :data:`HELD_OUT_GROUPS` - 1, its source recording's, the sources dealt in a seeded
    order so that a recording never straddles two groups; None when there are too few sources to deal."""
    distinct = np.random.default_rng(seed).permutation(np.unique(np.asarray(sources, dtype=str)))
    if len(distinct) < HELD_OUT_GROUPS:
        return None
    group_of = {s: i % HELD_OUT_GROUPS for i, s in enumerate(distinct)}
    return np.array([group_of[s] for s in np.asarray(sources, dtype=str)])


def held_out_log_loss(rows: np.ndarray, labels: np.ndarray, sources: np.ndarray, seed: int) -> float | None:
    """The log-loss of these members' simplex-weighted mean on rows it was not fitted on: each of
    :func:`source_groups` scored with weights fitted on the others, pooled. None when there are too few sources.

    rows : (n_members, n, n_classes); labels, sources : (n,)
    """
    groups = source_groups(sources, seed)
    if groups is None:
        return None
    mixed = np.empty(rows.shape[1:], dtype=np.float64)
    for g in range(HELD_OUT_GROUPS):
        fit, out = groups != g, groups == g
        weights = fit_simplex(rows[:, fit], labels[fit])[0] if len(rows) > 1 else np.ones(1)
        mixed[out] = np.tensordot(weights, rows[:, out], axes=1)
    return round(cross_entropy(mixed, labels), 6)


def member_names(cfg: EnsembleConfig, runs: list[str], models: list[str], params_file: str) -> list[str]:
    """The members' folder names: ``ensemble.members``, each one checked against train.runs and embed.models."""
    available = runs + [f"head-{model}" for model in models]
    if cfg.members == "all":
        chosen = available
    else:
        chosen = list(cfg.members)
        for name in chosen:
            if name not in available:
                raise ConfigError(
                    f"{params_file}: ensemble.members: {name}: not trained by this params file; expected members "
                    f"among {available} (train.runs, embed.models)"
                )
    if len(chosen) < 2:
        raise ConfigError(
            f"{params_file}: ensemble.members: expected at least 2 members to ensemble, got {chosen} (train.runs, embed.models)"
        )
    return chosen


def is_pretrained(name: str) -> bool:
    """A head on embeddings from a model trained on outside data, rather than a CNN run trained from scratch."""
    return name.startswith("head-")


@dataclass(frozen=True)
class Runs:
    """The members' predictions: CNN runs and heads alike."""

    names: list[str]
    # (n_members, n_val_files, n_classes), rows as validation's index. A head predicts only the files of the kind
    # test scores (the embed stage embeds no others): NaN on the rest, which validation_rows never reads.
    val: np.ndarray
    test: np.ndarray  # (n_members, n_test_files, n_classes)
    metrics: list[dict]

    def predict_every_file(self) -> bool:
        return not np.isnan(self.val).any()

    def subset(self, members: list[int]) -> Runs:
        return Runs([self.names[i] for i in members], self.val[members], self.test[members], [self.metrics[i] for i in members])

    def groups(self) -> dict[str, list[int]]:
        """Member positions per group (module docstring): only groups with members; one per architecture only if
        the runs have several, ``all`` only if it differs from both of its parts."""
        pretrained = [i for i, name in enumerate(self.names) if is_pretrained(name)]
        scratch = [i for i, name in enumerate(self.names) if not is_pretrained(name)]
        architectures: dict[str, list[int]] = {}
        for i in scratch:
            architectures.setdefault(self.metrics[i].get("architecture", "unrecorded"), []).append(i)
        groups = architectures if len(architectures) > 1 else {}
        groups |= {SCRATCH: scratch, PRETRAINED: pretrained}
        if scratch and pretrained:
            groups[ALL] = list(range(len(self.names)))
        return {name: members for name, members in groups.items() if members}


def load_runs(folders: list[Path], val_index: pd.DataFrame, test_copies: TestCopies) -> Runs:
    """Each member folder's predictions, validation's aligned with ``val_index`` (:class:`Runs`)."""
    scored = scored_like_test(val_index, test_copies)
    val, test, metrics = [], [], []
    for folder in folders:
        stage = "head" if is_pretrained(folder.name) else "train"
        require_inputs(
            [folder / n for n in ("val_probs.npy", "test_probs.npy", "metrics.json")], f"a finished {stage} stage (dvc repro {stage})"
        )
        probs = load_array(folder / "val_probs.npy")
        if len(probs) == scored.sum() < len(val_index):
            every_file = np.full((len(val_index), *probs.shape[1:]), np.nan, dtype=probs.dtype)
            every_file[scored] = probs
            probs = every_file
        elif len(probs) != len(val_index):
            raise DataError(
                f"{folder / 'val_probs.npy'}: {len(probs)} rows; expected one per validation file ({len(val_index)}) or "
                f"per file of the kind test scores ({scored.sum()}), from the same data version"
            )
        val.append(probs)
        test.append(load_array(folder / "test_probs.npy"))
        metrics.append(json.loads((folder / "metrics.json").read_text()))
    shapes = {(v.shape, t.shape) for v, t in zip(val, test)}
    if len(shapes) != 1:
        raise DataError(f"{', '.join(map(str, folders))}: members predict different shapes {sorted(shapes)}; expected one data version")
    return Runs([f.name for f in folders], np.stack(val), np.stack(test), metrics)


def _clip_level_runs(probs: np.ndarray, index: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(n_runs, n_clips, n_classes) clip-averaged probabilities, and the clips' labels."""
    per_run = [clip_level(p, index) for p in probs]
    return np.stack([mean for _, mean, _ in per_run]), per_run[0][2]


def ensemble_group(
    runs: Runs, val_index: pd.DataFrame, test_index: pd.DataFrame, cfg: EnsembleConfig, test_copies: str
) -> tuple[dict, pd.DataFrame]:
    """Every method's weights and scores over these members, and a table of clip-level test labels and predictions
    per method. Weights are fitted on :func:`validation_rows` only."""
    rows, y_rows = validation_rows(runs.val, val_index, test_copies)
    y_val, y_test = val_index["label"].to_numpy(), test_index["label"].to_numpy()
    clip_test, y_test_clip = _clip_level_runs(runs.test, test_index)
    every_file = runs.predict_every_file()  # else every validation file's accuracy is undefined (None)

    plan: dict[str, tuple[str, np.ndarray | None, int, float]] = {}
    for method in ("average", "maximum", "vote"):
        plan[method] = (method, None, 0, 0.0)
    plan["val_weighted"] = ("weighted", normalise(np.array([accuracy(r, y_rows) for r in rows])), 0, 0.0)
    if len(runs.names) == 1:  # every method is the member itself
        plan = {"average": plan["average"]}
    fitters = {"simplex": lambda: fit_simplex(rows, y_rows)} | {
        f"swarm_{o}": lambda o=o: fit_weights(rows, y_rows, cfg, o) for o in cfg.optimisers
    }
    for method, fit in fitters.items() if len(runs.names) > 1 else ():
        start = time.perf_counter()
        weights, calls = fit()
        plan[method] = ("weighted", weights, calls, time.perf_counter() - start)

    results = {}
    predictions = pd.DataFrame({"label": y_test_clip})
    for method, (kind, weights, calls, seconds) in plan.items():
        scores = combine(clip_test, kind, weights)
        predictions[method] = scores.argmax(axis=1)
        on_rows = as_probabilities(combine(rows, kind, weights))
        test_probs = as_probabilities(scores)
        results[method] = {
            "val_log_loss": round(cross_entropy(on_rows, y_rows), 6),
            "val_accuracy": accuracy(on_rows, y_rows),
            "val_file_accuracy": accuracy(combine(runs.val, kind, weights), y_val) if every_file else None,
            "test_clip_accuracy": accuracy(scores, y_test_clip),
            "test_file_accuracy": accuracy(combine(runs.test, kind, weights), y_test),
            "weights": None if weights is None else [round(float(w), 6) for w in weights],
            "calls": calls,
            "seconds": round(seconds, 3),
            "calibration": calibrate(on_rows, y_rows, test_probs, y_test_clip, cfg.target_precision),
        }
    return results, predictions


def ensemble(
    runs: Runs, val_index: pd.DataFrame, test_index: pd.DataFrame, cfg: EnsembleConfig, test_copies: str
) -> tuple[dict, pd.DataFrame]:
    """Every group's methods (module docstring), the best on validation, and the clip-level test predictions of
    every method over every member."""
    groups, predictions = {}, None
    rows, y_rows = validation_rows(runs.val, val_index, test_copies)
    sources = validation_sources(val_index) if cfg.choose == "held_out" else None
    for group, members in runs.groups().items():
        methods, predictions = ensemble_group(runs.subset(members), val_index, test_index, cfg, test_copies)
        held_out = held_out_log_loss(rows[members], y_rows, sources, cfg.seed) if cfg.choose == "held_out" else None
        groups[group] = {"members": [runs.names[i] for i in members], "methods": methods, "held_out_log_loss": held_out}
    # What predict and the registry use: the group of least held-out log-loss (ensemble.choose: held_out, when
    # validation has the sources to deal) or every group's, then the method of least validation log-loss among the
    # forecasts, the first on ties.
    chosen_by = "held_out" if all(g["held_out_log_loss"] is not None for g in groups.values()) else "in_sample"
    candidates = [min(groups, key=lambda g: groups[g]["held_out_log_loss"])] if chosen_by == "held_out" else list(groups)
    forecasts = [(g, m) for g in candidates for m in groups[g]["methods"] if m not in SCORES_ONLY]
    best = min(forecasts, key=lambda gm: groups[gm[0]]["methods"][gm[1]]["val_log_loss"])
    single = {k: [m[k] for m in runs.metrics] for k in ("test_clip_accuracy", "test_file_accuracy", "val_file_accuracy")}
    single["val_log_loss"] = [round(cross_entropy(r, y_rows), 6) for r in rows]
    single["val_accuracy"] = [accuracy(r, y_rows) for r in rows]
    report = {
        "members": runs.names,
        "pretrained_members": [n for n in runs.names if is_pretrained(n)],
        "validation_rows": {"kind": "clip means" if test_copies == "all" else "originals", "rows": len(y_rows)},
        "single_members": single,
        "groups": groups,
        "best": {"group": best[0], "method": best[1], "chosen_by": chosen_by},
    }
    return report, predictions


def every_member(report: dict) -> str:
    """The group of every member: ``all``, or the one group there is."""
    return list(report["groups"])[-1]


def mean_se(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=float)
    return float(a.mean()), float(a.std(ddof=1) / np.sqrt(len(a))) if len(a) > 1 else 0.0


GROUP_TITLES = {
    SCRATCH: "From scratch: every trained run",
    PRETRAINED: "Pretrained on outside data: heads on embeddings only",
    ALL: "All members: trained runs and pretrained heads",
}


def group_title(group: str) -> str:
    return GROUP_TITLES.get(group, f"From scratch: the {group} runs only")


def markdown(report: dict) -> str:
    keys = ("val_log_loss", "val_accuracy", "test_clip_accuracy", "test_file_accuracy")
    cell = lambda key, value: f"{value:.4f}" if key == "val_log_loss" else f"{100 * value:.2f} %"
    single = dict(zip(report["members"], zip(*(report["single_members"][k] for k in keys))))
    rows = report["validation_rows"]
    row = "original recording" if rows["kind"] == "originals" else "mean over its copies"
    sections = [
        f"Validation: {rows['rows']} rows, each validation clip's {row}, the kind of row test scores. Weights are fitted, "
        "and the group and method chosen among the weighted means, by least validation log-loss (maximum and vote give "
        "scores, not probabilities: their log-loss is shown, but they are not chosen)."
    ]
    for group, g in report["groups"].items():
        lines = [
            f"## {group_title(group)}",
            "",
            "| Model | Val log-loss | Val accuracy | Test accuracy, clip level | Test accuracy, file level |",
            "|---|---:|---:|---:|---:|",
        ]
        if len(g["members"]) > 1:
            stats = [mean_se([single[name][i] for name in g["members"]]) for i in range(len(keys))]
            cells = " | ".join(f"{cell(k, m)} ± {cell(k, s)}" for k, (m, s) in zip(keys, stats))
            lines.append(f"| {len(g['members'])} single members (mean ± SE) | {cells} |")
        for name in g["members"]:
            lines.append(f"| {name} | " + " | ".join(cell(k, a) for k, a in zip(keys, single[name])) + " |")
        for method, r in g["methods"].items() if len(g["members"]) > 1 else ():
            lines.append(f"| ensemble: {method} | " + " | ".join(cell(k, r[k]) for k in keys) + " |")
        sections.append("\n".join(lines))
    best = report["best"]
    held_out = {g: v.get("held_out_log_loss") for g, v in report["groups"].items()}
    if best.get("chosen_by") == "held_out":
        scores = ", ".join(f"{g.replace('_', ' ')} {v:.4f}" for g, v in held_out.items())
        sections.append(f"Groups by held-out validation log-loss (ensemble.choose: held_out): {scores}.")
    sections.append(f"Best on validation: `{best['method']}` over {best['group'].replace('_', ' ')} members.")
    sections.append(calibration_text(report["groups"][best["group"]]["methods"][best["method"]]["calibration"]))
    return "\n\n".join(sections) + "\n"


def calibration_text(c: dict) -> str:
    """What calibrating the shipped method did, in a sentence or three."""
    precise = f"{100 * c['target_precision']:g} % precise"
    if c["min_confidence"] is None:
        threshold = f"No threshold makes validation's rows {precise}: no minimum confidence is applied."
    else:
        precision = "none kept" if c["test_precision"] is None else f"{100 * c['test_precision']:.1f} % of them right"
        threshold = (
            f"Minimum confidence {c['min_confidence']:.4f} (the lowest at which validation's rows are {precise}): "
            f"it keeps {100 * c['test_kept']:.1f} % of test clips, {precision}."
        )
    return (
        f"Calibration: temperature {c['temperature']:.3f}, fitted on validation's rows by log-loss. Expected calibration "
        f"error (10 bins) on test clips {c['test_ece'][0]:.3f} before, {c['test_ece'][1]:.3f} after; on validation "
        f"{c['val_ece'][0]:.3f} → {c['val_ece'][1]:.3f}. {threshold}"
    )

"""Tuning: an Optuna study of the CNN's hyperparameters over ``fit_run``, with pruning and shared storage."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import socket
import time
import typing
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from audioclass import tracking
from audioclass.config import from_mapping, require
from audioclass.dataset import Data, Split, load_data
from audioclass.errors import ConfigError, first_line
from audioclass.outputs import atomic_file
from audioclass.tables import json_text
from audioclass.training import FitParams, Hyperparameters, ModelParams, fit_run
from audioclass.urls import masked, masked_text, password_of

log = logging.getLogger(__name__)

STORAGE_ENV = "AUDIOCLASS_OPTUNA_STORAGE"
GROUPS = {"model": ModelParams, "fit": FitParams}
PARENT_ATTR = "mlflow_parent_run_id"
PLOTS = ("optimization_history.png", "param_importances.png")


@dataclass(frozen=True)
class Dimension:
    """One tuned key: ``choices`` (categorical), or ``low``..``high`` (integers for an integer key)."""

    group: str  # "model" or "fit"
    name: str
    choices: tuple | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False

    @property
    def key(self) -> str:
        return f"{self.group}.{self.name}"

    def extremes(self) -> tuple:
        return self.choices if self.choices is not None else (self.low, self.high)

    def suggest(self, trial: Any) -> Any:
        if self.choices is not None:
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.integer:
            return trial.suggest_int(self.key, self.low, self.high, log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, log=self.log)


def parse_space(space: dict) -> tuple[Dimension, ...]:
    """``{"model": {"width": [8, 16]}, "fit": {"learning_rate": {"low": 1e-3, "high": 1e-2, "log": true}}}``."""
    dims = []
    for group, entries in space.items():
        require(group in GROUPS, f"space.{group}", f"one of {sorted(GROUPS)}", group)
        require(isinstance(entries, dict), f"space.{group}", "a mapping of keys to ranges or choices", entries)
        hints = typing.get_type_hints(GROUPS[group])
        for name, spec in entries.items():
            key = f"space.{group}.{name}"
            require(name in hints, key, f"a key of train.{group}: one of {list(hints)}", name)
            if isinstance(spec, list):
                require(len(spec) >= 1, key, "a non-empty list of choices", spec)
                dims.append(Dimension(group, name, choices=tuple(spec)))
                continue
            require(
                isinstance(spec, dict) and {"low", "high"} <= set(spec) <= {"low", "high", "log"},
                key,
                "a list of choices or {low, high} with an optional log: true",
                spec,
            )
            low, high, log_ = spec["low"], spec["high"], spec.get("log", False)
            numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high))
            require(numbers and low < high, key, "numbers with low < high", spec)
            integer = hints[name] is int
            require(not integer or all(isinstance(v, int) for v in (low, high)), key, "integer bounds for an integer key", spec)
            require(isinstance(log_, bool) and (not log_ or low > 0), key, "log: true only with low > 0", spec)
            dims.append(Dimension(group, name, low=low, high=high, log=log_, integer=integer))
    require(len(dims) >= 1, "space", "at least one key to tune", space)
    return tuple(dims)


@dataclass(frozen=True)
class TuneConfig:
    enabled: bool  # false: no trials; train uses train.model / train.fit as written
    study: str  # the study's name, before the hash of what shapes its scores
    storage: str | None  # null: sqlite:///<project>/optuna.db; $AUDIOCLASS_OPTUNA_STORAGE overrides
    trials: int  # the study's total of finished (complete or pruned) trials
    timeout_minutes: float | None  # no new trial starts after this; null: no limit
    seed: int  # the sampler's seed, the data subset's and every trial's training seed
    data_fraction: float  # of the training clips, per class, that each trial trains on
    trial_epochs: int | None  # cap on each trial's epochs; null: fit.epochs
    startup_trials: int  # random trials before TPE models the space; the pruner waits for as many
    warmup_epochs: int  # epochs a trial always gets before it may be pruned
    space: dict

    def __post_init__(self):
        require(len(self.study) >= 1 and "/" not in self.study, "study", "a non-empty name without '/'", self.study)
        # params.yaml is in git and in dvc's output: a URL with a password belongs in the environment.
        require(
            self.storage is None or password_of(self.storage) is None,
            "storage",
            f"a URL without a password (set the whole URL in ${STORAGE_ENV} instead)",
            masked(self.storage or ""),
        )
        require(self.trials >= 1, "trials", "an integer >= 1", self.trials)
        require(self.timeout_minutes is None or self.timeout_minutes > 0, "timeout_minutes", "minutes > 0 or null", self.timeout_minutes)
        require(0 < self.data_fraction <= 1, "data_fraction", "a fraction in (0, 1]", self.data_fraction)
        require(self.trial_epochs is None or self.trial_epochs >= 1, "trial_epochs", "an integer >= 1 or null", self.trial_epochs)
        require(self.startup_trials >= 0, "startup_trials", "an integer >= 0", self.startup_trials)
        require(self.warmup_epochs >= 0, "warmup_epochs", "an integer >= 0", self.warmup_epochs)
        parse_space(self.space)

    @property
    def dimensions(self) -> tuple[Dimension, ...]:
        return parse_space(self.space)


def check_space(cfg: TuneConfig, base: Hyperparameters, source: str) -> None:
    """Every choice and bound must make valid hyperparameters: the right type, in range (e.g. no dropout of 1.0)."""
    for dim in cfg.dimensions:
        for value in dim.extremes():
            try:
                from_mapping(GROUPS[dim.group], {**dataclasses.asdict(getattr(base, dim.group)), dim.name: value})
            except ConfigError as err:
                message = str(err).split(": ", 1)[1]  # drop the key: the space's key is the one to name
                raise ConfigError(f"{source}: tune.space.{dim.key}: {message}") from None


def trial_hyperparameters(cfg: TuneConfig, base: Hyperparameters, values: dict[str, Any]) -> Hyperparameters:
    """The base with ``values`` (``{"model.width": 24, …}``) applied, epochs capped by ``trial_epochs``."""
    groups: dict[str, dict] = {"model": {}, "fit": {}}
    for key, value in values.items():
        group, name = key.split(".", 1)
        groups[group][name] = value
    model = dataclasses.replace(base.model, **groups["model"])
    fit = dataclasses.replace(base.fit, **groups["fit"])
    if cfg.trial_epochs is not None:
        fit = dataclasses.replace(fit, epochs=min(fit.epochs, cfg.trial_epochs))
    return Hyperparameters(model, fit)


def subset(split: Split, fraction: float, seed: int) -> Split:
    """A stratified ``fraction`` of the split's clips, with every file (augmented copy) of each."""
    if fraction >= 1:
        return split
    clips = split.index.drop_duplicates("clip_id")
    rng = np.random.default_rng(seed)
    keep: list[str] = []
    for _, group in clips.groupby("label", sort=True):
        keep += list(rng.choice(group["clip_id"].to_numpy(), max(1, round(fraction * len(group))), replace=False))
    mask = split.index["clip_id"].isin(keep).to_numpy()
    return Split(split.x[mask], split.index[mask].reset_index(drop=True))


def study_name(cfg: TuneConfig, base: Hyperparameters, data_folder: Path) -> str:
    """``tune.study`` plus a hash of the trials' inputs: same inputs, same study, whatever the budget."""
    shaping = {
        "space": cfg.space,
        "base": dataclasses.asdict(trial_hyperparameters(cfg, base, {})),
        "data_fraction": cfg.data_fraction,
        "seed": cfg.seed,
    }
    digest = hashlib.sha256(json.dumps(shaping, sort_keys=True).encode())
    for name in ("train", "val"):
        for file in ("index.csv", "x.npy"):
            with open(data_folder / name / file, "rb") as f:
                while chunk := f.read(1 << 24):
                    digest.update(chunk)
    return f"{cfg.study}-{digest.hexdigest()[:10]}"


def storage_url(cfg: TuneConfig) -> tuple[str, str]:
    """(url, where it came from) for error messages."""
    if os.environ.get(STORAGE_ENV):
        return os.environ[STORAGE_ENV], f"${STORAGE_ENV}"
    if cfg.storage:
        return cfg.storage, "tune.storage"
    return f"sqlite:///{tracking.project_root() / 'optuna.db'}", "the default storage"


def open_storage(url: str, source: str) -> Any:
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    try:
        if url.startswith("journal:"):
            path = Path(url.removeprefix("journal:"))
            return JournalStorage(JournalFileBackend(str(path if path.is_absolute() else tracking.project_root() / path)))
        # Several local workers can share one SQLite file: wait for its write lock rather than fail.
        engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite:") else {}
        with tracking.creation_lock(url):
            return optuna.storages.RDBStorage(url, engine_kwargs=engine)
    except Exception as err:  # noqa: BLE001 - any driver's failure becomes one line naming the setting
        raise ConfigError(f"{source}: cannot open Optuna storage {masked(url)!r}: {masked_text(first_line(err), url)}") from None


def open_study(name: str, storage: Any, cfg: TuneConfig, *, worker: bool) -> tuple[Any, bool]:
    """(study, whether this process created it); creating is atomic in every storage, so one worker wins."""
    import optuna

    pruner = optuna.pruners.MedianPruner(n_startup_trials=cfg.startup_trials, n_warmup_steps=cfg.warmup_epochs)
    try:
        study, created = optuna.create_study(study_name=name, storage=storage, pruner=pruner, direction="maximize"), True
    except optuna.exceptions.DuplicatedStudyError:
        study, created = optuna.load_study(study_name=name, storage=storage, pruner=pruner), False
    # Seeding by the trials so far keeps a resumed study from replaying its first proposals;
    # extra workers add entropy so that two of them never propose in lockstep.
    entropy = [cfg.seed, len(study.trials)] + ([os.getpid(), time.time_ns() % 2**32] if worker else [])
    seed = int(np.random.SeedSequence(entropy).generate_state(1)[0])
    study.sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=cfg.startup_trials)
    return study, created


def parent_run(study: Any, cfg: TuneConfig, *, wait: bool) -> str:
    """The study's MLflow run: made once, by the study's creator; other workers ``wait`` for its id."""
    deadline = time.monotonic() + (60 if wait else 0)
    while PARENT_ATTR not in study.user_attrs and time.monotonic() < deadline:
        time.sleep(0.5)
    run_id = study.user_attrs.get(PARENT_ATTR)
    if run_id and tracking.run_exists(run_id):
        return run_id
    params = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("trials", "timeout_minutes", "storage")}
    with tracking.run(f"tune-{study.study_name}", params, tags={"pipeline_role": "tune", "optuna_study": study.study_name}) as active:
        pass
    study.set_user_attr(PARENT_ATTR, active.info.run_id)
    return active.info.run_id


def objective(cfg: TuneConfig, base: Hyperparameters, data: Data, worker: str) -> Any:
    """The function Optuna maximises: validation accuracy at a trial's best epoch, each trial a nested MLflow run."""
    import keras
    import optuna
    from optuna_integration import KerasPruningCallback

    def score(trial: Any) -> float:
        chosen = trial_hyperparameters(cfg, base, {dim.key: dim.suggest(trial) for dim in cfg.dimensions})
        params = {
            "trial": trial.number,
            "model": dataclasses.asdict(chosen.model),
            "fit": dataclasses.asdict(chosen.fit),
            "data_fraction": cfg.data_fraction,
            "seed": cfg.seed,
        }
        tags = {"pipeline_role": "tune_trial", "optuna_study": trial.study.study_name, "optuna_trial": trial.number, "tune_worker": worker}
        pruned = None
        with tracking.run(f"trial-{trial.number}", params, nested=True, tags={k: str(v) for k, v in tags.items()}) as active:
            trial.set_user_attr("mlflow_run_id", active.info.run_id)
            trial.set_user_attr("worker", worker)
            pruning = KerasPruningCallback(trial, "val_accuracy")
            try:
                _, history = fit_run(chosen.model, chosen.fit, data, seed=cfg.seed, callbacks=(tracking.epoch_logger(), pruning), verbose=0)
            except optuna.TrialPruned as err:
                pruned = err
            finally:
                keras.backend.clear_session()  # each trial's graph would otherwise stay in memory
            if pruned is None:
                # fit_run restores the weights of the lowest validation loss; score that epoch.
                value = float(history["val_accuracy"][history["val_loss"].idxmin()])
                tracking.log_metrics({"objective_val_accuracy": value})
            tracking.set_tags({"trial_state": "PRUNED" if pruned else "COMPLETE"})
        if pruned is not None:
            raise pruned  # outside the MLflow run, so the run ends FINISHED and tagged, not FAILED
        return value

    return score


def trial_data(cfg: TuneConfig, folder: Path) -> Data:
    """Train and validation splits only (the test split never reaches a trial), the train split subset."""
    data = load_data(folder, splits=("train", "val"), on_disk=True)
    return dataclasses.replace(data, train=subset(data.train, cfg.data_fraction, cfg.seed))


def optimize(
    cfg: TuneConfig, base: Hyperparameters, data: Data, name: str, storage: Any, *, worker: bool = False, worker_trials: int | None = None
) -> Any:
    """Run trials in the named study until it has ``cfg.trials`` finished ones (or ``worker_trials`` more)."""
    import optuna
    from optuna.trial import TrialState

    finished = (TrialState.COMPLETE, TrialState.PRUNED)
    study, created = open_study(name, storage, cfg, worker=worker)
    done = len(study.get_trials(deepcopy=False, states=finished))
    budget = worker_trials if worker_trials is not None else max(0, cfg.trials - done)
    log.info("study %s: %d finished trials; running up to %d more", name, done, budget)
    if budget == 0:
        return study
    parent = parent_run(study, cfg, wait=not created)
    callbacks = [] if worker_trials is not None else [optuna.study.MaxTrialsCallback(cfg.trials, states=finished)]
    with tracking.resume(parent), warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.optimize(
            objective(cfg, base, data, f"{socket.gethostname()}:{os.getpid()}"),
            n_trials=budget,
            timeout=cfg.timeout_minutes * 60 if cfg.timeout_minutes else None,
            callbacks=callbacks,
            gc_after_trial=True,
            show_progress_bar=True,
        )
    return study


def trials_table(study: Any) -> pd.DataFrame:
    """One row per finished trial, in trial order; pruned trials have no value, only their last epoch's score."""
    from optuna.trial import TrialState

    rows = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        last = t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else np.nan
        rows.append(
            {
                "trial": t.number,
                "state": t.state.name,
                "value": t.value if t.state == TrialState.COMPLETE else np.nan,
                "last_val_accuracy": last,
                "epochs": len(t.intermediate_values),
                "seconds": round(t.duration.total_seconds(), 1) if t.duration else np.nan,
                **t.params,
            }
        )
    table = pd.DataFrame(rows).sort_values("trial").reset_index(drop=True) if rows else pd.DataFrame(columns=["trial", "state", "value"])
    table.insert(3, "best_value", table["value"].astype(float).cummax().ffill())
    return table


def importances(study: Any, seed: int) -> dict[str, float]:
    """fANOVA importance of each tuned key over the complete trials; empty when there are too few to tell."""
    import optuna
    from optuna.trial import TrialState

    if len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) < 2:
        return {}
    try:
        return optuna.importance.get_param_importances(study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=seed))
    except (RuntimeError, ValueError):  # e.g. every complete trial drew the same values
        return {}


def write_plots(study: Any | None, importance: dict[str, float], seed: int, out: Path) -> None:
    """Optuna's optimisation-history and importance plots; a note in their place where there is nothing to plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    import optuna.visualization.matplotlib as ovm

    def note(text: str) -> Any:
        fig, ax = plt.subplots(figsize=(5, 1.2))
        ax.axis("off")
        ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=10)
        return fig

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if study is None:
            figures = {name: note("Tuning is off (tune.enabled: false)") for name in PLOTS}
        else:
            evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
            figures = {
                "optimization_history.png": ovm.plot_optimization_history(study, target_name="validation accuracy").figure,
                "param_importances.png": ovm.plot_param_importances(study, evaluator=evaluator).figure
                if importance
                else note("Importances need 2 or more complete trials with different values"),
            }
    for name, fig in figures.items():
        fig.set_size_inches(7, 4)
        with atomic_file(out / name) as tmp:
            fig.savefig(tmp, format="png", dpi=90, bbox_inches="tight", metadata={"Software": None})
        plt.close(fig)


def best_hyperparameters(cfg: TuneConfig, base: Hyperparameters, study: Any) -> tuple[Hyperparameters, Any]:
    """The best complete trial's values on the base, with the full epochs (the cap is for trials only)."""
    from optuna.trial import TrialState

    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        raise ConfigError(f"tune: study {study.study_name} has no complete trial; raise tune.trials or tune.timeout_minutes")
    best = study.best_trial
    uncapped = dataclasses.replace(cfg, trial_epochs=None)
    return trial_hyperparameters(uncapped, base, best.params), best


def write_hyperparameters(chosen: Hyperparameters, header: list[str], path: Path) -> None:
    body = yaml.safe_dump({"model": dataclasses.asdict(chosen.model), "fit": dataclasses.asdict(chosen.fit)}, sort_keys=False)
    with atomic_file(path) as tmp:
        tmp.write_text("".join(f"# {line}\n" for line in header) + body)


def tune(cfg: TuneConfig, base: Hyperparameters, data_folder: Path, out: Path) -> dict[str, Any]:
    """Run the stage: the study (resumed or new) to ``cfg.trials``, then every output. Returns the metrics.

    Every output is written atomically (its folder made then), so a study that cannot start leaves no folder.
    """
    if not cfg.enabled:
        write_hyperparameters(
            base, ["Tuning is off (tune.enabled: false): train.model and train.fit as written."], out / "best_params.yaml"
        )
        for name in ("trials.csv", "importance.csv"):
            with atomic_file(out / name) as tmp:
                tmp.write_text("trial,state,value,best_value\n" if name == "trials.csv" else "param,importance\n")
        write_plots(None, {}, cfg.seed, out)
        metrics: dict[str, Any] = {"enabled": False}
    else:
        name = study_name(cfg, base, data_folder)
        study = optimize(cfg, base, trial_data(cfg, data_folder), name, open_storage(*storage_url(cfg)))
        chosen, best = best_hyperparameters(cfg, base, study)
        table = trials_table(study)
        importance = importances(study, cfg.seed)
        metrics = {
            "enabled": True,
            "best_val_accuracy": best.value,
            "best_trial": best.number,
            "trials_complete": int((table["state"] == "COMPLETE").sum()),
            "trials_pruned": int((table["state"] == "PRUNED").sum()),
            "study": name,
        }
        tuned = ", ".join(dim.key for dim in cfg.dimensions)
        write_hyperparameters(
            chosen,
            [
                f"Written by the tune stage: study {name}, best of {len(table)} finished trials ({metrics['trials_pruned']} pruned):",
                f"trial {best.number}, validation accuracy {best.value:.4f} on {cfg.data_fraction:.0%} of the training clips"
                + (f", at most {cfg.trial_epochs} epochs." if cfg.trial_epochs else "."),
                f"Tuned: {tuned}; the rest is train.model / train.fit.",
            ],
            out / "best_params.yaml",
        )
        with atomic_file(out / "trials.csv") as tmp:
            table.to_csv(tmp, index=False)
        with atomic_file(out / "importance.csv") as tmp:
            pd.DataFrame({"param": list(importance), "importance": list(importance.values())}).to_csv(tmp, index=False)
        write_plots(study, importance, cfg.seed, out)
        with tracking.resume(parent_run(study, cfg, wait=False)):
            tracking.set_tags({"best_trial": best.number, **{f"best.{k}": v for k, v in best.params.items()}})
            tracking.log_metrics(
                {"best_val_accuracy": best.value, "trials_complete": metrics["trials_complete"], "trials_pruned": metrics["trials_pruned"]},
                step=len(table),
            )
            for name_ in ("best_params.yaml", "trials.csv", "importance.csv", *PLOTS):
                tracking.log_artifact(out / name_)
    with atomic_file(out / "tune.json") as tmp:
        tmp.write_text(json_text(metrics))
    return metrics

"""Stage tune: the search space from params, study naming and resuming, pruning, MLflow nesting, concurrent workers."""

import concurrent.futures
import dataclasses
import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid

import mlflow
import optuna
import pandas as pd
import pytest
import yaml

from audioclass import tracking
from audioclass.config import file_config, load_params
from audioclass.dataset import load_data
from audioclass.errors import ConfigError
from audioclass.training import Hyperparameters
from audioclass.tuning import (
    STORAGE_ENV,
    TuneConfig,
    check_space,
    objective,
    open_storage,
    study_name,
    subset,
    trial_data,
    trial_hyperparameters,
    tune,
)
from audioclass.urls import password_of
from conftest import PROJECT, TINY_FIT, TINY_MODEL, band_spectrograms, config, write_spectrogram_folder

SPACE = {
    "model": {"width": [4, 6], "dropout": {"low": 0.0, "high": 0.5}},
    "fit": {"learning_rate": {"low": 0.003, "high": 0.03, "log": True}},
}
TINY = {
    "enabled": True,
    "trials": 3,
    "timeout_minutes": None,
    "data_fraction": 0.5,
    "trial_epochs": 2,
    "startup_trials": 1,
    "warmup_epochs": 0,
    "space": SPACE,
}
BASE = Hyperparameters(TINY_MODEL, dataclasses.replace(TINY_FIT, epochs=5, patience=3))


@pytest.fixture
def spectrograms(tmp_path):
    splits = {"train": band_spectrograms(24, 2, 0), "val": band_spectrograms(9, 2, 1), "test": band_spectrograms(9, 2, 2)}
    return write_spectrogram_folder(tmp_path / "spectrograms", splits)


@pytest.fixture
def stores(tmp_path, monkeypatch):
    """MLflow and Optuna stores of the test's own, with MLflow's artifacts under tmp_path."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv(STORAGE_ENV, f"journal:{tmp_path / 'optuna.journal'}")
    return tmp_path


def runs(tmp_path) -> pd.DataFrame:
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    return mlflow.search_runs(experiment_names=["audioclass"])


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"optimizer": {"lr": [1]}}, r"tune\.space\.optimizer: expected one of \['fit', 'model'\]"),
        ({"model": {"kernel": [3, 5]}}, r"tune\.space\.model\.kernel: expected a key of train\.model"),
        ({"fit": {"learning_rate": {"low": 0.1, "high": 0.01}}}, r"tune\.space\.fit\.learning_rate: expected numbers with low < high"),
        (
            {"fit": {"learning_rate": {"low": 0, "high": 0.1, "log": True}}},
            r"tune\.space\.fit\.learning_rate: expected log: true only with low > 0",
        ),
        ({"model": {"width": []}}, r"tune\.space\.model\.width: expected a non-empty list of choices"),
        ({"model": {"width": {"min": 4, "max": 8}}}, r"tune\.space\.model\.width: expected a list of choices or \{low, high\}"),
        ({}, r"tune\.space: expected at least one key to tune"),
    ],
)
def test_a_bad_search_space_is_named(space, message):
    params = load_params(PROJECT / "params.yaml")
    params["tune"]["space"] = space
    from audioclass.config import stage_config

    with pytest.raises(ConfigError, match=message):
        stage_config(TuneConfig, params, "tune")


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"model": {"dropout": {"low": 0.2, "high": 1.0}}}, r"tune\.space\.model\.dropout: expected a fraction in \[0, 1\), got 1\.0$"),
        (
            {"model": {"architecture": ["compact_cnn", "resnet"]}},
            r"tune\.space\.model\.architecture: expected one of \['book_cnn', 'compact_cnn', 'crnn', 'transformer'\], got 'resnet'$",
        ),
        ({"model": {"heads": {"low": 1, "high": 16}}}, r"tune\.space\.model\.heads: expected an integer in \[1, units = 8\], got 16$"),
        ({"fit": {"batch_size": [32, "64"]}}, r"tune\.space\.fit\.batch_size: expected an integer, got '64'$"),
    ],
)
def test_space_values_must_make_valid_hyperparameters(space, message):
    cfg = config(TuneConfig, "tune", space=space)
    with pytest.raises(ConfigError, match=r"^params\.yaml: " + message):
        check_space(cfg, BASE, "params.yaml")


def test_the_space_can_choose_the_architecture_and_the_sequence_models_keys():
    cfg = config(TuneConfig, "tune", space={"model": {"architecture": ["crnn", "transformer"], "units": [8, 16], "heads": [2, 4]}})
    check_space(cfg, BASE, "params.yaml")
    chosen = trial_hyperparameters(cfg, BASE, {"model.architecture": "transformer", "model.units": 16, "model.heads": 4})
    assert chosen.model == dataclasses.replace(BASE.model, architecture="transformer", units=16, heads=4) and chosen.fit == BASE.fit


def test_integer_keys_take_integer_ranges_and_float_keys_float_draws():
    with pytest.raises(ConfigError, match=r"space\.model\.width: expected integer bounds for an integer key"):
        config(TuneConfig, "tune", space={"model": {"width": {"low": 8.0, "high": 24}}})
    dims = config(TuneConfig, "tune", space={"model": {"dropout": {"low": 0, "high": 1}}}).dimensions
    (dropout,) = [d for d in dims if d.key == "model.dropout"]
    assert not dropout.integer  # a float key drawn from integer bounds is still a float
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    assert 0 < dropout.suggest(trial) < 1


def test_trials_cap_epochs_and_the_best_params_do_not():
    cfg = config(TuneConfig, "tune", **TINY)
    chosen = trial_hyperparameters(cfg, BASE, {"model.width": 6, "fit.learning_rate": 0.02})
    assert (chosen.model.width, chosen.model.depth, chosen.fit.learning_rate, chosen.fit.epochs) == (6, 2, 0.02, 2)
    uncapped = trial_hyperparameters(dataclasses.replace(cfg, trial_epochs=None), BASE, {"model.width": 6})
    assert uncapped.fit.epochs == BASE.fit.epochs


def test_subset_takes_whole_clips_stratified_and_deterministic():
    split = band_spectrograms(30, 4, 0)
    half = subset(split, 0.5, seed=1)
    clips = half.index.drop_duplicates("clip_id")
    assert clips.groupby("label").size().tolist() == [5, 5, 5]
    assert (half.index.groupby("clip_id").size() == 4).all()  # every copy of a chosen clip
    assert half.index.equals(subset(split, 0.5, seed=1).index)
    assert not half.index.equals(subset(split, 0.5, seed=2).index)


def test_study_name_follows_what_shapes_the_scores_not_the_budget(spectrograms):
    cfg = config(TuneConfig, "tune", **TINY)
    name = study_name(cfg, BASE, spectrograms)
    assert name.startswith("compact-cnn-")
    assert study_name(dataclasses.replace(cfg, trials=50, timeout_minutes=3.0), BASE, spectrograms) == name
    assert study_name(dataclasses.replace(cfg, data_fraction=1.0), BASE, spectrograms) != name
    assert study_name(cfg, dataclasses.replace(BASE, fit=dataclasses.replace(BASE.fit, patience=1)), spectrograms) != name
    index = spectrograms / "val" / "index.csv"
    index.write_text(index.read_text().replace("class0", "class0b"))
    assert study_name(cfg, BASE, spectrograms) != name


def test_tune_writes_what_train_reads_and_resumes_with_a_larger_budget(spectrograms, stores):
    cfg = config(TuneConfig, "tune", **TINY)
    out = stores / "reports" / "tune"
    metrics = tune(cfg, BASE, spectrograms, out)
    assert metrics["trials_complete"] + metrics["trials_pruned"] == 3
    table = pd.read_csv(out / "trials.csv")
    best = table.loc[table["value"].idxmax()]
    assert metrics["best_trial"] == best["trial"] and metrics["best_val_accuracy"] == pytest.approx(best["value"])
    chosen = file_config(Hyperparameters, out / "best_params.yaml")
    assert chosen.model.width == best["model.width"] and chosen.fit.learning_rate == pytest.approx(best["fit.learning_rate"])
    assert chosen.fit.epochs == BASE.fit.epochs and chosen.model.depth == BASE.model.depth  # untuned keys, uncapped epochs
    assert {p.name for p in out.iterdir()} == {
        "best_params.yaml",
        "tune.json",
        "trials.csv",
        "importance.csv",
        "optimization_history.png",
        "param_importances.png",
    }

    first = runs(stores)
    parent = first[first["tags.pipeline_role"] == "tune"]
    trials = first[first["tags.pipeline_role"] == "tune_trial"]
    assert len(parent) == 1 and len(trials) == 3
    assert (trials["tags.mlflow.parentRunId"] == parent["run_id"].iloc[0]).all()
    assert set(trials["tags.trial_state"]) <= {"COMPLETE", "PRUNED"} and (trials["status"] == "FINISHED").all()
    assert parent["tags.best_trial"].iloc[0] == str(metrics["best_trial"])
    complete = trials[trials["tags.trial_state"] == "COMPLETE"].iloc[0]
    assert len(mlflow.MlflowClient().get_metric_history(complete["run_id"], "val_accuracy")) >= 1  # per-epoch metrics

    tune(dataclasses.replace(cfg, trials=5), BASE, spectrograms, out)  # a larger budget: two more trials, same study
    assert len(pd.read_csv(out / "trials.csv")) == 5
    storage = open_storage(os.environ[STORAGE_ENV], "test")
    assert optuna.get_all_study_names(storage) == [metrics["study"]]
    again = runs(stores)
    assert len(again[again["tags.pipeline_role"] == "tune"]) == 1
    assert (again.loc[again["tags.pipeline_role"] == "tune_trial", "tags.mlflow.parentRunId"] == parent["run_id"].iloc[0]).sum() == 5


def test_tuning_off_passes_the_params_through_and_opens_no_study(spectrograms, stores):
    out = stores / "reports" / "tune"
    assert tune(config(TuneConfig, "tune", **{**TINY, "enabled": False}), BASE, spectrograms, out) == {"enabled": False}
    assert file_config(Hyperparameters, out / "best_params.yaml") == BASE
    assert not (stores / "optuna.journal").exists() and not (stores / "mlflow.db").exists()


def test_a_trial_the_pruner_stops_is_a_finished_mlflow_run_marked_pruned(spectrograms, stores):
    cfg = config(TuneConfig, "tune", **TINY)
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=1.1))  # prunes every trial
    study.optimize(objective(cfg, BASE, trial_data(cfg, spectrograms), "test-worker"), n_trials=1)
    assert study.trials[0].state == optuna.trial.TrialState.PRUNED and list(study.trials[0].intermediate_values) == [0]
    trial_run = runs(stores).iloc[0]
    assert trial_run["status"] == "FINISHED" and trial_run["tags.trial_state"] == "PRUNED"


def test_trial_data_never_loads_the_test_split(spectrograms):
    (spectrograms / "test" / "x.npy").unlink()
    cfg = config(TuneConfig, "tune", **TINY)
    data = trial_data(cfg, spectrograms)
    assert data.test is None and len(data.val.y) == 18 and len(data.train.y) == 24
    assert len(load_data(spectrograms, splits=("train", "val")).train.y) == 48


def postgres_url() -> str:
    url = os.environ.get("AUDIOCLASS_TEST_POSTGRES")
    if not url:
        pytest.skip("no PostgreSQL server: set AUDIOCLASS_TEST_POSTGRES (.ci/run starts one)")
    return url


@pytest.mark.parametrize("kind", ["journal", "postgresql"])
def test_two_workers_share_one_study_without_losing_or_repeating_trials(kind, spectrograms, tmp_path):
    storage = f"journal:{tmp_path / 'optuna.journal'}" if kind == "journal" else postgres_url()
    params = load_params(PROJECT / "params.yaml")
    params["train"]["model"], params["train"]["fit"] = dataclasses.asdict(BASE.model), dataclasses.asdict(BASE.fit)
    # A journal file is named in params.yaml; a database URL with its password, in the environment.
    params["tune"].update(TINY, study=f"test-{uuid.uuid4().hex[:8]}", storage=storage if kind == "journal" else None)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    env.pop(STORAGE_ENV, None)
    if kind == "postgresql":
        env[STORAGE_ENV] = storage
    budgets = (2, 3)
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "audioclass.stages.tune", "--data", str(spectrograms), "--worker", "--trials", str(n)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for n in budgets
    ]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs

    cfg = config(TuneConfig, "tune", **{**TINY, "study": params["tune"]["study"]})
    name = study_name(cfg, BASE, spectrograms)
    study = optuna.load_study(study_name=name, storage=open_storage(storage, "test"))
    numbers = sorted(t.number for t in study.trials)
    assert numbers == list(range(sum(budgets)))  # none lost, none repeated
    assert all(t.state.is_finished() and t.state != optuna.trial.TrialState.FAIL for t in study.trials)
    by_worker = pd.Series([t.user_attrs["worker"] for t in study.trials]).value_counts()
    assert sorted(by_worker.tolist()) == list(budgets)

    trials = runs(tmp_path).query("`tags.pipeline_role` == 'tune_trial'")
    assert sorted(trials["tags.optuna_trial"].astype(int)) == numbers
    assert trials["tags.tune_worker"].nunique() == 2 and trials["tags.mlflow.parentRunId"].nunique() == 1
    assert trials["run_id"].tolist() != [] and set(trials["run_id"]) == {t.user_attrs["mlflow_run_id"] for t in study.trials}
    password = password_of(storage)
    if password:  # .ci/run's database has a fresh random one: it reaches no output, MLflow param or tag, nor the study
        recorded = [*outputs, runs(tmp_path).to_csv(), json.dumps([t.user_attrs for t in study.trials]), json.dumps(study.user_attrs)]
        assert not [text for text in recorded if password in text]


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_workers_starting_together_on_an_empty_database_all_open_it(kind, tmp_path):
    # Unlocked, SQLite lost the race to create Optuna's tables ("already exists") in most runs of this test.
    for attempt in range(4):
        if kind == "sqlite":
            url = f"sqlite:///{tmp_path / f'optuna-{attempt}.db'}"
        else:  # a fresh, empty schema of the test database for each attempt
            import sqlalchemy

            schema = f"race_{uuid.uuid4().hex[:8]}"
            with sqlalchemy.create_engine(postgres_url()).begin() as connection:
                connection.execute(sqlalchemy.text(f"CREATE SCHEMA {schema}"))
            url = f"{postgres_url()}?options=-csearch_path%3D{schema}"
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            storages = list(pool.map(open_storage, [url] * 4, ["test"] * 4))
        assert {s.get_current_version() for s in storages} == {storages[0].get_head_version()}


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_one_process_at_a_time_holds_the_creation_lock(kind, tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}" if kind == "sqlite" else postgres_url()
    held, spans = threading.Event(), {}

    def hold(name, seconds):
        with tracking.creation_lock(url):
            start = time.monotonic()
            held.set()
            time.sleep(seconds)
            spans[name] = (start, time.monotonic())

    first = threading.Thread(target=hold, args=("first", 1.0))
    first.start()
    assert held.wait(30)
    hold("second", 0.0)
    first.join()
    assert spans["second"][0] >= spans["first"][1]


@pytest.mark.parametrize("url", ["postgresql+psycopg://nobody@127.0.0.1:9/none", "nonsense://somewhere"])
def test_an_unusable_storage_is_one_line_naming_the_setting(url):
    with pytest.raises(ConfigError, match=rf"^tune\.storage: cannot open Optuna storage '{re.escape(url)}': \S"):
        open_storage(url, "tune.storage")


def test_train_names_the_hyperparameters_file_when_it_is_wrong(tmp_path):
    from audioclass.stages.train import main

    chosen = tmp_path / "best_params.yaml"
    chosen.write_text(yaml.safe_dump({"model": {**dataclasses.asdict(BASE.model), "width": 0}, "fit": dataclasses.asdict(BASE.fit)}))
    args = [
        "--params",
        str(PROJECT / "params.yaml"),
        "--run",
        "run-1",
        "--data",
        str(tmp_path),
        "--hyperparameters",
        str(chosen),
        "--out",
        str(tmp_path / "run"),
        "--metrics",
        str(tmp_path / "m.json"),
        "--history",
        str(tmp_path / "h.csv"),
    ]
    with pytest.raises(ConfigError, match=rf"^{chosen}: model\.width: expected an integer >= 1, got 0$"):
        main(args)
    # A run's own changes are checked on top of the tuned values: 16 heads cannot share 8 units.
    chosen.write_text(yaml.safe_dump({"model": dataclasses.asdict(BASE.model), "fit": dataclasses.asdict(BASE.fit)}))
    params = load_params(PROJECT / "params.yaml")
    params["train"]["runs"]["t-1"] = {"seed": 1, "model": {"architecture": "transformer", "heads": 16}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(
        ConfigError,
        match=rf"^{tmp_path / 'params.yaml'}: train\.runs\.t-1\.model\.heads: expected an integer in \[1, units = 8\], got 16 "
        rf"\(on top of {chosen}\)$",
    ):
        main([*args[:1], str(tmp_path / "params.yaml"), *args[2:]])
    chosen.unlink()
    with pytest.raises(Exception, match=r"best_params\.yaml: missing; expected the tune stage's output \(dvc repro tune\)"):
        main(args)

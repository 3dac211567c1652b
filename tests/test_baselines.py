"""The study's baselines: raw 1D vectors (decimation per sample rate, scaling) and classical models on them."""

import json
import logging

import mlflow
import numpy as np
import pandas as pd
import pytest

from audioclass import audio
from audioclass.dataset import Data, Split
from audioclass.errors import ConfigError
from audioclass.estimators import ClassicalConfig, make_estimator
from audioclass.raw_vectors import RawVectorConfig, raw_vector, raw_vectors
from audioclass.stages.classical import classical
from conftest import config


@pytest.mark.parametrize(("sr", "step"), [(44100, 100), (22050, 50), (8820, 20)])
def test_raw_vectors_keep_the_same_span_and_length_at_any_rate(sr, step):
    cfg = config(RawVectorConfig, "raw_vectors")
    positions = cfg.positions(sr, 5 * sr)
    assert len(positions) == 882 and (np.diff(positions) == step).all()  # the study's every 100th sample at 44.1 kHz
    assert positions[-1] / sr < 2.0


def test_rates_that_do_not_divide_still_span_the_seconds():
    positions = config(RawVectorConfig, "raw_vectors").positions(16000, 80000)
    assert len(positions) == 882 and positions[0] == 0 and 31_900 < positions[-1] < 32_000


def test_raw_vector_scaling_matches_the_studys_int16_formula():
    int16 = np.array([-32768, -1, 0, 16384, 32767], dtype=np.int16)
    study = (int16.astype(np.float64) + 32768) / 65536
    np.testing.assert_allclose(raw_vector(int16 / 32768.0, np.arange(5)), study, atol=1e-7)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"rate": 9000.0}, r"raw_vectors\.rate: expected at most the sample rate \(8000 Hz\), got 9000\.0"),
        ({"seconds": 1.0}, r"raw_vectors\.seconds: expected at most the files' 0\.5 s, got 1\.0"),
    ],
)
def test_impossible_spans_and_rates_are_named(pipeline_inputs, tmp_path, change, message):
    with pytest.raises(ConfigError, match=message):
        raw_vectors(
            pipeline_inputs / "augmented",
            pipeline_inputs / "split.csv",
            config(RawVectorConfig, "raw_vectors", **change),
            tmp_path / "raw",
            jobs=1,
        )
    assert not (tmp_path / "raw").exists()


def test_stage_writes_per_split_vectors_aligned_with_their_files(pipeline_inputs, tmp_path):
    cfg = config(RawVectorConfig, "raw_vectors", seconds=0.4, rate=100.0, test_copies="all")
    counts = raw_vectors(pipeline_inputs / "augmented", pipeline_inputs / "split.csv", cfg, tmp_path / "raw", jobs=2)
    assert sum(counts.values()) == 100 and counts["test"] == 20
    for name in counts:
        x = np.load(tmp_path / "raw" / name / "x.npy")
        index = pd.read_csv(tmp_path / "raw" / name / "index.csv")
        assert x.shape == (counts[name], 40) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
        y, sr = audio.read_wav(pipeline_inputs / "augmented" / index["path"].iloc[-1])
        np.testing.assert_allclose(x[-1], (y[::80][:40] + 1) / 2, atol=1e-7)  # 8 kHz / 100 per second: every 80th
    serial = raw_vectors(pipeline_inputs / "augmented", pipeline_inputs / "split.csv", cfg, tmp_path / "serial", jobs=1)
    assert serial == counts
    for name in counts:
        assert (tmp_path / "raw" / name / "x.npy").read_bytes() == (tmp_path / "serial" / name / "x.npy").read_bytes()


def test_test_clips_keep_their_original_recording_as_the_cnns_do(pipeline_inputs, tmp_path):
    cfg = config(RawVectorConfig, "raw_vectors", seconds=0.4, rate=100.0)  # params.yaml's test_copies: original
    counts = raw_vectors(pipeline_inputs / "augmented", pipeline_inputs / "split.csv", cfg, tmp_path / "raw", jobs=1)
    test = pd.read_csv(tmp_path / "raw" / "test" / "index.csv")
    assert counts["test"] == len(test) == test["clip_id"].nunique() == 10 and (test["copy"] == 0).all()
    assert counts["train"] == 2 * pd.read_csv(tmp_path / "raw" / "train" / "index.csv")["clip_id"].nunique()


def vectors(n_clips: int, copies: int, seed: int) -> Split:
    """Class c shifts the mean of features 4c..4c+3; 3 classes, 12 features in [0, 1]."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_clips) % 3, copies)
    x = rng.uniform(0.3, 0.5, (len(labels), 12)).astype(np.float32)
    for i, c in enumerate(labels):
        x[i, 4 * c : 4 * c + 4] += 0.4
    index = pd.DataFrame({"clip_id": np.repeat([f"s{seed}-{i}" for i in range(n_clips)], copies), "label": labels})
    return Split(x, index)


@pytest.fixture
def vector_data() -> Data:
    return Data(vectors(30, 2, 0), vectors(9, 2, 1), vectors(9, 2, 2), ("a", "b", "c"))


MODELS = {
    "dummy": {"estimator": "DummyClassifier", "strategy": "stratified"},
    "nearest_centroid": {"estimator": "NearestCentroid"},
    "linear_svm_c1": {"estimator": "LinearSVC", "C": 1.0},
    "forest": {"estimator": "RandomForestClassifier", "n_estimators": 5},
}


def test_every_model_is_scored_logged_nested_and_tabled(vector_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    results = classical(ClassicalConfig(models=MODELS, seed=42), vector_data, tmp_path / "reports", jobs=2)
    assert list(results) == list(MODELS)
    for name in ("nearest_centroid", "linear_svm_c1", "forest"):
        assert results[name]["test_file_accuracy"] > 0.9  # separable classes; chance is 1/3
    runs = mlflow.search_runs(experiment_names=["audioclass"])
    parent = runs[runs["tags.pipeline_role"] == "baselines"]
    models = runs[runs["tags.pipeline_role"] == "baseline"]
    assert len(parent) == 1 and sorted(models["params.model"]) == sorted(MODELS)
    assert (models["tags.mlflow.parentRunId"] == parent["run_id"].iloc[0]).all()
    table = (tmp_path / "reports" / "classical.md").read_text()
    assert "| linear_svm_c1 |" in table and "| 13.4 % |" in table  # the study's figure beside ours
    assert "| forest |" in table and "| – |" in table  # no study figure for a model the study lacked


def test_a_fit_stopped_at_its_iteration_limit_is_one_log_line_and_a_metric_not_a_warning(
    vector_data, tmp_path, monkeypatch, caplog, recwarn
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    models = {"mlp_2_iterations": {"estimator": "MLPClassifier", "hidden_layer_sizes": [8], "max_iter": 2}, "forest": MODELS["forest"]}
    with caplog.at_level(logging.INFO):
        results = classical(ClassicalConfig(models=models, seed=42), vector_data, tmp_path / "reports", jobs=1)
    assert results["mlp_2_iterations"]["converged"] is False and results["forest"]["converged"] is True
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("mlp_2_iterations:")]
    assert line.endswith(", stopped at its iteration limit before converging")
    assert not [w for w in recwarn if "converge" in str(w.message)]
    assert json.loads((tmp_path / "reports" / "classical.json").read_text())["mlp_2_iterations"]["converged"] is False


def test_seed_reaches_estimators_that_take_one_and_results_repeat(vector_data, tmp_path, monkeypatch):
    assert make_estimator({"estimator": "RandomForestClassifier"}, seed=7).random_state == 7
    assert make_estimator({"estimator": "RandomForestClassifier", "random_state": 3}, seed=7).random_state == 3
    forest = make_estimator({"estimator": "RandomForestClassifier", "n_estimators": 5}, seed=1, jobs=2).fit(
        vector_data.train.x, vector_data.train.y
    )
    serial = make_estimator({"estimator": "RandomForestClassifier", "n_estimators": 5}, seed=1).fit(
        vector_data.train.x, vector_data.train.y
    )
    np.testing.assert_array_equal(forest.predict_proba(vector_data.test.x), serial.predict_proba(vector_data.test.x))


@pytest.mark.parametrize(
    ("models", "message"),
    [
        ({"boosted": {"estimator": "XGBClassifier"}}, r"classical\.models\.boosted: expected a mapping with estimator: one of \["),
        ({"knn": {"estimator": "KNeighborsClassifier", "k": 3}}, r"classical\.models\.knn: expected arguments KNeighborsClassifier takes"),
        ({}, r"classical\.models: expected at least one model"),
    ],
)
def test_bad_model_specs_are_named(models, message):
    from audioclass.config import load_params, stage_config
    from conftest import PROJECT

    params = load_params(PROJECT / "params.yaml")
    params["classical"]["models"] = models
    with pytest.raises(ConfigError, match=message):
        stage_config(ClassicalConfig, params, "classical")


def test_an_argument_value_the_estimator_rejects_is_named(vector_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    cfg = ClassicalConfig(models={"knn": {"estimator": "KNeighborsClassifier", "n_neighbors": 0}}, seed=42)
    with pytest.raises(ConfigError, match=r"params\.yaml: classical\.models\.knn: The 'n_neighbors' parameter"):
        classical(cfg, vector_data, tmp_path / "reports", jobs=1)
    assert not (tmp_path / "reports" / "classical.json").exists()


@pytest.mark.parametrize(
    ("architecture", "convs", "pools"), [("shallow", 1, 1), ("medium", 3, 1), ("deep0", 5, 2), ("deep1", 7, 3), ("deep2", 9, 4)]
)
def test_the_1d_family_comes_from_one_definition(architecture, convs, pools):
    from audioclass.models import cnn1d

    model = cnn1d(architecture, 7, 882, 10)
    layers = [type(layer).__name__ for layer in model.layers]
    assert layers.count("Conv1D") == convs and layers.count("MaxPooling1D") == pools
    first = next(layer for layer in model.layers if type(layer).__name__ == "Conv1D")
    assert first.kernel_size == (7,) and first.filters == 32
    assert model.output_shape == (None, 10)


def test_a_1d_cell_learns_separable_vectors_deterministically(vector_data):
    from audioclass.training import Cnn1dConfig, fit_cell

    cfg = Cnn1dConfig(("shallow",), (3,), epochs=6, batch_size=8, learning_rate=0.003, seed=1)
    metrics, curve = fit_cell(cfg, "shallow", 3, vector_data)
    again, _ = fit_cell(cfg, "shallow", 3, vector_data)
    assert metrics["test_file_accuracy"] > 0.6 and len(curve) == 6  # chance is 1/3
    assert metrics["val_file_accuracy"] == again["val_file_accuracy"] and metrics["best_epoch"] == curve["val_loss"].idxmin()


def test_1d_grid_params_are_checked():
    from audioclass.training import Cnn1dConfig

    with pytest.raises(
        ConfigError, match=r"^architectures: expected names from \['shallow', 'medium', 'deep0', 'deep1', 'deep2'\], got 'deep9'"
    ):
        config(Cnn1dConfig, "cnn1d", architectures=["deep9"])

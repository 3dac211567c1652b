"""Feature vectors per file, and the models chosen on them by grouped cross-validation without leaks."""

import mlflow
import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from audioclass import feature_models as fm
from audioclass.dataset import Data, Split
from audioclass.errors import ConfigError
from audioclass.features import FeatureConfig, feature_vector, features
from audioclass.stages.feature_models import feature_models
from conftest import config, tone


def test_columns_name_every_value_of_the_vector():
    cfg = config(FeatureConfig, "features", n_mels=64, n_mfcc=20)
    columns = cfg.columns()
    vector = feature_vector(tone(440.0, 1.0, 22050), sr=22050, cfg=cfg)
    assert vector.shape == (len(columns),) == (2 * (12 + 64 + 3 * 20),) and vector.dtype == np.float32
    assert columns["column"].is_unique and list(columns["group"].unique())[:3] == ["chroma_mean", "chroma_std", "mel_mean"]


def test_a_440_hz_tone_peaks_at_chroma_a_and_its_mel_band():
    cfg = config(FeatureConfig, "features")
    columns = cfg.columns()
    vector = feature_vector(tone(440.0, 2.0, 22050), sr=22050, cfg=cfg)
    chroma = vector[(columns["group"] == "chroma_mean").to_numpy()]
    assert chroma.argmax() == 9  # C, C#, …, A: the tenth pitch class
    import librosa

    mel = vector[(columns["group"] == "mel_mean").to_numpy()]
    centres = librosa.mel_frequencies(cfg.n_mels + 2, fmax=cfg.fmax)[1:-1]
    assert abs(centres[mel.argmax()] - 440.0) < 60.0
    # A steady tone's MFCCs barely move: their deltas average to about zero.
    assert np.abs(vector[(columns["group"] == "mfcc_delta_mean").to_numpy()]).max() < 0.5


def test_silence_and_files_shorter_than_one_frame_give_finite_vectors():
    cfg = config(FeatureConfig, "features")
    for y in (np.zeros(22050, np.float32), tone(300.0, 0.05, 22050)):
        assert np.isfinite(feature_vector(y, sr=22050, cfg=cfg)).all()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"copies": 0}, r"^copies: expected an integer >= 1"),
        ({"n_mels": 2000}, r"^n_mels: expected at most n_fft // 2 \+ 1 = 1025 bands for n_fft=2048, got 2000"),
        ({"n_mfcc": 200}, r"^n_mfcc: expected an integer in \[1, n_mels=128\], got 200"),
    ],
)
def test_impossible_feature_params_are_named(change, message):
    with pytest.raises(ConfigError, match=message):
        config(FeatureConfig, "features", **change)


def test_stage_keeps_the_asked_copies_and_is_the_same_serial_or_parallel(pipeline_inputs, tmp_path):
    args = (pipeline_inputs / "augmented", pipeline_inputs / "split.csv")
    cfg = config(FeatureConfig, "features", n_fft=256, hop_length=128, n_mels=32, n_mfcc=13, fmax=None)
    assert sum(features(*args, cfg, tmp_path / "one", jobs=2).values()) == 50  # the original clips only
    counts = features(
        *args,
        config(FeatureConfig, "features", n_fft=256, hop_length=128, n_mels=32, n_mfcc=13, fmax=None, copies=2),
        tmp_path / "two",
        jobs=2,
    )
    assert sum(counts.values()) == 100
    n_columns = len(pd.read_csv(tmp_path / "two" / "columns.csv"))
    for name in counts:
        index = pd.read_csv(tmp_path / "two" / name / "index.csv")
        assert np.load(tmp_path / "two" / name / "x.npy").shape == (counts[name], n_columns) and index["copy"].max() == 1
        one = np.load(tmp_path / "one" / name / "x.npy")
        np.testing.assert_array_equal(one, np.load(tmp_path / "two" / name / "x.npy")[index["copy"].to_numpy() == 0])
    features(*args, cfg, tmp_path / "serial", jobs=1)
    for name in counts:
        assert (tmp_path / "one" / name / "x.npy").read_bytes() == (tmp_path / "serial" / name / "x.npy").read_bytes()


# Feature models -------------------------------------------------------------------------------

COLUMNS = pd.DataFrame({"group": ["chroma_mean"] * 4 + ["mel_mean"] * 4 + ["mfcc_mean"] * 4})


def grouped_split(n_sources: int, clips_per_source: int, copies: int, seed: int, prefix: str) -> Split:
    """3 classes; class c shifts the mean of columns 4c..4c+3. Each source recording gives several clips."""
    rng = np.random.default_rng(seed)
    rows = [(f"{prefix}{s}", f"{prefix}{s}-{k}", s % 3) for s in range(n_sources) for k in range(clips_per_source) for _ in range(copies)]
    index = pd.DataFrame(rows, columns=["source_id", "clip_id", "label"]).assign(class_name=lambda t: "class" + t["label"].astype(str))
    x = rng.normal(0.0, 1.0, (len(index), 12)).astype(np.float32) * 5.0 + 10.0  # far from standardised
    for i, c in enumerate(index["label"]):
        x[i, 4 * c : 4 * c + 4] += 12.0
    return Split(x, index)


@pytest.fixture
def grouped_data() -> Data:
    return Data(
        grouped_split(15, 2, 2, 0, "a"), grouped_split(6, 2, 2, 1, "b"), grouped_split(6, 1, 2, 2, "t"), ("class0", "class1", "class2")
    )


def cfg(**changes) -> fm.FeatureModelsConfig:
    values = dict(
        sets={"first": ["chroma_mean", "mel_mean", "mfcc_mean"]},
        cv_folds=3,
        seed=42,
        models={"svm": {"estimator": "SVC", "grid": {"C": [0.1, 1.0]}}},
    )
    return fm.FeatureModelsConfig(**{**values, **changes})


def test_grouped_folds_never_put_one_source_in_two_folds(grouped_data):
    index = grouped_data.train_and_val().index
    folds = fm.grouped_folds(index, 3, seed=42)
    held_out = np.concatenate([held for _, held in folds])
    assert sorted(held_out) == list(range(len(index)))  # every row held out exactly once
    fold_of_source = {}
    for k, (train, held) in enumerate(folds):
        assert not set(index["source_id"].iloc[train]) & set(index["source_id"].iloc[held])
        assert set(index["label"].iloc[held]) == {0, 1, 2}  # stratified: every class in every fold
        for source in index["source_id"].iloc[held]:
            assert fold_of_source.setdefault(source, k) == k


def test_more_folds_than_sources_per_class_is_named(grouped_data):
    with pytest.raises(ConfigError, match=r"feature_models\.cv_folds: expected at most 2 \(the fewest source recordings"):
        fm.grouped_folds(grouped_data.val.index, 3, seed=42)


class RecordingScaler(StandardScaler):
    """A StandardScaler that remembers which rows every instance was fitted on."""

    fits: list[set[bytes]] = []

    def fit(self, X, y=None, sample_weight=None):
        RecordingScaler.fits.append({row.tobytes() for row in np.asarray(X)})
        return super().fit(X, y, sample_weight)


def scaler_leaks(fits: list[set[bytes]], folds, dev_x: np.ndarray, test_x: np.ndarray) -> list[str]:
    """What each scaler fit saw that it must not: another fold's held-out rows, or test rows."""
    rows = lambda x: {r.tobytes() for r in x}  # noqa: E731
    allowed = [rows(dev_x[train]) for train, _ in folds] + [rows(dev_x)]  # each fold's training rows, then the refit
    test = rows(test_x)
    problems = [f"fit {i} saw {len(seen & test)} test rows" for i, seen in enumerate(fits) if seen & test]
    problems += [f"fit {i} saw held-out rows" for i, seen in enumerate(fits) if not any(seen == ok for ok in allowed)]
    return problems


def test_the_scaler_is_fitted_on_training_folds_only_and_a_leak_would_show(grouped_data, monkeypatch):
    monkeypatch.setattr(fm, "StandardScaler", RecordingScaler)
    monkeypatch.setattr(RecordingScaler, "fits", [])
    config_ = cfg()
    fm.fit_model("svm", config_.models["svm"], grouped_data, config_, jobs=1)
    dev = grouped_data.train_and_val()
    dev_index, dev_x = dev.index, dev.x
    folds = fm.grouped_folds(dev_index, 3, seed=42)
    assert len(RecordingScaler.fits) == 2 * 3 + 1  # 2 candidates × 3 folds, then the refit
    assert scaler_leaks(RecordingScaler.fits, folds, dev_x, grouped_data.test.x) == []

    # The same check on the classic mistake, scaling everything before the split, reports the leak.
    RecordingScaler.fits = []
    everything = np.concatenate([dev_x, grouped_data.test.x])
    scaled = RecordingScaler().fit(everything).transform(dev_x)
    GridSearchCV(Pipeline([("model", SVC())]), {"model__C": [1.0]}, cv=folds).fit(scaled, dev_index["label"])
    assert scaler_leaks(RecordingScaler.fits, folds, dev_x, grouped_data.test.x) == ["fit 0 saw 12 test rows", "fit 0 saw held-out rows"]


def test_every_set_and_model_is_searched_logged_nested_and_tabled(grouped_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    models = {"svm": {"estimator": "SVC", "grid": {"C": [0.1, 1.0]}}, "forest": {"estimator": "RandomForestClassifier", "n_estimators": 10}}
    config_ = cfg(models=models, sets={"first": ["chroma_mean", "mel_mean", "mfcc_mean"], "chroma": ["chroma_mean"]})
    results = feature_models(config_, grouped_data, COLUMNS, tmp_path / "reports", jobs=2)
    full = results["first"]
    assert full["svm"]["cv_accuracy"] > 0.9 and full["svm"]["test_clip_accuracy"] > 0.9  # separable; chance is 1/3
    assert full["svm"]["candidates"] == 2 and full["svm"]["best_params"]["C"] in (0.1, 1.0) and full["forest"]["candidates"] == 1
    # Chroma alone carries only class 0's shift: it must score clearly worse, so the sets really select columns.
    assert results["chroma"]["svm"]["cv_accuracy"] < full["svm"]["cv_accuracy"] - 0.2

    runs = mlflow.search_runs(experiment_names=["audioclass"])
    parent = runs[runs["tags.pipeline_role"] == "baselines"]
    fits = runs[runs["tags.pipeline_role"] == "baseline"]
    assert len(parent) == 1 and len(fits) == 4 and (fits["tags.mlflow.parentRunId"] == parent["run_id"].iloc[0]).all()
    svm = fits[(fits["params.model"] == "svm") & (fits["params.feature_set"] == "first")].iloc[0]
    assert svm["metrics.cv_accuracy"] == full["svm"]["cv_accuracy"] and svm["params.n_features"] == "12"
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(svm["run_id"])}
    assert {"confusion.png", "confusion.json", "cv_results.csv"} <= artifacts

    table = (tmp_path / "reports" / "features.md").read_text()
    assert "| first | svm |" in table and "67.5 % (SVM, MFCC + ZCR)" in table and "72.7 % (random forest" in table
    metrics = (tmp_path / "reports" / "features.json").read_text()
    assert '"cv_accuracy_sd"' in metrics and "best_params" not in metrics  # dvc metrics: numbers only


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sets": {"x": ["zcr_mean"]}}, r"^sets\.x: expected a list of column groups from \['chroma_mean'"),
        (
            {"models": {"svm": {"estimator": "SVC", "grid": {"C": 1.0}}}},
            r"^models\.svm\.grid: expected a mapping of argument: \[values to try\]",
        ),
        ({"models": {"svm": {"estimator": "SVC", "grid": {"k": [1]}}}}, r"^models\.svm\.grid: expected arguments SVC takes, got \['k'\]"),
        ({"models": {"svm": {"estimator": "SVC", "c": 1.0}}}, r"^models\.svm: expected arguments SVC takes"),
        ({"cv_folds": 1}, r"^cv_folds: expected an integer >= 2, got 1"),
    ],
)
def test_bad_feature_model_params_are_named(change, message):
    with pytest.raises(ConfigError, match=message):
        cfg(**change)


def test_default_params_hold_the_recipes_180_values():
    config_ = config(fm.FeatureModelsConfig, "feature_models")
    columns = config(FeatureConfig, "features").columns()
    assert columns["group"].isin(config_.sets["chroma_mel_mfcc"]).sum() == 12 + 128 + 40
    assert {"MLPClassifier", "RandomForestClassifier", "SVC"} == {m["estimator"] for m in config_.models.values()}

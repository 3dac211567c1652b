"""Stage train: the architecture registry, config checks, clip-level scoring, and a deterministic fit."""

import dataclasses

import numpy as np
import pandas as pd
import pytest

from audioclass.config import load_params, stage_config
from audioclass.dataset import Data
from audioclass.errors import ConfigError
from audioclass.evaluation import clip_level, summarize
from audioclass.models import ARCHITECTURES
from audioclass.training import Run, TrainConfig, _dataset, _training_dataset, fit_run, predict, refit_run, train_run
from conftest import PROJECT, TINY_FIT, TINY_MODEL, band_spectrograms

N_CLASSES = 3


@pytest.fixture(scope="module")
def data() -> Data:
    return Data(
        band_spectrograms(30, 2, 0), band_spectrograms(9, 2, 1), band_spectrograms(9, 2, 2), tuple(f"class{c}" for c in range(N_CLASSES))
    )


MODEL, FIT = TINY_MODEL, TINY_FIT


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_every_architecture_outputs_probabilities_and_survives_saving_in_safe_mode(name, tmp_path):
    import keras

    model = ARCHITECTURES[name]((16, 32, 2), 4, dataclasses.replace(MODEL, architecture=name, first_kernel=7))
    x = np.random.default_rng(0).random((2, 16, 32, 2)).astype("float32")
    out = model(x).numpy()
    assert out.shape == (2, 4)
    np.testing.assert_allclose(out.sum(axis=1), 1, rtol=1e-5)
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras", safe_mode=True)  # no code of ours needed to load it
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_sequence_models_see_a_sequence_of_the_expected_length():
    import keras

    # crnn: a 64 × 216 log-mel strided once and pooled twice in time is 27 steps for its GRU.
    crnn = ARCHITECTURES["crnn"]((64, 216, 1), 10, dataclasses.replace(MODEL, architecture="crnn", depth=4))
    (gru,) = [layer for layer in crnn.layers if isinstance(layer, keras.layers.Bidirectional)]
    assert gru.input.shape[1:] == (27, 4 * 2**3) and gru.output.shape[1:] == (27, 2 * MODEL.units)
    # transformer: tokens of first_kernel frames: 216 / 3 = 72 tokens of `units` values.
    transformer = ARCHITECTURES["transformer"]((64, 216, 1), 10, dataclasses.replace(MODEL, architecture="transformer", first_kernel=3))
    attention = [layer for layer in transformer.layers if isinstance(layer, keras.layers.MultiHeadAttention)]
    assert len(attention) == MODEL.depth and attention[0].output.shape[1:] == (72, MODEL.units)


@pytest.mark.parametrize("name", ["crnn", "transformer"])
def test_sequence_models_learn_and_are_deterministic_per_seed(data, name):
    model_params = dataclasses.replace(MODEL, architecture=name, first_kernel=2)
    fit = dataclasses.replace(FIT, epochs=6, patience=6, learning_rate=0.01)
    runs = [fit_run(model_params, fit, data, seed=seed, verbose=0)[0] for seed in (3, 3, 4)]
    a, b, c = (predict(m, data.val) for m in runs)
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert not np.allclose(a, c, atol=1e-3)
    metrics = summarize(a, data.val.index, predict(runs[0], data.test), data.test.index, data.class_names)
    assert metrics["test_clip_accuracy"] > 0.6  # chance is 1/3


def test_input_normalisation_is_per_band_and_channel_and_survives_saving(tmp_path):
    import keras

    model = ARCHITECTURES["compact_cnn"]((16, 32, 3), 4, MODEL)
    x = np.random.default_rng(0).random((8, 16, 32, 3)).astype("float32")
    x[..., 1] = 100 * x[..., 1] - 50  # a channel on a scale of its own
    model(x, training=True)  # one batch updates the running statistics
    first_norm = next(layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization))
    means = np.reshape(first_norm.moving_mean.numpy(), (16, 3))
    # BN_MOMENTUM 0.9: one batch moves each running mean a tenth of the way to its band-and-channel mean.
    np.testing.assert_allclose(means, 0.1 * x.mean(axis=(0, 2)), rtol=1e-4, atol=1e-5)
    model.save(tmp_path / "model.keras")
    np.testing.assert_allclose(keras.models.load_model(tmp_path / "model.keras").predict(x, verbose=0), model.predict(x, verbose=0))


def test_unknown_architecture_and_bad_fit_params_are_named():
    params = load_params(PROJECT / "params.yaml")
    params["train"]["model"]["architecture"] = "resnet"
    with pytest.raises(
        ConfigError, match=r"train\.model\.architecture: expected one of \['book_cnn', 'compact_cnn', 'crnn', 'transformer'\], got 'resnet'"
    ):
        stage_config(TrainConfig, params, "train")
    params = load_params(PROJECT / "params.yaml")
    params["train"]["fit"]["learning_rate"] = 2
    with pytest.raises(ConfigError, match=r"train\.fit\.learning_rate: expected a rate in \(0, 1\)"):
        stage_config(TrainConfig, params, "train")
    params["train"]["fit"] = {**load_params(PROJECT / "params.yaml")["train"]["fit"], "label_smoothing": 1.0}
    with pytest.raises(
        ConfigError, match=r"train\.fit\.label_smoothing: expected a number in \[0, 1\) \(0 turns smoothing off\), got 1\.0"
    ):
        stage_config(TrainConfig, params, "train")


@pytest.mark.parametrize(
    "runs, message",
    [
        ({}, r"train\.runs: expected at least one run"),
        ({"run-1": {"seed": 1}, "again": {"seed": 1}}, r"train\.runs\.again: expected a seed or values other than run 'run-1''s"),
        ({"crnn-1": {"seed": 1, "model": {"architecture": "lstm"}}}, r"train\.runs\.crnn-1\.model\.architecture: expected one of \["),
        (
            {"t-1": {"seed": 1, "model": {"architecture": "transformer", "heads": 0}}},
            r"train\.runs\.t-1\.model\.heads: expected an integer in \[1, units = 64\], got 0",
        ),
        ({"run-1": {"seed": 1, "model": {"layers": 2}}}, r"train\.runs\.run-1\.model\.layers: unknown key"),
        ({"run-1": {"seed": 1, "fit": {"epochs": 0}}}, r"train\.runs\.run-1\.fit\.epochs: expected an integer >= 1"),
        ({"run-1": {"model": {}}}, r"train\.runs\.run-1\.seed: missing key"),
        ({"run-1": {"seed": 1, "lr": 0.1}}, r"train\.runs\.run-1\.lr: unknown key"),
        ({"head-x": {"seed": 1}}, r"train\.runs: expected run names of letters, digits, - and _, got 'head-x'"),
        ({"run.1": {"seed": 1}}, r"train\.runs: expected run names of letters, digits, - and _, got 'run\.1'"),
    ],
)
def test_a_bad_run_is_named_in_one_line(runs, message):
    params = load_params(PROJECT / "params.yaml")
    params["train"]["runs"] = runs
    with pytest.raises(ConfigError, match=message) as err:
        stage_config(TrainConfig, params, "train")
    assert "\n" not in str(err.value) and str(err.value).startswith("params.yaml: train.runs")


def test_a_run_changes_only_the_keys_it_names():
    params = load_params(PROJECT / "params.yaml")
    params["train"]["runs"] = {"run-1": {"seed": 1}, "crnn-1": {"seed": 1, "model": {"architecture": "crnn"}, "fit": {"epochs": 12}}}
    cfg = stage_config(TrainConfig, params, "train")
    assert cfg.run("run-1") == Run("run-1", 1, cfg.model, cfg.fit)
    crnn = cfg.run("crnn-1")
    assert crnn.model == dataclasses.replace(cfg.model, architecture="crnn") and crnn.fit == dataclasses.replace(cfg.fit, epochs=12)
    assert {name: cfg.run(name).model.architecture for name in cfg.runs} == {"run-1": "compact_cnn", "crnn-1": "crnn"}


def test_clip_level_averages_each_clips_copies():
    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.2, 0.8]], dtype=np.float32)
    index = pd.DataFrame({"clip_id": ["b", "a", "b"], "label": [0, 1, 0]})
    clips, mean, labels = clip_level(probs, index)
    assert clips.tolist() == ["a", "b"] and labels.tolist() == [1, 0]
    np.testing.assert_allclose(mean, [[0.3, 0.7], [0.55, 0.45]])


def test_fit_learns_and_is_deterministic_per_seed(data):
    model_a, history = fit_run(MODEL, FIT, data, seed=3)
    model_b, _ = fit_run(MODEL, FIT, data, seed=3)
    model_c, _ = fit_run(MODEL, FIT, data, seed=4)
    a, b, c = (predict(m, data.val) for m in (model_a, model_b, model_c))
    np.testing.assert_allclose(a, b, atol=1e-6)  # same seed, same machine: same predictions
    assert not np.allclose(a, c, atol=1e-3)
    assert list(history.columns) == ["epoch", "accuracy", "loss", "val_accuracy", "val_loss"] and len(history) <= FIT.epochs
    metrics = summarize(a, data.val.index, predict(model_a, data.test), data.test.index, data.class_names)
    assert metrics["test_clip_accuracy"] > 0.6  # chance is 1/3
    assert np.array(metrics["test_clip_confusion"]).sum() == 9


@pytest.mark.parametrize("patience", [1, 6], ids=["stopped-early", "ran-every-epoch"])
def test_weight_averaging_keeps_the_averaged_weights_of_the_best_validation_epoch(data, patience):
    import keras

    fit = dataclasses.replace(FIT, epochs=6, patience=patience, ema_momentum=0.9)
    model, history = fit_run(MODEL, fit, data, seed=3, verbose=0)
    # The kept model scores what validation recorded for the best epoch, which was measured with the averaged weights.
    loss = keras.losses.categorical_crossentropy(np.eye(N_CLASSES)[data.val.y], predict(model, data.val))
    assert float(np.mean(loss)) == pytest.approx(history["val_loss"].min(), rel=1e-4)
    plain, _ = fit_run(MODEL, dataclasses.replace(fit, ema_momentum=0.0), data, seed=3, verbose=0)
    assert not np.allclose(predict(plain, data.val), predict(model, data.val), atol=1e-3)


def test_label_smoothing_trains_towards_softened_targets_and_early_stopping_watches_that_loss(data):
    import keras

    fit = dataclasses.replace(FIT, epochs=8, patience=8, learning_rate=0.03, label_smoothing=0.3)
    smoothed, history = fit_run(MODEL, fit, data, seed=3, verbose=0)
    sharp, sharp_history = fit_run(MODEL, dataclasses.replace(fit, label_smoothing=0.0), data, seed=3, verbose=0)
    # Targets of 0.8 / 0.1 / 0.1: no prediction can bring the loss below their entropy.
    floor = -(0.8 * np.log(0.8) + 2 * 0.1 * np.log(0.1))
    assert history["loss"].min() >= floor - 1e-3 and history["val_loss"].min() >= floor - 1e-3
    assert sharp_history["loss"].min() < floor  # the same run without smoothing goes below it
    # The loss early stopping watched is the smoothed one, of the kept model.
    targets = (1 - 0.3) * np.eye(N_CLASSES)[data.val.y] + 0.3 / N_CLASSES
    loss = keras.losses.categorical_crossentropy(targets, predict(smoothed, data.val))
    assert float(np.mean(loss)) == pytest.approx(history["val_loss"].min(), rel=1e-4)
    assert predict(smoothed, data.val).max() < predict(sharp, data.val).max()


def test_refit_adds_the_validation_clips_stops_at_the_best_epoch_and_keeps_the_validated_models_figures(data, tmp_path):
    import keras

    fit = dataclasses.replace(FIT, epochs=5, patience=5, ema_momentum=0.9)
    validated, history = fit_run(MODEL, fit, data, seed=3, verbose=0)
    best = int(history["val_loss"].idxmin())
    everything = data.train_and_val()
    assert len(everything.y) == len(data.train.y) + len(data.val.y)
    assert set(everything.index["clip_id"]) == set(data.train.index["clip_id"]) | set(data.val.index["clip_id"])

    run = train_run(Run("run-3", 3, MODEL, fit), data, refit=True)
    metrics, val_probs, test_probs = run.metrics, run.val_probs, run.test_probs
    # Validation is the validated model's: the refit has seen those clips.
    np.testing.assert_allclose(val_probs, predict(validated, data.val), atol=1e-6)
    assert metrics["best_epoch"] == best
    # Test, and the saved model, are the refit's: best + 1 epochs on train + val.
    refitted = refit_run(MODEL, fit, data, epochs=best + 1, seed=3, verbose=0)
    np.testing.assert_allclose(test_probs, predict(refitted, data.test), atol=1e-6)
    run.model.save(tmp_path / "model.keras")  # the model the stage saves
    np.testing.assert_allclose(predict(keras.models.load_model(tmp_path / "model.keras"), data.test), test_probs, atol=1e-6)
    assert not np.allclose(test_probs, predict(validated, data.test), atol=1e-3)
    _, clips, labels = clip_level(predict(validated, data.test), data.test.index)
    assert metrics["test_clip_accuracy_before_refit"] == pytest.approx(float((clips.argmax(1) == labels).mean()))


def _epochs(split, fit, seed, n=2):
    ds = _training_dataset(split, fit, N_CLASSES, seed=seed)
    return [[(x.numpy(), y.numpy()) for x, y in ds] for _ in range(n)]


def test_an_epoch_draws_every_float16_row_once_as_exact_float32_with_its_label():
    split = band_spectrograms(12, 2, 0)
    split = type(split)(split.x.astype(np.float16), split.index)
    stored = {row.astype(np.float32).tobytes(): label for row, label in zip(split.x, split.y)}
    for batches in _epochs(split, FIT, 4):
        x = np.concatenate([b for b, _ in batches])
        y = np.concatenate([labels for _, labels in batches]).argmax(axis=1)
        assert x.dtype == np.float32 and len(x) == len(split.y)
        assert sorted(stored[row.tobytes()] for row in x) == sorted(split.y)  # each row exactly as stored
        assert [stored[row.tobytes()] for row in x] == list(y)  # and beside its own label
        assert len({row.tobytes() for row in x}) == len(stored)  # once each


def test_training_and_validation_batches_are_made_without_tf_data_autotuning():
    # Its tuning thread made ending each epoch's iterator wait up to 9 s on two idle cores.
    split = band_spectrograms(12, 2, 0)
    assert _training_dataset(split, FIT, N_CLASSES, seed=4).options().autotune.enabled is False
    assert _dataset(split, 256, N_CLASSES).options().autotune.enabled is False


def test_spec_augment_zeroes_whole_bands_and_frames_repeatably_per_seed():
    ones = band_spectrograms(16, 1, 0)
    ones = type(ones)(np.ones_like(ones.x), ones.index)
    fit = dataclasses.replace(FIT, freq_masks=1, freq_mask_width=3, time_masks=2, time_mask_width=4)
    first, again, other = _epochs(ones, fit, 7), _epochs(ones, fit, 7), _epochs(ones, fit, 8)
    x = np.concatenate([b for b, _ in first[0]])
    zero_rows = (x == 0).all(axis=(2, 3)).sum(axis=1)  # whole bands masked in each example
    zero_cols = (x == 0).all(axis=(1, 3)).sum(axis=1)  # whole frames
    assert zero_rows.max() <= 3 and zero_cols.max() <= 8 and zero_rows.sum() > 0 and zero_cols.sum() > 0
    assert set(np.unique(x)) <= {0.0, 1.0}  # masks zero; nothing else changes
    for (xa, ya), (xb, yb) in zip(first[0], again[0]):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert not all(np.array_equal(a, b) for (a, _), (b, _) in zip(first[0], first[1]))  # each epoch draws afresh
    assert not all(np.array_equal(a, b) for (a, _), (b, _) in zip(first[0], other[0]))


def test_mixup_blends_examples_and_labels_with_the_examples_own_label_dominant(data):
    fit = dataclasses.replace(FIT, mixup_alpha=0.4)
    y = np.concatenate([y for _, y in _epochs(data.train, fit, 3, n=1)[0]])
    np.testing.assert_allclose(y.sum(axis=1), 1, rtol=1e-6)
    assert (y.max(axis=1) >= 0.5 - 1e-6).all() and ((y > 0) & (y < 1)).any(axis=1).mean() > 0.3
    plain = np.concatenate([y for _, y in _epochs(data.train, FIT, 3, n=1)[0]])
    assert set(np.unique(plain)) == {0.0, 1.0}  # off: one-hot labels


def test_missing_inputs_fail_with_one_line(tmp_path):
    import subprocess
    import sys

    train = subprocess.run(
        [
            sys.executable,
            "-m",
            "audioclass.stages.train",
            "--params",
            str(PROJECT / "params.yaml"),
            "--run",
            "run-1",
            "--data",
            str(tmp_path / "nowhere"),
            "--out",
            str(tmp_path / "run"),
            "--metrics",
            str(tmp_path / "m.json"),
            "--history",
            str(tmp_path / "h.csv"),
        ],
        capture_output=True,
        text=True,
    )
    assert train.returncode == 1 and "Traceback" not in train.stderr
    assert train.stderr.strip().splitlines()[-1] == (
        f"error: {tmp_path / 'nowhere' / 'train' / 'index.csv'}: missing; expected the spectrogram stage's output (dvc repro spectrograms)"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_training_runs_on_onednn_and_logs_no_tensorflow_error(tmp_path):
    """The package turns oneDNN on before TensorFlow loads, and float16 spectrograms reach it as float32.

    On CPUs without AVX-512, a float16 tensor makes oneDNN log an error line and fall back.
    """
    import os
    import subprocess
    import sys

    script = """
import numpy as np, pandas as pd
from audioclass.dataset import Data, Split
from audioclass.training import FitParams, ModelParams, fit_run
from tensorflow.python.util import _pywrap_util_port

def split(n, seed):
    rng = np.random.default_rng(seed)
    return Split(rng.random((n, 8, 16, 1)).astype(np.float16), pd.DataFrame({"label": np.arange(n) % 2, "clip_id": np.arange(n)}))

fit = FitParams(epochs=1, batch_size=4, learning_rate=0.01, patience=1, mixup_alpha=0.2, freq_masks=1, freq_mask_width=2,
                time_masks=1, time_mask_width=2, ema_momentum=0.9, label_smoothing=0.1)
fit_run(ModelParams("compact_cnn", 4, 2, 0.1, 3, 8, 2), fit, Data(split(8, 0), split(4, 1), None, ("a", "b")), seed=1, verbose=0)
print("onednn", _pywrap_util_port.IsMklEnabled())
"""
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["onednn", "True"]
    errors = [line for line in run.stderr.splitlines() if line.startswith("E0000") or "Traceback" in line]
    assert errors == []


def test_an_ensemble_s_members_score_new_audio_as_keras_does_without_retracing_warnings():
    """``Model.predict`` on six models in one process makes TensorFlow warn, twice, about retracing: among the
    results of ``audioclass predict``. Called eagerly, the members give the same scores and no warning."""
    import logging

    import keras

    from audioclass.predict import keras_scores

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    inputs = np.random.default_rng(0).normal(size=(70, 8, 16, 1)).astype(np.float32)  # two batches of 64
    models = []
    for seed in range(6):
        keras.utils.set_random_seed(seed)
        models.append(ARCHITECTURES["compact_cnn"]((8, 16, 1), 3, TINY_MODEL))
    logging.getLogger("tensorflow").addHandler(handler)
    try:
        scores = [keras_scores(model, inputs) for model in models]
    finally:
        logging.getLogger("tensorflow").removeHandler(handler)
    assert not [r for r in records if "retracing" in r.getMessage()]
    assert all(s.shape == (70, 3) for s in scores) and not np.allclose(scores[0], scores[1])
    np.testing.assert_allclose(scores[0], models[0].predict(inputs, verbose=0), atol=1e-6)


def test_loading_tensorflow_prints_none_of_its_native_start_up_info():
    import subprocess
    import sys

    code = "import audioclass, keras; print(float(keras.ops.add(1.0, 2.0)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout == "3.0\n"
    assert "oneDNN" not in result.stderr and "InitializeLog" not in result.stderr, result.stderr


def test_only_native_info_lines_are_left_out_of_stderr_while_tensorflow_loads(capfd):
    import os

    from audioclass import native_lines_left_out_of_stderr

    with native_lines_left_out_of_stderr(b"I0000 ", b"WARNING: All log messages before absl::InitializeLog() is called"):
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
        os.write(2, b"I0000 00:00:1.0 1 port.cc:153] oneDNN custom operations are on.\n")
        os.write(2, b"E0000 00:00:1.0 1 cuda.cc:1] a real error\nsomething else\n")
    assert capfd.readouterr().err == "E0000 00:00:1.0 1 cuda.cc:1] a real error\nsomething else\n"

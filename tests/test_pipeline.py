"""The real ``dvc repro`` on a tiny profile, in a temporary copy of the project."""

import base64
import hashlib
import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from audioclass import sandbox
from audioclass.bundle import ENSEMBLE_MODEL
from conftest import PROJECT, TINY, free_port, shared_esc10

pytestmark = pytest.mark.e2e

CHECK = ["check"]  # reruns, in seconds, whenever params.yaml changes; the stages after it only if the source moved
DATA_STAGES = [*CHECK, "extract", "split", "augment", "spectrograms"]
MODEL_STAGES = ["tune", "train@run-1", "train@crnn-1", "ensemble"]  # a CNN member and a CRNN member (TINY)
BASELINE_STAGES = ["raw_vectors", "classical", "cnn1d@deep1-7", "features", "feature_models"]
# Beside tune and train, in an order DVC picks.
PRETRAINED_STAGES = ["embed@birdnet+aisfx", "head@birdnet+aisfx"]
PROFILE = TINY | {"embed": {"models": ["birdnet+aisfx"]}}  # one head on both backends (aiSFX alone: test_pipeline_corpus)
REPORT = ["report"]  # last: it tables every model stage
# Libraries' lines that a stage's output should not carry: MLflow's as it logs and registers models, scikit-learn's
# when the study's MLP stops at its iteration limit, TensorFlow's C++ log about Keras's own batches of arrays.
NOISE = (
    "UserWarning",
    "ConvergenceWarning",
    "Downloading artifacts",
    "without specifying model signature",
    "Created version '",
    "NodeDef mentions",
)
PER_CLASS = 4


def stages_run(output: str) -> list[str]:
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")]


def latest_ensemble(workspace: Path) -> tuple[str, int]:
    """The sandbox's MLflow store, and the newest version of the ensemble registered in it."""
    from mlflow import MlflowClient

    store = f"sqlite:///{workspace / 'mlflow.db'}"
    return store, max(int(v.version) for v in MlflowClient(store).search_model_versions(f"name = '{ENSEMBLE_MODEL}'"))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A sandbox after one full ``dvc repro`` on 4 real clips per class, 2 copies, pinned with ``dvc add`` as in the project."""
    root = tmp_path_factory.mktemp("e2e")
    work = sandbox.create(PROJECT, root / "project", PROFILE)
    sandbox.tiny_esc10(shared_esc10(), work / "data/raw/ESC-10", PER_CLASS)
    sandbox.dvc(work, "add", "data/raw/ESC-10")
    first = sandbox.dvc(work, "repro")
    assert not [n for n in NOISE if n in first.stdout + first.stderr], first.stdout + first.stderr
    ran = stages_run(first.stdout)
    assert sorted(ran) == sorted(DATA_STAGES + MODEL_STAGES + PRETRAINED_STAGES + BASELINE_STAGES + REPORT), first.stdout
    side = BASELINE_STAGES + PRETRAINED_STAGES
    assert [s for s in ran if s not in side] == DATA_STAGES + MODEL_STAGES + REPORT  # DVC's order: dependencies first
    assert ran.index("spectrograms") < ran.index("tune") and ran.index("raw_vectors") < ran.index("classical")
    assert ran.index("spectrograms") < ran.index("embed@birdnet+aisfx") < ran.index("head@birdnet+aisfx") < ran.index("ensemble")
    return work


def test_repro_produces_every_output(workspace):
    n_clips = 10 * PER_CLASS
    meta = pd.read_csv(workspace / "data/prepared/metadata.csv")
    assert len(meta) == n_clips and (meta.groupby("class_name").size() == PER_CLASS).all()
    assert len(list((workspace / "data/augmented/wav").glob("*.wav"))) == 2 * n_clips
    files = {}
    for split in ("train", "val", "test"):
        x = np.load(workspace / f"data/spectrograms/{split}/x.npy", mmap_mode="r")
        assert x.shape[1:] == (64, 216, 1)
        files[split] = len(x)
    # Train and validation keep both copies of each clip; test only the original recording (spectrograms.test_copies).
    assert files["test"] == 10 and sum(files.values()) == 2 * n_clips - files["test"]
    assert (workspace / "reports/spectrogram_grid.png").stat().st_size > 10_000
    metrics = json.loads(sandbox.dvc(workspace, "metrics", "show", "--json", "reports/data.json").stdout)
    summary = metrics[""]["data"]["reports/data.json"]["data"]
    assert summary["files"] == files and sum(summary["clips"].values()) == n_clips
    assert summary["clips"]["test"] == 10 and summary["classes"] == 10  # one test-fold clip per class


def test_second_repro_does_nothing(workspace):
    again = sandbox.dvc(workspace, "repro")
    assert stages_run(again.stdout) == [] and "Data and pipelines are up to date." in again.stdout
    assert "up to date" in sandbox.dvc(workspace, "status").stdout


def lock_outs(workspace: Path, stages: list[str]) -> dict[str, list[tuple[str, str]]]:
    lock = yaml.safe_load((workspace / "dvc.lock").read_text())["stages"]
    return {stage: [(out["path"], out["md5"]) for out in lock[stage]["outs"]] for stage in stages}


def test_data_stages_rerun_from_scratch_give_identical_lock_hashes(workspace):
    """DVC deletes a stage's outputs before running it, so a forced repro makes them again from nothing."""
    before = lock_outs(workspace, DATA_STAGES)
    ran = stages_run(sandbox.dvc(workspace, "repro", "--force", "spectrograms").stdout)
    assert sorted(ran) == sorted(DATA_STAGES)  # split and augment both follow extract, in either order
    assert lock_outs(workspace, DATA_STAGES) == before
    assert "Data and pipelines are up to date." in sandbox.dvc(workspace, "status").stdout  # nothing downstream is stale


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=test", "-c", "user.email=test@localhost", *args], cwd=cwd, check=True, capture_output=True)


def tracked_files(root: Path) -> dict[str, str]:
    """SHA-256 of every file under data/ and models/ (what DVC tracks), by path."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for top in ("data", "models")
        for p in sorted((root / top).rglob("*"))
        if p.is_file() and p.name != ".gitignore" and p.suffix != ".dvc"
    }


def test_a_fresh_clone_pulls_every_output_and_reproduces_nothing(workspace, tmp_path):
    sandbox.dvc(workspace, "remote", "add", "--default", "--force", "team", str(tmp_path / "remote"))
    git(workspace, "add", "-A")
    git(workspace, "commit", "-q", "-m", "a pipeline run")
    sandbox.dvc(workspace, "push")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(workspace), str(clone)], check=True)
    assert not (clone / "data/augmented").exists() and not (clone / "data/raw/ESC-10").exists()  # git holds no data
    sandbox.dvc(clone, "pull")
    assert "Data and pipelines are up to date." in sandbox.dvc(clone, "status").stdout
    assert stages_run(sandbox.dvc(clone, "repro").stdout) == []  # nothing retrained
    pulled = tracked_files(clone)
    assert pulled == tracked_files(workspace) and "data/raw/ESC-10/001 - Dog bark/1-100032-A.ogg" in pulled
    assert any(name.startswith("models/run-1/") for name in pulled)


def test_runs_trained_on_two_machines_meet_through_dvc_s_run_cache(workspace, tmp_path):
    """Machine A trains run-2 and machine B run-3, each pushing DVC's run cache; either then pulls it and ensembles,
    retraining nothing (docs/tracking-and-teams.md). Two clones of the project share one local remote."""
    sandbox.dvc(workspace, "remote", "add", "--default", "--force", "team", str(tmp_path / "remote"))
    git(workspace, "add", "-A")
    git(workspace, "commit", "-q", "--allow-empty", "-m", "a pipeline run")
    sandbox.dvc(workspace, "push")
    machines = {}
    for name in ("a", "b"):
        machines[name] = tmp_path / f"machine-{name}"
        subprocess.run(["git", "clone", "-q", str(workspace), str(machines[name])], check=True)
        sandbox.dvc(machines[name], "pull")
        sandbox.set_params(machines[name], {"train": {"runs": {"run-2": {"seed": 2}, "run-3": {"seed": 3}}}})  # the same edit
    for name, run in (("a", "run-2"), ("b", "run-3")):
        ran = stages_run(sandbox.dvc(machines[name], "repro", f"train@{run}").stdout)
        assert [s for s in ran if s not in CHECK] == [f"train@{run}"], ran
        sandbox.dvc(machines[name], "push", "--run-cache")
    for name, machine in machines.items():
        result = sandbox.dvc(machine, "repro", "--pull")  # the other machine's run comes from the run cache
        ran = stages_run(result.stdout)
        assert not [s for s in ran if s.startswith("train@")] and "ensemble" in ran, (name, result.stdout)
        other = "run-3" if name == "a" else "run-2"
        assert f"Stage 'train@{other}' is cached - skipping run, checking out outputs" in result.stdout, result.stdout
        members = json.loads((machine / "reports/ensemble/ensemble.json").read_text())["members"]
        assert members == ["run-1", "crnn-1", "run-2", "run-3", "head-birdnet+aisfx"], (name, members)
    trained = {name: {k: v for k, v in tracked_files(m).items() if k.startswith("models/run-")} for name, m in machines.items()}
    assert trained["a"] == trained["b"] and any(k.startswith("models/run-3/") for k in trained["a"])  # the same bytes on both


def test_training_runs_and_ensemble_are_in_mlflow_and_dvc_metrics(workspace):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{workspace / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("audioclass")
    runs = client.search_runs([experiment.experiment_id])
    train_runs = [r for r in runs if r.data.tags.get("pipeline_role") == "train"]
    assert sorted((r.data.params["name"], r.data.tags["architecture"]) for r in train_runs) == [
        ("crnn-1", "crnn"),
        ("run-1", "compact_cnn"),
    ]
    for run in train_runs:
        assert run.data.tags["dvc_stage"].startswith("train@")
        assert 0 <= run.data.metrics["test_clip_accuracy"] <= 1
        assert len(client.get_metric_history(run.info.run_id, "val_accuracy")) == 2  # one point per epoch
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "run")}
        assert {"run/val_probs.npy", "run/test_probs.npy", "run/model.keras", "run/confusion.png", "run/history.csv"} <= artifacts
    head_runs = {r.data.tags["dvc_stage"]: r for r in runs if r.data.tags.get("pipeline_role") == "head"}
    assert sorted(head_runs) == ["head@birdnet+aisfx"]
    licence = head_runs["head@birdnet+aisfx"].data.tags["licence"]
    assert "birdnet: CC BY-NC-SA 4.0" in licence and "aisfx: CC BY 4.0" in licence
    for head_run in head_runs.values():
        assert 0 <= head_run.data.metrics["test_clip_accuracy"] <= 1
    assert {"embedding.parts.birdnet.version", "embedding.parts.aisfx.version"} <= set(head_runs["head@birdnet+aisfx"].data.params)
    (ensemble_run,) = [r for r in runs if r.data.tags.get("pipeline_role") == "ensemble"]
    for group in ("from_scratch", "pretrained", "all"):
        assert f"{group}.average.test_clip_accuracy" in ensemble_run.data.metrics
    assert (
        "all.swarm_jaya.test_clip_accuracy" in ensemble_run.data.metrics
        and ensemble_run.data.tags["pretrained_members"] == "head-birdnet+aisfx"
    )
    report = json.loads((workspace / "reports/ensemble/ensemble.json").read_text())
    members = sorted(r.info.run_id for r in [*train_runs, *head_runs.values()])
    assert report["members"] == ["run-1", "crnn-1", "head-birdnet+aisfx"]
    assert sorted(report["member_mlflow_run_ids"]) == members
    assert sorted(ensemble_run.data.params["member_mlflow_run_ids"].split(",")) == members
    assert report["groups"]["from_scratch"]["members"] == ["run-1", "crnn-1"]  # the from-scratch figures stay apart
    # Each architecture's runs apart, beside the mixed ensemble of both.
    assert report["groups"]["compact_cnn"]["members"] == ["run-1"] and report["groups"]["crnn"]["members"] == ["crnn-1"]
    assert json.loads((workspace / "models/crnn-1/config.json").read_text())["model"]["architecture"] == "crnn"
    for group in report["groups"].values():
        for method in group["methods"].values():
            weights = method["weights"]  # stored to six decimals: their sum is 1 within half a millionth each
            assert weights is None or (len(weights) == len(group["members"]) and abs(sum(weights) - 1) <= 0.5e-6 * len(weights) + 1e-12)
    detail = ["reports/train/run-1.json", "reports/train/crnn-1.json", "reports/heads/birdnet+aisfx.json"]
    detail.append("reports/ensemble/ensemble.json")
    shown = json.loads(sandbox.dvc(workspace, "metrics", "show", "--json", *detail).stdout)[""]["data"]
    assert set(detail) <= set(shown) and all(shown[f]["data"] for f in detail)
    # Bare `dvc metrics show` prints the headline alone: one row that fits a terminal.
    (headline,) = json.loads(sandbox.dvc(workspace, "metrics", "show", "--json").stdout)[""]["data"].values()
    best = report["groups"][report["best"]["group"]]["methods"][report["best"]["method"]]
    assert headline["data"]["ensemble"] == f"{report['best']['group']}/{report['best']['method']}"
    assert headline["data"]["test"] == round(best["test_clip_accuracy"], 4) and set(headline["data"]) == {
        "ensemble",
        "val_loss",
        "val",
        "test",
        "cnn_runs",
        "head_birdnet+aisfx",
        "clips",
    }
    table = sandbox.dvc(workspace, "metrics", "show").stdout
    assert max(map(len, table.splitlines())) <= 120, table
    # A run predicts every validation file; a head only the originals, the rows the ensemble fits on.
    val_index = pd.read_csv(workspace / "data/spectrograms/val/index.csv")
    assert np.load(workspace / "models/run-1/val_probs.npy").shape == (len(val_index), 10)
    assert np.load(workspace / "models/head-birdnet+aisfx/val_probs.npy").shape == ((val_index["copy"] == 0).sum(), 10)


def test_predict_classifies_real_clips_as_training_saw_them(workspace, tmp_path):
    """``audioclass predict`` on held-out real clips, in other formats, beside a file it cannot read."""
    import soundfile as sf

    from audioclass import audio
    from audioclass.predict import load_ensemble, model_input

    ensemble = load_ensemble(workspace / "params.yaml", workspace / "models", workspace / "reports/ensemble/ensemble.json")
    test = pd.read_csv(workspace / "data/spectrograms/test/index.csv")
    first = test[test["copy"] == 0].iloc[0]
    meta = pd.read_csv(workspace / "data/prepared/metadata.csv").set_index("clip_id")
    original = shared_esc10() / meta.loc[first["clip_id"], "original_path"]
    y, sr = audio.read_audio(original)
    row = np.load(workspace / "data/spectrograms/test/x.npy", mmap_mode="r")[first.name]
    np.testing.assert_array_equal(model_input(y, sr, ensemble), row)  # the very input training and evaluation saw

    stereo = tmp_path / "stereo-48k.flac"
    sf.write(stereo, np.stack([y, y], axis=1)[: 3 * sr], sr, format="FLAC")  # 3 s, two channels
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF not really a wav")
    recording = tmp_path / "three-clips.wav"  # three test clips end to end: a timeline, not one answer
    sf.write(recording, np.concatenate([y, y[::-1], y]), sr)
    result = subprocess.run(
        [str(Path(sys.executable).parent / "audioclass"), "predict", str(original), str(stereo), str(broken), str(recording), "--json"]
        + ["--min-confidence", "0"],  # every window a class, however unsure the tiny models are
        cwd=workspace,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["file"] for r in lines] == [str(original), str(stereo), str(broken), str(recording)]
    timeline = lines[3]
    windows = len(audio.window_starts(3 * len(y), 5 * sr, sr * 5 // 2))  # 5 s windows, 2.5 s apart, one ending at the end
    assert timeline["windows_analysed"] == windows >= 5 and timeline["hop"] == 2.5 and "prediction" not in timeline
    assert timeline["duration"] == round(3 * len(y) / sr, 3)
    assert timeline["detections"][0]["start"] == 0 and timeline["detections"][-1]["end"] == timeline["duration"]
    assert {d["class"] for d in timeline["detections"]} <= set(ensemble.class_names)
    assert broken.name in lines[2]["error"] and "cannot decode audio" in lines[2]["error"]
    for r in lines[:2]:
        assert r["prediction"] in ensemble.class_names and abs(sum(r["probabilities"].values()) - 1) < 1e-3
        assert r["probability"] == max(r["probabilities"].values())
    readable = subprocess.run(
        [str(Path(sys.executable).parent / "audioclass"), "predict", str(original), "--top", "2"],
        cwd=workspace,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert readable.startswith(f"{original}: {lines[0]['prediction']} (")


def test_predict_with_a_pretrained_member_gives_what_the_stages_gave_on_test(workspace):
    """The CNN runs and the head over every member: new audio goes through the embed stage's own code."""
    from audioclass import audio
    from audioclass.calibration import tempered
    from audioclass.predict import classify, load_ensemble, model_clip

    ensemble = load_ensemble(workspace / "params.yaml", workspace / "models", workspace / "reports/ensemble/ensemble.json", "all/average")
    members = ["run-1", "crnn-1", "head-birdnet+aisfx"]
    assert [m.name for m in ensemble.members] == members and all(m.head is not None for m in ensemble.members[2:])
    test = pd.read_csv(workspace / "data/spectrograms/test/index.csv")
    meta = pd.read_csv(workspace / "data/prepared/metadata.csv").set_index("clip_id")
    rows = test.index[:3]
    clips = [model_clip(*audio.read_audio(shared_esc10() / meta.loc[test.loc[i, "clip_id"], "original_path"]), ensemble) for i in rows]
    stored = np.mean([np.load(workspace / f"models/{m}/test_probs.npy")[rows] for m in members], axis=0)
    calibrated = tempered(stored / stored.sum(axis=1, keepdims=True), ensemble.temperature)  # the ensemble stage's temperature
    np.testing.assert_allclose(classify(clips, ensemble), calibrated, atol=1e-4)


def post(url: str, body: bytes) -> tuple[int, dict]:
    """A plain HTTP client's POST of a JSON body: the status and the decoded answer, whatever the status."""
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())


def test_the_registered_ensemble_served_over_http_classifies_a_wav_s_bytes_as_predict_does(workspace, tmp_path):
    """``mlflow models serve`` on loopback, as the docs show it; the client sends audio, not a path on the server."""
    import soundfile as sf
    from mlflow.models import get_model_info

    from audioclass.predict import _registered_ensemble, analyse_files

    store, version = latest_ensemble(workspace)
    uri = f"models:/{ENSEMBLE_MODEL}/{version}"
    env = sandbox.environment(workspace) | {"MLFLOW_TRACKING_URI": store}
    test = pd.read_csv(workspace / "data/spectrograms/test/index.csv").query("copy == 0")
    meta = pd.read_csv(workspace / "data/prepared/metadata.csv").set_index("clip_id")
    clips = [sf.read(shared_esc10() / meta.loc[c, "original_path"], dtype="float32") for c in test["clip_id"][:3]]
    recording = tmp_path / "three-clips.wav"
    sf.write(recording, np.concatenate([y for y, _ in clips]), clips[0][1])

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", store)
        assert get_model_info(uri).signature.inputs.input_names() == ["path", "audio"]
        [expected] = analyse_files([recording], _registered_ensemble(uri))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    with log.open("w") as output:
        server = subprocess.Popen(
            [str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m", uri, "--env-manager", "local"]
            + ["--host", "127.0.0.1", "--port", str(port)],
            cwd=workspace,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        for _ in range(240):  # loading TensorFlow and the members takes a while on two cores
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=2) as ping:
                    if ping.status == 200:
                        break
            except OSError:
                assert server.poll() is None, log.read_text()
                time.sleep(0.5)
        else:
            pytest.fail(f"the server did not answer /ping:\n{log.read_text()}")
        wav = base64.b64encode(recording.read_bytes()).decode()
        request = lambda audio: json.dumps({"dataframe_split": {"columns": ["audio"], "data": [[audio]]}}).encode()  # noqa: E731
        status, answer = post(f"{url}/invocations", request(wav))
        assert status == 200, answer
        [served] = answer["predictions"]
        assert served["file"] == "audio[0]" and served["windows_analysed"] == expected["windows_analysed"] >= 3
        assert [(d["start"], d["end"], d["class"]) for d in served["detections"]] == [
            (d["start"], d["end"], d["class"]) for d in expected["detections"]
        ]
        malformed = {
            "an empty body": b"",
            "not base64": request("this is not base64!"),
            "not audio": request(base64.b64encode(b"hello, not a sound").decode()),
        }
        for what, body in malformed.items():
            status, answer = post(f"{url}/invocations", body)
            assert 400 <= status < 500 and answer["message"], (what, status, answer)
            assert "stack_trace" not in answer and "Traceback" not in answer["message"], what
        assert "audio[0]: cannot decode audio" in post(f"{url}/invocations", malformed["not audio"])[1]["message"]
        with ThreadPoolExecutor(2) as clients:  # requests in flight together, as real clients send them
            together = list(clients.map(lambda _: post(f"{url}/invocations", request(wav)), range(2)))
        assert [status for status, _ in together] == [200, 200] and together[0][1] == together[1][1]  # and it keeps serving
    finally:
        server.terminate()
        server.wait(timeout=60)


def test_recordings_named_in_params_are_analysed_by_dvc_repro_and_none_by_default(workspace):
    import soundfile as sf

    from audioclass.predict import analyse_files, load_ensemble

    assert not [line for line in sandbox.dvc(workspace, "stage", "list").stdout.splitlines() if line.startswith("analyse")]
    test = pd.read_csv(workspace / "data/spectrograms/test/index.csv").query("copy == 0")
    meta = pd.read_csv(workspace / "data/prepared/metadata.csv").set_index("clip_id")
    clips = [sf.read(shared_esc10() / meta.loc[c, "original_path"], dtype="float32") for c in test["clip_id"][:2]]
    (workspace / "recordings").mkdir()
    sf.write(workspace / "recordings/street.wav", np.concatenate([y for y, _ in clips]), clips[0][1])
    sandbox.set_params(workspace, {"analyse": {"recordings": {"street": "recordings/street.wav"}, "min_confidence": 0.0}})
    try:
        first = sandbox.dvc(workspace, "repro")
        assert stages_run(first.stdout) == [*CHECK, "analyse@street"], first.stdout  # nothing else: the models are as they were
        written = json.loads((workspace / "reports/analyse/street.json").read_text())
        ensemble = load_ensemble(workspace / "params.yaml", workspace / "models", workspace / "reports/ensemble/ensemble.json")
        [expected] = analyse_files([workspace / "recordings/street.wav"], ensemble, min_confidence=0.0, windows=True)
        assert written == json.loads(json.dumps(expected | {"file": "recordings/street.wav"}))  # as params.yaml names it
        assert len(written["windows"]) == written["windows_analysed"] >= 3
        raven = (workspace / "reports/analyse/street.raven.txt").read_text().splitlines()
        audacity = (workspace / "reports/analyse/street.audacity.txt").read_text().splitlines()
        assert raven[0].startswith("Selection\tView\tChannel") and len(raven) - 1 == len(audacity) == len(written["detections"]) >= 1
        assert stages_run(sandbox.dvc(workspace, "repro").stdout) == []
        sandbox.set_params(workspace, {"analyse": {"recordings": {"gone": "recordings/gone.wav"}}})
        missing = sandbox.dvc(workspace, "repro", check=False)
        assert missing.returncode != 0
        assert "error: params.yaml: analyse.recordings.gone: recordings/gone.wav not found; expected the path of an audio file" in (
            missing.stderr + missing.stdout
        )
    finally:
        sandbox.set_params(workspace, {"analyse": sandbox.Replace(recordings={}, hop=None, min_confidence=None)})
    assert set(stages_run(sandbox.dvc(workspace, "repro").stdout)) <= set(CHECK)  # check, unless DVC's run cache restores it
    assert not [line for line in sandbox.dvc(workspace, "stage", "list").stdout.splitlines() if line.startswith("analyse")]


def mlflow_runs(workspace, role: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{workspace / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("audioclass")
    return client.search_runs([experiment.experiment_id], f"tags.pipeline_role = '{role}'")


def test_tuning_is_one_mlflow_run_with_nested_trials_and_its_best_params_train(workspace):
    (parent,) = mlflow_runs(workspace, "tune")
    trials = mlflow_runs(workspace, "tune_trial")
    assert len(trials) == 2 and {t.data.tags["mlflow.parentRunId"] for t in trials} == {parent.info.run_id}
    assert {t.data.tags["dvc_stage"] for t in trials} == {"tune"}
    best = yaml.safe_load((workspace / "reports/tune/best_params.yaml").read_text())
    assert parent.data.tags["best_trial"] == str(json.loads((workspace / "reports/tune/tune.json").read_text())["best_trial"])
    for run in mlflow_runs(workspace, "train"):
        assert run.data.params["model.width"] == str(best["model"]["width"]) != "4"  # tuned, not train.model's 4
        assert run.data.params["fit.learning_rate"] == str(best["fit"]["learning_rate"])
    shown = json.loads(sandbox.dvc(workspace, "params", "diff", "--all", "--json").stdout)
    assert "model.width" in shown["reports/tune/best_params.yaml"]  # DVC sees the tuned values as train's params


def test_a_larger_tuning_budget_resumes_the_study_and_reruns_only_what_follows(workspace):
    before = yaml.safe_load((workspace / "reports/tune/best_params.yaml").read_text())
    sandbox.set_params(workspace, {"tune": {"trials": 3}})
    ran = stages_run(sandbox.dvc(workspace, "repro").stdout)
    assert len(pd.read_csv(workspace / "reports/tune/trials.csv")) == 3
    assert len(mlflow_runs(workspace, "tune_trial")) == 3 and len(mlflow_runs(workspace, "tune")) == 1  # one new trial
    changed = yaml.safe_load((workspace / "reports/tune/best_params.yaml").read_text()) != before
    assert ran == CHECK + (MODEL_STAGES + REPORT if changed else ["tune"]), ran  # new best values retrain; a new header line alone does not


def test_tuning_off_trains_with_the_params_as_written(workspace):
    sandbox.set_params(workspace, {"tune": {"enabled": False}})
    assert stages_run(sandbox.dvc(workspace, "repro").stdout) == CHECK + MODEL_STAGES + REPORT
    best = yaml.safe_load((workspace / "reports/tune/best_params.yaml").read_text())
    params = yaml.safe_load((workspace / "params.yaml").read_text())["train"]
    assert best == {"model": params["model"], "fit": params["fit"]}
    assert json.loads((workspace / "models/run-1/config.json").read_text())["model"]["width"] == 4


def test_baselines_are_dvc_metrics_and_mlflow_runs(workspace):
    x = np.load(workspace / "data/raw_vectors/train/x.npy")
    assert x.shape[1] == 882 and 0 <= x.min() and x.max() <= 1
    baselines = ["reports/baselines/classical.json", "reports/baselines/cnn1d/deep1-k7.json", "reports/baselines/features.json"]
    shown = json.loads(sandbox.dvc(workspace, "metrics", "show", "--json", *baselines).stdout)[""]["data"]
    metrics = shown["reports/baselines/classical.json"]["data"]
    models = yaml.safe_load((PROJECT / "params.yaml").read_text())["classical"]["models"]  # the study's list, in full
    assert sorted(metrics) == sorted(models) and 0 <= metrics["gaussian_nb"]["test_file_accuracy"] <= 1
    params = yaml.safe_load((PROJECT / "params.yaml").read_text())["feature_models"]
    feature_fits = len(params["sets"]) * len(params["models"])
    assert len(mlflow_runs(workspace, "baseline")) == len(models) + 1 + feature_fits  # + the 1D CNN
    assert len(mlflow_runs(workspace, "baselines")) == 2  # the classical and feature_models parents
    cnn = shown["reports/baselines/cnn1d/deep1-k7.json"]["data"]
    assert 0 <= cnn["test_clip_accuracy"] <= 1 and cnn["best_epoch"] in (0, 1)
    assert len(pd.read_csv(workspace / "reports/baselines/cnn1d/deep1-k7.csv")) == 2  # one row per epoch
    assert "| gaussian_nb |" in (workspace / "reports/baselines/classical.md").read_text()
    features = shown["reports/baselines/features.json"]["data"]
    assert sorted(features) == sorted(params["sets"]) and 0 <= features["chroma_mel_mfcc"]["svm_rbf"]["cv_accuracy"] <= 1
    assert np.load(workspace / "data/features/train/x.npy").shape[1] == len(pd.read_csv(workspace / "data/features/columns.csv"))


def test_dvc_plots_show_renders_every_declared_plot(workspace, tmp_path):
    result = sandbox.dvc(workspace, "plots", "show", "--out", str(tmp_path / "plots"))
    assert "ERROR" not in result.stderr and "WARNING" not in result.stderr, result.stderr
    html = (tmp_path / "plots" / "index.html").read_text()
    for chart in (
        "tuning_trials",
        "tuning_importance",
        "reports_train_run-1_csv",
        "reports_ensemble_ensemble_predictions_csv",
        "reports_baselines_cnn1d_deep1-k7_csv",
    ):
        assert f"vegaEmbed('#{chart}'" in html, chart
    for image in ("reports_figures_confusion.png", "reports_figures_learning_curves.png", "reports_spectrogram_grid.png"):
        assert (tmp_path / "plots" / "static" / f"workspace_{image}").stat().st_size > 5_000, image
    assert "Ensemble confusion matrix (test clips)" in html


def test_the_results_table_has_every_model_stages_rows(workspace):
    table = (workspace / "reports/results.md").read_text()
    for row in (
        "| gaussian_nb | 1D raw |",
        "| 1D CNN deep1, first kernel 7 | 1D raw |",
        "| mlp | features: chroma_mel_mfcc |",
        "| compact_cnn, 1 single run (mean ± SE) | spectrogram |",
        "| crnn, 1 single run (mean ± SE) | spectrogram |",
        "| runs of 2 architectures, 2 single runs (mean ± SE) | spectrogram |",
        "| ensemble: swarm_jaya | spectrogram |",
        "| head-birdnet+aisfx (linear head) | birdnet+aisfx embedding |",
        "| ensemble of every member: swarm_jaya | spectrogram + embeddings |",
    ):
        assert row in table
    assert "| 81.06 % |" in table and "| 28.1 % |" in table  # the study's figures beside ours


def test_ensemble_param_reruns_only_the_ensemble(workspace):
    sandbox.set_params(workspace, {"ensemble": {"iterations": 6}})
    result = sandbox.dvc(workspace, "repro")
    assert stages_run(result.stdout) == [*CHECK, "ensemble", *REPORT], result.stdout


def test_a_change_to_the_code_the_registered_model_carries_registers_a_new_version_of_it(workspace, tmp_path, monkeypatch):
    """The registered model bundles the package's source, so the stage that registers it depends on all of it."""
    from mlflow.artifacts import download_artifacts

    store, before = latest_ensemble(workspace)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    source = workspace / "src/audioclass/predict.py"
    source.write_text(source.read_text() + "# a change the served model must carry\n")
    result = sandbox.dvc(workspace, "repro")
    ran = stages_run(result.stdout)
    # Nothing is retrained. The report may come from DVC's run cache: with the tiny profile's fits timed alike to
    # the millisecond, the ensemble's outputs can be those of an earlier run.
    assert ran[0] == "ensemble" and set(ran) <= {"ensemble", *REPORT}, result.stdout
    assert latest_ensemble(workspace)[1] == before + 1
    assert not [n for n in NOISE if n in result.stdout + result.stderr], result.stdout + result.stderr
    model = Path(download_artifacts(f"models:/{ENSEMBLE_MODEL}/{before + 1}", dst_path=str(tmp_path)))
    [bundled] = model.rglob("audioclass/predict.py")
    assert bundled.read_text().endswith("# a change the served model must carry\n")


def test_a_new_run_trains_alone_and_joins_the_ensemble(workspace):
    sandbox.set_params(workspace, {"train": {"runs": {"transformer-1": {"seed": 1, "model": {"architecture": "transformer"}}}}})
    ran = stages_run(sandbox.dvc(workspace, "repro").stdout)
    assert ran == [*CHECK, "train@transformer-1", "ensemble", *REPORT], ran  # run-1 and crnn-1 are not retrained
    report = json.loads((workspace / "reports/ensemble/ensemble.json").read_text())
    assert report["members"] == ["run-1", "crnn-1", "transformer-1", "head-birdnet+aisfx"]
    assert report["groups"]["transformer"]["members"] == ["transformer-1"]
    # Dropping a run: its entry, and its outputs, which DVC would otherwise keep until a `dvc checkout` deletes
    # them and so changes the ensemble's models dependency (docs/pipeline.md).
    sandbox.set_params(workspace, {"train": {"runs": TINY["train"]["runs"]}})  # a Replace: transformer-1 goes
    shutil.rmtree(workspace / "models/transformer-1")
    for suffix in ("json", "csv"):
        (workspace / f"reports/train/transformer-1.{suffix}").unlink()
    assert set(stages_run(sandbox.dvc(workspace, "repro").stdout)) <= {*CHECK, "ensemble", *REPORT}  # or from the run cache
    members = json.loads((workspace / "reports/ensemble/ensemble.json").read_text())["members"]
    assert members == ["run-1", "crnn-1", "head-birdnet+aisfx"]


def test_a_missing_source_stops_at_the_check_stage_with_one_line_and_removes_nothing(workspace):
    before = {path: digest for path, digest in tracked_files(workspace).items() if path != "data/source.json"}
    sandbox.set_params(workspace, {"extract": {"source": "data/raw/ESC-1"}})
    result = sandbox.dvc(workspace, "repro", check=False)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode != 0 and errors == [
        "error: params.yaml: extract.source: data/raw/ESC-1 not found; expected a dataset "
        "folder or .zip there: dvc pull, audioclass download, or the path of your own corpus"
    ]
    assert "Errno 2" not in result.stdout + result.stderr and stages_run(result.stdout) == CHECK
    assert {p: d for p, d in tracked_files(workspace).items() if p != "data/source.json"} == before  # extract's outputs and all after
    sandbox.set_params(workspace, {"extract": {"source": "data/raw/ESC-10"}})
    assert set(stages_run(sandbox.dvc(workspace, "repro").stdout)) <= set(CHECK)  # check itself may come from the run cache
    assert (workspace / "data/source.json").is_file() and "up to date" in sandbox.dvc(workspace, "status").stdout


def test_a_failed_stage_loses_nothing_that_dvc_checkout_does_not_restore(workspace):
    """DVC removes a stage's outputs before it runs the stage; every output is in DVC's cache, so the last good run's come back."""
    outputs = ["reports/ensemble/ensemble.json", "reports/ensemble/ensemble.md", "reports/ensemble/ensemble_predictions.csv"]
    before = {path: (workspace / path).read_bytes() for path in outputs}
    data_before = tracked_files(workspace)
    sandbox.set_params(workspace, {"ensemble": {"chosen": "swarm_nope"}})
    result = sandbox.dvc(workspace, "repro", check=False)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode != 0 and len(errors) == 1 and "ensemble.chosen: expected one of" in errors[0], result.stderr
    assert not any((workspace / path).exists() for path in outputs)  # what DVC does; docs/guarantees.md says so
    assert tracked_files(workspace) == data_before  # data and models untouched
    sandbox.dvc(workspace, "checkout")
    assert {path: (workspace / path).read_bytes() for path in outputs} == before
    sandbox.set_params(workspace, {"ensemble": {"chosen": "swarm_jaya"}})
    assert "up to date" in sandbox.dvc(workspace, "status", "ensemble").stdout


def changed_stages(workspace: Path) -> set[str]:
    """The stages ``dvc status`` finds changed, without running anything."""
    return set(json.loads(sandbox.dvc(workspace, "status", "--json").stdout or "{}"))


def test_a_spectrogram_param_and_a_split_param_rerun_what_depends_on_them_but_not_augment(workspace):
    # Both changes at once: dvc status tells which stage each touches; the data stages then run for real, and
    # status shows every stage that reads their outputs as stale. Retraining those would prove nothing more.
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    sandbox.set_params(workspace, {"spectrograms": {"n_mels": 48}})
    assert changed_stages(workspace) == {*CHECK, "spectrograms"}
    sandbox.set_params(workspace, {"split": {"test_fold": 2}})
    assert changed_stages(workspace) == {*CHECK, "split", "spectrograms"}
    result = sandbox.dvc(workspace, "repro", "spectrograms")
    assert sorted(stages_run(result.stdout)) == sorted([*CHECK, "split", "spectrograms"]), result.stdout  # not augment
    assert np.load(workspace / "data/spectrograms/test/x.npy", mmap_mode="r").shape[1] == 48
    assert set(pd.read_csv(workspace / "data/spectrograms/test/index.csv")["fold"]) == {2}
    # Stale: what reads the spectrograms or the split (a new list of files for embed and the baselines' inputs).
    # The heads and the baselines' models come after those, and go stale when they rerun.
    readers = {*MODEL_STAGES, "embed@birdnet+aisfx", "raw_vectors", "features", *REPORT}
    assert changed_stages(workspace) == readers
    # Back to the params as they were: the data stages' outputs come back from DVC's run cache, and nothing retrains.
    sandbox.set_params(workspace, {"spectrograms": params["spectrograms"], "split": params["split"]})
    result = sandbox.dvc(workspace, "repro")
    assert set(stages_run(result.stdout)) <= set(CHECK), result.stdout
    assert changed_stages(workspace) == set()


def test_bad_param_fails_the_stage_with_one_line(workspace):
    sandbox.set_params(workspace, {"augment": {"copies": 0}})
    result = sandbox.dvc(workspace, "repro", check=False)
    assert result.returncode != 0
    assert "error: params.yaml: augment.copies: expected an integer >= 1 (1 = originals only), got 0" in result.stderr + result.stdout
    assert not (workspace / "data/augmented").exists() or not any((workspace / "data/augmented").glob(".augmented.*"))
    sandbox.set_params(workspace, {"augment": TINY["augment"]})  # put back only what broke: the lock matches the rest


def test_temporary_experiment_logs_to_the_projects_store(workspace):
    """``dvc exp run --temp`` works in .dvc/tmp/exps/…; its runs must land in the project's mlflow.db."""
    from mlflow.tracking import MlflowClient

    result = sandbox.dvc(workspace, "exp", "run", "--temp", "-S", "ensemble.population=7", "-n", "temp-exp")
    assert "ensemble" in stages_run(result.stdout), result.stdout
    client = MlflowClient(f"sqlite:///{workspace / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("audioclass")
    runs = client.search_runs([experiment.experiment_id], "tags.dvc_exp_name = 'temp-exp'")
    assert [r.data.tags["pipeline_role"] for r in runs] == ["ensemble"]
    assert runs[0].data.params["ensemble.population"] == "7"
    assert not list((workspace / ".dvc" / "tmp").rglob("mlflow.db"))  # no stray store in the temporary copy
    assert experiment.artifact_location.startswith((workspace / "mlartifacts").resolve().as_uri())


def test_queued_experiments_run_on_two_workers_and_log_to_the_projects_store(workspace):
    """``dvc exp run --queue`` + ``dvc queue start --jobs 2``: two background workers in temporary copies,
    both logging to mlflow.db here at once, without errors or lost runs."""
    import time

    from mlflow.tracking import MlflowClient

    for name, iterations in (("queued-a", 3), ("queued-b", 4)):
        sandbox.dvc(workspace, "exp", "run", "--queue", "-S", f"ensemble.iterations={iterations}", "-n", name)
    sandbox.dvc(workspace, "queue", "start", "--jobs", "2")
    deadline = time.monotonic() + 600
    while not {"queued-a", "queued-b"} <= set(sandbox.dvc(workspace, "exp", "list", "--name-only").stdout.split()):
        status = sandbox.dvc(workspace, "queue", "status").stdout
        assert "Failed" not in status, status + sandbox.dvc(workspace, "queue", "logs", "queued-a", check=False).stdout
        assert time.monotonic() < deadline, status
        time.sleep(2)
    sandbox.dvc(workspace, "queue", "stop", "--kill", check=False)
    end_queue_workers(workspace)
    shown = json.loads(sandbox.dvc(workspace, "exp", "show", "--json").stdout)
    assert {"queued-a", "queued-b"} <= {exp.get("name") for row in shown for exp in row.get("experiments") or []}
    diff = json.loads(sandbox.dvc(workspace, "exp", "diff", "queued-a", "queued-b", "--json").stdout)
    changed = diff["params"]["params.yaml"]["ensemble.iterations"]
    assert (changed["old"], changed["new"]) == (3, 4)
    client = MlflowClient(f"sqlite:///{workspace / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("audioclass")
    for name, iterations in (("queued-a", "3"), ("queued-b", "4")):
        runs = client.search_runs([experiment.experiment_id], f"tags.dvc_exp_name = '{name}'")
        assert [r.data.tags["pipeline_role"] for r in runs] == ["ensemble"] and runs[0].data.params["ensemble.iterations"] == iterations
        assert runs[0].info.status == "FINISHED" and "all.swarm_jaya.test_clip_accuracy" in runs[0].data.metrics


def end_queue_workers(workspace, grace=60):
    """Wait for the queue's worker processes to exit, and kill any still there after ``grace`` seconds: a
    celery worker can hang on its way out, and must not outlive the test (nor hold the next DVC command)."""
    import psutil

    workers = []
    for pid_file in (workspace / ".dvc" / "tmp" / "exps" / "celery").glob("*.pid"):
        try:
            workers.append(psutil.Process(int(pid_file.read_text())))
        except psutil.NoSuchProcess:
            pass
    _, running = psutil.wait_procs(workers, timeout=grace)
    for worker in running:
        worker.kill()

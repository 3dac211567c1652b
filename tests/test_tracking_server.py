"""The tiny pipeline logging over HTTP to a real ``mlflow server`` with users and passwords, as a team would run it."""

import contextlib
import json
import os
import re
import secrets
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.server import get_app_client

from audioclass import sandbox
from conftest import PROJECT, free_port, shared_esc10
from test_pipeline import PER_CLASS, TINY, stages_run

pytestmark = pytest.mark.e2e


@dataclass(frozen=True)
class Server:
    url: str
    user: str
    password: str

    def credentials(self, user: str | None = None, password: str | None = None) -> dict[str, str]:
        return {"MLFLOW_TRACKING_USERNAME": user or self.user, "MLFLOW_TRACKING_PASSWORD": password or self.password}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``mlflow server`` with its basic-auth app on loopback, as the README starts it, and one user besides the admin.

    SQLite backends (so it has a model registry; the users in ``basic_auth.db`` beside
    it) and proxied artifacts. Passwords are random, so a test can look for them in output.
    """
    root = tmp_path_factory.mktemp("mlflow-server")
    url = f"http://127.0.0.1:{free_port()}"
    command = [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        "--app-name",
        "basic-auth",
        "--host",
        "127.0.0.1",
        "--port",
        url.rsplit(":", 1)[1],
        "--backend-store-uri",
        f"sqlite:///{root / 'server.db'}",
        "--artifacts-destination",
        str(root / "artifacts"),
        "--workers",
        "1",
    ]
    admin = secrets.token_urlsafe(12)
    env = {**os.environ, "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16), "MLFLOW_AUTH_ADMIN_PASSWORD": admin}
    log = (root / "server.log").open("w")
    process = subprocess.Popen(command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while True:
        try:
            if urllib.request.urlopen(f"{url}/health", timeout=2).read().strip() == b"OK":
                break
        except OSError:
            pass
        assert process.poll() is None and time.monotonic() < deadline, (root / "server.log").read_text()
        time.sleep(0.5)
    member = Server(url, "alice", secrets.token_urlsafe(12))
    with patched_environ(Server(url, "admin", admin).credentials()):
        get_app_client("basic-auth", tracking_uri=url).create_user(member.user, member.password)
    yield member
    process.terminate()
    process.wait(timeout=30)


@contextlib.contextmanager
def patched_environ(values: dict[str, str]):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key)
            else:
                os.environ[key] = value


@pytest.fixture
def signed_in(server, monkeypatch):
    """This process's MLflow client, signed in as the team member."""
    for key, value in server.credentials().items():
        monkeypatch.setenv(key, value)
    return server.url


@pytest.fixture(scope="module")
def served(server, tmp_path_factory):
    """The tiny pipeline up to the ensemble, every stage logging to the server as the team member."""
    # One CNN run and one pretrained backend: what is tested here is what reaches the server, and BirdNET alone
    # embeds fastest. Each request to a server with passwords costs it a fifth of a second of hashing.
    profile = TINY | {"train": {**TINY["train"], "runs": sandbox.Replace({"run-1": {"seed": 1}})}, "embed": {"models": ["birdnet"]}}
    work = sandbox.create(PROJECT, tmp_path_factory.mktemp("served") / "project", profile)
    sandbox.tiny_esc10(shared_esc10(), work / "data/raw/ESC-10", PER_CLASS)
    sandbox.dvc(work, "add", "data/raw/ESC-10")
    result = sandbox.dvc(work, "repro", "ensemble", env={"MLFLOW_TRACKING_URI": server.url, **server.credentials()})
    assert stages_run(result.stdout)[-1] == "ensemble", result.stdout
    return Served(work, result.stdout + result.stderr)


@dataclass(frozen=True)
class Served:
    work: Path
    output: str  # dvc repro's stdout and stderr


def test_every_run_reaches_the_server_with_metrics_params_models_and_stage_tags(signed_in, served):
    from mlflow import MlflowClient

    client = MlflowClient(signed_in)
    experiment = client.get_experiment_by_name("audioclass")
    runs = client.search_runs([experiment.experiment_id])
    by_role = {}
    for run in runs:
        by_role.setdefault(run.data.tags.get("pipeline_role"), []).append(run)
    assert {r.data.tags["dvc_stage"] for r in by_role["train"]} == {"train@run-1"}
    assert len(by_role["tune"]) == 1 and len(by_role["tune_trial"]) == 2
    assert {t.data.tags["dvc_stage"] for t in by_role["tune_trial"]} == {"tune"}
    (ensemble,) = by_role["ensemble"]
    assert ensemble.data.tags["dvc_stage"] == "ensemble" and "all.swarm_jaya.val_log_loss" in ensemble.data.metrics
    (head,) = by_role["head"]
    assert head.data.tags["dvc_stage"] == "head@birdnet" and head.data.tags["licence"].startswith("CC BY-NC-SA 4.0")
    assert sorted(ensemble.data.params["member_mlflow_run_ids"].split(",")) == sorted(r.info.run_id for r in [*by_role["train"], head])
    for run in by_role["train"]:
        assert "test_clip_accuracy" in run.data.metrics and run.data.params["seed"] == "1"
        assert len(client.get_metric_history(run.info.run_id, "val_loss")) == 2  # per epoch
        assert {"run/model.keras", "run/val_probs.npy"} <= {a.path for a in client.list_artifacts(run.info.run_id, "run")}
    assert not (served.work / "mlflow.db").exists()  # nothing went to the local store


def test_the_ensemble_and_its_members_are_registered_and_serve_predictions(signed_in, served):
    import mlflow
    import pandas as pd
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient(signed_in)
    (version,) = client.search_model_versions("name = 'audioclass-ensemble'")
    report = json.loads((served.work / "reports/ensemble/ensemble.json").read_text())
    bundled = report["groups"][report["best"]["group"]]["members"]  # the group best on validation: CNN runs, the head, or both
    assert version.tags["group"] == report["best"]["group"] and version.tags["method"] == report["best"]["method"]
    cnns = client.search_model_versions("name = 'audioclass-cnn'")
    heads = client.search_model_versions("name = 'audioclass-head'")
    assert (len(cnns), len(heads)) == (sum(not m.startswith("head-") for m in bundled), sum(m.startswith("head-") for m in bundled))
    run_ids = dict(zip(report["members"], report["member_mlflow_run_ids"]))
    assert sorted(m.run_id for m in [*cnns, *heads]) == sorted(run_ids[m] for m in bundled)
    assert len(version.tags["member_versions"].split(",")) == len(bundled)
    ensemble_run = client.search_runs([client.get_experiment_by_name("audioclass").experiment_id], "tags.pipeline_role = 'ensemble'")[0]
    assert version.run_id == ensemble_run.info.run_id and version.tags["method"]
    mlflow.set_tracking_uri(signed_in)
    model = mlflow.pyfunc.load_model("models:/audioclass-ensemble/1")
    clips = sorted((served.work / "data/raw/ESC-10").rglob("*.ogg"))[:2]
    results = model.predict(pd.DataFrame({"path": [str(clips[0]), None], "audio": [None, clips[1].read_bytes()]}))
    assert [r["file"] for r in results] == [str(clips[0]), "audio[1]"]
    [by_path] = model.predict(pd.DataFrame({"path": [str(clips[1])]}))
    assert results[0]["prediction"] and results[1]["probabilities"] == by_path["probabilities"]  # bytes or path: one answer
    with pytest.raises(MlflowException, match=r"audio\[0\]: cannot decode audio"):
        model.predict(pd.DataFrame({"audio": [(served.work / "params.yaml").read_bytes()]}))


def stage_without_the_right_credentials(served: Served, server: Server, credentials: dict[str, str]) -> subprocess.CompletedProcess:
    """The train stage's command, as ``dvc repro`` would run it, for the run already trained."""
    env = {k: v for k, v in sandbox.environment(served.work).items() if not k.startswith("MLFLOW_TRACKING_")}
    command = [sys.executable, "-m", "audioclass.stages.train", "--run", "run-1", "--data", "data/spectrograms"]
    command += ["--out", "models/run-1", "--metrics", "reports/train/run-1.json", "--history", "reports/train/run-1.csv"]
    env |= {"MLFLOW_TRACKING_URI": server.url, **credentials}
    return subprocess.run(command, cwd=served.work, env=env, capture_output=True, text=True)


@pytest.mark.parametrize(
    "who, expected",
    [("anonymous", r"the server asks for credentials \(401\)"), ("wrong password", r"the server refuses user 'alice' \(401\)")],
)
def test_a_stage_without_valid_credentials_stops_with_one_line_before_training(who, expected, server, served):
    model = served.work / "models/run-1/model.keras"
    before = model.read_bytes()
    credentials = {} if who == "anonymous" else server.credentials(password="not-" + server.password)
    result = stage_without_the_right_credentials(served, server, credentials)
    assert result.returncode == 1
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert re.fullmatch(rf"error: MLFLOW_TRACKING_URI={re.escape(server.url)}: {expected}; expected MLFLOW_TRACKING_USERNAME .*", line)
    assert result.stderr.strip().splitlines()[-1] == line and "Epoch" not in result.stdout + result.stderr
    assert model.read_bytes() == before  # the run's output is untouched


def test_no_password_reaches_the_output_the_runs_or_the_registry(signed_in, server, served):
    from mlflow import MlflowClient

    client = MlflowClient(signed_in)
    experiment = client.get_experiment_by_name("audioclass")
    runs = client.search_runs([experiment.experiment_id])
    versions = client.search_model_versions()
    recorded = [served.output]
    recorded += [json.dumps([r.data.params, r.data.tags]) for r in runs]
    recorded += [json.dumps(v.tags) for v in versions]
    assert len(runs) >= 5 and versions
    assert not [text for text in recorded if server.password in text]

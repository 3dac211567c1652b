"""The tiny pipeline logging over HTTP to a real ``mlflow server``, as a team would run it."""

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from audioclass import sandbox
from conftest import PROJECT, shared_esc10
from test_pipeline import PER_CLASS, TINY, stages_run

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``mlflow server`` on loopback with a SQLite backend (so it has a model registry) and proxied artifacts."""
    root = tmp_path_factory.mktemp("mlflow-server")
    url = f"http://127.0.0.1:{free_port()}"
    command = [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
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
    log = (root / "server.log").open("w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while True:
        try:
            if urllib.request.urlopen(f"{url}/health", timeout=2).read().strip() == b"OK":
                break
        except OSError:
            pass
        assert process.poll() is None and time.monotonic() < deadline, (root / "server.log").read_text()
        time.sleep(0.5)
    yield url
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def served(server, tmp_path_factory):
    """The tiny pipeline up to the ensemble, every stage logging to the server."""
    work = sandbox.create(PROJECT, tmp_path_factory.mktemp("served") / "project", TINY)
    sandbox.tiny_esc10(shared_esc10(), work / "data/raw/ESC-10", PER_CLASS)
    sandbox.dvc(work, "add", "data/raw/ESC-10")
    result = sandbox.dvc(work, "repro", "ensemble", env={"MLFLOW_TRACKING_URI": server})
    assert stages_run(result.stdout)[-1] == "ensemble", result.stdout
    return work


def test_every_run_reaches_the_server_with_metrics_params_models_and_stage_tags(server, served):
    from mlflow import MlflowClient

    client = MlflowClient(server)
    experiment = client.get_experiment_by_name("audioclass")
    runs = client.search_runs([experiment.experiment_id])
    by_role = {}
    for run in runs:
        by_role.setdefault(run.data.tags.get("pipeline_role"), []).append(run)
    assert {r.data.tags["dvc_stage"] for r in by_role["train"]} == {"train@run-1", "train@crnn-1"}
    assert len(by_role["tune"]) == 1 and len(by_role["tune_trial"]) == 2
    assert {t.data.tags["dvc_stage"] for t in by_role["tune_trial"]} == {"tune"}
    (ensemble,) = by_role["ensemble"]
    assert ensemble.data.tags["dvc_stage"] == "ensemble" and "all.swarm_jaya.val_file_accuracy" in ensemble.data.metrics
    (head,) = by_role["head"]
    assert head.data.tags["dvc_stage"] == "head@birdnet" and head.data.tags["licence"].startswith("CC BY-NC-SA 4.0")
    assert sorted(ensemble.data.params["member_mlflow_run_ids"].split(",")) == sorted(r.info.run_id for r in [*by_role["train"], head])
    for run in by_role["train"]:
        assert "test_clip_accuracy" in run.data.metrics and run.data.params["seed"] == "1"
        assert len(client.get_metric_history(run.info.run_id, "val_loss")) == 2  # per epoch
        assert {"run/model.keras", "run/val_probs.npy"} <= {a.path for a in client.list_artifacts(run.info.run_id, "run")}
    assert not (served / "mlflow.db").exists()  # nothing went to the local store


def test_the_ensemble_and_its_members_are_registered_and_serve_predictions(server, served):
    import mlflow
    import pandas as pd

    client = mlflow.MlflowClient(server)
    (version,) = client.search_model_versions("name = 'audioclass-ensemble'")
    report = json.loads((served / "reports/ensemble/ensemble.json").read_text())
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
    mlflow.set_tracking_uri(server)
    model = mlflow.pyfunc.load_model("models:/audioclass-ensemble/1")
    clips = sorted((served / "data/raw/ESC-10").rglob("*.ogg"))[:2]
    frame = model.predict(pd.DataFrame({"path": [str(c) for c in clips] + [str(served / "params.yaml")]}))
    assert list(frame["file"]) == [str(c) for c in clips] + [str(served / "params.yaml")]
    assert frame["prediction"].iloc[:2].notna().all() and "cannot decode audio" in frame["error"].iloc[2]

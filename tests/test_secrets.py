"""Credentials in URLs never reach a terminal, a log or MLflow: every error path of tuning, tracking and ``predict --registered``."""

import http.server
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from audioclass import tracking
from audioclass.audio import write_wav
from audioclass.config import load_params
from audioclass.errors import ConfigError, TrackingError
from audioclass.predict import REGISTERED_MODEL_CODE
from audioclass.tuning import STORAGE_ENV, TuneConfig, tune
from audioclass.urls import masked, masked_text, password_of
from conftest import PROJECT, band_spectrograms, config, tone, write_spectrogram_folder
from test_tune import BASE
from test_tune import TINY as TINY_TUNE

PASSWORD = "hunter2"
UNREACHABLE_DATABASE = f"postgresql+psycopg://bob:{PASSWORD}@127.0.0.1:1/optuna"


@pytest.mark.parametrize(
    "url, shown",
    [
        (UNREACHABLE_DATABASE, "postgresql+psycopg://bob:***@127.0.0.1:1/optuna"),
        ("mysql+pymysql://bob:p%40ss@db.lan/optuna", "mysql+pymysql://bob:***@db.lan/optuna"),
        ("postgresql://bob:p@ss@db.lan/optuna", "postgresql://bob:***@db.lan/optuna"),  # SQLAlchemy would show 'ss@db.lan'
        ("postgresql://bob:p/ss@db.lan/optuna", "postgresql://bob:***@db.lan/optuna"),
        ("http://alice:s3cret@mlflow.lan:5000", "http://alice:***@mlflow.lan:5000"),
        ("https://alice:a@b@mlflow.lan/", "https://alice:***@mlflow.lan/"),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("sqlite:////tmp/optuna.db", "sqlite:////tmp/optuna.db"),
        ("journal:optuna.journal", "journal:optuna.journal"),
        ("postgresql://bob@db.lan/optuna", "postgresql://bob@db.lan/optuna"),
    ],
)
def test_masked_hides_exactly_the_password(url, shown):
    assert masked(url) == shown


def test_masked_text_hides_urls_in_a_message_and_a_password_quoted_on_its_own():
    message = f"cannot open 'postgresql://bob:{PASSWORD}@h/db': password {PASSWORD!r} and s@cret rejected"
    assert masked_text(message, UNREACHABLE_DATABASE, "http://a:s%40cret@h") == (
        "cannot open 'postgresql://bob:***@h/db': password '***' and *** rejected"
    )
    assert password_of("http://h:5000/api") is None
    assert masked_text("clip at 22050 Hz: user@host wrote http://h:5000/x") == "clip at 22050 Hz: user@host wrote http://h:5000/x"
    assert masked_text("a cat sat at a mat: a", "postgresql://bob:a@h/db") == "*** cat sat at *** mat: ***"  # alone, not inside words


@pytest.fixture
def spectrograms(tmp_path):
    splits = {"train": band_spectrograms(24, 2, 0), "val": band_spectrograms(9, 2, 1), "test": band_spectrograms(9, 2, 2)}
    return write_spectrogram_folder(tmp_path / "spectrograms", splits)


def project_params(tmp_path, **tune_values) -> None:
    params = load_params(PROJECT / "params.yaml")
    params["tune"].update(enabled=True, **tune_values)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))


def run_module(module: str, *args: str, cwd, env: dict[str, str]) -> subprocess.CompletedProcess:
    """``python -m module`` (or the ``audioclass`` command for ``audioclass``) with no credentials but those in ``env``."""
    import os

    command = [str(Path(sys.executable).parent / "audioclass")] if module == "audioclass" else [sys.executable, "-m", module]
    clean = {k: v for k, v in os.environ.items() if k not in (STORAGE_ENV, "MLFLOW_TRACKING_URI") and not k.startswith("MLFLOW_TRACKING_")}
    env = {**clean, "MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'mlflow.db'}", **env}
    return subprocess.run([*command, *args], cwd=cwd, env=env, capture_output=True, text=True)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert PASSWORD not in result.stdout + result.stderr
    return line


def test_a_tuning_worker_that_cannot_reach_its_storage_names_it_without_the_password(tmp_path):
    project_params(tmp_path)
    result = run_module(
        "audioclass.stages.tune", "--data", str(tmp_path), "--worker", cwd=tmp_path, env={STORAGE_ENV: UNREACHABLE_DATABASE}
    )
    line = one_error_line(result)
    assert line.startswith(f"error: ${STORAGE_ENV}: cannot open Optuna storage 'postgresql+psycopg://bob:***@127.0.0.1:1/optuna': ")


def test_the_tune_stage_that_cannot_reach_its_storage_names_it_without_the_password(spectrograms, tmp_path, monkeypatch):
    monkeypatch.setenv(STORAGE_ENV, UNREACHABLE_DATABASE)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    with pytest.raises(ConfigError) as raised:
        tune(config(TuneConfig, "tune", **TINY_TUNE), BASE, spectrograms, tmp_path / "out")
    assert "bob:***@127.0.0.1" in str(raised.value) and PASSWORD not in str(raised.value)
    assert not (tmp_path / "out").exists()


def test_a_password_in_params_yaml_is_refused_without_being_shown(tmp_path):
    project_params(tmp_path, storage=UNREACHABLE_DATABASE)
    line = one_error_line(run_module("audioclass.stages.tune", "--data", str(tmp_path), "--worker", cwd=tmp_path, env={}))
    assert line.startswith("error: ") and "tune.storage: expected a URL without a password" in line
    assert f"${STORAGE_ENV}" in line and "bob:***@" in line


def test_an_unreachable_tracking_server_is_named_without_the_password(tmp_path):
    uri = f"http://alice:{PASSWORD}@127.0.0.1:1"
    train = ["--run", "run-1", "--data", "d", "--out", "m", "--metrics", "m.json", "--history", "h.csv"]
    train_line = one_error_line(
        run_module(
            "audioclass.stages.train", "--params", str(PROJECT / "params.yaml"), *train, cwd=tmp_path, env={"MLFLOW_TRACKING_URI": uri}
        )
    )
    assert train_line.startswith("error: MLFLOW_TRACKING_URI=http://alice:***@127.0.0.1:1: no tracking server answers")
    clip = tmp_path / "clip.wav"
    write_wav(clip, tone(440, 1.0, 22050), 22050)
    predict = run_module(
        "audioclass", "predict", str(clip), "--registered", "models:/audioclass-ensemble/1", cwd=tmp_path, env={"MLFLOW_TRACKING_URI": uri}
    )
    assert one_error_line(predict) == train_line


def test_a_registered_model_that_is_not_there_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    with pytest.raises(TrackingError, match=r"^models:/audioclass-ensemble/7: cannot load it from sqlite:///\S+mlflow\.db: \S"):
        tracking.load_model("models:/audioclass-ensemble/7", REGISTERED_MODEL_CODE)


class RefusingServer(http.server.BaseHTTPRequestHandler):
    """An MLflow server with authentication, as far as the fail-fast check sees it: healthy, and 401 without the right user."""

    def do_GET(self):  # noqa: N802 - http.server's name
        import base64

        signed_in = self.headers.get("Authorization") == "Basic " + base64.b64encode(b"alice:right").decode()
        self.send_response(200 if self.path == "/health" or signed_in else 401)
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, *args):
        pass


@pytest.fixture
def refusing_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RefusingServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.parametrize(
    "in_uri, user, password, expected",
    [
        (None, None, None, "the server asks for credentials (401)"),
        (None, "alice", PASSWORD, "the server refuses user 'alice' (401)"),
        (f"alice:{PASSWORD}", None, None, "the server refuses user 'alice' (401)"),
        (None, "alice", "right", None),
        ("alice:right", None, None, None),
    ],
)
def test_a_server_that_refuses_the_credentials_stops_the_stage_with_one_line(
    refusing_server, monkeypatch, in_uri, user, password, expected
):
    for key, value in (("MLFLOW_TRACKING_USERNAME", user), ("MLFLOW_TRACKING_PASSWORD", password)):
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            monkeypatch.setenv(key, value)
    uri = refusing_server.replace("//", f"//{in_uri}@") if in_uri else refusing_server
    if expected is None:
        tracking.require_answering(uri)
        return
    with pytest.raises(TrackingError) as raised:
        tracking.require_answering(uri)
    message = str(raised.value)
    assert message.startswith(f"MLFLOW_TRACKING_URI={masked(uri)}: {expected}; expected MLFLOW_TRACKING_USERNAME and ")
    assert PASSWORD not in message

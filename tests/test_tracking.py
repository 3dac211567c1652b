"""Where MLflow runs go: the project's store, even from DVC's temporary experiment workspaces."""

import json
from pathlib import Path

import pytest

from audioclass import tracking


def test_project_root_is_found_from_inside_the_project(tmp_path):
    (tmp_path / ".dvc").mkdir()
    (tmp_path / "src" / "deep").mkdir(parents=True)
    assert tracking.project_root(tmp_path / "src" / "deep") == tmp_path.resolve()


def test_temporary_experiment_workspaces_log_to_the_project(tmp_path):
    workspace = tmp_path / "project" / ".dvc" / "tmp" / "exps" / "tmpabc123"
    (workspace / ".dvc").mkdir(parents=True)  # the temporary copy is a DVC project of its own
    assert tracking.project_root(workspace) == (tmp_path / "project").resolve()


def test_tracking_uri_default_and_override(tmp_path, monkeypatch):
    (tmp_path / ".dvc").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.tracking_uri() == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking.tracking_uri() == "http://127.0.0.1:5000"


def test_run_tags_name_the_dvc_stage_and_experiment(monkeypatch):
    monkeypatch.setenv("DVC_STAGE", "train@3")
    monkeypatch.setenv("DVC_EXP_NAME", "lucky-lark")
    tags = tracking.run_tags()
    assert tags["dvc_stage"] == "train@3" and tags["dvc_exp_name"] == "lucky-lark"
    monkeypatch.delenv("DVC_EXP_NAME")
    assert "dvc_exp_name" not in tracking.run_tags()


def test_flatten_nested_params():
    assert tracking.flatten({"seed": 1, "model": {"width": 16, "opt": {"lr": 0.1}}}) == {"seed": 1, "model.width": 16, "model.opt.lr": 0.1}


def test_run_tags_without_git(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    assert "mlflow.source.git.commit" not in tracking.run_tags()


def test_epoch_logger_never_starts_a_run_of_its_own(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    tracking.epoch_logger().on_epoch_end(0, {"loss": 1.0})
    assert mlflow.active_run() is None


def closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket closes


def test_a_tracking_server_that_does_not_answer_stops_the_run_with_one_line(tmp_path, monkeypatch):
    import pytest

    from audioclass.errors import TrackingError

    (tmp_path / ".dvc").mkdir()
    monkeypatch.chdir(tmp_path)
    uri = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with pytest.raises(
        TrackingError,
        match=rf"^MLFLOW_TRACKING_URI={uri}: no tracking server answers \(.*\); expected a running "
        r"MLflow server, or set AUDIOCLASS_MLFLOW_OFFLINE=1",
    ):
        with tracking.run("never", {"a": 1}):
            raise AssertionError("the run must not start")
    assert not (tmp_path / "mlflow.db").exists()

    monkeypatch.setenv("AUDIOCLASS_MLFLOW_OFFLINE", "1")  # the switch: log locally, server or not
    with tracking.run("offline", {"a": 1}) as run:
        run_id = run.info.run_id
    import mlflow

    assert mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(run_id).data.params == {"a": "1"}


def test_a_stage_fails_fast_on_an_unreachable_server_and_writes_nothing(tmp_path):
    """The real entry point, as dvc runs it: exit 1, one line, no output, before any model is fitted."""
    import os
    import subprocess
    import sys

    from audioclass.dataset import Split
    from conftest import PROJECT, write_spectrogram_folder
    from test_baselines import vectors

    named = lambda s: Split(s.x, s.index.assign(class_name="class" + s.index["label"].astype(str)))  # noqa: E731
    data = write_spectrogram_folder(
        tmp_path / "vectors", {"train": named(vectors(30, 2, 0)), "val": named(vectors(9, 2, 1)), "test": named(vectors(9, 2, 2))}
    )
    (tmp_path / ".dvc").mkdir()
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{closed_port()}"}
    env.pop("AUDIOCLASS_MLFLOW_OFFLINE", None)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "audioclass.stages.classical",
            "--data",
            str(data),
            "--out",
            str(tmp_path / "reports"),
            "--params",
            str(PROJECT / "params.yaml"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "no tracking server answers" in errors[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "reports").exists()


WRITER = """
import sys
import json
from pathlib import Path

from audioclass import tracking
for r in range(3):
    with tracking.run(f"{sys.argv[1]}-{r}", {"writer": sys.argv[1]}, tags={"pipeline_role": "concurrency"}):
        for step in range(25):
            tracking.log_metrics({"loss": 1.0 / (step + 1), "val_accuracy": step / 25}, step=step)
"""


def test_two_processes_share_a_fresh_sqlite_store_without_errors_or_lost_runs(tmp_path):
    """Two writers that start together on a project with no mlflow.db yet, as ``dvc queue start --jobs 2`` does.

    Without the creation lock both run MLflow's schema migrations and one fails (3 runs out of 3 before the fix).
    """
    import os
    import subprocess
    import sys

    import mlflow

    (tmp_path / ".dvc").mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "AUDIOCLASS_MLFLOW_OFFLINE")}
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, name], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
        for name in ("a", "b")
    ]
    for writer in writers:
        assert writer.wait(timeout=300) == 0, writer.stderr.read()[-3000:]
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("audioclass").experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["a-0", "a-1", "a-2", "b-0", "b-1", "b-2"]
    for run in runs:
        assert run.info.status == "FINISHED" and run.data.params["writer"] == run.info.run_name[0]
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "loss")) == list(range(25))


def test_a_logged_keras_model_names_its_requirements_and_signature_instead_of_inferring_them(tmp_path, monkeypatch, capfd):
    """Inference would load the model again in a fresh Python process, for seconds a run; without a signature
    MLflow warns, and a client would not know what to send."""
    import importlib.metadata

    import mlflow
    import mlflow.keras.save
    import numpy as np

    from audioclass.models import ARCHITECTURES
    from audioclass.training import ModelParams

    def no_inference(*args, **kwargs):
        raise AssertionError("MLflow inferred the requirements")

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setattr(mlflow.keras.save, "infer_pip_requirements", no_inference)
    model = ARCHITECTURES["compact_cnn"]((8, 16, 1), 3, ModelParams("compact_cnn", 4, 2, 0.1, 3, 8, 2))
    with mlflow.start_run():
        tracking.log_keras_model(model)
    uri = mlflow.last_logged_model().model_uri
    requirements = open(mlflow.pyfunc.get_model_dependencies(uri)).read().split()
    assert f"keras=={importlib.metadata.version('keras')}" in requirements
    assert any(line.startswith(("tensorflow-cpu==", "tensorflow==")) for line in requirements)
    x = np.random.default_rng(0).random((2, 8, 16, 1)).astype("float32")
    np.testing.assert_allclose(mlflow.keras.load_model(uri).predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
    signature = mlflow.models.get_model_info(uri).signature.to_dict()
    assert [(s["name"], s["tensor-spec"]["shape"]) for s in json.loads(signature["inputs"])] == [("spectrogram", [-1, 8, 16, 1])]
    assert [(s["name"], s["tensor-spec"]["shape"]) for s in json.loads(signature["outputs"])] == [("probabilities", [-1, 3])]
    assert "without specifying model signature" not in capfd.readouterr().err  # MLflow's own handler: not caplog's


def test_an_ensemble_whose_members_were_trained_elsewhere_is_still_registered(tmp_path, monkeypatch, caplog):
    """Models restored by ``dvc pull`` or DVC's run cache have no MLflow run in this store."""
    import mlflow

    from audioclass import bundle
    from audioclass.models import ARCHITECTURES
    from audioclass.training import ModelParams

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    model = ARCHITECTURES["compact_cnn"]((8, 16, 1), 3, ModelParams("compact_cnn", 4, 2, 0.1, 3, 8, 2))
    with mlflow.start_run() as here:
        tracking.log_keras_model(model)
    (tmp_path / "weights.txt").write_text("bundled")
    elsewhere = "0" * 32
    with mlflow.start_run(), caplog.at_level("WARNING"):
        version = bundle.register_ensemble(
            {"weights.txt": tmp_path / "weights.txt"},
            {"run-1": here.info.run_id, "run-2": elsewhere},
            {"method": "average"},
            bundle.signature(2.5, 0.7),
        )
    registered = mlflow.MlflowClient().get_model_version(bundle.ENSEMBLE_MODEL, version)
    assert registered.tags["member_versions"] == "1,-" and registered.tags["method"] == "average"
    assert elsewhere in caplog.text and here.info.run_id not in caplog.text


def test_the_registered_ensemble_is_the_package_s_code_and_plain_files_with_nothing_pickled(tmp_path, monkeypatch):
    """Models-from-code: anyone who can write to a pickle-loading registry could make ``predict --registered`` run their code."""
    import mlflow
    import numpy as np
    import yaml
    from mlflow.artifacts import download_artifacts

    import audioclass
    from audioclass import bundle
    from audioclass.predict import REGISTERED_MODEL_CODE

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    (tmp_path / "weights.txt").write_text("bundled")
    with mlflow.start_run():
        version = bundle.register_ensemble({"weights.txt": tmp_path / "weights.txt"}, {}, {"method": "average"}, bundle.signature(2.5, 0.7))
    model = Path(download_artifacts(f"models:/{bundle.ENSEMBLE_MODEL}/{version}", dst_path=str(tmp_path / "model")))
    logged = yaml.safe_load((model / "MLmodel").read_text())
    assert [c["name"] for c in json.loads(logged["signature"]["inputs"])] == ["path", "audio"]  # a client knows what to send
    flavor = logged["flavors"]["python_function"]
    assert flavor["loader_module"] == "mlflow.pyfunc.loaders.code_model" and "python_model" not in flavor
    assert (model / "ensemble_model.py").read_bytes() == REGISTERED_MODEL_CODE.read_bytes()
    package, code = Path(audioclass.__file__).parent, model / flavor["code"] / "audioclass"
    # The package's source, and its vendored weights as plain arrays (aiSFX's, which an aisfx head embeds with).
    sources = sorted(p.relative_to(package) for p in [*package.rglob("*.py"), *package.glob("weights/*.npz")])
    assert sorted(p.relative_to(code) for p in code.rglob("*") if p.is_file()) == sources and Path("weights/aisfx.npz") in sources
    with np.load(code / "weights/aisfx.npz", allow_pickle=False) as weights:  # arrays only: loading runs no code
        assert weights["conv_block1.conv1.weight"].shape == (64, 1, 3, 3)
    assert all((code / p).read_bytes() == (package / p).read_bytes() for p in sources)
    for file in (p for p in model.rglob("*") if p.is_file()):
        start = file.read_bytes()[:2]
        assert file.suffix not in (".pkl", ".pickle", ".pyc") and not (start[:1] == b"\x80" and start[1:] in b"\x02\x03\x04\x05"), file
    assert (model / "artifacts/bundle/weights.txt").read_text() == "bundled"


PLANTED_CODE = """
import json
from pathlib import Path

import mlflow
from mlflow.models import set_model


class Planted(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        Path({marker!r}).write_text("ran")

    def predict(self, context, model_input, params=None):
        return model_input


set_model(Planted())
"""


@pytest.mark.parametrize("kind", ["someone else's model code", "a pickled Python object"])
def test_a_registered_model_that_is_not_the_package_s_code_is_refused_before_any_of_it_runs(kind, tmp_path, monkeypatch):
    import mlflow

    from audioclass.errors import TrackingError
    from audioclass.predict import REGISTERED_MODEL_CODE

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")  # earlier tests set the store and experiment for the process
    mlflow.set_experiment("planted")
    marker = tmp_path / "ran"
    code = tmp_path / REGISTERED_MODEL_CODE.name  # named as the package's file, so only its content tells
    code.write_text(PLANTED_CODE.format(marker=str(marker)))
    if kind == "someone else's model code":
        python_model = str(code)
    else:
        namespace = {}
        exec(compile(code.read_text().replace("set_model(Planted())", ""), str(code), "exec"), namespace)
        python_model = namespace["Planted"]()
    with mlflow.start_run():
        mlflow.pyfunc.log_model(name="ensemble", python_model=python_model, registered_model_name="audioclass-ensemble")
    marker.unlink(missing_ok=True)  # logging may have run it; loading must not
    expected = "not the installed package's ensemble_model.py" if kind.startswith("someone") else "not models-from-code"
    with pytest.raises(TrackingError, match=rf"^models:/audioclass-ensemble/1: refused to load: .*{expected}"):
        tracking.load_model("models:/audioclass-ensemble/1", REGISTERED_MODEL_CODE)
    assert not marker.exists()


def test_the_experiment_is_tagged_for_model_training_even_when_made_elsewhere(tmp_path, monkeypatch):
    """MLflow 3 opens an experiment of unknown kind on its GenAI overview; ours is model development."""
    import mlflow

    (tmp_path / ".dvc").mkdir()
    monkeypatch.chdir(tmp_path)
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client.create_experiment("audioclass", artifact_location=(tmp_path / "mlartifacts").as_uri())  # as an older version made it
    assert "mlflow.experimentKind" not in client.get_experiment_by_name("audioclass").tags
    with tracking.run("a-run", {"seed": 1}):
        pass
    assert client.get_experiment_by_name("audioclass").tags["mlflow.experimentKind"] == "custom_model_development"


def test_a_run_logs_its_data_with_the_hash_dvc_gives_it(tmp_path, monkeypatch):
    import hashlib

    import mlflow

    (tmp_path / ".dvc").mkdir()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.npy").write_bytes(b"spectrograms")
    assert tracking.dvc_hash(tmp_path / "data" / "x.npy") == hashlib.md5(b"spectrograms").hexdigest()  # DVC's file hash is MD5
    folder_hash = tracking.dvc_hash(tmp_path / "data")
    assert folder_hash.endswith(".dir") and len(folder_hash) == 36
    with tracking.run("a-run", {"seed": 1}) as active:
        tracking.log_dataset(Path("data"), context="training")
    (logged,) = mlflow.MlflowClient().get_run(active.info.run_id).inputs.dataset_inputs
    assert (logged.dataset.name, logged.dataset.digest) == ("data", folder_hash)
    assert [(t.key, t.value) for t in logged.tags] == [("mlflow.data.context", "training")]

"""Every MLflow call the pipeline makes, in one place.

Where runs go:

- ``$MLFLOW_TRACKING_URI`` if set (a server such as ``http://127.0.0.1:5000``),
  unless ``$AUDIOCLASS_MLFLOW_OFFLINE=1``. A server that does not answer stops
  the stage within seconds, with one line, before its long work starts;
  MLflow's own client would retry for minutes.
- otherwise the project's own SQLite store, ``sqlite:///<project>/mlflow.db``,
  with artifacts in ``<project>/mlartifacts``.
  The project root is found even from a ``dvc exp run --temp`` or ``--queue``
  workspace (``<project>/.dvc/tmp/exps/…``), so those runs land in the
  project's store rather than in a temporary copy.

Several processes may share a SQLite store on one machine (``dvc queue start
--jobs 2``): SQLite serialises their writes, and MLflow waits up to 20 s for
its lock. Creating the store is the exception, since two processes that find
no tables would both run MLflow's schema migrations and one would fail; a file
lock beside the database (``mlflow.db.lock``, see ``creation_lock``) lets one
create it while the others wait. Writers on several machines need a tracking server.

Runs are tagged with the DVC stage (``DVC_STAGE``), the DVC experiment
(``DVC_EXP_NAME``) when there is one, and the git commit, so one pipeline
execution's runs can be picked out and compared in the MLflow UI.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import subprocess
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from audioclass.errors import TrackingError, first_line
from audioclass.urls import masked, masked_text

log = logging.getLogger(__name__)

EXPERIMENT = "audioclass"
# MLflow 3's UI opens an experiment of this kind on its runs (training, tuning, ensembles),
# not on the GenAI overview of traces it shows an experiment of unknown kind.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
OFFLINE_ENV = "AUDIOCLASS_MLFLOW_OFFLINE"
USERNAME_ENV, PASSWORD_ENV, TOKEN_ENV = "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"  # MLflow's own
_answered: set[str] = set()  # servers already found answering in this process
# MLflow draws a progress bar for every model it copies out of the store, a local copy of a few files that takes
# milliseconds, into the logs of the ensemble stage and the scoring server. Set it to true to have them back.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def project_root(start: Path | None = None) -> Path:
    """The project folder, looking through DVC's temporary experiment workspaces."""
    here = (start or Path.cwd()).resolve()
    parts = here.parts
    for i in range(len(parts) - 2):
        if parts[i : i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    for folder in (here, *here.parents):
        if (folder / ".dvc").is_dir():
            return folder
    return here


def tracking_uri() -> str:
    local = f"sqlite:///{project_root() / 'mlflow.db'}"
    if os.environ.get(OFFLINE_ENV, "0") not in ("", "0"):
        return local
    return os.environ.get("MLFLOW_TRACKING_URI") or local


def require_answering(uri: str, timeout: float = 5.0) -> None:
    """Raise a one-line TrackingError unless the server at an http(s) ``uri`` answers and lets this user in; other stores pass."""
    if not uri.startswith(("http://", "https://")) or uri in _answered:
        return
    parts = urllib.parse.urlsplit(uri)
    base = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2])).rstrip("/")  # credentials go in a header
    try:
        urllib.request.urlopen(f"{base}/health", timeout=timeout).close()
    except urllib.error.HTTPError:
        pass  # an HTTP error status is still an answer
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise TrackingError(
            f"MLFLOW_TRACKING_URI={masked(uri)}: no tracking server answers ({masked_text(str(reason), uri)}); expected a running "
            f"MLflow server, or set {OFFLINE_ENV}=1 to log to the project's mlflow.db instead"
        ) from None
    user = os.environ.get(USERNAME_ENV) or urllib.parse.unquote(parts.username or "")  # as MLflow's client: the environment first
    password = os.environ.get(PASSWORD_ENV) or urllib.parse.unquote(parts.password or "")
    status = _access_status(base, user, password, timeout)
    if status in (401, 403):
        problem = f"refuses user {user!r} ({status})" if user else f"asks for credentials ({status})"
        raise TrackingError(
            f"MLFLOW_TRACKING_URI={masked(uri)}: the server {problem}; expected {USERNAME_ENV} and {PASSWORD_ENV} of a user of that server"
        )
    _answered.add(uri)


def _access_status(base: str, user: str, password: str, timeout: float) -> int | None:
    """The HTTP status of a read the stage will need (None if it succeeds), with this process's MLflow credentials.

    An authenticated server (``mlflow server --app-name basic-auth``) answers 401
    without credentials or with wrong ones; MLflow's own client would raise
    that only at the first logging call, after the stage's long work.
    """
    request = urllib.request.Request(f"{base}/api/2.0/mlflow/experiments/search?max_results=1")
    if user and password:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    elif os.environ.get(TOKEN_ENV):
        request.add_header("Authorization", f"Bearer {os.environ[TOKEN_ENV]}")
    try:
        urllib.request.urlopen(request, timeout=timeout).close()
    except urllib.error.HTTPError as err:
        return err.code
    except (urllib.error.URLError, OSError):
        return None  # it answered /health a moment ago; MLflow's client reports anything else
    return None


def require_store() -> None:
    """Fail now, with one line, if runs would go to a server that does not answer: a stage calls this before its long work."""
    require_answering(tracking_uri())


def run_tags() -> dict[str, str]:
    tags = {"dvc_stage": os.environ.get("DVC_STAGE", "")}
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc_exp_name"] = os.environ["DVC_EXP_NAME"]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:  # no git on this machine: the commit tag is a nicety, not a reason to fail
        commit = ""
    if commit:
        tags["mlflow.source.git.commit"] = commit
    return {k: v for k, v in tags.items() if v}


@contextlib.contextmanager
def creation_lock(uri: str) -> Iterator[None]:
    """An inter-process lock around the first use of a database that creates its tables.

    Processes that find no tables all create them, and all but one fail ("table
    already exists"); with this lock one creates them while the others wait and
    then find them made. SQLite: a file lock beside the database. PostgreSQL: a
    session advisory lock, held until its connection closes. Other stores: none.
    """
    if uri.startswith("sqlite:///"):
        from filelock import FileLock

        database = Path(uri.removeprefix("sqlite:///"))
        database.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(f"{database}.lock"):
            yield
    elif uri.startswith("postgresql"):
        import sqlalchemy

        engine = sqlalchemy.create_engine(uri)
        try:
            with engine.connect() as connection:
                connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": _ADVISORY_LOCK_KEY})
                yield
        finally:
            engine.dispose()
    else:
        yield


# Any fixed 64-bit number: what matters is that every audioclass process asks for the same one.
_ADVISORY_LOCK_KEY = 0x617564696F636C61  # "audiocla"


def _configure() -> None:
    """Point MLflow at the store and the experiment (created on first use)."""
    import mlflow

    uri = tracking_uri()
    require_answering(uri)
    mlflow.set_tracking_uri(uri)
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME", EXPERIMENT)
    with creation_lock(uri):
        if uri.startswith("sqlite:") and mlflow.get_experiment_by_name(name) is None:
            # Pin artifacts to the project root; MLflow's default (./mlruns of whichever
            # folder made the experiment) could be a temporary DVC experiment workspace.
            mlflow.create_experiment(name, artifact_location=(project_root() / "mlartifacts").as_uri(), tags=EXPERIMENT_TAGS)
        experiment = mlflow.set_experiment(name)
    if any(experiment.tags.get(k) != v for k, v in EXPERIMENT_TAGS.items()):  # made elsewhere, or by an older version
        for key, value in EXPERIMENT_TAGS.items():
            mlflow.MlflowClient().set_experiment_tag(experiment.experiment_id, key, value)


@contextlib.contextmanager
def run(name: str, params: Mapping[str, Any], *, nested: bool = False, tags: Mapping[str, str] | None = None) -> Iterator[Any]:
    """Start an MLflow run with the standard tags and ``params`` (flattened) logged.

    ``nested=True`` makes it a child of the run active in this process.
    """
    import mlflow

    _configure()
    with mlflow.start_run(run_name=name, nested=nested, tags={**run_tags(), **(tags or {})}) as active:
        mlflow.log_params(flatten(params))
        yield active


@contextlib.contextmanager
def resume(run_id: str) -> Iterator[Any]:
    """Make an existing run active again (e.g. a study's parent run, from another process)."""
    import mlflow

    _configure()
    with mlflow.start_run(run_id=run_id) as active:
        yield active


def run_exists(run_id: str) -> bool:
    """Whether the current store has this (undeleted) run; a study may outlive an MLflow store."""
    import mlflow
    from mlflow.exceptions import MlflowException

    _configure()
    try:
        return mlflow.get_run(run_id).info.lifecycle_stage == "active"
    except MlflowException:
        return False


def set_tags(tags: Mapping[str, Any]) -> None:
    import mlflow

    mlflow.set_tags({k: str(v) for k, v in tags.items()})


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"model": {"width": 16}}`` → ``{"model.width": 16}``."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def log_params(params: Mapping[str, Any]) -> None:
    import mlflow

    mlflow.log_params(flatten(params))


def dvc_hash(path: Path) -> str:
    """The hash DVC records for ``path`` (``<md5>.dir`` for a folder), computed as ``dvc add`` computes it."""
    import tempfile

    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.db import HashFileDB
    from dvc_objects.fs.local import LocalFileSystem

    fs = LocalFileSystem()
    with tempfile.TemporaryDirectory() as scratch:  # build wants an object store; a dry run writes nothing to it
        _, _, obj = build(HashFileDB(fs, scratch), str(path), fs, "md5", dry_run=True)
    return obj.hash_info.value


def log_dataset(path: Path, *, context: str) -> None:
    """Log the data the active run read as an MLflow dataset: named by its path, its DVC hash as the digest.

    The MLflow UI's Dataset column then ties each run to the DVC data version that trained it.
    """
    import json

    import mlflow
    from mlflow.data.dataset_source_registry import get_dataset_source_from_json
    from mlflow.data.meta_dataset import MetaDataset

    # A local source by name: resolving the bare path warns that two registered classes could take it.
    source = get_dataset_source_from_json(json.dumps({"uri": str(Path(path).resolve())}), source_type="local")
    mlflow.log_input(MetaDataset(source, name=Path(path).as_posix(), digest=dvc_hash(path)), context=context)


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    import mlflow

    mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)


def log_artifacts(folder: Path, artifact_path: str | None = None) -> None:
    import mlflow

    mlflow.log_artifacts(str(folder), artifact_path)


def log_artifact(path: Path) -> None:
    import mlflow

    mlflow.log_artifact(str(path))


def log_confusion_matrix(matrix: list[list[int]], class_names: list[str], title: str) -> None:
    """The matrix as ``confusion.json`` (rows actual, columns predicted) and as ``confusion.png``."""
    import mlflow

    from audioclass.plots import confusion_png

    mlflow.log_dict({"class_names": list(class_names), "matrix": matrix}, "confusion.json")
    with tempfile.TemporaryDirectory() as tmp:
        png = Path(tmp) / "confusion.png"
        confusion_png(matrix, list(class_names), png, title)
        mlflow.log_artifact(str(png))


_KERAS_REQUIREMENTS = ("tensorflow-cpu", "tensorflow", "keras")  # tensorflow where the CPU build is not the one installed


def pinned(names: tuple[str, ...]) -> list[str]:
    """``name==version`` for each of ``names`` installed here."""
    import importlib.metadata

    installed = []
    for name in names:
        try:
            installed.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    return installed


CODE_MODEL_LOADER = "mlflow.pyfunc.loaders.code_model"  # MLflow's loader of models-from-code: nothing unpickled


def load_model(uri: str, model_code: Path) -> Any:
    """A pyfunc model from this project's store, e.g. ``models:/audioclass-ensemble/latest``.

    It is loaded only if it is models-from-code whose code file is ``model_code``
    byte for byte: so loading runs the installed package's code and nothing
    that whoever wrote to the registry put there.
    """
    import mlflow
    import yaml
    from mlflow.exceptions import MlflowException

    require_store()
    store = tracking_uri()
    mlflow.set_tracking_uri(store)
    with tempfile.TemporaryDirectory() as scratch:
        try:
            local = Path(mlflow.artifacts.download_artifacts(uri, dst_path=scratch))
        except MlflowException as err:
            raise TrackingError(f"{uri}: cannot load it from {masked(store)}: {masked_text(first_line(err), store)}") from None
        flavor = (yaml.safe_load((local / "MLmodel").read_text()) or {}).get("flavors", {}).get("python_function", {})
        code = local / Path(flavor.get("model_code_path") or "-").name
        if flavor.get("loader_module") != CODE_MODEL_LOADER or "python_model" in flavor:
            problem = "it is not models-from-code (a pickled Python object, or another loader)"
        elif not code.is_file() or code.read_bytes() != model_code.read_bytes():
            problem = f"its model code is not the installed package's {model_code.name}"
        else:
            return mlflow.pyfunc.load_model(str(local))
    raise TrackingError(f"{uri}: refused to load: {problem}; expected an ensemble registered by this version of the package")


def log_keras_model(model: Any) -> None:
    """A Keras model with its signature, a batch of its input (a spectrogram's shape) to class probabilities."""
    import mlflow
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    signature = ModelSignature(
        Schema([TensorSpec(np.dtype(model.inputs[0].dtype), (-1, *model.input_shape[1:]), "spectrogram")]),
        Schema([TensorSpec(np.dtype(model.outputs[0].dtype), (-1, model.output_shape[-1]), "probabilities")]),
    )
    # Requirements named, so MLflow skips inferring them, which loads the model again in a fresh
    # Python process: over 10 s of CPU a run on these 2 cores.
    mlflow.keras.log_model(model, name="model", signature=signature, pip_requirements=pinned(_KERAS_REQUIREMENTS))


def log_sklearn_model(model: Any) -> None:
    """A fitted scikit-learn model, in skops format: loading it runs no pickled code."""
    import mlflow

    mlflow.sklearn.log_model(model, name="model", serialization_format="skops", pip_requirements=pinned(("scikit-learn", "skops")))


def epoch_logger() -> Any:
    """A Keras callback that logs every epoch's metrics (loss, accuracy, val_*) to the active run.

    Without an active run it logs nothing: MLflow would otherwise start a stray
    run of its own and leave it open in the process.
    """
    import keras
    import mlflow

    class EpochLogger(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            if mlflow.active_run() is not None:
                log_metrics(logs or {}, step=epoch)

    return EpochLogger()

"""Every MLflow call the pipeline makes, in one place.

Where runs go:

- ``$MLFLOW_TRACKING_URI`` if set (a server such as ``http://127.0.0.1:5000``);
- otherwise the project's own SQLite store, ``sqlite:///<project>/mlflow.db``,
  with artifacts in ``<project>/mlartifacts``.
  The project root is found even from a ``dvc exp run --temp`` or ``--queue``
  workspace (``<project>/.dvc/tmp/exps/…``), so those runs land in the
  project's store rather than in a temporary copy.

Runs are tagged with the DVC stage (``DVC_STAGE``), the DVC experiment
(``DVC_EXP_NAME``) when there is one, and the git commit, so one pipeline
execution's runs can be picked out and compared in the MLflow UI.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

EXPERIMENT = "audioclass"


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
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root() / 'mlflow.db'}"


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


def _configure() -> None:
    """Point MLflow at the store and the experiment (created on first use)."""
    import mlflow

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME", EXPERIMENT)
    if uri.startswith("sqlite:") and mlflow.get_experiment_by_name(name) is None:
        # Pin artifacts to the project root; MLflow's default (./mlruns of whichever
        # folder made the experiment) could be a temporary DVC experiment workspace.
        mlflow.create_experiment(name, artifact_location=(project_root() / "mlartifacts").as_uri())
    mlflow.set_experiment(name)


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


def log_keras_model(model: Any) -> None:
    import mlflow

    mlflow.keras.log_model(model, name="model")


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

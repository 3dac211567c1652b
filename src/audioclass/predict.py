"""``audioclass predict``: classify audio files with the trained ensemble.

    audioclass predict dog.wav street/*.ogg recordings/            # top class and its probability per file
    audioclass predict recordings/ --json                           # every class's probability, as JSON lines
    audioclass predict recordings/ --registered models:/audioclass-ensemble/latest   # the registry's copy

Each file (WAV, Ogg, FLAC, MP3; any sample rate, channels or length) goes
through the pipeline's own steps with ``params.yaml``'s values: mixed to mono,
resampled, padded or cropped as ``extract`` does, quantised to 16 bits like the
pipeline's WAVs, and rendered as ``spectrograms`` does. Every member run
(``<models>/run-<seed>`` for ``train.seeds``) predicts it, and the ensemble
method (the one best on validation, unless ``--method``) combines their
probabilities with the weights in ``<ensemble>``, fitted on validation by the
ensemble stage. ``--registered`` runs the same code from a version of the
ensemble in the MLflow model registry, which bundles the members, the weights
and the params.

A file that cannot be read gets one error line (or a JSON object with
``error``) and the others are still predicted; the exit status is then 1.
A silent file (its peak below ``extract.silence_dbfs``) gets no class: it is
shown as silent (``"silent": true`` and ``"prediction": null`` in JSON).
Hidden files (``.x.wav``, macOS's ``._x.wav``) in a folder are skipped, as
``extract`` skips them.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

from audioclass import audio
from audioclass.cli import plain
from audioclass.config import load_params, stage_config
from audioclass.errors import AudioclassError, ConfigError, DataError
from audioclass.layouts import AUDIO_SUFFIXES, is_hidden
from audioclass.outputs import require_inputs
from audioclass.stages.ensemble import combine
from audioclass.stages.extract import ExtractConfig, prepare_clip
from audioclass.stages.spectrograms import SpectrogramConfig, render_spectrogram
from audioclass.tables import json_text


@dataclass(frozen=True)
class Ensemble:
    members: list[Any]  # Keras models
    method: str
    weights: np.ndarray | None
    class_names: list[str]
    extract: ExtractConfig
    spectrograms: SpectrogramConfig


def _load_keras(path: Path) -> Any:
    import keras

    try:
        return keras.models.load_model(path)
    except Exception as err:  # Keras raises anything from zipfile, h5py or its own deserialisation
        raise DataError(f"{path}: unreadable Keras model ({str(err).splitlines()[0] if str(err) else type(err).__name__}); "
                        "expected a complete model.keras from the train stage") from None  # fmt: skip


def load_ensemble(params_path: Path, models: Path, ensemble_json: Path, method: str | None = None) -> Ensemble:
    """The trained members, the method's weights and the preprocessing params, checked against each other."""
    params = load_params(params_path)
    seeds = params.get("train", {}).get("seeds") or []
    folders = [models / f"run-{seed}" for seed in seeds]
    require_inputs([ensemble_json, *(f / n for f in folders for n in ("model.keras", "metrics.json"))],
                   "a trained pipeline (dvc repro, or dvc pull)")  # fmt: skip
    report = json.loads(ensemble_json.read_text())
    if report.get("runs") != [f.name for f in folders]:
        raise ConfigError(f"{ensemble_json}: ensemble of {report.get('runs')}; expected the runs of {params_path}'s train.seeds "
                          f"{[f.name for f in folders]} (dvc repro ensemble)")  # fmt: skip
    method = method or report["best_method"]
    if method not in report["methods"]:
        raise ConfigError(f"--method: expected one of {sorted(report['methods'])}, got {method!r}")
    weights = report["methods"][method]["weights"]
    members = [_load_keras(f / "model.keras") for f in folders]
    class_names = json.loads((folders[0] / "metrics.json").read_text())["class_names"]
    ensemble = Ensemble(members, method, None if weights is None else np.asarray(weights), class_names,
                        stage_config(ExtractConfig, params, "extract", str(params_path)),
                        stage_config(SpectrogramConfig, params, "spectrograms", str(params_path)))  # fmt: skip
    expected = tuple(members[0].input_shape[1:])
    rendered = model_input(np.zeros(ensemble.extract.n_samples, np.float32), ensemble.extract.sample_rate, ensemble).shape
    if rendered != expected:
        raise ConfigError(f"{params_path}: extract / spectrograms give inputs of shape {rendered}; the models were trained "
                          f"on {expected} (dvc repro)")  # fmt: skip
    return ensemble


def model_input(y: np.ndarray, sr: int, ensemble: Ensemble) -> np.ndarray:
    """Decoded audio → one model input, exactly as the extract and spectrograms stages make it.

    y : (n_samples,) float32 mono in [-1, 1] at ``sr`` Hz → (n_bands, n_frames, n_channels)
    """
    return render_input(model_clip(y, sr, ensemble), ensemble)


def model_clip(y: np.ndarray, sr: int, ensemble: Ensemble) -> np.ndarray:
    """Decoded audio → the clip ``extract`` would write, read back: (n_samples,) float32 at extract.sample_rate."""
    return prepare_clip(y, sr, ensemble.extract).astype(np.float32) / 32768.0  # the WAV's int16, read back


def render_input(clip: np.ndarray, ensemble: Ensemble) -> np.ndarray:
    """A :func:`model_clip` → one model input, as the spectrograms stage renders it."""
    return render_spectrogram(clip, sr=ensemble.extract.sample_rate, cfg=ensemble.spectrograms,
                              silence_dbfs=ensemble.extract.silence_dbfs).astype(ensemble.spectrograms.dtype)  # fmt: skip


def classify(inputs: np.ndarray, ensemble: Ensemble) -> np.ndarray:
    """(n, n_bands, n_frames, n_channels) → (n, n_classes) ensemble scores, normalised to sum to 1."""
    probs = np.stack([m.predict(inputs.astype(np.float32), verbose=0) for m in ensemble.members])
    scores = combine(probs, ensemble.method, ensemble.weights)
    return scores / scores.sum(axis=1, keepdims=True)


def audio_files(targets: list[Path]) -> list[Path]:
    """Files as given, and the audio files under each folder (sorted)."""
    found: list[Path] = []
    for target in targets:
        if target.is_dir():
            found += sorted(p for p in target.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES
                            and not is_hidden(p.relative_to(target).as_posix()))  # fmt: skip
        else:
            found.append(target)
    return found


def predict_files(paths: list[Path], ensemble: Ensemble) -> list[dict]:
    """One result per file, in order: its class and probabilities, that it is silent, or the error that stopped it."""
    results: list[dict] = [{"file": str(p)} for p in paths]
    inputs, readable = [], []
    for i, path in enumerate(paths):
        try:
            if not path.is_file():
                raise DataError(f"{path}: no such file; expected an audio file or a folder")
            clip = model_clip(*audio.read_audio(path), ensemble)  # resampled once, for both the check and the input
            if audio.peak_dbfs(clip) < ensemble.extract.silence_dbfs:
                results[i].update(silent=True, prediction=None)
                continue
            inputs.append(render_input(clip, ensemble))
            readable.append(i)
        except AudioclassError as err:
            results[i]["error"] = str(err)
    if inputs:
        scores = classify(np.stack(inputs), ensemble)
        for i, row in zip(readable, scores):
            results[i].update(
                prediction=ensemble.class_names[int(row.argmax())],
                probability=round(float(row.max()), 4),
                probabilities={name: round(float(p), 4) for name, p in zip(ensemble.class_names, row)},
            )
    return results


class EnsemblePyfunc(mlflow.pyfunc.PythonModel):
    """The ensemble as an MLflow model: input a DataFrame with a ``path`` column, output one row per file.

    Its one artifact, ``bundle``, holds ``params.yaml``, ``ensemble.json`` and
    ``models/run-<seed>/{model.keras,metrics.json}``: what :func:`load_ensemble` reads
    (:func:`audioclass.stages.ensemble.bundle_files`).
    """

    def load_context(self, context):
        bundle = Path(context.artifacts["bundle"])
        self.ensemble = load_ensemble(bundle / "params.yaml", bundle / "models", bundle / "ensemble.json")

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        paths = [Path(p) for p in (model_input["path"] if isinstance(model_input, pd.DataFrame) else model_input)]
        rows = predict_files(paths, self.ensemble)
        return pd.DataFrame([{k: v for k, v in r.items() if k != "probabilities"} | r.get("probabilities", {}) for r in rows])


def _from_registry(uri: str, paths: list[Path]) -> list[dict]:
    from audioclass import tracking

    frame = tracking.load_model(uri).predict(pd.DataFrame({"path": [str(p) for p in paths]}))
    fixed = ("file", "error", "silent", "prediction", "probability")
    results = []
    for row in frame.to_dict("records"):
        r = {k: row[k] for k in fixed if k in row and not pd.isna(row[k])}
        if r.get("silent"):
            r["prediction"] = None
        elif "prediction" in r:
            r["probabilities"] = {k: v for k, v in row.items() if k not in fixed}
        results.append(r)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="audioclass predict", description=plain(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("targets", nargs="+", type=Path, help="audio files or folders (searched recursively)")
    parser.add_argument("--json", action="store_true", help="one JSON object per file, with every class's probability")
    parser.add_argument("--method", help="ensemble method (default: the best on validation), e.g. average")
    parser.add_argument("--top", type=int, default=3, help="classes shown per file without --json (default 3)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="the params the models were trained with")
    parser.add_argument("--models", type=Path, default=Path("models"), help="folder of train runs (default: models)")
    parser.add_argument("--ensemble", type=Path, default=Path("reports/ensemble/ensemble.json"), help="the ensemble stage's report")
    parser.add_argument("--registered", metavar="MODEL_URI",
                        help="use a registered ensemble instead, e.g. models:/audioclass-ensemble/latest (MLFLOW_TRACKING_URI or ./mlflow.db)")
    args = parser.parse_args(argv)
    paths = audio_files(args.targets)
    if not paths:
        raise DataError(f"{', '.join(map(str, args.targets))}: no audio files; expected files ending in {', '.join(AUDIO_SUFFIXES)}")
    if args.registered:
        results = _from_registry(args.registered, paths)
    else:
        results = predict_files(paths, load_ensemble(args.params, args.models, args.ensemble, args.method))
    for r in results:
        if args.json:
            print(json_text(r, indent=None))
        elif "error" in r:
            print(f"error: {r['error']}", file=sys.stderr)
        elif r.get("silent"):
            print(f"{r['file']}: silent (peak below extract.silence_dbfs); no class predicted")
        else:
            top = sorted(r["probabilities"].items(), key=lambda kv: -kv[1])[: args.top]
            print(f"{r['file']}: {r['prediction']} ({100 * r['probability']:.1f} %)  " + ", ".join(f"{n} {100 * p:.1f} %" for n, p in top[1:]))
    if any("error" in r for r in results):
        sys.exit(1)

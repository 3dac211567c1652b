"""``audioclass predict``: classify audio files with the trained ensemble, over time when they are long.

    audioclass predict dog.wav street/*.ogg recordings/            # top classes per clip; a timeline per longer file
    audioclass predict street-2h.flac --hop 1 --json --windows      # detections, and every window's probabilities
    audioclass predict field/ --csv --out-dir labels/               # a CSV row per detection; Raven and Audacity files
    audioclass predict recordings/ --registered models:/audioclass-ensemble/latest   # the registry's copy

Each file (WAV, Ogg, FLAC, MP3; any sample rate or channels) is read a window
of ``extract.duration`` at a time, ``--hop`` seconds apart (default: half a
window), the last window ending at the file's end; a file no longer than a
window is one window. Each window goes through the pipeline's own steps with
``params.yaml``'s values: mixed to mono, resampled, padded as ``extract`` does,
quantised to 16 bits like the pipeline's WAVs, then rendered as
``spectrograms`` does for the trained runs (``<models>/<run>``) and embedded
as ``embed`` does for the heads on pretrained embeddings
(``<models>/head-<model>``). The group of members and the method best on
validation (or ``--method``) combine their probabilities with the weights in
``<ensemble>``, fitted on validation by the ensemble stage, and calibrated by
the temperature it fitted there. Consecutive windows of one class merge into a
detection (start, end, class, confidence); a window whose top probability is
below ``--min-confidence`` (default: the ensemble stage's, the lowest at which
validation's clips were ``ensemble.target_precision`` precise) has no class. A
clip still gets its most likely class, marked when it is below that confidence.
``--registered`` runs the same code on a version of the ensemble in the MLflow
model registry, which bundles the members, the weights and the params.

A file that cannot be read gets one error line (or a JSON object with
``error``) and the others are still predicted; the exit status is then 1.
A silent clip or window (its peak below ``extract.silence_dbfs``) gets no
class: a silent clip is shown as silent (``"silent": true`` and
``"prediction": null`` in JSON). Hidden files (``.x.wav``, macOS's
``._x.wav``) in a folder are skipped, as ``extract`` skips them.
"""

from __future__ import annotations

import argparse
import csv
import importlib.metadata
import io
import json
import logging
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from audioclass import audio, embeddings
from audioclass.calibration import tempered
from audioclass.cli import plain
from audioclass.clips import ExtractConfig, prepare_clip
from audioclass.config import load_params, require, stage_config
from audioclass.embeddings import EmbedConfig
from audioclass.ensembling import EnsembleConfig, as_probabilities, combine, is_pretrained, member_names
from audioclass.errors import AudioclassError, ConfigError, DataError, first_line
from audioclass.heads import LinearHead
from audioclass.layouts import AUDIO_SUFFIXES, is_hidden
from audioclass.outputs import atomic_file, require_inputs
from audioclass.parallel import default_jobs
from audioclass.spectrograms import SpectrogramConfig, render_spectrogram
from audioclass.tables import json_text
from audioclass.training import TrainConfig

log = logging.getLogger(__name__)
# The file MLflow runs to load a registered ensemble (models-from-code); predict --registered loads only a model holding it.
REGISTERED_MODEL_CODE = Path(__file__).with_name("ensemble_model.py")


@dataclass(frozen=True)
class Member:
    """One member: a CNN run (a Keras model on spectrograms) or a head on a pretrained model's embeddings."""

    name: str
    keras: Any = None
    head: LinearHead | None = None
    embedding: str | None = None  # the head's embedding model: a name in embeddings.BACKENDS, or several joined by +
    pooling: str = "mean"  # how the head's embedding pools a clip's vectors (embed.pooling)


@dataclass(frozen=True)
class Ensemble:
    members: list[Member]
    method: str
    weights: np.ndarray | None
    class_names: list[str]
    extract: ExtractConfig
    spectrograms: SpectrogramConfig
    temperature: float = 1.0  # fitted on validation by the ensemble stage (audioclass.calibration)
    min_confidence: float = 0.0  # windows less sure than this get no class; chosen on validation


def _load_keras(path: Path) -> Any:
    import keras

    try:
        return keras.models.load_model(path, safe_mode=True)  # no Python code from the file runs (no lambdas)
    except Exception as err:  # Keras raises anything from zipfile, h5py or its own deserialisation
        raise DataError(
            f"{path}: unreadable Keras model ({first_line(err)}); expected a complete model.keras from the train stage"
        ) from None


def _load_head(folder: Path) -> Member:
    recorded = json.loads((folder / "backend.json").read_text())
    parts = embeddings.backends(recorded["name"], key=f"{folder / 'backend.json'}: name")
    for backend in parts:
        part = recorded["parts"][backend.name] if "parts" in recorded else recorded
        embeddings.weights_file(backend)  # a missing package: one line naming what to install
        installed = importlib.metadata.version(backend.package)
        if installed != part["version"]:
            log.warning(
                "%s: trained on %s %s embeddings, %s is installed; predictions may differ from the validated ones",
                folder.name,
                backend.package,
                part["version"],
                installed,
            )
    # Heads from before embed.pooling existed read the mean.
    pooling = recorded.get("pooling", "mean")
    return Member(folder.name, head=LinearHead.load(folder / "head.npz"), embedding=recorded["name"], pooling=pooling)


def _choose(report: dict, method: str | None, ensemble_json: Path) -> tuple[str, str]:
    """(group, method): the best on validation, or ``--method`` as ``<method>`` (in the best group) or ``<group>/<method>``."""
    group, name = report["best"]["group"], report["best"]["method"]
    if method:
        group, name = method.split("/", 1) if "/" in method else (group, method)
    choices = [f"{g}/{m}" for g in report["groups"] for m in report["groups"][g]["methods"]]
    if f"{group}/{name}" not in choices:
        raise ConfigError(f"--method: expected a method of {ensemble_json}, one of {choices}, got {method!r}")
    return group, name


def load_ensemble(params_path: Path, models: Path, ensemble_json: Path, method: str | None = None) -> Ensemble:
    """The trained members, the method's weights and the preprocessing params, checked against each other."""
    params = load_params(params_path)
    cfg = stage_config(EnsembleConfig, params, "ensemble", str(params_path))
    expected_members = member_names(
        cfg,
        list(stage_config(TrainConfig, params, "train", str(params_path)).runs),
        list(stage_config(EmbedConfig, params, "embed", str(params_path)).models),
        str(params_path),
    )
    require_inputs([ensemble_json], "a trained pipeline (dvc repro, or dvc pull)")
    report = json.loads(ensemble_json.read_text())
    if report.get("members") != expected_members:
        raise ConfigError(
            f"{ensemble_json}: ensemble of {report.get('members')}; expected the members of {params_path}, "
            f"{expected_members} (dvc repro ensemble)"
        )
    group, method = _choose(report, method, ensemble_json)
    folders = [models / name for name in report["groups"][group]["members"]]
    require_inputs(
        [f / n for f in folders for n in (("head.npz", "backend.json") if is_pretrained(f.name) else ("model.keras",))]
        + [f / "metrics.json" for f in folders],
        "a trained pipeline (dvc repro, or dvc pull)",
    )
    weights = report["groups"][group]["methods"][method]["weights"]
    calibration = report["groups"][group]["methods"][method].get("calibration") or {}  # none before calibration existed
    members = [_load_head(f) if is_pretrained(f.name) else Member(f.name, keras=_load_keras(f / "model.keras")) for f in folders]
    class_names = json.loads((folders[0] / "metrics.json").read_text())["class_names"]
    ensemble = Ensemble(
        members,
        method,
        None if weights is None else np.asarray(weights),
        class_names,
        stage_config(ExtractConfig, params, "extract", str(params_path)),
        stage_config(SpectrogramConfig, params, "spectrograms", str(params_path)),
        calibration.get("temperature", 1.0),
        calibration.get("min_confidence") or 0.0,
    )
    cnns = [m.keras for m in members if m.keras is not None]
    if cnns:
        expected = tuple(cnns[0].input_shape[1:])
        rendered = model_input(np.zeros(ensemble.extract.n_samples, np.float32), ensemble.extract.sample_rate, ensemble).shape
        if rendered != expected:
            raise ConfigError(
                f"{params_path}: extract / spectrograms give inputs of shape {rendered}; the models were trained on {expected} (dvc repro)"
            )
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
    return render_spectrogram(
        clip, sr=ensemble.extract.sample_rate, cfg=ensemble.spectrograms, silence_dbfs=ensemble.extract.silence_dbfs
    ).astype(ensemble.spectrograms.dtype)


def classify(clips: list[np.ndarray], ensemble: Ensemble) -> np.ndarray:
    """:func:`model_clip` clips → (n, n_classes) ensemble probabilities, calibrated by the ensemble's temperature.

    CNN runs see the clips' spectrograms; heads see their embeddings, made by the
    embed stage's code.
    """
    sr = ensemble.extract.sample_rate
    inputs = (
        np.stack([render_input(c, ensemble) for c in clips]).astype(np.float32)
        if any(m.keras is not None for m in ensemble.members)
        else None
    )
    models = {(m.embedding, m.pooling) for m in ensemble.members if m.head is not None}
    threads = default_jobs()  # one process analyses: its pretrained models run on every core
    embedded = {(name, pooling): embeddings.embed_clips(clips, sr, name, pooling, threads) for name, pooling in models}
    probs = np.stack(
        [
            keras_scores(m.keras, inputs) if m.keras is not None else m.head.probabilities(embedded[m.embedding, m.pooling])
            for m in ensemble.members
        ]
    )
    return tempered(as_probabilities(combine(probs, ensemble.method, ensemble.weights)), ensemble.temperature)


def keras_scores(model, inputs: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """``model``'s outputs for ``inputs``, called eagerly a batch at a time.

    ``Model.predict`` traces a graph for each model and call: a process that runs an ensemble on a few
    files traces it several times, and TensorFlow then prints a warning about retracing among the results.
    """
    return np.concatenate([np.asarray(model(inputs[i : i + batch_size], training=False)) for i in range(0, len(inputs), batch_size)])


def audio_files(targets: list[Path]) -> list[Path]:
    """Files as given, and the audio files under each folder (sorted)."""
    found: list[Path] = []
    for target in targets:
        if target.is_dir():
            found += sorted(
                p
                for p in target.rglob("*")
                if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES and not is_hidden(p.relative_to(target).as_posix())
            )
        else:
            found.append(target)
    return found


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class AnalyseConfig:
    """``params.yaml``'s ``analyse``: recordings ``dvc repro`` analyses with the shipped ensemble (the analyse stage)."""

    recordings: dict  # {name: path}; each name becomes reports/analyse/<name>.*
    hop: float | None  # seconds; None: half of extract.duration
    min_confidence: float | None  # share; None: the ensemble stage's

    def __post_init__(self):
        for name, path in self.recordings.items():
            require(isinstance(name, str) and bool(_NAME.fullmatch(name)), "recordings", "names of letters, digits, _ . -", name)
            require(isinstance(path, str) and bool(path), f"recordings.{name}", "the path of an audio file", path)
        require(self.hop is None or 0 < self.hop <= 600, "hop", "seconds in (0, 600], or null", self.hop)
        sure = self.min_confidence
        require(sure is None or 0 <= sure <= 1, "min_confidence", "a share in [0, 1], or null", sure)


@dataclass(frozen=True)
class InMemory:
    """A whole audio file's bytes, as a client sends them, and the name its result and errors go by."""

    name: str
    data: bytes


def _windows(source: Path | InMemory, window: float, hop: float) -> Iterator[tuple[float, float, np.ndarray, int]]:
    """:func:`audio.read_windows` of a file on disk or in memory."""
    if isinstance(source, InMemory):
        if not source.data:
            raise DataError(f"{source.name}: no bytes; expected an audio file's content")
        return audio.read_windows(io.BytesIO(source.data), window, hop, name=source.name)
    if not source.is_file():
        raise DataError(f"{source}: no such file; expected an audio file or a folder")
    return audio.read_windows(source, window, hop)


@dataclass
class _Timeline:
    """One file's windows as they are analysed: their spans, and each one's probabilities (None: silent)."""

    spans: list[tuple[float, float]]
    probs: list[np.ndarray | None]


def analyse_files(
    recordings: list[Path | InMemory],
    ensemble: Ensemble,
    *,
    hop: float | None = None,
    min_confidence: float | None = None,
    windows: bool = False,
    batch: int = 32,
) -> list[dict]:
    """One result per recording (a file's path, or its bytes), in order: its detections over time, or the error that
    stopped it.

    Each file is read a window (``extract.duration``) at a time, ``hop`` seconds
    apart (default: half a window), the last window ending at the file's end (:func:`audio.read_windows`),
    and each window becomes a clip as ``extract`` makes one. Windows from every
    file are classified together, ``batch`` at a time, so memory holds a batch of
    windows and each file's probabilities. A file no longer than one window is
    one window, classified as before (``prediction``, ``probability``,
    ``probabilities``, or ``silent``); with ``windows``, every window's
    probabilities are kept too. A window less sure than ``min_confidence``
    (default: the ensemble's, chosen on validation) is no detection.
    """
    hop = hop or ensemble.extract.duration / 2
    min_confidence = ensemble.min_confidence if min_confidence is None else min_confidence
    results: list[dict] = [{"file": p.name if isinstance(p, InMemory) else str(p)} for p in recordings]
    timelines: dict[int, _Timeline] = {}
    pending: list[tuple[int, int, np.ndarray]] = []  # (file, window, clip)

    def classify_pending() -> None:
        if pending:
            for (file, window, _), row in zip(pending, classify([clip for *_, clip in pending], ensemble)):
                timelines[file].probs[window] = row
            pending.clear()

    for i, recording in enumerate(recordings):
        timeline = timelines[i] = _Timeline([], [])
        try:
            for start, end, y, sr in _windows(recording, ensemble.extract.duration, hop):
                clip = model_clip(y, sr, ensemble)
                timeline.spans.append((round(start, 3), round(end, 3)))
                timeline.probs.append(None)
                if audio.peak_dbfs(clip) >= ensemble.extract.silence_dbfs:
                    pending.append((i, len(timeline.spans) - 1, clip))
                if len(pending) >= batch:
                    classify_pending()
        except AudioclassError as err:
            results[i]["error"] = str(err)
            pending[:] = [p for p in pending if p[0] != i]
            del timelines[i]
    classify_pending()
    for i, timeline in timelines.items():
        results[i].update(_described(timeline, ensemble.class_names, hop=hop, min_confidence=min_confidence, windows=windows))
    return results


def _described(timeline: _Timeline, class_names: list[str], *, hop: float, min_confidence: float, windows: bool) -> dict:
    found = detections(timeline.spans, timeline.probs, class_names, min_confidence)
    if len(timeline.spans) == 1:
        [row] = timeline.probs
        if row is None:
            out = {"silent": True, "prediction": None}
        else:
            out = {
                "prediction": class_names[int(row.argmax())],
                "probability": round(float(row.max()), 4),
                "probabilities": _probabilities(row, class_names),
            }
        return out | {"min_confidence": min_confidence, "detections": found}
    out = {
        "duration": timeline.spans[-1][1],
        "windows_analysed": len(timeline.spans),
        "hop": hop,
        "min_confidence": min_confidence,
        "detections": found,
    }
    if windows:
        out["windows"] = [
            {"start": start, "end": end} | ({"silent": True} if row is None else {"probabilities": _probabilities(row, class_names)})
            for (start, end), row in zip(timeline.spans, timeline.probs)
        ]
    return out


def _probabilities(row: np.ndarray, class_names: list[str]) -> dict[str, float]:
    return {name: round(float(p), 4) for name, p in zip(class_names, row)}


def detections(
    spans: list[tuple[float, float]], probs: list[np.ndarray | None], class_names: list[str], min_confidence: float = 0.0
) -> list[dict]:
    """Windows' top classes as a timeline: overlapping or touching windows of one class merge into one detection.

    A detection's confidence is the highest top-class probability among its
    windows. Silent windows (None) have no class and end a detection. Windows
    whose top probability is below ``min_confidence`` have no class either,
    but the sound goes on: a window of the detection's class that still
    overlaps or touches it joins it across them.
    """
    found: list[dict] = []
    last = None  # the class of the previous window, if it had one
    for (start, end), row in zip(spans, probs):
        if row is None:
            last = None
            continue
        if row.max() < min_confidence:
            continue
        k, confidence = int(row.argmax()), round(float(row.max()), 4)
        if k == last and start <= found[-1]["end"]:
            found[-1]["end"] = end
            found[-1]["confidence"] = max(found[-1]["confidence"], confidence)
        else:
            found.append({"start": start, "end": end, "class": class_names[k], "confidence": confidence})
        last = k
    return found


def _registered_ensemble(uri: str) -> Ensemble:
    """The :class:`Ensemble` a registered model bundles, loaded through MLflow as a client of the registry would."""
    from audioclass import tracking

    return tracking.load_model(uri, REGISTERED_MODEL_CODE).unwrap_python_model().ensemble


def _number(within: Callable[[float], bool], expected: str) -> Callable[[str], float]:
    """An argparse type: a float for which ``within`` holds, or one line saying what was expected."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not within(value):
            raise argparse.ArgumentTypeError(f"{text}: expected {expected}")
        return value

    return parse


def _print_result(r: dict, top: int) -> None:
    if "error" in r:
        print(f"error: {r['error']}", file=sys.stderr)
    elif r.get("silent"):
        print(f"{r['file']}: silent (peak below extract.silence_dbfs); no class predicted")
    elif "prediction" in r:
        ranked = sorted(r["probabilities"].items(), key=lambda kv: -kv[1])[:top]
        unsure = "" if r["detections"] else f", below the minimum confidence {100 * r['min_confidence']:.1f} %"
        print(
            f"{r['file']}: {r['prediction']} ({100 * r['probability']:.1f} %{unsure})  "
            + ", ".join(f"{n} {100 * p:.1f} %" for n, p in ranked[1:])
        )
    else:
        print(
            f"{r['file']}: {r['duration']:.1f} s, {r['windows_analysed']} windows {r['hop']:g} s apart, "
            f"minimum confidence {100 * r['min_confidence']:.1f} %"
        )
        for d in r["detections"]:
            print(f"  {d['start']:8.1f} – {d['end']:8.1f} s  {d['class']} ({100 * d['confidence']:.1f} %)")
        if not r["detections"]:
            print("  no detection: every window silent (peak below extract.silence_dbfs) or below the minimum confidence")


RAVEN_COLUMNS = ("Selection", "View", "Channel", "Begin Time (s)", "End Time (s)", "Low Freq (Hz)", "High Freq (Hz)", "Class", "Confidence")


def audacity_labels(found: list[dict]) -> str:
    """An Audacity label track (File > Import > Labels): start, end and label, tab-separated, a detection a line."""
    return "".join(f"{d['start']:.3f}\t{d['end']:.3f}\t{d['class']} ({100 * d['confidence']:.1f} %)\n" for d in found)


def raven_selections(found: list[dict], sample_rate: int) -> str:
    """A Raven selection table: a detection a selection, over the whole band the models see (0 to Nyquist)."""
    rows = [
        (i, "Spectrogram 1", 1, f"{d['start']:.3f}", f"{d['end']:.3f}", 0, sample_rate / 2, d["class"], f"{d['confidence']:.4f}")
        for i, d in enumerate(found, start=1)
    ]
    return "".join("\t".join(map(str, row)) + "\n" for row in [RAVEN_COLUMNS, *rows])


def write_detection_files(results: list[dict], out_dir: Path, sample_rate: int) -> list[Path]:
    """``<name>.raven.txt`` and ``<name>.audacity.txt`` in ``out_dir`` for each file analysed, each written whole or not at all."""
    analysed = [r for r in results if "detections" in r]
    names = [Path(r["file"]).name for r in analysed]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise DataError(f"{clash[0]}: more than one file of that name; --out-dir names its files after the recordings'")
    written = []
    for name, r in zip(names, analysed):
        for suffix, text in detection_files(r, sample_rate).items():
            with atomic_file(out_dir / f"{name}{suffix}") as tmp:
                tmp.write_text(text)
            written.append(out_dir / f"{name}{suffix}")
    return written


def detection_files(result: dict, sample_rate: int) -> dict[str, str]:
    """A recording's detections as the files other programs open, by suffix: a Raven selection table, an Audacity label track."""
    return {".raven.txt": raven_selections(result["detections"], sample_rate), ".audacity.txt": audacity_labels(result["detections"])}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="audioclass predict", description=plain(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("targets", nargs="+", type=Path, help="audio files or folders (searched recursively)")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="one JSON object per file, with every class's probability")
    output.add_argument("--csv", action="store_true", help="one CSV row per detection: file, start, end, class, confidence")
    parser.add_argument(
        "--method",
        help="ensemble method (default: the best on validation), e.g. average, or "
        "<group>/<method>, e.g. from_scratch/average (groups: from_scratch, pretrained, all)",
    )
    parser.add_argument("--top", type=int, default=3, help="classes shown per clip without --json (default 3)")
    parser.add_argument(
        "--hop",
        type=_number(lambda v: 0 < v <= 600, "seconds in (0, 600]"),
        help="seconds between the windows a file longer than a clip is analysed in (default: half of extract.duration)",
    )
    parser.add_argument(
        "--min-confidence",
        type=_number(lambda v: 0 <= v <= 1, "a share in [0, 1], e.g. 0.7"),
        help="windows whose top probability is below this share get no class (default: the ensemble's, chosen on "
        "validation as the lowest at which validation's clips are ensemble.target_precision precise; 0 keeps every window)",
    )
    parser.add_argument("--windows", action="store_true", help="with --json: every window's probabilities, beside the detections")
    parser.add_argument(
        "--out-dir", type=Path, help="also write a Raven selection table and an Audacity label track per recording into this folder"
    )
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="the params the models were trained with")
    parser.add_argument("--models", type=Path, default=Path("models"), help="folder of train runs (default: models)")
    parser.add_argument("--ensemble", type=Path, default=Path("reports/ensemble/ensemble.json"), help="the ensemble stage's report")
    parser.add_argument(
        "--registered",
        metavar="MODEL_URI",
        help="use a registered ensemble instead, e.g. models:/audioclass-ensemble/latest (MLFLOW_TRACKING_URI or ./mlflow.db)",
    )
    args = parser.parse_args(argv)
    paths = audio_files(args.targets)
    if not paths:
        raise DataError(f"{', '.join(map(str, args.targets))}: no audio files; expected files ending in {', '.join(AUDIO_SUFFIXES)}")
    if args.registered:
        ensemble = _registered_ensemble(args.registered)
    else:
        ensemble = load_ensemble(args.params, args.models, args.ensemble, args.method)
    results = analyse_files(paths, ensemble, hop=args.hop, min_confidence=args.min_confidence, windows=args.windows)
    if args.out_dir:
        write_detection_files(results, args.out_dir, ensemble.extract.sample_rate)
    if args.csv:
        rows = csv.writer(sys.stdout, lineterminator="\n")
        rows.writerow(("file", "start", "end", "class", "confidence"))
    for r in results:
        if args.json:
            print(json_text(r, indent=None))
        elif args.csv and "error" not in r:
            rows.writerows((r["file"], d["start"], d["end"], d["class"], d["confidence"]) for d in r["detections"])
        else:
            _print_result(r, args.top)  # with --csv, only errors get here: one line on stderr
    if any("error" in r for r in results):
        sys.exit(1)

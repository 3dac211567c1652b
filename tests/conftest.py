"""Shared fixtures: synthetic audio and tiny corpora in every layout, built per test."""

from __future__ import annotations

import dataclasses
import os
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from audioclass import sandbox
from audioclass.config import from_mapping, load_params
from audioclass.layouts import ESC10_CLASSES, ESC10_FOLDERS, ESC10_TARGETS
from audioclass.training import FitParams, ModelParams

PROJECT = Path(__file__).resolve().parents[1]
SHARED_ESC10 = Path(os.environ.get("AUDIOCLASS_ESC10", PROJECT.parent / "shared" / "datasets" / "ESC-10"))
# The tiny profile the real dvc repro runs on: params.yaml's sections with these keys replaced.
# With 4 clips per class, 3 remain outside the test fold, so validation takes one grouped third.
TINY = {
    "split": {"val_fraction": 0.34},
    "augment": {"copies": 2},
    "spectrograms": {"preview_per_class": 3},
    "tune": {"enabled": True, "trials": 2, "trial_epochs": 1, "data_fraction": 1.0, "startup_trials": 1, "warmup_epochs": 0},
    # A CNN member and a CRNN member: the ensemble combines two architectures.
    "train": {
        "runs": sandbox.Replace({"run-1": {"seed": 1}, "crnn-1": {"seed": 1, "model": {"architecture": "crnn"}}}),
        "model": {"width": 4, "depth": 2, "units": 8},
        "fit": {"epochs": 2, "batch_size": 16},
    },
    "head": {"C": [0.01, 1.0]},  # two strengths still make a choice, in a third of the grid's fits
    "ensemble": {"population": 6, "iterations": 5},
    "cnn1d": {"epochs": 2},
    "feature_models": {"cv_folds": 2},  # 3 clips per class outside test: at most 3 source recordings
}
FOLDER_OF = {name: f"{i:03d} - {folder}" for i, (folder, name) in enumerate(ESC10_FOLDERS.items(), start=1)}


def config(cls, section: str, **overrides):
    """A stage config from the project's params.yaml with some keys replaced."""
    raw = dict(load_params(PROJECT / "params.yaml")[section])
    for key, value in overrides.items():
        if isinstance(value, dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return from_mapping(cls, raw)


def tone(freq: float, seconds: float, sr: int, *, seed: int = 0, amp: float = 0.5) -> np.ndarray:
    """A sine at ``freq`` Hz plus a little noise; float32 in [-1, 1]."""
    t = np.arange(round(seconds * sr)) / sr
    noise = np.random.default_rng(seed).uniform(-0.05, 0.05, t.size)
    return (amp * np.sin(2 * np.pi * freq * t) + noise).astype(np.float32)


@dataclasses.dataclass
class TinyClip:
    clip_id: str  # {fold}-{source}-{take}
    class_name: str
    fold: int
    source: str
    take: str
    audio: np.ndarray
    sr: int


def tiny_clips(per_class: int = 5, sr: int = 8000, seconds: float = 0.6) -> list[TinyClip]:
    """``per_class`` clips for each ESC-10 class; each class is a tone of its own pitch.

    Clip j of a class is in fold ``j % 5 + 1``; clips 0 and 5 share a source
    recording (takes A and B) so grouping can be checked.
    """
    clips = []
    for c, name in enumerate(ESC10_CLASSES):
        for j in range(per_class):
            source = str(100 + 10 * c + (j % 5))
            take = "AB"[j // 5]
            fold = j % 5 + 1
            clips.append(
                TinyClip(f"{fold}-{source}-{take}", name, fold, source, take, tone(200 + 150 * c, seconds, sr, seed=c * 100 + j), sr)
            )
    return clips


def write_esc10_release(root: Path, clips: list[TinyClip], fmt: str = "ogg") -> Path:
    for clip in clips:
        folder = root / FOLDER_OF[clip.class_name]
        folder.mkdir(parents=True, exist_ok=True)
        sf.write(folder / f"{clip.clip_id}.{fmt}", clip.audio, clip.sr)
    return root


def write_esc50_master(root: Path, clips: list[TinyClip], extra_classes: int = 1) -> Path:
    """ESC-50 master layout with the ESC-10 clips plus some non-ESC-10 rows."""
    (root / "audio").mkdir(parents=True)
    (root / "meta").mkdir()
    rows = []
    for clip in clips:
        target = ESC10_TARGETS[clip.class_name]
        filename = f"{clip.clip_id}-{target}.wav"
        sf.write(root / "audio" / filename, clip.audio, clip.sr, subtype="PCM_16")
        rows.append((filename, clip.fold, target, clip.class_name, True, clip.source, clip.take))
    for k in range(extra_classes):
        filename = f"1-9{k:04d}-A-{2 + k}.wav"
        sf.write(root / "audio" / filename, tone(3000, 0.3, 8000), 8000, subtype="PCM_16")
        rows.append((filename, 1, 2 + k, f"other_{k}", False, f"9{k:04d}", "A"))
    pd.DataFrame(rows, columns=["filename", "fold", "target", "category", "esc10", "src_file", "take"]).to_csv(
        root / "meta" / "esc50.csv", index=False
    )
    return root


def write_folders(root: Path, classes: dict[str, list[np.ndarray]], sr: int, *, channels: int = 1) -> Path:
    """Generic folder-per-class corpus; files named ``<class>_<i>.wav``."""
    for name, signals in classes.items():
        (root / name).mkdir(parents=True)
        for i, y in enumerate(signals):
            data = np.stack([y] * channels, axis=1) if channels > 1 else y
            sf.write(root / name / f"{name}_{i}.wav", data, sr)
    return root


def pytest_collection_modifyitems(items):
    """The e2e modules first. pytest-xdist (``--dist loadfile``, in pyproject.toml) hands each worker a module
    at a time in this order; the e2e modules take minutes each, so they start first and the short ones fill in."""
    items.sort(key=lambda item: item.get_closest_marker("e2e") is None)  # stable: the order within stays


@pytest.fixture(autouse=True)
def local_tracking(monkeypatch):
    """Every test starts with the project-local MLflow store. ``mlflow.set_tracking_uri`` and ``set_experiment`` also
    write ``$MLFLOW_TRACKING_URI`` and ``$MLFLOW_EXPERIMENT_ID``, so without this a test's store (or a stopped test
    server) would leak into the next test's subprocesses."""
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID", "AUDIOCLASS_MLFLOW_OFFLINE"):  # MLflow sets the first two
        monkeypatch.setenv(name, "")  # recorded, so teardown restores what was there before, for the next file's module fixtures too
        monkeypatch.delenv(name)


@pytest.fixture
def esc10_release(tmp_path) -> Path:
    return write_esc10_release(tmp_path / "ESC-10", tiny_clips())


@pytest.fixture
def esc50_master(tmp_path) -> Path:
    return write_esc50_master(tmp_path / "ESC-50-master", tiny_clips())


# A model and fit small enough to train in seconds on band_spectrograms, with no augmentation.
TINY_MODEL = ModelParams("compact_cnn", width=4, depth=2, dropout=0.1, first_kernel=3, units=8, heads=2)
TINY_FIT = FitParams(
    epochs=4,
    batch_size=8,
    learning_rate=0.01,
    patience=4,
    mixup_alpha=0.0,
    freq_masks=0,
    freq_mask_width=0,
    time_masks=0,
    time_mask_width=0,
    ema_momentum=0.0,
    label_smoothing=0.0,
)


def band_spectrograms(n_clips: int, copies: int, seed: int, n_classes: int = 3):
    """A spectrogram split where class c is a bright band at rows 2c..2c+1 of an (8, 16, 1) image, plus noise."""
    from audioclass.dataset import Split

    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_clips) % n_classes, copies)
    x = rng.uniform(0, 0.3, (len(labels), 8, 16, 1)).astype(np.float16)
    for i, c in enumerate(labels):
        x[i, 2 * c : 2 * c + 2] += 0.7
    index = pd.DataFrame(
        {
            "clip_id": np.repeat([f"s{seed}-c{i:03d}" for i in range(n_clips)], copies),
            "copy": np.tile(np.arange(copies), n_clips),
            "label": labels,
            "class_name": [f"class{c}" for c in labels],
        }
    )
    index["source_id"] = index["clip_id"]  # each clip its own recording
    return Split(x, index)


def write_spectrogram_folder(folder: Path, splits: dict) -> Path:
    """The spectrogram stage's layout: ``<folder>/<split>/{x.npy,index.csv}``."""
    for name, split in splits.items():
        (folder / name).mkdir(parents=True)
        np.save(folder / name / "x.npy", split.x)
        split.index.to_csv(folder / name / "index.csv", index=False)
    return folder


@pytest.fixture(scope="session")
def pipeline_inputs(tmp_path_factory) -> Path:
    """extract → augment (2 copies) → split on 5 synthetic clips per class at 8 kHz, 0.5 s:
    ``<root>/augmented`` and ``<root>/split.csv``, as the feature stages read them."""
    from audioclass.augmentation import AugmentConfig, augment
    from audioclass.clips import ExtractConfig, extract
    from audioclass.splits import SplitConfig, split

    root = tmp_path_factory.mktemp("pipeline-inputs")
    source = write_esc10_release(root / "ESC-10", tiny_clips(per_class=5))
    meta = extract(config(ExtractConfig, "extract", source=str(source), sample_rate=8000, duration=0.5), root / "prepared", jobs=1)
    augment(meta, root / "prepared", config(AugmentConfig, "augment", copies=2), root / "augmented", jobs=2)
    split(meta, config(SplitConfig, "split", val_fraction=0.25)).to_csv(root / "split.csv", index=False)
    return root


def shared_esc10() -> Path:
    if not SHARED_ESC10.is_dir():
        pytest.skip(f"real ESC-10 release not found at {SHARED_ESC10} (set AUDIOCLASS_ESC10)")
    return SHARED_ESC10


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now, for a server a test starts."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


BAND_RATE = 8000


class BandMember:
    """Stands in for a Keras model: 'low' when the lower half of the bands holds more energy, else 'high'."""

    def __init__(self, input_shape: tuple):
        self.input_shape = (None, *input_shape)

    def __call__(self, x, training=False):
        bands = x.shape[1]
        low = np.asarray(x)[:, : bands // 2].mean(axis=(1, 2, 3)) > np.asarray(x)[:, bands // 2 :].mean(axis=(1, 2, 3))
        return np.where(low[:, None], [[0.9, 0.1]], [[0.2, 0.8]]).astype(np.float32)


@pytest.fixture
def band_ensemble(tmp_path):
    """An ensemble of one :class:`BandMember` over 0.5 s clips at :data:`BAND_RATE` Hz, classes 'low' and 'high'."""
    from audioclass.clips import ExtractConfig
    from audioclass.predict import Ensemble, Member, model_input
    from audioclass.spectrograms import SpectrogramConfig

    extract = config(ExtractConfig, "extract", source=str(tmp_path), sample_rate=BAND_RATE, duration=0.5)
    spectrograms = config(SpectrogramConfig, "spectrograms", n_fft=256, hop_length=64, n_mels=16)
    probe = Ensemble([], "average", None, ["low", "high"], extract, spectrograms)
    shape = model_input(np.zeros(4000, np.float32), BAND_RATE, probe).shape
    return Ensemble([Member("run-1", keras=BandMember(shape))], "average", None, ["low", "high"], extract, spectrograms)

"""Front end: log-mel (or linear / PCEN) spectrograms of each file, per split."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import librosa
import numpy as np
import pandas as pd

from audioclass import audio
from audioclass.config import ParamError, require
from audioclass.dataset import write_splits
from audioclass.outputs import atomic_dir, atomic_file
from audioclass.splits import SPLITS, TestCopies, files_by_split, keep_test_copies
from audioclass.tables import read_table

log = logging.getLogger(__name__)

CHUNK = 64  # files per task: large enough to batch the FFTs, fixed for determinism
_AMIN = 1e-10  # power floor before the log, as librosa's power_to_db


@dataclass(frozen=True)
class SpectrogramConfig:
    kind: Literal["logmel", "logmel_deltas", "logmel_pcen", "mfcc"]
    n_fft: int
    hop_length: int
    n_mels: int
    fmin: float
    fmax: float | None  # null = Nyquist
    n_mfcc: int
    delta_width: int  # frames each delta spans (logmel_deltas, mfcc): odd, >= 3
    top_db: float
    normalize: Literal["clip_max", "none"]
    dtype: Literal["float16", "float32"]
    preview_per_class: int
    test_copies: TestCopies
    seed: int  # picks the preview examples

    def __post_init__(self):
        require(self.n_fft >= 16, "n_fft", "an integer >= 16", self.n_fft)
        require(0 < self.hop_length <= self.n_fft, "hop_length", f"an integer in [1, n_fft={self.n_fft}]", self.hop_length)
        n_bins = self.n_fft // 2 + 1
        require(self.n_mels >= 1, "n_mels", "an integer >= 1", self.n_mels)
        require(self.n_mels <= n_bins, "n_mels", f"at most n_fft // 2 + 1 = {n_bins} bands for n_fft={self.n_fft}", self.n_mels)
        require(self.fmin >= 0, "fmin", "a frequency >= 0 Hz", self.fmin)
        require(self.fmax is None or self.fmax > self.fmin, "fmax", f"null or a frequency above fmin={self.fmin}", self.fmax)
        if self.kind == "mfcc":
            require(1 <= self.n_mfcc <= self.n_mels, "n_mfcc", f"an integer in [1, n_mels={self.n_mels}]", self.n_mfcc)
        require(self.delta_width >= 3 and self.delta_width % 2, "delta_width", "an odd integer >= 3", self.delta_width)
        require(self.top_db > 0, "top_db", "a positive number of dB", self.top_db)
        require(
            self.preview_per_class >= 1, "preview_per_class", "an integer >= 1 (the preview is a declared output)", self.preview_per_class
        )

    def check_rate(self, sr: int) -> None:
        """Checks that need the sample rate: fmax within Nyquist, mel bands at least one FFT bin apart.

        Mel bands closer than one FFT bin (sr / n_fft Hz) at the low end sample
        the same bins as their neighbours, so they add rows without information.
        """
        if self.fmax is not None and self.fmax > sr / 2:
            raise ParamError("spectrograms.fmax", f"expected at most Nyquist = {sr / 2:g} Hz, got {self.fmax}")
        centres = librosa.mel_frequencies(self.n_mels + 2, fmin=self.fmin, fmax=self.fmax or sr / 2)
        spacing, bin_width = float(np.diff(centres).min()), sr / self.n_fft
        if spacing < bin_width:
            raise ParamError(
                "spectrograms.n_mels",
                f"{self.n_mels} mel bands are {spacing:.1f} Hz apart at "
                f"the low end, finer than the {bin_width:.1f} Hz FFT bins of n_fft={self.n_fft} at {sr} Hz; "
                "expected fewer bands or a larger n_fft",
            )

    def mel_basis(self, sr: int) -> np.ndarray:
        return librosa.filters.mel(sr=sr, n_fft=self.n_fft, n_mels=self.n_mels, fmin=self.fmin, fmax=self.fmax)


def n_frames(n_samples: int, hop_length: int) -> int:
    """Frames of a centred STFT of ``n_samples``."""
    return 1 + n_samples // hop_length


def render_spectrogram(y: np.ndarray, *, sr: int, cfg: SpectrogramConfig, silence_dbfs: float) -> np.ndarray:
    """Spectrograms of one clip or a batch.

    y : np.ndarray, shape (..., n_samples), float32 in [-1, 1]
    silence_dbfs : a clip whose peak sample is below this level is silent; under
        ``normalize: clip_max`` it renders as the floor (all 0), not referenced
        to its own peak as if it were a full-scale sound
    Returns float32, shape (..., n_bands, n_frames, n_channels) as in the module docstring.
    """
    magnitude = np.abs(librosa.stft(y, n_fft=cfg.n_fft, hop_length=cfg.hop_length))
    basis = cfg.mel_basis(sr)
    mel = np.einsum("mf,...ft->...mt", basis, magnitude**2, optimize=False)
    db = 10.0 * np.log10(np.maximum(mel, _AMIN))
    if cfg.kind == "mfcc":
        db = np.maximum(db, db.max(axis=(-2, -1), keepdims=True) - cfg.top_db)
        return _with_deltas(librosa.feature.mfcc(S=db, n_mfcc=cfg.n_mfcc), cfg.delta_width)
    if cfg.normalize == "clip_max":
        db = db - db.max(axis=(-2, -1), keepdims=True)
        db = (np.maximum(db, -cfg.top_db) + cfg.top_db) / cfg.top_db
        silent = audio.peak_dbfs(y) < silence_dbfs
        db = np.where(silent[..., np.newaxis, np.newaxis], 0.0, db)
    if cfg.kind == "logmel_deltas":
        return _with_deltas(db, cfg.delta_width)
    if cfg.kind == "logmel_pcen":
        # PCEN wants magnitudes on an integer-sample scale (librosa's advice: float audio × 2**31).
        mel_magnitude = np.einsum("mf,...ft->...mt", basis, magnitude, optimize=False)
        pcen = librosa.pcen(mel_magnitude * 2**31, sr=sr, hop_length=cfg.hop_length, axis=-1)
        return np.stack([db, pcen], axis=-1).astype(np.float32)
    return db[..., np.newaxis].astype(np.float32)


def _with_deltas(static: np.ndarray, width: int) -> np.ndarray:
    """``static`` (..., bands, frames) with its delta and delta-delta as channels: (..., bands, frames, 3) float32."""
    frames = static.shape[-1]
    width = min(width, frames - (1 - frames % 2))  # librosa needs an odd width <= frames
    deltas = [librosa.feature.delta(static, order=o, width=width) for o in (1, 2)]
    return np.stack([static, *deltas], axis=-1).astype(np.float32)


def _render_chunk(paths: list[Path], *, cfg: SpectrogramConfig, silence_dbfs: float) -> np.ndarray:
    clips = [audio.read_wav(p) for p in paths]
    sr = clips[0][1]
    return render_spectrogram(np.stack([y for y, _ in clips]), sr=sr, cfg=cfg, silence_dbfs=silence_dbfs).astype(cfg.dtype)


def choose_preview(index: pd.DataFrame, per_class: int, seed: int) -> pd.DataFrame:
    """Up to ``per_class`` rows per class, from distinct clips where possible, in class order."""
    rng = np.random.default_rng(seed)
    picks = []
    for _, rows in index.groupby("label", sort=True):
        rows = rows.iloc[rng.permutation(len(rows))]
        distinct = rows.drop_duplicates("clip_id")
        picks.append(pd.concat([distinct, rows.drop(distinct.index)]).head(per_class))
    return pd.concat(picks)


def plot_preview(images: list[np.ndarray | None], class_names: list[str], per_class: int, path: Path) -> None:
    """A grid with one row per class. ``images[r * per_class + c]`` is row r, column c:
    shape (bands, frames, channels), first channel shown; None leaves the cell empty."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(class_names), per_class, figsize=(1.6 * per_class + 1.2, 1.2 * len(class_names)), squeeze=False)
    for (r, c), ax in np.ndenumerate(axes):
        ax.set_xticks([]), ax.set_yticks([])
        if c == 0:
            ax.set_ylabel(class_names[r], rotation=0, ha="right", va="center", fontsize=8)
        image = images[r * per_class + c]
        if image is not None:
            ax.imshow(np.asarray(image[..., 0], dtype=np.float32), origin="lower", aspect="auto", cmap="magma")
    fig.suptitle("Example spectrograms, one row per class")
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80, metadata={"Software": None})
    plt.close(fig)


def spectrograms(
    augmented: Path, split_csv: Path, cfg: SpectrogramConfig, out: Path, preview: Path, jobs: int, *, silence_dbfs: float
) -> dict:
    """Run the stage; returns a summary (files and clips per split, classes, shape) for the metrics file.

    ``silence_dbfs`` is ``extract.silence_dbfs``: below it a file renders as the floor.
    """
    index = keep_test_copies(files_by_split(augmented, split_csv), cfg.test_copies)
    first, sr = audio.read_wav(augmented / index["path"].iloc[0])
    cfg.check_rate(sr)
    shape = render_spectrogram(first, sr=sr, cfg=cfg, silence_dbfs=silence_dbfs).shape  # of one file; an empty split keeps it
    render = functools.partial(_render_chunk, cfg=cfg, silence_dbfs=silence_dbfs)
    with atomic_dir(out) as tmp:
        files = write_splits(
            tmp, index, render, root=augmented, row_shape=shape, dtype=cfg.dtype, chunk=CHUNK, jobs=jobs, desc="spectrograms"
        )
        _write_preview(tmp / "train", cfg, preview)
    clips = {name: int(index.loc[index["split"] == name, "clip_id"].nunique()) for name in SPLITS}
    return {"files": files, "clips": clips, "classes": int(index["label"].nunique()), "shape": list(shape)}


def _write_preview(train_dir: Path, cfg: SpectrogramConfig, preview: Path) -> None:
    index = read_table(train_dir / "index.csv")
    x = np.load(train_dir / "x.npy", mmap_mode="r")
    classes = index.drop_duplicates("label").sort_values("label")
    picks = choose_preview(index, cfg.preview_per_class, cfg.seed)
    images = []
    for label in classes["label"]:
        rows = picks.index[picks["label"] == label]
        images += [x[i] for i in rows] + [None] * (cfg.preview_per_class - len(rows))
    plot_preview(images, list(classes["class_name"]), cfg.preview_per_class, preview)

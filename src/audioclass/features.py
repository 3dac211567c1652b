"""Front end: chroma / mel / MFCC (+ deltas) summary vectors of each file, per split."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import librosa
import numpy as np
import pandas as pd

from audioclass import audio
from audioclass.config import require
from audioclass.dataset import write_splits
from audioclass.outputs import atomic_dir
from audioclass.splits import files_by_split

CHUNK = 64  # files per task
BLOCKS = ("chroma", "mel", "mfcc", "mfcc_delta", "mfcc_delta2")
STATISTICS = ("mean", "std")
GROUPS = tuple(f"{block}_{stat}" for block in BLOCKS for stat in STATISTICS)


@dataclass(frozen=True)
class FeatureConfig:
    copies: int  # files per clip: 1 = the original clip only
    n_fft: int
    hop_length: int
    n_mels: int
    fmax: float | None  # null = Nyquist
    n_mfcc: int

    def __post_init__(self):
        require(self.copies >= 1, "copies", "an integer >= 1 (1 = the original clips only)", self.copies)
        require(self.n_fft >= 16, "n_fft", "an integer >= 16", self.n_fft)
        require(0 < self.hop_length <= self.n_fft, "hop_length", f"an integer in [1, n_fft={self.n_fft}]", self.hop_length)
        n_bins = self.n_fft // 2 + 1
        require(1 <= self.n_mels <= n_bins, "n_mels", f"at most n_fft // 2 + 1 = {n_bins} bands for n_fft={self.n_fft}", self.n_mels)
        require(self.fmax is None or self.fmax > 0, "fmax", "null or a positive frequency", self.fmax)
        require(1 <= self.n_mfcc <= self.n_mels, "n_mfcc", f"an integer in [1, n_mels={self.n_mels}]", self.n_mfcc)

    def block_sizes(self) -> dict[str, int]:
        return {"chroma": 12, "mel": self.n_mels, "mfcc": self.n_mfcc, "mfcc_delta": self.n_mfcc, "mfcc_delta2": self.n_mfcc}

    def columns(self) -> pd.DataFrame:
        """One row per column of x, in order: column, group, block, statistic."""
        rows = [
            (f"{block}_{stat}_{i}", f"{block}_{stat}", block, stat)
            for block, size in self.block_sizes().items()
            for stat in STATISTICS
            for i in range(size)
        ]
        return pd.DataFrame(rows, columns=["column", "group", "block", "statistic"])


def feature_vector(y: np.ndarray, *, sr: int, cfg: FeatureConfig) -> np.ndarray:
    """y : (n_samples,) float32 in [-1, 1] → (n_columns,) float32, ordered as ``cfg.columns()``."""
    power = np.abs(librosa.stft(y, n_fft=cfg.n_fft, hop_length=cfg.hop_length)) ** 2
    log_mel = librosa.power_to_db(librosa.feature.melspectrogram(S=power, sr=sr, n_mels=cfg.n_mels, fmax=cfg.fmax))
    mfcc = librosa.feature.mfcc(S=log_mel, n_mfcc=cfg.n_mfcc)
    blocks = {
        "chroma": librosa.feature.chroma_stft(S=power, sr=sr, n_fft=cfg.n_fft, tuning=0.0),  # A440: no per-file estimate
        "mel": log_mel,
        "mfcc": mfcc,
        # mode="nearest" pads the edges, so files shorter than the 9-frame window work too.
        "mfcc_delta": librosa.feature.delta(mfcc, mode="nearest"),
        "mfcc_delta2": librosa.feature.delta(mfcc, order=2, mode="nearest"),
    }
    return np.concatenate([part for b in blocks.values() for part in (b.mean(axis=1), b.std(axis=1))]).astype(np.float32)


def _chunk(paths: list[Path], cfg: FeatureConfig) -> np.ndarray:
    rows = []
    for path in paths:
        y, sr = audio.read_wav(path)
        rows.append(feature_vector(y, sr=sr, cfg=cfg))
    return np.stack(rows)


def features(augmented: Path, split_csv: Path, cfg: FeatureConfig, out: Path, jobs: int) -> dict[str, int]:
    """Run the stage; returns the number of files per split."""
    index = files_by_split(augmented, split_csv)
    index = index[index["copy"] < cfg.copies].reset_index(drop=True)
    columns = cfg.columns()
    with atomic_dir(out) as tmp:
        counts = write_splits(
            tmp,
            index,
            functools.partial(_chunk, cfg=cfg),
            root=augmented,
            row_shape=(len(columns),),
            chunk=CHUNK,
            jobs=jobs,
            desc="features",
        )
        columns.to_csv(tmp / "columns.csv", index=False)
    return counts

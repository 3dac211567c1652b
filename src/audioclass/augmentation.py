"""Augmentation: each clip's seeded copies (time shift, noise, pitch shift, time stretch)."""

from __future__ import annotations

import functools
import hashlib
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import librosa
import numpy as np
import pandas as pd

from audioclass import audio
from audioclass.config import require
from audioclass.outputs import atomic_dir
from audioclass.parallel import parallel_map

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ["path", "clip_id", "copy", "label", "class_name", "source_id", "fold"]


def _check_probability(p: float, key: str) -> None:
    require(0.0 <= p <= 1.0, key, "a probability in [0, 1]", p)


@dataclass(frozen=True)
class TimeShift:
    p: float
    max_seconds: float  # roll by U(-max, max) s; wrapped samples are zeroed

    def __post_init__(self):
        _check_probability(self.p, "p")
        require(self.max_seconds >= 0, "max_seconds", "seconds >= 0", self.max_seconds)


@dataclass(frozen=True)
class Noise:
    p: float
    max_fraction: float  # noise ~ U(0, max_fraction * (max - min of the clip))

    def __post_init__(self):
        _check_probability(self.p, "p")
        require(self.max_fraction >= 0, "max_fraction", "a fraction >= 0", self.max_fraction)


@dataclass(frozen=True)
class PitchShift:
    p: float
    max_semitones: float  # shift by U(-max, max) semitones

    def __post_init__(self):
        _check_probability(self.p, "p")
        require(0 <= self.max_semitones <= 24, "max_semitones", "semitones in [0, 24]", self.max_semitones)


@dataclass(frozen=True)
class TimeStretch:
    p: float
    min_rate: float  # rate ~ U(min, max); > 1 is faster; then crop or zero-pad back
    max_rate: float

    def __post_init__(self):
        _check_probability(self.p, "p")
        require(0.1 <= self.min_rate <= self.max_rate, "min_rate", f"a rate in [0.1, max_rate={self.max_rate}]", self.min_rate)
        require(self.max_rate <= 10, "max_rate", "a rate <= 10", self.max_rate)


@dataclass(frozen=True)
class AugmentConfig:
    copies: int
    seed: int
    time_shift: TimeShift
    noise: Noise
    pitch_shift: PitchShift
    time_stretch: TimeStretch

    def __post_init__(self):
        require(self.copies >= 1, "copies", "an integer >= 1 (1 = originals only)", self.copies)


def copy_rng(seed: int, clip_id: str, copy: int) -> np.random.Generator:
    """The generator for one copy: a pure function of (seed, clip id, copy index)."""
    clip_key = int.from_bytes(hashlib.sha256(clip_id.encode()).digest()[:8], "little")
    return np.random.default_rng([seed, clip_key, copy])


def augment_clip(y: np.ndarray, sr: int, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """One augmented copy of ``y``.

    y : np.ndarray, shape (n,), float32 in [-1, 1]
    Returns float32, shape (n,), finite; may exceed [-1, 1] (clipped on write).
    """
    # Draw every decision and amount up front, whether used or not, so each
    # effect's randomness does not depend on which others fired.
    fire = rng.random(4) < [cfg.time_shift.p, cfg.noise.p, cfg.pitch_shift.p, cfg.time_stretch.p]
    shift = round(rng.uniform(-cfg.time_shift.max_seconds, cfg.time_shift.max_seconds) * sr)
    semitones = rng.uniform(-cfg.pitch_shift.max_semitones, cfg.pitch_shift.max_semitones)
    rate = rng.uniform(cfg.time_stretch.min_rate, cfg.time_stretch.max_rate)
    n = y.shape[0]
    y = y.astype(np.float32, copy=True)
    if fire[0] and shift:
        y = np.roll(y, shift)
        if shift > 0:
            y[:shift] = 0
        else:
            y[shift:] = 0
    if fire[1]:
        y = y + rng.uniform(0, cfg.noise.max_fraction * (y.max() - y.min()), n).astype(np.float32)
    if fire[2]:
        y = librosa.effects.pitch_shift(y, sr=sr, n_steps=semitones)
    if fire[3]:
        y = librosa.util.fix_length(librosa.effects.time_stretch(y, rate=rate), size=n)
    return y.astype(np.float32, copy=False)


def copy_name(clip_id: str, copy: int) -> str:
    return f"wav/{clip_id}-{copy:02d}.wav"


def _augment_one(clip: dict, *, prepared: Path, cfg: AugmentConfig, out: Path) -> None:
    original = prepared / clip["path"]
    # Copy 0 is the original, byte for byte.
    shutil.copyfile(original, out / copy_name(clip["clip_id"], 0))
    y, sr = audio.read_wav(original)
    for k in range(1, cfg.copies):
        augmented = augment_clip(y, sr, copy_rng(cfg.seed, clip["clip_id"], k), cfg)
        audio.write_wav(out / copy_name(clip["clip_id"], k), augmented, sr)


def build_manifest(meta: pd.DataFrame, copies: int) -> pd.DataFrame:
    """One row per output file, ordered by clip id then copy."""
    rows = meta.loc[meta.index.repeat(copies)].reset_index(drop=True)
    rows["copy"] = np.tile(np.arange(copies), len(meta))
    rows["path"] = [copy_name(c, k) for c, k in zip(rows["clip_id"], rows["copy"])]
    return rows[MANIFEST_COLUMNS]


def augment(meta: pd.DataFrame, prepared: Path, cfg: AugmentConfig, out: Path, jobs: int) -> pd.DataFrame:
    """Run the stage: write every copy of every clip and the manifest to ``out`` atomically."""
    meta = meta.sort_values("clip_id", ignore_index=True)
    with atomic_dir(out) as tmp:
        (tmp / "wav").mkdir()
        work = functools.partial(_augment_one, prepared=prepared, cfg=cfg, out=tmp)
        parallel_map(work, meta.to_dict("records"), jobs=jobs, desc="augment", unit="clip")
        manifest = build_manifest(meta, cfg.copies)
        manifest.to_csv(tmp / "manifest.csv", index=False)
    return manifest

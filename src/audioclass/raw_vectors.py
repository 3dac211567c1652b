"""Front end: the study's 882-value raw-sample vectors of each file, per split."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from audioclass import audio
from audioclass.config import ParamError, require
from audioclass.dataset import Data, load_data, write_splits
from audioclass.outputs import atomic_dir
from audioclass.splits import TestCopies, files_by_split, keep_test_copies

CHUNK = 256  # files per task


@dataclass(frozen=True)
class RawVectorConfig:
    seconds: float  # span kept from the start of each file
    rate: float  # values kept per second
    test_copies: TestCopies

    def __post_init__(self):
        require(self.seconds > 0, "seconds", "a positive number of seconds", self.seconds)
        require(self.rate > 0, "rate", "a positive number of values per second", self.rate)

    @property
    def length(self) -> int:
        return round(self.seconds * self.rate)

    def positions(self, sr: int, n_samples: int) -> np.ndarray:
        """Sample indices kept from a file of ``n_samples`` at ``sr`` Hz."""
        if self.rate > sr:
            raise ParamError("raw_vectors.rate", f"expected at most the sample rate ({sr} Hz), got {self.rate}")
        if self.seconds * sr > n_samples:
            raise ParamError("raw_vectors.seconds", f"expected at most the files' {n_samples / sr:g} s, got {self.seconds}")
        return np.floor(np.arange(self.length) * (sr / self.rate)).astype(np.int64)


def raw_vector(y: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """The kept samples of ``y`` (float in [-1, 1]) scaled to [0, 1], as the study's (x + 32768) / 65536."""
    return ((y[..., positions] + 1.0) / 2.0).astype(np.float32)


def _chunk(paths: list[Path], positions: np.ndarray) -> np.ndarray:
    return np.stack([raw_vector(audio.read_wav(p)[0], positions) for p in paths])


def raw_vectors(augmented: Path, split_csv: Path, cfg: RawVectorConfig, out: Path, jobs: int) -> dict[str, int]:
    """Run the stage; returns the number of files per split."""
    index = keep_test_copies(files_by_split(augmented, split_csv), cfg.test_copies)
    first, sr = audio.read_wav(augmented / index["path"].iloc[0])
    positions = cfg.positions(sr, len(first))
    with atomic_dir(out) as tmp:
        return write_splits(
            tmp,
            index,
            functools.partial(_chunk, positions=positions),
            root=augmented,
            row_shape=(cfg.length,),
            chunk=CHUNK,
            jobs=jobs,
            desc="raw vectors",
        )


def load_raw_vectors(folder: Path) -> Data:
    """This stage's output as the models read it."""
    return load_data(folder, expected="the raw_vectors stage's output (dvc repro raw_vectors)")

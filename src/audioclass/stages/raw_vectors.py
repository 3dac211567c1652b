"""Stage ``raw_vectors``: the study's 1D baseline input, one short raw-sample vector per augmented file.

The study kept the first 2 s of each 44.1 kHz file and every 100th sample:
882 values, scaled from int16 to [0, 1] by ``(x + 32768) / 65536``. Here the
span (``seconds``) and the values kept per second (``rate``, 441 in the study)
are params, so any sample rate gives the same time span and vector length: at
22,050 Hz the stage keeps every 50th sample. Like the study it decimates
without a low-pass filter; that is the baseline being reproduced.

Train and validation get every augmented copy. Test gets each clip's original
recording (``test_copies: original``), as the spectrogram stage's default, so
the baselines and the CNN score the same test files; ``all`` keeps every copy,
as the study scored its augmented test files.

Reads the augment stage's folder and the split CSV; writes, atomically::

    <out>/<split>/x.npy       (n_files, round(seconds × rate)) float32 in [0, 1]
    <out>/<split>/index.csv   row i of x, as the spectrogram stage's index

Rerun with ``dvc repro raw_vectors``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from audioclass import audio
from audioclass.cli import run_stage, stage_parser
from audioclass.config import ParamError, load_params, require, stage_config
from audioclass.dataset import Data, load_data, write_splits
from audioclass.outputs import atomic_dir
from audioclass.stages.split import TestCopies, files_by_split, keep_test_copies

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
        return write_splits(tmp, index, functools.partial(_chunk, positions=positions), root=augmented, width=cfg.length,
                            chunk=CHUNK, jobs=jobs, desc="raw vectors")  # fmt: skip


def load_raw_vectors(folder: Path) -> Data:
    """This stage's output as the models read it."""
    return load_data(folder, expected="the raw_vectors stage's output (dvc repro raw_vectors)")


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("raw_vectors", __doc__, jobs=True)
    parser.add_argument("--augmented", type=Path, required=True, help="augment's output folder")
    parser.add_argument("--split", type=Path, required=True, help="split's CSV")
    parser.add_argument("--out", type=Path, required=True, help="output folder, e.g. data/raw_vectors")
    args = parser.parse_args(argv)
    cfg = stage_config(RawVectorConfig, load_params(args.params), "raw_vectors", args.params)
    raw_vectors(args.augmented, args.split, cfg, args.out, args.jobs)


if __name__ == "__main__":
    run_stage(main)

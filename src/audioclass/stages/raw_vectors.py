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

from pathlib import Path

from audioclass.cli import run_stage, stage_parser
from audioclass.config import load_params, stage_config
from audioclass.raw_vectors import RawVectorConfig, raw_vectors


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

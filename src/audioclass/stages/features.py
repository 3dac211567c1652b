"""Stage ``features``: one feature vector per file, from time-averaged frame features.

The speech-emotion recipe's features, computed from one power STFT per file:

==============  ======  =====================================================
block           values  per frame
==============  ======  =====================================================
``chroma``      12      chroma from the STFT
``mel``         n_mels  log-mel power (dB re 1.0), ``fmax`` as the recipe's 8 kHz
``mfcc``        n_mfcc  MFCCs of that log-mel spectrogram
``mfcc_delta``  n_mfcc  their first time derivative
``mfcc_delta2`` n_mfcc  and their second
==============  ======  =====================================================

Each block is summarised over the file's frames by its mean and its standard
deviation, giving column groups ``<block>_mean`` and ``<block>_std``; the
feature_models stage picks groups into feature sets (the recipe's 180 values
are ``chroma_mean + mel_mean + mfcc_mean``). The mean of a delta is close to
zero for any stationary sound, which is why the deltas also carry their std.

``copies`` picks how many of each clip's augmented files are used: 1 keeps
the original clips only (the recipe: one vector per clip), more add that many
augmented copies per clip. Reads the augment stage's folder and the split CSV;
writes, atomically::

    <out>/<split>/x.npy       (n_files, n_columns) float32
    <out>/<split>/index.csv   row i of x, as the spectrogram stage's index
    <out>/columns.csv         column, group, block, statistic: what each column of x is

Files are computed in fixed chunks, so the bytes never depend on the number of
workers. Rerun with ``dvc repro features``.
"""

from __future__ import annotations

from pathlib import Path

from audioclass.cli import run_stage, stage_parser
from audioclass.config import load_params, stage_config
from audioclass.features import FeatureConfig, features


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("features", __doc__, jobs=True)
    parser.add_argument("--augmented", type=Path, required=True, help="augment's output folder")
    parser.add_argument("--split", type=Path, required=True, help="split's CSV")
    parser.add_argument("--out", type=Path, required=True, help="output folder, e.g. data/features")
    args = parser.parse_args(argv)
    cfg = stage_config(FeatureConfig, load_params(args.params), "features", args.params)
    features(args.augmented, args.split, cfg, args.out, args.jobs)


if __name__ == "__main__":
    run_stage(main)

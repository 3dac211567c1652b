"""Stage ``embed``: one pretrained embedding per audio file; one DVC stage per model in ``embed.models`` (foreach).

The model (``--model``, a name in :data:`audioclass.embeddings.BACKENDS`) was
trained on outside data; its weights come from an installed package, never a
download. Each file of the pipeline's own audio (extraction's clip, or one of
augmentation's copies) is resampled to the model's rate and embedded as the
mean of its windows' embeddings (:mod:`audioclass.embeddings`).

The files are those the CNN runs see, read from the spectrogram stage's
``index.csv`` of each split, so a head's predictions pair with the runs' row
by row: validation every copy of each clip (what the ensemble's weights are
fitted on), test what ``spectrograms.test_copies`` keeps, and train the first
``embed.copies`` copies of each clip (1: its original recording only).

Writes, atomically::

    <out>/<split>/x.npy       (n_files, dim) float32; dim = 1024 for birdnet
    <out>/<split>/index.csv   row i of x, as the spectrogram stage's index
    <out>/backend.json        the model: package and version, rate, window, hop, dim, licence, provenance

Files are embedded in fixed chunks, so the bytes never depend on ``--jobs``.
Rerun with ``dvc repro embed`` (every model) or ``dvc repro embed@birdnet``.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from audioclass import audio, embeddings
from audioclass.embeddings import EmbedConfig
from audioclass.cli import run_stage, stage_parser
from audioclass.config import load_params, stage_config
from audioclass.dataset import SPLITS, write_splits
from audioclass.errors import ConfigError
from audioclass.outputs import atomic_dir, require_inputs
from audioclass.tables import json_text, read_table

log = logging.getLogger(__name__)

CHUNK = 32  # files per task: each worker opens the model once, so chunks stay small enough to share the work


def _chunk(paths: list[Path], model: str) -> np.ndarray:
    rows = []
    for path in paths:
        y, sr = audio.read_wav(path)
        rows.append(embeddings.embed_clip(y, sr, model))
    return np.stack(rows)


def files_to_embed(spectrograms: Path, copies: int) -> pd.DataFrame:
    """The spectrogram stage's rows of every split, training rows cut to the first ``copies`` copies of each clip."""
    require_inputs([spectrograms / s / "index.csv" for s in SPLITS], "the spectrogram stage's output (dvc repro spectrograms)")
    index = pd.concat([read_table(spectrograms / s / "index.csv") for s in SPLITS], ignore_index=True)
    return index[(index["split"] != "train") | (index["copy"] < copies)].reset_index(drop=True)


def embed(augmented: Path, spectrograms: Path, cfg: EmbedConfig, model: str, out: Path, jobs: int) -> dict[str, int]:
    """Run the stage for one model; returns the number of files per split."""
    backend = embeddings.backend(model, key="--model")
    embeddings.weights_file(backend)  # a missing package stops here, before any work
    index = files_to_embed(spectrograms, cfg.copies)
    with atomic_dir(out) as tmp:
        counts = write_splits(tmp, index, functools.partial(_chunk, model=model), root=augmented, width=backend.dim,
                              chunk=CHUNK, jobs=jobs, desc=f"embed {model}")  # fmt: skip
        (tmp / "backend.json").write_text(json_text(backend.describe()))
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("embed", __doc__, jobs=True)
    parser.add_argument("--model", required=True, help=f"embedding model, one of embed.models: {', '.join(sorted(embeddings.BACKENDS))}")
    parser.add_argument("--augmented", type=Path, required=True, help="augment's output folder (the audio)")
    parser.add_argument("--spectrograms", type=Path, required=True, help="the spectrogram stage's folder (which files, per split)")
    parser.add_argument("--out", type=Path, required=True, help="output folder, e.g. data/embeddings/birdnet")
    args = parser.parse_args(argv)
    cfg = stage_config(EmbedConfig, load_params(args.params), "embed", args.params)
    if args.model not in cfg.models:
        raise ConfigError(f"{args.params}: embed.models: expected to contain --model {args.model}, got {list(cfg.models)}")
    counts = embed(args.augmented, args.spectrograms, cfg, args.model, args.out, args.jobs)
    log.info("%s: embedded %s", args.model, ", ".join(f"{k} {v}" for k, v in counts.items()))


if __name__ == "__main__":
    run_stage(main)

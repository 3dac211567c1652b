"""Stage ``extract``: decode a labelled corpus into uniform clips plus metadata.

Reads the dataset named by ``extract.source`` (a folder or zip in any layout of
``audioclass.layouts``: esc50, esc10, folders, filename) and writes, atomically::

    <out>/clips/<clip_id>.wav   mono int16 WAV at extract.sample_rate, exactly extract.duration s
    <out>/metadata.csv          one row per clip: clip_id, source_id, take, fold, label (class index),
                                class_name (exactly as in the corpus), path, original_path
    <out>/corpus.json           name ("ESC-10", "ESC-50" or null for another corpus), layout, classes
    <out>/skipped.csv           with extract.on_error: skip, the files left out because they cannot be
                                read (file, error); absent when there are none

In the ESC layouts a clip's id, fold and source recording come from its name
(``{fold}-{source}-{take}``). In the folders and filename layouts the id is the
file's path below the corpus, escaped to a file name (``cat/000.wav`` is
``cat%2F000``); folds are assigned here by a grouped, stratified k-fold
(``extract.n_folds``) so that one source recording never spans two folds.
Clips whose peak is below ``extract.silence_dbfs`` are named in a warning.
Every file that cannot be read is named; then the stage stops, writing
nothing (``extract.on_error: stop``), or leaves them out (``skip``).

Rerun with ``dvc repro extract``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from audioclass.cli import run_stage, stage_parser
from audioclass.clips import ExtractConfig, extract
from audioclass.config import load_params, stage_config

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("extract", __doc__, jobs=True)
    parser.add_argument("--out", type=Path, required=True, help="output folder, e.g. data/prepared")
    args = parser.parse_args(argv)
    cfg = stage_config(ExtractConfig, load_params(args.params), "extract", args.params)
    meta = extract(cfg, args.out, args.jobs)
    counts = meta.groupby("class_name").size()
    log.info("wrote %d clips to %s (%d to %d per class)", len(meta), args.out, counts.min(), counts.max())


if __name__ == "__main__":
    run_stage(main)

"""Stage ``augment``: write every clip as-is plus ``copies - 1`` augmented copies.

Reads ``<prepared>/metadata.csv`` and the clips, and writes, atomically::

    <out>/wav/<clip_id>-<k:02d>.wav   copy k of the clip (k = 0 is the original)
    <out>/manifest.csv                path, clip_id, copy, label, class_name, source_id, fold

Each copy applies each effect independently with its probability, in this
order (reference-study.md): time shift, additive noise, pitch shift, time
stretch. Copy k of clip i uses ``default_rng([seed, hash(clip id), k])``, so
it is byte-identical whether it runs serially or in parallel, and raising
``copies`` leaves the earlier copies unchanged.

Augmentation does not depend on the split: every clip gets the same copies
whichever split it lands in, so changing ``split.*`` never reruns this stage.
The spectrogram stage joins the split in.

Rerun with ``dvc repro augment``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from audioclass.augmentation import AugmentConfig, augment
from audioclass.cli import run_stage, stage_parser
from audioclass.config import load_params, stage_config
from audioclass.tables import read_table

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("augment", __doc__, jobs=True)
    parser.add_argument("--prepared", type=Path, required=True, help="extract's output folder")
    parser.add_argument("--out", type=Path, required=True, help="output folder, e.g. data/augmented")
    args = parser.parse_args(argv)
    cfg = stage_config(AugmentConfig, load_params(args.params), "augment", args.params)
    meta = read_table(args.prepared / "metadata.csv")
    manifest = augment(meta, args.prepared, cfg, args.out, args.jobs)
    log.info("wrote %d files (%d clips × %d copies) to %s", len(manifest), len(meta), cfg.copies, args.out)


if __name__ == "__main__":
    run_stage(main)

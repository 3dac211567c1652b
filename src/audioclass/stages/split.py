"""Stage ``split``: assign every clip to train, val or test without leakage.

Reads ``<prepared>/metadata.csv`` and writes ``<out>`` (a CSV with columns
``clip_id, source_id, label, fold, split``) in clip-id order.

Strategies (``split.strategy``):

``folds`` (default)
    Test is the official fold ``split.test_fold``. Validation is the fold
    ``split.val_fold`` or, when that is null, a fraction ``split.val_fraction``
    of the other clips, stratified by class and grouped by source recording.
``holdout``
    The study's protocol: ``split.test_per_class`` test clips per class, drawn
    with ``split.seed``. With ``group_by_source: true`` whole source recordings
    are drawn so none straddles train and test; ``false`` reproduces the
    study's plain random draw (which leaks) for like-for-like comparison.

In both, validation never holds test clips, and no source recording straddles
train and validation.

Rerun with ``dvc repro split``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from audioclass.cli import run_stage, stage_parser
from audioclass.config import load_params, stage_config
from audioclass.outputs import atomic_file
from audioclass.splits import SPLITS, SplitConfig, split
from audioclass.tables import read_table

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("split", __doc__, jobs=False)
    parser.add_argument("--metadata", type=Path, required=True, help="extract's metadata.csv")
    parser.add_argument("--out", type=Path, required=True, help="output CSV, e.g. data/split.csv")
    args = parser.parse_args(argv)
    cfg = stage_config(SplitConfig, load_params(args.params), "split", args.params)
    table = split(read_table(args.metadata), cfg)
    with atomic_file(args.out) as tmp:
        table.to_csv(tmp, index=False)
    counts = table["split"].value_counts()
    log.info("%s: %s", args.out, ", ".join(f"{s} {counts.get(s, 0)}" for s in SPLITS))


if __name__ == "__main__":
    run_stage(main)

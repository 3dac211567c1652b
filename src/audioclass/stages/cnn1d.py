"""Stage ``cnn1d``: one cell of the study's 1D CNN grid on the raw vectors; DVC's matrix runs the grid.

The family, built from one definition: every convolution has 64 filters of
kernel 3 and ReLU, except the first (32 filters, kernel ``first_kernel``);
each "pool" is MaxPool 3 then Dropout 0.25; all end Flatten → Dense 512 →
Dropout 0.5 → softmax.

============  =========================================================
shallow       conv32(k) → pool
medium        conv32(k) → conv → conv → pool
deep0         medium, then [conv → conv → pool] once
deep1         medium, then [conv → conv → pool] twice
deep2         medium, then [conv → conv → pool] three times
============  =========================================================

``dvc.yaml`` runs one stage per (architecture, first kernel) in
``cnn1d.architectures`` × ``cnn1d.first_kernels``; the study's full grid is
all five architectures × kernels 3, 5, 7, 9, 11, 13, 15 and 33. Each cell
trains on the train split with Adam for ``epochs`` (the study: 16, batch 32),
keeps the weights of its best validation-loss epoch, and writes::

    <out>/<architecture>-k<kernel>.json    validation and test accuracy (file and clip level)
    <out>/<architecture>-k<kernel>.csv     the learning curve

Each cell is an MLflow run with per-epoch metrics and the clip-level test confusion matrix.
"""

from __future__ import annotations

import logging
from pathlib import Path

from audioclass import tracking
from audioclass.cli import run_stage, stage_parser
from audioclass.config import load_params, stage_config
from audioclass.errors import ConfigError
from audioclass.models import CNN1D_BLOCKS
from audioclass.outputs import atomic_file
from audioclass.raw_vectors import load_raw_vectors
from audioclass.tables import json_text
from audioclass.training import Cnn1dConfig, fit_cell

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("cnn1d", __doc__)
    parser.add_argument("--architecture", required=True, help=f"one of {list(CNN1D_BLOCKS)}")
    parser.add_argument("--kernel", type=int, required=True, help="the first convolution's kernel size")
    parser.add_argument("--data", type=Path, required=True, help="the raw_vectors stage's folder")
    parser.add_argument("--out", type=Path, required=True, help="report folder, e.g. reports/baselines/cnn1d")
    args = parser.parse_args(argv)
    cfg = stage_config(Cnn1dConfig, load_params(args.params), "cnn1d", args.params)
    tracking.require_store()
    if args.architecture not in cfg.architectures or args.kernel not in cfg.first_kernels:
        raise ConfigError(
            f"{args.params}: cnn1d: expected the grid to contain {args.architecture} with kernel {args.kernel}, "
            f"got {list(cfg.architectures)} × {list(cfg.first_kernels)}"
        )
    data = load_raw_vectors(args.data)
    name = f"{args.architecture}-k{args.kernel}"
    params = {
        "architecture": args.architecture,
        "first_kernel": args.kernel,
        "epochs": cfg.epochs,
        "batch_size": cfg.batch_size,
        "learning_rate": cfg.learning_rate,
        "seed": cfg.seed,
    }
    with tracking.run(f"cnn1d-{name}", params, tags={"pipeline_role": "baseline", "baseline": "cnn1d"}):
        metrics, curve = fit_cell(cfg, args.architecture, args.kernel, data)
        scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        tracking.log_metrics(scalars)
        tracking.log_confusion_matrix(metrics["test_clip_confusion"], data.class_names, f"1D CNN {name}, test clips")
    with atomic_file(args.out / f"{name}.json") as tmp:
        tmp.write_text(json_text(scalars))
    with atomic_file(args.out / f"{name}.csv") as tmp:
        curve.to_csv(tmp, index=False)
    log.info(
        "%s: test %.3f file / %.3f clip (best epoch %d)",
        name,
        metrics["test_file_accuracy"],
        metrics["test_clip_accuracy"],
        metrics["best_epoch"],
    )


if __name__ == "__main__":
    run_stage(main)

"""How long would the study's full 1D CNN grid take? Time one epoch of each architecture at the smallest
and largest first kernel on the project's raw vectors, and extrapolate to the grid.

    python benchmarks/cnn1d_grid.py          # needs data/raw_vectors (dvc repro raw_vectors); ≈ 3 minutes

Writes ``benchmarks/reports/cnn1d_grid.{json,md}``. An epoch's time grows with
the first kernel, so each cell's epoch time is interpolated linearly in the
kernel between the two measured kernels; the grid's time is 16 epochs a cell.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from audioclass.config import load_params, stage_config
from audioclass.models import CNN1D_BLOCKS, cnn1d
from audioclass.raw_vectors import load_raw_vectors
from audioclass.training import Cnn1dConfig
from pipeline import PROJECT, benchmark_parser, machine, write_report

STUDY_KERNELS = (3, 5, 7, 9, 11, 13, 15, 33)


def epoch_seconds(architecture: str, kernel: int, x: np.ndarray, y: np.ndarray, cfg: Cnn1dConfig) -> float:
    """Wall seconds of the second of two epochs (the first includes graph building)."""
    import keras

    keras.utils.set_random_seed(cfg.seed)
    model = cnn1d(architecture, kernel, x.shape[1], int(y.max()) + 1)
    model.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate), loss="sparse_categorical_crossentropy")
    model.fit(x[..., np.newaxis], y, epochs=1, batch_size=cfg.batch_size, verbose=0)
    start = time.perf_counter()
    model.fit(x[..., np.newaxis], y, epochs=1, batch_size=cfg.batch_size, verbose=0)
    return time.perf_counter() - start


def main() -> None:
    parser = benchmark_parser(__doc__, "cnn1d_grid")
    parser.add_argument("--data", type=Path, default=PROJECT / "data/raw_vectors", help="the raw_vectors stage's output")
    args = parser.parse_args()
    cfg = stage_config(Cnn1dConfig, load_params(PROJECT / "params.yaml"), "cnn1d")
    train = load_raw_vectors(args.data).train
    lo, hi = min(STUDY_KERNELS), max(STUDY_KERNELS)
    measured = {}
    for architecture in CNN1D_BLOCKS:
        measured[architecture] = {k: round(epoch_seconds(architecture, k, train.x, train.y, cfg), 2) for k in (lo, hi)}
        print(architecture, measured[architecture], flush=True)
    cells = {a: {k: m[lo] + (m[hi] - m[lo]) * (k - lo) / (hi - lo) for k in STUDY_KERNELS} for a, m in measured.items()}
    per_architecture = {a: round(cfg.epochs * sum(c.values()) / 60, 1) for a, c in cells.items()}
    report = {
        "command": "python benchmarks/cnn1d_grid.py",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine(),
        "train_files": len(train.y),
        "epochs_per_cell": cfg.epochs,
        "batch_size": cfg.batch_size,
        "epoch_seconds": measured,
        "grid_minutes_per_architecture": per_architecture,
        "grid_minutes": round(sum(per_architecture.values()), 1),
    }
    lines = [
        "# The study's full 1D CNN grid: estimated time",
        "",
        f"One epoch = {len(train.y):,} training vectors, batch {cfg.batch_size}; {cfg.epochs} epochs a cell. "
        f"Machine: {report['machine']['cpus']} CPUs.",
        "",
        f"| architecture | epoch, kernel {lo} (s) | epoch, kernel {hi} (s) | 8 kernels × {cfg.epochs} epochs (min) |",
        "|---|---:|---:|---:|",
    ]
    for a, m in measured.items():
        lines.append(f"| {a} | {m[lo]} | {m[hi]} | {per_architecture[a]} |")
    lines += [
        "",
        f"Whole grid (5 architectures × kernels {list(STUDY_KERNELS)}): about **{report['grid_minutes']} minutes**, "
        "plus a few seconds a cell to start and predict.",
    ]
    write_report(report, "\n".join(lines) + "\n", args.report)


if __name__ == "__main__":
    main()

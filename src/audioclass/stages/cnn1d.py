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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from audioclass import tracking
from audioclass.cli import run_stage, stage_parser
from audioclass.config import load_params, require, stage_config
from audioclass.dataset import Data
from audioclass.errors import ConfigError
from audioclass.evaluation import summarize
from audioclass.outputs import atomic_file
from audioclass.stages.raw_vectors import load_raw_vectors
from audioclass.tables import json_text

log = logging.getLogger(__name__)

# Extra [conv → conv → pool] blocks after the medium trunk; None: the shallow trunk alone.
EXTRA_BLOCKS = {"shallow": None, "medium": 0, "deep0": 1, "deep1": 2, "deep2": 3}


@dataclass(frozen=True)
class Cnn1dConfig:
    architectures: tuple[str, ...]
    first_kernels: tuple[int, ...]
    epochs: int
    batch_size: int
    learning_rate: float
    seed: int

    def __post_init__(self):
        for name in self.architectures:
            require(name in EXTRA_BLOCKS, "architectures", f"names from {list(EXTRA_BLOCKS)}", name)
        for k in self.first_kernels:
            require(k >= 1, "first_kernels", "kernel sizes >= 1", k)
        require(len(self.architectures) >= 1 and len(self.first_kernels) >= 1, "architectures", "a non-empty grid", self.architectures)
        require(self.epochs >= 1, "epochs", "an integer >= 1", self.epochs)
        require(self.batch_size >= 1, "batch_size", "an integer >= 1", self.batch_size)
        require(0 < self.learning_rate < 1, "learning_rate", "a rate in (0, 1)", self.learning_rate)


def build(architecture: str, first_kernel: int, length: int, n_classes: int) -> Any:
    """One member of the family for inputs of ``length`` samples."""
    import keras
    from keras import layers

    def pool(x: Any) -> Any:
        return layers.Dropout(0.25)(layers.MaxPooling1D(3, padding="same")(x))

    def conv(x: Any, filters: int = 64, kernel: int = 3) -> Any:
        return layers.Conv1D(filters, kernel, padding="same", activation="relu")(x)

    inputs = keras.Input((length, 1))
    x = conv(inputs, 32, first_kernel)
    extra = EXTRA_BLOCKS[architecture]
    if extra is not None:
        x = conv(conv(x))
    x = pool(x)
    for _ in range(extra or 0):
        x = pool(conv(conv(x)))
    x = layers.Dropout(0.5)(layers.Dense(512, activation="relu")(layers.Flatten()(x)))
    outputs = layers.Dense(n_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name=f"cnn1d_{architecture}_k{first_kernel}")


def fit_cell(cfg: Cnn1dConfig, architecture: str, kernel: int, data: Data) -> tuple[dict, pd.DataFrame]:
    """Train one grid cell; its scores (best validation-loss epoch) and learning curve."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(cfg.seed)
    tf.config.experimental.enable_op_determinism()
    model = build(architecture, kernel, data.train.x.shape[1], len(data.class_names))
    model.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    best = keras.callbacks.EarlyStopping(monitor="val_loss", patience=cfg.epochs, restore_best_weights=True)  # keep the best epoch
    history = model.fit(data.train.x[..., np.newaxis], data.train.y, validation_data=(data.val.x[..., np.newaxis], data.val.y),
                        epochs=cfg.epochs, batch_size=cfg.batch_size, callbacks=[best, tracking.epoch_logger()], verbose=2)  # fmt: skip
    curve = pd.DataFrame(history.history)
    curve.insert(0, "epoch", np.arange(len(curve)))
    val = model.predict(data.val.x[..., np.newaxis], batch_size=256, verbose=0)
    test = model.predict(data.test.x[..., np.newaxis], batch_size=256, verbose=0)
    metrics = summarize(val, data.val.index, test, data.test.index, data.class_names)
    metrics.update(best_epoch=int(curve["val_loss"].idxmin()), parameters=int(model.count_params()))
    return metrics, curve


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("cnn1d", __doc__)
    parser.add_argument("--architecture", required=True, help=f"one of {list(EXTRA_BLOCKS)}")
    parser.add_argument("--kernel", type=int, required=True, help="the first convolution's kernel size")
    parser.add_argument("--data", type=Path, required=True, help="the raw_vectors stage's folder")
    parser.add_argument("--out", type=Path, required=True, help="report folder, e.g. reports/baselines/cnn1d")
    args = parser.parse_args(argv)
    cfg = stage_config(Cnn1dConfig, load_params(args.params), "cnn1d", args.params)
    tracking.require_store()
    if args.architecture not in cfg.architectures or args.kernel not in cfg.first_kernels:
        raise ConfigError(f"{args.params}: cnn1d: expected the grid to contain {args.architecture} with kernel {args.kernel}, "
                          f"got {list(cfg.architectures)} × {list(cfg.first_kernels)}")  # fmt: skip
    data = load_raw_vectors(args.data)
    name = f"{args.architecture}-k{args.kernel}"
    params = {"architecture": args.architecture, "first_kernel": args.kernel, "epochs": cfg.epochs, "batch_size": cfg.batch_size,
              "learning_rate": cfg.learning_rate, "seed": cfg.seed}  # fmt: skip
    with tracking.run(f"cnn1d-{name}", params, tags={"pipeline_role": "baseline", "baseline": "cnn1d"}):
        metrics, curve = fit_cell(cfg, args.architecture, args.kernel, data)
        scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        tracking.log_metrics(scalars)
        tracking.log_confusion_matrix(metrics["test_clip_confusion"], data.class_names, f"1D CNN {name}, test clips")
    with atomic_file(args.out / f"{name}.json") as tmp:
        tmp.write_text(json_text(scalars))
    with atomic_file(args.out / f"{name}.csv") as tmp:
        curve.to_csv(tmp, index=False)
    log.info("%s: test %.3f file / %.3f clip (best epoch %d)", name, metrics["test_file_accuracy"], metrics["test_clip_accuracy"],
             metrics["best_epoch"])  # fmt: skip


if __name__ == "__main__":
    run_stage(main)

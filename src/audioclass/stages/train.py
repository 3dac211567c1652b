"""Stage ``train``: fit one run of ``train.runs`` on the spectrograms; one DVC stage per run (foreach).

Reads ``<data>/{train,val,test}/`` (the spectrogram stage's output) and the
model and fit hyperparameters from ``--hyperparameters`` (the tune stage's
``best_params.yaml``: the tuned values, or ``train.model`` / ``train.fit``
when tuning is off; without the option, ``params.yaml``'s), with the run's
own ``model`` / ``fit`` changes on top. Writes, atomically, to ``<out>``
(e.g. ``models/run-1``)::

    model.keras          the fitted model (best validation epoch; with train.refit, refitted on train + val)
    history.csv          per epoch: epoch, loss, accuracy, val_loss, val_accuracy
    val_probs.npy        (n_val_files, n_classes) float32, rows as <data>/val/index.csv
    test_probs.npy       (n_test_files, n_classes) float32, rows as <data>/test/index.csv
    metrics.json         validation and test accuracy (file and clip level), macro-F1, confusion matrix, architecture
    test_predictions.csv clip-level actual/predicted class names
    confusion.png        the clip-level test confusion matrix
    config.json          the run's name, seed and every hyperparameter

Training sees the train split only. The validation split drives early
stopping and the choice of the best epoch; the test split is only predicted.
With ``train.refit``, a second model then trains on train + val to that epoch
of the same schedule and predicts test (and is the saved model); validation
figures stay those of the first, which never saw the validation clips.
File level is every test file; clip level averages each clip's probabilities
over its files. With ``spectrograms.test_copies: original`` (the default) a
test clip has one file, its original recording, and the two are equal. Every run is an MLflow run tagged
with its architecture (params, per-epoch metrics, final metrics, the model, the confusion matrix and history).

Rerun with ``dvc repro train`` (every run) or ``dvc repro train@run-1`` (one).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from audioclass import tracking
from audioclass.cli import run_stage, stage_parser
from audioclass.config import file_config, load_params, stage_config
from audioclass.dataset import Data, load_data
from audioclass.errors import ConfigError
from audioclass.evaluation import clip_predictions
from audioclass.outputs import atomic_dir, atomic_file, require_inputs
from audioclass.plots import confusion_png
from audioclass.tables import json_text
from audioclass.training import Hyperparameters, TrainConfig, TrainedRun, train_run

log = logging.getLogger(__name__)


def numbers(metrics: dict) -> dict:
    """The scalar metrics: what DVC and MLflow record (the confusion matrix and class names stay in metrics.json)."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}


def write_run(folder: Path, run: TrainedRun, metrics: dict, resolved: dict, data: Data, name: str) -> None:
    """The run's folder, as the module's docstring lists it."""
    run.model.save(folder / "model.keras")
    run.history.to_csv(folder / "history.csv", index=False)
    np.save(folder / "val_probs.npy", run.val_probs)
    np.save(folder / "test_probs.npy", run.test_probs)
    clip_predictions(run.test_probs, data.test.index, data.class_names).to_csv(folder / "test_predictions.csv", index=False)
    confusion_png(metrics["test_clip_confusion"], list(data.class_names), folder / "confusion.png", f"{name}, test clips")
    (folder / "metrics.json").write_text(json_text(metrics))
    (folder / "config.json").write_text(json_text(resolved))


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("train", __doc__)
    parser.add_argument("--run", required=True, help="the run's name in train.runs, e.g. run-1")
    parser.add_argument("--data", type=Path, required=True, help="the spectrogram stage's folder")
    parser.add_argument(
        "--hyperparameters",
        type=Path,
        help="model and fit values, e.g. reports/tune/best_params.yaml (default: params.yaml's train.model/fit)",
    )
    parser.add_argument("--out", type=Path, required=True, help="the run's folder, e.g. models/run-1")
    parser.add_argument("--metrics", type=Path, required=True, help="DVC metrics file, e.g. reports/train/run-1.json")
    parser.add_argument("--history", type=Path, required=True, help="DVC plots file, e.g. reports/train/run-1.csv")
    args = parser.parse_args(argv)
    cfg = stage_config(TrainConfig, load_params(args.params), "train", args.params)
    tracking.require_store()
    if args.run not in cfg.runs:
        raise ConfigError(f"{args.params}: train.runs: expected a run named --run {args.run!r}, got {list(cfg.runs)}")
    if args.hyperparameters:
        require_inputs([args.hyperparameters], "the tune stage's output (dvc repro tune)")
        chosen = file_config(Hyperparameters, args.hyperparameters)
        try:
            cfg = dataclasses.replace(cfg, model=chosen.model, fit=chosen.fit)
        except ConfigError as err:  # a run's changes that do not fit the tuned values
            raise ConfigError(f"{args.params}: train.{err} (on top of {args.hyperparameters})") from None
    spec = cfg.run(args.run)
    data = load_data(args.data, on_disk=True)
    resolved = dataclasses.asdict(spec) | {"refit": cfg.refit}  # name, seed, model, fit, refit
    tags = {"pipeline_role": "train", "architecture": spec.model.architecture}
    with tracking.run(f"train-{spec.name}", resolved, tags=tags) as active, atomic_dir(args.out) as tmp:
        tracking.log_dataset(args.data, context="training")
        run = train_run(spec, data, refit=cfg.refit, callbacks=(tracking.epoch_logger(),))
        metrics = run.metrics | {"architecture": spec.model.architecture, "mlflow_run_id": active.info.run_id}
        write_run(tmp, run, metrics, resolved, data, spec.name)
        tracking.log_metrics(numbers(metrics))
        tracking.log_artifacts(tmp, artifact_path="run")
        tracking.log_keras_model(run.model)
    with atomic_file(args.metrics) as tmp:
        tmp.write_text(json_text(numbers(metrics)))
    with atomic_file(args.history) as tmp:
        run.history.to_csv(tmp, index=False)
    log.info(
        "%s: val %.3f, test clip %.3f / file %.3f after %d epochs",
        spec.name,
        metrics["val_file_accuracy"],
        metrics["test_clip_accuracy"],
        metrics["test_file_accuracy"],
        metrics["epochs_run"],
    )


if __name__ == "__main__":
    run_stage(main)

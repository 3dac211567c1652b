"""Stage ``head``: a linear classifier on one model's pretrained embeddings; one DVC stage per model (foreach).

Reads ``<data>/{train,val,test}/`` (the embed stage's output) and fits a
standardised logistic regression on the training split, its ``head.C`` the
one of least log-loss on held-out groups of training's own sources
(:mod:`audioclass.heads`). With
``head.refit``, that ``C`` is fitted again on training and validation (the
files embedded: each clip's original recording, by default) together, and
that head predicts test. Validation predictions, and so the
ensemble's weights, always come from the head that never saw validation.
Test chooses nothing. Writes, atomically, to ``<out>`` (e.g.
``models/head-birdnet``), in the formats a CNN run writes::

    head.npz             the head as arrays: mean, scale (dim,), coef (n_classes, dim), intercept (n_classes,)
    val_probs.npy        (n_val_files, n_classes) float32, rows as <data>/val/index.csv
    test_probs.npy       (n_test_files, n_classes) float32, rows as <data>/test/index.csv
    metrics.json         validation and test accuracy (file and clip level), macro-F1, confusion matrix, C and why
    test_predictions.csv clip-level actual/predicted class names
    confusion.png        the clip-level test confusion matrix
    config.json          the resolved config
    backend.json         the embedding model (name, package version, licence), as the embed stage recorded it

The embedding model was trained on outside data, so every figure of a head is
reported apart from the from-scratch CNNs'. Each head is an MLflow run,
tagged with the weights' licence, with the scikit-learn model logged in
skops format (no pickle).

Rerun with ``dvc repro head`` (every model) or ``dvc repro head@birdnet``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np

from audioclass import tracking
from audioclass.cli import run_stage, stage_parser
from audioclass.config import load_params, stage_config
from audioclass.dataset import load_data
from audioclass.evaluation import clip_predictions, summarize
from audioclass.heads import HeadConfig, fit_head
from audioclass.outputs import atomic_dir, atomic_file, require_inputs
from audioclass.plots import confusion_png
from audioclass.tables import json_text

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("head", __doc__)
    parser.add_argument("--data", type=Path, required=True, help="the embed stage's folder, e.g. data/embeddings/birdnet")
    parser.add_argument("--out", type=Path, required=True, help="the head's folder, e.g. models/head-birdnet")
    parser.add_argument("--metrics", type=Path, required=True, help="DVC metrics file, e.g. reports/heads/birdnet.json")
    args = parser.parse_args(argv)
    cfg = stage_config(HeadConfig, load_params(args.params), "head", args.params)
    tracking.require_store()
    data = load_data(args.data, expected="the embed stage's output (dvc repro embed)")
    require_inputs([args.data / "backend.json"], "the embed stage's output (dvc repro embed)")
    backend = json.loads((args.data / "backend.json").read_text())
    name = backend["name"]
    resolved = {"head": dataclasses.asdict(cfg), "embedding": backend}
    tags = {"pipeline_role": "head", "licence": backend["licence"], "pretrained": "on outside data", "embedding_model": name}
    with tracking.run(f"head-{name}", resolved, tags=tags) as active, atomic_dir(args.out) as tmp:
        tracking.log_dataset(args.data, context="training")
        head = fit_head(data, cfg.C, refit=cfg.refit)
        val_probs, test_probs = head.validated.probabilities(data.val.x), head.final.probabilities(data.test.x)
        metrics = summarize(val_probs, data.val.index, test_probs, data.test.index, data.class_names)
        metrics |= {
            "C": head.c,
            "train_cv_log_loss_by_C": {str(c): loss for c, loss in head.cv_log_loss_by_c.items()},
            "mlflow_run_id": active.info.run_id,
        }
        head.final.save(tmp / "head.npz")
        np.save(tmp / "val_probs.npy", val_probs)
        np.save(tmp / "test_probs.npy", test_probs)
        clip_predictions(test_probs, data.test.index, data.class_names).to_csv(tmp / "test_predictions.csv", index=False)
        confusion_png(
            metrics["test_clip_confusion"],
            list(data.class_names),
            tmp / "confusion.png",
            f"Head on {name} (pretrained on outside data), test clips",
        )
        (tmp / "metrics.json").write_text(json_text(metrics))
        (tmp / "config.json").write_text(json_text(resolved))
        (tmp / "backend.json").write_text(json_text(backend))
        tracking.log_metrics({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
        tracking.log_artifacts(tmp, artifact_path="run")
        tracking.log_sklearn_model(head.pipeline)
    with atomic_file(args.metrics) as tmp:
        tmp.write_text(json_text({k: v for k, v in metrics.items() if isinstance(v, (int, float))}))
    log.info(
        "head on %s (C=%g): val %.3f, test clip %.3f / file %.3f",
        name,
        head.c,
        metrics["val_file_accuracy"],
        metrics["test_clip_accuracy"],
        metrics["test_file_accuracy"],
    )


if __name__ == "__main__":
    run_stage(main)

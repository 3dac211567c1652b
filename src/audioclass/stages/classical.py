"""Stage ``classical``: the study's classical baselines on the raw 1D vectors; every fit an MLflow run.

``classical.models`` names each model and gives its scikit-learn estimator and
arguments, e.g. ``knn_3: {estimator: KNeighborsClassifier, n_neighbors: 3}``.
The default list is the study's: nearest centroid, k-NN (k = 3, 7), Gaussian
naive Bayes, random forests of 5–1000 trees, linear SVMs (C = 0.01–10) and an
MLP (512, 128) trained with L-BFGS, plus a stratified dummy classifier as the
floor. Estimators that take a ``random_state`` get ``classical.seed``.

Each model is fitted on the train split of ``<data>`` (the raw_vectors stage's
output) and scored on validation and test, at file level and at clip level
(probabilities, or one-hot predictions for models without them, averaged over
a clip's copies). Writes::

    <out>/classical.json   metrics per model: accuracies, fit seconds, whether it converged (dvc metrics)
    <out>/classical.md     a results table with the study's published figure beside ours

MLflow: one parent run for the stage, one nested run per model with its
params, metrics and clip-level test confusion matrix.

Rerun with ``dvc repro classical``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from audioclass import tracking
from audioclass.cli import run_stage, stage_parser
from audioclass.config import load_params, stage_config
from audioclass.dataset import Data
from audioclass.estimators import ClassicalConfig, fit_model, results_table
from audioclass.outputs import atomic_file
from audioclass.raw_vectors import load_raw_vectors
from audioclass.tables import json_text

log = logging.getLogger(__name__)


def classical(cfg: ClassicalConfig, data: Data, out: Path, jobs: int) -> dict[str, dict]:
    """Every model in turn, each a nested MLflow run, then the metrics file and the table."""
    results = {}
    with tracking.run("classical", {"models": ",".join(cfg.models), "seed": cfg.seed}, tags={"pipeline_role": "baselines"}):
        for name, spec in cfg.models.items():
            with tracking.run(f"classical-{name}", {"model": name, **spec}, nested=True, tags={"pipeline_role": "baseline"}):
                metrics = results[name] = fit_model(name, spec, data, cfg.seed, jobs)
                tracking.log_metrics({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
                tracking.log_confusion_matrix(metrics["test_clip_confusion"], data.class_names, f"{name}, test clips")
            log.info(
                "%s: test %.3f file / %.3f clip, fit %.1f s%s",
                name,
                metrics["test_file_accuracy"],
                metrics["test_clip_accuracy"],
                metrics["fit_seconds"],
                "" if metrics["converged"] else ", stopped at its iteration limit before converging",
            )
    scalars = {name: {k: v for k, v in m.items() if isinstance(v, (int, float))} for name, m in results.items()}
    with atomic_file(out / "classical.json") as tmp:
        tmp.write_text(json_text(scalars))
    with atomic_file(out / "classical.md") as tmp:
        tmp.write_text("# Classical baselines on raw 1D vectors\n\n" + results_table(results))
    return results


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("classical", __doc__, jobs=True)
    parser.add_argument("--data", type=Path, required=True, help="the raw_vectors stage's folder")
    parser.add_argument("--out", type=Path, required=True, help="report folder, e.g. reports/baselines")
    args = parser.parse_args(argv)
    cfg = stage_config(ClassicalConfig, load_params(args.params), "classical", args.params)
    tracking.require_store()
    classical(cfg, load_raw_vectors(args.data), args.out, args.jobs)


if __name__ == "__main__":
    run_stage(main)

"""Stage ``feature_models``: scikit-learn models on the feature vectors, chosen by grouped cross-validation.

For every feature set in ``feature_models.sets`` (column groups of the
features stage, e.g. the recipe's ``[chroma_mean, mel_mean, mfcc_mean]``) and
every model in ``feature_models.models``:

1. The train and validation clips together form the development data; the
   test split is only predicted, once, at the end.
2. ``StratifiedGroupKFold`` cuts it into ``cv_folds`` folds, stratified by
   class and grouped by ``source_id``: all clips (and augmented copies) cut
   from one source recording sit in one fold.
3. ``GridSearchCV`` scores every combination of the model's ``grid`` on those
   folds. The model is a ``Pipeline(StandardScaler, estimator)``, so each
   fold's scaler is fitted on that fold's training rows only.
4. The best combination is refitted on all development rows and predicts test
   (file level, and clip level averaged over a clip's copies).

Writes::

    <out>/features.json   per set and model: cv_accuracy (± cv_accuracy_sd over folds), test accuracies, best params
    <out>/features.md     a results table, with the published ESC-10 dataset baselines beside ours

MLflow: one parent run for the stage, one nested run per (set, model) with
its grid, best params, CV and test metrics, every candidate's CV scores and
the clip-level test confusion matrix.

Rerun with ``dvc repro feature_models``.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import pandas as pd

from audioclass import tracking
from audioclass.cli import run_stage, stage_parser
from audioclass.config import load_params, stage_config
from audioclass.dataset import Data, load_data
from audioclass.feature_models import FeatureModelsConfig, fit_model, results_table, select_columns
from audioclass.outputs import atomic_file, require_inputs
from audioclass.tables import json_text

log = logging.getLogger(__name__)


def feature_models(cfg: FeatureModelsConfig, data: Data, columns: pd.DataFrame, out: Path, jobs: int) -> dict[str, dict]:
    """Every (set, model), each a nested MLflow run, then the metrics file and the table."""
    results: dict[str, dict] = {}
    with tracking.run(
        "feature_models",
        {"sets": ",".join(cfg.sets), "models": ",".join(cfg.models), "cv_folds": cfg.cv_folds, "seed": cfg.seed},
        tags={"pipeline_role": "baselines"},
    ):
        for set_name, groups in cfg.sets.items():
            subset = select_columns(data, columns, groups)
            results[set_name] = {}
            for name, spec in cfg.models.items():
                params = {
                    "feature_set": set_name,
                    "features": ",".join(groups),
                    "n_features": subset.train.x.shape[1],
                    "model": name,
                    **spec,
                    "cv_folds": cfg.cv_folds,
                }
                with tracking.run(f"features-{set_name}-{name}", params, nested=True, tags={"pipeline_role": "baseline"}):
                    metrics, candidates = fit_model(name, spec, subset, cfg, jobs)
                    tracking.log_params({f"best.{k}": v for k, v in metrics["best_params"].items()})
                    tracking.log_metrics({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
                    tracking.log_confusion_matrix(metrics["test_clip_confusion"], data.class_names, f"{name} on {set_name}, test clips")
                    with tempfile.TemporaryDirectory() as tmp:
                        candidates.to_csv(Path(tmp) / "cv_results.csv", index=False)
                        tracking.log_artifact(Path(tmp) / "cv_results.csv")
                results[set_name][name] = metrics
                log.info(
                    "%s / %s: CV %.3f ± %.3f, test %.3f file / %.3f clip (%d candidates, %.1f s)",
                    set_name,
                    name,
                    metrics["cv_accuracy"],
                    metrics["cv_accuracy_sd"],
                    metrics["test_file_accuracy"],
                    metrics["test_clip_accuracy"],
                    metrics["candidates"],
                    metrics["fit_seconds"],
                )
    scalars = {
        s: {m: {k: v for k, v in r.items() if isinstance(v, (int, float))} for m, r in models.items()} for s, models in results.items()
    }
    with atomic_file(out / "features.json") as tmp:
        tmp.write_text(json_text(scalars))
    with atomic_file(out / "features.md") as tmp:
        tmp.write_text("# Feature-vector models, grouped cross-validation\n\n" + results_table(results, cfg))
    return results


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("feature_models", __doc__, jobs=True)
    parser.add_argument("--data", type=Path, required=True, help="the features stage's folder")
    parser.add_argument("--out", type=Path, required=True, help="report folder, e.g. reports/baselines")
    args = parser.parse_args(argv)
    cfg = stage_config(FeatureModelsConfig, load_params(args.params), "feature_models", args.params)
    tracking.require_store()
    data = load_data(args.data, expected="the features stage's output (dvc repro features)")
    require_inputs([args.data / "columns.csv"], "the features stage's output (dvc repro features)")
    columns = pd.read_csv(args.data / "columns.csv")
    feature_models(cfg, data, columns, args.out, args.jobs)


if __name__ == "__main__":
    run_stage(main)

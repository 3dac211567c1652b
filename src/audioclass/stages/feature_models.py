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

from pathlib import Path

import pandas as pd

from audioclass import tracking
from audioclass.cli import run_stage, stage_parser
from audioclass.config import load_params, stage_config
from audioclass.dataset import load_data
from audioclass.feature_models import FeatureModelsConfig, feature_models
from audioclass.outputs import require_inputs


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

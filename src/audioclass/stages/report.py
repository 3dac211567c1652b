"""Stage ``report``: the results report, with one table in the study's style, every row beside its published figure.

Reads the files the model stages write (never their models)::

    <corpus>                                     extract's corpus.json: which corpus this is
    <reports>/data.json                          files and clips per split
    <reports>/baselines/classical.json           classical models on raw 1D vectors
    <reports>/baselines/cnn1d/<arch>-k<k>.json   each 1D CNN cell in params' grid
    <reports>/baselines/features.json            feature-vector models (grouped CV)
    <reports>/train/<run>.csv                    each CNN run's learning curve
    <reports>/ensemble/ensemble.json             the members (CNN runs, pretrained heads) and every ensemble method, per group
    <reports>/ensemble/ensemble_predictions.csv  clip-level predictions of ``ensemble.chosen``

and writes ``<metrics>`` (e.g. ``reports/metrics.json``), the headline
figures ``dvc metrics show`` prints (the ensemble validation chose, the CNN
runs' mean ± SE, each pretrained head, the clips per split), and ``<out>``
(e.g. ``reports/results.md``): the results table, the
chosen ensemble's confusion matrix and per-class accuracy, every weighted
method's weights, the learning curves and the spectrogram grid, with the
figures beside it in ``<out's folder>/figures/``. Rows that use a model
pretrained on outside data (``embed.models``) are in a section of their own,
apart from the from-scratch ones. The published column appears
only for the corpus the figures belong to (ESC-10). Test accuracy is at clip
level (a clip's augmented copies averaged) and file level; the validation
column is the held-out validation split, or for feature models the grouped
cross-validation mean ± SD over folds.

Rerun with ``dvc repro report``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from audioclass.cli import run_stage, stage_parser
from audioclass.config import load_params, stage_config
from audioclass.ensembling import SCRATCH, EnsembleConfig
from audioclass.feature_models import FeatureModelsConfig
from audioclass.outputs import atomic_dir, atomic_file, require_inputs
from audioclass.plots import confusion_png
from audioclass.reporting import (
    baseline_rows,
    cnn_rows,
    figures_markdown,
    headline_metrics,
    learning_curves_png,
    pretrained_rows,
    results_markdown,
)
from audioclass.tables import json_text, read_table
from audioclass.training import Cnn1dConfig

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("report", __doc__)
    parser.add_argument("--reports", type=Path, required=True, help="the reports folder the model stages write into")
    parser.add_argument("--corpus", type=Path, required=True, help="extract's corpus.json, e.g. data/prepared/corpus.json")
    parser.add_argument("--out", type=Path, required=True, help="the report, e.g. reports/results.md")
    parser.add_argument("--metrics", type=Path, required=True, help="the headline DVC metrics file, e.g. reports/metrics.json")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    grid = stage_config(Cnn1dConfig, params, "cnn1d", args.params)
    cells = [f"{a}-k{k}" for a in grid.architectures for k in grid.first_kernels]
    r = args.reports
    files = {
        "corpus": args.corpus,
        "data": r / "data.json",
        "classical": r / "baselines" / "classical.json",
        "features": r / "baselines" / "features.json",
        "ensemble": r / "ensemble" / "ensemble.json",
        **{c: r / "baselines" / "cnn1d" / f"{c}.json" for c in cells},
    }
    require_inputs(list(files.values()), "the model stages' metrics (dvc repro)")
    loaded = {name: json.loads(path.read_text()) for name, path in files.items()}
    ensemble = loaded["ensemble"]
    curves = {run: r / "train" / f"{run}.csv" for run in ensemble["groups"].get(SCRATCH, {"members": []})["members"]}
    require_inputs([*curves.values(), r / "ensemble" / "ensemble_predictions.csv"], "the train and ensemble stages' reports (dvc repro)")
    predictions = read_table(r / "ensemble" / "ensemble_predictions.csv")
    feature_models = stage_config(FeatureModelsConfig, params, "feature_models", args.params)
    estimators = {name: spec.get("estimator", "") for name, spec in feature_models.models.items()}
    baselines = baseline_rows(loaded["classical"], {c: loaded[c] for c in cells}, loaded["features"], estimators)
    cnns = cnn_rows(ensemble) if SCRATCH in ensemble["groups"] else []
    pretrained = pretrained_rows(ensemble)
    chosen = stage_config(EnsembleConfig, params, "ensemble", args.params).chosen
    text = (
        results_markdown(loaded["data"], baselines, cnns, pretrained, loaded["corpus"]["name"])
        + "\n"
        + figures_markdown(ensemble, chosen, predictions)
    )
    classes = sorted(set(predictions["actual"]) | set(predictions["predicted"]))
    matrix = pd.crosstab(predictions["actual"], predictions["predicted"]).reindex(index=classes, columns=classes, fill_value=0)
    with atomic_dir(args.out.parent / "figures") as tmp:
        confusion_png(matrix.to_numpy().tolist(), classes, tmp / "confusion.png", f"Ensemble {chosen}, test clips")
        learning_curves_png({run: pd.read_csv(path) for run, path in curves.items()}, tmp / "learning_curves.png")
    with atomic_file(args.out) as tmp:
        tmp.write_text(text)
    with atomic_file(args.metrics) as tmp:
        tmp.write_text(json_text(headline_metrics(loaded["data"], ensemble)))
    log.info(
        "%s: %d baseline rows, %d CNN and ensemble rows, %d with pretrained embeddings",
        args.out,
        len(baselines),
        len(cnns),
        len(pretrained),
    )


if __name__ == "__main__":
    run_stage(main)

"""Stage ``ensemble``: combine the members' predictions; weights fitted on validation only.

Members are the trained runs (``<models>/<run>`` for each of ``train.runs``) and the
heads on pretrained embeddings (``<models>/head-<model>`` for
``embed.models``), or the list in ``ensemble.members``. Reads each member
folder's ``val_probs.npy``, ``test_probs.npy`` and ``metrics.json`` (never
model code), plus the val/test ``index.csv`` of the spectrogram stage for
labels and clip ids: every member predicts the same test files, and the same
validation files of the kind test scores (a run predicts every validation
file, a head only those). Writes:

    <out>/ensemble.json         per group of members, every method: validation log-loss and accuracy on the rows below,
                                accuracy on every validation file (context; null when a head is among the members),
                                test accuracy (clip, file), weights, calls, seconds; each member's own figures; and the
                                best on validation
    <out>/ensemble.md           a results table in the study's style, one section per group
    <out>/ensemble_predictions.csv   clip-level actual/predicted of ``ensemble.chosen`` over every member (confusion plot)

Groups: ``from_scratch`` (the trained runs), ``pretrained`` (the heads, on models
trained on outside data) and ``all`` (both), each where it has members, so the
from-scratch figures are always reported apart from those with pretrained help.
When the runs have several architectures, each architecture's runs are a group
too (``compact_cnn``, ``crnn``, …), first: a mixed ensemble beside pure ones.
The group and method of least validation log-loss, among the weighted means
(``maximum`` and ``vote`` only rank the classes), is what ``predict`` and the
registered model use.

Validation rows are of the kind test scores (``spectrograms.test_copies``):
each validation clip's original recording (``original``), or its mean over its
augmented copies (``all``). Weights are fitted and the method chosen on them
only, by log-loss, a proper scoring rule; accuracy is reported beside it. Each
method is then calibrated on them (:mod:`audioclass.calibration`): a
temperature, and a minimum confidence for ``predict``, the lowest at which
those rows are ``ensemble.target_precision`` precise; its expected
calibration error on test before and after is reported, never used.

Methods: ``average``, ``maximum`` (the class of the single largest
probability), ``vote`` (majority of the members' predictions, ties to the
highest summed probability), ``val_weighted`` (weights ∝ each member's
validation accuracy), ``simplex`` (the weights of least validation log-loss,
found by SciPy: the reference) and ``swarm_<name>`` for each optimiser in
``ensemble.optimisers``, minimising the same log-loss. Weights are ≥ 0 and
sum to 1.

Clip level applies each method to the members' clip-averaged probabilities; file
level to the per-file probabilities. Validation clips have every augmented
copy; test clips their original recording only, unless
``spectrograms.test_copies`` is ``all``.

Rerun with ``dvc repro ensemble``.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import pandas as pd

from audioclass import bundle, tracking
from audioclass.cli import run_stage, stage_parser
from audioclass.clips import ExtractConfig
from audioclass.config import load_params, stage_config
from audioclass.embeddings import EmbedConfig
from audioclass.ensembling import EnsembleConfig, ensemble, is_pretrained, load_runs, markdown, member_names
from audioclass.outputs import atomic_file, require_inputs
from audioclass.spectrograms import SpectrogramConfig
from audioclass.tables import json_text, read_table
from audioclass.training import TrainConfig

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("ensemble", __doc__)
    parser.add_argument("--models", type=Path, required=True, help="folder of members: <models>/<run>, <models>/head-<model>")
    parser.add_argument("--data", type=Path, required=True, help="the spectrogram stage's folder (for val/test index.csv)")
    parser.add_argument("--out", type=Path, required=True, help="report folder, e.g. reports")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    cfg = stage_config(EnsembleConfig, params, "ensemble", args.params)
    runs = stage_config(TrainConfig, params, "train", args.params).runs
    models = stage_config(EmbedConfig, params, "embed", args.params).models
    test_copies = stage_config(SpectrogramConfig, params, "spectrograms", args.params).test_copies
    extract = stage_config(ExtractConfig, params, "extract", args.params)
    names = member_names(cfg, list(runs), list(models), args.params)
    tracking.require_store()
    require_inputs([args.data / s / "index.csv" for s in ("val", "test")], "the spectrogram stage's output (dvc repro spectrograms)")
    val_index = read_table(args.data / "val" / "index.csv")
    test_index = read_table(args.data / "test" / "index.csv")
    runs = load_runs([args.models / name for name in names], val_index, test_copies)
    members = [m.get("mlflow_run_id") for m in runs.metrics]
    logged = {"ensemble": vars(cfg), "member_runs": ",".join(runs.names), "member_mlflow_run_ids": ",".join(map(str, members))}
    with tracking.run(
        "ensemble", logged, tags={"pipeline_role": "ensemble", "pretrained_members": ",".join(n for n in names if is_pretrained(n))}
    ):
        report, predictions = ensemble(runs, val_index, test_index, cfg, test_copies)
        report["member_mlflow_run_ids"] = members
        metrics = {}
        for group, g in report["groups"].items():
            for method, r in g["methods"].items():
                metrics |= {
                    f"{group}.{method}.{k}": r[k] for k in ("val_log_loss", "val_accuracy", "test_clip_accuracy", "test_file_accuracy")
                }
                metrics |= {f"{group}.{method}.test_ece_{when}": e for when, e in zip(("before", "after"), r["calibration"]["test_ece"])}
        names_of = runs.metrics[0]["class_names"]
        outputs = {
            "ensemble_predictions.csv": pd.DataFrame(
                {"actual": [names_of[i] for i in predictions["label"]], "predicted": [names_of[i] for i in predictions[cfg.chosen]]}
            ).to_csv(index=False),
            "ensemble.md": markdown(report),
            "ensemble.json": json_text(report),
        }
        best = report["best"]
        best_scores = report["groups"][best["group"]]["methods"][best["method"]]
        # MLflow copies each metric the run has to the model logged in it, one request a metric (against a server with
        # passwords, a fifth of a second each): the shipped method's before the model, the other methods' after it.
        shipped = {k: v for k, v in metrics.items() if k.startswith(f"{best['group']}.{best['method']}.")}
        tracking.log_metrics(shipped)
        # Registered before the outputs are written: a failure here leaves the last run's outputs as they were.
        with tempfile.TemporaryDirectory() as scratch:
            (Path(scratch) / "ensemble.json").write_text(outputs["ensemble.json"])
            bundled = report["groups"][best["group"]]["members"]
            files = bundle.bundle_files(Path(args.params), args.models, Path(scratch) / "ensemble.json", bundled)
            version = bundle.register_ensemble(
                files,
                {n: members[names.index(n)] for n in bundled},
                {"group": best["group"], "method": best["method"], **{k: str(best_scores[k]) for k in ("val_log_loss", "val_accuracy")}},
                bundle.signature(hop=extract.duration / 2, min_confidence=best_scores["calibration"]["min_confidence"] or 0.0),
            )
        tracking.log_metrics({k: v for k, v in metrics.items() if k not in shipped})
        for name, text in outputs.items():
            with atomic_file(args.out / name) as tmp:
                tmp.write_text(text)
            tracking.log_artifact(args.out / name)
    log.info(
        "best on validation: %s over %s members (validation log-loss %.4f; test clip %.3f); registered as %s version %s",
        best["method"],
        best["group"],
        best_scores["val_log_loss"],
        best_scores["test_clip_accuracy"],
        bundle.ENSEMBLE_MODEL,
        version,
    )


if __name__ == "__main__":
    run_stage(main)

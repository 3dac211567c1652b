"""What each training change does on validation: single runs of the train stage's own ``fit_run``.

    python benchmarks/ablation.py                           # every variant, seeds 1 and 2 → benchmarks/reports/ablation.{json,md}
    python benchmarks/ablation.py --variants study,gentle --seeds 1
    python benchmarks/ablation.py --variants gentle,deltas --folds 1,2,3,4,5 --seeds 1   # over the official folds
    python benchmarks/ablation.py --variants gentle,less-data --folds 1,2,3,4,5 --seeds 1   # a learning-curve point
    python benchmarks/ablation.py --variants gentle,pcen,fft2048 --folds 1,2,3,4,5 --seeds 1   # front ends
    python benchmarks/ablation.py --variants gentle,smooth,ema995,smooth+ema995 --folds 1,2,3,4,5 --seeds 1
    python benchmarks/ablation.py --variants gentle,pcen --folds 1,2,3,4,5 --seeds 1,2   # mixed front ends as ensemble members
    python benchmarks/ablation.py --variants gentle,crnn,transformer --folds 1,2,3,4,5 --seeds 1,2   # architectures, and mixed pairs

Each variant is a data setting (``augment`` and ``spectrograms`` overrides:
the data stages run once per setting in a sandbox copy of the project,
``dvc repro spectrograms``, and again per test fold) plus overrides of
``train.model`` / ``train.fit``. Each (test fold, variant, seed) is one
``fit_run`` with the validation split driving early stopping, exactly as
``dvc repro train`` does; validation is a grouped share of the other folds.

The figure that chooses is **validation accuracy on the original clips**
(copy 0 of each validation clip): those files are the same whatever the
augmentation, so augmentation settings compare like for like. Validation
clip level (each clip's probabilities averaged over its copies) and the
validation loss of the kept model (plain cross-entropy, so label-smoothed
runs compare) are given too, and each variant's difference from the first
one, paired by fold and seed. Test accuracy is shown for context only: it
chose nothing, and with 80 test clips one clip is 1.25 points.

Every two runs of a fold also make an average ensemble, reported by the
variants of their members: whether members that differ in their front end
or architecture err less together than members that differ only in seed.

Cost is wall seconds per run and per epoch, and CPU seconds per run (every
thread's): CPU seconds hold when something else shares the machine, wall
seconds do not.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from audioclass import sandbox
from audioclass.config import load_params, stage_config
from audioclass.dataset import Data, load_data
from audioclass.ensembling import cross_entropy
from audioclass.evaluation import accuracy, clip_level
from pipeline import PROJECT, benchmark_parser, machine, mean_se, overrides, write_report

STUDY_AUGMENT = {"noise": {"max_fraction": 0.1}, "pitch_shift": {"max_semitones": 10.0}, "time_stretch": {"min_rate": 0.5, "max_rate": 1.5}}
TUNED = PROJECT / "reports/tune/best_params.yaml"  # what the project's tune stage chose (tune.enabled: true)


@dataclasses.dataclass(frozen=True)
class Variant:
    """One change to measure; params.yaml's values otherwise."""

    change: str  # what changes, for the report
    data: dict = dataclasses.field(default_factory=dict)  # {augment: …, spectrograms: …} overrides for the data stages
    model: dict = dataclasses.field(default_factory=dict)  # train.model overrides
    fit: dict = dataclasses.field(default_factory=dict)  # train.fit overrides
    train_fraction: float = 1.0  # of the training clips, per class, every copy of each: a learning-curve point
    tuned: bool = False  # start from the project's tuned values (TUNED) instead of params.yaml's train.model / train.fit


VARIANTS = {
    "study": Variant("the study's augmentation (noise 0.1, ±10 semitones, rate 0.5–1.5)", {"augment": STUDY_AUGMENT}, {}, {}),
    "gentle": Variant("params.yaml's augmentation (noise 0.02, ±2 semitones, rate 0.8–1.25)", {}, {}, {}),
    "gentle+masks": Variant(
        "+ SpecAugment: 2 band masks ≤ 8, 2 frame masks ≤ 24, 16 epochs",
        {},
        {},
        {"freq_masks": 2, "time_masks": 2, "freq_mask_width": 8, "time_mask_width": 24, "epochs": 16},
    ),
    "gentle+mixup": Variant("+ mixup α = 0.2, 16 epochs", {}, {}, {"mixup_alpha": 0.2, "epochs": 16}),
    "gentle+masks+mixup": Variant(
        "+ SpecAugment (2 band masks ≤ 8, 2 frame masks ≤ 24) and mixup α = 0.2, 10 epochs",
        {},
        {},
        {"freq_masks": 2, "time_masks": 2, "freq_mask_width": 8, "time_mask_width": 24, "mixup_alpha": 0.2},
    ),
    "tuned": Variant("+ the values the project's tune stage chose (reports/tune/best_params.yaml)", tuned=True),
    "tuned+20-epochs": Variant(
        "+ the tuned values, their cosine schedule over 20 epochs, patience 6", fit={"epochs": 20, "patience": 6}, tuned=True
    ),
    "gentle+wide": Variant("+ width 24 (2.2× the multiply-adds)", {}, {"width": 24}, {}),
    "deltas": Variant(
        "+ the log-mel's delta and delta-delta as two more input channels", {"spectrograms": {"kind": "logmel_deltas"}}, {}, {}
    ),
    "pcen": Variant(
        "+ PCEN of the mel magnitudes as a second input channel (spectrograms.kind: logmel_pcen)", {"spectrograms": {"kind": "logmel_pcen"}}
    ),
    "fft2048": Variant(
        "+ a 2048-sample FFT instead of 1024 (93 ms windows: finer low bands, the same input size)", {"spectrograms": {"n_fft": 2048}}
    ),
    "pcen+fft2048": Variant(
        "+ both: PCEN as a second channel, of 2048-sample FFTs", {"spectrograms": {"kind": "logmel_pcen", "n_fft": 2048}}
    ),
    "mels128": Variant("+ 128 mel bands instead of 64 (2× the multiply-adds)", {"spectrograms": {"n_mels": 128}}, {}, {}),
    # Validation curves jump by several points from epoch to epoch, and the best-loss epoch is often an early one.
    "smooth": Variant("+ label smoothing 0.1 (targets give 0.1 of the mass evenly to every class)", fit={"label_smoothing": 0.1}),
    "ema995": Variant(
        "+ a longer weight average: EMA momentum 0.995 instead of 0.99 (≈ 200 steps, 2.5 epochs at batch 64)", fit={"ema_momentum": 0.995}
    ),
    "smooth+ema995": Variant("+ both: label smoothing 0.1 and EMA momentum 0.995", fit={"label_smoothing": 0.1, "ema_momentum": 0.995}),
    # Other architectures (models.py), at params.yaml's train.model / train.fit values otherwise.
    "crnn": Variant(
        "the CRNN: compact_cnn's conv blocks, a bidirectional GRU of 64 units a way over 27 steps, attention pooling",
        model={"architecture": "crnn"},
    ),
    "transformer": Variant(
        "a transformer: 72 tokens of 3 frames, 4 pre-norm encoder blocks of 64 values and 4 heads, mean pooling",
        model={"architecture": "transformer"},
    ),
    # A learning-curve point: if fewer training clips cost validation accuracy, more (train + val) should gain it.
    "less-data": Variant(
        "the same as params.yaml, on 80 % of the training clips (per class, every copy of each; the seed draws which)", train_fraction=0.8
    ),
}


def spectrograms(box: Path, source: Path, data: dict, params: dict, test_fold: int) -> Path:
    """The spectrogram folder for one data setting and test fold, made by the real data stages in a sandbox.

    The sandbox is made on first use, with a DVC cache shared by every sandbox of the run, so a
    setting that augments as another did restores its WAVs from DVC's run cache instead of
    augmenting again; later folds rerun only split and spectrograms.
    """
    if not box.exists():
        sandbox.create(PROJECT, box, params)
        sandbox.set_params(box, {**data, "extract": {"source": str(source.resolve())}})
        sandbox.dvc(box, "config", "--local", "cache.dir", str(box.parent / "dvc-cache"))
    sandbox.set_params(box, {"split": {"test_fold": test_fold}})
    print(f"  dvc repro spectrograms in {box}, test fold {test_fold} …", flush=True)
    sandbox.dvc(box, "repro", "spectrograms")
    return box / "data/spectrograms"


@dataclasses.dataclass(frozen=True)
class Predictions:
    """One run's probabilities per file, and which clip and label each file has."""

    val: np.ndarray
    test: np.ndarray
    val_index: pd.DataFrame
    test_index: pd.DataFrame


def single_run(cfg: Any, data: Data, variant: Variant, seed: int) -> tuple[dict, Predictions]:
    """One ``fit_run`` with ``cfg`` (a TrainConfig) overridden: its validation figures, test for context, and its predictions."""
    from audioclass.config import file_config
    from audioclass.training import Hyperparameters, fit_run, predict
    from audioclass.tuning import subset

    if variant.tuned:
        if not TUNED.is_file():
            raise SystemExit(f"{TUNED}: not found; expected the tune stage's output (dvc repro tune, with tune.enabled: true)")
        cfg = file_config(Hyperparameters, TUNED)
    model, fit = dataclasses.replace(cfg.model, **variant.model), dataclasses.replace(cfg.fit, **variant.fit)
    start, cpu_start = time.perf_counter(), time.process_time()
    trained, history = fit_run(
        model, fit, dataclasses.replace(data, train=subset(data.train, variant.train_fraction, seed)), seed=seed, verbose=0
    )
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    val, test = predict(trained, data.val), predict(trained, data.test)
    original = data.val.index["copy"].to_numpy() == 0
    _, val_clips, val_labels = clip_level(val, data.val.index)
    _, test_clips, test_labels = clip_level(test, data.test.index)
    figures = {
        "val_original_accuracy": accuracy(val[original], data.val.y[original]),
        "val_clip_accuracy": accuracy(val_clips, val_labels),
        "val_file_accuracy": accuracy(val, data.val.y),  # every copy: the figure pair ensembles are judged on
        # Of the kept model, plain: comparable with label-smoothed runs, whose own val_loss includes the
        # smoothing. Without smoothing it is the history's best val_loss.
        "best_val_loss": cross_entropy(val, data.val.y),
        "test_clip_accuracy": accuracy(test_clips, test_labels),
        "epochs_run": len(history),
        "seconds": round(seconds, 1),
        "seconds_per_epoch": round(seconds / len(history), 2),
        "cpu_seconds": round(cpu_seconds, 1),
    }
    return figures, Predictions(val, test, data.val.index[["clip_id", "label"]], data.test.index[["clip_id", "label"]])


def pair_ensembles(runs: dict[tuple[str, int], Predictions]) -> dict[str, dict[str, dict]]:
    """Every two-run average ensemble of one fold's runs, by variant pair: {"a+b": {"a@i+b@j": figures}}.

    Members that differ in front end or in seed alone, compared at the same ensemble size: the
    figure that chooses is accuracy on every validation file, as the ensemble stage's is.
    """
    pairs: dict[str, dict[str, dict]] = {}
    for (a, seed_a), (b, seed_b) in itertools.combinations(runs, 2):
        first, second = runs[a, seed_a], runs[b, seed_b]
        if not (first.val_index.equals(second.val_index) and first.test_index.equals(second.test_index)):
            raise ValueError(f"{a} and {b} predicted different files: their data settings split the clips differently")
        val, test = (first.val + second.val) / 2, (first.test + second.test) / 2
        labels = first.val_index["label"].to_numpy()
        _, val_clips, val_labels = clip_level(val, first.val_index)
        _, test_clips, test_labels = clip_level(test, first.test_index)
        pairs.setdefault("+".join(sorted([a, b])), {})[f"{a}@{seed_a}+{b}@{seed_b}"] = {
            "val_file_accuracy": accuracy(val, labels),
            "val_clip_accuracy": accuracy(val_clips, val_labels),
            "val_loss": cross_entropy(val, labels),
            "test_clip_accuracy": accuracy(test_clips, test_labels),
        }
    return pairs


def cost(stat: dict, key: str, spec: str) -> str:
    """A cost column's mean, or – for runs recorded before it was measured."""
    return format(stat[key]["mean"], spec) if key in stat else "–"


def markdown(report: dict) -> str:
    pct = lambda d: f"{100 * d['mean']:.1f} ± {100 * d['se']:.1f} %"  # noqa: E731
    folds = report["test_folds"]
    variants = report["variants"]
    reference = next(iter(variants), None)
    lines = [
        "# Ablation: what each change does on validation",
        "",
        f"Machine: {report['machine']['cpus']} CPUs, {report['machine']['memory_gib']} GiB. Command: `{report['command']}`. "
        f"Test fold(s) {', '.join(map(str, folds))}; validation: 64 clips of the other folds (whole source recordings). "
        "Single runs of `fit_run`, mean ± SE over (fold, seed) runs. **Validation on the original clips chooses**: those 64 "
        f"files are the same whatever the augmentation. Δ: the difference from `{reference}` on the same fold and seed, "
        "mean ± SE. Test is context only and chose nothing.",
        "",
        "| variant | change | runs | val, original clips | Δ val, original | val, clip level | best val loss | epochs | s / run | "
        "s / epoch | CPU s / run | test, clip level (context) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, v in variants.items():
        runs = v["runs"]
        stat = {k: mean_se([r[k] for r in runs.values()]) for k in next(iter(runs.values()))}
        paired = [
            r["val_original_accuracy"] - variants[reference]["runs"][key]["val_original_accuracy"]
            for key, r in runs.items()
            if key in variants[reference]["runs"]
        ]
        delta = f"{100 * mean_se(paired)['mean']:+.1f} ± {100 * mean_se(paired)['se']:.1f}" if paired and name != reference else "–"
        lines.append(
            f"| {name} | {v['change']} | {len(runs)} | {pct(stat['val_original_accuracy'])} | {delta} | "
            f"{pct(stat['val_clip_accuracy'])} | {stat['best_val_loss']['mean']:.3f} | {stat['epochs_run']['mean']:.1f} | "
            f"{stat['seconds']['mean']:.0f} | {cost(stat, 'seconds_per_epoch', '.1f')} | {cost(stat, 'cpu_seconds', '.0f')} | "
            f"{pct(stat['test_clip_accuracy'])} |"
        )
    if len(folds) > 1:
        lines += [
            "",
            "Validation on the original clips, per test fold (mean over seeds):",
            "",
            "| variant | " + " | ".join(f"fold {f}" for f in folds) + " |",
            "|---|" + "---:|" * len(folds),
        ]
        for name, v in variants.items():
            cells = []
            for fold in folds:
                values = [r["val_original_accuracy"] for key, r in v["runs"].items() if key.startswith(f"fold{fold}-")]
                cells.append(f"{100 * sum(values) / len(values):.1f} %" if values else "–")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if report.get("pairs"):
        lines += [
            "",
            "Two-run average ensembles, by the variants of their members: every pair of one fold's runs. Each figure is "
            "the mean over folds of the fold's mean over its pairs, ± SE over folds. **Validation files choose** "
            "(all copies of the validation clips, as the ensemble stage's figure is); cross-entropy is of the averaged "
            "probabilities on them.",
            "",
            "| members | pairs | val, files | val, clip level | val cross-entropy | test, clip level (context) |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for pair, ensembles in report["pairs"].items():
            by_fold = {}
            for key, figures in ensembles.items():
                by_fold.setdefault(key.split("-", 1)[0], []).append(figures)
            stat = {k: mean_se([sum(f[k] for f in fold) / len(fold) for fold in by_fold.values()]) for k in next(iter(ensembles.values()))}
            lines.append(
                f"| {pair} | {len(ensembles)} | {pct(stat['val_file_accuracy'])} | {pct(stat['val_clip_accuracy'])} | "
                f"{stat['val_loss']['mean']:.3f} ± {stat['val_loss']['se']:.3f} | {pct(stat['test_clip_accuracy'])} |"
            )
    missing = [
        f"{name} (fold {fold})"
        for fold in folds
        for name in report["requested"]
        if not any(key.startswith(f"fold{fold}-") for key in variants.get(name, {}).get("runs", {}))
    ]
    if missing:
        lines += ["", f"Not run (the benchmark stopped first): {', '.join(missing)}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = benchmark_parser(__doc__, "ablation")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, from {', '.join(VARIANTS)}")
    parser.add_argument("--seeds", default="1,2", help="comma-separated training seeds")
    parser.add_argument("--folds", help="comma-separated test folds (default: split.test_fold, --set included)")
    args = parser.parse_args()
    from audioclass.training import TrainConfig  # TensorFlow loads only once the arguments are good

    names = args.variants.split(",")
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"--variants: expected names from {', '.join(VARIANTS)}, got {', '.join(unknown)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    shutil.rmtree(args.work, ignore_errors=True)
    params = overrides(args.set)
    default_fold = params.get("split", {}).get("test_fold", load_params(PROJECT / "params.yaml")["split"]["test_fold"])
    folds = [int(f) for f in args.folds.split(",")] if args.folds else [default_fold]  # --set split.test_fold counts too
    setting_of = {name: json.dumps(VARIANTS[name].data, sort_keys=True) for name in names}
    settings = {}  # data setting → its sandbox, one per distinct augment/spectrograms override
    for name in names:
        settings.setdefault(setting_of[name], args.work / f"data-{len(settings)}")
    report = {
        "command": "python benchmarks/ablation.py" + "".join(f" {o}" for o in sys.argv[1:]),
        "machine": machine(),
        "requested": names,
        "test_folds": folds,
        "variants": {},
    }
    for fold in folds:  # fold by fold, so a partial run still compares every variant on the folds it finished
        predictions = {}  # (variant, seed) → its Predictions, this fold only
        for key, box in settings.items():
            folder = spectrograms(box, args.source, json.loads(key), params, fold)
            data = load_data(folder)
            cfg = stage_config(TrainConfig, load_params(box / "params.yaml"), "train")  # the sandbox's, with --set applied
            for name in (n for n in names if setting_of[n] == key):
                variant = VARIANTS[name]
                entry = report["variants"].setdefault(
                    name,
                    {
                        "change": variant.change,
                        "data": variant.data,
                        "model": variant.model,
                        "fit": variant.fit,
                        "train_fraction": variant.train_fraction,
                        "runs": {},
                    },
                )
                for seed in seeds:
                    entry["runs"][f"fold{fold}-seed{seed}"], predictions[name, seed] = single_run(cfg, data, variant, seed)
                    print(f"  fold {fold}, {name}, seed {seed}: {entry['runs'][f'fold{fold}-seed{seed}']}", flush=True)
                    write_report(report, markdown(report), args.report)  # after every run, so a partial run still reports
            del data
        for pair, ensembles in pair_ensembles(predictions).items():
            report.setdefault("pairs", {}).setdefault(pair, {}).update({f"fold{fold}-{k}": v for k, v in ensembles.items()})
        write_report(report, markdown(report), args.report)


if __name__ == "__main__":
    main()

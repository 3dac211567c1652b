"""The pretrained heads refitted on train + validation (``head.refit: true``), judged by a learning curve.

    python benchmarks/head_refit.py   # after `benchmarks/head_layers.py`; → benchmarks/reports/head-refit.{json,md}

A refitted head trains on validation, so validation cannot score it. What a
refit adds is more clips' original recordings (validation's 64 originals
beside training's 256 clips, each original and first copy). Inside training
that can be measured: per official fold, training's sources are dealt into
five groups, and for each group

- head A is fitted on the other four groups' rows, ``C`` chosen within them;
- head B on the same rows plus the held group's originals, with A's ``C``,

both by the head stage's own :func:`audioclass.heads.fit_head` (B is A's
refit, the held group standing in for validation). Both are scored on
validation's originals and averaged over the five groups; rule 10 in
docs/benchmarks.md decides, for the default head (BirdNET beside aiSFX) and
the licence-clean one (aiSFX's layers) apart. For context, each head is also
fitted as the head stage fits it with ``refit`` off and on, and scored on
test. It reuses head_probe's and head_layers' vectors.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold

from audioclass.calibration import cross_entropy
from audioclass.config import stage_config
from audioclass.dataset import Data, Split
from audioclass.heads import HeadConfig, fit_head
from audioclass.parallel import default_jobs, parallel_map
from head_classifier import fold_rows, probe_corpus
from head_layers import embed_layers, pooled
from head_probe import decide
from pipeline import benchmark_parser, machine, mean_se, write_report

GROUPS = 5  # of training's sources: each held group is a fifth more clips, as validation is a quarter more
HEADS = {"joint": "birdnet+aisfx (default)", "clean": "aisfx-layers (licence-clean)"}


def scored(head, split: Split) -> dict:
    p = head.probabilities(split.x)
    return {"log_loss": float(cross_entropy(p, split.y)), "accuracy": float((p.argmax(axis=1) == split.y).mean()), "clips": len(split.y)}


def curve(task: tuple, cs: tuple[float, ...], class_names: tuple[str, ...]) -> dict:
    """One head on one fold: A and B for each held group, scored on validation's originals, averaged over the groups;
    and the head stage's own fit, refit off and on, on test."""
    x, rows = task
    originals = (rows["copy"] == 0).to_numpy()
    split = {s: Split(x[m], rows[m].reset_index(drop=True)) for s, m in parts(rows, originals).items()}
    train = split["train"]
    runs = {"A": [], "B": []}
    for kept, held in GroupKFold(GROUPS).split(train.x, train.y, train.index["source_id"].to_numpy()):
        held = held[(train.index["copy"].to_numpy() == 0)[held]]
        inner = Data(subset(train, kept), subset(train, held), None, class_names)
        fitted = fit_head(inner, cs, refit=True)
        runs["A"].append(scored(fitted.validated, split["val"]))
        runs["B"].append(scored(fitted.final, split["val"]))
    data = Data(split["train"], split["val"], split["test"], class_names)
    today, refitted = fit_head(data, cs, refit=False), fit_head(data, cs, refit=True)
    result = {name: {m: statistics.mean(r[m] for r in scores) for m in ("log_loss", "accuracy")} for name, scores in runs.items()}
    for name in result:
        result[name]["clips"] = runs[name][0]["clips"]
    result |= {
        "val": scored(today.validated, split["val"]),
        "test": scored(today.final, split["test"]),
        "test_refit": scored(refitted.final, split["test"]),
        "C": today.c,
    }
    return result


def parts(rows: pd.DataFrame, originals: np.ndarray) -> dict[str, np.ndarray]:
    """Training's rows (each clip's original and first copy), validation's and test's originals."""
    return {s: (rows["split"] == s).to_numpy() & (originals | (s == "train")) for s in ("train", "val", "test")}


def subset(split: Split, rows: np.ndarray) -> Split:
    return Split(split.x[rows], split.index.iloc[rows].reset_index(drop=True))


def main() -> None:
    parser = benchmark_parser(__doc__, "head-refit")
    args = parser.parse_args()
    params, clips, files, vectors = probe_corpus()
    layers = embed_layers(files)
    inputs = {
        "joint": np.concatenate([pooled(vectors["birdnet"]), pooled(vectors["aisfx"])], axis=1),
        "clean": np.concatenate([pooled(layers[layer]) for layer in ("b2", "b3", "b4")], axis=1),
    }
    class_names = tuple(map(str, range(int(clips["label"].max()) + 1)))
    cs = tuple(stage_config(HeadConfig, params, "head").C)
    tasks, jobs = [], []
    for k, rows in fold_rows(params, clips, files):
        for head, x in inputs.items():
            tasks.append((k, head))
            jobs.append((x, rows))
    run: Callable[[tuple], dict] = lambda job: curve(job, cs, class_names)  # noqa: E731
    results = parallel_map(run, jobs, jobs=default_jobs(), desc="heads", unit="head")
    folds: dict = {}
    for (k, head), result in zip(tasks, results):
        folds.setdefault(head, {})[k] = result
    decisions, summary = {}, {}
    for head, by_fold in folds.items():
        # decide() reads per fold {candidate: {"val": {...}}}: A is the baseline, B the candidate
        paired = {k: {name: {"val": r[name]} for name in ("A", "B")} for k, r in by_fold.items()}
        decisions[head] = decide(paired, "A", ["A", "B"])
        summary[head] = {
            name: {m: mean_se([r[name][m] for r in by_fold.values()]) for m in ("log_loss", "accuracy")} for name in ("A", "B")
        }
        summary[head] |= {part: mean_se([r[part]["accuracy"] for r in by_fold.values()]) for part in ("val", "test", "test_refit")}
        summary[head]["per_fold_test"] = {part: [r[part]["accuracy"] for r in by_fold.values()] for part in ("test", "test_refit")}
    joint, clean = decisions["joint"]["verdicts"]["B"], decisions["clean"]["verdicts"]["B"]
    refit = joint["passes"] and clean["log_loss_diff"] <= 0
    report = {"machine": machine(), "groups": GROUPS, "folds": folds, "summary": summary, "decisions": decisions, "refit": refit}
    write_report(report, markdown(report), args.report)


def markdown(report: dict) -> str:
    lines = [
        "# The heads refitted on train + validation",
        "",
        f"Machine: {report['machine']['cpus']} CPUs. Command: `python benchmarks/head_refit.py`. Per official fold, "
        f"training's sources in {report['groups']} groups; for each, head A on the other groups' rows (each clip's original "
        "and first copy, C chosen within them) and head B on the same plus the held group's originals with A's C, as "
        "`head.refit` refits; both scored on validation's originals, averaged over the groups. Rule 10 in "
        "docs/benchmarks.md decides; test is context. Pretrained on outside data: BirdNET (CC BY-NC-SA 4.0), aiSFX "
        "(CC BY 4.0).",
        "",
        f"Decision: `head.refit: {str(report['refit']).lower()}`.",
        "",
        "| head | A: validation log-loss | B (refit) | B − A ± SE | A: validation accuracy | B | passes | "
        "test, refit off | test, refit on (context) |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for head, title in HEADS.items():
        s, v = report["summary"][head], report["decisions"][head]["verdicts"]["B"]
        test = [f"{s[part]['mean']:.2%} ± {s[part]['se']:.2%}" for part in ("test", "test_refit")]
        lines.append(
            f"| {title} | {s['A']['log_loss']['mean']:.4f} | {s['B']['log_loss']['mean']:.4f} | "
            f"{v['log_loss_diff']:+.4f} ± {v['se']:.4f} | {s['A']['accuracy']['mean']:.2%} | {s['B']['accuracy']['mean']:.2%} | "
            f"{v['passes']} | {test[0]} | {test[1]} |"
        )
    lines += ["", "Test per fold, refit off → on:", ""]
    for head, title in HEADS.items():
        per = report["summary"][head]["per_fold_test"]
        lines.append(f"- {title}: " + ", ".join(f"{a:.2%} → {b:.2%}" for a, b in zip(per["test"], per["test_refit"])))
    lines += ["", "Means (± SE) over the five folds."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

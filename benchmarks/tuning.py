"""Benchmark the tune stage on the real ESC-10 (default split: official fold 1 as test).

    python benchmarks/tuning.py            # → benchmarks/reports/tuning.{json,md}

In a sandbox copy of the project, with tuning on whatever ``params.yaml`` says, after the data stages:

1. ``dvc repro -s tune`` at the default budget, on a fresh study: wall time,
   CPU time and peak memory, trials complete and pruned, the best values;
2. ``dvc repro -f -s tune`` again: the study already has its trials, so this
   only resumes it and rewrites the outputs (the resume check);
3. ``dvc repro``: six training runs and the ensemble with the tuned values;
4. ``tune.enabled: false``, then ``dvc repro``: the same with params.yaml's values.

Tuning chose on validation data only; the test figures of steps 3 and 4 show
whether its choice carried over to clips it never saw.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

from audioclass import sandbox
from pipeline import PROJECT, benchmark_parser, machine, mean_se, measure, overrides, write_report

BUDGET_S = 8 * 60  # issue 4: the default tuning budget on a 2-core machine


def six_runs(box: Path, label: str) -> dict:
    """Train every seed and the ensemble with whatever best_params.yaml holds; their accuracies."""
    print(f"  {label}: dvc repro (six runs + ensemble) …", flush=True)
    timing = measure([sys.executable, "-m", "dvc", "repro"], box)
    names = yaml.safe_load((box / "params.yaml").read_text())["train"]["runs"]
    runs = [json.loads((box / f"reports/train/{name}.json").read_text()) for name in names]
    ensemble = json.loads((box / "reports/ensemble/ensemble.json").read_text())["groups"]["from_scratch"]["methods"]
    return {
        "hyperparameters": yaml.safe_load((box / "reports/tune/best_params.yaml").read_text()),
        "wall_s": timing["wall_s"],
        **{
            key: mean_se([r[key] for r in runs])
            for key in ("val_file_accuracy", "val_clip_accuracy", "test_clip_accuracy", "test_file_accuracy")
        },
        "epochs_run": [r["epochs_run"] for r in runs],
        "ensemble": {
            name: {
                "test_clip_accuracy": m["test_clip_accuracy"],
                "test_file_accuracy": m["test_file_accuracy"],
                "val_file_accuracy": m.get("val_file_accuracy"),
            }
            for name, m in ensemble.items()
            if name in ("average", "val_weighted", "swarm_jaya")
        },
    }


def pct(figure: dict) -> str:
    return f"{100 * figure['mean']:.2f} ± {100 * figure['se']:.2f} %"


def markdown(report: dict) -> str:
    t, tuned, default = report["tune"], report["tuned"], report["defaults"]
    lines = [
        "# Tuning benchmark",
        "",
        f"Machine: {report['machine']['cpus']} CPUs, {report['machine']['memory_gib']} GiB. Command: `{report['command']}`. "
        f"Params: {'defaults with ' + json.dumps(report['params_overrides']) if report['params_overrides'] else 'defaults'} "
        "(split: official fold 1 as test, a grouped 20 % of the rest as validation).",
        "",
        "## The tune stage at the default budget",
        "",
        f"- Budget: {t['params']['trials']} trials or {t['params']['timeout_minutes']} minutes, each trial on "
        f"{t['params']['data_fraction']:.0%} of the training clips for at most {t['params']['trial_epochs']} epochs.",
        f"- Wall time **{t['wall_s']} s** ({t['wall_s'] / 60:.1f} min; limit {BUDGET_S / 60:.0f} min: "
        f"{'met' if t['wall_s'] <= BUDGET_S else 'MISSED'}), CPU {t['cpu_s']} s, peak memory {t['peak_memory_gib']} GiB.",
        f"- Trials: {t['metrics']['trials_complete']} complete, {t['metrics']['trials_pruned']} pruned; best trial "
        f"{t['metrics']['best_trial']} at {100 * t['metrics']['best_val_accuracy']:.2f} % validation accuracy (file level, "
        "trial budget).",
        f"- Resume with nothing new to run (`dvc repro -f -s tune`): {report['resume']['wall_s']} s.",
        "",
        "| trial | state | val accuracy | epochs | seconds | " + " | ".join(t["param_names"]) + " |",
        "|---:|---|---:|---:|---:|" + "---:|" * len(t["param_names"]),
    ]
    for row in t["trials"]:
        value = "–" if row["value"] is None else f"{100 * row['value']:.2f} %"
        params = " | ".join(f"{row[p]:.4g}" if isinstance(row[p], float) else str(row[p]) for p in t["param_names"])
        lines.append(f"| {row['trial']} | {row['state']} | {value} | {row['epochs']} | {row['seconds']} | {params} |")
    lines += [
        "",
        "## Six full training runs: params.yaml's values against the tuned ones",
        "",
        "| hyperparameters | "
        + " | ".join(t["param_names"])
        + " | val (file) | test (clip) | test (file) | average ensemble test (clip / file) | epochs run |",
        "|---|" + "---:|" * (len(t["param_names"]) + 5),
    ]
    for label, result in (("params.yaml", default), ("tuned", tuned)):
        hp = result["hyperparameters"]
        values = " | ".join(f"{hp[p.split('.')[0]][p.split('.')[1]]:.4g}" for p in t["param_names"])
        avg = result["ensemble"]["average"]
        lines.append(
            f"| {label} | {values} | {pct(result['val_file_accuracy'])} | {pct(result['test_clip_accuracy'])} | "
            f"{pct(result['test_file_accuracy'])} | {100 * avg['test_clip_accuracy']:.2f} % / "
            f"{100 * avg['test_file_accuracy']:.2f} % | {result['epochs_run']} |"
        )
    lines += [
        "",
        "Mean ± SE over the runs of `train.runs`. Tuning chose on validation only; test figures are reported, never used.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    args = benchmark_parser(__doc__, "tuning").parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    params = overrides(args.set)
    box = sandbox.create(PROJECT, args.work / "project", {**params, "extract": {"source": str(args.source.resolve())}})
    sandbox.set_params(box, {"tune": {"enabled": True}})  # whatever params.yaml's default: this benchmark is of the study
    dvc = [sys.executable, "-m", "dvc"]
    print("data stages …", flush=True)
    measure([*dvc, "repro", "spectrograms"], box)
    print("tune (fresh study) …", flush=True)
    tune = measure([*dvc, "repro", "-s", "tune"], box)
    tune.pop("log")
    print(f"  {tune['wall_s']} s", flush=True)
    resume = measure([*dvc, "repro", "-f", "-s", "tune"], box)
    resume.pop("log")
    trials = pd.read_csv(box / "reports/tune/trials.csv")
    param_names = [c for c in trials.columns if c.startswith(("model.", "fit."))]
    tune.update(
        {
            "params": yaml.safe_load((box / "params.yaml").read_text())["tune"],
            "metrics": json.loads((box / "reports/tune/tune.json").read_text()),
            "param_names": param_names,
            "trials": json.loads(trials.to_json(orient="records")),
        }
    )
    tuned = six_runs(box, "tuned")
    sandbox.set_params(box, {"tune": {"enabled": False}})
    defaults = six_runs(box, "params.yaml's values")
    report = {
        "command": "python benchmarks/tuning.py" + "".join(f" --set {a}" for a in args.set),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine(),
        "params_overrides": params,
        "tune": tune,
        "resume": resume,
        "tuned": tuned,
        "defaults": defaults,
    }
    write_report(report, markdown(report), args.report)


if __name__ == "__main__":
    main()

"""Benchmark ESC-10's official 5-fold protocol: each fold in turn is the test fold.

    python benchmarks/crossval.py                                  # → benchmarks/reports/crossval.{json,md}
    python benchmarks/crossval.py --folds 1,2 --set 'train.runs={run-1: {seed: 1}, run-2: {seed: 2}}' --report /tmp/cv   # a quicker look
    python benchmarks/crossval.py --compare tuned=old.json regularised=new.json            # two finished reports, fold by fold
    python benchmarks/crossval.py --resume --from-project       # keep the report's finished folds, take the project's own fold as run

In a sandbox copy of the project, each fold is one DVC experiment of the core
path, ``dvc exp run ensemble -S split.test_fold=<k> -n fold-<k>``, so
``dvc exp show`` in the sandbox lists them side by side. Validation is a
grouped share of the other four folds (``split.val_fraction``): the test fold
chooses nothing, not the tuned values, nor the epochs, nor the ensemble
weights. Augmentation does not depend on the split, so the WAVs are made once
and each fold reruns split, spectrograms, tune, train and ensemble.

For each fold: the single runs (mean ± SE), the single run best on validation,
and every ensemble method, at clip level and at file level (the same with
``spectrograms.test_copies: original``, where a test clip is its original
recording; with ``all``, clip level averages each clip's augmented copies).
Over folds: mean ± SD of the
best-on-validation single run, the average ensemble and the swarm-weighted
ensemble (``ensemble.chosen``), beside the published 5-fold figures.

Each fold's member predictions go to ``benchmarks/work/crossval-members/``,
where ``benchmarks/ensemble_rules.py`` compares ensemble rules and member sets
on them without retraining.

A full run takes hours on 2 cores, so nothing is run twice: ``--resume`` keeps
the folds the report already holds (run with the same params), and
``--from-project`` takes the project's own test fold from its finished
``dvc repro`` (default params, ``dvc status`` clean, the same ESC-10 release).
"""

from __future__ import annotations

import filecmp
import json
import shutil
import statistics
import sys
from pathlib import Path

import yaml

from audioclass import sandbox
from audioclass.ensembling import SCORES_ONLY
from ensemble_rules import save_members
from pipeline import PROJECT, benchmark_parser, machine, mean_se, measure, overrides, write_report

PUBLISHED = [  # ESC-10, official 5-fold protocol, no external pretraining (reference study's table)
    ("Piczak 2015 CNN on log-mel + deltas", 0.8025),
    ("EnvNet-v2 + strong augmentation + between-class learning", 0.914),
    ("WaveMsNet", 0.9375),
    ("ACDNet (2,000 GPU epochs)", 0.9665),
    ("Human listeners", 0.957),
]
TARGET = 0.92  # issue 7: the ensemble over the 5 folds
PRETRAINED_TARGET, PRETRAINED_FOLD1_TARGET = 0.95, 0.92  # issues 29 and 42: the ensemble predict uses


def fold_results(box: Path) -> dict:
    """What the workspace holds after one fold's experiment."""
    params = yaml.safe_load((box / "params.yaml").read_text())
    runs = {name: json.loads((box / f"reports/train/{name}.json").read_text()) for name in params["train"]["runs"]}
    best_run = max(runs, key=lambda name: runs[name]["val_file_accuracy"])  # chosen on validation, never on test
    report = json.loads((box / "reports/ensemble/ensemble.json").read_text())
    tune = json.loads((box / "reports/tune/tune.json").read_text())
    keys = ("val_log_loss", "val_accuracy", "val_file_accuracy", "test_clip_accuracy", "test_file_accuracy")
    member_keys = ("val_file_accuracy", "test_clip_accuracy", "test_file_accuracy")  # what a run's or head's own report has
    groups = {g: {name: {k: m[k] for k in keys} for name, m in group["methods"].items()} for g, group in report["groups"].items()}
    best = report["best"]
    return {
        "single_runs": {
            k: mean_se([r[k] for r in runs.values()]) for k in ("val_file_accuracy", "test_clip_accuracy", "test_file_accuracy")
        },
        "best_single_run": {
            "run": best_run,
            **{k: runs[best_run][k] for k in ("val_file_accuracy", "test_clip_accuracy", "test_file_accuracy")},
        },
        "ensemble": groups["from_scratch"],  # every trained run: the from-scratch figures, apart from pretrained members
        "with_pretrained": {g: groups[g] for g in ("pretrained", "all") if g in groups},
        # With runs of several architectures, each one's runs (their single figures and their ensembles) apart.
        "architectures": {
            g: {
                "runs": {k: mean_se([runs[r][k] for r in report["groups"][g]["members"]]) for k in member_keys},
                "ensemble": groups[g],
            }
            for g in groups
            if g not in ("from_scratch", "pretrained", "all")
        },
        "heads": {
            name: {k: json.loads((box / f"reports/heads/{name.removeprefix('head-')}.json").read_text())[k] for k in member_keys}
            for name in report["pretrained_members"]
        },
        "chosen": params["ensemble"]["chosen"],
        "best_method_on_validation": min(
            (m for m in groups["from_scratch"] if m not in SCORES_ONLY), key=lambda m: groups["from_scratch"][m]["val_log_loss"]
        ),
        "best_on_validation": {**best, **groups[best["group"]][best["method"]]},  # over every group: what predict uses
        "hyperparameters": yaml.safe_load((box / "reports/tune/best_params.yaml").read_text()),
        # tune.timeout_minutes can stop the study early, so a slower machine may finish fewer trials and pick other values
        "tune_trials_finished": tune.get("trials_complete", 0) + tune.get("trials_pruned", 0) if tune["enabled"] else None,
    }


def effective(overrides: dict) -> dict:
    """The project's params.yaml as a sandbox with these ``--set`` overrides would run it."""
    return sandbox.merged(yaml.safe_load((PROJECT / "params.yaml").read_text()), overrides)


def project_fold(source: Path, fold: int) -> dict:
    """The project's own test fold, as its finished ``dvc repro`` left it, if that is what a sandbox would compute."""
    if json.loads(sandbox.dvc(PROJECT, "status", "--json").stdout or "{}"):
        raise SystemExit(f"--from-project: {PROJECT} is not up to date (dvc status lists changes); run dvc repro there first")
    data = PROJECT / "data/raw/ESC-10"
    names = [str(p.relative_to(source)) for p in sorted(source.rglob("*")) if p.is_file()]
    _, differ, missing = filecmp.cmpfiles(source, data, names, shallow=False)
    if differ or missing or sum(1 for p in data.rglob("*") if p.is_file()) != len(names):
        raise SystemExit(f"--from-project: {data} is not the release in {source} (expected the same files, byte for byte)")
    save_members(PROJECT, fold)
    return {"wall_s": None, "cpu_s": None, "peak_memory_gib": None, "run_by": "the project's dvc repro", **fold_results(PROJECT)}


def pct(value: float) -> str:
    return f"{100 * value:.2f} %"


def mean_sd(values: list[float]) -> dict:
    return {
        "mean": round(statistics.mean(values), 4),
        "sd": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
        "folds": [round(v, 4) for v in values],
    }


def summary(folds: dict) -> dict:
    chosen = next(iter(folds.values()))["chosen"]
    pick = {
        "best single run (chosen on validation)": lambda f: f["best_single_run"],
        "single runs, mean": lambda f: {k: v["mean"] for k, v in f["single_runs"].items()},
        "ensemble: average": lambda f: f["ensemble"]["average"],
        f"ensemble: {chosen}": lambda f: f["ensemble"][chosen],
        "ensemble: best method on validation": lambda f: f["ensemble"][f["best_method_on_validation"]],
    }
    for architecture in next(iter(folds.values())).get("architectures", {}):  # runs of several architectures: each one's own
        pick[f"{architecture} runs, mean"] = lambda f, a=architecture: {k: v["mean"] for k, v in f["architectures"][a]["runs"].items()}
        pick[f"{architecture} runs: average ensemble"] = lambda f, a=architecture: f["architectures"][a]["ensemble"]["average"]
    for head in next(iter(folds.values())).get("heads", {}):  # pretrained on outside data: apart from the rows above
        pick[f"pretrained: {head} alone"] = lambda f, head=head: f["heads"][head]
    if "all" in next(iter(folds.values())).get("with_pretrained", {}):
        pick["pretrained + CNN runs: average"] = lambda f: f["with_pretrained"]["all"]["average"]
        pick[f"pretrained + CNN runs: {chosen}"] = lambda f: f["with_pretrained"]["all"][chosen]
        pick["best group and method on validation"] = lambda f: f["best_on_validation"]
    return {
        name: {level: mean_sd([get(f)[f"test_{level}_accuracy"] for f in folds.values()]) for level in ("clip", "file")}
        for name, get in pick.items()
    }


def markdown(report: dict) -> str:
    folds = report["folds"]
    lines = [
        "# Cross-validation benchmark: ESC-10, official folds",
        "",
        f"Machine: {report['machine']['cpus']} CPUs, {report['machine']['memory_gib']} GiB. Command: `{report['command']}`. "
        f"Params: {'defaults' if not report['params_overrides'] else 'defaults with ' + json.dumps(report['params_overrides'])}. "
        f"Each fold is the test fold once; validation is drawn from the other folds only.",
        "",
        "| test fold | wall (min) | tune trials finished | tuned width | average ensemble: validation files | "
        "single runs, test clips (mean ± SE) | "
        f"best run on validation: test clips | average ensemble: test clips | {next(iter(folds.values()))['chosen']}: test clips | "
        "best method on validation |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for k, f in folds.items():
        chosen = f["ensemble"][f["chosen"]]
        wall = "—" if f["wall_s"] is None else f"{f['wall_s'] / 60:.1f}"
        trials = f.get("tune_trials_finished") or "—"  # not recorded by reports before 2026-12-03
        lines.append(
            f"| {k} | {wall} | {trials} | {f['hyperparameters']['model']['width']} | "
            f"{pct(f['ensemble']['average']['val_file_accuracy'])} | {pct(f['single_runs']['test_clip_accuracy']['mean'])} ± "
            f"{pct(f['single_runs']['test_clip_accuracy']['se'])} | {pct(f['best_single_run']['test_clip_accuracy'])} | "
            f"{pct(f['ensemble']['average']['test_clip_accuracy'])} | {pct(chosen['test_clip_accuracy'])} | "
            f"{f['best_method_on_validation']} |"
        )
    if any(f.get("heads") for f in folds.values()):
        heads = list(next(iter(folds.values()))["heads"])
        lines += [
            "",
            "With pretrained members (trained on outside data), per fold:",
            "",
            "| test fold | "
            + " | ".join(f"{h}: validation, the kind of row test scores | {h}: test clips" for h in heads)
            + " | every member, average: test clips | best on validation (group / method) | its validation log-loss | its test clips |",
            "|---|" + "---:|---:|" * len(heads) + "---:|---|---:|---:|",
        ]
        for k, f in folds.items():
            best = f["best_on_validation"]
            lines.append(
                f"| {k} | "
                + " | ".join(f"{pct(f['heads'][h]['val_file_accuracy'])} | {pct(f['heads'][h]['test_clip_accuracy'])}" for h in heads)
                + f" | {pct(f['with_pretrained']['all']['average']['test_clip_accuracy'])} | {best['group']} / {best['method']} | "
                f"{best['val_log_loss']:.4f} | {pct(best['test_clip_accuracy'])} |"
            )
    by = {}  # folds this command did not run itself (--resume, --from-project), grouped by what did
    for k, f in folds.items():
        if f.get("run_by", report["command"]) != report["command"]:
            by.setdefault(f["run_by"], []).append(str(k))
    lines += ["", *(f"- Fold{'s' * (len(ks) > 1)} {', '.join(ks)}: run by `{run_by}`." for run_by, ks in by.items())] if by else []
    lines += ["", f"Over {len(folds)} fold(s), mean ± SD:", "", "| model | test clips | test files |", "|---|---:|---:|"]
    for name, levels in report["summary"].items():
        lines.append(
            f"| {name} | {pct(levels['clip']['mean'])} ± {pct(levels['clip']['sd'])} | "
            f"{pct(levels['file']['mean'])} ± {pct(levels['file']['sd'])} |"
        )
    lines += ["", "Published from-scratch ESC-10 results on the same protocol (clip level):", "", "| method | accuracy |", "|---|---:|"]
    lines += [f"| {name} | {pct(value)} |" for name, value in PUBLISHED]
    ensemble = report["summary"]["ensemble: average"]["clip"]["mean"]
    complete = "" if len(folds) == 5 else " (not all 5 folds ran)"
    lines += [
        "",
        f"Target (issue 7, from scratch): ensemble ≥ {pct(TARGET)} over the 5 folds. Average ensemble: {pct(ensemble)}: "
        f"{'met' if ensemble >= TARGET and len(folds) == 5 else 'not met'}{complete}.",
    ]
    best = report["summary"].get("best group and method on validation")
    if best:
        first = folds.get(1, folds.get("1"))
        fold1 = first["best_on_validation"]["test_clip_accuracy"] if first else None
        met = best["clip"]["mean"] >= PRETRAINED_TARGET and fold1 is not None and fold1 >= PRETRAINED_FOLD1_TARGET and len(folds) == 5
        lines += [
            "",
            "Rows marked pretrained use models trained on outside data (BirdNET, CC BY-NC-SA 4.0; aiSFX, CC BY 4.0); not comparable with "
            "the from-scratch rows or the published figures.",
            "",
            f"Target (issue 42, with pretrained members): the best validation-chosen ensemble ≥ {pct(PRETRAINED_TARGET)} over the "
            f"5 folds and ≥ {pct(PRETRAINED_FOLD1_TARGET)} on fold 1. Measured: {pct(best['clip']['mean'])}, fold 1 "
            f"{'—' if fold1 is None else pct(fold1)}: {'met' if met else 'not met'}{complete}.",
        ]
    return "\n".join(lines) + "\n"


def comparison(reports: dict[str, dict]) -> str:
    """Finished reports side by side per fold: validation, which chooses between them, then test for context."""
    names = list(reports)
    folds = sorted(set.intersection(*(set(r["folds"]) for r in reports.values())), key=int)

    def figures(fold: dict) -> dict:
        return {
            "val_ensemble": fold["ensemble"]["average"]["val_file_accuracy"],
            "val_runs": fold["single_runs"]["val_file_accuracy"]["mean"],
            "test_ensemble": fold["ensemble"]["average"]["test_clip_accuracy"],
            "minutes": (fold["wall_s"] or float("nan")) / 60,
        }

    table = {name: {k: figures(r["folds"][k]) for k in folds} for name, r in reports.items()}
    columns = [
        ("val_ensemble", "average ensemble, validation files"),
        ("val_runs", "single runs, validation files (mean)"),
        ("test_ensemble", "average ensemble, test clips (context)"),
        ("minutes", "wall (min)"),
    ]
    lines = [
        "# Cross-validation: configurations compared",
        "",
        "Validation (each fold's grouped share of the other folds, the same clips for every configuration) chooses; "
        "test is context and chose nothing.",
        "",
        *(f"- **{name}**: `{r['command']}`" for name, r in reports.items()),
        "",
        "| test fold | " + " | ".join(f"{name}: {label}" for _, label in columns for name in names) + " |",
        "|---|" + "---:|" * (len(columns) * len(names)),
    ]
    show = lambda key, v: pct(v) if key != "minutes" else "—" if v != v else f"{v:.1f}"  # noqa: E731  (v != v: NaN, not timed)
    for k in folds:
        lines.append(f"| {k} | " + " | ".join(show(key, table[name][k][key]) for key, _ in columns for name in names) + " |")
    means = {name: {key: statistics.mean(table[name][k][key] for k in folds) for key, _ in columns} for name in names}
    lines.append("| mean | " + " | ".join(f"**{show(key, means[name][key])}**" for key, _ in columns for name in names) + " |")
    best = max(names, key=lambda name: means[name]["val_ensemble"])
    lines += ["", f"Higher mean validation accuracy of the average ensemble over {len(folds)} fold(s): **{best}**."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = benchmark_parser(__doc__, "crossval")
    parser.add_argument("--folds", default="1,2,3,4,5", help="test folds to run, comma-separated (default: all five)")
    parser.add_argument("--resume", action="store_true", help="keep the folds the report at --report already holds (same --set)")
    parser.add_argument(
        "--from-project", action="store_true", help="take the project's own test fold from its finished dvc repro instead of rerunning it"
    )
    parser.add_argument(
        "--compare",
        nargs="+",
        metavar="NAME=REPORT.json",
        help="run nothing: compare finished reports fold by fold, written to <report>-comparison.md",
    )
    args = parser.parse_args()
    if args.compare:
        pairs = [a.partition("=")[::2] for a in args.compare]
        bad = [a for a, (name, path) in zip(args.compare, pairs) if not name or not Path(path).is_file()]
        if bad:
            raise SystemExit(f"--compare: expected NAME=REPORT.json with an existing report, got {', '.join(bad)}")
        reports = {name: json.loads(Path(path).read_text()) for name, path in pairs}
        text = comparison(reports)
        args.report.with_name(args.report.name + "-comparison.md").write_text(text)
        print(text)
        return
    params = overrides(args.set)
    command = "python benchmarks/crossval.py" + (f" --folds {args.folds}" if args.folds != "1,2,3,4,5" else "")
    command += "".join(f" --set {a}" for a in args.set) + " --resume" * args.resume + " --from-project" * args.from_project
    results = {}
    if args.resume and args.report.with_suffix(".json").is_file():
        previous = json.loads(args.report.with_suffix(".json").read_text())
        if effective(previous["params_overrides"]) != effective(params):  # a --set of a value params.yaml now has is no change
            raise SystemExit(f"--resume: {args.report.with_suffix('.json')} ran with {previous['params_overrides']}, not {params}")
        results = {int(k): {"run_by": previous["command"], **f} for k, f in previous["folds"].items()}
    if args.from_project:
        if effective(params) != effective({}):
            raise SystemExit("--from-project: the project runs params.yaml as it is, so it cannot be combined with a --set that changes it")
        test_fold = effective({})["split"]["test_fold"]
        if test_fold not in results:  # a resumed report may hold it already
            results[test_fold] = project_fold(args.source, test_fold)
    folds = [int(k) for k in args.folds.split(",") if int(k) not in results]

    def write() -> None:
        ordered = {k: results[k] for k in sorted(results)}
        report = {"command": command, "machine": machine(), "params_overrides": params, "folds": ordered, "summary": summary(ordered)}
        write_report(report, markdown(report), args.report)

    if not folds:
        write()
        return
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    box = sandbox.create(PROJECT, args.work / "project", params)
    shutil.copytree(args.source, box / "data/raw/ESC-10", dirs_exist_ok=True)
    sandbox.dvc(box, "add", "data/raw/ESC-10")
    for k in folds:
        print(f"fold {k}: dvc exp run ensemble -S split.test_fold={k} …", flush=True)
        timing = measure([sys.executable, "-m", "dvc", "exp", "run", "ensemble", "-S", f"split.test_fold={k}", "-n", f"fold-{k}"], box)
        results[k] = {
            "wall_s": timing["wall_s"],
            "cpu_s": timing["cpu_s"],
            "peak_memory_gib": timing["peak_memory_gib"],
            "run_by": command,
            **fold_results(box),
        }
        save_members(box, k)
        print(
            f"  {timing['wall_s'] / 60:.1f} min; average ensemble "
            f"{results[k]['ensemble']['average']['test_clip_accuracy']:.4f} (test clips)",
            flush=True,
        )
        write()  # after every fold, so an interrupted run still reports the folds it finished (and --resume keeps them)


if __name__ == "__main__":
    main()

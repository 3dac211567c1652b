"""Compare ensemble rules and member sets on each fold's stored member predictions, without retraining.

    python benchmarks/ensemble_rules.py        # → benchmarks/reports/ensemble-rules.{json,md}, about a minute a fold

``benchmarks/crossval.py`` stores every fold's member predictions (validation
and test probabilities of each CNN run and head, with the index files) in
``benchmarks/work/crossval-members/fold-<k>.npz`` as it finishes the fold, and
``--from-project`` stores the project's own fold. This benchmark reads them
and, per fold:

- **Rules side by side.** The rule before issue 42 (swarms maximising
  accuracy plus 0.001 × log-loss on every validation file; the group and
  method of highest accuracy on every file) against the library's rule
  (:func:`audioclass.ensembling.ensemble`: log-loss on the rows of the kind
  test scores). Each one's choice, its test clips, and the best single member
  on test (context: test chose nothing).
- **Held-out check, on validation only.** Validation's clips are dealt into
  four groups by source recording. For each group, a rule runs on the other
  three and its choice is scored on the group's original recordings, the kind
  of row test scores: log-loss and accuracy summed over the four groups. The
  rules: fit and choose on validation's originals (the library's rule), on the
  mean over each clip's copies, and the rule before.
- **Member sets**, each under the library's rule and the same held-out check:
  the CNN runs alone, each pretrained head alone and with the runs, and every
  head together, with and without the runs.

The rules that decide (written before the five-fold run, ``docs/benchmarks.md``)
read the held-out figures only.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import statistics
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from audioclass.config import stage_config
from audioclass.ensembling import (
    HELD_OUT_GROUPS,
    EnsembleConfig,
    Runs,
    as_probabilities,
    combine,
    cross_entropy,
    ensemble,
    is_pretrained,
    load_runs,
    normalise,
    source_groups,
)
from audioclass.evaluation import accuracy, clip_level
from audioclass.swarm import OPTIMISERS
from pipeline import PROJECT, machine, write_report

MEMBERS = PROJECT / "benchmarks/work/crossval-members"  # fold-<k>.npz: one fold's member predictions
OLD_LOGLOSS_WEIGHT = 0.001  # the tie-breaker of the rule before issue 42


def save_members(box: Path, fold: int, dest: Path = MEMBERS) -> Path:
    """The members' predictions in a finished workspace ``box``, as ``<dest>/fold-<fold>.npz``."""
    report = json.loads((box / "reports/ensemble/ensemble.json").read_text())
    test_copies = yaml.safe_load((box / "params.yaml").read_text())["spectrograms"]["test_copies"]
    val_index = pd.read_csv(box / "data/spectrograms/val/index.csv")
    runs = load_runs([box / "models" / name for name in report["members"]], val_index, test_copies)
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / f"fold-{fold}.npz"
    np.savez_compressed(
        path,
        names=np.array(runs.names),
        val=runs.val,
        test=runs.test,
        metrics=json.dumps(runs.metrics),
        val_index=(box / "data/spectrograms/val/index.csv").read_text(),
        test_index=(box / "data/spectrograms/test/index.csv").read_text(),
    )
    return path


def load_members(path: Path) -> tuple[Runs, pd.DataFrame, pd.DataFrame]:
    with np.load(path) as f:
        runs = Runs(f["names"].tolist(), f["val"], f["test"], json.loads(str(f["metrics"])))
        return runs, pd.read_csv(io.StringIO(str(f["val_index"]))), pd.read_csv(io.StringIO(str(f["test_index"])))


def chosen(report: dict, names: list[str]) -> tuple[list[int], str, np.ndarray | None]:
    """The members (positions in ``names``), method and weights that a report's best (group, method) combines."""
    best = report["best"]
    group = report["groups"][best["group"]]
    weights = group["methods"][best["method"]]["weights"]
    return [names.index(n) for n in group["members"]], best["method"], None if weights is None else np.asarray(weights)


def old_rule(runs: Runs, index: pd.DataFrame, cfg: EnsembleConfig) -> tuple[list[int], str, np.ndarray | None]:
    """The rule before issue 42, on every validation file of ``index``: swarms maximise accuracy + 0.001 × log-loss,
    ``val_weighted`` weighs members by accuracy, and the group and method of highest accuracy win (the first on ties)."""
    y = index["label"].to_numpy()
    candidates = []
    for members in runs.groups().values():
        val = runs.val[members]
        methods: dict[str, np.ndarray | None] = {"average": None}
        if len(members) > 1:
            methods |= {"maximum": None, "vote": None, "val_weighted": normalise(np.array([accuracy(p, y) for p in val]))}
            for name in cfg.optimisers:

                def fitness(x: np.ndarray, val=val) -> float:
                    p = np.tensordot(normalise(x), val, axes=1)
                    return -accuracy(p, y) + OLD_LOGLOSS_WEIGHT * cross_entropy(p, y)

                rng = np.random.default_rng([cfg.seed, sorted(OPTIMISERS).index(name)])
                result = OPTIMISERS[name](fitness, len(members), rng=rng, population=cfg.population, iterations=cfg.iterations)
                methods[f"swarm_{name}"] = normalise(result.x)
        for method, weights in methods.items():
            candidates.append((accuracy(combine(val, method, weights), y), members, method, weights))
    _, members, method, weights = max(candidates, key=lambda c: c[0])
    return members, method, weights


def score(probs: np.ndarray, labels: np.ndarray, members: list[int], method: str, weights: np.ndarray | None) -> dict:
    mixed = as_probabilities(combine(probs[members], method, weights))
    return {"log_loss": cross_entropy(mixed, labels), "accuracy": accuracy(mixed, labels), "rows": len(labels)}


def held_out(runs: Runs, index: pd.DataFrame, cfg: EnsembleConfig, rule: str) -> dict:
    """A rule's choices, each made without one group of validation clips and scored on that group's originals, pooled."""
    groups = source_groups(index["source_id"].to_numpy(), cfg.seed)  # per validation file: all copies of a source together
    probs, labels = [], []
    for g in range(HELD_OUT_GROUPS):
        fit, out = groups != g, (groups == g) & (index["copy"].to_numpy() == 0)
        fit_runs = Runs(runs.names, runs.val[:, fit], runs.val[:, out], runs.metrics)
        fit_index, out_index = index[fit].reset_index(drop=True), index[out].reset_index(drop=True)
        if rule == "before":
            members, method, weights = old_rule(fit_runs, fit_index, cfg)
        else:
            choose = "held_out" if rule == "held_out_choice" else "in_sample"
            rows = "all" if rule == "clip_means" else "original"
            report, _ = ensemble(fit_runs, fit_index, out_index, dataclasses.replace(cfg, choose=choose), rows)
            members, method, weights = chosen(report, runs.names)
        probs.append(as_probabilities(combine(runs.val[members][:, out], method, weights)))
        labels.append(out_index["label"].to_numpy())
    probs, labels = np.concatenate(probs), np.concatenate(labels)
    return {"log_loss": round(cross_entropy(probs, labels), 6), "accuracy": accuracy(probs, labels), "rows": len(labels)}


def member_sets(names: list[str]) -> dict[str, list[int]]:
    """The member sets compared: the CNN runs alone, each head alone and with the runs, every head with and without them."""
    runs = [i for i, n in enumerate(names) if not is_pretrained(n)]
    heads = [i for i, n in enumerate(names) if is_pretrained(n)]
    sets = {"CNN runs": runs} if runs else {}
    for size in range(1, len(heads) + 1):
        for chosen_heads in combinations(heads, size):
            label = " + ".join(names[i] for i in chosen_heads)
            sets[label] = list(chosen_heads)
            if runs:
                sets[f"CNN runs + {label}"] = runs + list(chosen_heads)
    return sets


def test_clips(runs: Runs, test_index: pd.DataFrame, members: list[int], method: str, weights: np.ndarray | None) -> float:
    _, clips, labels = clip_level(combine(runs.test[members], method, weights), test_index)
    return accuracy(clips, labels)


def analyse(path: Path, cfg: EnsembleConfig) -> dict:
    runs, val_index, test_index = load_members(path)
    if not runs.predict_every_file():
        raise SystemExit(
            f"{path}: its heads predict validation's original recordings only; the rules compared here (the one before "
            "issue 42, clip means) need every validation file, as the members of crossval.py runs before 2026-12-07 have"
        )
    report, _ = ensemble(runs, val_index, test_index, dataclasses.replace(cfg, choose="in_sample"), "original")
    new = chosen(report, runs.names)
    held_out_report, _ = ensemble(runs, val_index, test_index, dataclasses.replace(cfg, choose="held_out"), "original")
    held_out_choice = chosen(held_out_report, runs.names)
    before = old_rule(runs, val_index, cfg)
    single = [test_clips(runs, test_index, [i], "average", None) for i in range(len(runs.names))]
    best_member = int(np.argmax(single))
    sets = {}
    for label, members in member_sets(runs.names).items():
        subset = runs.subset(members)
        sub_report, _ = ensemble(subset, val_index, test_index, dataclasses.replace(cfg, choose="in_sample"), "original")
        choice = chosen(sub_report, subset.names)
        sets[label] = {
            "members": [subset.names[i] for i in choice[0]],
            "method": choice[1],
            "held_out": held_out(subset, val_index, cfg, "originals"),
            "test_clip_accuracy": test_clips(subset, test_index, *choice),
        }
    describe = lambda c: {"members": [runs.names[i] for i in c[0]], "method": c[1], "test_clip_accuracy": test_clips(runs, test_index, *c)}
    return {
        "members": runs.names,
        "before": describe(before),
        "new": describe(new),
        "held_out_choice": describe(held_out_choice),
        "best_member_on_test": {"member": runs.names[best_member], "test_clip_accuracy": single[best_member]},
        "held_out": {rule: held_out(runs, val_index, cfg, rule) for rule in ("originals", "clip_means", "before", "held_out_choice")},
        "member_sets": sets,
    }


def pct(value: float) -> str:
    return f"{100 * value:.2f} %"


def summary(folds: dict) -> dict:
    first = next(iter(folds.values()))
    mean = lambda values: round(statistics.mean(values), 4)
    return {
        "test_clip_accuracy": {
            rule: mean([f[rule]["test_clip_accuracy"] for f in folds.values()]) for rule in ("before", "new", "held_out_choice")
        },
        "best_member_on_test": mean([f["best_member_on_test"]["test_clip_accuracy"] for f in folds.values()]),
        "held_out": {
            rule: {k: mean([f["held_out"][rule][k] for f in folds.values()]) for k in ("log_loss", "accuracy")}
            for rule in first["held_out"]
        },
        "member_sets": {
            label: {
                "held_out_log_loss": mean([f["member_sets"][label]["held_out"]["log_loss"] for f in folds.values()]),
                "held_out_accuracy": mean([f["member_sets"][label]["held_out"]["accuracy"] for f in folds.values()]),
                "test_clip_accuracy": mean([f["member_sets"][label]["test_clip_accuracy"] for f in folds.values()]),
            }
            for label in first["member_sets"]
        },
    }


def markdown(report: dict) -> str:
    folds, s = report["folds"], report["summary"]
    lines = [
        "# Ensemble rules and member sets, on stored member predictions",
        "",
        f"Machine: {report['machine']['cpus']} CPUs. Command: `{report['command']}`. Members: {', '.join(report['members'])}. "
        "Nothing is retrained: each fold's members are those `benchmarks/crossval.py` trained. Test chose nothing; "
        "the held-out figures are validation's own.",
        "",
        "## The rule before issue 42 against the new one, per fold (test clips)",
        "",
        "| test fold | before: choice | before: test | new: choice | new: test | best member on test (context) | new − best member |",
        "|---|---|---:|---|---:|---|---:|",
    ]
    show = lambda c: f"{c['method']} over {len(c['members'])}" if len(c["members"]) > 1 else c["members"][0]
    for k, f in folds.items():
        best = f["best_member_on_test"]
        gap = f["new"]["test_clip_accuracy"] - best["test_clip_accuracy"]
        lines.append(
            f"| {k} | {show(f['before'])} | {pct(f['before']['test_clip_accuracy'])} | {show(f['new'])} | "
            f"{pct(f['new']['test_clip_accuracy'])} | {best['member']}: {pct(best['test_clip_accuracy'])} | {100 * gap:+.2f} |"
        )
    t = s["test_clip_accuracy"]
    lines.append(f"| mean | | {pct(t['before'])} | | **{pct(t['new'])}** | {pct(s['best_member_on_test'])} | |")
    lines += [
        "",
        "## The group chosen by held-out log-loss (rule 3, `ensemble.choose: held_out`), per fold (test clips, context)",
        "",
        "| test fold | choice | test | in-sample choice's test |",
        "|---|---|---:|---:|",
        *(
            f"| {k} | {show(h)} | {pct(h['test_clip_accuracy'])} | {pct(f['new']['test_clip_accuracy'])} |"
            for k, f in folds.items()
            for h in [f["held_out_choice"]]
        ),
        f"| mean | | **{pct(t['held_out_choice'])}** | {pct(t['new'])} |",
    ]
    lines += [
        "",
        "## Held-out check on validation: each rule's choices scored on unseen validation originals",
        "",
        "| test fold | " + " | ".join(f"{rule}: log-loss | {rule}: accuracy" for rule in s["held_out"]) + " |",
        "|---|" + "---:|---:|" * len(s["held_out"]),
    ]
    for k, f in folds.items():
        lines.append(f"| {k} | " + " | ".join(f"{r['log_loss']:.4f} | {pct(r['accuracy'])}" for r in f["held_out"].values()) + " |")
    lines.append("| mean | " + " | ".join(f"**{r['log_loss']:.4f}** | {pct(r['accuracy'])}" for r in s["held_out"].values()) + " |")
    lines += [
        "",
        "Rules: `originals` fits and chooses on validation's original recordings (the library's rule while "
        "`spectrograms.test_copies` is `original`); `clip_means` on the mean over each clip's copies; `before` by accuracy on "
        "every validation file; `held_out_choice` as `originals`, but the group chosen by its held-out log-loss within the rows "
        "it is given (rule 3).",
        "",
        "## Member sets under the new rule",
        "",
        "| member set | held-out log-loss | held-out accuracy | test clips (context) |",
        "|---|---:|---:|---:|",
    ]
    for label, m in s["member_sets"].items():
        lines.append(f"| {label} | {m['held_out_log_loss']:.4f} | {pct(m['held_out_accuracy'])} | {pct(m['test_clip_accuracy'])} |")
    lines += ["", f"Means over {len(folds)} fold(s): {', '.join(map(str, folds))}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=Path, default=MEMBERS, help="folder of fold-<k>.npz (benchmarks/crossval.py writes them)")
    parser.add_argument("--report", type=Path, default=PROJECT / "benchmarks/reports/ensemble-rules", help="report path without suffix")
    args = parser.parse_args()
    files = sorted(args.members.glob("fold-*.npz"), key=lambda p: int(p.stem.removeprefix("fold-")))
    if not files:
        raise SystemExit(f"{args.members}: no fold-<k>.npz; run benchmarks/crossval.py (or its --from-project) first")
    cfg = stage_config(EnsembleConfig, yaml.safe_load((PROJECT / "params.yaml").read_text()), "ensemble", "params.yaml")
    folds = {}
    for path in files:
        print(f"{path.stem} …", flush=True)
        folds[int(path.stem.removeprefix("fold-"))] = analyse(path, cfg)
    members = next(iter(folds.values()))["members"]
    report = {"command": "python benchmarks/ensemble_rules.py", "machine": machine(), "members": members, "folds": folds}
    report["summary"] = summary(folds)
    write_report(report, markdown(report), args.report)


if __name__ == "__main__":
    main()

"""What the pretrained heads should read: each backend's window vectors pooled how, and one head or two.

    python benchmarks/head_probe.py    # after `dvc repro augment`; → benchmarks/reports/head-probe.{json,md}

Every clip of the project's corpus is embedded once, its original recording and
its first augmented copy (``data/augmented``), keeping every window's vector:
BirdNET's two 3 s windows, aiSFX's three 2.3 s blocks
(``benchmarks/work/head-probe/vectors.npz``, reused when present). Then, for
each of the official folds as test, with the pipeline's own split of the rest
into training and validation (``split`` in params.yaml, grouped by source),
each candidate head is trained as the pipeline trains it, on each training
clip's original and first copy:

- ``mean``: the mean over the windows (the pipeline's input before this benchmark);
- ``mean_std``: the mean and the standard deviation over them, side by side;
- ``joint``: one head on BirdNET's and aiSFX's vectors side by side.

Each head's ``C`` is chosen from ``head.C`` by log-loss on the originals of a
grouped four-fold split of the training clips; validation chooses nothing and
is the score. The decision rule (rule 4 in docs/benchmarks.md) reads the
validation figures only; test is context.
"""

from __future__ import annotations

import functools
import statistics
import time

import numpy as np
import pandas as pd

from audioclass import audio
from audioclass.calibration import cross_entropy
from audioclass.config import load_params, stage_config
from audioclass.dataset import Data, Split
from audioclass.embeddings import backend, embedder, windows
from audioclass.ensembling import EnsembleConfig, Runs, ensemble, is_pretrained
from audioclass.heads import HeadConfig, fit_head
from audioclass.parallel import default_jobs, parallel_map
from audioclass.splits import SplitConfig, assign_splits
from audioclass.tables import read_table
from ensemble_rules import MEMBERS, chosen, held_out, load_members, test_clips
from pipeline import PROJECT, benchmark_parser, machine, mean_se, write_report

COPIES = (0, 1)  # the original recording and the first augmented copy, as embed.copies: 2 gives the head
BACKENDS = ("birdnet", "aisfx")
POOLINGS = {
    "mean": lambda v: v.mean(axis=1),
    "mean_std": lambda v: np.concatenate([v.mean(axis=1), v.std(axis=1)], axis=1),
}


def window_vectors(path: str) -> dict[str, np.ndarray]:
    """One WAV → each backend's vectors, (n_vectors, dim) float32, by the embed stage's own code."""
    y, sr = audio.read_wav(PROJECT / "data/augmented" / path)
    return {name: embedder(name)(windows(audio.resample(y, sr, backend(name).sample_rate), backend(name))) for name in BACKENDS}


def embed_corpus(files: pd.DataFrame, cache) -> dict[str, np.ndarray]:
    """(``{backend: (n_files, n_vectors, dim)}`` in the order of ``files``, the minutes embedding took), from ``cache``
    when it holds them."""
    if cache.exists():
        with np.load(cache, allow_pickle=False) as f:
            if list(f["paths"]) == files["path"].tolist():
                return {b: f[b] for b in BACKENDS}, float(f["minutes"])
    start = time.monotonic()
    rows = parallel_map(window_vectors, files["path"].tolist(), jobs=default_jobs(), desc="embed", unit="file")
    vectors = {b: np.stack([r[b] for r in rows]) for b in BACKENDS}
    minutes = round((time.monotonic() - start) / 60, 1)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, paths=files["path"].to_numpy(str), minutes=minutes, **vectors)
    return vectors, minutes


def candidates(vectors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every candidate's input rows, (n_files, features)."""
    inputs = {f"{b}/{p}": pool(vectors[b]) for b in BACKENDS for p, pool in POOLINGS.items()}
    for p in POOLINGS:
        inputs[f"joint/{p}"] = np.concatenate([inputs[f"{b}/{p}"] for b in BACKENDS], axis=1)
    return inputs


def score(task: tuple[str, np.ndarray, pd.DataFrame], n_classes: int, cs: tuple[float, ...]) -> dict:
    """One candidate on one fold, fitted by the head stage's own :func:`fit_head` (C chosen within training);
    validation's and test's originals scored."""
    name, x, rows = task
    originals = (rows["copy"] == 0).to_numpy()
    part = {s: (rows["split"] == s).to_numpy() & (originals if s != "train" else True) for s in ("train", "val", "test")}
    data = Data(*(Split(x[part[s]], rows[part[s]].reset_index(drop=True)) for s in part), tuple(map(str, range(n_classes))))
    head = fit_head(data, cs, refit=False)
    result = {"C": head.c}
    for s in ("val", "test"):
        split = getattr(data, s)
        p = head.validated.probabilities(split.x)
        result[s] = {
            "log_loss": round(float(cross_entropy(p, split.y)), 4),
            "accuracy": round(float((p.argmax(axis=1) == split.y).mean()), 4),
            "clips": len(split.y),
            "probabilities": pd.DataFrame(p, index=split.index["clip_id"].to_numpy()),
        }
    return result


def summarise(per_fold: list[dict]) -> dict:
    """One candidate's :func:`score` over the folds: means ± SE, and the C chosen on each."""
    return {
        "val_log_loss": mean_se([r["val"]["log_loss"] for r in per_fold]),
        "val_accuracy": mean_se([r["val"]["accuracy"] for r in per_fold]),
        "test_accuracy": mean_se([r["test"]["accuracy"] for r in per_fold]),
        "C": [r["C"] for r in per_fold],
    }


def decide(folds: dict, baseline: str, names: list[str]) -> dict:
    """Rule 4: lower validation log-loss by more than the paired SE, accuracy not lower by more than a clip a fold."""
    verdicts = {}
    for name in names:
        diff = [folds[k][name]["val"]["log_loss"] - folds[k][baseline]["val"]["log_loss"] for k in folds]
        acc = [folds[k][name]["val"]["accuracy"] - folds[k][baseline]["val"]["accuracy"] for k in folds]
        clip = statistics.mean(1 / folds[k][name]["val"]["clips"] for k in folds)
        se = statistics.stdev(diff) / len(diff) ** 0.5
        verdicts[name] = {
            "log_loss_diff": round(statistics.mean(diff), 4),
            "se": round(se, 4),
            "accuracy_diff": round(statistics.mean(acc), 4),
            "passes": name != baseline and statistics.mean(diff) < -se and statistics.mean(acc) >= -clip,
        }
    passing = [n for n in names if verdicts[n]["passes"]]
    chosen = min(passing, key=lambda n: verdicts[n]["log_loss_diff"]) if passing else baseline
    return {"baseline": baseline, "verdicts": verdicts, "chosen": chosen}


def ensembles(folds: dict, heads: dict[str, str], cfg: EnsembleConfig) -> dict:
    """Per fold, the shipped ensemble (``ensemble.choose``) over member sets with the new heads beside the CNN runs
    and heads that ``benchmarks/crossval.py`` stored, scored by the held-out check on validation and on test."""
    result = {}
    for k, scores in folds.items():
        stored, val_index, test_index = load_members(MEMBERS / f"fold-{k}.npz")
        originals = (val_index["copy"] == 0).to_numpy()
        val_index = val_index[originals].reset_index(drop=True)
        names, val, test = list(stored.names), list(stored.val[:, originals]), list(stored.test)
        metrics = list(stored.metrics)
        for member, candidate in heads.items():
            for part, index, into in (("val", val_index, val), ("test", test_index, test)):
                p = scores[candidate][part]["probabilities"]
                assert set(p.index) == set(index["clip_id"]), f"fold {k}: the stored {part} clips are not this split's"
                into.append(p.loc[index["clip_id"]].to_numpy(np.float32))
            names.append(member)
            test_accuracy, val_accuracy = scores[candidate]["test"]["accuracy"], scores[candidate]["val"]["accuracy"]
            metrics.append({"test_clip_accuracy": test_accuracy, "test_file_accuracy": test_accuracy, "val_file_accuracy": val_accuracy})
        runs = Runs(names, np.stack(val), np.stack(test), metrics)
        cnn = [i for i, n in enumerate(names) if not is_pretrained(n)]
        sets = {
            "CNN runs + head-birdnet + head-aisfx (before)": cnn + [names.index("head-birdnet"), names.index("head-aisfx")],
            "head-birdnet (before)": [names.index("head-birdnet")],
            "CNN runs + head-aisfx (before)": cnn + [names.index("head-aisfx")],
        }
        for member in heads:
            sets[member] = [names.index(member)]
            sets[f"CNN runs + {member}"] = cnn + [names.index(member)]
        result[k] = {}
        for label, members in sets.items():
            subset = runs.subset(members)
            report, _ = ensemble(subset, val_index, test_index, cfg, "original")
            choice = chosen(report, subset.names)
            single = [test_clips(subset, test_index, [i], "average", None) for i in range(len(members))]
            result[k][label] = {
                "choice": f"{report['best']['group']}/{report['best']['method']}",
                "held_out": held_out(subset, val_index, cfg, "held_out_choice"),
                "test_clip_accuracy": round(test_clips(subset, test_index, *choice), 4),
                "best_member_test": round(max(single), 4),
            }
        print(f"fold {k}: " + ", ".join(f"{n} {r['test_clip_accuracy']:.3f}" for n, r in result[k].items()), flush=True)
    return result


def summarise_shipped(by_fold: dict) -> dict:
    """:func:`ensembles`' member sets over the folds: held-out means, test clips per fold, and how far behind the
    best single member on test each fold's choice is."""
    return {
        label: {
            "held_out_log_loss": round(statistics.mean(by_fold[k][label]["held_out"]["log_loss"] for k in by_fold), 4),
            "held_out_accuracy": round(statistics.mean(by_fold[k][label]["held_out"]["accuracy"] for k in by_fold), 4),
            "test_clip_accuracy": mean_se([by_fold[k][label]["test_clip_accuracy"] for k in by_fold]),
            "per_fold": [by_fold[k][label]["test_clip_accuracy"] for k in by_fold],
            "behind_best_member": [
                round(by_fold[k][label]["best_member_test"] - by_fold[k][label]["test_clip_accuracy"], 4) for k in by_fold
            ],
        }
        for label in by_fold[min(by_fold)]
    }


def verdict_table(summary: dict, decision: dict, first: str, chosen: str) -> list[str]:
    """Candidates beside today's, as rule 5 and rule 6 judge them: markdown rows, with their header. ``first`` and
    ``chosen`` title the candidate's column and that of what each fold chose for it."""
    lines = [
        f"| {first} | validation log-loss | − today ± SE | validation accuracy | test accuracy (context) | {chosen} | passes |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for name, s in summary.items():
        v = decision["verdicts"][name]
        lines.append(
            f"| {name} | {s['val_log_loss']['mean']:.4f} ± {s['val_log_loss']['se']:.4f} | "
            f"{v['log_loss_diff']:+.4f} ± {v['se']:.4f} | {s['val_accuracy']['mean']:.2%} | "
            f"{s['test_accuracy']['mean']:.2%} | {', '.join(map(str, s['C']))} | {v['passes']} |"
        )
    return lines


def shipped_table(shipped: dict) -> list[str]:
    """:func:`summarise_shipped` as markdown rows, with their header."""
    lines = [
        "| member set | held-out log-loss | held-out accuracy | test clips, 5 folds | per fold | behind best member, per fold |",
        "|---|---:|---:|---:|---|---|",
    ]
    for label, s in shipped.items():
        lines.append(
            f"| {label} | {s['held_out_log_loss']:.4f} | {s['held_out_accuracy']:.2%} | "
            f"{s['test_clip_accuracy']['mean']:.2%} ± {s['test_clip_accuracy']['se']:.2%} | "
            f"{', '.join(f'{a:.2%}' for a in s['per_fold'])} | {', '.join(f'{b * 100:+.2f}' for b in s['behind_best_member'])} |"
        )
    return lines


def markdown(report: dict) -> str:
    names = list(report["summary"])
    lines = [
        "# The pretrained heads' inputs: pooling over windows, one head or two",
        "",
        f"Machine: {report['machine']['cpus']} CPUs. Command: `python benchmarks/head_probe.py`. "
        f"{report['files']} files embedded (each clip's original and first copy) in {report['embed_minutes']} min. "
        "Each head's C chosen by log-loss within the training clips; validation chose nothing. "
        "Pretrained on outside data: BirdNET (CC BY-NC-SA 4.0), aiSFX (CC BY 4.0).",
        "",
        "| input | validation log-loss | validation accuracy | test accuracy (context) | C per fold |",
        "|---|---:|---:|---:|---|",
    ]
    for name in names:
        s = report["summary"][name]
        lines.append(
            f"| {name} | {s['val_log_loss']['mean']:.4f} ± {s['val_log_loss']['se']:.4f} | "
            f"{s['val_accuracy']['mean']:.2%} | {s['test_accuracy']['mean']:.2%} | {', '.join(map(str, s['C']))} |"
        )
    lines += ["", "Means ± SE over the folds, on validation's (and test's) original recordings.", ""]
    for label, decision in report["decisions"].items():
        lines += [f"**{label}** (rule 4, against `{decision['baseline']}`): chosen `{decision['chosen']}`.", ""]
        lines += ["| input | log-loss − baseline ± SE | accuracy − baseline | passes |", "|---|---:|---:|---|"]
        for name, v in decision["verdicts"].items():
            lines.append(f"| {name} | {v['log_loss_diff']:+.4f} ± {v['se']:.4f} | {v['accuracy_diff'] * 100:+.2f} points | {v['passes']} |")
        lines.append("")
    lines += [
        "## The shipped ensemble with the new heads",
        "",
        "Per fold, `ensemble.choose` over each member set: the CNN runs and the heads `head-birdnet` and `head-aisfx` "
        "(mean pooling, C chosen on validation files) as `benchmarks/crossval.py` trained and stored them "
        "(`benchmarks/work/crossval-members/`, its five-fold run), beside the new heads above, fitted on the same splits. "
        "Held-out: the check of `benchmarks/ensemble_rules.py` on validation's originals (the rule that decides). "
        "Test: the shipped choice's clips (context); behind: the best single member on test minus it, in points.",
        "",
        *shipped_table(report["shipped"]),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = benchmark_parser(__doc__, "head-probe")
    args = parser.parse_args()
    params = load_params(PROJECT / "params.yaml")
    clips = read_table(PROJECT / "data/prepared/metadata.csv")  # what the split stage reads, with its column types
    manifest = pd.read_csv(PROJECT / "data/augmented/manifest.csv")
    files = manifest[manifest["copy"].isin(COPIES)].sort_values(["clip_id", "copy"]).reset_index(drop=True)
    n_classes = int(clips["label"].max()) + 1

    vectors, embed_minutes = embed_corpus(files, args.work / "vectors.npz")
    inputs = candidates(vectors)
    rows_by_fold = {}
    for k in sorted(int(k) for k in clips["fold"].unique()):
        cfg = stage_config(SplitConfig, {"split": {**params["split"], "strategy": "folds", "test_fold": k}}, "split")
        split = clips.assign(split=assign_splits(clips, cfg).to_numpy())
        if k == params["split"]["test_fold"]:  # the same split as the pipeline's own
            assert split[["clip_id", "split"]].equals(pd.read_csv(PROJECT / "data/split.csv")[["clip_id", "split"]])
        rows_by_fold[k] = files.drop(columns=["split"], errors="ignore").merge(split[["clip_id", "split"]], on="clip_id")
    tasks = [(k, name) for k in rows_by_fold for name in inputs]
    scores = parallel_map(
        functools.partial(score, n_classes=n_classes, cs=stage_config(HeadConfig, params, "head").C),
        [(name, inputs[name], rows_by_fold[k]) for k, name in tasks],
        jobs=default_jobs(),
        desc="heads",
        unit="head",
    )
    folds = {k: {} for k in rows_by_fold}
    for (k, name), result in zip(tasks, scores):
        folds[k][name] = result
    summary = {name: summarise([folds[k][name] for k in folds]) for name in inputs}
    decisions = {
        "Every candidate": decide(folds, "birdnet/mean", list(inputs)),
        "Without BirdNET (licence-clean)": decide(folds, "aisfx/mean", [n for n in inputs if n.startswith("aisfx/")]),
    }
    new_heads = {"head-birdnet+aisfx/mean_std": "joint/mean_std", "head-aisfx/mean_std": "aisfx/mean_std"}
    by_fold = ensembles(folds, new_heads, stage_config(EnsembleConfig, params, "ensemble"))
    shipped = summarise_shipped(by_fold)
    for scores in folds.values():
        for result in scores.values():
            for part in ("val", "test"):
                del result[part]["probabilities"]
    report = {"machine": machine(), "files": len(files), "embed_minutes": embed_minutes}
    report |= {"folds": folds, "summary": summary, "decisions": decisions, "ensembles": by_fold, "shipped": shipped}
    write_report(report, markdown(report), args.report)


if __name__ == "__main__":
    main()

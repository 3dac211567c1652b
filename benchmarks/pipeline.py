"""Benchmark the whole pipeline on the real ESC-10 at default params.

    python benchmarks/pipeline.py                       # every stage once, from scratch
    python benchmarks/pipeline.py --until spectrograms  # the data stages only
    python benchmarks/pipeline.py --twice               # plus the data stages again: identical dvc.lock hashes?
    python benchmarks/pipeline.py --esc50               # plus: does an ESC-50-master copy give the same clips?
    python benchmarks/pipeline.py --set split.strategy=holdout --report benchmarks/reports/pipeline-holdout
    python benchmarks/pipeline.py --from-cache --stages raw_vectors,classical,cnn1d@deep1-7,features,feature_models \
        --report benchmarks/reports/baselines          # just these stages, on the project's cached data

Each stage (in ``dvc stage list`` order: ``train@<run>`` is one stage per
run) runs as ``dvc repro -s <stage>`` in a sandbox copy of the project
(under --work), measured for wall time, CPU time (user + sys of every
process it started) and peak memory (the sum of RSS over the stage's whole
process tree, sampled every 0.1 s, since parallel workers add up). Then a
second ``dvc repro`` with nothing changed is timed. The report goes to
``<report>.json`` and ``<report>.md``, with each target met or missed by how much.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import soundfile as sf
import yaml

from audioclass import sandbox
from audioclass.audio import to_int16
from audioclass.layouts import ESC10_FOLDERS, ESC10_TARGETS

PROJECT = Path(__file__).resolve().parents[1]
DATA_STAGES = ("check", "extract", "split", "augment", "spectrograms")
BASELINE_STAGES = ("raw_vectors", "classical", "cnn1d", "features", "feature_models")  # cnn1d: every cnn1d@<cell>
GIB = 1024**3
PRETRAINED_STAGES = ("embed", "head")  # every embed@<model>, head@<model>
CORE_STAGES = (*DATA_STAGES, "tune", "train", *PRETRAINED_STAGES, "ensemble")  # train: every train@<run>
TARGETS = {  # (what, limit, unit) on a 2-core machine, from issues 2, 3 and 7
    "core_wall_s": ("core path, extract to ensemble (issue 7)", 30 * 60, "s"),
    "total_wall_s": ("every stage, baselines and tuning included (issue 7)", 45 * 60, "s"),
    "augment_wall_s": ("augmentation of 8,000 files", 8 * 60, "s"),
    "spectrograms_wall_s": ("spectrograms for 8,000 files", 60, "s"),
    "train_wall_s": ("training every run", 15 * 60, "s"),
    "pretrained_wall_s": ("pretrained members: every embed and head stage (issue 29)", 3 * 60, "s"),
    "ensemble_wall_s": ("ensemble, all six optimisers", 30, "s"),
    "baselines_wall_s": ("the default baseline stages together (issue 5)", 10 * 60, "s"),
    "noop_repro_wall_s": ("second dvc repro, nothing changed", 10, "s"),
    "peak_memory_gib": ("peak memory of any stage", 4, "GiB"),
}


def measure(cmd: list[str], cwd: Path) -> dict:
    """Run ``cmd`` in the sandbox ``cwd``; wall and CPU seconds, and the peak summed RSS of its process tree."""
    env = sandbox.environment(cwd)  # the sandbox's code, whatever happens to the working tree meanwhile
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = [0]

    def sample():
        root = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                tree = [root, *root.children(recursive=True)]
                peak[0] = max(peak[0], sum(p.memory_info().rss for p in tree if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = proc.communicate()
    wall = time.perf_counter() - start
    sampler.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{output}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "peak_memory_gib": round(peak[0] / GIB, 3), "log": output}


def overrides(assignments: list[str]) -> dict:
    """``["split.strategy=holdout"]`` → ``{"split": {"strategy": "holdout"}}`` (values parsed as YAML).

    A mapping value replaces the one it names: ``train.runs={run-1: {seed: 1}}`` leaves one run."""
    tree: dict = {}
    for assignment in assignments:
        key, _, value = assignment.partition("=")
        *parents, leaf = key.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        parsed = yaml.safe_load(value)
        node[leaf] = sandbox.Replace(parsed) if isinstance(parsed, dict) else parsed
    return tree


def run_pipeline(
    work: Path, source: Path, until: str | None, params: dict, only: list[str] | None = None, from_cache: bool = False
) -> dict:
    params = {**params, "extract": {**params.get("extract", {}), "source": str(source.resolve())}}
    box = sandbox.create(PROJECT, work, params, with_lock=from_cache)
    dvc = [sys.executable, "-m", "dvc"]
    if from_cache:  # the outputs the project's dvc.lock records, linked from its cache rather than recomputed
        sandbox.dvc(box, "config", "--local", "cache.dir", str(PROJECT / ".dvc" / "cache"))
        sandbox.dvc(box, "checkout", check=False)
    names = sandbox.dvc(box, "stage", "list", "--names-only").stdout.split()
    order = [n for n in DATA_STAGES if n in names] + [n for n in names if n not in DATA_STAGES]
    if until:
        order = order[: order.index(until) + 1]
    if only:
        unknown = sorted(set(only) - set(names))
        if unknown:
            raise SystemExit(f"--stages: expected stages of dvc.yaml ({', '.join(names)}), got {', '.join(unknown)}")
        order = only
    stages = {}
    for stage in order:
        print(f"  {stage} …", flush=True)
        # --force: with --from-cache the sandbox holds the project's dvc.lock, so a stage whose
        # inputs come out byte-identical (as they should) would otherwise count as up to date.
        stages[stage] = measure([*dvc, "repro", "-s", "--force", stage], box)
        if "Running stage" not in stages[stage]["log"]:
            raise SystemExit(f"{stage} did not run:\n{stages[stage]['log']}")
        print(
            f"    {stages[stage]['wall_s']} s wall, {stages[stage]['cpu_s']} s CPU, {stages[stage]['peak_memory_gib']} GiB peak", flush=True
        )
    noop = measure([*dvc, "repro", *(["--single-item"] if only else []), *order], box)
    assert "Running stage" not in noop["log"], noop["log"]
    for result in [*stages.values(), noop]:
        result.pop("log")
    result = {"sandbox": str(box), "stages": stages, "noop_repro": noop, "counts": counts(box)}
    runs = {}
    for stage in (s for s in stages if s.startswith("train@")):
        metrics = json.loads((box / f"reports/train/{stage.split('@')[1]}.json").read_text())
        runs[stage] = {
            **{k: metrics[k] for k in ("val_file_accuracy", "test_clip_accuracy", "test_file_accuracy", "epochs_run", "best_epoch")},
            "seconds_per_epoch": round(stages[stage]["wall_s"] / metrics["epochs_run"], 1),
        }
    if runs:
        result["runs"] = runs
    if "ensemble" in stages:
        result["ensemble"] = json.loads((box / "reports/ensemble/ensemble.json").read_text())
        result["ensemble_table"] = (box / "reports/ensemble/ensemble.md").read_text()
    tables = {"classical": "classical.md", "feature_models": "features.md"}
    result["baseline_tables"] = {
        f"reports/baselines/{md}": (box / "reports/baselines" / md).read_text() for s, md in tables.items() if s in stages
    }
    for stage in (s for s in stages if s.startswith("cnn1d@")):
        architecture, kernel = stage.split("@")[1].rsplit("-", 1)
        result.setdefault("cnn1d", {})[stage] = json.loads((box / f"reports/baselines/cnn1d/{architecture}-k{kernel}.json").read_text())
    if "report" in stages:
        result["results_table"] = (box / "reports/results.md").read_text()
    return result


def counts(box: Path) -> dict:
    """What the data stages produced; empty where they did not run."""
    if not (box / "data/spectrograms/train/x.npy").is_file():
        return {}
    return {
        "prepared_clips": len(pd.read_csv(box / "data/prepared/metadata.csv")),
        "augmented_wavs": len(list((box / "data/augmented/wav").glob("*.wav"))),
        "spectrograms": {s: int(np.load(box / f"data/spectrograms/{s}/x.npy", mmap_mode="r").shape[0]) for s in ("train", "val", "test")},
        "spectrogram_shape": list(np.load(box / "data/spectrograms/train/x.npy", mmap_mode="r").shape[1:]),
        "clips_per_class": pd.read_csv(box / "data/prepared/metadata.csv").groupby("class_name").size().to_dict(),
        "preview_png": (box / "reports/spectrogram_grid.png").is_file(),
        "augmented_gib": round(sum(p.stat().st_size for p in (box / "data/augmented").rglob("*") if p.is_file()) / GIB, 3),
    }


def lock_hashes(box: Path) -> dict:
    lock = yaml.safe_load((box / "dvc.lock").read_text())
    return {f"{stage}:{out['path']}": out["md5"] for stage, body in lock["stages"].items() for out in body.get("outs", [])}


def esc50_from_release(release: Path, dest: Path) -> Path:
    """An ESC-50-master layout holding the ESC-10 clips as 16-bit WAV (what the real zip has)."""
    (dest / "audio").mkdir(parents=True)
    (dest / "meta").mkdir()
    rows = []
    for folder in sorted(p for p in release.iterdir() if p.is_dir()):
        category = ESC10_FOLDERS[folder.name.split(" - ", 1)[1]]
        for clip in sorted(folder.glob("*.ogg")):
            fold, source, take = clip.stem.split("-")
            name = f"{clip.stem}-{ESC10_TARGETS[category]}.wav"
            # Decode to float and clip: libsndfile's own float→int16 conversion wraps
            # the Ogg's few samples above full scale instead of clipping them.
            y, sr = sf.read(clip, dtype="float32")
            sf.write(dest / "audio" / name, to_int16(y), sr, subtype="PCM_16")
            rows.append((name, int(fold), ESC10_TARGETS[category], category, True, source, take))
    columns = ["filename", "fold", "target", "category", "esc10", "src_file", "take"]
    pd.DataFrame(rows, columns=columns).to_csv(dest / "meta" / "esc50.csv", index=False)
    return dest


def esc50_check(release: Path, work: Path, reference: Path) -> dict:
    """Extract an ESC-50-master copy (folder and zip) and compare it with the ESC-10 run's clips.

    Sample differences are reported apart for the clips whose Ogg decodes above
    full scale: a WAV must clip them before resampling, the Ogg path clips after.
    """
    from audioclass.clips import ExtractConfig, extract
    from audioclass.config import load_params, stage_config

    master = esc50_from_release(release, work / "ESC-50-master")
    archive = Path(shutil.make_archive(str(work / "ESC-50-master"), "zip", work, "ESC-50-master"))
    overdriven = {clip.stem for clip in release.glob("*/*.ogg") if np.abs(sf.read(clip, dtype="float32")[0]).max() > 1}
    ref = pd.read_csv(reference / "metadata.csv", dtype={"source_id": str, "take": str})
    same = ["clip_id", "source_id", "take", "fold", "label", "class_name"]
    result = {}
    for name, source in (("folder", master), ("zip", archive)):
        params = load_params(PROJECT / "params.yaml")
        params["extract"]["source"] = str(source)
        meta = extract(stage_config(ExtractConfig, params, "extract"), work / f"prepared-{name}", jobs=os.cpu_count())
        diff = {
            row.clip_id: int(
                np.abs(
                    sf.read(work / f"prepared-{name}" / row.path, dtype="int16")[0].astype(int)
                    - sf.read(reference / row.path, dtype="int16")[0].astype(int)
                ).max()
            )
            for row in meta.itertuples()
        }
        result[name] = {
            "clips": len(meta),
            "same_ids_labels_folds": bool(meta[same].equals(ref[same])),
            "max_sample_difference_int16": max(d for c, d in diff.items() if c not in overdriven),
            "overdriven_clips": len(overdriven),
            "max_sample_difference_int16_overdriven": max((diff[c] for c in overdriven), default=0),
        }
    return result


def verdicts(figures: dict) -> list[dict]:
    rows = []
    for key, (what, limit, unit) in TARGETS.items():
        if key not in figures:
            continue
        value = figures[key]
        rows.append(
            {
                "target": what,
                "limit": f"≤ {limit} {unit}",
                "measured": f"{value} {unit}",
                "met": value <= limit,
                "gap": None if value <= limit else f"{value - limit:.2f} {unit} over ({value / limit:.2f}×)",
            }
        )
    return rows


def mean_se(values: list[float]) -> dict:
    """Mean and standard error (sample SD / sqrt(n); 0 for a single value)."""
    se = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else 0.0
    return {"mean": round(statistics.mean(values), 4), "se": round(se, 4), "n": len(values)}


def markdown(report: dict) -> str:
    run = report["runs"][0]
    lines = [
        "# Pipeline benchmark",
        "",
        f"Machine: {report['machine']['cpus']} CPUs, {report['machine']['memory_gib']} GiB, Python {report['machine']['python']}. "
        f"Source: `{report['source']}`. "
        f"Params: {'defaults' if not report['params_overrides'] else 'defaults with ' + json.dumps(report['params_overrides'])}. "
        f"Command: `{report['command']}`.",
        "",
        "| stage | wall (s) | CPU (s) | peak memory (GiB) |",
        "|---|---:|---:|---:|",
    ]
    for stage, m in run["stages"].items():
        lines.append(f"| {stage} | {m['wall_s']} | {m['cpu_s']} | {m['peak_memory_gib']} |")
    m = run["noop_repro"]
    lines += [f"| second `dvc repro` (no-op) | {m['wall_s']} | {m['cpu_s']} | {m['peak_memory_gib']} |", ""]
    c = run["counts"]
    if c:
        lines += [
            f"Produced: {c['prepared_clips']} prepared clips ({min(c['clips_per_class'].values())}–"
            f"{max(c['clips_per_class'].values())} per class), {c['augmented_wavs']} augmented WAVs "
            f"({c['augmented_gib']} GiB), spectrograms {c['spectrograms']} of shape {c['spectrogram_shape']}, "
            f"preview PNG: {'yes' if c['preview_png'] else 'no'}.",
            "",
        ]
    lines += ["| target | limit | measured | met |", "|---|---|---|---|"]
    for v in report["targets"]:
        lines.append(f"| {v['target']} | {v['limit']} | {v['measured']} | {'yes' if v['met'] else 'no: ' + v['gap']} |")
    if "runs" in run:
        lines += [
            "",
            "| run | epochs | best epoch | s / epoch | val (file) | test (clip) | test (file) |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for name, r in run["runs"].items():
            lines.append(
                f"| {name} | {r['epochs_run']} | {r['best_epoch']} | {r['seconds_per_epoch']} | "
                f"{100 * r['val_file_accuracy']:.2f} % | {100 * r['test_clip_accuracy']:.2f} % | {100 * r['test_file_accuracy']:.2f} % |"
            )
        spread = {
            k: mean_se([r[k] for r in run["runs"].values()]) for k in ("val_file_accuracy", "test_clip_accuracy", "test_file_accuracy")
        }
        lines.append("| mean ± SE | | | | " + " | ".join(f"{100 * m['mean']:.2f} ± {100 * m['se']:.2f} %" for m in spread.values()) + " |")
    if "results_table" in run:
        lines += ["", run["results_table"].rstrip().replace("\n# ", "\n## ").replace("\n## ", "\n### ").removeprefix("# ")]
    elif "ensemble_table" in run:
        lines += ["", "Results (test accuracy; weights fitted on validation only):", "", run["ensemble_table"].rstrip()]
    for stage, m in run.get("cnn1d", {}).items():
        lines += [
            "",
            f"{stage}: test {100 * m['test_file_accuracy']:.1f} % (files) / {100 * m['test_clip_accuracy']:.1f} % (clips), "
            f"validation {100 * m['val_file_accuracy']:.1f} %, best epoch {m['best_epoch']}.",
        ]
    for name, table in run.get("baseline_tables", {}).items():
        lines += ["", f"`{name}`:", "", table.rstrip()]
    if "deterministic" in report:
        d = report["deterministic"]
        lines += [
            "",
            f"Data stages run twice from scratch: dvc.lock output hashes {'identical' if d['identical'] else 'DIFFER'} "
            f"({d['outputs_compared']} outputs compared).",
        ]
    if "esc50" in report:
        for name, e in report["esc50"].items():
            lines.append(
                f"ESC-50 master ({name}): {e['clips']} clips, same ids/labels/folds as the ESC-10 release: "
                f"{'yes' if e['same_ids_labels_folds'] else 'NO'}; largest int16 sample difference "
                f"{e['max_sample_difference_int16']} (16-bit quantisation of the WAVs), and "
                f"{e['max_sample_difference_int16_overdriven']} for the {e['overdriven_clips']} Ogg clips that "
                "decode above full scale, which a WAV must clip before resampling rather than after."
            )
    return "\n".join(lines) + "\n"


def benchmark_parser(doc: str | None, name: str) -> argparse.ArgumentParser:
    """The options every benchmark has: the data, a scratch folder, the report path and param overrides."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=PROJECT.parent / "shared/datasets/ESC-10", help="ESC-10 release folder")
    parser.add_argument("--work", type=Path, default=PROJECT / "benchmarks/work" / name, help="scratch folder (emptied first)")
    parser.add_argument("--report", type=Path, default=PROJECT / "benchmarks/reports" / name, help="report path without suffix")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a param, e.g. split.strategy=holdout")
    return parser


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(url: str, seconds: float, process: subprocess.Popen | None = None) -> None:
    """Until ``url`` answers 200; a one-line exit if it does not within ``seconds``, or ``process`` ends first."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:  # not listening yet, or an error status
            if process is not None and process.poll() is not None:
                break
            time.sleep(0.25)
    raise SystemExit(f"error: {url}: the server did not answer within {seconds:.0f} s")


def test_clips(project: Path) -> pd.DataFrame:
    """The prepared clips of ``data/split.csv``'s test rows, as ``data/prepared/metadata.csv`` has them."""
    meta = pd.read_csv(project / "data/prepared/metadata.csv")
    split = pd.read_csv(project / "data/split.csv")
    test = meta[meta["clip_id"].isin(split.loc[split["split"] == "test", "clip_id"])]
    return test.reset_index(drop=True)


def machine() -> dict:
    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / GIB, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def write_report(report: dict, text: str, path: Path) -> None:
    """``<path>.json`` (every figure) and ``<path>.md`` (the readable summary, also printed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    path.with_suffix(".md").write_text(text)
    print(text)


def main() -> None:
    parser = benchmark_parser(__doc__, "pipeline")
    parser.add_argument("--until", help="stop after this stage, e.g. spectrograms")
    parser.add_argument("--twice", action="store_true", help="run the data stages again from scratch and compare dvc.lock hashes")
    parser.add_argument("--esc50", action="store_true", help="check that an ESC-50-master copy gives the same clips")
    parser.add_argument("--stages", help="comma-separated stages to run, in this order (default: every stage)")
    parser.add_argument(
        "--from-cache",
        action="store_true",
        help="first check out the outputs in the project's dvc.lock from its DVC cache, so --stages start from them",
    )
    args = parser.parse_args()
    only = args.stages.split(",") if args.stages else None

    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    print(f"run 1: dvc repro in a sandbox of {PROJECT}", flush=True)
    params = overrides(args.set)
    runs = [run_pipeline(args.work / "run1", args.source, args.until, params, only, args.from_cache)]
    if args.twice:
        print("run 2: the data stages again, from scratch", flush=True)
        runs.append(run_pipeline(args.work / "run2", args.source, "spectrograms", params))
    first = runs[0]
    figures = {f"{s}_wall_s": first["stages"][s]["wall_s"] for s in ("augment", "spectrograms", "ensemble") if s in first["stages"]}
    figures["noop_repro_wall_s"] = first["noop_repro"]["wall_s"]
    figures["peak_memory_gib"] = max(m["peak_memory_gib"] for m in first["stages"].values())
    baselines = [m["wall_s"] for s, m in first["stages"].items() if s.split("@")[0] in BASELINE_STAGES]
    if baselines:
        figures["baselines_wall_s"] = round(sum(baselines), 1)
    trains = [m["wall_s"] for s, m in first["stages"].items() if s.startswith("train@")]
    if trains:
        figures["train_wall_s"] = round(sum(trains), 1)
    pretrained = [m["wall_s"] for s, m in first["stages"].items() if s.split("@")[0] in PRETRAINED_STAGES]
    if pretrained:
        figures["pretrained_wall_s"] = round(sum(pretrained), 1)
    ran = {s.split("@")[0] for s in first["stages"]}
    if set(CORE_STAGES) - set(PRETRAINED_STAGES) <= ran and not args.from_cache:  # ensemble ran, so did every member it needs
        figures["core_wall_s"] = round(sum(m["wall_s"] for s, m in first["stages"].items() if s.split("@")[0] in CORE_STAGES), 1)
    if not only and not args.until:
        figures["total_wall_s"] = round(sum(m["wall_s"] for m in first["stages"].values()), 1)
    report = {
        "command": "python benchmarks/pipeline.py"
        + "".join(f" --set {a}" for a in args.set)
        + (f" --until {args.until}" if args.until else "")
        + (" --twice" if args.twice else "")
        + (" --esc50" if args.esc50 else "")
        + (" --from-cache" if args.from_cache else "")
        + (f" --stages {args.stages}" if args.stages else ""),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine(),
        "source": args.source.name,  # the release's name: reports name no path of the machine that ran them
        "params_overrides": params,
        "runs": runs,
        "figures": figures,
        "targets": verdicts(figures),
    }
    if args.twice:
        a, b = (lock_hashes(Path(r["sandbox"])) for r in runs)
        data = [k for k in b if k.split(":")[0] in DATA_STAGES]
        report["deterministic"] = {
            "identical": all(a[k] == b[k] for k in data),
            "outputs_compared": len(data),
            "differing": sorted(k for k in data if a[k] != b[k]),
        }
    if args.esc50:
        with tempfile.TemporaryDirectory(dir=args.work) as tmp:
            report["esc50"] = esc50_check(args.source, Path(tmp), Path(first["sandbox"]) / "data/prepared")
    for run in runs:
        del run["sandbox"]  # a scratch folder of this machine
    write_report(report, markdown(report), args.report)


if __name__ == "__main__":
    main()

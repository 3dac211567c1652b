"""Benchmark how each stage's cost grows with the corpus: 400, 2,000 and 8,000 clips.

    python benchmarks/scaling.py                          # → benchmarks/reports/scaling.{json,md}
    python benchmarks/scaling.py --sizes 400,2000         # a quicker look
    python benchmarks/scaling.py --train-epochs 0         # the data stages only
    python benchmarks/scaling.py --sizes 8000 && python benchmarks/scaling.py --resume   # one size now, the rest later

Each size is a corpus made from the ESC-10 release by deterministic
transformations: clip k's copy j (j = 0 is the clip itself) is the recording
rolled circularly by j × 0.37 s, at j × 0.5 dB less gain, its polarity
flipped for odd j, saved as 16-bit WAV at the release's 44.1 kHz in the
release's own folder layout (``001 - Dog bark/1-100032v03-A.wav``), so it
keeps the release's classes and folds. The audio is realistic for timing and
memory; the copies of one recording are distinct sources to the split, so
accuracy here means nothing, and the report gives none.

Every stage runs as ``dvc repro -s`` in a sandbox at the default params,
measured as ``benchmarks/pipeline.py`` measures (wall, CPU of every process,
peak of the summed RSS of the process tree), plus the bytes each stage
writes. Training is one run (``run-1``) for ``--train-epochs`` epochs: an
epoch costs the same whatever the epoch count, and the default's 10 epochs
would take hours at 8,000 clips. Growth exponents are least-squares slopes
of log cost on log clips: 1 is linear. The sandbox's DVC cache type is
``hardlink``, as docs/pipeline.md advises for a big corpus on ext4: repro
then hard-links each output into the cache instead of copying it
(8,000 clips' augmented WAVs are 35 GB). Sizes run one at a time, and each
size's sandbox is deleted once measured.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import yaml

from audioclass import sandbox
from audioclass.audio import to_int16
from pipeline import GIB, PROJECT, benchmark_parser, machine, measure, overrides, write_report

DATA_STAGES = ("check", "extract", "split", "augment", "spectrograms", "raw_vectors", "features")
STAGE_OUTPUTS = {  # what each stage writes, for its disk figure
    "extract": ["data/prepared"],
    "split": ["data/split.csv"],
    "augment": ["data/augmented"],
    "spectrograms": ["data/spectrograms"],
    "raw_vectors": ["data/raw_vectors"],
    "features": ["data/features"],
    "train@run-1": ["models/run-1"],
}
MEMORY_TARGET_GIB = 4.0  # issue 32: peak memory of any stage at 8,000 clips
ROLL_SECONDS, GAIN_STEP_DB = 0.37, 0.5
DEFAULT_EPOCHS = yaml.safe_load((PROJECT / "params.yaml").read_text())["train"]["fit"]["epochs"]


def make_corpus(release: Path, dest: Path, clips: int) -> int:
    """``clips`` clips (a multiple of the release's) from the release's, as the module docstring says; returns the count."""
    originals = sorted(release.glob("*/*.ogg"))
    if clips % len(originals):
        raise SystemExit(f"--sizes: expected multiples of the release's {len(originals)} clips, got {clips}")
    written = 0
    for clip in originals:
        y, sr = sf.read(clip, dtype="float32", always_2d=False)
        fold, source, take = clip.stem.split("-")
        (dest / clip.parent.name).mkdir(parents=True, exist_ok=True)
        for j in range(clips // len(originals)):
            variant = np.roll(y, round(j * ROLL_SECONDS * sr)) * 10 ** (-j * GAIN_STEP_DB / 20) * (-1 if j % 2 else 1)
            name = f"{clip.stem}.wav" if j == 0 else f"{fold}-{source}v{j:02d}-{take}.wav"
            sf.write(dest / clip.parent.name / name, to_int16(variant), sr, subtype="PCM_16")
            written += 1
    return written


def disk_bytes(box: Path, paths: list[str]) -> int:
    total = 0
    for rel in paths:
        path = box / rel
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        total += sum(p.stat().st_size for p in files)
    return total


def measure_size(work: Path, release: Path, clips: int, params: dict, train_epochs: int) -> dict:
    corpus = work / f"corpus-{clips}"
    print(f"{clips} clips: writing the corpus …", flush=True)
    written = make_corpus(release, corpus, clips)
    params = sandbox.merged(params, {"extract": {"source": str(corpus.resolve())}})
    stages = list(DATA_STAGES)
    if train_epochs:
        params = sandbox.merged(
            params, {"train": {"runs": sandbox.Replace({"run-1": {"seed": 1}}), "fit": {"epochs": train_epochs, "patience": train_epochs}}}
        )
        stages += ["tune", "train@run-1"]
    box = sandbox.create(PROJECT, work / f"project-{clips}", params)
    sandbox.dvc(box, "config", "--local", "cache.type", "hardlink")
    dvc = [sys.executable, "-m", "dvc"]
    result = {"clips": written, "stages": {}}
    for stage in stages:
        print(f"  {stage} …", flush=True)
        figures = measure([*dvc, "repro", "-s", stage], box)
        if "Running stage" not in figures.pop("log"):
            raise SystemExit(f"{stage} did not run at {clips} clips")
        figures["disk_gib"] = round(disk_bytes(box, STAGE_OUTPUTS.get(stage, [])) / GIB, 3)
        if stage.startswith("train@"):
            metrics = json.loads((box / "reports/train/run-1.json").read_text())
            figures["epochs"] = metrics["epochs_run"]
        result["stages"][stage] = figures
        wall, cpu, peak, disk = (figures[k] for k in ("wall_s", "cpu_s", "peak_memory_gib", "disk_gib"))
        print(f"    {wall} s wall, {cpu} s CPU, {peak} GiB peak, {disk} GiB written", flush=True)
    result["files"] = {s: int(np.load(box / f"data/spectrograms/{s}/x.npy", mmap_mode="r").shape[0]) for s in ("train", "val", "test")}
    shutil.rmtree(box)
    shutil.rmtree(corpus)
    return result


def exponent(sizes: list[int], values: list[float]) -> float | None:
    """The least-squares slope of log value on log size: cost ∝ size ** slope."""
    if len(sizes) < 2 or min(values) <= 0:
        return None
    return round(float(np.polyfit(np.log(sizes), np.log(values), 1)[0]), 2)


def growth(sizes: dict[int, dict]) -> dict:
    """Per stage and figure: the exponent over the sizes measured."""
    clips = sorted(sizes)
    stages = list(sizes[clips[0]]["stages"])
    return {
        stage: {
            figure: exponent([sizes[n]["clips"] for n in clips], [sizes[n]["stages"][stage][figure] for n in clips])
            for figure in ("wall_s", "cpu_s", "peak_memory_gib", "disk_gib")
        }
        for stage in stages
    }


def projection(sizes: dict[int, dict], exponents: dict, target: int = 50_000) -> dict:
    """Each stage's figures at ``target`` clips: time and disk from the largest size and its exponent (at least
    linear); peak memory from the least-squares line through every size (a fixed part plus a part per clip)."""
    clips = sorted(sizes)
    largest = sizes[clips[-1]]
    out = {}
    for stage, figures in largest["stages"].items():
        out[stage] = {}
        for figure in ("wall_s", "cpu_s", "disk_gib"):
            k = exponents[stage][figure]
            if k is not None:  # a fit below 1 on three points is no promise
                projected = figures[figure] * (target / largest["clips"]) ** max(k, 1.0)
                out[stage][figure] = round(projected, 2 if figure == "disk_gib" else 0)
        if len(clips) > 1:  # a power law under 1 would flatten a part that grows per clip
            peaks = [sizes[n]["stages"][stage]["peak_memory_gib"] for n in clips]
            per_clip, fixed = np.polyfit([sizes[n]["clips"] for n in clips], peaks, 1)
            out[stage]["peak_memory_gib"] = round(float(fixed + max(per_clip, 0.0) * target), 2)
    return out


def markdown(report: dict) -> str:
    sizes = {int(k): v for k, v in report["sizes"].items()}
    clips = sorted(sizes)
    m, epochs = report["machine"], report["train_epochs"]
    lines = [
        "# Scaling benchmark",
        "",
        f"Machine: {m['cpus']} CPUs, {m['memory_gib']} GiB, Python {m['python']}. Command: `{report['command']}`. Date: {report['date']}.",
        "",
        "Corpora made from ESC-10 by deterministic transformations (see `benchmarks/scaling.py`): they are for timing, memory and disk. "
        "**Accuracy is not the point here, and none is reported**: copies of one recording are separate sources to the split.",
        f"Training is one run for {epochs} epoch{'' if epochs == 1 else 's'} (its cost per epoch is what grows); "
        f"a default run's {DEFAULT_EPOCHS} epochs cost {DEFAULT_EPOCHS / max(epochs, 1):g}× that, and six runs 6× more.",
        "",
        "The exponent is the least-squares slope of log figure on log clips: 1 is linear. "
        "Below 1, a fixed cost (starting Python, importing TensorFlow, DVC's own work) still weighs at these sizes. "
        "The projection to 50,000 clips scales the largest size's time and disk by the exponent, "
        "taken as at least 1: a slope under 1 over a few sizes is no promise. "
        "Peak memory is projected along the least-squares line through the sizes, a fixed part plus a part per clip: "
        "for the stages that read `data/augmented`, most of that part is DVC's own tree of its files "
        "(`benchmarks/reports/dvc-tree.md`).",
        "",
        "Files per split (train / val / test): "
        + "; ".join(f"{sizes[n]['clips']:,} clips: {' / '.join(f'{v:,}' for v in sizes[n]['files'].values())}" for n in clips)
        + ".",
        "",
    ]
    for figure, title, unit in (
        ("wall_s", "Wall time", "s"),
        ("cpu_s", "CPU time", "s"),
        ("peak_memory_gib", "Peak memory (summed RSS of the stage's processes)", "GiB"),
        ("disk_gib", "Disk written", "GiB"),
    ):
        lines += [
            f"## {title} ({unit})",
            "",
            "| stage | " + " | ".join(f"{sizes[n]['clips']:,} clips" for n in clips) + " | exponent | 50,000 clips, projected |",
        ]
        lines.append("|---|" + "---:|" * (len(clips) + 2))
        for stage in sizes[clips[0]]["stages"]:
            k = report["growth"][stage][figure]
            projected = report["projection_50000"].get(stage, {}).get(figure)
            cells = " | ".join(f"{sizes[n]['stages'][stage][figure]:g}" for n in clips)
            lines.append(f"| {stage} | {cells} | {'' if k is None else f'{k:.2f}'} | {'' if projected is None else f'{projected:g}'} |")
        lines.append("")
    lines += ["## Targets", "", "| target | measured | met |", "|---|---|---|"]
    for target in report["targets"]:
        lines.append(f"| {target['what']} | {target['measured']} | {'yes' if target['met'] else 'no'} |")
    return "\n".join(lines) + "\n"


def targets(report: dict) -> list[dict]:
    sizes = {int(k): v for k, v in report["sizes"].items()}
    largest = sizes[max(sizes)]
    peak = max(s["peak_memory_gib"] for s in largest["stages"].values())
    slowest = max(
        ((stage, k["wall_s"]) for stage, k in report["growth"].items() if k["wall_s"] is not None),
        key=lambda item: item[1],
        default=(None, None),
    )
    out = [
        {
            "what": f"peak memory of any stage at {largest['clips']:,} clips ≤ {MEMORY_TARGET_GIB:g} GiB",
            "measured": f"{peak} GiB",
            "met": peak <= MEMORY_TARGET_GIB,
        }
    ]
    if slowest[0] is not None:
        out.append(
            {
                "what": "wall time grows at most linearly in clips, every stage (exponent ≤ 1.1: three points, timing noise)",
                "measured": f"largest exponent {slowest[1]:.2f} ({slowest[0]})",
                "met": slowest[1] <= 1.1,
            }
        )
    return out


def main() -> None:
    parser = benchmark_parser(__doc__, "scaling")
    parser.add_argument("--sizes", default="400,2000,8000", help="clips per corpus, comma-separated (multiples of 400)")
    parser.add_argument("--train-epochs", type=int, default=1, help="epochs of the one training run (0: no training)")
    parser.add_argument("--resume", action="store_true", help="keep the sizes the report already holds (same --train-epochs and --set)")
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    params = overrides(args.set)
    sizes = {}
    if args.resume and args.report.with_suffix(".json").is_file():
        kept = json.loads(args.report.with_suffix(".json").read_text())
        if (kept["train_epochs"], kept["params_overrides"]) != (args.train_epochs, params):
            raise SystemExit(f"--resume: {args.report}.json was run with other --train-epochs or --set")
        sizes = {int(n): figures for n, figures in kept["sizes"].items()}
    todo = [clips for clips in (int(s) for s in args.sizes.split(",")) if clips not in sizes]
    for clips in todo:
        sizes[clips] = measure_size(args.work, args.source, clips, params, args.train_epochs)
        write(args, params, dict(sorted(sizes.items())))  # after each size: a long run keeps what it measured
    if not todo:  # --resume with every size measured: render the report again
        write(args, params, dict(sorted(sizes.items())))


def write(args, params: dict, sizes: dict) -> None:
    report = {
        "command": "python benchmarks/scaling.py"
        + f" --sizes {','.join(map(str, sizes))}"
        + f" --train-epochs {args.train_epochs}"
        + "".join(f" --set {a}" for a in args.set),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine(),
        "source": args.source.name,
        "params_overrides": params,
        "train_epochs": args.train_epochs,
        "sizes": sizes,
    }
    report["growth"] = growth(sizes)
    report["projection_50000"] = projection(sizes, report["growth"])
    report["targets"] = targets(report)
    write_report(report, markdown(report), args.report)


if __name__ == "__main__":
    main()

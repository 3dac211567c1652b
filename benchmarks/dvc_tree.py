"""Measure DVC's own memory for a stage whose dependency is a folder of many files.

    python benchmarks/dvc_tree.py                         # → benchmarks/reports/dvc-tree.{json,md}
    python benchmarks/dvc_tree.py --files 8000,40000      # a quicker look

The spectrogram, raw_vectors and features stages depend on ``data/augmented``:
20 WAVs a clip, 160,000 files at 8,000 clips. ``dvc repro`` builds that
folder's tree of hashes in memory before it runs the stage, so part of a
stage's peak memory grows with the file count whatever the stage streams.
This measures that part alone: a DVC project with one stage (``echo``)
whose dependency is a folder of N files of 256 bytes, and the peak RSS of
``dvc repro`` (hashing included, as on a first run). The folder sizes match
the augmented folders of the scaling benchmark's 400, 2,000 and 8,000 clips.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from pipeline import GIB, PROJECT, benchmark_parser, machine, measure, write_report

COPIES_PER_CLIP = yaml.safe_load((PROJECT / "params.yaml").read_text())["augment"]["copies"]  # files in data/augmented per clip


def project_with_folder(root: Path, files: int) -> Path:
    """A git + DVC project whose one stage depends on ``data/files``: ``files`` files in 10 subfolders."""
    root.mkdir(parents=True)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=root, check=True)
    rng = np.random.default_rng(0)
    for i in range(files):
        folder = root / "data/files" / str(i % 10)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:07d}.wav").write_bytes(rng.bytes(256))
    (root / "dvc.yaml").write_text("stages:\n  consume:\n    cmd: echo done > out.txt\n    deps: [data/files]\n    outs: [out.txt]\n")
    return root


def markdown(report: dict) -> str:
    rows = report["sizes"]
    m = report["machine"]
    lines = [
        "# DVC's memory for a dependency folder of many files",
        "",
        f"Machine: {m['cpus']} CPUs, {m['memory_gib']} GiB, Python {m['python']}. Command: `{report['command']}`. Date: {report['date']}.",
        "",
        "`dvc repro` of one stage (`echo`) whose dependency is a folder of N files of 256 bytes: "
        "DVC's peak RSS, which a pipeline stage's peak includes. "
        f"N = {COPIES_PER_CLIP} × clips, the size of `data/augmented`.",
        "",
        "| files | clips at 20 copies | wall s | peak GiB |",
        "|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(f"| {row['files']:,} | {row['files'] // COPIES_PER_CLIP:,} | {row['wall_s']} | {row['peak_memory_gib']} |")
    slope = report["kib_per_file"]
    lines += [
        "",
        f"Least-squares line: {report['base_gib']} GiB + {slope} KiB per file "
        f"({slope * COPIES_PER_CLIP:.0f} KiB per clip at {COPIES_PER_CLIP} copies). "
        f"At 50,000 clips ({50_000 * COPIES_PER_CLIP:,} files): {report['projection_50000_gib']} GiB.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = benchmark_parser(__doc__, "dvc-tree")
    parser.add_argument("--files", default="8000,40000,160000", help="files in the dependency folder, comma-separated")
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    rows = []
    for files in (int(n) for n in args.files.split(",")):
        print(f"{files} files …", flush=True)
        root = project_with_folder(args.work / str(files), files)
        figures = measure([sys.executable, "-m", "dvc", "repro"], root)
        rows.append({"files": files, "wall_s": figures["wall_s"], "peak_memory_gib": figures["peak_memory_gib"]})
        shutil.rmtree(root)
    slope, base = np.polyfit([r["files"] for r in rows], [r["peak_memory_gib"] for r in rows], 1)
    report = {
        "command": f"python benchmarks/dvc_tree.py --files {args.files}",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine(),
        "sizes": rows,
        "base_gib": round(float(base), 3),
        "kib_per_file": round(float(slope) * GIB / 1024, 2),
        "projection_50000_gib": round(float(base + slope * 50_000 * COPIES_PER_CLIP), 2),
    }
    write_report(report, markdown(report), args.report)


if __name__ == "__main__":
    main()

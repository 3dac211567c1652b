"""Check the aiSFX port against the reference implementation's embeddings, and measure its cost.

    /tmp/aisfx-ref/bin/python tools/convert_aisfx.py --esc10 ../shared/datasets/ESC-10   # once: the references
    python benchmarks/aisfx_port.py                   # → benchmarks/reports/aisfx-port.{json,md}, under a minute

``tools/convert_aisfx.py`` ran aiSFX's own code (PyTorch, Essentia) on 20
ESC-10 clips, two per class, written as 44.1 kHz WAVs, and stored every
block's embedding. This benchmark embeds the same WAVs with the port
(:mod:`audioclass.aisfx`) and reports the largest absolute and relative
difference and the least cosine similarity per block, with the vendored
float32 weights and with the same weights rounded to float16. Then the cost:
wall seconds per 5 s clip through ``embeddings.embed_clip`` (one process,
after a warm-up), and the weights file's size.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from audioclass import aisfx, embeddings
from pipeline import PROJECT, machine, write_report

TOLERANCE = 1e-4  # largest difference, relative to the block's largest value, that counts as equal


def compare(port: np.ndarray, reference: np.ndarray) -> dict:
    scale = np.abs(reference).max(axis=1, keepdims=True)
    cosine = (port * reference).sum(axis=1) / (np.linalg.norm(port, axis=1) * np.linalg.norm(reference, axis=1))
    return {
        "max_abs": float(np.abs(port - reference).max()),
        "max_relative": float((np.abs(port - reference) / scale).max()),
        "min_cosine": float(cosine.min()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--references", type=Path, default=PROJECT / "benchmarks/work/aisfx", help="tools/convert_aisfx.py's output")
    parser.add_argument("--report", type=Path, default=PROJECT / "benchmarks/reports/aisfx-port", help="report path without suffix")
    args = parser.parse_args()
    if not (args.references / "reference.npz").is_file():
        raise SystemExit(f"{args.references / 'reference.npz'}: missing; run tools/convert_aisfx.py first (its docstring)")
    weights = embeddings.weights_file(embeddings.BACKENDS["aisfx"])
    arrays = aisfx.load_arrays(weights)
    half = {k: v if k == "mel_filters" else v.astype(np.float16).astype(np.float32) for k, v in arrays.items()}
    models = {"float32": (arrays, aisfx.network(arrays)), "float16": (half, aisfx.network(half))}
    clips = {}
    with np.load(args.references / "reference.npz") as references:
        for name in references.files:
            y, sr = sf.read(args.references / f"{name}.wav", dtype="float32")
            assert sr == aisfx.SAMPLE_RATE
            clips[name] = {dtype: compare(aisfx.block_embeddings(y, *m), references[name]) for dtype, m in models.items()}
    worst = {
        dtype: {
            k: (min if k == "min_cosine" else max)(c[dtype][k] for c in clips.values()) for k in ("max_abs", "max_relative", "min_cosine")
        }
        for dtype in models
    }

    y, sr = sf.read(args.references / f"{next(iter(clips))}.wav", dtype="float32", frames=5 * aisfx.SAMPLE_RATE)
    embeddings.embed_clip(y, sr, "aisfx")  # warm-up: the weights load and Keras builds once per process
    start = time.perf_counter()
    for _ in range(20):
        embeddings.embed_clip(y, sr, "aisfx")
    seconds = (time.perf_counter() - start) / 20
    report = {
        "command": "python benchmarks/aisfx_port.py",
        "machine": machine(),
        "clips": clips,
        "worst": worst,
        "tolerance": TOLERANCE,
        "seconds_per_clip": round(seconds, 4),
        "weights_mib": round(weights.stat().st_size / 2**20, 2),
    }
    lines = [
        "# aiSFX port against the reference implementation",
        "",
        f"Machine: {report['machine']['cpus']} CPUs. Command: `{report['command']}`. References: aisfx 0.1.2 with PyTorch "
        f"and Essentia on {len(clips)} ESC-10 clips (two per class), every 2.3 s block, by `tools/convert_aisfx.py`.",
        "",
        "| weights | largest absolute difference | largest difference / block's largest value | least cosine similarity | equal within "
        f"{TOLERANCE:g} |",
        "|---|---:|---:|---:|---|",
    ]
    for dtype, w in worst.items():
        equal = "yes" if w["max_relative"] <= TOLERANCE else "no"
        lines.append(f"| {dtype} | {w['max_abs']:.2e} | {w['max_relative']:.2e} | {w['min_cosine']:.8f} | {equal} |")
    lines += [
        "",
        f"Cost: {seconds:.3f} s of wall time per 5 s clip, one process after a warm-up; the vendored float32 weights take "
        f"{report['weights_mib']} MiB in the package.",
    ]
    write_report(report, "\n".join(lines) + "\n", args.report)


if __name__ == "__main__":
    main()

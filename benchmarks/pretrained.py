"""Benchmark the pretrained members' settings on the project's own split, by validation only.

    python benchmarks/pretrained.py                 # embed.copies 1, 2, 3, 4, 6 → benchmarks/reports/pretrained.{json,md}
    python benchmarks/pretrained.py --copies 1,2    # fewer settings, quicker

Needs the project's finished ``dvc repro`` (``data/augmented`` and
``data/spectrograms``). It embeds each training clip's first ``max(copies)``
copies once, with the embed stage's own code, under ``--work``. Then, for each
``embed.copies`` value, it fits the head stage's head (``head.C`` chosen on
validation, no refit) on that many copies per clip. Each value is scored on
validation: every file (what the ensemble's weights are fitted on) and the
original recordings (what a new clip is, and what test holds). Differences
against ``embed.copies: 1`` are paired by validation clip, with the standard
error over clips. Test is shown for context and chooses nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import yaml

from audioclass.config import stage_config
from audioclass.dataset import Split, load_data
from audioclass.embeddings import EmbedConfig, embed
from audioclass.heads import HeadConfig, fit_head
from audioclass.parallel import default_jobs

PROJECT = Path(__file__).resolve().parents[1]


def correct_by_clip(correct: np.ndarray, index) -> np.ndarray:
    """Each validation clip's share of correctly classified files."""
    return index.assign(correct=correct).groupby("clip_id", sort=True)["correct"].mean().to_numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", default="1,2,3,4,6", help="embed.copies values to compare, comma-separated")
    parser.add_argument("--work", type=Path, default=PROJECT / "benchmarks/work/pretrained", help="scratch folder for the embeddings")
    parser.add_argument("--report", type=Path, default=PROJECT / "benchmarks/reports/pretrained", help="report path without suffix")
    args = parser.parse_args()
    copies = sorted({int(c) for c in args.copies.split(",")})
    params = yaml.safe_load((PROJECT / "params.yaml").read_text())
    embed_cfg, head_cfg = stage_config(EmbedConfig, params, "embed"), stage_config(HeadConfig, params, "head")
    model = embed_cfg.models[0] if embed_cfg.models else "birdnet"
    start = time.perf_counter()
    embed(
        PROJECT / "data/augmented",
        PROJECT / "data/spectrograms",
        dataclasses.replace(embed_cfg, copies=max(copies)),
        model,
        args.work / model,
        jobs=default_jobs(),
        test_copies="all",  # every validation file: the rows this benchmark scores copies on
    )
    embed_seconds = time.perf_counter() - start
    data = load_data(args.work / model)
    original = data.val.index["copy"].to_numpy() == 0
    results, reference = {}, None
    for k in copies:
        keep = data.train.index["copy"].to_numpy() < k
        train = Split(data.train.x[keep], data.train.index[keep].reset_index(drop=True))
        head = fit_head(dataclasses.replace(data, train=train), head_cfg.C, refit=False)
        correct = head.validated.probabilities(data.val.x).argmax(axis=1) == data.val.y
        by_clip = correct_by_clip(correct, data.val.index)
        reference = by_clip if reference is None else reference
        diff = by_clip - reference
        results[k] = {
            "train_files": int(keep.sum()),
            "C": head.c,
            "val_file_accuracy": float(correct.mean()),
            "val_original_accuracy": float(correct[original].mean()),
            "val_file_difference_vs_1": float(diff.mean()),
            "val_file_difference_se": float(diff.std(ddof=1) / np.sqrt(len(diff))),
            "test_clip_accuracy": float((head.final.probabilities(data.test.x).argmax(axis=1) == data.test.y).mean()),
        }
    report = {
        "command": "python benchmarks/pretrained.py" + (f" --copies {args.copies}" if args.copies != "1,2,3,4,6" else ""),
        "model": model,
        "val_clips": int(len(reference)),
        "embed_seconds_all_copies": round(embed_seconds, 1),
        "copies": results,
    }
    pct = lambda v: f"{100 * v:.2f} %"  # noqa: E731
    lines = [
        f"# Pretrained members: `embed.copies` for `{model}`, on validation",
        "",
        f"Command: `{report['command']}`. The project's split: {report['val_clips']} validation clips, every copy of each. "
        f"Embedding every file once ({max(copies)} training copies per clip) took {embed_seconds:.0f} s. Test chose nothing.",
        "",
        "| embed.copies | training files | C chosen | validation, files | difference vs 1 (± SE over clips) | "
        "validation, originals | test clips (context) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for k, r in results.items():
        lines.append(
            f"| {k} | {r['train_files']} | {r['C']:g} | {pct(r['val_file_accuracy'])} | "
            f"{100 * r['val_file_difference_vs_1']:+.2f} ± {100 * r['val_file_difference_se']:.2f} | "
            f"{pct(r['val_original_accuracy'])} | {pct(r['test_clip_accuracy'])} |"
        )
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    args.report.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

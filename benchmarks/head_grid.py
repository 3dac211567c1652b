"""Two more levers for the pretrained heads: a wider C grid, and more augmented copies of each training clip.

    python benchmarks/head_grid.py    # after `dvc repro augment`; → benchmarks/reports/head-grid.{json,md}

The heads of ``benchmarks/head_probe.py``'s choice (BirdNET and aiSFX side by
side, and aiSFX alone, the licence-clean one; both pooled ``mean_std``) are
trained as the pipeline trains them, per official fold, four ways:

- the grid ``head.C`` in params.yaml, or that grid with 3 and 10 added (the
  top of today's grid, 1, is chosen on most folds);
- on each training clip's original and first copy (``embed.copies: 2``), or
  its original and first three copies (``embed.copies: 4``).

Each head's ``C`` is chosen within training, as the head stage does;
validation's originals are the score and test is context. It reuses
head_probe's vectors of the originals and first copies
(``benchmarks/work/head-probe/vectors.npz``) and embeds the second and third
copies once (``benchmarks/work/head-grid/vectors.npz``). The rule that decides
is rule 5 in docs/benchmarks.md.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from audioclass.config import load_params, stage_config
from audioclass.heads import HeadConfig
from audioclass.parallel import default_jobs, parallel_map
from audioclass.splits import SplitConfig, assign_splits
from audioclass.tables import read_table
from head_probe import BACKENDS, candidates, decide, embed_corpus, score, summarise, verdict_table
from pipeline import PROJECT, benchmark_parser, machine, write_report

INPUTS = {"joint/mean_std": "birdnet+aisfx", "aisfx/mean_std": "aisfx (licence-clean)"}
WIDER = (3.0, 10.0)
COPIES = (2, 4)


def vectors_of(manifest: pd.DataFrame, work, probe_work) -> tuple[pd.DataFrame, dict[str, np.ndarray], float]:
    """Every clip's original and first three copies, in (clip, copy) order, with each backend's window vectors."""
    parts, vectors, minutes = [], {b: [] for b in BACKENDS}, 0.0
    for copies, cache in (((0, 1), probe_work / "vectors.npz"), ((2, 3), work / "vectors.npz")):
        files = manifest[manifest["copy"].isin(copies)].sort_values(["clip_id", "copy"]).reset_index(drop=True)
        found, spent = embed_corpus(files, cache)
        parts.append(files)
        minutes += spent
        for b in BACKENDS:
            vectors[b].append(found[b])
    files = pd.concat(parts, ignore_index=True)
    order = files.sort_values(["clip_id", "copy"]).index.to_numpy()
    return files.iloc[order].reset_index(drop=True), {b: np.concatenate(v)[order] for b, v in vectors.items()}, minutes


def main() -> None:
    parser = benchmark_parser(__doc__, "head-grid")
    args = parser.parse_args()
    params = load_params(PROJECT / "params.yaml")
    clips = read_table(PROJECT / "data/prepared/metadata.csv")
    manifest = pd.read_csv(PROJECT / "data/augmented/manifest.csv")
    files, vectors, embed_minutes = vectors_of(manifest, args.work, PROJECT / "benchmarks/work/head-probe")
    inputs = {name: x for name, x in candidates(vectors).items() if name in INPUTS}
    n_classes = int(clips["label"].max()) + 1
    grid = tuple(stage_config(HeadConfig, params, "head").C)
    grids = {"C ≤ 1": grid, "C ≤ 10": tuple(sorted(set(grid) | set(WIDER)))}

    tasks, jobs = [], []
    for k in sorted(int(k) for k in clips["fold"].unique()):
        cfg = stage_config(SplitConfig, {"split": {**params["split"], "strategy": "folds", "test_fold": k}}, "split")
        split = clips.assign(split=assign_splits(clips, cfg).to_numpy())
        rows = files.drop(columns=["split"], errors="ignore").merge(split[["clip_id", "split"]], on="clip_id")
        for copies in COPIES:
            kept = ((rows["split"] != "train") & (rows["copy"] == 0)) | ((rows["split"] == "train") & (rows["copy"] < copies))
            for name, x in inputs.items():
                for label, cs in grids.items():
                    tasks.append((k, name, f"{label}, copies {copies}"))
                    jobs.append(((name, x[kept.to_numpy()], rows[kept].reset_index(drop=True)), cs))
    scores = parallel_map(lambda job: score(job[0], n_classes=n_classes, cs=job[1]), jobs, jobs=default_jobs(), desc="heads", unit="head")
    folds: dict = {}
    for (k, name, variant), result in zip(tasks, scores):
        for part in ("val", "test"):
            del result[part]["probabilities"]
        folds.setdefault(name, {}).setdefault(k, {})[variant] = result
    variants = list(dict.fromkeys(v for _, _, v in tasks))
    summary = {name: {v: summarise([by_fold[k][v] for k in by_fold]) for v in variants} for name, by_fold in folds.items()}
    decisions = {name: decide(by_fold, variants[0], variants) for name, by_fold in folds.items()}
    report = {"machine": machine(), "files": len(files), "embed_minutes": embed_minutes, "grids": grids}
    report |= {"folds": folds, "summary": summary, "decisions": decisions}
    write_report(report, markdown(report), args.report)


def markdown(report: dict) -> str:
    lines = [
        "# The pretrained heads: a wider C grid, more augmented copies",
        "",
        f"Machine: {report['machine']['cpus']} CPUs. Command: `python benchmarks/head_grid.py`. "
        f"{report['files']} files (each clip's original and first three copies); the second and third copies embedded "
        f"in {report['embed_minutes']:g} min. Each head's C chosen by log-loss within the training clips; validation "
        "chose nothing. Rule 5 in docs/benchmarks.md decides, on validation's originals; test is context. "
        "Pretrained on outside data: BirdNET (CC BY-NC-SA 4.0), aiSFX (CC BY 4.0).",
    ]
    for name in INPUTS:
        variants, decision = report["summary"][name], report["decisions"][name]
        lines += [
            "",
            f"## {INPUTS[name]} (`{name}`): chosen **{decision['chosen']}**",
            "",
            *verdict_table(variants, decision, "variant", "C per fold"),
        ]
    lines += ["", "Means ± SE over the five folds. Today: the first row (`head.C` as in params.yaml, `embed.copies: 2`)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

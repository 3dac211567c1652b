"""BirdNET's windows closer together for the default head.

    python benchmarks/head_windows.py   # after `benchmarks/head_probe.py`; → benchmarks/reports/head-windows.{json,md}

BirdNET reads 3 s windows. The embed stage takes them 3 s apart, plus one
ending at the clip's end: a 5 s clip gives 0–3 s and 2–5 s, and a sound that
straddles 3 s is cut in both. Each file of head_probe's (each clip's original
and first copy) is embedded once more for each candidate, by the embed stage's
own ``windows`` with another ``hop_seconds``
(``benchmarks/work/head-windows/vectors.npz``, reused when present):

- ``today``: 3 s apart, which must equal head_probe's vectors;
- ``1 s``: 1 s apart (0–3, 1–4 and 2–5 s);
- ``0.5 s``: 0.5 s apart (five windows from 0 to 2 s).

A 5 s clip resampled to 48 kHz is one sample longer than 5 s, so each also gets
the window ending at its end, one sample after the last.

Each is pooled ``mean_std_max`` beside aiSFX's vectors as today, into head_classifier's logistic regression, ``C``
chosen within training; validation's originals are the score, test is context, and rule 9 in docs/benchmarks.md
decides. The embedding's time is measured per window.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from audioclass import audio
from audioclass.embeddings import backend, embedder, windows
from head_classifier import fold_scores, probe_corpus
from head_layers import embed_cached, pooled
from head_probe import decide, summarise, verdict_table
from pipeline import PROJECT, benchmark_parser, machine, write_report

CANDIDATES = {"today": 3.0, "1 s": 1.0, "0.5 s": 0.5}  # seconds between BirdNET's windows


def hop_vectors(paths: list[str]) -> list[dict[str, np.ndarray]]:
    """WAVs → each one's BirdNET vectors, (n_windows, 1024), per candidate."""
    backends = {name: dataclasses.replace(backend("birdnet"), hop_seconds=hop) for name, hop in CANDIDATES.items()}
    embed = embedder("birdnet")
    rows = []
    for path in paths:
        y, sr = audio.read_wav(PROJECT / "data/augmented" / path)
        y = audio.resample(y, sr, backend("birdnet").sample_rate)
        rows.append({name: embed(windows(y, b)) for name, b in backends.items()})
    return rows


def main() -> None:
    parser = benchmark_parser(__doc__, "head-windows")
    args = parser.parse_args()
    params, clips, files, vectors = probe_corpus()
    birdnet = embed_cached(files, PROJECT / "benchmarks/work/head-windows/vectors.npz", hop_vectors, "BirdNET")
    seconds_per_window = float(birdnet.pop("core_seconds")) / sum(v.shape[0] * v.shape[1] for v in birdnet.values())
    agreement = float(np.abs(birdnet["today"] - vectors["birdnet"]).max())
    assert agreement < 1e-4, f"today's windows differ from the embed stage's by {agreement}"
    aisfx = pooled(vectors["aisfx"])
    inputs = {name: np.concatenate([pooled(birdnet[name]), aisfx], axis=1) for name in CANDIDATES}
    widths = [inputs["today"].shape[1] - aisfx.shape[1], aisfx.shape[1]]
    folds = fold_scores(params, clips, files, {("joint", name): (x, widths) for name, x in inputs.items()})["joint"]
    summary = {name: summarise([folds[k][name] for k in folds]) for name in CANDIDATES}
    decision = decide(folds, "today", list(CANDIDATES))
    windows_per_clip = {name: int(v.shape[1]) for name, v in birdnet.items()}
    report = {"machine": machine(), "files": len(files), "agreement": agreement, "seconds_per_window": round(seconds_per_window, 4)}
    report |= {"windows_per_clip": windows_per_clip, "folds": folds, "summary": summary, "decision": decision}
    write_report(report, markdown(report), args.report)


def markdown(report: dict) -> str:
    per_window = report["seconds_per_window"]
    lines = [
        "# BirdNET's windows for the default head",
        "",
        f"Machine: {report['machine']['cpus']} CPUs. Command: `python benchmarks/head_windows.py`. "
        f"{report['files']} files (each clip's original and first copy), embedded with BirdNET once per candidate; "
        f"today's windows equal the embed stage's vectors within {report['agreement']:.1e}. A window took {per_window:.3f} s "
        "on one core. The head reads BirdNET's windows and aiSFX's blocks, each pooled `mean_std_max`; its C chosen by "
        "log-loss within the training clips; validation chose nothing. Rule 9 in docs/benchmarks.md decides, on "
        "validation's originals; test is context. Pretrained on outside data: BirdNET (CC BY-NC-SA 4.0), aiSFX (CC BY 4.0).",
        "",
        "Windows per 5 s clip, and BirdNET's seconds a clip on one core: "
        + ", ".join(f"{name} {n} ({n * per_window:.2f} s)" for name, n in report["windows_per_clip"].items())
        + ".",
        "",
        f"## birdnet+aisfx (default): chosen **{report['decision']['chosen']}**",
        "",
        *verdict_table(report["summary"], report["decision"], "BirdNET windows apart", "C per fold"),
        "",
        "Means ± SE over the five folds.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

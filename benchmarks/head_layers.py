"""aiSFX's earlier layers and denser blocks as the pretrained heads' input.

    python benchmarks/head_layers.py   # after `benchmarks/head_probe.py`; → benchmarks/reports/head-layers.{json,md}

aiSFX's embedding is its last block's 512 channels, averaged over frequency and
maximised over time, for each 2.3 s block of a clip; blocks start 50 frames
(1.2 s) apart. A network trained on sound-effects libraries may keep what
tells ESC-10's classes apart in earlier layers, and three blocks are few to
pool over. The candidates, each pooled over a clip's blocks as
``embed.pooling: mean_std_max`` pools:

- ``today``: the embed stage's input;
- ``+b3``: the third block's 256 channels (its second convolution, before its
  pooling), averaged and maximised as the last block's are, beside them;
- ``+b2b3``: the second block's 128 channels and the third's, beside them;
- ``dense``: today's values from blocks 25 frames (0.6 s) apart.

Every file of head_probe's (each clip's original and first copy) goes through
the port once more (``aisfx.network`` reading blocks 2 to 4, the
``aisfx-layers`` backend's network), every layer read from the one pass
(``benchmarks/work/head-layers/vectors.npz``, reused when present); today's
values must equal head_probe's, which the embed stage's code made. The heads
are head_classifier's logistic regression, ``C`` chosen within training;
validation's originals are the score, test is context, and rule 7 in
docs/benchmarks.md decides, for the joint head (BirdNET beside aiSFX) and the
licence-clean one (aiSFX alone) apart.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from audioclass import aisfx, audio
from audioclass.embeddings import backend, weights_file, windows
from audioclass.parallel import default_jobs, parallel_map
from head_classifier import INPUTS, fold_scores, probe_corpus
from head_probe import decide, summarise, verdict_table
from pipeline import PROJECT, benchmark_parser, machine, write_report

CHUNK = 40  # files a worker embeds with one model
DENSE_HOP = 25  # frames between dense blocks: 0.6 s
CANDIDATES = {"today": ("b4",), "+b3": ("b3", "b4"), "+b2b3": ("b2", "b3", "b4"), "dense": ("dense",)}
READ = {"b2": slice(0, 128), "b3": slice(128, 384), "b4": slice(384, 896)}  # aisfx.network(arrays, (2, 3, 4))'s columns


def layer_vectors(paths: list[str]) -> list[dict[str, np.ndarray]]:
    """WAVs → each one's vectors per block of each layer, (n_blocks, channels), and the last layer's from dense
    blocks; the network built once for them all."""
    arrays = aisfx.load_arrays(weights_file(backend("aisfx")))
    model = aisfx.network(arrays, (2, 3, 4))
    return [file_vectors(path, model, arrays["mel_filters"]) for path in paths]


def file_vectors(path: str, model, mel_filters: np.ndarray) -> dict[str, np.ndarray]:
    y, sr = audio.read_wav(PROJECT / "data/augmented" / path)
    specs = [aisfx.spectrogram(w, mel_filters) for w in windows(audio.resample(y, sr, aisfx.SAMPLE_RATE), backend("aisfx"))]
    layers = np.asarray(model(np.concatenate([aisfx.blocks(s) for s in specs])[..., np.newaxis], training=False), np.float32)
    dense = np.stack([s[i : i + aisfx.BLOCK] for s in specs for i in range(0, len(s) - aisfx.BLOCK + 1, DENSE_HOP)])
    dense = np.asarray(model(dense[..., np.newaxis], training=False), np.float32)[:, READ["b4"]]
    return {layer: layers[:, columns] for layer, columns in READ.items()} | {"dense": dense}


def embed_cached(files: pd.DataFrame, cache: Path, embed_chunk: Callable, desc: str) -> dict[str, np.ndarray]:
    """Each file's arrays from ``embed_chunk`` (WAV paths → one dict of arrays a file, the model opened once a
    chunk), stacked in the order of ``files`` as ``{name: (n_files, …)}``, with ``core_seconds``, the embedding's wall
    time times its workers; from ``cache`` when it holds the same files."""
    if cache.exists():
        with np.load(cache, allow_pickle=False) as f:
            if list(f["paths"]) == files["path"].tolist():
                return {name: f[name] for name in f.files if name != "paths"}
    paths = files["path"].tolist()
    chunks = [paths[i : i + CHUNK] for i in range(0, len(paths), CHUNK)]
    jobs, start = default_jobs(), time.monotonic()
    rows = [r for chunk in parallel_map(embed_chunk, chunks, jobs=jobs, desc=desc, unit="chunk") for r in chunk]
    arrays = {name: np.stack([r[name] for r in rows]) for name in rows[0]}
    arrays["core_seconds"] = np.float64((time.monotonic() - start) * jobs)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, paths=files["path"].to_numpy(str), **arrays)
    return arrays


def embed_layers(files: pd.DataFrame) -> dict[str, np.ndarray]:
    """``{layer: (n_files, n_blocks, channels)}`` in the order of ``files``."""
    return embed_cached(files, PROJECT / "benchmarks/work/head-layers/vectors.npz", layer_vectors, "aiSFX layers")


def pooled(v: np.ndarray) -> np.ndarray:
    """(n_files, n_blocks, channels) → (n_files, 3 × channels): mean, standard deviation and maximum over the blocks."""
    return np.concatenate([v.mean(axis=1), v.std(axis=1), v.max(axis=1)], axis=1)


def main() -> None:
    parser = benchmark_parser(__doc__, "head-layers")
    args = parser.parse_args()
    params, clips, files, vectors = probe_corpus()
    layers = embed_layers(files)
    agreement = float(np.abs(layers["b4"] - vectors["aisfx"]).max())
    assert agreement < 1e-4, f"the layer network's output differs from the embed stage's by {agreement}"
    birdnet = pooled(vectors["birdnet"])
    inputs = {}
    for name, parts in CANDIDATES.items():
        x = np.concatenate([pooled(layers[layer]) for layer in parts], axis=1)
        inputs["joint", name] = (np.concatenate([birdnet, x], axis=1), [birdnet.shape[1], x.shape[1]])
        inputs["aisfx", name] = (x, [x.shape[1]])
    folds = fold_scores(params, clips, files, inputs)
    summary = {head: {n: summarise([by_fold[k][n] for k in by_fold]) for n in CANDIDATES} for head, by_fold in folds.items()}
    decisions = {head: decide(by_fold, "today", list(CANDIDATES)) for head, by_fold in folds.items()}
    widths = {name: int(inputs["aisfx", name][0].shape[1]) for name in CANDIDATES}
    report = {"machine": machine(), "files": len(files), "aisfx_values": widths, "agreement": agreement, "folds": folds}
    report |= {"summary": summary, "decisions": decisions}
    write_report(report, markdown(report), args.report)


def markdown(report: dict) -> str:
    lines = [
        "# aiSFX's layers and blocks as the heads' input",
        "",
        f"Machine: {report['machine']['cpus']} CPUs. Command: `python benchmarks/head_layers.py`. "
        f"{report['files']} files (each clip's original and first copy). Today's aiSFX values from this pass equal the "
        f"embed stage's within {report['agreement']:.1e}. Each head's C chosen by log-loss within the training clips; "
        "validation chose nothing. Rule 7 in docs/benchmarks.md decides, on validation's originals; test is context. "
        "Pretrained on outside data: BirdNET (CC BY-NC-SA 4.0), aiSFX (CC BY 4.0).",
        "",
        "aiSFX's values per clip: " + ", ".join(f"{name} {n:,}" for name, n in report["aisfx_values"].items()) + ".",
    ]
    for head, title in INPUTS.items():
        decision = report["decisions"][head]
        lines += [
            "",
            f"## {title} (`{head}`, `mean_std_max`): chosen **{decision['chosen']}**",
            "",
            *verdict_table(report["summary"][head], decision, "aiSFX input", "C per fold"),
        ]
    lines += ["", "Means ± SE over the five folds. Today: the embed stage's aiSFX values, blocks 50 frames apart."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

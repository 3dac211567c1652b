"""SoundNet's layers beside the pretrained heads' models.

    python benchmarks/head_soundnet.py   # after `benchmarks/head_layers.py`; → benchmarks/reports/head-soundnet.{json,md}

SoundNet (Aytar, Vondrick and Torralba, NeurIPS 2016; MIT) learnt from two
million unlabelled videos, its teachers image networks, not labels of sound.
What it hears may differ from what BirdNET (birds) and aiSFX (sound-effects
libraries) hear. Each file of head_probe's (each clip's original and first
copy) goes through the port once (``soundnet.network`` reading its fifth,
sixth and seventh layers; ``benchmarks/work/head-soundnet/vectors.npz``,
reused when present). The candidates, beside each head's input today, each
layer pooled over a clip's frames as ``embed.pooling: mean_std_max`` pools:

- ``+sn7``: the seventh layer's 1,024 channels (a frame per 1.5 s);
- ``+sn567``: the fifth's (after pooling) 256, the sixth's 512 and the seventh's.

The heads are head_classifier's logistic regression, ``C`` chosen within
training; validation's originals are the score, test is context, and rule 8
in docs/benchmarks.md decides, for the joint head (BirdNET beside aiSFX) and
the licence-clean one (aiSFX's layers) apart. SoundNet alone is context.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from audioclass import audio
from head_classifier import fold_scores, probe_corpus
from head_layers import embed_cached, embed_layers, pooled
from head_probe import decide, summarise, verdict_table
from pipeline import PROJECT, benchmark_parser, machine, write_report

WEIGHTS = PROJECT / "benchmarks/work/soundnet/soundnet.npz"  # tools/convert_soundnet.py's output
SAMPLE_RATE = 22_050
SCALE = 256.0  # the original's input range: 24-bit samples × 2⁻²³
BN_EPS = 1e-5  # Torch's, kept by the TensorFlow conversion
# The eight-layer model's first seven: (name, channels, kernel, stride, padding, max pooling after it)
LAYERS = (
    ("conv1", 16, 64, 2, 32, 8),
    ("conv2", 32, 32, 2, 16, 8),
    ("conv3", 64, 16, 2, 8, None),
    ("conv4", 128, 8, 2, 4, None),
    ("conv5", 256, 4, 2, 2, 4),
    ("conv6", 512, 4, 2, 2, None),
    ("conv7", 1024, 4, 2, 2, None),
)
READ = ("conv5", "conv6", "conv7")
CANDIDATES = {"today": (), "+sn7": ("conv7",), "+sn567": READ}
HEADS = {
    "joint": "birdnet+aisfx (default)",
    "clean": "aisfx-layers (licence-clean)",
    "soundnet": "SoundNet alone",
}


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    assert path.exists(), f"{path}: missing; run tools/convert_soundnet.py first"
    with np.load(path, allow_pickle=False) as f:
        return {name: f[name] for name in f.files}


def network(arrays: dict[str, np.ndarray], read: tuple[str, ...]):
    """SoundNet's first seven layers in Keras, batch norm folded into each convolution: (batch, n_samples, 1)
    waveforms, already scaled by :data:`SCALE`, → the layers in ``read`` (after their ReLU and pooling), each
    (batch, frames, channels)."""
    import keras

    x = inputs = keras.Input((None, 1))
    layers, outputs = [], {}
    for name, channels, kernel, stride, padding, pool in LAYERS:
        x = keras.layers.ZeroPadding1D(padding)(x)
        conv = keras.layers.Conv1D(channels, kernel, strides=stride, activation="relu", name=name)
        x = conv(x)
        layers.append(conv)
        if pool:
            x = keras.layers.MaxPooling1D(pool)(x)
        outputs[name] = x
    model = keras.Model(inputs, [outputs[name] for name in read], name="soundnet")
    for conv in layers:
        scale = arrays[f"{conv.name}.gamma"] / np.sqrt(arrays[f"{conv.name}.var"] + BN_EPS)
        bias = (arrays[f"{conv.name}.biases"] - arrays[f"{conv.name}.mean"]) * scale + arrays[f"{conv.name}.beta"]
        conv.set_weights([arrays[f"{conv.name}.weights"] * scale, bias])
    return model


def frames(y: np.ndarray, model) -> list[np.ndarray]:
    """y : (n_samples,) float32 at 22,050 Hz → each read layer's (n_frames, channels) float32."""
    out = model(np.asarray(y, np.float32)[np.newaxis, :, np.newaxis] * SCALE, training=False)
    return [np.asarray(o[0], np.float32) for o in out]


def reference_layers(y: np.ndarray, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The same layers by SoundNet-tensorflow's own sequence of operations, run in TensorFlow 2: the waveform as an
    image one pixel wide, explicit padding, 2D convolution, batch norm unfolded, ReLU, max pooling. Its code (Python 2,
    TensorFlow 0.12) no longer runs; this checks the folding and the 1D layout of :func:`network`."""
    import tensorflow as tf

    x, out = tf.constant(np.asarray(y, np.float32)[np.newaxis, :, np.newaxis, np.newaxis] * SCALE), {}
    for name, _, _, stride, padding, pool in LAYERS:
        x = tf.pad(x, [[0, 0], [padding, padding], [0, 0], [0, 0]])
        x = tf.nn.conv2d(x, arrays[f"{name}.weights"][:, np.newaxis], [1, stride, 1, 1], "VALID") + arrays[f"{name}.biases"]
        bn = [arrays[f"{name}.{p}"] for p in ("mean", "var", "beta", "gamma")]
        x = tf.nn.relu(tf.nn.batch_normalization(x, *bn, BN_EPS))
        if pool:
            x = tf.nn.max_pool2d(x, [pool, 1], [pool, 1], "VALID")
        out[name] = np.asarray(x[0, :, 0], np.float32)
    return out


def port_agreement(files: pd.DataFrame, arrays: dict[str, np.ndarray]) -> float:
    """The largest difference between :func:`network` and :func:`reference_layers` on the first four files, relative
    to each layer's largest value."""
    model, worst = network(arrays, READ), 0.0
    for path in files["path"].head(4):
        y, sr = audio.read_wav(PROJECT / "data/augmented" / path)
        y = audio.resample(y, sr, SAMPLE_RATE)
        reference = reference_layers(y, arrays)
        for layer, ported in zip(READ, frames(y, model)):
            worst = max(worst, float(np.abs(ported - reference[layer]).max() / np.abs(reference[layer]).max()))
    return worst


def layer_frames(paths: list[str]) -> list[dict[str, np.ndarray]]:
    """WAVs → each one's (n_frames, channels) per read layer; the network built once for them all."""
    model = network(load_arrays(WEIGHTS), READ)
    rows = []
    for path in paths:
        y, sr = audio.read_wav(PROJECT / "data/augmented" / path)
        rows.append(dict(zip(READ, frames(audio.resample(y, sr, SAMPLE_RATE), model))))
    return rows


def main() -> None:
    parser = benchmark_parser(__doc__, "head-soundnet")
    args = parser.parse_args()
    params, clips, files, vectors = probe_corpus()
    aisfx_layers = embed_layers(files)
    agreement = port_agreement(files, load_arrays(WEIGHTS))
    assert agreement < 1e-4, f"the port differs from the reference's operations by {agreement} of a layer's largest value"
    sn = embed_cached(files, PROJECT / "benchmarks/work/head-soundnet/vectors.npz", layer_frames, "SoundNet")
    today = {
        "joint": [pooled(vectors["birdnet"]), pooled(vectors["aisfx"])],
        "clean": [np.concatenate([pooled(aisfx_layers[layer]) for layer in ("b2", "b3", "b4")], axis=1)],
        "soundnet": [],
    }
    inputs = {}
    for head, parts in today.items():
        for name, layers in CANDIDATES.items():
            blocks = parts + [pooled(sn[layer]) for layer in layers]
            if blocks:
                inputs[head, name] = (np.concatenate(blocks, axis=1), [b.shape[1] for b in blocks])
    folds = fold_scores(params, clips, files, inputs)
    summary = {head: {n: summarise([by_fold[k][n] for k in by_fold]) for n in by_fold[min(by_fold)]} for head, by_fold in folds.items()}
    decisions = {head: decide(folds[head], "today", list(CANDIDATES)) for head in ("joint", "clean")}
    decisions["soundnet"] = decide(folds["soundnet"], "+sn7", ["+sn7", "+sn567"])
    widths = {f"{head} {name}": int(x.shape[1]) for (head, name), (x, _) in inputs.items()}
    frame_counts = {layer: int(sn[layer].shape[1]) for layer in READ}
    report = {"machine": machine(), "files": len(files), "values": widths, "frames_per_clip": frame_counts, "agreement": agreement}
    report |= {"folds": folds, "summary": summary, "decisions": decisions}
    write_report(report, markdown(report), args.report)


def markdown(report: dict) -> str:
    lines = [
        "# SoundNet's layers beside the heads' models",
        "",
        f"Machine: {report['machine']['cpus']} CPUs. Command: `python benchmarks/head_soundnet.py`. "
        f"{report['files']} files (each clip's original and first copy), each one pass of SoundNet's port "
        f"(frames per 5 s clip: " + ", ".join(f"{layer} {n}" for layer, n in report["frames_per_clip"].items()) + "), "
        f"within {report['agreement']:.1e} of each layer's largest value of SoundNet-tensorflow's operations on four files. "
        "Each head's C chosen by log-loss within the training clips; validation chose nothing. Rule 8 in "
        "docs/benchmarks.md decides, on validation's originals; test is context. Pretrained on outside data: BirdNET "
        "(CC BY-NC-SA 4.0), aiSFX (CC BY 4.0), SoundNet (MIT).",
        "",
        "Values per clip: " + ", ".join(f"{name} {n:,}" for name, n in report["values"].items()) + ".",
    ]
    for head, title in HEADS.items():
        decision = report["decisions"][head]
        chosen = f": chosen **{decision['chosen']}**" if head != "soundnet" else " (context, not a candidate)"
        lines += ["", f"## {title}{chosen}", "", *verdict_table(report["summary"][head], decision, "input", "C per fold")]
    lines += [
        "",
        "Means ± SE over the five folds. Today: the embed stage's input for that head. SoundNet alone is compared with its own `+sn7` row.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

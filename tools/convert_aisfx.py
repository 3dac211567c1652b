"""Convert aiSFX's checkpoint to plain arrays, and record the reference implementation's embeddings to check the port.

Run once, in a scratch environment with the reference implementation (PyTorch, Essentia and the aisfx wheel),
never in the project's own:

    python3 -m venv /tmp/aisfx-ref && /tmp/aisfx-ref/bin/pip install torch==2.13.0 essentia soundfile tqdm
    /tmp/aisfx-ref/bin/pip install --no-deps aisfx==0.1.2
    /tmp/aisfx-ref/bin/python tools/convert_aisfx.py --esc10 ../shared/datasets/ESC-10

It writes:

    src/audioclass/weights/aisfx.npz     EmbeddingNet's convolutions and batch norms (CrossNet's classifiers left out),
                                         Essentia's mel filters as a matrix and the front end's constants
    tests/data/aisfx-reference.npz       the reference embedding of :func:`synthetic_clip`, for the unit test
    benchmarks/work/aisfx/               20 ESC-10 clips (two per class) as 44.1 kHz WAVs and their reference
                                         embeddings, for ``python benchmarks/aisfx_port.py``

aiSFX (A. B. Ma and A. Lerch, "Representation Learning for the Automatic Indexing of Sound Effects Libraries",
ISMIR 2022) is CC BY 4.0; the attribution is in NOTICE.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_RATE, FRAME, HOP, BANDS = 44100, 2048, 1024, 96


def synthetic_clip() -> np.ndarray:
    """5 s at 44.1 kHz: a 440 Hz tone, a 3 kHz tone on every other half second, and seeded noise (float32)."""
    t = np.arange(5 * SAMPLE_RATE) / SAMPLE_RATE
    y = 0.4 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 3000 * t) * (t % 1 < 0.5)
    return (y + 0.05 * np.random.default_rng(0).standard_normal(len(t))).astype(np.float32)


def mel_matrix() -> np.ndarray:
    """Essentia's MelBands as the reference configures them, one spectrum bin at a time: (1025, 96) float32.

    The bands are linear in the power spectrum (``type='power'`` squares each bin first), so a bin of magnitude 1
    reads off its row."""
    import essentia.standard as es

    bands = es.MelBands(
        inputSize=FRAME // 2 + 1,
        numberBands=BANDS,
        sampleRate=SAMPLE_RATE,
        lowFrequencyBound=0.0,
        highFrequencyBound=SAMPLE_RATE / 2,
        warpingFormula="htkMel",
        weighting="warping",
        normalize="unit_sum",
        type="power",
        log=False,
    )
    rows = []
    for k in range(FRAME // 2 + 1):
        spectrum = np.zeros(FRAME // 2 + 1, np.float32)
        spectrum[k] = 1.0
        rows.append(bands(spectrum))
    return np.stack(rows).astype(np.float32)


def load_checkpoint(path: Path) -> tuple[dict, dict]:
    """(state dict, datasets) with PyTorch's weights-only unpickler, allowing the NumPy scalars of the datasets' class
    counts and nothing else: no code from the file runs."""
    import torch
    from numpy._core.multiarray import scalar

    with torch.serialization.safe_globals([(scalar, "numpy.core.multiarray.scalar"), np.dtype, type(np.dtype(np.int64))]):
        return torch.load(path, map_location="cpu", weights_only=True)


def reference_embeddings(path: Path, model) -> np.ndarray:
    """aiSFX's own pipeline on one file: Essentia's spectrogram, its normalisation and blocks, the PyTorch network."""
    from aisfx import inference, preprocessing
    from aisfx.spectrogram import spectrogram_essentia

    spec = spectrogram_essentia.compute_spectrogram(
        filename=str(path), sr=float(SAMPLE_RATE), block_size=FRAME, hop_size=HOP, n_mels=BANDS, f_min=0.0, f_max=SAMPLE_RATE / 2
    )
    spec = preprocessing.spectrogram_normalize(spec, spec_norm="original")
    return inference.model_get_embedding(spec, 0.5, True, model, "cpu").numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--esc10", type=Path, required=True, help="the ESC-10 release folder")
    args = parser.parse_args()
    import soundfile as sf
    from aisfx import inference

    weights, ds_dict = load_checkpoint(Path(inference.get_path_modelWeights()))
    model = inference.load_bestModel(weights, ds_dict, "cpu")
    arrays = {k.removeprefix("embedding_net."): v.numpy() for k, v in weights.items() if k.startswith("embedding_net.")}
    arrays = {k: v for k, v in arrays.items() if not k.endswith("num_batches_tracked")}
    out = ROOT / "src/audioclass/weights/aisfx.npz"
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out,
        **{k: v.astype(np.float32) for k, v in arrays.items()},
        mel_filters=mel_matrix(),
        constants=np.array([SAMPLE_RATE, FRAME, HOP, BANDS, 100, 50], np.int64),  # rate, frame, hop, bands, block, block hop
        normaliser=np.array([0.0, 9.457798957824707], np.float32),  # the ISMIR paper's min and max, spec_norm='original'
    )
    print(f"{out}: {sum(v.size for v in arrays.values()):,} weights, {out.stat().st_size / 2**20:.1f} MiB")

    work = ROOT / "benchmarks/work/aisfx"
    work.mkdir(parents=True, exist_ok=True)
    sf.write(work / "synthetic.wav", synthetic_clip(), SAMPLE_RATE, subtype="FLOAT")
    synthetic = reference_embeddings(work / "synthetic.wav", model)
    (ROOT / "tests/data").mkdir(exist_ok=True)
    np.savez_compressed(ROOT / "tests/data/aisfx-reference.npz", blocks=synthetic)

    import essentia.standard as es

    clips = sorted(args.esc10.rglob("*.ogg"))
    chosen = [p for folder in sorted({p.parent for p in clips}) for p in sorted(folder.glob("*.ogg"))[:2]]
    references = {}
    for path in chosen:
        wav = work / f"{path.stem}.wav"
        sf.write(wav, es.MonoLoader(filename=str(path), sampleRate=SAMPLE_RATE)(), SAMPLE_RATE, subtype="FLOAT")
        references[path.stem] = reference_embeddings(wav, model)
    np.savez_compressed(work / "reference.npz", **references)
    print(f"{work}: {len(references)} clips' reference embeddings")


if __name__ == "__main__":
    main()

"""aiSFX's embedding network, ported: its Essentia front end to NumPy and its PyTorch network to Keras.

aiSFX (A. B. Ma and A. Lerch, "Representation Learning for the Automatic
Indexing of Sound Effects Libraries", ISMIR 2022) is a CNN trained on
sound-effects libraries. Its weights are CC BY 4.0, so they may be used
commercially with attribution (``NOTICE``). They ship with this package as
plain arrays, ``weights/aisfx.npz``, converted once from the ``aisfx`` wheel
by ``tools/convert_aisfx.py``, which also records the reference
implementation's embeddings that ``benchmarks/aisfx_port.py`` checks the port
against.

The front end, as aiSFX computes it with Essentia: 44.1 kHz audio, frames of
2,048 samples 1,024 apart, the first centred on the first sample; a symmetric
Hann window; the power spectrum through Essentia's 96 HTK mel bands up to
22,050 Hz (the vendored matrix); ``log10(10,000 × bands + 1)`` divided by the
paper's maximum, 9.4578. The spectrogram is cut into blocks of 100 frames
(2.3 s), 50 apart, an incomplete last block dropped.

The network (``EmbeddingNet``): four blocks of two 3 × 3 convolutions with
batch norm and ReLU, 64, 128, 256 and 512 channels, 2 × 2 max pooling after
the first three; then the mean over frequency and the maximum over time: 512
values per block. Batch norm is folded into the convolutions at load time.
:func:`network` can also read the second and third blocks' channels the same
way (before their pooling), beside the output: those earlier layers told
ESC-10's classes apart better than the output alone for a head on aiSFX
alone (rule 7, ``benchmarks/reports/head-layers.md``).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from audioclass.errors import DataError

SAMPLE_RATE = 44_100
FRAME, HOP, BANDS = 2048, 1024, 96
BLOCK, BLOCK_HOP = 100, 50  # frames per block and between blocks: 2.3 s and 1.2 s
LOG_MAX = 9.457798957824707  # the ISMIR paper's largest log-mel value over its data sets: its normalisation
BN_EPS = 1e-5  # PyTorch's BatchNorm2d default
CHANNELS = (64, 128, 256, 512)
DIM = CHANNELS[-1]


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    """The vendored arrays; a missing, truncated or tampered file is one line naming it."""
    expected = {"mel_filters": (FRAME // 2 + 1, BANDS)}
    for block, (cin, cout) in enumerate(zip((1, *CHANNELS[:-1]), CHANNELS), start=1):
        for conv, channels_in in ((1, cin), (2, cout)):
            expected[f"conv_block{block}.conv{conv}.weight"] = (cout, channels_in, 3, 3)
            for part in ("weight", "bias", "running_mean", "running_var"):
                expected[f"conv_block{block}.bn{conv}.{part}"] = (cout,)
    try:
        with path.open("rb") as file, np.load(file, allow_pickle=False) as f:  # closed also when it is no zip
            arrays = {name: f[name].astype(np.float32) for name in expected if name in f.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{path}: not a readable aiSFX weights file ({type(e).__name__}); expected the package's own copy") from None
    wrong = [name for name, shape in expected.items() if name not in arrays or arrays[name].shape != shape]
    if wrong or not all(np.isfinite(a).all() for a in arrays.values()):
        raise DataError(
            f"{path}: aiSFX weights {wrong[:3] or 'with non-finite values'}: missing or misshapen; expected the package's own copy"
        )
    return arrays


def spectrogram(y: np.ndarray, mel_filters: np.ndarray) -> np.ndarray:
    """y : (n_samples,) float32 at 44.1 kHz → (n_frames, 96) float32, aiSFX's normalised log-mel spectrogram."""
    n_frames = -(-(len(y) + FRAME // 2) // HOP)  # frames whose start, FRAME // 2 before their centre, is inside y
    padded = np.pad(y.astype(np.float32), (FRAME // 2, FRAME))
    frames = np.lib.stride_tricks.sliding_window_view(padded, FRAME)[::HOP][:n_frames]
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(FRAME) / (FRAME - 1))).astype(np.float32)
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2
    return (np.log10(10_000 * (power @ mel_filters) + 1) / LOG_MAX).astype(np.float32)


def blocks(spec: np.ndarray) -> np.ndarray:
    """(n_frames, 96) → (n_blocks, 100, 96): BLOCK frames BLOCK_HOP apart, an incomplete last block dropped; a
    spectrogram shorter than one block is zero-padded to one."""
    if len(spec) < BLOCK:
        spec = np.pad(spec, ((0, BLOCK - len(spec)), (0, 0)))
    starts = range(0, len(spec) - BLOCK + 1, BLOCK_HOP)
    return np.stack([spec[s : s + BLOCK] for s in starts])


def network(arrays: dict[str, np.ndarray], read: tuple[int, ...] = (4,)):
    """EmbeddingNet in Keras with the vendored weights, batch norm folded into each convolution:
    (n_blocks, 100, 96, 1) → (n_blocks, channels): the channels of each block in ``read`` (1 to 4, in order; after
    its second convolution) averaged over frequency and maximised over time, side by side. ``(4,)`` is aiSFX's own
    output, 512 values; ``(2, 3, 4)`` gives 128 + 256 + 512."""
    import keras

    inputs = keras.Input((BLOCK, BANDS, 1))
    x, weights, outputs = inputs, [], []
    for block, channels in enumerate(CHANNELS, start=1):
        for conv in (1, 2):
            x = keras.layers.Conv2D(channels, 3, padding="same", activation="relu")(x)
            kernel = arrays[f"conv_block{block}.conv{conv}.weight"]
            bn = {p: arrays[f"conv_block{block}.bn{conv}.{p}"] for p in ("weight", "bias", "running_mean", "running_var")}
            scale = bn["weight"] / np.sqrt(bn["running_var"] + BN_EPS)
            weights.append((kernel.transpose(2, 3, 1, 0) * scale, bn["bias"] - bn["running_mean"] * scale))
        if block in read:
            outputs.append(keras.ops.max(keras.ops.mean(x, axis=2), axis=1))
        if block < len(CHANNELS):
            x = keras.layers.MaxPooling2D(2)(x)
    outputs = outputs[0] if len(outputs) == 1 else keras.ops.concatenate(outputs, axis=-1)
    model = keras.Model(inputs, outputs, name="aisfx_embedding_net")
    for layer, (kernel, bias) in zip([la for la in model.layers if isinstance(la, keras.layers.Conv2D)], weights):
        layer.set_weights([kernel, bias])
    return model


def block_embeddings(y: np.ndarray, arrays: dict[str, np.ndarray], model) -> np.ndarray:
    """y : (n_samples,) float32 at 44.1 kHz → (n_blocks, 512) float32, one embedding per block, as aiSFX gives them."""
    x = blocks(spectrogram(y, arrays["mel_filters"]))[..., np.newaxis]
    return np.asarray(model(x, training=False), dtype=np.float32)

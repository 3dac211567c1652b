"""aiSFX ported to NumPy and Keras: vendored weights, the reference embedding, shapes, determinism and damaged files."""

import shutil
import socket
from pathlib import Path

import numpy as np
import pytest

from audioclass import aisfx, embeddings
from audioclass.errors import DataError
from conftest import tone

AISFX = embeddings.BACKENDS["aisfx"]
REFERENCE = Path(__file__).parent / "data/aisfx-reference.npz"


def synthetic_clip() -> np.ndarray:
    """The clip tools/convert_aisfx.py gave the reference implementation: 5 s at 44.1 kHz, two tones and seeded noise."""
    t = np.arange(5 * 44_100) / 44_100
    y = 0.4 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 3000 * t) * (t % 1 < 0.5)
    return (y + 0.05 * np.random.default_rng(0).standard_normal(len(t))).astype(np.float32)


@pytest.fixture(scope="module")
def port():
    arrays = aisfx.load_arrays(embeddings.weights_file(AISFX))
    return arrays, aisfx.network(arrays)


def test_the_vendored_weights_load_offline_from_the_package(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("the backend tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    path = embeddings.weights_file(AISFX)
    assert path == Path(aisfx.__file__).parent / "weights/aisfx.npz"
    arrays = aisfx.load_arrays(path)
    assert sum(v.size for k, v in arrays.items() if k != "mel_filters") == 4_689_984  # EmbeddingNet, no classifier
    info = AISFX.describe()
    assert info["licence"].startswith("CC BY 4.0") and "Ma and A. Lerch" in info["provenance"]
    assert (info["sample_rate"], info["dim"]) == (44_100, 512)


def test_the_port_gives_the_reference_implementation_s_embedding_of_a_fixed_clip(port):
    arrays, model = port
    reference = np.load(REFERENCE)["blocks"]  # aisfx 0.1.2 with PyTorch and Essentia, recorded by tools/convert_aisfx.py
    ported = aisfx.block_embeddings(synthetic_clip(), arrays, model)
    assert ported.shape == reference.shape == (3, 512)
    np.testing.assert_allclose(ported, reference, atol=1e-4, rtol=1e-4)


def test_the_spectrogram_frames_and_blocks_follow_essentia_and_aisfx(port):
    arrays, _ = port
    spec = aisfx.spectrogram(synthetic_clip(), arrays["mel_filters"])
    # Frames centred on samples 0, 1024, …, while a frame's start is inside the clip: ceil((220,500 + 1,024) / 1,024).
    assert spec.shape == (217, 96) and spec.dtype == np.float32 and spec.min() >= 0
    assert aisfx.blocks(spec).shape == (3, 100, 96)  # starts 0, 50, 100; the block from 150 would end past 217
    np.testing.assert_array_equal(aisfx.blocks(spec)[1], spec[50:150])
    short = aisfx.blocks(spec[:40])
    assert short.shape == (1, 100, 96) and not short[0, 40:].any()  # zero-padded to one block
    # The loudest band is the one whose filter holds 440 Hz (FFT bins 20 and 21, 431 and 452 Hz), well above the noise.
    loudest = spec.mean(axis=0).argmax()
    assert abs(int(arrays["mel_filters"][20:22].sum(axis=0).argmax()) - int(loudest)) <= 1
    assert spec[:, loudest].mean() > spec[:, 80:].mean() + 0.3


def test_a_clip_embeds_to_512_values_the_same_every_time_and_depends_on_the_sound():
    y = tone(880, 5.0, 22_050)
    first = embeddings.embed_clip(y, 22_050, "aisfx")
    assert first.shape == (512,) and first.dtype == np.float32 and np.isfinite(first).all()
    np.testing.assert_array_equal(embeddings.embed_clip(y, 22_050, "aisfx"), first)
    assert not np.allclose(embeddings.embed_clip(tone(220, 5.0, 22_050, seed=3), 22_050, "aisfx"), first)


def test_aisfx_layers_reads_the_second_and_third_blocks_beside_the_same_output(port):
    arrays, model = port
    layered = aisfx.network(arrays, (2, 3, 4))
    y = synthetic_clip()
    blocks = aisfx.block_embeddings(y, arrays, layered)
    assert blocks.shape == (3, 128 + 256 + 512) == (3, embeddings.BACKENDS["aisfx-layers"].dim)
    np.testing.assert_allclose(blocks[:, 384:], aisfx.block_embeddings(y, arrays, model), atol=1e-6)
    earlier = blocks[:, :384]
    assert earlier.min() >= 0 and (earlier > 0).mean() > 0.5  # ReLU channels, averaged and maximised: most of them fire
    clip = embeddings.embed_clip(y, aisfx.SAMPLE_RATE, "aisfx-layers", "mean_std_max")
    assert clip.shape == (3 * 896,)
    np.testing.assert_allclose(clip[896 + 384 : 2 * 896], blocks[:, 384:].std(axis=0), atol=1e-5)


@pytest.mark.parametrize("damage", ["truncated", "text", "misshapen"])
def test_a_damaged_weights_file_is_one_line_naming_it(damage, tmp_path):
    path = tmp_path / "aisfx.npz"
    source = embeddings.weights_file(AISFX)
    if damage == "truncated":
        path.write_bytes(source.read_bytes()[:100_000])
    elif damage == "text":
        path.write_text("not weights")
    else:
        shutil.copy(source, path)
        with np.load(source) as f:
            arrays = {k: f[k] for k in f.files}
        arrays["conv_block2.conv1.weight"] = arrays["conv_block2.conv1.weight"][:, :32]
        np.savez(path, **arrays)
    with pytest.raises(DataError, match=rf"^{path}: .*aiSFX weights.*expected the package's own copy$") as caught:
        aisfx.load_arrays(path)
    assert "\n" not in str(caught.value)

"""Stage spectrograms: shapes by formula, value ranges, bad params, per-split storage."""

import filecmp

import numpy as np
import pandas as pd
import pytest

from audioclass.errors import ConfigError, DataError
from audioclass.spectrograms import SpectrogramConfig, n_frames, render_spectrogram, spectrograms
from conftest import config, tone

SR = 8000
SILENCE = -90.0  # params.yaml's extract.silence_dbfs


def cfg(**overrides) -> SpectrogramConfig:
    return config(SpectrogramConfig, "spectrograms", **{"n_fft": 256, "hop_length": 64, "n_mels": 32, **overrides})


@pytest.mark.parametrize("n_samples", [4000, 4001, 4095, 8192])
@pytest.mark.parametrize("hop", [32, 64, 100])
def test_logmel_shape_matches_formula_and_range(n_samples, hop):
    y = tone(500, n_samples / SR, SR)[:n_samples]
    x = render_spectrogram(y, sr=SR, cfg=cfg(hop_length=hop), silence_dbfs=SILENCE)
    assert x.shape == (32, n_frames(n_samples, hop), 1) == (32, 1 + n_samples // hop, 1)
    assert x.dtype == np.float32 and x.min() >= 0.0 and x.max() == pytest.approx(1.0)


def test_mfcc_has_three_channels():
    x = render_spectrogram(tone(500, 0.5, SR), sr=SR, cfg=cfg(kind="mfcc", n_mfcc=13), silence_dbfs=SILENCE)
    assert x.shape == (13, n_frames(4000, 64), 3) and np.isfinite(x).all()


def test_logmel_deltas_adds_the_log_mels_delta_and_delta_delta():
    y = tone(500, 0.5, SR)
    y[2000:] *= 0.1  # the tone drops by 20 dB halfway: a falling edge the delta must show
    static = render_spectrogram(y, sr=SR, cfg=cfg(), silence_dbfs=SILENCE)
    x = render_spectrogram(y, sr=SR, cfg=cfg(kind="logmel_deltas", delta_width=5), silence_dbfs=SILENCE)
    assert x.shape == (*static.shape[:2], 3)
    np.testing.assert_array_equal(x[..., 0], static[..., 0])
    band = static[..., 0].mean(axis=1).argmax()  # the tone's band
    edge = 2000 // 64
    assert x[band, edge, 1] < -0.05 and abs(x[band, 5, 1]) < 0.01  # falling at the edge, flat where the tone is steady
    with pytest.raises(ConfigError, match=r"^delta_width: expected an odd integer >= 3, got 4$"):
        cfg(kind="logmel_deltas", delta_width=4)


def test_logmel_pcen_adds_a_channel_that_marks_onsets_and_fades_on_steady_sound():
    y = tone(500, 1.0, SR, amp=0.5)
    y[:4000] *= 0.01  # quiet for 0.5 s, then a steady tone: an onset PCEN must mark, then adapt to
    static = render_spectrogram(y, sr=SR, cfg=cfg(), silence_dbfs=SILENCE)
    x = render_spectrogram(y, sr=SR, cfg=cfg(kind="logmel_pcen"), silence_dbfs=SILENCE)
    assert x.shape == (*static.shape[:2], 2) and np.isfinite(x).all()
    np.testing.assert_array_equal(x[..., 0], static[..., 0])
    band, onset = static[..., 0].mean(axis=1).argmax(), 4000 // 64
    assert static[band, onset + 2, 0] == pytest.approx(static[band, -2, 0], abs=0.02)  # the log-mel stays level
    assert x[band, onset + 2, 1] > 1.5 * x[band, -2, 1]  # PCEN peaks at the onset and fades as its gain adapts


def test_batch_equals_one_by_one():
    batch = np.stack([tone(f, 0.5, SR, seed=i) for i, f in enumerate([300, 900, 2000])])
    together = render_spectrogram(batch, sr=SR, cfg=cfg(), silence_dbfs=SILENCE)
    for i, y in enumerate(batch):
        np.testing.assert_allclose(together[i], render_spectrogram(y, sr=SR, cfg=cfg(), silence_dbfs=SILENCE), atol=1e-6)


def test_tone_energy_lands_in_the_right_band():
    low, high = (render_spectrogram(tone(f, 0.5, SR, amp=0.9), sr=SR, cfg=cfg(), silence_dbfs=SILENCE) for f in (300, 3000))
    assert low[..., 0].mean(axis=1).argmax() < high[..., 0].mean(axis=1).argmax()


def test_too_many_mels_for_the_fft_is_rejected():
    with pytest.raises(ConfigError, match=r"n_mels: expected at most n_fft // 2 \+ 1 = 129"):
        cfg(n_mels=200)
    with pytest.raises(ConfigError, match=r"^n_mels: expected an integer >= 1, got 0$"):  # the bound it breaks, not the other
        cfg(n_mels=0)
    with pytest.raises(ConfigError, match=r"spectrograms\.n_mels: 128 mel bands are 18\.2 Hz apart .* 31\.2 Hz FFT bins"):
        cfg(n_mels=128).check_rate(SR)
    cfg(n_mels=32).check_rate(SR)  # 71 Hz apart: fine
    with pytest.raises(ConfigError, match=r"spectrograms\.fmax: expected at most Nyquist = 4000 Hz"):
        cfg(fmax=6000.0).check_rate(SR)


def test_stage_writes_aligned_arrays_per_split_and_a_preview(pipeline_inputs, tmp_path):
    root = pipeline_inputs
    summary = spectrograms(
        root / "augmented",
        root / "split.csv",
        cfg(preview_per_class=3, test_copies="all"),
        tmp_path / "spec",
        tmp_path / "grid.png",
        jobs=2,
        silence_dbfs=SILENCE,
    )
    assert sum(summary["files"].values()) == 100 and summary["files"]["test"] == 20 and summary["clips"]["test"] == 10
    assert summary["classes"] == 10 and summary["shape"] == [32, n_frames(4000, 64), 1]
    for name, n in summary["files"].items():
        x = np.load(tmp_path / "spec" / name / "x.npy")
        index = pd.read_csv(tmp_path / "spec" / name / "index.csv")
        assert x.shape == (n, 32, n_frames(4000, 64), 1) and x.dtype == np.float16
        assert len(index) == n and (index["split"] == name).all()
        assert list(index["clip_id"]) == sorted(index["clip_id"])  # documented row order
    assert (tmp_path / "grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_test_clips_keep_only_their_original_recording_and_the_other_splits_every_copy(pipeline_inputs, tmp_path):
    root = pipeline_inputs
    spectrograms(
        root / "augmented", root / "split.csv", cfg(test_copies="all"), tmp_path / "all", tmp_path / "a.png", jobs=1, silence_dbfs=SILENCE
    )
    summary = spectrograms(
        root / "augmented",
        root / "split.csv",
        cfg(test_copies="original"),
        tmp_path / "orig",
        tmp_path / "o.png",
        jobs=1,
        silence_dbfs=SILENCE,
    )
    assert summary["files"]["test"] == summary["clips"]["test"] == 10 and summary["files"]["train"] == 2 * summary["clips"]["train"]
    every, original = (pd.read_csv(tmp_path / d / "test" / "index.csv") for d in ("all", "orig"))
    assert (original["copy"] == 0).all() and list(original["clip_id"]) == list(every["clip_id"].unique())
    # The same rows as the original copies' among all copies: the option selects, it renders nothing differently.
    np.testing.assert_array_equal(
        np.load(tmp_path / "orig" / "test" / "x.npy"), np.load(tmp_path / "all" / "test" / "x.npy")[every["copy"] == 0]
    )
    for name in ("train", "val"):
        assert filecmp.cmp(tmp_path / "orig" / name / "x.npy", tmp_path / "all" / name / "x.npy", shallow=False)


def test_stage_is_byte_identical_serial_and_parallel(pipeline_inputs, tmp_path):
    root = pipeline_inputs
    for jobs in (1, 2):
        spectrograms(
            root / "augmented",
            root / "split.csv",
            cfg(preview_per_class=2),
            tmp_path / f"s{jobs}",
            tmp_path / f"g{jobs}.png",
            jobs=jobs,
            silence_dbfs=SILENCE,
        )
    for name in ("train", "val", "test"):
        for f in ("x.npy", "index.csv"):
            assert (tmp_path / "s1" / name / f).read_bytes() == (tmp_path / "s2" / name / f).read_bytes()
    assert (tmp_path / "g1.png").read_bytes() == (tmp_path / "g2.png").read_bytes()


def test_split_from_another_extract_is_rejected(pipeline_inputs, tmp_path):
    root = pipeline_inputs
    table = pd.read_csv(root / "split.csv").iloc[5:]
    table.to_csv(tmp_path / "split.csv", index=False)
    with pytest.raises(DataError, match="has no split"):
        spectrograms(root / "augmented", tmp_path / "split.csv", cfg(), tmp_path / "spec", tmp_path / "g.png", jobs=1, silence_dbfs=SILENCE)
    assert not (tmp_path / "spec").exists()


@pytest.mark.parametrize("kind", ["logmel", "logmel_deltas", "logmel_pcen"])
def test_silence_renders_as_the_floor_not_as_a_full_scale_sound(kind):
    one_step = np.zeros(4000, np.float32)
    one_step[::7] = 1 / 32768  # a 16-bit clip that never leaves its lowest step: -90.3 dBFS
    quiet = tone(500, 0.5, SR, amp=0.001)  # -60 dBFS: quiet, but a sound
    batch = np.stack([np.zeros(4000, np.float32), one_step, quiet])
    x = render_spectrogram(batch, sr=SR, cfg=cfg(kind=kind), silence_dbfs=SILENCE)
    assert (x[0, ..., 0] == 0).all() and (x[1, ..., 0] == 0).all()  # the floor of [0, 1], not all 1.0
    assert x[2, ..., 0].max() == pytest.approx(1.0)  # a quiet sound is still referenced to its own peak
    louder = render_spectrogram(batch, sr=SR, cfg=cfg(kind=kind), silence_dbfs=-100.0)
    assert louder[1, ..., 0].max() == pytest.approx(1.0)  # below a lower floor, the same clip is a sound again

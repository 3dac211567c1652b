"""Decoding, truncation and corruption checks, length fitting and int16 round trips."""

import numpy as np
import pytest
import soundfile as sf

from audioclass import audio
from audioclass.errors import DataError
from conftest import tone


def test_stereo_48k_is_decoded_to_mono(tmp_path):
    left, right = tone(440, 0.5, 48000), tone(660, 0.5, 48000, seed=1)
    sf.write(tmp_path / "s.wav", np.stack([left, right], axis=1), 48000)
    y, sr = audio.read_audio(tmp_path / "s.wav")
    assert sr == 48000 and y.ndim == 1 and y.dtype == np.float32
    np.testing.assert_allclose(y, (left + right) / 2, atol=1e-4)


@pytest.mark.parametrize("fmt", ["wav", "ogg"])
def test_truncated_file_is_rejected(tmp_path, fmt):
    sf.write(tmp_path / f"full.{fmt}", tone(440, 2.0, 22050), 22050)
    data = (tmp_path / f"full.{fmt}").read_bytes()
    (tmp_path / f"cut.{fmt}").write_bytes(data[: len(data) // 2])
    audio.read_audio(tmp_path / f"full.{fmt}")  # the intact file is fine
    with pytest.raises(DataError, match=rf"cut\.{fmt}: file is truncated"):
        audio.read_audio(tmp_path / f"cut.{fmt}")


@pytest.mark.parametrize(
    "content, message",
    [
        (b"RIFF" + bytes(100), "cannot decode audio"),
        (b"this is a text file, not audio\n" * 10, "cannot decode audio"),
        (b"OggS" + bytes(60), "cannot decode audio"),
    ],
)
def test_corrupt_file_is_rejected_by_name(tmp_path, content, message):
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message) as err:
        audio.read_audio(path)
    assert str(err.value).startswith(str(path))


def test_empty_and_nonfinite_audio(tmp_path):
    with pytest.raises(DataError, match="x.wav: file is empty"):
        audio.read_audio_bytes(b"", "x.wav")
    y = tone(440, 0.1, 8000)
    y[10] = np.nan
    sf.write(tmp_path / "nan.wav", y, 8000, subtype="FLOAT")
    with pytest.raises(DataError, match="nan.wav: contains NaN or infinite samples"):
        audio.read_audio(tmp_path / "nan.wav")


@pytest.mark.parametrize("n", [1, 99, 100, 101, 1000])
@pytest.mark.parametrize("pad", ["zeros", "wrap"])
@pytest.mark.parametrize("crop", ["start", "center"])
def test_fit_length(n, pad, crop):
    y = np.arange(1, n + 1, dtype=np.float32)
    out = audio.fit_length(y, 100, pad=pad, crop=crop)
    assert out.shape == (100,) and out.dtype == np.float32
    if n >= 100:
        start = 0 if crop == "start" else (n - 100) // 2
        np.testing.assert_array_equal(out, y[start : start + 100])
    else:
        np.testing.assert_array_equal(out[:n], y)
        assert (out[n:] == 0).all() if pad == "zeros" else (out[n:] == y[np.arange(n, 100) % n]).all()


def test_int16_round_trip_is_exact(tmp_path):
    samples = np.array([-32768, -1, 0, 1, 32767], dtype=np.int16)
    sf.write(tmp_path / "a.wav", samples, 8000, subtype="PCM_16")
    y, _ = audio.read_wav(tmp_path / "a.wav")
    np.testing.assert_array_equal(audio.to_int16(y), samples)
    assert audio.to_int16(np.array([2.0, -2.0], dtype=np.float32)).tolist() == [32767, -32768]

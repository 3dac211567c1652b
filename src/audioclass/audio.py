"""Reading, shaping and writing audio.

Arrays are ``float32`` in [-1, 1], shape ``(n_samples,)`` for mono. Files on
disk that the pipeline writes are mono 16-bit PCM WAV.
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Literal

import librosa
import numpy as np
import soundfile as sf

from audioclass.errors import DataError

PadMode = Literal["zeros", "wrap"]
CropMode = Literal["start", "center"]

_TRUNCATED_WAV = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
_TRUNCATED_OGG = "Last page lacks an end-of-stream bit"


def read_audio(file: str | Path | BinaryIO, name: str | None = None) -> tuple[np.ndarray, int]:
    """Decode an audio file to mono float32.

    Parameters
    ----------
    file : path or binary file object (e.g. a zip member read into memory)
    name : how to name the file in error messages; defaults to ``str(file)``

    Returns
    -------
    y : np.ndarray, shape (n_samples,), float32 in [-1, 1]; channels are averaged
    sr : int, the file's sample rate in Hz

    Raises
    ------
    DataError
        if the file cannot be decoded, is truncated, is empty or holds NaN/inf.
    """
    name = name or str(file)
    with _opened(file, name) as f:
        y = _mono(f.read(dtype="float32", always_2d=True), name)
        _check_complete(f, name)
        return y, int(f.samplerate)


def window_starts(n_samples: int, window: int, hop: int) -> list[int]:
    """Where windows ``window`` samples long start, ``hop`` apart, the last one ending at the file's end.

    A file no more than 1 % longer than a window (a codec's padding: ESC-50's
    5 s Ogg clips decode to 5.001 s) is one window, from 0, read whole.
    """
    if n_samples <= window + window // 100:
        return [0]
    starts = list(range(0, n_samples - window + 1, hop))
    if starts[-1] + window < n_samples:
        starts.append(n_samples - window)
    return starts


def read_windows(
    file: str | Path | BinaryIO, window_seconds: float, hop_seconds: float, name: str | None = None
) -> Iterator[tuple[float, float, np.ndarray, int]]:
    """Decode a file one window at a time, as (start s, end s, mono float32 samples, sample rate).

    Windows are :func:`window_starts` of the file at its own rate; memory holds
    one window, so an hours-long recording streams. ``file`` and ``name`` are as
    :func:`read_audio`'s, and so are the errors.
    """
    name = name or str(file)
    with _opened(file, name) as f:
        sr = int(f.samplerate)
        window, hop = round(window_seconds * sr), max(1, round(hop_seconds * sr))
        starts = window_starts(f.frames, window, hop)
        for start in starts:
            f.seek(start)
            y = _mono(f.read(window if len(starts) > 1 else -1, dtype="float32", always_2d=True), name)
            yield start / sr, (start + len(y)) / sr, y, sr
        _check_complete(f, name)


@contextlib.contextmanager
def _opened(file: str | Path | BinaryIO, name: str) -> Iterator[sf.SoundFile]:
    """The file open for reading, its header checked; a decoding error while it is read becomes a :class:`DataError`."""
    try:
        with sf.SoundFile(file) as f:
            _check_complete(f, name)
            if f.frames == 0:
                raise DataError(f"{name}: no audio samples; expected a non-empty clip")
            yield f
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        reason = str(err).split(": ", 1)[-1] if ": " in str(err) else str(err)
        raise DataError(f"{name}: cannot decode audio ({reason}); expected a WAV, Ogg, FLAC or MP3 file") from None


def _mono(y: np.ndarray, name: str) -> np.ndarray:
    if y.shape[0] == 0:
        raise DataError(f"{name}: no audio samples; expected a non-empty clip")
    if not np.isfinite(y).all():
        raise DataError(f"{name}: contains NaN or infinite samples; expected finite audio")
    return y.mean(axis=1, dtype=np.float32)


def _check_complete(f: sf.SoundFile, name: str) -> None:
    """libsndfile logs truncation rather than failing: a WAV whose data chunk is shorter than its header says, or an
    Ogg stream with no last page."""
    log = f.extra_info
    truncated = _TRUNCATED_WAV.search(log)
    if (truncated and int(truncated.group(1)) > int(truncated.group(2))) or _TRUNCATED_OGG in log:
        raise DataError(f"{name}: file is truncated; expected a complete audio file")


def read_audio_bytes(data: bytes, name: str) -> tuple[np.ndarray, int]:
    """:func:`read_audio` for a file held in memory."""
    if not data:
        raise DataError(f"{name}: file is empty; expected an audio file")
    return read_audio(io.BytesIO(data), name)


def fit_length(y: np.ndarray, n_samples: int, *, pad: PadMode, crop: CropMode) -> np.ndarray:
    """Pad or crop ``y`` to exactly ``n_samples``.

    ``pad="zeros"`` appends silence, ``pad="wrap"`` repeats the clip (better for
    stationary sounds such as rain). ``crop="start"`` keeps the beginning,
    ``crop="center"`` keeps the middle.
    """
    n = y.shape[-1]
    if n > n_samples:
        start = 0 if crop == "start" else (n - n_samples) // 2
        return y[..., start : start + n_samples]
    if n < n_samples:
        if pad == "wrap":
            return np.resize(y, n_samples).astype(y.dtype, copy=False)
        return np.pad(y, (0, n_samples - n))
    return y


def resample(y: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample with soxr's high-quality filter; a no-op at the same rate."""
    if orig_sr == target_sr:
        return y
    return librosa.resample(y, orig_sr=orig_sr, target_sr=target_sr, res_type="soxr_hq").astype(np.float32)


def to_int16(y: np.ndarray) -> np.ndarray:
    """Float in [-1, 1] to int16, clipping anything outside that range.

    Scales by 32768, the inverse of how soundfile reads int16 as float, so a
    clip read and written again keeps its exact samples.
    """
    return np.clip(np.round(y * 32768.0), -32768, 32767).astype(np.int16)


def write_wav(path: str | Path, y: np.ndarray, sr: int) -> None:
    """Write mono 16-bit PCM WAV; float input is clipped to [-1, 1]."""
    data = y if y.dtype == np.int16 else to_int16(y)
    sf.write(str(path), data, sr, subtype="PCM_16", format="WAV")


def peak_dbfs(y: np.ndarray) -> np.ndarray:
    """The peak sample level in dB re full scale, over the last axis; -inf for all zeros.

    y : np.ndarray, shape (..., n_samples), float in [-1, 1]
    Returns float64, shape (...). One 16-bit step is -90.3 dBFS.
    """
    with np.errstate(divide="ignore"):
        return 20.0 * np.log10(np.abs(y).max(axis=-1).astype(np.float64))


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Read a WAV this pipeline wrote, as float32 in [-1, 1] (no checks: our own output)."""
    y, sr = sf.read(str(path), dtype="float32")
    return y, sr

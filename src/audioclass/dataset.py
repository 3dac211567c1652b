"""The contract between a feature stage and the models: ``<folder>/<split>/{x.npy,index.csv}``.

The spectrogram, raw_vectors and features stages each write one such folder;
row i of ``x.npy`` is row i of ``index.csv``, which has at least ``clip_id``,
``label`` and ``class_name``. Reading it needs NumPy and pandas only, so the
scikit-learn stages never import TensorFlow.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from audioclass.outputs import load_array, require_inputs
from audioclass.parallel import parallel_map
from audioclass.splits import SPLITS
from audioclass.tables import read_table

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Split:
    """One split: x (n, …) with one row per file, and its index table."""

    x: np.ndarray
    index: pd.DataFrame

    @property
    def y(self) -> np.ndarray:
        return self.index["label"].to_numpy()


@dataclass(frozen=True)
class Data:
    train: Split
    val: Split
    test: Split | None  # None where nothing may look at it (tuning)
    class_names: tuple[str, ...]

    def train_and_val(self) -> Split:
        """The train and validation splits as one, for a model refitted once validation has chosen."""
        return Split(np.concatenate([self.train.x, self.val.x]), pd.concat([self.train.index, self.val.index], ignore_index=True))


def load_data(
    folder: Path, splits: tuple[str, ...] = SPLITS, *, expected: str = "the spectrogram stage's output (dvc repro spectrograms)"
) -> Data:
    """A feature stage's splits; a split left out of ``splits`` is never read.

    ``expected`` says what ``folder`` should be, for the error when it is missing.
    """
    files = [folder / name / f for name in splits for f in ("index.csv", "x.npy")]
    require_inputs(files, expected)
    loaded = {}
    for name in splits:
        index = read_table(folder / name / "index.csv")
        loaded[name] = Split(load_array(folder / name / "x.npy", rows=len(index)), index)
    labels = pd.concat(s.index for s in loaded.values()).drop_duplicates("label").sort_values("label")
    class_names = tuple(labels.set_index("label")["class_name"].reindex(range(labels["label"].max() + 1), fill_value="?"))
    return Data(loaded["train"], loaded["val"], loaded.get("test"), class_names)


def write_splits(
    folder: Path, index: pd.DataFrame, rows: Callable[[list[Path]], np.ndarray], *, root: Path, width: int, chunk: int, jobs: int, desc: str
) -> dict[str, int]:
    """Write ``index``'s files (paths relative to ``root``), split by split, in this layout; the files per split.

    ``rows(paths)`` turns files into a ``(len(paths), width)`` array. It runs on
    fixed chunks of ``chunk`` files, in parallel, so the bytes never depend on ``jobs``.
    """
    counts = {}
    for name in SPLITS:
        part = index[index["split"] == name].reset_index(drop=True)
        paths = [root / p for p in part["path"]]
        chunks = [paths[i : i + chunk] for i in range(0, len(paths), chunk)]
        parts = parallel_map(rows, chunks, jobs=jobs, desc=f"{desc} {name}", unit="chunk")
        x = np.concatenate(parts) if parts else np.zeros((0, width), np.float32)
        (folder / name).mkdir()
        np.save(folder / name / "x.npy", x)
        part.to_csv(folder / name / "index.csv", index=False)
        counts[name] = len(part)
        log.info("%s: %d files, array %s", name, len(part), x.shape)
    return counts

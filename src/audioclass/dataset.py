"""The contract between a feature stage and the models: ``<folder>/<split>/{x.npy,index.csv}``.

The spectrogram, raw_vectors and features stages each write one such folder;
row i of ``x.npy`` is row i of ``index.csv``, which has at least ``clip_id``,
``label`` and ``class_name``. Reading it needs NumPy and pandas only, so the
scikit-learn stages never import TensorFlow.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from audioclass.errors import DataError, first_line
from audioclass.outputs import load_array, require_inputs
from audioclass.parallel import parallel_imap
from audioclass.splits import SPLITS
from audioclass.tables import read_table

log = logging.getLogger(__name__)


class Rows:
    """The rows of one or more ``.npy`` files, stacked end to end, read from disk only when asked for.

    Training gathers each batch's rows from here, so its memory holds batches
    rather than the corpus: 8,000 clips' spectrograms are 4.4 GB. Rows are read
    with ``os.pread`` rather than through a memory map, whose pages would count
    as the process's own memory once touched. Indexing (a slice, a boolean
    mask, row numbers) gives another view, reading nothing; ``take`` and
    ``np.asarray`` read.
    """

    def __init__(self, files: Sequence[tuple[Path, int, int]], row_shape: tuple[int, ...], dtype: np.dtype, order: np.ndarray):
        self._files = tuple(files)  # (path, byte offset of row 0, rows) each
        self._starts = np.cumsum([0] + [n for _, _, n in self._files])
        self.dtype, self._row_shape, self._order = np.dtype(dtype), tuple(row_shape), order
        self._row_bytes = self.dtype.itemsize * int(np.prod(row_shape, dtype=np.int64))

    @classmethod
    def open(cls, path: Path, rows: int | None = None) -> Rows:
        """A ``.npy`` file's rows; one DataError line if it is not a complete C-order array of ``rows`` rows."""
        try:
            with open(path, "rb") as f:
                version = np.lib.format.read_magic(f)
                read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, fortran_order, dtype = read_header(f)
                offset = f.tell()
        except (ValueError, EOFError, OSError) as err:
            raise DataError(f"{path}: unreadable NumPy array ({first_line(err)}); expected a complete .npy file") from None
        size, expected_bytes = os.path.getsize(path), offset + dtype.itemsize * int(np.prod(shape, dtype=np.int64))
        if size != expected_bytes:
            raise DataError(f"{path}: unreadable NumPy array ({size} bytes, not {expected_bytes}); expected a complete .npy file")
        if fortran_order or dtype.hasobject or not shape:
            raise DataError(
                f"{path}: a {'Fortran-order' if fortran_order else dtype} array of {shape}; expected rows of numbers in C order"
            )
        if rows is not None and shape[0] != rows:
            raise DataError(f"{path}: {shape[0]} rows; expected {rows}, one per row of its index.csv")
        return cls([(Path(path), offset, shape[0])], shape[1:], dtype, np.arange(shape[0]))

    @classmethod
    def stack(cls, parts: Sequence[Rows]) -> Rows:
        """``parts`` end to end, as ``np.concatenate`` would put them (the parts' shapes and dtypes agree)."""
        orders, rows_before = [], 0
        for part in parts:  # each part numbers the rows of its own files; shift past the earlier parts' files
            orders.append(part._order + rows_before)
            rows_before += part._starts[-1]
        files = [f for part in parts for f in part._files]
        return cls(files, parts[0]._row_shape, parts[0].dtype, np.concatenate(orders))

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self._order), *self._row_shape)

    @property
    def ndim(self) -> int:
        return 1 + len(self._row_shape)

    def __len__(self) -> int:
        return len(self._order)

    def __getitem__(self, key) -> Rows | np.ndarray:
        """One row (an integer) as an array; anything else as a view."""
        if np.ndim(self._order[key]) == 0:
            return self.take([key])[0]
        return Rows(self._files, self._row_shape, self.dtype, self._order[key])

    def take(self, rows: np.ndarray) -> np.ndarray:
        """Rows ``rows`` of this view, in that order, as one array."""
        wanted = self._order[np.asarray(rows, dtype=np.int64)]
        out = np.empty((len(wanted), *self._row_shape), self.dtype)
        flat = out.view(np.uint8).reshape(len(wanted), self._row_bytes)
        which = np.searchsorted(self._starts, wanted, side="right") - 1
        for k in np.unique(which):
            path, offset, _ = self._files[k]
            fd = os.open(path, os.O_RDONLY)
            try:
                for i in np.flatnonzero(which == k):
                    position = offset + int(wanted[i] - self._starts[k]) * self._row_bytes
                    flat[i] = np.frombuffer(os.pread(fd, self._row_bytes, position), np.uint8)
            finally:
                os.close(fd)
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        x = self.take(np.arange(len(self)))
        return x if dtype is None else x.astype(dtype)


@dataclass(frozen=True)
class Split:
    """One split: x (n, …) with one row per file, and its index table.

    ``x`` is an array, or with ``load_data(..., on_disk=True)`` the rows on disk.
    """

    x: np.ndarray | Rows
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
        parts = [self.train.x, self.val.x]
        x = Rows.stack(parts) if all(isinstance(p, Rows) for p in parts) else np.concatenate(parts)
        return Split(x, pd.concat([self.train.index, self.val.index], ignore_index=True))


def load_data(
    folder: Path,
    splits: tuple[str, ...] = SPLITS,
    *,
    expected: str = "the spectrogram stage's output (dvc repro spectrograms)",
    on_disk: bool = False,
) -> Data:
    """A feature stage's splits; a split left out of ``splits`` is never read.

    ``expected`` says what ``folder`` should be, for the error when it is missing.
    ``on_disk``: each ``x`` is the file's ``Rows``, read as they are asked for, not an array in memory.
    """
    files = [folder / name / f for name in splits for f in ("index.csv", "x.npy")]
    require_inputs(files, expected)
    read = Rows.open if on_disk else load_array
    loaded = {}
    for name in splits:
        index = read_table(folder / name / "index.csv")
        loaded[name] = Split(read(folder / name / "x.npy", rows=len(index)), index)
    labels = pd.concat(s.index for s in loaded.values()).drop_duplicates("label").sort_values("label")
    class_names = tuple(labels.set_index("label")["class_name"].reindex(range(labels["label"].max() + 1), fill_value="?"))
    return Data(loaded["train"], loaded["val"], loaded.get("test"), class_names)


def write_splits(
    folder: Path,
    index: pd.DataFrame,
    rows: Callable[[list[Path]], np.ndarray],
    *,
    root: Path,
    row_shape: tuple[int, ...],
    dtype: np.dtype | str = np.float32,
    chunk: int,
    jobs: int,
    desc: str,
) -> dict[str, int]:
    """Write ``index``'s files (paths relative to ``root``), split by split, in this layout; the files per split.

    ``rows(paths)`` turns files into a ``(len(paths), *row_shape)`` array. It runs on
    fixed chunks of ``chunk`` files, in parallel, so the bytes never depend on ``jobs``;
    each chunk is written as it comes, so memory holds a few chunks, not the split.
    """
    counts = {}
    for name in SPLITS:
        part = index[index["split"] == name].reset_index(drop=True)
        paths = [root / p for p in part["path"]]
        chunks = [paths[i : i + chunk] for i in range(0, len(paths), chunk)]
        (folder / name).mkdir()
        parts = parallel_imap(rows, chunks, jobs=jobs, desc=f"{desc} {name}", unit="chunk")
        write_rows(folder / name / "x.npy", parts, len(part), row_shape, dtype)
        part.to_csv(folder / name / "index.csv", index=False)
        counts[name] = len(part)
        log.info("%s: %d files, array %s %s", name, len(part), (len(part), *row_shape), np.dtype(dtype))
    return counts


def write_rows(path: Path, chunks: Iterable[np.ndarray], rows: int, row_shape: tuple[int, ...], dtype: np.dtype | str) -> None:
    """Write ``chunks`` end to end as one ``.npy`` array of ``rows`` rows, holding one chunk at a time.

    The bytes are those ``np.save`` writes for the chunks' concatenation, so a
    stage's output does not change with how it was written; memory holds a
    chunk, not the split (160,000 spectrograms at 8,000 clips).
    """
    dtype = np.dtype(dtype)
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (rows, *row_shape)}
    written = 0
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)  # np.save's choice too, for any header under 64 KiB
        for chunk in chunks:
            if chunk.shape[1:] != tuple(row_shape):
                raise ValueError(f"{path}: a chunk of rows {chunk.shape[1:]}; expected {tuple(row_shape)}")
            f.write(np.ascontiguousarray(chunk, dtype=dtype).tobytes())
            written += len(chunk)
    if written != rows:
        raise ValueError(f"{path}: {written} rows written; expected {rows}")

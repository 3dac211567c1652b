"""Splits written chunk by chunk and read back row by row: the same bytes and the same training as whole arrays."""

import dataclasses

import numpy as np
import pytest

from audioclass.dataset import Data, Rows, Split, load_data, write_rows
from audioclass.errors import DataError
from audioclass.training import _dataset, _training_dataset, fit_run, predict, refit_run
from conftest import TINY_FIT, TINY_MODEL, band_spectrograms


@pytest.mark.parametrize(
    "shape, dtype, chunk",
    [((37, 4, 6, 1), np.float16, 8), ((37, 9), np.float32, 37), ((0, 4, 6, 1), np.float16, 8), ((5, 3, 2, 3), np.float32, 1)],
    ids=["float16-spectrograms", "float32-vectors-one-chunk", "no-rows", "row-by-row"],
)
def test_chunked_writing_gives_the_bytes_np_save_gives(tmp_path, shape, dtype, chunk):
    x = np.random.default_rng(0).normal(size=shape).astype(dtype)
    np.save(tmp_path / "whole.npy", x)
    write_rows(tmp_path / "chunked.npy", (x[i : i + chunk] for i in range(0, len(x), chunk)), len(x), shape[1:], dtype)
    assert (tmp_path / "chunked.npy").read_bytes() == (tmp_path / "whole.npy").read_bytes()


def test_chunked_writing_refuses_too_few_rows_and_a_wrong_row_shape(tmp_path):
    x = np.zeros((6, 3), np.float32)
    with pytest.raises(ValueError, match="4 rows written; expected 6"):
        write_rows(tmp_path / "x.npy", [x[:4]], 6, (3,), np.float32)
    with pytest.raises(ValueError, match=r"rows \(3,\); expected \(4,\)"):
        write_rows(tmp_path / "x.npy", [x], 6, (4,), np.float32)


@pytest.fixture
def on_disk(tmp_path):
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(11, 4, 5, 1)).astype(np.float16), rng.normal(size=(7, 4, 5, 1)).astype(np.float16)
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    return a, b, Rows.open(tmp_path / "a.npy", rows=11), Rows.open(tmp_path / "b.npy")


def test_rows_read_from_disk_are_the_arrays_rows_in_any_order_view_or_stack(on_disk):
    a, b, rows_a, rows_b = on_disk
    assert rows_a.shape == a.shape and rows_a.dtype == a.dtype and len(rows_a) == 11 and rows_a.ndim == 4
    order = np.array([10, 0, 3, 3, 7])
    np.testing.assert_array_equal(rows_a.take(order), a[order])
    np.testing.assert_array_equal(np.asarray(rows_a), a)
    mask = np.arange(11) % 3 == 0
    np.testing.assert_array_equal(np.asarray(rows_a[mask]), a[mask])  # a view reads nothing until asked
    np.testing.assert_array_equal(rows_a[2:9].take([6, 0]), a[2:9][[6, 0]])
    np.testing.assert_array_equal(rows_a[-1], a[-1])  # an integer is a row
    assert np.asarray(rows_a[:0]).shape == (0, 4, 5, 1)
    both = Rows.stack([rows_a[mask], rows_b])
    expected = np.concatenate([a[mask], b])
    assert both.shape == expected.shape
    np.testing.assert_array_equal(both.take(np.arange(len(expected))[::-1]), expected[::-1])
    np.testing.assert_array_equal(np.asarray(Rows.stack([both, rows_b[::2]])), np.concatenate([expected, b[::2]]))


def test_a_file_that_is_not_a_complete_array_of_its_rows_is_one_line(tmp_path, on_disk):
    (tmp_path / "bad.npy").write_bytes((tmp_path / "a.npy").read_bytes()[:-10])
    with pytest.raises(DataError, match=r"bad\.npy: unreadable NumPy array \(\d+ bytes, not \d+\); expected a complete \.npy file"):
        Rows.open(tmp_path / "bad.npy")
    np.save(tmp_path / "fortran.npy", np.asfortranarray(np.zeros((3, 4))))
    with pytest.raises(DataError, match=r"fortran\.npy: a Fortran-order array of \(3, 4\); expected rows of numbers in C order"):
        Rows.open(tmp_path / "fortran.npy")
    (tmp_path / "text.npy").write_text("not numpy")
    with pytest.raises(DataError, match=r"text\.npy: unreadable NumPy array"):
        Rows.open(tmp_path / "text.npy")
    with pytest.raises(DataError, match=r"a\.npy: 11 rows; expected 12, one per row of its index\.csv"):
        Rows.open(tmp_path / "a.npy", rows=12)


def _saved(tmp_path, data: Data) -> Data:
    """``data`` written as a feature stage's folder and loaded back with its x on disk."""
    for name in ("train", "val", "test"):
        split = getattr(data, name)
        (tmp_path / name).mkdir()
        np.save(tmp_path / name / "x.npy", split.x)
        split.index.to_csv(tmp_path / name / "index.csv", index=False)
    return load_data(tmp_path, on_disk=True)


MODEL = TINY_MODEL
FIT = dataclasses.replace(  # every augmentation on, so the batches draw random numbers as well as rows
    TINY_FIT,
    epochs=3,
    patience=3,
    mixup_alpha=0.2,
    freq_masks=1,
    freq_mask_width=2,
    time_masks=1,
    time_mask_width=3,
    ema_momentum=0.9,
    label_smoothing=0.1,
)


@pytest.fixture(scope="module")
def in_memory() -> Data:
    half = lambda s: Split(s.x.astype(np.float16), s.index)  # noqa: E731 - stored as the spectrogram stage stores them
    splits = (half(band_spectrograms(30, 2, 0)), half(band_spectrograms(9, 2, 1)), half(band_spectrograms(9, 2, 2)))
    return Data(*splits, tuple(f"class{c}" for c in range(3)))


def test_batches_read_from_disk_are_the_batches_drawn_from_memory(in_memory, tmp_path):
    disk = _saved(tmp_path, in_memory)
    assert isinstance(disk.train.x, Rows) and not isinstance(in_memory.train.x, Rows)
    for memory_split, disk_split in ((in_memory.train, disk.train), (in_memory.train_and_val(), disk.train_and_val())):
        memory_batches, disk_batches = (list(_training_dataset(s, FIT, 3, seed=5).repeat(2)) for s in (memory_split, disk_split))
        assert len(memory_batches) == len(disk_batches) > 2
        for (mx, my), (dx, dy) in zip(memory_batches, disk_batches):
            assert mx.shape == dx.shape and mx.dtype == dx.dtype
            np.testing.assert_array_equal(mx.numpy(), dx.numpy())
            np.testing.assert_array_equal(my.numpy(), dy.numpy())
    for (mx, my), (dx, dy) in zip(_dataset(in_memory.val, 4, 3), _dataset(disk.val, 4, 3)):
        np.testing.assert_array_equal(mx.numpy(), dx.numpy())
        np.testing.assert_array_equal(my.numpy(), dy.numpy())


def test_a_run_trained_from_disk_is_the_run_trained_from_memory(in_memory, tmp_path):
    disk = _saved(tmp_path, in_memory)
    memory_model, memory_history = fit_run(MODEL, FIT, in_memory, seed=3, verbose=0)
    disk_model, disk_history = fit_run(MODEL, FIT, disk, seed=3, verbose=0)
    assert memory_history.equals(disk_history)
    np.testing.assert_array_equal(predict(memory_model, in_memory.test), predict(disk_model, disk.test))
    refit = dataclasses.replace(FIT, epochs=2)
    memory_refit = refit_run(MODEL, refit, in_memory, epochs=2, seed=3, verbose=0)
    disk_refit = refit_run(MODEL, refit, disk, epochs=2, seed=3, verbose=0)
    for a, b in zip(memory_refit.get_weights(), disk_refit.get_weights()):
        np.testing.assert_array_equal(a, b)

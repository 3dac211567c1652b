"""Stage augment: properties of one copy, determinism, serial = parallel, stable copies."""

import dataclasses

import numpy as np
import pandas as pd
import pytest

from audioclass.augmentation import AugmentConfig, augment, augment_clip, copy_rng
from audioclass.clips import ExtractConfig, extract
from conftest import config, tiny_clips, tone, write_esc10_release

SR = 8000


def cfg(p: float = 0.5, **overrides) -> AugmentConfig:
    base = config(AugmentConfig, "augment", **overrides)
    effects = {name: dataclasses.replace(getattr(base, name), p=p) for name in ("time_shift", "noise", "pitch_shift", "time_stretch")}
    return dataclasses.replace(base, **effects)


@pytest.mark.parametrize("p", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("k", range(6))
def test_copy_keeps_length_dtype_and_is_finite(p, k):
    y = tone(440, 0.75, SR)
    out = augment_clip(y, SR, copy_rng(42, "1-100-A", k), cfg(p))
    assert out.shape == y.shape and out.dtype == np.float32 and np.isfinite(out).all()
    if p == 0.0:
        np.testing.assert_array_equal(out, y)
    if p == 1.0:
        assert not np.allclose(out, y)


def test_each_effect_changes_the_signal():
    y = tone(440, 0.75, SR)
    base = cfg(0.0)
    for name in ("time_shift", "noise", "pitch_shift", "time_stretch"):
        one = dataclasses.replace(base, **{name: dataclasses.replace(getattr(base, name), p=1.0)})
        assert not np.allclose(augment_clip(y, SR, copy_rng(1, "c", 1), one), y), name


def test_same_seed_same_copy_other_seed_other_copy():
    y = tone(300, 0.5, SR)
    a = augment_clip(y, SR, copy_rng(42, "1-100-A", 3), cfg(1.0))
    b = augment_clip(y, SR, copy_rng(42, "1-100-A", 3), cfg(1.0))
    c = augment_clip(y, SR, copy_rng(43, "1-100-A", 3), cfg(1.0))
    d = augment_clip(y, SR, copy_rng(42, "1-101-A", 3), cfg(1.0))
    assert np.array_equal(a, b) and not np.array_equal(a, c) and not np.array_equal(a, d)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("aug")
    source = write_esc10_release(root / "ESC-10", tiny_clips(per_class=2))
    extract_cfg = config(ExtractConfig, "extract", source=str(source), sample_rate=SR, duration=0.5)
    meta = extract(extract_cfg, root / "prepared", jobs=1)
    return root / "prepared", meta


def files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_serial_and_parallel_write_identical_bytes(prepared, tmp_path):
    folder, meta = prepared
    serial = augment(meta, folder, cfg(copies=3), tmp_path / "serial", jobs=1)
    augment(meta, folder, cfg(copies=3), tmp_path / "parallel", jobs=2)
    assert len(serial) == 3 * len(meta)
    assert files(tmp_path / "serial") == files(tmp_path / "parallel")


def test_more_copies_leave_earlier_copies_unchanged(prepared, tmp_path):
    folder, meta = prepared
    augment(meta, folder, cfg(copies=2), tmp_path / "two", jobs=1)
    augment(meta, folder, cfg(copies=4), tmp_path / "four", jobs=1)
    two, four = files(tmp_path / "two" / "wav"), files(tmp_path / "four" / "wav")
    assert len(four) == 2 * len(two)
    assert all(four[name] == data for name, data in two.items())


def test_copy_zero_is_the_original_and_manifest_lists_every_file(prepared, tmp_path):
    folder, meta = prepared
    manifest = augment(meta, folder, cfg(copies=3), tmp_path / "out", jobs=1)
    assert list(manifest.columns) == ["path", "clip_id", "copy", "label", "class_name", "source_id", "fold"]
    assert manifest.equals(pd.read_csv(tmp_path / "out" / "manifest.csv", dtype={"source_id": str}))
    assert sorted(manifest["path"]) == sorted(f"wav/{name}" for name in files(tmp_path / "out" / "wav"))
    first = meta.sort_values("clip_id").iloc[0]
    assert (tmp_path / "out" / f"wav/{first.clip_id}-00.wav").read_bytes() == (folder / first.path).read_bytes()
    assert (manifest.groupby("clip_id")["copy"].apply(list) == [[0, 1, 2]] * len(meta)).all()

"""Stage extract: every layout, folders and zips, and bad input that leaves nothing behind."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from audioclass.clips import ExtractConfig, extract
from audioclass.errors import DataError
from audioclass.layouts import ESC10_CLASSES
from conftest import PROJECT, config, shared_esc10, tiny_clips, tone, write_esc10_release, write_esc50_master, write_folders


def cfg(source, **overrides) -> ExtractConfig:
    return config(ExtractConfig, "extract", source=str(source), sample_rate=8000, duration=0.5, **overrides)


def run(source, out, **overrides) -> pd.DataFrame:
    return extract(cfg(source, **overrides), out, jobs=1)


def zip_folder(folder: Path, dest: Path) -> Path:
    with zipfile.ZipFile(dest, "w") as archive:
        for path in sorted(folder.rglob("*")):
            archive.write(path, path.relative_to(folder.parent).as_posix())
    return dest


def test_esc10_release(esc10_release, tmp_path):
    meta = run(esc10_release, tmp_path / "out")
    assert len(meta) == 50 and (meta.groupby("class_name").size() == 5).all()
    assert list(meta.columns) == ["clip_id", "source_id", "take", "fold", "label", "class_name", "path", "original_path"]
    # The study's indices: rain 0, …, dog 6, …, chainsaw 9.
    assert (meta["label"] == meta["class_name"].map(ESC10_CLASSES.index)).all()
    assert meta.loc[meta["class_name"] == "dog", "label"].iloc[0] == 6
    row = meta[meta["clip_id"] == "2-111-A"].iloc[0]
    assert (row["fold"], row["source_id"], row["take"], row["class_name"]) == (2, "111", "A", "rooster")
    for path in meta["path"]:
        info = sf.info(tmp_path / "out" / path)
        assert (info.samplerate, info.frames, info.channels, info.subtype) == (8000, 4000, 1, "PCM_16")


def test_serial_and_parallel_write_identical_bytes(esc10_release, tmp_path):
    """Ogg clips at 8 kHz resampled to the pipeline's 22,050 Hz: the decode and resample path real data takes."""
    for jobs in (1, 2):
        cfg_ = config(ExtractConfig, "extract", source=str(esc10_release), sample_rate=22050, duration=0.5)
        extract(cfg_, tmp_path / f"jobs{jobs}", jobs=jobs)
    serial, parallel = (sorted((tmp_path / f"jobs{jobs}").rglob("*")) for jobs in (1, 2))
    assert [p.relative_to(tmp_path / "jobs1") for p in serial] == [p.relative_to(tmp_path / "jobs2") for p in parallel]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(serial, parallel) if a.is_file())


def test_esc50_master_gives_the_same_clips_as_the_esc10_release(tmp_path):
    clips = tiny_clips()
    esc10 = run(write_esc10_release(tmp_path / "ESC-10", clips, fmt="wav"), tmp_path / "a")
    esc50 = run(write_esc50_master(tmp_path / "ESC-50-master", clips), tmp_path / "b")
    same = ["clip_id", "source_id", "take", "fold", "label", "class_name", "path"]
    pd.testing.assert_frame_equal(esc10[same], esc50[same])
    for path in esc10["path"]:
        assert (tmp_path / "a" / path).read_bytes() == (tmp_path / "b" / path).read_bytes()


def test_esc50_subset_all_keeps_every_class_by_target(esc50_master, tmp_path):
    meta = run(esc50_master, tmp_path / "out", subset="all")
    assert len(meta) == 51
    # Labels follow ESC-50's target order (dog 0, rooster 1, other_0 2, rain 10, …) as positions 0..10.
    by_label = meta.drop_duplicates("label").sort_values("label")["class_name"].tolist()
    assert by_label[:4] == ["dog", "rooster", "other_0", "rain"] and len(by_label) == 11


def test_zip_source_matches_folder_source(esc50_master, tmp_path):
    from_folder = run(esc50_master, tmp_path / "a")
    from_zip = run(zip_folder(esc50_master, tmp_path / "ESC-50-master.zip"), tmp_path / "b")
    pd.testing.assert_frame_equal(from_folder.drop(columns="original_path"), from_zip.drop(columns="original_path"))
    assert from_zip["original_path"].iloc[0].startswith("ESC-50-master/audio/")


def test_generic_folders_any_rate_channels_and_length(tmp_path):
    signals = {
        "cat": [tone(500, s, 48000, seed=i) for i, s in enumerate([0.2, 1.5, 0.5, 0.7, 0.9, 1.0])],
        "dog": [tone(900, s, 48000, seed=i) for i, s in enumerate([0.3, 2.5, 0.4, 0.5, 0.6, 0.8])],
    }
    root = write_folders(tmp_path / "pets", signals, 48000, channels=2)
    meta = run(root, tmp_path / "out", n_folds=3)
    assert list(meta.groupby("class_name").size()) == [6, 6]
    assert list(meta.drop_duplicates("class_name")["label"]) == [0, 1]  # sorted class names
    assert set(meta["fold"]) == {1, 2, 3}
    for path in meta["path"]:
        assert sf.info(tmp_path / "out" / path).frames == 4000


def test_folds_are_assigned_grouped_when_names_carry_none(tmp_path):
    rng = np.random.default_rng(0)
    signals = {c: [tone(300 + 50 * i, 0.2, 8000, seed=int(rng.integers(1e6))) for i in range(8)] for c in "abc"}
    root = write_folders(tmp_path / "corpus", signals, 8000)
    # Speaker-style groups via the filename layout: two files per speaker.
    for c in "abc":
        for i, f in enumerate(sorted((root / c).iterdir())):
            f.rename(f.with_name(f"{c}-spk{i // 2}-{i}.wav"))
    meta = run(root, tmp_path / "out", layout="filename", label_pattern=r"^(?P<label>[a-z])-(?P<group>spk\d)", n_folds=4)
    assert (meta.groupby("source_id")["fold"].nunique() == 1).all()
    assert meta["fold"].nunique() == 4


def test_real_esc10_clips(tmp_path):
    real = shared_esc10()
    subset = tmp_path / "ESC-10"
    for folder in sorted(real.iterdir()):
        if folder.is_dir():
            (subset / folder.name).mkdir(parents=True)
            for clip in sorted(folder.glob("*.ogg"))[:2]:
                shutil.copy(clip, subset / folder.name)
    meta = extract(config(ExtractConfig, "extract", source=str(subset)), tmp_path / "out", jobs=2)
    assert len(meta) == 20 and meta["class_name"].nunique() == 10
    y, sr = sf.read(tmp_path / "out" / meta["path"].iloc[0], dtype="int16")
    assert sr == 22050 and y.shape == (110250,) and np.abs(y).max() > 1000


# ---- bad input: one clear error naming the file, and no output left behind ----


def _corrupt_one(root: Path) -> str:
    victim = sorted(root.rglob("*.ogg"))[3]
    victim.write_bytes(b"not audio at all")
    return victim.name


def _truncate_one(root: Path) -> str:
    victim = sorted(root.rglob("*.ogg"))[7]
    victim.write_bytes(victim.read_bytes()[:600])
    return victim.name


def _drop_column(root: Path) -> str:
    csv = root / "meta" / "esc50.csv"
    pd.read_csv(csv).drop(columns="src_file").to_csv(csv, index=False)
    return "missing column(s) ['src_file']"


def _esc10_not_boolean(root: Path) -> str:
    csv = root / "meta" / "esc50.csv"
    table = pd.read_csv(csv)
    table["esc10"] = table["esc10"].map({True: "yes", False: "no"})
    table.to_csv(csv, index=False)
    return "column esc10: expected True or False, got 'yes'"


def _unknown_class_folder(root: Path) -> str:
    (root / "011 - Cat meow").mkdir()
    shutil.copy(sorted(root.rglob("*.ogg"))[0], root / "011 - Cat meow" / "1-999-A.ogg")
    return "011 - Cat meow: unknown ESC-10 class folder"


def _missing_class_folder(root: Path) -> str:
    shutil.rmtree(root / "002 - Rain")
    return "ESC-10 class folders missing for ['rain']"


def _duplicate_clip_id(root: Path) -> str:
    shutil.copy(root / "001 - Dog bark" / "1-160-A.ogg", root / "002 - Rain" / "1-160-A.ogg")
    return "duplicate clip id '1-160-A'"


def _empty_folder(root: Path) -> str:
    shutil.rmtree(root)
    root.mkdir()
    return "no audio files found"


def _missing_audio(root: Path) -> str:
    (root / "audio" / "1-100-A-10.wav").unlink()
    return "1-100-A-10.wav: listed in meta/esc50.csv but missing"


@pytest.mark.parametrize(
    "layout, damage",
    [
        ("esc10", _corrupt_one),
        ("esc10", _truncate_one),
        ("esc10", _unknown_class_folder),
        ("esc10", _missing_class_folder),
        ("esc10", _duplicate_clip_id),
        ("esc10", _empty_folder),
        ("esc50", _drop_column),
        ("esc50", _esc10_not_boolean),
        ("esc50", _missing_audio),
    ],
)
def test_bad_input_fails_cleanly(tmp_path, layout, damage):
    root = (write_esc10_release if layout == "esc10" else write_esc50_master)(tmp_path / "src", tiny_clips())
    expected = damage(root)
    out = tmp_path / "out"
    with pytest.raises(DataError) as err:
        extract(cfg(root), out, jobs=2)
    assert expected in str(err.value) and "\n" not in str(err.value)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name != "src"] == []  # no temporary left either


def test_bad_source_paths(tmp_path):
    (tmp_path / "fake.zip").write_text("PK? no")
    with pytest.raises(DataError, match="fake.zip: not a zip archive"):
        run(tmp_path / "fake.zip", tmp_path / "out")
    with pytest.raises(DataError, match="nowhere: dataset source not found"):
        run(tmp_path / "nowhere", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_failed_rerun_keeps_the_previous_output(esc10_release, tmp_path):
    out = tmp_path / "out"
    run(esc10_release, out)
    before = (out / "metadata.csv").read_bytes()
    _corrupt_one(esc10_release)
    with pytest.raises(DataError):
        run(esc10_release, out)
    assert (out / "metadata.csv").read_bytes() == before


def test_cli_reports_one_line_and_exits_nonzero(esc10_release, tmp_path):
    params = (PROJECT / "params.yaml").read_text().replace("sample_rate: 22050", "sample_rate: 50")
    (tmp_path / "params.yaml").write_text(params)
    result = subprocess.run(
        [sys.executable, "-m", "audioclass.stages.extract", "--params", str(tmp_path / "params.yaml"), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "extract.sample_rate: expected a rate in Hz between 8000 and 192000, got 50" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()

"""Names taken from a corpus (zip members, listed file names) never lead a write outside a stage's output."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import soundfile as sf

from audioclass.clips import ExtractConfig, extract
from audioclass.data import get_esc10
from audioclass.errors import DataError
from conftest import config, tiny_clips, tone, write_esc50_master

RATE = 8000
ESCAPES = ["../escaped/x.wav", "/tmp/escaped-absolute/x.wav", "dog/../../escaped/y.wav"]


def wav_bytes(freq: float) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, tone(freq, 0.3, RATE), RATE, format="WAV")
    return buffer.getvalue()


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    """A zip holding exactly these member names: ``ZipInfo`` keeps ``..`` and a leading ``/`` as a hostile archive would."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(zipfile.ZipInfo(name), data)
    return path


def files_below(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


def extract_from(source: Path, out: Path) -> None:
    extract(config(ExtractConfig, "extract", source=str(source), sample_rate=RATE, duration=0.3), out, jobs=1)


@pytest.mark.parametrize("escape", ESCAPES)
def test_a_zip_corpus_with_a_member_outside_it_is_refused_in_one_line(tmp_path, escape):
    corpus = {"dog/a.wav": wav_bytes(300), "cat/b.wav": wav_bytes(600), escape: wav_bytes(900)}
    source = write_zip(tmp_path / "corpus.zip", corpus)
    before = files_below(tmp_path)
    with pytest.raises(DataError, match=r"corpus\.zip:.*: path leads outside the corpus \(absolute or '\.\.'\)") as err:
        extract_from(source, tmp_path / "work" / "prepared")
    assert "\n" not in str(err.value) and escape in str(err.value)
    assert files_below(tmp_path) == before and not Path("/tmp/escaped-absolute").exists()


def esc50_with_filename(root: Path, filename: str) -> Path:
    """An ESC-50 master folder whose metadata lists ``filename`` for its first clip."""
    write_esc50_master(root, tiny_clips(per_class=1))
    table = pd.read_csv(root / "meta/esc50.csv", dtype=str)
    table.loc[0, "filename"] = filename
    table.to_csv(root / "meta/esc50.csv", index=False)
    return root


@pytest.mark.parametrize("filename", ["../../escaped.wav", "/tmp/escaped-absolute.wav", "sub/x.wav"])
@pytest.mark.parametrize("as_zip", [False, True])
def test_an_esc50_table_naming_a_file_outside_audio_is_refused_in_one_line(tmp_path, filename, as_zip):
    root = esc50_with_filename(tmp_path / "ESC-50-master", filename)
    source = root
    if as_zip:
        members = {f"ESC-50-master/{p.relative_to(root).as_posix()}": p.read_bytes() for p in sorted(files_below(root))}
        source = write_zip(tmp_path / "master.zip", members)
    before = files_below(tmp_path)
    with pytest.raises(DataError, match=rf"esc50\.csv: column filename: file name '{filename}' is not a plain file name") as err:
        extract_from(source, tmp_path / "work" / "prepared")
    assert "\n" not in str(err.value)
    assert files_below(tmp_path) == before


def test_audioclass_data_refuses_a_zip_with_a_member_outside_it_and_writes_nothing(tmp_path):
    archive = write_zip(tmp_path / "release.zip", {"001 - Dog bark/1-100-A.ogg": b"x", "../escaped.txt": b"boo"})
    dest = tmp_path / "raw" / "ESC-10"
    with pytest.raises(DataError, match=r"release\.zip:\.\./escaped\.txt: path leads outside the corpus"):
        get_esc10(dest, archive, name="--from")
    assert list((tmp_path / "raw").iterdir()) == [] and not (tmp_path / "escaped.txt").exists()


def test_audioclass_data_refuses_a_downloaded_master_listing_a_file_outside_audio(tmp_path):
    root = esc50_with_filename(tmp_path / "ESC-50-master", "../../../escaped.wav")
    members = {f"ESC-50-master/{p.relative_to(root).as_posix()}": p.read_bytes() for p in sorted(files_below(root))}
    members["ESC-50-master/audio/../../../escaped.wav"] = wav_bytes(300)  # present, so only the name check stops it
    (tmp_path / "raw").mkdir()
    archive = write_zip(tmp_path / "raw" / "ESC-50-master.zip", members)
    dest = tmp_path / "raw" / "ESC-10"
    with pytest.raises(DataError, match=r"column filename: file name '\.\./\.\./\.\./escaped\.wav' is not a plain file name"):
        get_esc10(dest, None, name="$AUDIOCLASS_ESC10", url="http://127.0.0.1:9/unreachable", archive=archive)
    assert not dest.exists() and not list(tmp_path.rglob("escaped.wav"))

"""The ESC-50 download, against a local HTTP server (no internet here)."""

import functools
import hashlib
import http.server
import shutil
import threading
import zipfile
from pathlib import Path

import pytest

from audioclass.data import get_esc10
from audioclass.download import download
from audioclass.errors import DataError
from conftest import tiny_clips, write_esc10_release, write_esc50_master


@pytest.fixture
def server(tmp_path):
    """Serve ``tmp_path/www`` on a free loopback port; yields the base URL."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *args: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", www
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def esc50_zip(tmp_path, server):
    _, www = server
    root = write_esc50_master(tmp_path / "ESC-50-master", tiny_clips(per_class=1))
    path = www / "master.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for f in sorted(root.rglob("*")):
            archive.write(f, f.relative_to(tmp_path).as_posix())
    return path


def test_download_saves_a_checked_archive(server, esc50_zip, tmp_path):
    url, _ = server
    sha = hashlib.sha256(esc50_zip.read_bytes()).hexdigest()
    out = download(f"{url}/master.zip", tmp_path / "raw" / "ESC-50-master.zip", sha256=sha)
    assert out.read_bytes() == esc50_zip.read_bytes()
    assert [p.name for p in out.parent.iterdir()] == ["ESC-50-master.zip"]  # no .part left


def test_wrong_checksum_keeps_nothing(server, esc50_zip, tmp_path):
    url, _ = server
    with pytest.raises(DataError, match="SHA-256 .* does not match the expected 00ff"):
        download(f"{url}/master.zip", tmp_path / "raw" / "x.zip", sha256="00ff")
    assert list((tmp_path / "raw").iterdir()) == []


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("page.zip", b"<html>not a zip</html>", "not a zip archive"),
        ("other.zip", None, "no meta/esc50.csv inside"),
        ("missing.zip", ..., "download failed"),
    ],
)
def test_bad_downloads_fail_with_one_line(server, tmp_path, name, content, message):
    url, www = server
    if content is None:
        with zipfile.ZipFile(www / name, "w") as archive:
            archive.writestr("readme.txt", "hello")
    elif content is not ...:
        (www / name).write_bytes(content)
    with pytest.raises(DataError, match=message) as err:
        download(f"{url}/{name}", tmp_path / "raw" / "ESC-50-master.zip")
    assert "\n" not in str(err.value)
    assert list((tmp_path / "raw").iterdir()) == []


def test_corrupt_member_is_caught(server, esc50_zip, tmp_path):
    url, www = server
    data = bytearray(esc50_zip.read_bytes())
    offset = data.index(b"RIFF") + 200  # inside the first stored WAV's samples
    data[offset : offset + 8] = b"\xff" * 8
    (www / "bad.zip").write_bytes(bytes(data))
    with pytest.raises(DataError, match="fails its CRC check"):
        download(f"{url}/bad.zip", tmp_path / "raw" / "ESC-50-master.zip")


def corpus_clips(location) -> list[tuple]:
    from audioclass.layouts import Source, read_corpus

    corpus = read_corpus(Source(location), layout="auto", subset="esc10", label_pattern=None)
    return sorted((c.clip_id, c.source_id, c.take, c.fold, c.class_name) for c in corpus.clips)


def test_data_unpacks_the_esc10_clips_of_the_download_as_the_release_gives_them(server, esc50_zip, tmp_path):
    url, _ = server
    dest, archive = tmp_path / "raw" / "ESC-10", tmp_path / "raw" / "ESC-50-master.zip"
    get_esc10(dest, None, name="$AUDIOCLASS_ESC10", url=f"{url}/master.zip", archive=archive)
    assert archive.read_bytes() == esc50_zip.read_bytes()  # the checked download stays, for the next time
    release = write_esc10_release(tmp_path / "release", tiny_clips(per_class=1))
    assert corpus_clips(dest) == corpus_clips(release) == corpus_clips(esc50_zip)  # the same ids, labels and folds
    assert len(list((dest / "audio").iterdir())) == 10  # ESC-10's clips only, not the other ESC-50 classes
    assert sorted(p.name for p in dest.parent.iterdir()) == ["ESC-10", "ESC-50-master.zip"]  # no temporary folder left


@pytest.mark.parametrize("as_zip", [False, True])
def test_data_copies_a_local_release_and_keeps_what_is_there(tmp_path, as_zip):
    release = write_esc10_release(tmp_path / "release", tiny_clips(per_class=1))
    local = shutil.make_archive(str(tmp_path / "release"), "zip", release) if as_zip else release
    dest = tmp_path / "raw" / "ESC-10"
    get_esc10(dest, Path(local), name="--from", url="http://127.0.0.1:9/unreachable")  # a local copy needs no network
    assert corpus_clips(dest) == corpus_clips(release)
    before = {p: p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    get_esc10(dest, None, name="$AUDIOCLASS_ESC10", url="http://127.0.0.1:9/unreachable")  # already there: kept as it is
    assert {p: p.read_bytes() for p in dest.rglob("*") if p.is_file()} == before


def test_data_names_a_missing_local_copy_in_one_line_and_writes_nothing(tmp_path):
    dest = tmp_path / "raw" / "ESC-10"
    with pytest.raises(DataError, match=r"^\$AUDIOCLASS_ESC10: .*nowhere not found; expected an ESC-10 release") as err:
        get_esc10(dest, tmp_path / "nowhere", name="$AUDIOCLASS_ESC10")
    assert "\n" not in str(err.value) and not dest.exists()


def test_data_without_a_network_or_a_local_copy_says_what_to_set(tmp_path):
    dest = tmp_path / "raw" / "ESC-10"
    with pytest.raises(DataError, match=r"download failed .*; with no network, name a local ESC-10 or ESC-50 copy in \$AUDIOCLASS_ESC10"):
        get_esc10(dest, None, name="$AUDIOCLASS_ESC10", url="http://127.0.0.1:9/unreachable", archive=tmp_path / "raw" / "a.zip")
    assert sorted(p.name for p in dest.parent.iterdir()) == []  # no folder, no archive


def test_data_checks_an_archive_already_in_place_before_unpacking_it(tmp_path):
    archive, dest = tmp_path / "raw" / "ESC-50-master.zip", tmp_path / "raw" / "ESC-10"
    archive.parent.mkdir()
    archive.write_bytes(b"half a download")
    with pytest.raises(DataError, match=r"ESC-50-master.zip: not a zip archive; expected the ESC-50 master zip") as err:
        get_esc10(dest, None, name="$AUDIOCLASS_ESC10", url="http://127.0.0.1:9/unreachable", archive=archive)
    assert "\n" not in str(err.value) and not dest.exists()


def test_data_command_reads_the_environment(tmp_path, monkeypatch):
    from audioclass.data import main

    release = write_esc10_release(tmp_path / "release", tiny_clips(per_class=1))
    monkeypatch.setenv("AUDIOCLASS_ESC10", str(release))
    main(["--dest", str(tmp_path / "ESC-10"), "--url", "http://127.0.0.1:9/unreachable"])
    assert corpus_clips(tmp_path / "ESC-10") == corpus_clips(release)

"""The ESC-50 download, against a local HTTP server (no internet here)."""

import functools
import hashlib
import http.server
import threading
import zipfile

import pytest

from audioclass.download import download
from audioclass.errors import DataError
from conftest import tiny_clips, write_esc50_master


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

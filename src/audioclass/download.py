"""Download the ESC-50 master zip with a progress bar, and check it.

    audioclass download                      # → data/raw/ESC-50-master.zip
    audioclass download --sha256 <hex>       # also pin the exact archive

The archive is checked before it is kept: the CRC of every member, the
ESC-50 layout (``meta/esc50.csv`` and ``audio/``), and the SHA-256 when given.
It is written to ``<out>.part`` and renamed only when every check passes, so
an interrupted or bad download never looks like a dataset. Then set
``extract.source`` in params.yaml to the zip.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from tqdm import tqdm

from audioclass.cli import plain, run_stage
from audioclass.errors import DataError
from audioclass.outputs import atomic_file

log = logging.getLogger(__name__)

ESC50_URL = "https://github.com/karoldvl/ESC-50/archive/master.zip"
DEFAULT_OUT = Path("data/raw/ESC-50-master.zip")


def check_esc50_zip(path: Path, name: str) -> int:
    """Raise DataError unless ``path`` is an intact ESC-50 master zip; returns its audio count."""
    if not zipfile.is_zipfile(path):
        raise DataError(f"{name}: not a zip archive; expected the ESC-50 master zip")
    with zipfile.ZipFile(path) as archive:
        bad = archive.testzip()
        if bad is not None:
            raise DataError(f"{name}: member {bad} fails its CRC check; the download is corrupt")
        names = archive.namelist()
    if not any(n.endswith("meta/esc50.csv") for n in names):
        raise DataError(f"{name}: no meta/esc50.csv inside; expected the ESC-50 master layout")
    n_audio = sum("/audio/" in f"/{n}" and n.endswith(".wav") for n in names)
    if n_audio == 0:
        raise DataError(f"{name}: no audio/*.wav inside; expected the ESC-50 master layout")
    return n_audio


def download(url: str, out: Path, *, sha256: str | None = None, timeout: float = 60.0) -> Path:
    """Fetch ``url`` to ``out`` with a progress bar; keep it only if it checks out."""
    digest = hashlib.sha256()
    with atomic_file(out) as tmp:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, tmp.open("wb") as f:
                total = int(response.headers.get("Content-Length") or 0) or None
                with tqdm(total=total, unit="B", unit_scale=True, desc=out.name) as bar:
                    while chunk := response.read(1 << 20):
                        f.write(chunk)
                        digest.update(chunk)
                        bar.update(len(chunk))
        except (urllib.error.URLError, TimeoutError, OSError) as err:
            raise DataError(f"{url}: download failed ({getattr(err, 'reason', err)})") from None
        if total is not None and tmp.stat().st_size != total:
            raise DataError(f"{url}: got {tmp.stat().st_size} bytes, expected {total}; the download was cut short")
        if sha256 and digest.hexdigest() != sha256.lower():
            raise DataError(f"{url}: SHA-256 {digest.hexdigest()} does not match the expected {sha256}")
        n_audio = check_esc50_zip(tmp, url)
    log.info("saved %s (%d audio files, sha256 %s)", out, n_audio, digest.hexdigest())
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="audioclass download", description=plain(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default=ESC50_URL, help=f"archive URL (default: {ESC50_URL})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"where to save it (default: {DEFAULT_OUT})")
    parser.add_argument("--sha256", help="expected SHA-256 of the archive, to pin an exact version")
    args = parser.parse_args(argv)
    download(args.url, args.out, sha256=args.sha256)


if __name__ == "__main__":
    run_stage(main)

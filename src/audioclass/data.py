"""Put the ESC-10 clips where the pipeline reads them, from a local copy or from the ESC-50 download.

    audioclass data                          # → data/raw/ESC-10
    AUDIOCLASS_ESC10=~/datasets/ESC-10 audioclass data
    audioclass data --from ~/Downloads/ESC-50-master.zip

With a local copy (``--from``, else ``$AUDIOCLASS_ESC10``): an ESC-10
release or an ESC-50 master, as a folder or a ``.zip``, is copied as it is;
``extract`` reads any of them. Without one, the ESC-50 master zip is
downloaded and checked (``audioclass download``, kept in
``data/raw/ESC-50-master.zip``), and its 400 ESC-10 clips and their rows of
``meta/esc50.csv`` are unpacked: the same clips, ids, labels and folds as the
ESC-10 release. A destination that already holds files is kept as it is.
The folder appears only when complete. Then ``dvc add data/raw/ESC-10`` pins
it and ``dvc repro`` runs the pipeline.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import shutil
import zipfile
from pathlib import Path

import pandas as pd

from audioclass.cli import plain, run_stage
from audioclass.download import DEFAULT_OUT, ESC50_URL, check_esc50_zip, download
from audioclass.errors import DataError
from audioclass.layouts import require_file_name, require_inside
from audioclass.outputs import atomic_dir

log = logging.getLogger(__name__)

LOCAL_ENV = "AUDIOCLASS_ESC10"
DEFAULT_DEST = Path("data/raw/ESC-10")


def copy_local(source: Path, dest: Path, name: str) -> None:
    """Copy an ESC-10 or ESC-50 folder, or unpack its zip, into the empty folder ``dest``."""
    if source.is_dir():
        shutil.copytree(source, dest, dirs_exist_ok=True)
    elif zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as archive:
            for member in archive.namelist():  # extractall would quietly rename such a member; refuse the archive instead
                require_inside(member, f"{source}:{member}")
            archive.extractall(dest)
    else:
        raise DataError(f"{name}: {source} is neither a folder nor a .zip; expected an ESC-10 release or an ESC-50 master")


def esc10_from_esc50(archive: Path, dest: Path) -> int:
    """Unpack the ESC-10 clips of an ESC-50 master zip into ``dest`` in the ESC-50 layout; returns the clip count."""
    with zipfile.ZipFile(archive) as zipped:
        (meta,) = [n for n in zipped.namelist() if n.endswith("meta/esc50.csv")]
        rows = pd.read_csv(io.BytesIO(zipped.read(meta)), dtype=str, keep_default_na=False)
        esc10 = rows[rows["esc10"].str.lower() == "true"]
        root = meta.removesuffix("meta/esc50.csv")
        (dest / "meta").mkdir(parents=True)
        (dest / "audio").mkdir()
        esc10.to_csv(dest / "meta" / "esc50.csv", index=False)
        for filename in esc10["filename"]:
            require_file_name(filename, f"{archive}:{meta}: column filename")
            (dest / "audio" / filename).write_bytes(zipped.read(f"{root}audio/{filename}"))
    return len(esc10)


def get_esc10(dest: Path, local: Path | None, *, name: str, url: str = ESC50_URL, archive: Path = DEFAULT_OUT) -> Path:
    """``dest`` holding ESC-10: kept if it holds files, else copied from ``local``, else unpacked from the download."""
    if dest.is_dir() and any(dest.iterdir()):
        log.info("%s already holds files; keeping them", dest)
        return dest
    if local is not None and not local.exists():
        raise DataError(f"{name}: {local} not found; expected an ESC-10 release or an ESC-50 master, as a folder or a .zip")
    with atomic_dir(dest) as tmp:
        if local is not None:
            copy_local(local, tmp, name)
            log.info("copied %s to %s", local, dest)
        else:
            if archive.is_file():  # an earlier download, or one the user put there: checked as a fresh one is
                check_esc50_zip(archive, str(archive))
            else:
                try:
                    download(url, archive)
                except DataError as err:
                    raise DataError(f"{err}; with no network, name a local ESC-10 or ESC-50 copy in ${LOCAL_ENV} or --from") from None
            log.info("%s: %d ESC-10 clips from %s", dest, esc10_from_esc50(archive, tmp), archive)
    return dest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="audioclass data", description=plain(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--from", dest="local", type=Path, help=f"a local ESC-10 or ESC-50 copy (default: ${LOCAL_ENV}, else download)")
    parser.add_argument("--dest", type=Path, default=DEFAULT_DEST, help=f"where the pipeline reads it (default: {DEFAULT_DEST})")
    parser.add_argument("--url", default=ESC50_URL, help=f"the ESC-50 archive, without a local copy (default: {ESC50_URL})")
    args = parser.parse_args(argv)
    local, name = (args.local, "--from") if args.local else (os.environ.get(LOCAL_ENV), f"${LOCAL_ENV}")
    get_esc10(args.dest, Path(local).expanduser() if local else None, name=name, url=args.url)


if __name__ == "__main__":
    run_stage(main)

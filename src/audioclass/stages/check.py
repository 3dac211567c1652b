"""Stage ``check``: the params file and the dataset source, checked before any other stage runs.

DVC checks a stage's dependencies before it runs the stage's command, and it
removes the stage's previous outputs first. A missing ``extract.source`` would
then stop ``dvc repro`` with DVC's bare "[Errno 2] No such file or directory",
and a misspelt section (``augmnet:``) with DVC's "Parameters 'augment' are
missing". This stage runs first, reads only the params file, and stops with
the project's one line instead, before anything is removed:

    error: params.yaml: extract.source: data/raw/ESC-1 not found; expected a folder or .zip ...
    error: params.yaml: augmnet: unknown section; did you mean 'augment'? ...
    error: params.yaml: analyse.recordings.street: street.flac not found; expected the path of an audio file

It writes ``<out>`` (e.g. ``data/source.json``: the source's path and whether
it is a folder or a zip). That changes only when the source path does, so
rerunning this stage after another param changed reruns nothing after it.

Rerun with ``dvc repro check``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from audioclass.cli import run_stage, stage_parser
from audioclass.config import ParamError, load_params
from audioclass.layouts import Source
from audioclass.outputs import atomic_file
from audioclass.tables import json_text

log = logging.getLogger(__name__)


def check_source(location: object) -> dict:
    """The dataset source as ``{"source": path, "kind": "folder" | "zip"}``; a ParamError if it is not there."""
    if not isinstance(location, str) or not location:
        raise ParamError("extract.source", f"expected the path of a dataset folder or .zip, got {location!r}")
    if not Path(location).exists():
        raise ParamError(
            "extract.source",
            f"{location} not found; expected a dataset folder or .zip there: dvc pull, audioclass download, or the path of your own corpus",
        )
    source = Source(location)  # a file that is not a zip: one DataError line naming it
    return {"source": location, "kind": "zip" if source.is_zip else "folder"}


def check_recordings(recordings: object) -> None:
    """Each recording ``analyse.recordings`` names is a file; a ParamError naming the first that is not."""
    if not isinstance(recordings, dict):
        raise ParamError("analyse.recordings", f"expected names of audio files, e.g. {{street: street.flac}}, got {recordings!r}")
    for name, path in recordings.items():
        if not isinstance(path, str) or not Path(path).is_file():
            raise ParamError(f"analyse.recordings.{name}", f"{path} not found; expected the path of an audio file")


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("check", __doc__)
    parser.add_argument("--out", type=Path, required=True, help="the checked source, e.g. data/source.json")
    args = parser.parse_args(argv)
    params = load_params(args.params)  # rejects a section that no stage reads
    checked = check_source(params.get("extract", {}).get("source"))
    check_recordings(params.get("analyse", {}).get("recordings") or {})
    with atomic_file(args.out) as tmp:
        tmp.write_text(json_text(checked))
    log.info("%s: every section known; dataset source %s (%s)", args.params, checked["source"], checked["kind"])


if __name__ == "__main__":
    run_stage(main)

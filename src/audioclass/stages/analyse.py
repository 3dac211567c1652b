"""Stage ``analyse``: one recording of ``analyse.recordings`` analysed with the shipped ensemble; one DVC stage per recording.

Off by default: ``analyse.recordings`` is ``{}``, and DVC makes no stage of an
empty ``foreach``. Name recordings to have ``dvc repro`` score them, versioned
with the models and weights that scored them::

    analyse:
      recordings: {street-0612: recordings/street-0612.flac}

The recording is analysed exactly as ``audioclass predict --json --windows``
does (windows of ``extract.duration``, ``analyse.hop`` apart, calibrated, the
minimum confidence ``analyse.min_confidence`` or the ensemble stage's). Writes,
each file atomically, to ``<out>``::

    <name>.json            the result predict --json --windows prints: detections, and every window's probabilities
    <name>.raven.txt       a Raven selection table, a selection per detection
    <name>.audacity.txt    an Audacity label track

An unreadable recording stops the stage with one line naming it. Rerun with
``dvc repro analyse@<name>``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from audioclass.cli import run_stage, stage_parser
from audioclass.config import load_params, stage_config
from audioclass.errors import ConfigError, DataError
from audioclass.outputs import atomic_file
from audioclass.predict import AnalyseConfig, analyse_files, detection_files, load_ensemble
from audioclass.tables import json_text

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("analyse", __doc__)
    parser.add_argument("--name", required=True, help="the recording's name in analyse.recordings")
    parser.add_argument("--models", type=Path, required=True, help="folder of members, e.g. models")
    parser.add_argument("--ensemble", type=Path, required=True, help="the ensemble stage's report, e.g. reports/ensemble/ensemble.json")
    parser.add_argument("--out", type=Path, required=True, help="folder of detection tables, e.g. reports/analyse")
    args = parser.parse_args(argv)
    cfg = stage_config(AnalyseConfig, load_params(args.params), "analyse", args.params)
    if args.name not in cfg.recordings:
        raise ConfigError(f"{args.params}: analyse.recordings: no recording named {args.name!r}; expected one of {sorted(cfg.recordings)}")
    ensemble = load_ensemble(Path(args.params), args.models, args.ensemble)
    [result] = analyse_files([Path(cfg.recordings[args.name])], ensemble, hop=cfg.hop, min_confidence=cfg.min_confidence, windows=True)
    if "error" in result:
        raise DataError(f"analyse.recordings.{args.name}: {result['error']}")
    files = {".json": json_text(result)} | detection_files(result, ensemble.extract.sample_rate)
    for suffix, text in files.items():
        with atomic_file(args.out / f"{args.name}{suffix}") as tmp:
            tmp.write_text(text)
    log.info(
        "%s: %d detections in %.1f s of audio (%d windows)",
        args.name,
        len(result["detections"]),
        result.get("duration", ensemble.extract.duration),
        result.get("windows_analysed", 1),
    )


if __name__ == "__main__":
    run_stage(main)

"""The ``audioclass`` command: one subcommand per stage, plus ``data``, ``download`` and ``predict``.

``audioclass extract --out data/prepared`` is the same as
``python -m audioclass.stages.extract --out data/prepared``; ``dvc.yaml`` uses
the module form so a reader sees which file each stage runs.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import re
import signal
import sys
from collections.abc import Callable

from audioclass.errors import AudioclassError
from audioclass.urls import masked_text

COMMANDS = {
    "data": ("audioclass.data", "put ESC-10 in data/raw/ESC-10: from $AUDIOCLASS_ESC10 or --from, else from the ESC-50 download"),
    "download": ("audioclass.download", "fetch the ESC-50 master zip with a progress bar and check it"),
    "predict": ("audioclass.predict", "classify audio files or folders with the trained ensemble"),
    "check": ("audioclass.stages.check", "stage: the params file's sections and extract.source, before the rest"),
    "extract": ("audioclass.stages.extract", "stage: decode a corpus into uniform clips + metadata"),
    "split": ("audioclass.stages.split", "stage: assign clips to train / val / test without leakage"),
    "augment": ("audioclass.stages.augment", "stage: write each clip plus augmented copies as WAVs"),
    "spectrograms": ("audioclass.stages.spectrograms", "stage: render a spectrogram per file, per split"),
    "tune": ("audioclass.stages.tune", "stage: Optuna study of the CNN's hyperparameters (or join one: --worker)"),
    "train": ("audioclass.stages.train", "stage: fit one run of train.runs (a CNN, CRNN or transformer)"),
    "embed": ("audioclass.stages.embed", "stage: pretrained embeddings of each file, per model (trained on outside data)"),
    "head": ("audioclass.stages.head", "stage: a linear classifier on one model's embeddings"),
    "ensemble": ("audioclass.stages.ensemble", "stage: combine the trained runs and heads, weights fitted on validation"),
    "raw_vectors": ("audioclass.stages.raw_vectors", "baseline stage: the study's 882-value raw-sample vectors"),
    "classical": ("audioclass.stages.classical", "baseline stage: the study's classical models on raw vectors"),
    "cnn1d": ("audioclass.stages.cnn1d", "baseline stage: one cell of the study's 1D CNN grid"),
    "features": ("audioclass.stages.features", "baseline stage: chroma / mel / MFCC (+ deltas) vectors per file"),
    "feature_models": ("audioclass.stages.feature_models", "baseline stage: MLP, forest, SVM by grouped CV on the vectors"),
    "report": ("audioclass.stages.report", "stage: one results table beside the published figures"),
    "analyse": ("audioclass.stages.analyse", "stage: one recording of analyse.recordings, detections over time (off by default)"),
}


_ROLE = re.compile(r":(?:mod|func|class|meth|attr|data|obj):`~?(?:[\w.]*\.)?([^`]+)`")
_LITERAL = re.compile(r"``([^`]+)``")


def plain(doc: str | None) -> str | None:
    """A docstring as ``--help`` shows it: reStructuredText roles and literals as plain text, ``::`` as ``:``."""
    if doc is None:
        return None
    return _LITERAL.sub(r"\1", _ROLE.sub(r"\1", doc)).replace("::\n", ":\n")


def stage_parser(name: str, doc: str | None, *, jobs: bool = False) -> argparse.ArgumentParser:
    """The argument parser every stage starts from: ``--params`` and, for parallel stages, ``--jobs``."""
    from audioclass.parallel import default_jobs

    parser = argparse.ArgumentParser(
        prog=f"audioclass {name}", description=plain(doc), formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--params", default="params.yaml", help=f"params file (section: {name})")
    if jobs:
        parser.add_argument(
            "--jobs", type=int, default=default_jobs(), help="worker processes (default: all cores; never changes the output)"
        )
    return parser


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's ``main`` with logging; a user error becomes one line and exit 1."""
    from audioclass.outputs import on_interrupt

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    signal.signal(signal.SIGINT, on_interrupt)
    try:
        main()
    except AudioclassError as err:
        print(f"error: {masked_text(str(err))}", file=sys.stderr)  # a second guard: no URL's password is ever printed
        sys.exit(1)
    except (FileNotFoundError, NotADirectoryError) as err:  # an input named on the command line, run by hand
        name = err.filename if err.filename is not None else str(err)
        print(f"error: {name}: no such file or folder; expected an input that the stages before it write (dvc repro)", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted; no partial output was kept", file=sys.stderr)
        sys.exit(130)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        asked = bool(argv) and argv[0] in ("-h", "--help")
        width = max(map(len, COMMANDS))
        lines = [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
        if argv and not asked:
            print(f"error: unknown command {argv[0]!r}", file=sys.stderr)
        print("usage: audioclass COMMAND [--help]\n\ncommands:\n" + "\n".join(lines), file=sys.stdout if asked else sys.stderr)
        sys.exit(0 if asked else 2)
    module = importlib.import_module(COMMANDS[argv[0]][0])
    run_stage(lambda: module.main(argv[1:]))
